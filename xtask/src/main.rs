//! Agora's automation, in Rust (no Makefiles). See HELP.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const HELP: &str = "\
cargo xtask <task>

Tasks:
  up             build everything and run the product locally
  test           install what is missing, build the guests, run every test
  examples       build the example and test guests as components, print their paths
  digits         make the digits examples' data set into target/digits (scikit-learn's copy, via pip)
  web            build the web market's browser half (wasm + wasm-bindgen) into target/web/pkg
  bench host     host runtime benchmarks (ratios against baselines in the same run)
  bench market   ledger and registry benchmarks (SQLite and PostgreSQL)
  bench lifecycle  job lifecycle throughput vs bare SQL, and a 1,000-provider scale run
  bench shared   a 1,000-unit job sharing a 256 MiB asset on two hosts: bytes sent vs one asset a unit
  bench gpu      matmul 4096^3 on CUDA and on wgpu vs cuBLAS, and the fp32 peak fraction (NVIDIA GPU)
  sim [ROUNDS]   the market's lifecycle-under-attack simulation, longer than CI's: ROUNDS fresh
                 seeds (default 10) of 3,000 steps on SQLite and PostgreSQL (AGORA_SIM_STEPS to change)
";

/// The wasm target jobs are built for.
const GUEST_TARGET: &str = "wasm32-wasip2";
/// The wasm target the web market's browser half is built for.
const WEB_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["up"] => up(),
        ["test"] => test(),
        ["examples"] => examples().map(|_| ()),
        ["digits"] => digits(),
        ["web"] => web().map(|_| ()),
        ["bench", "host"] => bench_host(),
        ["bench", "market"] => bench_market(),
        ["bench", "lifecycle"] => bench_lifecycle(),
        ["bench", "shared"] => bench_shared(),
        ["sim"] => sim(10),
        ["sim", rounds] => sim(rounds.parse().context("sim ROUNDS is a number")?),
        ["bench", "gpu"] => bench_gpu(),
        ["bench"] => bench_host()
            .and_then(|()| bench_market())
            .and_then(|()| bench_lifecycle()),
        _ => {
            eprint!("{HELP}");
            bail!("unknown or missing task")
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn guests_dir() -> PathBuf {
    root()
        .join("target/wasm")
        .join(GUEST_TARGET)
        .join("release")
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    // Mesa warns on every start without it.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    cmd.env("AGORA_GUESTS", guests_dir());
    cmd.env("AGORA_WEB_PKG", web_pkg_dir());
    cmd.env("AGORA_DIGITS", digits_dir());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// A rustup target, installed when missing.
fn ensure_target(target: &str) -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", target]))
        .with_context(|| format!("installing the {target} target (needs rustup)"))
}

/// Where `cargo xtask web` puts the browser bundle (`agora-web.js`,
/// `agora-web_bg.wasm`), which `agora market serve` serves at `/pkg`.
fn web_pkg_dir() -> PathBuf {
    root().join("target/web/pkg")
}

/// Build `web/client` for the browser and run wasm-bindgen on it (as a
/// library: the generated JS always matches the wasm-bindgen crate).
fn web() -> Result<PathBuf> {
    ensure_target(WEB_TARGET)?;
    let target_dir = root().join("target/web");
    run(cargo()
        .args([
            "build",
            "--release",
            "--target",
            WEB_TARGET,
            "--manifest-path",
            "web/client/Cargo.toml",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        // getrandom's browser backend (crypto.getRandomValues).
        .env("RUSTFLAGS", r#"--cfg getrandom_backend="wasm_js""#))?;
    let wasm = target_dir
        .join(WEB_TARGET)
        .join("release/agora_web_client.wasm");
    let out = web_pkg_dir();
    eprintln!(
        "$ wasm-bindgen --target web --out-name agora-web {} --out-dir {}",
        wasm.display(),
        out.display()
    );
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)?
        .out_name("agora-web")
        .generate(&out)
        .context("wasm-bindgen")?;
    Ok(out)
}

/// A Vulkan driver: the real GPU's, or Mesa's lavapipe on machines without one.
fn ensure_vulkan() -> Result<()> {
    let icd_dirs = [
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
        "/usr/local/share/vulkan/icd.d",
    ];
    let has_icd = icd_dirs
        .iter()
        .any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()));
    let has_loader =
        output(Command::new("ldconfig").arg("-p")).is_some_and(|s| s.contains("libvulkan.so.1"));
    if has_icd && has_loader {
        return Ok(());
    }
    if !cfg!(target_os = "linux") {
        return Ok(()); // Metal / DX12 need nothing installed.
    }
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "no Vulkan driver found: install Mesa's lavapipe (Debian/Ubuntu: `sudo apt-get install mesa-vulkan-drivers libvulkan1`) or your GPU's driver"
        );
    }
    eprintln!("no Vulkan driver: installing Mesa's lavapipe (software Vulkan)");
    apt_install(&["mesa-vulkan-drivers", "libvulkan1"])
}

