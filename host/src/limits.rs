//! Every bound the host puts on a job, with the reason for each.
//!
//! [`Limits`] are per job and chosen by whoever runs it (within the
//! ceilings); the `const`s are fixed by the host because no job has a
//! legitimate reason to need more.

use crate::gpu::GpuQuota;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest component accepted: bigger ones are refused before compiling, so
/// compile time and memory stay bounded (the examples are under 1 MiB).
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Longest compile the supervisor waits for before killing the worker:
/// Cranelift has no cancellation, and a crafted component can take long.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest linear memory any job may ask for (the wasm32 address space).
pub const MAX_MEMORY_BYTES_CEILING: u64 = agora_wire::limits::MAX_UNIT_MEMORY_BYTES;

/// Table elements per table: enough for any real program's indirect calls,
/// small enough that `table.grow` cannot exhaust host memory.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Core and component instances per job: a component of the job world needs
/// a handful (the program, the WASI adapter, shims).
pub const MAX_INSTANCES: usize = 32;

/// Tables and memories per job, as with instances.
pub const MAX_TABLES: usize = 32;
pub const MAX_MEMORIES: usize = 8;

/// Wasm stack: deep enough for recursive real code, and a stack overflow is a
/// trap, never a host crash.
pub const MAX_WASM_STACK_BYTES: usize = 1 << 20;

/// Bytes one host call may copy out of the guest (lists and strings): large
/// data goes through blobs and GPU buffers, not through one call.
pub const MAX_HOSTCALL_BYTES: usize = 64 << 20;

/// Handles (buffers, shaders, blobs) a job may hold at once.
pub const MAX_HANDLES: usize = 10_000;

/// Log lines kept per job and the longest line: a chatty job cannot fill the
/// host's memory or the market's storage.
pub const MAX_LOG_LINES: usize = 10_000;
/// Least time between two live updates of a running job.
pub const LIVE_UPDATE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Bytes of log messages kept per job, all lines together: even escaped in
/// JSON (six bytes a control character) a run's report and a live update
/// stay well inside a worker frame's header (16 MiB), so a chatty job never
/// costs an honest worker its answer.
pub const MAX_LOG_BYTES: usize = 1 << 20;

/// Captured stdout/stderr of the guest (WASI), per stream.
pub const MAX_STDIO_BYTES: usize = 256 << 10;

/// Longest error message a job may return; the rest is cut.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 64 << 10;

/// How often the engine's epoch advances: the granularity of wall-clock
/// deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Extra wall time the supervisor grants past a job's timeout (GPU teardown,
/// reply) before it kills the worker.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Bytes one worker process may hold in all (the sandbox's memory wall): the
/// largest linear memory a unit may ask for, the default host-side blob and
/// GPU buffer quotas (on a software adapter GPU buffers are host memory),
/// the shared inputs it holds (`agora_wire::limits::MAX_SHARED_INPUT_BYTES`),
/// and a gigabyte for the runtime, the driver and compiled code.
pub const WORKER_MEMORY_BYTES: u64 = MAX_MEMORY_BYTES_CEILING
    + (1 << 30)
    + (2 << 30)
    + agora_wire::limits::MAX_SHARED_INPUT_BYTES
    + (1 << 30);

/// The step of a guest's clocks (`clocks.rs`): coarse enough that a job
/// cannot time another tenant's shader compiles or cache hits, fine enough
/// for progress reports and a job's own timing.
pub const GUEST_CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

/// Per-job limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Wasm fuel (about one unit per instruction): deterministic, so it
    /// meters and bills CPU work the same on every provider.
    pub fuel: u64,
    /// Linear memory, all memories together.
    pub memory_bytes: u64,
    /// Wall clock for the whole run, host calls included (epoch deadline in
    /// the guest, worker kill outside it).
    #[serde(with = "crate::report::millis")]
    pub timeout: Duration,
    /// Bytes of the result.
    pub output_bytes: u64,
    /// Host-side bytes the job creates (blobs, output included).
    pub blob_bytes: u64,
    pub gpu: GpuQuota,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000_000,
            memory_bytes: 512 << 20,
            timeout: Duration::from_secs(60),
            output_bytes: 256 << 20,
            blob_bytes: 1 << 30,
            gpu: GpuQuota {
                buffer_bytes_max: 2 << 30,
                dispatches_max: 1_000_000,
                gpu_time_max: Duration::from_secs(60),
            },
        }
    }
}

impl Limits {
    /// Refuse limits beyond the host's ceilings.
    pub fn check(&self) -> Result<(), String> {
        if self.memory_bytes > MAX_MEMORY_BYTES_CEILING {
            return Err(format!(
                "memory limit {} exceeds the ceiling {MAX_MEMORY_BYTES_CEILING}",
                self.memory_bytes
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout must be positive".into());
        }
        Ok(())
    }
}
