//! `cargo xtask bench shared`: a job of 1,000 units sharing one 256 MiB
//! asset, run by two provider hosts (real `agora host` processes, each with
//! its disk cache) through a real market. Counts the bytes the market sent
//! from its blob route (units' inputs and shared inputs, the
//! `agora_market_http_response_bytes` metric) against the asset's size:
//! each provider should fetch the asset once, so about two assets' worth,
//! where a market without shared inputs sends one per unit (1,000 assets).
//! Also reports the job's wall time.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const UNITS: usize = 1000;
const ASSET_BYTES: usize = 256 << 20;
const PROVIDERS: usize = 2;
const BLOB_ROUTE: &str = "/api/v1/blobs/{digest}";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Market {
    home: PathBuf,
    url: String,
}

impl Market {
    fn agora(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_agora"))
            .env("AGORA_HOME", &self.home)
            .env("AGORA_MARKET", &self.url)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "agora {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn key(&self, name: &str) -> String {
        let path = self.home.join(format!("{name}.json"));
        let _ = std::fs::remove_file(&path);
        let out = self.agora(&["--key", path.to_str().unwrap(), "keys", "new"]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Bytes the market's blob route has sent so far.
    fn blob_bytes_sent(&self) -> u64 {
        let metrics = agora_wire::client::Client::new(&self.url, None)
            .get_bytes("/metrics")
            .unwrap();
        let metrics = String::from_utf8(metrics).unwrap();
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("agora_market_http_response_bytes_total")
                    && l.contains(&format!("route=\"{BLOB_ROUTE}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
}

fn guests() -> PathBuf {
    std::env::var_os("AGORA_GUESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/wasm/wasm32-wasip2/release")
        })
}

fn start_market(home: &Path) -> (Killed, Market, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let market = Market {
        home: home.to_path_buf(),
        url: url.clone(),
    };
    let operator = market.key("operator");
    let child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_HOME", home)
        .args([
            "market",
            "serve",
            "--db",
            &format!("sqlite://{}", home.join("market.db").display()),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--operator",
            &operator,
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the market did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Killed(child), market, operator)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let home = std::env::temp_dir().join(format!("agora-bench-shared-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let (_market_process, market, _) = start_market(&home);
    let operator = home.join("operator.json");
    let buyer = market.key("buyer");
    let buyer_key = home.join("buyer.json");
    let as_buyer = |args: &[&str]| {
        let mut all = vec!["--key", buyer_key.to_str().unwrap()];
        all.extend(args);
        market.agora(&all)
    };
    market.agora(&[
        "--key",
        operator.to_str().unwrap(),
        "mint",
        &buyer,
        "10000000",
    ]);
    as_buyer(&[
        "publish",
        guests().join("hostile.wasm").to_str().unwrap(),
        "--name",
        "reader",
        "--version",
        "1.0.0",
    ]);

    let asset = home.join("asset.bin");
    let bytes: Vec<u8> = (0..ASSET_BYTES)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    std::fs::write(&asset, &bytes).unwrap();
    drop(bytes);
    let units = home.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for i in 0..UNITS {
        std::fs::write(units.join(format!("unit-{i:04}.txt")), "shared-size asset").unwrap();
    }

    let hosts: Vec<Killed> = (0..PROVIDERS)
        .map(|i| {
            let name = format!("provider-{i}");
            let id = market.key(&name);
            market.agora(&["--key", operator.to_str().unwrap(), "vouch", &id]);
            let cache = home.join(format!("cache-{i}"));
            Killed(
                Command::new(env!("CARGO_BIN_EXE_agora"))
                    .env("AGORA_HOME", &home)
                    .env("AGORA_MARKET", &market.url)
                    .args([
                        "--key",
                        home.join(format!("{name}.json")).to_str().unwrap(),
                        "host",
                        "--heartbeat",
                        "0.5",
                        "--max-concurrent",
                        "2",
                    ])
                    .args(["--cache-dir", cache.to_str().unwrap()])
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();

    let sent_before = market.blob_bytes_sent();
    let started = Instant::now();
    let shared = format!("asset={}", asset.display());
    let out = as_buyer(&[
        "submit",
        "reader",
        "--inputs",
        units.to_str().unwrap(),
        "--shared",
        &shared,
        "--max-price",
        "5000000",
        "--wait",
    ]);
    let elapsed = started.elapsed();
    let job = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let sent = market.blob_bytes_sent() - sent_before;
    let status = String::from_utf8(as_buyer(&["status", &job, "--all"]).stdout).unwrap();
    let verified = status
        .lines()
        .filter(|l| l.trim_start().starts_with("unit ") && l.contains(" verified"))
        .count();
    assert_eq!(verified, UNITS, "every unit verified:\n{status}");
    drop(hosts);

    let asset_mib = ASSET_BYTES as f64 / (1 << 20) as f64;
    let sent_mib = sent as f64 / (1 << 20) as f64;
    println!(
        "bench shared: {UNITS} units sharing one {asset_mib:.0} MiB asset, {PROVIDERS} provider hosts"
    );
    println!(
        "  job (upload included)  {:>8.1} s  ({:.1} units/s)",
        elapsed.as_secs_f64(),
        UNITS as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  blob bytes sent        {sent_mib:>8.1} MiB = {:.2} assets (goal: one a provider, {PROVIDERS})",
        sent as f64 / ASSET_BYTES as f64
    );
    println!(
        "  without sharing        {:>8.1} MiB = {UNITS} assets: sharing sends {:.4}x of it",
        UNITS as f64 * asset_mib,
        sent as f64 / (UNITS * ASSET_BYTES) as f64
    );
    let _ = std::fs::remove_dir_all(&home);
}
