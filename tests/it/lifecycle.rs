//! The whole product: a market, provider hosts and a buyer, as processes.

use super::*;

/// Publish mandelbrot, fund the buyer, return the buyer's id.
fn setup(market: &Market) -> String {
    setup_with(market, "mandelbrot")
}

/// Publish guest `name` as package `name` 1.0.0, fund the buyer with 5,000
/// credits, return the buyer's id.
pub(super) fn setup_with(market: &Market, name: &str) -> String {
    let _ = std::fs::remove_file(market.home.join("key.json"));
    let _ = std::fs::remove_file(market.home.join("known-logs.json"));
    let me = stdout(&market.agora(&["keys", "new"])).trim().to_string();
    let component = guest(name);
    let out = market.agora(&[
        "publish",
        component.to_str().unwrap(),
        "--name",
        name,
        "--version",
        "1.0.0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let operator = market.home.join("operator.json");
    assert!(
        market
            .agora(&["--key", operator.to_str().unwrap(), "mint", &me, "5000"])
            .status
            .success()
    );
    me
}

fn available(market: &Market) -> u64 {
    balance_of(market, &[])
}

/// Available credits of the key in `key_args` (`--key FILE`, or none for
/// the buyer's).
pub(super) fn balance_of(market: &Market, key_args: &[&str]) -> u64 {
    let mut args = key_args.to_vec();
    args.push("balance");
    let out = market.agora(&args);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("available"))
        .unwrap_or_else(|| panic!("{text} {}", stderr(&out)));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_buyer_runs_mandelbrot_through_the_market_and_pays_for_it() {
    let market = Market::start("lifecycle");
    setup(&market);
    let (_h1, _h2) = (
        market.host("provider-1", &[]),
        market.host("provider-2", &[]),
    );
    let dir = market.home.join("view");
    std::fs::create_dir_all(&dir).unwrap();
    let inputs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let path = dir.join(format!("view-{i}.txt"));
            std::fs::write(
                &path,
                format!("width={} height=120 iterations=80", 100 + 20 * i),
            )
            .unwrap();
            path
        })
        .collect();
    let out_dir = market.home.join("outputs");
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut args = vec!["submit", "mandelbrot"];
    for p in &inputs {
        args.extend(["--input", p.to_str().unwrap()]);
    }
    args.extend([
        "--max-price",
        "3000",
        "--wait",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    let out = market.agora(&args);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for i in 0..3 {
        let png = std::fs::read(out_dir.join(format!("unit-{i}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            100 + 20 * i
        );
    }
    let spent = 5000 - available(&market);
    assert!(
        spent > 0 && spent < 3000,
        "the job cost something and the rest came back: spent {spent}"
    );
    assert!(stdout(&out).contains("refunded"), "{}", stdout(&out));
    // Each unit's log line came through the market.
    let job = stdout(&out).lines().next().unwrap().trim().to_string();
    let logs = stdout(&market.agora(&["logs", &job]));
    for i in 0..3 {
        assert!(
            logs.contains(&format!("{}x120 image", 100 + 20 * i)),
            "{logs}"
        );
    }
    let followed = market.agora(&["logs", &job, "--follow"]);
    assert_eq!(
        stdout(&followed),
        logs,
        "a finished job's stream holds the same lines"
    );
    assert!(
        stderr(&followed).contains("ended: Done"),
        "{}",
        stderr(&followed)
    );
    // The buyer deletes the job's data: the outputs and logs are gone, the
    // money record stays.
    assert!(stdout(&market.agora(&["status", &job])).contains("kept until"));
    let deleted = market.agora(&["delete-data", &job]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(stdout(&market.agora(&["status", &job])).contains("data       deleted"));
    let fetched = market.agora(&[
        "result",
        &job,
        "-o",
        market.home.join("after-delete").to_str().unwrap(),
    ]);
    assert!(
        !fetched.status.success() && stderr(&fetched).contains("was deleted"),
        "{}",
        stderr(&fetched)
    );
    assert_eq!(
        stdout(&market.agora(&["logs", &job])),
        "",
        "its log lines went with it"
    );
}

#[test]
fn a_job_survives_a_market_restart() {
    let mut market = Market::start("lifecycle-restart");
    setup(&market);
    let input = market.home.join("view.txt");
    std::fs::write(&input, "width=64 height=64 iterations=50").unwrap();
    let out = market.agora(&[
        "submit",
        "mandelbrot",
        "--input",
        input.to_str().unwrap(),
        "--max-price",
        "2000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).trim().to_string();
    // The market dies before any provider ran the unit, and comes back.
    market.restart();
    let (_h1, _h2) = (
        market.host("provider-a", &[]),
        market.host("provider-b", &[]),
    );
    let started = Instant::now();
    loop {
        let status = stdout(&market.agora(&["status", &job]));
        if status.contains("(Done)") {
            assert!(units_in(&status, "verified") > 0, "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job did not finish: {status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(available(&market) < 5000);
}

/// Publish the test guest `hostile` as package `paced`: its input
/// `paced-log N` sleeps through N logged steps of 100 ms, so a unit takes
/// wall time but little CPU.
fn publish_paced(market: &Market) {
    let out = market.agora(&[
        "publish",
        guest("hostile").to_str().unwrap(),
        "--name",
        "paced",
        "--version",
        "1.0.0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Poll `agora status JOB` until `done(status)`.
fn wait_for(market: &Market, job: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let status = stdout(&market.agora(&["status", job]));
        if done(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "waited too long for {what}: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn submit(market: &Market, args: &[&str]) -> String {
    let mut all = vec!["submit"];
    all.extend(args);
    let out = market.agora(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().next().unwrap().trim().to_string()
}

fn key_of(market: &Market, name: &str) -> String {
    market
        .home
        .join(format!("{name}.json"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_provider_killed_mid_lease_loses_it_and_the_unit_runs_elsewhere() {
    let market = Market::start_with("lifecycle-kill", &["--lease-ttl", "2s"]);
    setup(&market);
    // A unit that takes seconds of wall time but little CPU (it sleeps
    // between logged steps), so the kill lands mid-run and the replicas
    // finish however busy the machine is.
    publish_paced(&market);
    let input = market.home.join("paced.txt");
    std::fs::write(&input, "paced-log 40").unwrap();
    let doomed = market.host("doomed", &[]);
    let job = submit(
        &market,
        &[
            "paced",
            "--input",
            input.to_str().unwrap(),
            "--max-price",
            "3000",
        ],
    );
    wait_for(&market, &job, "the unit to start", |s| {
        units_in(s, "running") > 0
    });
    drop(doomed);
    let (_b, _c) = (
        market.host("provider-b", &[]),
        market.host("provider-c", &[]),
    );
    let status = wait_for(&market, &job, "the job to finish", |s| s.contains("(Done)"));
    // The lost lease, then one replica elsewhere (two when a random spot check picked the unit).
    assert!(
        status.contains("attempts 2") || status.contains("attempts 3"),
        "{status}"
    );
    assert_eq!(
        balance_of(&market, &["--key", &key_of(&market, "doomed")]),
        0,
        "a lost lease is not paid"
    );
    let earned = balance_of(&market, &["--key", &key_of(&market, "provider-b")])
        + balance_of(&market, &["--key", &key_of(&market, "provider-c")]);
    assert_eq!(
        earned,
        paid_to_providers(&status),
        "each replica paid once: {status}"
    );
}

/// What `agora status` says a job paid its providers.
pub(super) fn paid_to_providers(status: &str) -> u64 {
    let credits = status
        .lines()
        .find(|l| l.starts_with("credits"))
        .unwrap_or_else(|| panic!("no credits line: {status}"));
    credits
        .split("paid to providers ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Row-major f32 bytes of an `m x k` times `k x n` problem.
fn matmul_input(m: u32, n: u32, k: u32) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
        .collect();
    let mut bytes: Vec<u8> = [m, n, k].iter().flat_map(|d| d.to_le_bytes()).collect();
    bytes.extend(a.iter().chain(&b).flat_map(|v| v.to_le_bytes()));
    (bytes, a, b)
}

#[test]
fn a_cheating_host_is_caught_by_the_packages_verify_and_not_paid() {
    let market = Market::start("lifecycle-verify");
    setup(&market);
    let matmul = guest("matmul");
    let out = market.agora(&[
        "publish",
        matmul.to_str().unwrap(),
        "--name",
        "matmul",
        "--version",
        "1.0.0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (m, n, k) = (24u32, 20u32, 16u32);
    let (bytes, a, b) = matmul_input(m, n, k);
    let input = market.home.join("matmul.bin");
    std::fs::write(&input, &bytes).unwrap();
    let cheater = market.host("cheater", &["--cheat-for-tests"]);
    let job = submit(
        &market,
        &[
            "matmul",
            "--input",
            input.to_str().unwrap(),
            "--max-price",
            "3000",
        ],
    );
    wait_for(&market, &job, "the cheater's answer", |s| {
        s.contains("verify rejected")
    });
    drop(cheater);
    let _honest = market.host("honest", &[]);
    let status = wait_for(&market, &job, "the job to finish", |s| s.contains("(Done)"));
    assert!(
        status.contains("attempts 2"),
        "one rejected, one accepted, no extra replica: {status}"
    );
    let out_dir = market.home.join("matmul-out");
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(
        market
            .agora(&["result", &job, "-o", out_dir.to_str().unwrap()])
            .status
            .success()
    );
    let c: Vec<f32> = std::fs::read(out_dir.join("unit-0.out"))
        .unwrap()
        .chunks(4)
        .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
        .collect();
    assert_eq!(c.len(), (m * n) as usize);
    for i in 0..m as usize {
        for j in 0..n as usize {
            let want: f64 = (0..k as usize)
                .map(|p| a[i * k as usize + p] as f64 * b[p * n as usize + j] as f64)
                .sum();
            assert!(
                (c[i * n as usize + j] as f64 - want).abs() < 1e-3,
                "C[{i}][{j}] = {} want {want}",
                c[i * n as usize + j]
            );
        }
    }
    assert_eq!(
        balance_of(&market, &["--key", &key_of(&market, "cheater")]),
        0,
        "the cheater is not paid"
    );
    assert!(balance_of(&market, &["--key", &key_of(&market, "honest")]) > 0);
}

// Bring your own data: a buyer uploads a 9 MiB table (two chunks) once,
// uploading it again sends nothing, and a job of four units names it as a
// shared input: two providers run the units, each reading the table
// host-side through a GPU buffer, and every output is the table.
#[test]
fn a_shared_input_is_uploaded_once_and_every_unit_reads_it() {
    let market = Market::start("shared-input");
    setup_with(&market, "hostile");
    let table_file = market.home.join("table.bin");
    let table: Vec<u8> = (0..(9usize << 20) + 5)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    std::fs::write(&table_file, &table).unwrap();
    let uploaded = market.agora(&["upload", table_file.to_str().unwrap()]);
    assert!(uploaded.status.success(), "{}", stderr(&uploaded));
    let digest = agora_wire::digest_hex(&table);
    assert!(
        stdout(&uploaded).starts_with(&digest),
        "{}",
        stdout(&uploaded)
    );
    let listed = stdout(&market.agora(&["blobs", "list"]));
    assert!(listed.contains(&digest), "{listed}");
    let (_h1, _h2) = (
        market.host("provider-1", &[]),
        market.host("provider-2", &[]),
    );
    let units = market.home.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for i in 0..4 {
        std::fs::write(units.join(format!("unit-{i}.txt")), "shared table").unwrap();
    }
    let out_dir = market.home.join("outputs");
    let _ = std::fs::remove_dir_all(&out_dir);
    let shared = format!("table={}", table_file.display());
    let out = market.agora(&[
        "submit",
        "hostile",
        "--inputs",
        units.to_str().unwrap(),
        "--shared",
        &shared,
        "--max-price",
        "4000",
        "--wait",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for i in 0..4 {
        let output = std::fs::read(out_dir.join(format!("unit-{i}.out"))).unwrap();
        assert!(
            output == table,
            "unit {i}: {} bytes, not the table",
            output.len()
        );
    }
    let job = stdout(&out).lines().next().unwrap().trim().to_string();
    let status = stdout(&market.agora(&["status", &job]));
    assert!(
        status.contains(&format!("shared     table {digest}")),
        "{status}"
    );
}

/// The number after `label` on the `credits` line of `agora status`.
fn credits(status: &str, label: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with("credits"))
        .unwrap_or_else(|| panic!("no credits line: {status}"));
    line.split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{label}` in {line}"))
        .parse()
        .unwrap()
}

#[test]
fn a_cancelled_job_stops_its_running_unit_and_refunds_the_rest_at_once() {
    // One host: a random spot check would want a second one, so none.
    let market = Market::start_with("lifecycle-cancel", &["--spot-check-rate", "0"]);
    setup(&market);
    publish_paced(&market);
    // Five minutes of sleeping steps on a host with one slot, paid per
    // second of wall time.
    let input = market.home.join("long.txt");
    std::fs::write(&input, "paced-log 3000").unwrap();
    let _host = market.host("provider", &["--max-concurrent", "1", "--ask-wall", "2"]);
    let job = submit(
        &market,
        &[
            "paced",
            "--input",
            input.to_str().unwrap(),
            "--timeout",
            "300s",
            // A unit's cap (4,500 / 3) covers the host's asks for the
            // whole timeout, or it would never lease it.
            "--max-price",
            "4500",
        ],
    );
    wait_for(&market, &job, "the unit to start", |s| {
        units_in(s, "running") > 0
    });
    let out = market.agora(&["cancel", &job]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("cancelled {job}")),
        "{}",
        stdout(&out)
    );
    let status = stdout(&market.agora(&["status", &job]));
    assert!(status.contains("(Cancelled)"), "{status}");
    // The run is paid its time; everything else came back already.
    let (paid, fee) = (
        credits(&status, "paid to providers "),
        credits(&status, "fee "),
    );
    assert!(
        paid > 0,
        "the stopped run is paid the time it ran: {status}"
    );
    assert_eq!(credits(&status, "held "), 0, "{status}");
    assert_eq!(paid + fee + credits(&status, "refunded "), 4500, "{status}");
    assert_eq!(available(&market), 5000 - paid - fee, "{status}");
    assert_eq!(
        balance_of(&market, &["--key", &key_of(&market, "provider")]),
        paid
    );
    // The host heard it and killed the run: its one slot takes the next
    // job long before the five minutes are over.
    let view = market.home.join("view.txt");
    std::fs::write(&view, "width=64 height=48 iterations=40").unwrap();
    let next = submit(
        &market,
        &[
            "mandelbrot",
            "--input",
            view.to_str().unwrap(),
            "--max-price",
            "1000",
        ],
    );
    wait_for(&market, &next, "the next job on the freed slot", |s| {
        s.contains("(Done)")
    });
}

#[test]
fn a_job_needing_more_gpu_memory_than_any_online_card_is_refused_at_submit() {
    let market = Market::start("lifecycle-needs");
    setup(&market);
    let _host = market.host("provider", &[]);
    let view = market.home.join("view.txt");
    std::fs::write(&view, "width=64 height=48 iterations=40").unwrap();
    let started = Instant::now();
    // Until the host is online the answer is that no GPU is; then it names
    // what the online one lacks.
    let refusal = loop {
        let out = market.agora(&[
            "submit",
            "mandelbrot",
            "--input",
            view.to_str().unwrap(),
            "--gpu-memory",
            "8GiB",
        ]);
        assert!(!out.status.success(), "{}", stdout(&out));
        let why = stderr(&out);
        if why.contains("llvmpipe") {
            break why;
        }
        assert!(why.contains("no provider with a GPU is online"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(120), "{why}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        refusal.contains("at least 8.0 GiB of GPU memory"),
        "{refusal}"
    );
    assert_eq!(available(&market), 5000, "nothing held: {refusal}");
    // The host measured its card's speed (the matmul kernel on llvmpipe)
    // and the market lists it; a job asking for more is refused saying so,
    // one asking for that much is taken.
    let providers: serde_json::Value = agora_wire::client::Client::new(&market.url, None)
        .get("/api/v1/providers")
        .unwrap();
    let gflops = providers[0]["capabilities"]["gpus"][0]["gflops"]
        .as_u64()
        .unwrap_or_else(|| panic!("no measured speed: {providers}"));
    assert!(gflops >= 1, "{providers}");
    let with_speed = |min: u64| {
        market.agora(&[
            "submit",
            "mandelbrot",
            "--input",
            view.to_str().unwrap(),
            "--min-gflops",
            &min.to_string(),
        ])
    };
    let out = with_speed(gflops + 1);
    assert!(!out.status.success(), "{}", stdout(&out));
    let why = stderr(&out);
    assert!(
        why.contains(&format!(
            "a measured speed of at least {} GFLOPS",
            gflops + 1
        )) && why.contains(&format!("the fastest measured: {gflops} GFLOPS")),
        "{why}"
    );
    let out = with_speed(gflops);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Write `text` to `path` under `root`, making its folders.
fn write_under(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{text}\n")).unwrap();
}

#[test]
fn a_host_on_battery_takes_no_work_until_mains_power_returns() {
    // One host: a random spot check would want a second one, so none.
    let market = Market::start_with("lifecycle-battery", &["--spot-check-rate", "0"]);
    setup(&market);
    // The host's machine, as a fake sysfs: a laptop unplugged.
    let root = temp_dir("battery-root");
    write_under(&root, "sys/class/power_supply/AC/type", "Mains");
    write_under(&root, "sys/class/power_supply/AC/online", "0");
    write_under(&root, "sys/class/power_supply/BAT0/type", "Battery");
    write_under(&root, "sys/class/power_supply/BAT0/status", "Discharging");
    // And its GPU, as amdgpu describes one.
    let card = "sys/class/drm/card0/device";
    write_under(&root, &format!("{card}/uevent"), "DRIVER=amdgpu");
    write_under(&root, &format!("{card}/gpu_busy_percent"), "12");
    write_under(&root, &format!("{card}/hwmon/hwmon1/temp1_input"), "48000");
    let config = market.home.join("host.toml");
    std::fs::write(&config, "[policy]\npause_on_battery = true\n").unwrap();
    let _host = market.host(
        "laptop",
        &[
            "--config",
            config.to_str().unwrap(),
            "--machine-root",
            root.to_str().unwrap(),
        ],
    );
    let view = market.home.join("view.txt");
    std::fs::write(&view, "width=64 height=48 iterations=40").unwrap();
    let job = submit(&market, &["mandelbrot", "--input", view.to_str().unwrap()]);
    // Heartbeats go on (the host is online), leases do not.
    std::thread::sleep(Duration::from_secs(3));
    let status = stdout(&market.agora(&["status", &job]));
    assert!(status.contains("attempts 0"), "leased on battery: {status}");
    let key = key_of(&market, "laptop");
    let host = stdout(&market.agora(&["--key", &key, "host", "status"]));
    assert!(host.contains("paused: on battery power"), "{host}");
    // Its heartbeats carry the GPU's readings to the public listing.
    let providers: serde_json::Value = agora_wire::client::Client::new(&market.url, None)
        .get("/api/v1/providers")
        .unwrap();
    let devices = &providers[0]["telemetry"]["devices"];
    assert_eq!(devices[0]["name"], "card0 amdgpu", "{providers}");
    assert_eq!(devices[0]["utilization_percent"], 12.0, "{providers}");
    assert_eq!(devices[0]["celsius"], 48.0, "{providers}");
    assert!(host.contains("0 of 2 slots busy"), "{host}");
    write_under(&root, "sys/class/power_supply/AC/online", "1");
    write_under(&root, "sys/class/power_supply/BAT0/status", "Charging");
    wait_for(&market, &job, "the job once plugged in", |s| {
        s.contains("(Done)")
    });
}

#[test]
fn a_host_config_file_sets_the_host_and_its_flags_override_it() {
    let home = temp_dir("host-config");
    let config = home.join("host.toml");
    std::fs::write(
        &config,
        "market = \"https://market.example:8443\"\nmax_concurrent = 3\ncache_size = \"1GiB\"\n\
         [ask]\nper_wall_second = 4\n[policy]\npause_on_battery = true\nmax_gpu_celsius = 80.0\n\
         [accepts]\ndeny_packages = [\"miner\"]\nunits = \"cpu-only\"\n",
    )
    .unwrap();
    let out = agora_in(
        &home,
        &[
            "host",
            "--config",
            config.to_str().unwrap(),
            "--max-concurrent",
            "5",
            "--units",
            "gpu-only",
            "--print-config",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let effective: toml::Table = stdout(&out).parse().unwrap();
    assert_eq!(
        effective["market"].as_str(),
        Some("https://market.example:8443")
    );
    assert_eq!(
        effective["max_concurrent"].as_integer(),
        Some(5),
        "the flag wins"
    );
    assert_eq!(effective["cache_size"].as_str(), Some("1073741824"));
    assert_eq!(effective["ask"]["per_wall_second"].as_integer(), Some(4));
    assert_eq!(
        effective["ask"]["per_billion_fuel"].as_integer(),
        Some(10),
        "a default"
    );
    assert_eq!(
        effective["policy"]["pause_on_battery"].as_bool(),
        Some(true)
    );
    assert_eq!(
        effective["policy"]["max_gpu_celsius"].as_float(),
        Some(80.0)
    );
    assert_eq!(
        effective["accepts"]["deny_packages"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(effective["accepts"]["units"].as_str(), Some("gpu-only"));
    // What it printed reads back as the same settings.
    let again = home.join("again.toml");
    std::fs::write(&again, stdout(&out)).unwrap();
    let out2 = agora_in(
        &home,
        &[
            "host",
            "--config",
            again.to_str().unwrap(),
            "--print-config",
        ],
    );
    assert_eq!(stdout(&out2), stdout(&out));
    // A setting the host does not know is an error that names it.
    std::fs::write(&config, "max_concurency = 3\n").unwrap();
    let out = agora_in(
        &home,
        &[
            "host",
            "--config",
            config.to_str().unwrap(),
            "--print-config",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max_concurency"), "{}", stderr(&out));
}

#[test]
fn install_service_writes_a_systemd_unit_that_runs_the_host_with_its_config() {
    let home = temp_dir("install-service");
    let units = home.join("units");
    let config = home.join("host.toml");
    // Without a config there is nothing to run: it says how to write one.
    let out = agora_in(
        &home,
        &[
            "host",
            "install-service",
            "--config",
            config.to_str().unwrap(),
            "--unit-dir",
            units.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--print-config"), "{}", stderr(&out));
    std::fs::write(&config, "max_concurrent = 1\n").unwrap();
    let out = agora_in(
        &home,
        &[
            "host",
            "install-service",
            "--config",
            config.to_str().unwrap(),
            "--unit-dir",
            units.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("systemctl --user daemon-reload && systemctl --user enable --now agora-host"),
        "{}",
        stdout(&out)
    );
    let unit = std::fs::read_to_string(units.join("agora-host.service")).unwrap();
    let config = std::fs::canonicalize(&config).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" host --config \"{}\"",
            env!("CARGO_BIN_EXE_agora"),
            config.display()
        )),
        "{unit}"
    );
    assert!(
        unit.contains("KillSignal=SIGINT") && unit.contains("KillMode=mixed"),
        "{unit}"
    );
    assert!(
        unit.contains("WantedBy=default.target") && !unit.contains("User="),
        "{unit}"
    );
    assert!(
        unit.contains(&format!("Environment=\"AGORA_HOME={}\"", home.display())),
        "{unit}"
    );
}
