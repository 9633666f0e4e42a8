//! The whole product: a market, provider hosts and a buyer, as processes.

use super::*;

/// Publish mandelbrot, fund the buyer, return the buyer's id.
fn setup(market: &Market) -> String {
    let _ = std::fs::remove_file(market.home.join("key.json"));
    let _ = std::fs::remove_file(market.home.join("known-logs.json"));
    let me = stdout(&market.agora(&["keys", "new"])).trim().to_string();
    let mandelbrot = guest("mandelbrot");
    let out = market.agora(&["publish", mandelbrot.to_str().unwrap(), "--name", "mandelbrot", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let operator = market.home.join("operator.json");
    assert!(market.agora(&["--key", operator.to_str().unwrap(), "mint", &me, "5000"]).status.success());
    me
}

fn available(market: &Market) -> u64 {
    let out = market.agora(&["balance"]);
    let text = stdout(&out);
    let line = text.lines().find(|l| l.starts_with("available")).unwrap_or_else(|| panic!("{text} {}", stderr(&out)));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_buyer_runs_mandelbrot_through_the_market_and_pays_for_it() {
    let market = Market::start("lifecycle");
    setup(&market);
    let (_h1, _h2) = (market.host("provider-1", &[]), market.host("provider-2", &[]));
    let dir = market.home.join("view");
    std::fs::create_dir_all(&dir).unwrap();
    let inputs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let path = dir.join(format!("view-{i}.txt"));
            std::fs::write(&path, format!("width={} height=120 iterations=80", 100 + 20 * i)).unwrap();
            path
        })
        .collect();
    let out_dir = market.home.join("outputs");
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut args = vec!["submit", "mandelbrot"];
    for p in &inputs {
        args.extend(["--input", p.to_str().unwrap()]);
    }
    args.extend(["--max-price", "3000", "--wait", "-o", out_dir.to_str().unwrap()]);
    let out = market.agora(&args);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for i in 0..3 {
        let png = std::fs::read(out_dir.join(format!("unit-{i}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 100 + 20 * i);
    }
    let spent = 5000 - available(&market);
    assert!(spent > 0 && spent < 3000, "the job cost something and the rest came back: spent {spent}");
    assert!(stdout(&out).contains("refunded"), "{}", stdout(&out));
}

#[test]
fn a_job_survives_a_market_restart() {
    let mut market = Market::start("lifecycle-restart");
    setup(&market);
    let input = market.home.join("view.txt");
    std::fs::write(&input, "width=64 height=64 iterations=50").unwrap();
    let out = market.agora(&["submit", "mandelbrot", "--input", input.to_str().unwrap(), "--max-price", "2000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).trim().to_string();
    // The market dies before any provider ran the unit, and comes back.
    market.restart();
    let (_h1, _h2) = (market.host("provider-a", &[]), market.host("provider-b", &[]));
    let started = Instant::now();
    loop {
        let status = stdout(&market.agora(&["status", &job]));
        if status.contains("(Done)") {
            assert!(status.contains("verified"), "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the job did not finish: {status}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(available(&market) < 5000);
}
