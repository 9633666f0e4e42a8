//! Checking a result with the package's own `verify(input, output)` export:
//! the verifier seam, and the limits the market gives a verification.
//!
//! Where it runs: in the market, through a [`ResultVerifier`] the operator
//! provides (`agora market serve` runs it in sandboxed worker processes of
//! the host runtime, without a GPU), after the result is taken: a result is
//! queued for verification (`jobs::verifying`), never checked inside the
//! provider's request, so a slow verification cannot lose its verdict to a
//! request timeout.
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
//!
//! What it costs, and who decides: the market's own machines run every
//! verification and nobody pays for them, so the market, not the buyer,
//! chooses the limits ([`VerifyLimits::for_run`]): a stated share of the
//! run's, within the market's own bounds.

use agora_wire::api::RunOutcome;

/// A verification gets this fraction (1/N) of its run's fuel and time:
/// checking an answer is meant to be cheaper than computing it
/// (Freivalds' check of a product is O(n²) against the product's O(n³)).
pub const VERIFY_SHARE: u64 = 4;
/// The least fuel a verification gets, whatever its run's: enough to read
/// a unit's input and output.
pub const MIN_VERIFY_FUEL: u64 = 100_000_000;
/// The least time a verification gets: a worker compiles the component
/// first.
pub const MIN_VERIFY_TIMEOUT_MS: u64 = 10_000;
/// The most time one verification may take on the market's machines.
pub const MAX_VERIFY_TIMEOUT_MS: u64 = 300_000;
/// The most memory one verification may use on the market's machines.
pub const MAX_VERIFY_MEMORY_BYTES: u64 = 1 << 30;
/// Times a verification is started before the market gives up on it: a
/// verifier lost (its worker died, its market replica stopped) does not
/// count against the provider until this many tries.
pub const VERIFY_ATTEMPTS: i64 = 3;

/// Blobs by name: a job's shared inputs (the host's `SharedInputs`), or a
/// result's named outputs (the host's `NamedOutputs`).
pub type SharedInputs = std::collections::BTreeMap<String, std::sync::Arc<[u8]>>;

/// What `verify` reads by name beside the input and the output.
#[derive(Clone, Debug, Default)]
pub struct ByName {
    /// The job's shared inputs (`data.shared`).
    pub shared: SharedInputs,
    /// The checked result's named outputs (`data.named-output`).
    pub outputs: SharedInputs,
}

/// Runs a package's `verify` export. Blocking: the market calls it on a
/// blocking thread.
pub trait ResultVerifier: Send + Sync {
    /// `Ok(true)` when `output` is a correct answer to `input`; `Err` when
    /// verification did not complete.
    fn verify(
        &self,
        component: &[u8],
        input: &[u8],
        output: &[u8],
        limits: &VerifyLimits,
    ) -> Result<bool, VerifyFailure>;

    /// [`ResultVerifier::verify`] for a job with shared inputs or a result
    /// with named outputs: `verify` reads them by name as `run` did. A
    /// verifier that cannot give them reaches no verdict.
    fn verify_shared(
        &self,
        component: &[u8],
        input: &[u8],
        output: &[u8],
        by_name: &ByName,
        limits: &VerifyLimits,
    ) -> Result<bool, VerifyFailure> {
        if !by_name.shared.is_empty() || !by_name.outputs.is_empty() {
            return Err(VerifyFailure {
                outcome: RunOutcome::Refused,
                message: "this verifier cannot give a job its shared inputs or named outputs"
                    .into(),
            });
        }
        self.verify(component, input, output, limits)
    }

    /// Verifications it can run at once (its workers).
    fn parallelism(&self) -> usize {
        1
    }
}

/// Why a verification reached no verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// How the `verify` run ended.
    pub outcome: RunOutcome,
    pub message: String,
}

impl VerifyFailure {
    /// The verifier, not the package, failed (its worker was lost): the
    /// market tries again, up to [`VERIFY_ATTEMPTS`].
    pub fn is_verifier_lost(&self) -> bool {
        self.outcome == RunOutcome::WorkerLost
    }
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.message.is_empty() {
            true => write!(f, "{}", self.outcome),
            false => write!(f, "{}: {}", self.outcome, self.message),
        }
    }
}

/// The limits a verification runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyLimits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
}

impl VerifyLimits {
    /// The limits of a verification of a run under `fuel`, `memory_bytes`
    /// and `timeout_ms`: [`VERIFY_SHARE`] of its fuel and time, its memory,
    /// within the market's bounds.
    pub fn for_run(fuel: u64, memory_bytes: u64, timeout_ms: u64) -> VerifyLimits {
        VerifyLimits {
            fuel: (fuel / VERIFY_SHARE).max(MIN_VERIFY_FUEL),
            memory_bytes: memory_bytes.min(MAX_VERIFY_MEMORY_BYTES),
            timeout_ms: (timeout_ms / VERIFY_SHARE)
                .clamp(MIN_VERIFY_TIMEOUT_MS, MAX_VERIFY_TIMEOUT_MS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_gets_a_share_of_its_run_within_the_markets_bounds() {
        let hour = 3_600_000;
        assert_eq!(
            VerifyLimits::for_run(4_000_000_000, 4 << 30, hour),
            VerifyLimits {
                fuel: 1_000_000_000,
                memory_bytes: MAX_VERIFY_MEMORY_BYTES,
                timeout_ms: MAX_VERIFY_TIMEOUT_MS
            }
        );
        assert_eq!(
            VerifyLimits::for_run(1_000, 64 << 20, 1_000),
            VerifyLimits {
                fuel: MIN_VERIFY_FUEL,
                memory_bytes: 64 << 20,
                timeout_ms: MIN_VERIFY_TIMEOUT_MS
            }
        );
        assert_eq!(
            VerifyLimits::for_run(u64::MAX, u64::MAX, u64::MAX).timeout_ms,
            MAX_VERIFY_TIMEOUT_MS
        );
    }
}
