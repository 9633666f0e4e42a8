//! Browser contributors, in Debian's headless Chromium with WebGPU on
//! SwiftShader, against a real market:
//! - conformance: the standard kernels and the example jobs' browser
//!   bundles give, in the browser, what the native host gives (within the
//!   kernels' stated bounds), and the same errors for the same misdeeds;
//! - contribution: a tab on /contribute leases units of a job submitted
//!   from the CLI, returns signed results the market verifies (the
//!   package's `verify`) and settles, and its balance rises; an operator's
//!   canary among its first leases is answered right; a job's shared input
//!   (a trained network) reaches the tab's worker through `data.shared`.

use super::*;
use agora_host::{GpuChoice, Limits, Runtime, RuntimeConfig, gpu::GpuQuota};
use agora_kernels::{cpu, rng::Rng, within};
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::BufRead;

fn e2e_dir() -> PathBuf {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "run `npm ci` in {} (cargo xtask test does)",
        e2e.display()
    );
    e2e
}

fn web_market(name: &str) -> Market {
    let pkg = std::env::var_os("AGORA_WEB_PKG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web/pkg"));
    assert!(
        pkg.join("agora-web.js").exists(),
        "no browser bundle in {}: run `cargo xtask web`",
        pkg.display()
    );
    let market = Market::start_with(name, &["--web-pkg", pkg.to_str().unwrap()]);
    let _ = std::fs::remove_file(market.home.join("key.json"));
    assert!(market.agora(&["keys", "new"]).status.success());
    market
}

