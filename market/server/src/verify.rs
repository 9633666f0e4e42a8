//! Checking a result with the package's own `verify(input, output)` export.
//!
//! Where it runs: in the market, through a [`ResultVerifier`] the operator
//! provides (`agora market serve` runs it in a sandboxed worker process of
//! the host runtime, without a GPU, under the job's fuel, memory and time
//! limits).
//!
//! Why there: the market is the party that settles, and the only one with
//! no stake in a result being accepted. A provider cannot check its own
//! result, and a second provider asked to check could answer `true` without
//! running anything. `verify` is the package author's code, signed in the
//! package log like `run`, so the buyer chose it by choosing the package;
//! it gets its randomness from the market's host (WASI random), so the
//! provider whose output is checked cannot predict the checks (Freivalds'
//! random vectors in `examples/matmul`).
//!
//! What it buys: outputs that differ bit for bit but are all correct (float
//! rounding on different GPUs) are accepted, and one result from an
//! untrusted provider is enough when it passes, instead of a second full
//! run to compare digests.

/// Runs a package's `verify` export. Blocking: the market calls it on a
/// blocking thread.
pub trait ResultVerifier: Send + Sync {
    /// `Ok(true)` when `output` is a correct answer to `input`; `Err` when
    /// verification did not complete (a limit, a trap, a lost worker).
    fn verify(&self, component: &[u8], input: &[u8], output: &[u8], limits: &VerifyLimits) -> Result<bool, String>;
}

/// The limits a verification runs under: the job's own.
#[derive(Clone, Copy, Debug)]
pub struct VerifyLimits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
}
