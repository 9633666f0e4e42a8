//! The buyer's whole journey in the web market, in a real browser
//! (playwright-core driving Debian's headless Chromium) against a real
//! market and real provider hosts: create a key, see it funded, find the
//! mandelbrot package, submit a job, watch it finish, see the image and
//! the refund; then queue a job with a bid and cancel it from its page.
//! Screenshots go to target/web/screenshots.

use super::*;
use std::io::BufRead;

#[test]
fn a_buyer_runs_mandelbrot_from_the_browser() {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "run `npm ci` in {} (cargo xtask test does)",
        e2e.display()
    );
    let pkg = std::env::var_os("AGORA_WEB_PKG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web/pkg"));
    assert!(
        pkg.join("agora-web.js").exists(),
        "no browser bundle in {}: run `cargo xtask web`",
        pkg.display()
    );
    let market = Market::start_with("web-journey", &["--web-pkg", pkg.to_str().unwrap()]);
    let _ = std::fs::remove_file(market.home.join("key.json"));
    assert!(market.agora(&["keys", "new"]).status.success());
    let out = market.agora(&[
        "publish",
        guest("mandelbrot").to_str().unwrap(),
        "--name",
        "mandelbrot",
        "--version",
        "1.0.0",
        "--description",
        "Mandelbrot views as PNG",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_h1, _h2) = (
        market.host("web-provider-1", &[]),
        market.host("web-provider-2", &[]),
    );
    let input = market.home.join("view.txt");
    std::fs::write(&input, "width=320 height=200 iterations=200").unwrap();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node")
        .arg(e2e.join("journey.mjs"))
        .args([
            &market.url,
            shots.to_str().unwrap(),
            input.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let operator = market.home.join("operator.json");
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("KEY ") {
            let minted = market.agora(&["--key", operator.to_str().unwrap(), "mint", id, "5000"]);
            assert!(minted.status.success(), "{}", stderr(&minted));
        }
        lines.push(line);
    }
    assert!(
        node.wait().unwrap().success(),
        "the journey failed: {lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("DONE"), "{lines:?}");
    // The wallet after the job: less than was minted, more than the cap
    // left (the unspent part of the 500 held came back).
    let balance = lines
        .iter()
        .find_map(|l| l.strip_prefix("BALANCE "))
        .expect("the wallet was read");
    let digits: String = balance.chars().take_while(|c| c.is_ascii_digit()).collect();
    let available: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("no balance in {balance:?}"));
    assert!(available < 5000 && available > 4500, "{balance}");
    // The second job, queued with a bid and cancelled from its page: the
    // market says so too, and holds nothing for it.
    let cancelled = lines
        .iter()
        .find_map(|l| l.strip_prefix("CANCELLED "))
        .expect("the second job was cancelled");
    let status = market.agora(&["--key", operator.to_str().unwrap(), "status", cancelled]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status = stdout(&status);
    assert!(status.contains("cancelled"), "{status}");
}
