//! What the host's benchmarks share: the guests they run and the median.

use std::time::Duration;

/// A guest component built by `cargo xtask examples`.
pub fn guest(name: &str) -> Vec<u8> {
    let dir = std::env::var("AGORA_GUESTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/wasm/wasm32-wasip2/release"
        )
        .into()
    });
    std::fs::read(format!("{dir}/{}.wasm", name.replace('-', "_")))
        .expect("run `cargo xtask examples` first")
}

/// The median of `samples` (the upper one of an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
