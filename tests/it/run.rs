//! `agora run`.

use super::*;

#[test]
fn mandelbrot_writes_a_png_and_a_report() {
    let dir = temp_dir("mandelbrot");
    let (input, png) = (dir.join("view.txt"), dir.join("m.png"));
    std::fs::write(&input, "width=160 height=120 iterations=50").unwrap();
    let out = agora(&[
        "run",
        guest("mandelbrot").to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let err = stderr(&out);
    assert!(
        err.contains("outcome     ok") && err.contains("dispatches"),
        "{err}"
    );
}

#[test]
fn a_limit_is_a_one_line_cause_and_a_nonzero_exit() {
    let dir = temp_dir("fuel");
    let input = dir.join("cmd");
    std::fs::write(&input, "fuel").unwrap();
    let out = agora(&[
        "run",
        guest("hostile").to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-W",
        "fuel=1000000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: limit exceeded (fuel)")),
        "{err}"
    );
}

#[test]
fn json_report_is_machine_readable() {
    let out = agora(&[
        "run",
        guest("hostile").to_str().unwrap(),
        "--json",
        "--gpu",
        "none",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(&stderr(&out)).expect("stderr is the JSON report");
    assert_eq!(report["outcome"]["kind"], "ok");
    assert!(report["fuel_used"].as_u64().unwrap() > 0);
    assert!(report["adapter"].is_null(), "--gpu none has no adapter");
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    let out = agora(&[
        "run",
        guest("hostile").to_str().unwrap(),
        "-W",
        "warp-speed=9",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown limit"), "{}", stderr(&out));
    let out = agora(&["run", "/nonexistent.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent.wasm"));
}

#[test]
fn verify_accepts_the_right_output_and_rejects_a_wrong_one() {
    let dir = temp_dir("verify");
    let (m, n, k) = (20u32, 30u32, 40u32);
    let mut input: Vec<u8> = [m, n, k].iter().flat_map(|v| v.to_le_bytes()).collect();
    for i in 0..(m * k + k * n) {
        input.extend(((i % 13) as f32 * 0.25 - 1.0).to_le_bytes());
    }
    let (input_path, out_path) = (dir.join("in.bin"), dir.join("out.bin"));
    std::fs::write(&input_path, &input).unwrap();
    let matmul = guest("matmul");
    let out = agora(&[
        "run",
        matmul.to_str().unwrap(),
        "-i",
        input_path.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let verify = agora(&[
        "run",
        matmul.to_str().unwrap(),
        "-i",
        input_path.to_str().unwrap(),
        "--verify",
        out_path.to_str().unwrap(),
    ]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert!(stderr(&verify).contains("verify: accepted"));

    let mut wrong = std::fs::read(&out_path).unwrap();
    wrong[103] ^= 0x40; // the exponent of C[25]
    std::fs::write(&out_path, &wrong).unwrap();
    let verify = agora(&[
        "run",
        matmul.to_str().unwrap(),
        "-i",
        input_path.to_str().unwrap(),
        "--verify",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(stderr(&verify).contains("verify: rejected"));
}
