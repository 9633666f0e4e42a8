//! Server-side rendering of each page against a real market (SQLite) with
//! a published package and a registered provider: the HTML a browser with
//! JavaScript disabled gets. (The workspace builds this crate with `ssr`,
//! which the `agora` binary enables.)
#![cfg(feature = "ssr")]

use agora_market::{AppState, Config, Db};
use agora_web::api::MarketUrl;
use agora_wire::Keypair;
use agora_wire::api::{Ask, Capabilities, GpuDevice, PublishRequest, RegisterProvider};
use agora_wire::log::{LogAction, LogEntry};
use base64::Engine as _;
use std::path::PathBuf;
use std::process::Command;

fn guest(name: &str) -> Vec<u8> {
    let dir = std::env::var("AGORA_GUESTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/wasm/wasm32-wasip2/release"
        )
        .into()
    });
    let path = format!("{dir}/{name}.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run `cargo xtask examples`"))
}

/// A market serving the API and the pages on a free port (hydrating from
/// `pkg` when given); its base URL and the package author.
async fn market_with_pages(pkg: Option<PathBuf>) -> (String, Keypair, AppState) {
    let dir = std::env::temp_dir().join(format!(
        "agora-web-it-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db = Db::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.join("market.db").display()
    ))
    .await
    .unwrap();
    let operator = Keypair::generate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // The browser signs for the origin it loaded the pages from.
    let config = Config {
        rate_per_second: 10_000,
        public_origins: vec![base.clone()],
        ..Config::new(operator.id().clone())
    };
    let state = AppState::new(db, config);
    let author = Keypair::generate();
    let bytes = guest("mandelbrot");
    let action = LogAction::Release {
        version: "1.2.0".into(),
        digest: agora_wire::digest_hex(&bytes),
        size: bytes.len() as u64,
    };
    let entry = LogEntry::new_signed(&author, "mandelbrot", None, action);
    let request = PublishRequest {
        description: "Mandelbrot views as PNG".into(),
        category: "graphics".into(),
        tags: vec!["gpu".into(), "image".into()],
        component_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        entry,
    };
    state
        .registry
        .publish(author.id(), "mandelbrot", request, state.now_ms())
        .await
        .unwrap();
    let provider = Keypair::generate();
    let gpu = GpuDevice {
        name: "llvmpipe".into(),
        backend: "vulkan".into(),
        device_type: "cpu".into(),
        memory_bytes: None,
        compute_capability: None,
        gflops: None,
    };
    let caps = Capabilities {
        cpu_cores: 16,
        memory_bytes: 64 << 30,
        gpus: vec![gpu],
        cuda: false,
        kind: "native".into(),
    };
    let register = RegisterProvider {
        capabilities: caps,
        ask: Ask {
            per_billion_fuel: 12,
            per_gpu_second: 3,
            per_wall_second: 0,
        },
        class_asks: Default::default(),
        max_concurrent: 2,
        accepts: Default::default(),
    };
    state
        .jobs
        .register(provider.id(), register, state.now_ms())
        .await
        .unwrap();
    // One heartbeat with its GPU's readings: the dashboard plots them.
    let beat = agora_wire::api::Heartbeat {
        running_units: 0,
        free_cpu_cores: 12.0,
        gpu_memory_used_bytes: None,
        devices: vec![agora_wire::api::DeviceTelemetry {
            name: "card0 amdgpu".into(),
            utilization_percent: Some(40.0),
            memory_used_bytes: None,
            celsius: Some(66.0),
            watts: None,
        }],
        leases: vec![],
        keeps: None,
    };
    state
        .jobs
        .heartbeat(provider.id(), beat, state.now_ms())
        .await
        .unwrap();
    let pages = agora_web::server::router(MarketUrl(base.clone()), pkg);
    tokio::spawn(agora_market::serve_with(
        listener,
        state.clone(),
        pages,
        None,
        std::future::pending(),
    ));
    (base, author, state)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// GET `path`: status and body.
async fn page(base: &str, path: &str) -> (u16, String) {
    let url = format!("{base}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let mut response = agent.get(&url).call().unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_on_the_server_with_its_data() {
    let (base, author, _) = market_with_pages(None).await;

    let (status, home) = page(&base, "/").await;
    assert_eq!(status, 200);
    assert!(home.contains("<title>Agora · GPU compute"), "{home}");
    assert!(
        home.contains(r#"<span class="value">1</span><span class="label">providers online</span>"#),
        "live figures: {home}"
    );
    assert!(
        home.contains(r#"<span class="value">12</span><span class="label">suggested ask"#),
        "{home}"
    );
    assert!(
        home.contains("Prices per device class"),
        "the going rate per class, or why there is none yet: {home}"
    );
    assert!(
        home.contains(r#"<meta name="viewport""#),
        "phone-width layout"
    );

    let (status, list) = page(&base, "/packages?q=image").await;
    assert_eq!(status, 200);
    assert!(
        list.contains(r#"<a href="/packages/mandelbrot">mandelbrot</a>"#),
        "{list}"
    );
    assert!(
        list.contains(r#"value="image""#),
        "the search box keeps the query: {list}"
    );
    assert!(list.contains(r#"<label for="q">"#), "labelled inputs");
    assert!(
        list.contains("graphics (1)"),
        "categories with their sizes: {list}"
    );
    let (_, other) = page(&base, "/packages?category=audio").await;
    assert!(
        other.contains("No package matches."),
        "a category filters: {other}"
    );
    let (_, graphics) = page(&base, "/packages?category=graphics&sort=recent").await;
    assert!(
        graphics.contains(r#"href="/packages/mandelbrot""#),
        "{graphics}"
    );
    let (_, none) = page(&base, "/packages?q=no-such-thing").await;
    assert!(none.contains("No package matches."), "{none}");

    let (status, package) = page(&base, "/packages/mandelbrot").await;
    assert_eq!(status, 200);
    let digest = agora_wire::digest_hex(&guest("mandelbrot"));
    assert!(package.contains(&digest[..12]), "the digest: {package}");
    assert!(package.contains(author.id().as_str()), "the publisher key");
    assert!(
        package.contains("agora:compute/data"),
        "the WIT world's imports: {package}"
    );
    assert!(package.contains("agora submit mandelbrot"), "how to run it");

    let (status, submit) = page(&base, "/submit").await;
    assert_eq!(status, 200);
    assert!(
        submit.contains("the provider that runs a unit reads its input"),
        "a buyer is told what a provider sees: {submit}"
    );
    assert!(
        submit.contains(r#"id="bid""#)
            && submit.contains(r#"min="100""#)
            && submit.contains(r#"max="1000""#),
        "a buyer bids, within MIN_BID_PERCENT and MAX_BID_PERCENT: {submit}"
    );

    let (_, missing) = page(&base, "/packages/nothing-here").await;
    assert!(
        missing.contains(r#"role="alert""#) && missing.contains("nothing-here"),
        "the API's error, in place: {missing}"
    );

    let (status, providers) = page(&base, "/providers").await;
    assert_eq!(status, 200);
    assert!(
        providers.contains("16 cores, 64 GiB, llvmpipe (vulkan)"),
        "{providers}"
    );
    assert!(providers.contains("12 / 3"), "the asks");

    let provider_id = providers
        .split("/providers/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to the provider's page")
        .to_string();
    let (status, dashboard) = page(&base, &format!("/providers/{provider_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        dashboard.matches("<svg").count(),
        6,
        "three charts of its work and three of its machine (no power reading, no power chart), drawn on the server: {dashboard}"
    );
    assert_eq!(
        dashboard.matches(r#"class="bar""#).count(),
        144,
        "24 hourly bars each"
    );
    assert!(
        dashboard.contains("GPU temperature (°C)") && dashboard.contains("66 °C"),
        "{dashboard}"
    );
    assert!(dashboard.contains("Credits earned per hour"));
    let (status, _) = page(&base, "/no/such/page").await;
    assert_eq!(status, 404);
    let (_, account) = page(&base, "/account").await;
    assert!(
        account.contains("needs JavaScript"),
        "the key lives in the browser: {account}"
    );
    let (status, contribute) = page(&base, "/contribute").await;
    assert_eq!(status, 200);
    assert!(
        contribute.contains("Contribute your GPU") && contribute.contains(r#"id="start""#),
        "{contribute}"
    );
    for (asset, needle) in [
        ("/assets/browser/agora-worker.js", "agora:compute/gpu"),
        (
            "/assets/browser/contribute.js",
            "export async function runUnit",
        ),
        (
            "/assets/browser/kernels.js",
            "export const MATMUL_TILE = 128;",
        ),
    ] {
        let (status, body) = page(&base, asset).await;
        assert_eq!(status, 200, "{asset}");
        assert!(body.contains(needle), "{asset}: {needle}");
    }
    let (status, css) = page(&base, "/assets/agora.css").await;
    assert_eq!(status, 200);
    assert!(css.contains(".figures"));
    // The API still answers beside the pages.
    let (status, api) = page(&base, "/api/v1/health").await;
    assert_eq!((status, api.contains("true")), (200, true));
}

/// The browser bundle built by `cargo xtask web`.
fn web_pkg() -> PathBuf {
    let dir = std::env::var_os("AGORA_WEB_PKG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/web/pkg"))
        });
    assert!(
        dir.join("agora-web.js").exists(),
        "{} has no agora-web.js: run `cargo xtask web`",
        dir.display()
    );
    dir
}

/// Headless Chromium with the flags known to work here, a fresh profile.
fn chromium(args: &[String]) -> std::process::Output {
    let profile = std::env::temp_dir().join(format!(
        "agora-web-chromium-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs (Debian's `chromium`; `cargo xtask test` installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_hydrate_in_headless_chromium_and_are_photographed() {
    let (base, _, _) = market_with_pages(Some(web_pkg())).await;
    let shots = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/web/screenshots"
    ));
    std::fs::create_dir_all(&shots).unwrap();
    let base_for_dom = base.clone();
    let dom = tokio::task::spawn_blocking(move || {
        chromium(&[
            "--dump-dom".into(),
            format!("{base_for_dom}/packages/mandelbrot"),
        ])
    })
    .await
    .unwrap();
    let html = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        html.contains(r#"data-hydrated="true""#),
        "the browser half took over the page: {html}\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(html.contains("Mandelbrot views as PNG"), "{html}");
    // One picture per page, at desktop and phone widths, for reviewers.
    for (name, path) in [
        ("home", "/"),
        ("packages", "/packages"),
        ("package", "/packages/mandelbrot"),
        ("providers", "/providers"),
        ("submit", "/submit"),
        ("contribute", "/contribute"),
    ] {
        for (size, window) in [("desktop", "1280,900"), ("phone", "390,844")] {
            let file = shots.join(format!("{name}-{size}.png"));
            let _ = std::fs::remove_file(&file);
            let args = vec![
                format!("--screenshot={}", file.display()),
                format!("--window-size={window}"),
                format!("{base}{path}"),
            ];
            let out = tokio::task::spawn_blocking(move || chromium(&args))
                .await
                .unwrap();
            let png = std::fs::read(&file).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}\n{}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
            assert_eq!(
                width,
                window.split(',').next().unwrap().parse::<u32>().unwrap(),
                "{name} {size}"
            );
        }
    }
    println!("screenshots in {}", shots.display());
}

/// The buyer's journey in a real browser (playwright-core driving Debian's
/// Chromium, `web/e2e/journey.mjs`): create a key, see credits arrive,
/// find the mandelbrot package.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_creates_a_key_in_the_browser_and_sees_the_funded_balance() {
    use std::io::BufRead;
    let e2e = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e"));
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "run `npm ci` in {} (cargo xtask test does)",
        e2e.display()
    );
    let (base, _, state) = market_with_pages(Some(web_pkg())).await;
    let shots = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/web/screenshots"
    ));
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node")
        .arg(e2e.join("journey.mjs"))
        .arg(&base)
        .arg(&shots)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let stdout = node.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // Fund the key as soon as the browser has made it; keep every line.
    let mut lines = Vec::new();
    let mut key_id = None;
    while let Some(line) = tokio::time::timeout(std::time::Duration::from_secs(90), rx.recv())
        .await
        .expect("the journey went quiet")
    {
        if let Some(id) = line.strip_prefix("KEY ") {
            let mint = agora_market::ledger::Op::Mint {
                account: id.to_string(),
                amount: 5000,
            };
            state
                .ledger
                .execute("fund-browser-key", &mint, state.now_ms())
                .await
                .unwrap();
            key_id = Some(id.to_string());
        }
        lines.push(line);
    }
    let status = tokio::task::spawn_blocking(move || node.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the journey failed: {lines:?}");
    let key_id = key_id.expect("the browser made a key");
    assert!(
        agora_wire::KeyId::parse(&key_id).is_ok(),
        "a real key id: {key_id}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("DONE"), "{lines:?}");
}