fn publish(market: &Market, guest_name: &str) -> String {
    let path = guest(guest_name);
    let out = market.agora(&[
        "publish",
        path.to_str().unwrap(),
        "--name",
        guest_name,
        "--version",
        "1.0.0",
        "--description",
        "browser test",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    agora_wire::digest_hex(&std::fs::read(path).unwrap())
}

/// A tab on /contribute (`web/e2e/contribute.mjs`) until it has done
/// `units` units, its screenshots under `shots`; what it printed.
fn contribute(market: &Market, shots: &str, units: u32) -> Vec<String> {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(shots);
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node")
        .arg(e2e_dir().join("contribute.mjs"))
        .args([&market.url, shots.to_str().unwrap(), &units.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let lines: Vec<String> = std::io::BufReader::new(node.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    assert!(
        node.wait().unwrap().success(),
        "the contribution failed: {lines:?}"
    );
    lines
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// The browser's limits for a unit, as `agora-worker.js` takes them, and
/// the same limits for the native host.
fn limits(buffer_bytes: u64, dispatches: u64) -> (Value, Limits) {
    let browser = json!({"timeoutMs": 120000, "outputBytes": 1u64 << 28, "blobBytes": 1u64 << 30,
                         "gpuBufferBytes": buffer_bytes, "gpuDispatches": dispatches, "gpuTimeMs": 120000});
    let native = Limits {
        timeout: Duration::from_secs(120),
        gpu: GpuQuota {
            buffer_bytes_max: buffer_bytes,
            dispatches_max: dispatches,
            gpu_time_max: Duration::from_secs(120),
        },
        ..Limits::default()
    };
    (browser, native)
}

/// Run `cases` in the browser (see web/e2e/browser-runtime.mjs).
fn in_browser(market: &Market, cases: &Value) -> Value {
    let dir = temp_dir("browser-cases");
    let (cases_file, results_file) = (dir.join("cases.json"), dir.join("results.json"));
    std::fs::write(&cases_file, serde_json::to_vec(cases).unwrap()).unwrap();
    let _ = std::fs::remove_file(&results_file);
    let out = Command::new("node")
        .arg(e2e_dir().join("browser-runtime.mjs"))
        .args([
            &market.url,
            cases_file.to_str().unwrap(),
            results_file.to_str().unwrap(),
        ])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let results: Value = serde_json::from_slice(&std::fs::read(&results_file).unwrap()).unwrap();
    assert_eq!(results["jspi"], true, "Chromium has JSPI");
    assert_eq!(
        results["adapter"]["backend"], "webgpu",
        "a WebGPU adapter (SwiftShader): {results}"
    );
    results
}

#[test]
fn the_browser_runtime_conforms_to_the_native_host() {
    let market = web_market("browser-conformance");
    let mut rng = Rng::new(Rng::test_seed());

    // 1. The standard kernels, on fresh inputs and edge sizes.
    let mut kernels = Vec::new();
    let mut checks: Vec<Box<dyn Fn(&Value)>> = Vec::new();
    for n in [1usize, 257, rng.range(1000, 20_000) as usize] {
        let (a, x, y) = (rng.f32() * 8.0, rng.f32_vec(n), rng.f32_vec(n));
        kernels.push(json!({"call": "saxpy", "args": {"a": a, "x": x, "y": y}}));
        checks.push(Box::new(move |got| {
            let got = floats(&got["values"]);
            assert_eq!(got.len(), n);
            for i in 0..n {
                assert!(
                    within(
                        got[i],
                        cpu::saxpy_exact(a, x[i], y[i]),
                        cpu::saxpy_bound(a, x[i], y[i])
                    ),
                    "saxpy n={n} i={i}: {}",
                    got[i]
                );
            }
        }));
    }
    for (m, n, k) in [
        (1, 1, 1),
        (65, 63, 17),
        (129, 127, 9),
        (rng.range(1, 150), rng.range(1, 150), rng.range(1, 150)),
    ] {
        let (a, b) = (rng.f32_vec((m * k) as usize), rng.f32_vec((k * n) as usize));
        kernels.push(json!({"call": "matmul", "args": {"m": m, "n": n, "k": k, "a": a, "b": b}}));
        checks.push(Box::new(move |got| {
            let got = floats(&got["values"]);
            let (want, bound) = cpu::matmul(m as usize, n as usize, k as usize, &a, &b);
            assert_eq!(got.len(), want.len());
            for i in 0..got.len() {
                assert!(
                    within(got[i], want[i], bound[i]),
                    "matmul {m}x{n}x{k} C[{i}]: {} vs {}",
                    got[i],
                    want[i]
                );
            }
        }));
    }
    for n in [1usize, 257, rng.range(10_000, 300_000) as usize] {
        let x = rng.f32_vec(n);
        kernels.push(json!({"call": "sum", "args": {"x": x}}));
        checks.push(Box::new(move |got| {
            let (want, bound) = cpu::sum(&x);
            let got = floats(&got["values"])[0];
            assert!(within(got, want, bound), "sum n={n}: {got} vs {want}");
        }));
    }

    // 2. Example jobs and misdeeds, through their browser bundles, beside
    // the native host on this machine's wgpu adapter.
    let digests: std::collections::HashMap<&str, String> =
        ["saxpy", "matmul", "mandelbrot", "kernel-loop", "hostile"]
            .into_iter()
            .map(|g| (g, publish(&market, g)))
            .collect();
    let (m, n, k) = (rng.range(1, 90), rng.range(1, 90), rng.range(1, 90));
    let (a, b) = (rng.f32_vec((m * k) as usize), rng.f32_vec((k * n) as usize));
    let matmul_input: Vec<u8> = [
        [m, n, k].iter().flat_map(|v| v.to_le_bytes()).collect(),
        f32_bytes(&a),
        f32_bytes(&b),
    ]
    .concat();
    let x = rng.f32_vec(500);
    let saxpy_input = [3.5f32.to_le_bytes().to_vec(), f32_bytes(&x), f32_bytes(&x)].concat();
    let loop_n = 33u32;
    let (la, lb) = (
        rng.f32_vec((loop_n * loop_n) as usize),
        rng.f32_vec((loop_n * loop_n) as usize),
    );
    let loop_input = [
        [loop_n, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
        f32_bytes(&la),
        f32_bytes(&lb),
    ]
    .concat();
    let roomy = limits(1 << 30, 100_000);
    let units: Vec<(&str, Vec<u8>, (Value, Limits))> = vec![
        ("saxpy", saxpy_input, roomy.clone()),
        ("matmul", matmul_input, roomy.clone()),
        ("kernel-loop", loop_input, roomy.clone()),
        (
            "mandelbrot",
            b"width=96 height=64 iterations=64".to_vec(),
            roomy.clone(),
        ),
        ("hostile", b"bad-wgsl".to_vec(), roomy.clone()),
        ("hostile", b"binding-mismatch".to_vec(), roomy.clone()),
        ("hostile", b"gpu-bomb".to_vec(), limits(200 << 20, 100_000)),
        ("hostile", b"dispatch-bomb".to_vec(), limits(1 << 30, 40)),
        ("hostile", b"out-of-bounds".to_vec(), roomy.clone()),
    ];
    let cases = json!({
        "kernels": kernels,
        "units": units.iter().map(|(guest, input, (browser, _))| json!({
            "bundle": format!("{}/api/v1/browser/{}/", market.url, digests[guest]),
            "input_base64": base64::engine::general_purpose::STANDARD.encode(input),
            "limits": browser,
        })).collect::<Vec<_>>(),
    });
    let results = in_browser(&market, &cases);

    for (check, got) in checks.iter().zip(results["kernels"].as_array().unwrap()) {
        assert_eq!(got["ok"], true, "{got}");
        check(got);
    }

    let native = Runtime::new(RuntimeConfig {
        gpu: GpuChoice::Auto,
    })
    .unwrap();
    let browser_units = results["units"].as_array().unwrap();
    assert_eq!(browser_units.len(), units.len());
    for ((guest_name, input, (_, native_limits)), got) in units.iter().zip(browser_units) {
        let component = native
            .load(&std::fs::read(guest(guest_name)).unwrap())
            .unwrap();
        let (report, output) = native.run(&component, input.clone(), native_limits);
        let case = format!(
            "{guest_name} {}",
            String::from_utf8_lossy(&input[..input.len().min(20)])
        );
        let browser_output = got["output_base64"]
            .as_str()
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap());
        let browser_error = got["error"].as_str().unwrap_or_default().to_lowercase();
        match *guest_name {
            "saxpy" | "matmul" | "kernel-loop" => {
                assert_eq!(got["ok"], true, "{case}: {got}");
                let (ours, theirs) = (f32s(&browser_output.unwrap()), f32s(&output.unwrap()));
                assert_eq!(ours.len(), theirs.len(), "{case}");
                // Both within the f32 bound of the exact result.
                let (want, bound): (Vec<f64>, Vec<f64>) = match *guest_name {
                    "saxpy" => x
                        .iter()
                        .map(|v| (cpu::saxpy_exact(3.5, *v, *v), cpu::saxpy_bound(3.5, *v, *v)))
                        .unzip(),
                    "matmul" => cpu::matmul(m as usize, n as usize, k as usize, &a, &b),
                    _ => {
                        let (w, b) = cpu::matmul(
                            loop_n as usize,
                            loop_n as usize,
                            loop_n as usize,
                            &la,
                            &lb,
                        );
                        (vec![w[0]], vec![b[0]])
                    }
                };
                for i in 0..ours.len() {
                    assert!(
                        within(ours[i], want[i], bound[i]),
                        "{case} [{i}] browser {} vs {}",
                        ours[i],
                        want[i]
                    );
                    assert!(
                        within(theirs[i], want[i], bound[i]),
                        "{case} [{i}] native {} vs {}",
                        theirs[i],
                        want[i]
                    );
                }
                assert_eq!(
                    got["report"]["dispatches"].as_u64(),
                    Some(report.gpu.dispatches),
                    "{case}: same dispatches"
                );
            }
            "mandelbrot" => {
                let (ours, theirs) = (browser_output.expect("a PNG"), output.unwrap());
                assert_eq!(&ours[..8], b"\x89PNG\r\n\x1a\n");
                assert_eq!(ours[16..24], theirs[16..24], "the same width and height");
                assert_eq!(
                    got["report"]["progress"],
                    json!(report.progress.map(|(d, t)| [d, t])),
                    "the same progress reports"
                );
            }
            _ => {
                let command = String::from_utf8_lossy(input).to_string();
                let native_error = report.outcome.to_string().to_lowercase();
                // The guest sees the same `gpu-error` variant (and numbers).
                let expect: &[&str] = match command.as_str() {
                    "bad-wgsl" => &["invalid-shader"],
                    "binding-mismatch" => &["invalid-argument", "@binding(0)"],
                    "gpu-bomb" => &["quota-exceeded", "gpu buffer bytes", "209715200"],
                    "dispatch-bomb" => &["quota-exceeded", "dispatches", "41", "40"],
                    _ => {
                        // Stray writes stay inside the buffer written: the
                        // second buffer is untouched on both.
                        assert_eq!(got["ok"], true, "{case}: {got}");
                        let (ours, theirs) =
                            (f32s(&browser_output.unwrap()), f32s(&output.unwrap()));
                        assert_eq!(ours[16..], [7.0; 16], "{case}: browser");
                        assert_eq!(theirs[16..], [7.0; 16], "{case}: native");
                        continue;
                    }
                };
                assert_eq!(got["ok"], false, "{case}: {got}");
                assert_eq!(got["report"]["outcome"], "job-error", "{case}: {got}");
                for token in expect {
                    assert!(
                        browser_error.contains(token),
                        "{case}: the browser says {browser_error:?}"
                    );
                    assert!(
                        native_error.contains(token),
                        "{case}: the native host says {native_error:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_browser_tab_earns_credits_for_real_units() {
    let market = web_market("browser-contribute");
    publish(&market, "matmul");
    let operator = market.home.join("operator.json");
    let buyer = stdout(&market.agora(&["keys", "show"])).trim().to_string();
    assert!(
        market
            .agora(&["--key", operator.to_str().unwrap(), "mint", &buyer, "5000"])
            .status
            .success()
    );
    // Two units of matmul, submitted from the CLI.
    let mut rng = Rng::new(Rng::test_seed());
    let mut args = vec![
        "submit".to_string(),
        "matmul".into(),
        "--max-price".into(),
        "400".into(),
    ];
    let mut expected = Vec::new();
    for unit in 0..2 {
        let (m, n, k) = (rng.range(2, 40), rng.range(2, 40), rng.range(2, 40));
        let (a, b) = (rng.f32_vec((m * k) as usize), rng.f32_vec((k * n) as usize));
        let input = market.home.join(format!("unit-{unit}.bin"));
        std::fs::write(
            &input,
            [
                [m, n, k].iter().flat_map(|v| v.to_le_bytes()).collect(),
                f32_bytes(&a),
                f32_bytes(&b),
            ]
            .concat(),
        )
        .unwrap();
        args.extend(["--input".into(), input.to_str().unwrap().to_string()]);
        expected.push(cpu::matmul(m as usize, n as usize, k as usize, &a, &b));
    }
    let out = market.agora(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).lines().last().unwrap().trim().to_string();
    // A canary with an exact answer (small integers): a new tab runs it
    // first, as if it were a buyer's unit.
    let (canary_in, canary_out) = (
        market.home.join("canary.in"),
        market.home.join("canary.out"),
    );
    std::fs::write(
        &canary_in,
        [
            [2u32, 2, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
            f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
        ]
        .concat(),
    )
    .unwrap();
    std::fs::write(&canary_out, f32_bytes(&[19.0, 22.0, 43.0, 50.0])).unwrap();
    let out = market.agora(&[
        "--key",
        operator.to_str().unwrap(),
        "canary",
        "matmul@1.0.0",
        "--input",
        canary_in.to_str().unwrap(),
        "--expect",
        canary_out.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("canary c"), "{}", stdout(&out));

    let lines = contribute(&market, "target/web/screenshots", 3);
    let provider = lines
        .iter()
        .find_map(|l| l.strip_prefix("PROVIDER "))
        .expect("registered")
        .to_string();
    let done: Vec<u64> = lines
        .iter()
        .find_map(|l| l.strip_prefix("DONE "))
        .expect("finished")
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(done[0], 3, "the canary and the job's two units done");
    assert!(done[1] > 0, "the page shows credits earned");

    // The market verified and settled both units: the job is done, each
    // output is right, and the browser provider was paid.
    let status = stdout(&market.agora(&["status", &job]));
    assert!(status.contains("(Done)"), "{status}");
    assert_eq!(units_in(&status, "verified"), 2, "{status}");
    let outputs = market.home.join("outputs");
    assert!(
        market
            .agora(&["result", &job, "--output", outputs.to_str().unwrap()])
            .status
            .success()
    );
    for (unit, (want, bound)) in expected.iter().enumerate() {
        let got = f32s(&std::fs::read(outputs.join(format!("unit-{unit}.out"))).unwrap());
        assert_eq!(got.len(), want.len());
        for i in 0..got.len() {
            assert!(
                within(got[i], want[i], bound[i]),
                "unit {unit} C[{i}]: {} vs {}",
                got[i],
                want[i]
            );
        }
    }
    let balance = stdout(&market.agora(&[
        "--key",
        operator.to_str().unwrap(),
        "balance",
        "--account",
        &provider,
    ]));
    let available: u64 = balance
        .split_whitespace()
        .skip_while(|w| !w.starts_with("available"))
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no available balance in {balance:?}"));
    assert!(available > 0, "the browser provider was paid: {balance}");
    // Three successes (the canary answered right) lift the tab past its
    // prior; a wrong canary answer would have left it near 0.3.
    let providers: Value = agora_wire::client::Client::new(&market.url, None)
        .get("/api/v1/providers")
        .unwrap();
    let tab = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == provider.as_str())
        .expect("the tab is listed");
    assert!(tab["reputation"].as_f64().unwrap() > 0.5, "{tab}");
}

// A tab takes units of a job with a shared input: digits-classify with a
// network trained by `agora run` as the shared input `model`. The page
// fetches the model once (checked against its digest) and hands it to the
// worker, whose `data.shared` serves it; the market verifies each answer
// (the package's `verify` re-runs the network) and the joined answers are
// the CPU reference's.
#[test]
fn a_browser_tab_runs_units_that_read_a_shared_input() {
    use super::digits::{Model, digits, held_out_images, run_local};
    let data = digits();
    let market = web_market("browser-shared");
    publish(&market, "digits-classify");
    let model = market.home.join("model.json");
    let config = market.home.join("config.json");
    std::fs::write(&config, r#"{"lr":0.4,"hidden":32,"epochs":3}"#).unwrap();
    let shared = format!("digits={}", data.join("digits.bin").display());
    let trained = run_local(
        &guest("digits-train"),
        &shared,
        &config,
        &["-o", model.to_str().unwrap()],
    );
    assert!(trained.status.success(), "{}", stderr(&trained));
    let operator = market.home.join("operator.json");
    let buyer = stdout(&market.agora(&["keys", "show"])).trim().to_string();
    assert!(
        market
            .agora(&["--key", operator.to_str().unwrap(), "mint", &buyer, "5000"])
            .status
            .success()
    );
    let batches = data.join("batches");
    let (first, second) = (batches.join("batch-000.bin"), batches.join("batch-001.bin"));
    let model_shared = format!("model={}", model.display());
    let out = market.agora(&[
        "submit",
        "digits-classify",
        "--shared",
        &model_shared,
        "--input",
        first.to_str().unwrap(),
        "--input",
        second.to_str().unwrap(),
        "--max-price",
        "400",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).lines().last().unwrap().trim().to_string();

    contribute(&market, "target/web/screenshots/shared", 2);

    let status = stdout(&market.agora(&["status", &job]));
    assert!(
        status.contains("(Done)") && units_in(&status, "verified") == 2,
        "{status}"
    );
    let joined = market.home.join("answers.txt");
    let out = market.agora(&["result", &job, "--join", joined.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<usize> = std::fs::read_to_string(&joined)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let model = Model::of(&serde_json::from_slice(&std::fs::read(&model).unwrap()).unwrap());
    let images = held_out_images(&data);
    assert!(
        answers.len() > 40 && answers.len() <= images.len(),
        "two batches' answers: {}",
        answers.len()
    );
    let differ = images
        .iter()
        .zip(&answers)
        .filter(|&(x, &a)| model.classify(x) != a)
        .count();
    assert!(
        differ <= 1,
        "{differ} of the tab's answers differ from the CPU reference (a float tie at most)"
    );
}