fn apt_install(packages: &[&str]) -> Result<()> {
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// playwright-core (from npm, pinned by web/e2e/package-lock.json) to
/// drive Chromium in the browser journey; it never downloads a browser.
fn ensure_e2e_driver() -> Result<()> {
    let dir = root().join("web/e2e");
    if dir.join("node_modules/playwright-core").exists() {
        return Ok(());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        bail!(
            "no `npm` on PATH: install Node.js (Debian/Ubuntu: `sudo apt-get install nodejs npm`) for the web market's browser test"
        );
    }
    run(Command::new("npm")
        .current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund"]))
}

/// Headless Chromium for the web market's browser test.
fn ensure_chromium() -> Result<()> {
    if Command::new("chromium").arg("--version").output().is_ok() {
        return Ok(());
    }
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "no `chromium` on PATH: install it (Debian/Ubuntu: `sudo apt-get install chromium`) for the web market's browser test"
        );
    }
    eprintln!("no Chromium: installing Debian's chromium for the browser test");
    apt_install(&["chromium"])
}

/// The job crates of the guest workspace (each a component), by package name.
fn guest_crates() -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(root().join("examples/Cargo.toml"))?;
    let members = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .context("examples/Cargo.toml has no members line")?;
    let mut names = Vec::new();
    for member in members.split('"').skip(1).step_by(2) {
        let crate_manifest =
            std::fs::read_to_string(root().join("examples").join(member).join("Cargo.toml"))
                .with_context(|| format!("reading the manifest of {member}"))?;
        // A library the jobs share (examples/mlp) is no job of its own.
        if !crate_manifest.contains("\"cdylib\"") {
            continue;
        }
        let name = crate_manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .with_context(|| format!("{member} has no package name"))?;
        names.push(name.to_string());
    }
    Ok(names)
}

/// Test sources that may name a guest.
fn test_sources() -> Result<String> {
    let mut text = String::new();
    for dir in ["host/tests", "tests", "host/benches"] {
        let dir = root().join(dir);
        if !dir.exists() {
            continue;
        }
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    text.push_str(&std::fs::read_to_string(&path)?);
                }
            }
        }
    }
    Ok(text)
}

/// Build every guest as a component; refuse a guest no test runs.
fn examples() -> Result<Vec<PathBuf>> {
    ensure_target(GUEST_TARGET)?;
    let names = guest_crates()?;
    let tests = test_sources()?;
    let unused: Vec<&String> = names
        .iter()
        .filter(|n| !tests.contains(&format!("guest(\"{n}\")")))
        .collect();
    if !unused.is_empty() {
        bail!("guests that no test runs (add a test that calls guest(\"NAME\")): {unused:?}");
    }
    // Run from examples/ so its .cargo/config.toml (wasm SIMD) applies.
    run(cargo()
        .current_dir(root().join("examples"))
        .args(["build", "--release", "--target", GUEST_TARGET])
        .env("CARGO_TARGET_DIR", root().join("target/wasm")))?;
    let mut paths = Vec::new();
    for name in names {
        let path = guests_dir().join(format!("{}.wasm", name.replace('-', "_")));
        if !path.exists() {
            bail!("{} was not built", path.display());
        }
        println!("{}", path.display());
        paths.push(path);
    }
    Ok(paths)
}

fn digits_dir() -> PathBuf {
    root().join("target/digits")
}

/// The digits examples' data (`examples/mlp/prepare_digits.py`: the data
/// set scikit-learn's wheel ships, fetched by pip from PyPI), made once.
fn digits() -> Result<()> {
    let dir = digits_dir();
    if dir.join("labels.txt").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    run(Command::new("python3")
        .arg(root().join("examples/mlp/prepare_digits.py"))
        .arg(&dir))
    .context("making the digits data set (needs python3 with pip, and PyPI)")
}

