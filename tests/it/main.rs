//! End-to-end tests of the `agora` program, run as a user runs it.

mod market;
mod run;

use std::path::PathBuf;
use std::process::{Command, Output};

fn guests_dir() -> PathBuf {
    match std::env::var_os("AGORA_GUESTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/wasm/wasm32-wasip2/release"),
    }
}

/// Path of a built guest component (`cargo xtask examples`).
pub fn guest(name: &str) -> PathBuf {
    let path = guests_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} is missing: run `cargo xtask examples`", path.display());
    path
}

/// Run `agora ARGS` and return its output.
pub fn agora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora")).args(args).output().expect("agora starts")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agora-it-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
