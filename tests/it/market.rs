//! The market commands against a running `agora market serve` (SQLite).

use super::*;

#[test]
fn publish_search_info_fetch_mint_and_balance() {
    let market = Market::start("market-cli");
    let key = market.home.join("key.json");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(market.home.join("known-logs.json"));
    let out = market.agora(&["keys", "new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let me = stdout(&out).trim().to_string();
    let key_meta = std::fs::metadata(&key).unwrap();
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_meta.permissions()) & 0o777,
        0o600,
        "the key file is private"
    );

    let mandelbrot = guest("mandelbrot");
    let out = market.agora(&[
        "publish",
        mandelbrot.to_str().unwrap(),
        "--name",
        "mandelbrot",
        "--version",
        "1.0.0",
        "--description",
        "The Mandelbrot set as a PNG",
        "--tag",
        "gpu",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = market.agora(&[
        "publish",
        mandelbrot.to_str().unwrap(),
        "--name",
        "mandelbrot",
        "--version",
        "1.0.0",
    ]);
    assert!(!out.status.success(), "a version cannot be published twice");
    assert!(
        stderr(&out).contains("already published"),
        "{}",
        stderr(&out)
    );

    let out = market.agora(&["search", "png"]);
    assert!(stdout(&out).contains("mandelbrot"), "{}", stdout(&out));
    let out = market.agora(&["info", "mandelbrot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&me),
        "the publisher key is shown: {}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("exports [run]"));

    let fetched = market.home.join("fetched.wasm");
    let out = market.agora(&["fetch", "mandelbrot", "-o", fetched.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&mandelbrot).unwrap()
    );

    let out = market.agora(&["mint", &me, "250"]);
    assert!(!out.status.success(), "only the operator mints");
    let operator = market.home.join("operator.json");
    let out = market.agora(&["--key", operator.to_str().unwrap(), "mint", &me, "250"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = market.agora(&["balance", "--history"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("available  250 credits"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_client_refuses_a_log_that_went_back_in_time() {
    let market = Market::start("market-rollback");
    let key = market.home.join("key.json");
    let _ = std::fs::remove_file(&key);
    assert!(market.agora(&["keys", "new"]).status.success());
    let saxpy = guest("saxpy");
    for version in ["1.0.0", "1.1.0"] {
        let out = market.agora(&[
            "publish",
            saxpy.to_str().unwrap(),
            "--name",
            "saxpy",
            "--version",
            version,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Pretend this client had seen a longer log than the market now serves.
    let known = market.home.join("known-logs.json");
    let mut heads: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&known).unwrap()).unwrap();
    heads["saxpy"][0] = serde_json::json!(5);
    std::fs::write(&known, heads.to_string()).unwrap();
    let out = market.agora(&["info", "saxpy"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rollback"), "{}", stderr(&out));
}

/// A market answers only requests made for its own public origin: a client
/// that dialled it by another name (as a hostile market relaying what its
/// clients sign would present it) is told which market its request was for.
#[test]
fn a_market_refuses_requests_signed_for_another_origin() {
    let market = Market::start_with(
        "market-origin",
        &["--public-url", "https://market.example.org"],
    );
    let out = market.agora(&["keys", "new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = market.agora(&["balance"]);
    assert!(
        !refused.status.success(),
        "a request signed for {} was accepted",
        market.url
    );
    let message = stderr(&refused);
    assert!(
        message.contains(&market.url) && message.contains("https://market.example.org"),
        "{message}"
    );
    // The default (no --public-url) answers to the address it listens on.
    let local = Market::start("market-origin-default");
    assert!(local.agora(&["keys", "new"]).status.success());
    let out = local.agora(&["balance"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