/// PostgreSQL for the market's tests: reachable, or started when it is
/// installed here and we are root, or a clear message.
fn ensure_postgres() -> Result<()> {
    if std::env::var_os("AGORA_TEST_POSTGRES").is_some() {
        return Ok(());
    }
    let up = || {
        std::net::TcpStream::connect_timeout(
            &"127.0.0.1:5432".parse().unwrap(),
            std::time::Duration::from_secs(2),
        )
        .is_ok()
    };
    if up() {
        return Ok(());
    }
    if is_root()
        && let Ok(versions) = std::fs::read_dir("/etc/postgresql")
    {
        for version in versions.flatten() {
            let version = version.file_name().to_string_lossy().into_owned();
            eprintln!("PostgreSQL is not running: starting cluster {version}/main");
            let _ = run(Command::new("pg_ctlcluster").args([
                "--skip-systemctl-redirect",
                &version,
                "main",
                "start",
            ]));
        }
        for _ in 0..20 {
            if up() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    bail!(
        "the market's tests need PostgreSQL at 127.0.0.1:5432 (trust auth, database `test`), or AGORA_TEST_POSTGRES=postgres://..."
    )
}

/// A real S3-compatible server for the object-store tests: moto's
/// `moto_server`, from PyPI (the tests start their own on a free port).
fn ensure_s3_server() -> Result<()> {
    if Command::new("moto_server")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    if Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_err()
    {
        bail!(
            "no `moto_server` and no pip: install moto's S3 server (`python3 -m pip install 'moto[server]'`) for the object-store tests"
        );
    }
    eprintln!("no S3-compatible server: installing moto's from PyPI");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "moto[server]"]))
}

/// HAProxy for the replica test (Debian's package).
fn ensure_haproxy() -> Result<()> {
    if Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    if !is_root() {
        bail!("the replica test needs HAProxy: apt-get install haproxy");
    }
    apt_install(&["haproxy"])
}

fn test() -> Result<()> {
    ensure_vulkan()?;
    ensure_postgres()?;
    ensure_s3_server()?;
    ensure_haproxy()?;
    ensure_chromium()?;
    ensure_e2e_driver()?;
    examples()?;
    digits()?;
    web()?;
    run(cargo().args(["test", "--workspace", "--locked"]))
}

