//! Integration tests of the host runtime, on real components built from
//! `examples/` and `host/test-guests/` (`cargo xtask examples`) and real
//! wgpu dispatches (lavapipe where there is no GPU).

mod conformance;
mod examples;
mod hostile;
mod loading;
mod pool;
mod sandbox;

use agora_host::{GpuChoice, Limits, Outcome, RunReport, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where `cargo xtask examples` put the components.
fn guests_dir() -> PathBuf {
    match std::env::var_os("AGORA_GUESTS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm/wasm32-wasip2/release")
        }
    }
}

/// The bytes of a built guest component (`guest("saxpy")`).
pub fn guest(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests first with `cargo xtask examples`",
            path.display()
        )
    })
}

/// One in-process runtime on the real GPU (or lavapipe), shared by tests.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // Auto: where CUDA exists, kernel-only jobs run on it (as on a provider).
        let runtime = Runtime::new(RuntimeConfig {
            gpu: GpuChoice::Auto,
        })
        .expect("the runtime starts");
        assert!(
            runtime.devices().iter().any(|d| d.backend != "cuda"),
            "a wgpu adapter (lavapipe: `cargo xtask test` installs it)"
        );
        runtime
    })
}

/// Run guest `name` on `input` in-process.
pub fn run(name: &str, input: &[u8], limits: &Limits) -> (RunReport, Option<Vec<u8>>) {
    let component = runtime().load(&guest(name)).expect("the guest loads");
    runtime().run(&component, input.to_vec(), limits)
}

/// The hostile guest's command `command`.
pub fn hostile(command: &str, limits: &Limits) -> (RunReport, Option<Vec<u8>>) {
    run("hostile", command.as_bytes(), limits)
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A fresh seed, printed so a failure replays with AGORA_SEED.
pub fn seed() -> u64 {
    agora_kernels::rng::Rng::test_seed()
}

#[track_caller]
pub fn assert_ok(report: &RunReport) {
    assert!(
        report.outcome.is_ok(),
        "expected ok, got {} (logs {:?})",
        report.outcome,
        report.logs
    );
}

#[track_caller]
pub fn assert_limit(report: &RunReport, limit: agora_host::LimitKind) {
    match &report.outcome {
        Outcome::LimitExceeded { limit: hit, .. } if *hit == limit => {}
        other => panic!("expected the {} limit, got {other}", limit.name()),
    }
}