fn up() -> Result<()> {
    ensure_vulkan()?;
    let guests = examples()?;
    web()?;
    run(cargo().args(["build", "--release", "--bin", "agora"]))?;
    let agora = root().join("target/release/agora");
    let out = root().join("target/agora-up");
    let home = out.join("home");
    std::fs::create_dir_all(&home)?;
    let agora_cmd = || {
        let mut cmd = Command::new(&agora);
        cmd.env("AGORA_HOME", &home);
        cmd
    };
    let key_id = |file: &str| -> Result<String> {
        let path = home.join(file);
        let verb = if path.exists() { "show" } else { "new" };
        let id = output(agora_cmd().arg("--key").arg(&path).args(["keys", verb]))
            .context("making a key")?;
        Ok(id.trim().to_string())
    };
    let operator = key_id("operator.json")?;
    let buyer = key_id("key.json")?;

    let port = std::env::var("AGORA_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080u16);
    let market_url = format!("http://127.0.0.1:{port}");
    let mut market = agora_cmd()
        .args([
            "market",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--operator",
            &operator,
        ])
        .arg("--db")
        .arg(format!("sqlite://{}", out.join("market.db").display()))
        .spawn()
        .context("starting the market")?;
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(30) || market.try_wait()?.is_some() {
            let _ = market.kill();
            bail!("the market did not start on port {port} (set AGORA_PORT to use another)");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let client = |cmd: &mut Command| {
        cmd.env("AGORA_MARKET", &market_url);
    };
    for path in &guests {
        let name = path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace('_', "-");
        // Test guests (host/test-guests) are not products.
        if matches!(name.as_str(), "hostile" | "kernel-loop") {
            continue;
        }
        let readme = std::fs::read_to_string(root().join("examples").join(&name).join("README.md"))
            .unwrap_or_default();
        let description = readme
            .lines()
            .find(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap_or("")
            .to_string();
        let mut cmd = agora_cmd();
        client(&mut cmd);
        cmd.arg("publish").arg(path).args([
            "--name",
            &name,
            "--version",
            "0.1.0",
            "--description",
            &description,
            "--tag",
            "example",
        ]);
        match cmd.output() {
            Ok(o) if o.status.success() => eprintln!("published {name} 0.1.0"),
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("already published") => {}
            Ok(o) => eprintln!(
                "publishing {name}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("publishing {name}: {e}"),
        }
    }
    let mut mint = agora_cmd();
    client(&mut mint);
    mint.arg("--key").arg(home.join("operator.json")).args([
        "mint",
        &buyer,
        "10000",
        "--id",
        "demo-buyer-funding",
    ]);
    let _ = mint.output();
    // A canary with an exact answer (saxpy of small integers): new
    // providers, browser tabs included, run it among their first leases.
    let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (canary_in, canary_out) = (out.join("canary-saxpy.in"), out.join("canary-saxpy.out"));
    std::fs::write(
        &canary_in,
        floats(&[2.0, 1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]),
    )?;
    std::fs::write(&canary_out, floats(&[12.0, 24.0, 36.0, 48.0]))?;
    let mut canary = agora_cmd();
    client(&mut canary);
    canary
        .arg("--key")
        .arg(home.join("operator.json"))
        .args(["canary", "saxpy@0.1.0", "--input"])
        .arg(&canary_in)
        .arg("--expect")
        .arg(&canary_out);
    match canary.output() {
        Ok(o) if o.status.success() => eprint!("{}", String::from_utf8_lossy(&o.stdout)),
        Ok(o) => eprintln!(
            "adding a canary: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("adding a canary: {e}"),
    }

    // Two providers the operator vouches for (its own hosts: a fresh key's
    // results count only with a trusted provider's agreement); each still
    // checks the other at random.
    let mut hosts = Vec::new();
    for name in ["provider-1.json", "provider-2.json"] {
        let id = key_id(name)?;
        let mut vouch = agora_cmd();
        client(&mut vouch);
        vouch
            .arg("--key")
            .arg(home.join("operator.json"))
            .args(["vouch", &id]);
        match vouch.output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "vouching for {name}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("vouching for {name}: {e}"),
        }
        let mut host = agora_cmd();
        client(&mut host);
        host.arg("--key")
            .arg(home.join(name))
            .args(["host", "--max-concurrent", "1"]);
        hosts.push(host.spawn().context("starting a provider host")?);
    }

    let png = out.join("mandelbrot.png");
    let view = out.join("view.txt");
    std::fs::write(
        &view,
        "width=1200 height=800 x=-0.7436 y=0.1318 zoom=60 iterations=1200",
    )?;
    let mut render = agora_cmd();
    render
        .arg("run")
        .arg(guests_dir().join("mandelbrot.wasm"))
        .arg("--input")
        .arg(&view)
        .arg("--output")
        .arg(&png);
    run(&mut render)?;

    println!("\nAgora is up.");
    println!("  web market  {market_url}/   (packages, providers, live market figures)");
    println!(
        "  contribute  {market_url}/contribute   (a WebGPU browser tab earns credits on browser-capable units)"
    );
    println!(
        "  market      {market_url}   (API document: {market_url}/api/openapi.json, metrics: {market_url}/metrics)"
    );
    println!("  database    {}", out.join("market.db").display());
    println!("  demo buyer  {buyer} (10000 credits)");
    println!(
        "  a render    {} (mandelbrot through the host runtime)",
        png.display()
    );
    println!(
        "  providers   two hosts on this machine's GPU (or CPU), keys in {}",
        home.display()
    );
    println!("\nTry, in another shell:");
    println!(
        "  export AGORA_HOME={} AGORA_MARKET={market_url} PATH={}:$PATH",
        home.display(),
        agora.parent().unwrap().display()
    );
    println!(
        "  agora submit mandelbrot --input {} --max-price 500 --wait -o out/   # through the market",
        view.display()
    );
    println!(
        "  agora search example && agora info mandelbrot && agora balance --history && agora jobs"
    );
    println!("\nCtrl-C stops everything.");
    let status = market.wait()?;
    for mut host in hosts {
        let _ = host.kill();
        let _ = host.wait();
    }
    eprintln!("market stopped ({status})");
    Ok(())
}

fn bench_host() -> Result<()> {
    ensure_vulkan()?;
    examples()?;
    run(cargo().args(["bench", "-p", "agora-host", "--bench", "host"]))
}

fn bench_gpu() -> Result<()> {
    examples()?;
    run(cargo().args(["bench", "-p", "agora-host", "--bench", "gpu"]))
}

fn bench_market() -> Result<()> {
    ensure_postgres()?;
    run(cargo().args(["bench", "-p", "agora-market", "--bench", "market"]))
}

/// The lifecycle simulation with fresh seeds and more steps than CI runs;
/// a failure prints its seed (replay with `AGORA_SEED=N cargo test -p
/// agora-market lifecycle_under_attack`).
fn sim(rounds: u32) -> Result<()> {
    ensure_postgres()?;
    examples()?;
    let steps = std::env::var("AGORA_SIM_STEPS").unwrap_or_else(|_| "3000".into());
    for round in 1..=rounds {
        eprintln!("simulation round {round} of {rounds} ({steps} steps)");
        let mut cmd = cargo();
        cmd.args([
            "test",
            "-p",
            "agora-market",
            "--test",
            "it",
            "lifecycle_under_attack",
            "--",
            "--nocapture",
        ]);
        cmd.env("AGORA_SIM_STEPS", &steps)
            .env_remove("CI")
            .env_remove("AGORA_SEED");
        run(&mut cmd)?;
    }
    Ok(())
}

fn bench_shared() -> Result<()> {
    ensure_vulkan()?;
    examples()?;
    run(cargo().args(["bench", "-p", "agora", "--bench", "shared"]))
}

fn bench_lifecycle() -> Result<()> {
    ensure_postgres()?;
    examples()?;
    run(cargo().args(["bench", "-p", "agora-market", "--bench", "lifecycle"]))
}
