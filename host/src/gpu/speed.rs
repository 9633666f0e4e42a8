//! The host's benchmark: how fast a device runs the standard `matmul`
//! kernel, in GFLOPS, as a provider reports it to the market (buyers ask
//! for a minimum with `agora submit --min-gflops`).
//!
//! Design choices:
//! - It runs the same kernel, through the same [`GpuSession`], that jobs
//!   calling `kernels::matmul` get (cuBLAS on CUDA hosts, the WGSL kernel on
//!   wgpu), so the number describes what a buyer's units meet, not a peak
//!   from a spec sheet.
//! - One warm-up call first (the kernel's compile is not speed), then
//!   batches of calls, each batch waited for (a queue that only accepted
//!   work has done none), until [`MEASURE_FOR`] has passed. A batch doubles
//!   until it takes [`MIN_BATCH_TIME`], so a fast GPU is timed on its work,
//!   not on the wait after each call.
//! - It is the provider's claim like its card's name: the market bounds it
//!   (`agora_wire::limits::check_capabilities`, and by the trusted
//!   providers of the same class), and leasing honours it.

use super::{BufferId, GpuBackend, GpuError, GpuNeeds, GpuQuota, KernelCall, Usage};
use std::time::{Duration, Instant};

/// The benchmark's square matrices' side: big enough to fill a large GPU
/// (a quarter million outputs), small enough that a software adapter
/// finishes a call in tens of milliseconds.
pub const MATRIX_SIDE: u32 = 512;
/// How long the timed batches run together (after the warm-up).
pub const MEASURE_FOR: Duration = Duration::from_millis(300);
/// A batch is doubled until it takes this long.
const MIN_BATCH_TIME: Duration = Duration::from_millis(20);
/// At most this many calls in a batch.
const MAX_BATCH: u32 = 1 << 14;
/// Dispatches the benchmark's session may make: 64 of the largest
/// batch's (a kernel may take several dispatches a call, and timing runs
/// batches until `MEASURE_FOR` has passed).
const MAX_DISPATCHES: u64 = 64 * MAX_BATCH as u64;

/// What one benchmark measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    /// fp32 matmul GFLOPS.
    pub gflops: f64,
    /// The device was poisoned (a wait timed out): its worker must go.
    pub poisoned: bool,
}

/// Measure `gpu`'s fp32 matmul speed (`None` without a GPU).
pub fn measure(gpu: &dyn GpuBackend) -> Result<Option<Measured>, GpuError> {
    if gpu.info().is_none() {
        return Ok(None);
    }
    let n = MATRIX_SIDE;
    let side = n as usize * n as usize;
    let bytes = side as u64 * 4;
    let mut session = gpu.open_session(
        GpuQuota {
            buffer_bytes_max: bytes * 4,
            dispatches_max: MAX_DISPATCHES,
            gpu_time_max: MEASURE_FOR * 50,
        },
        GpuNeeds::default(),
    );
    let storage = Usage {
        storage: true,
        uniform: false,
    };
    let mut matrix = |seed: u32| -> Result<BufferId, GpuError> {
        let buffer = session.create_buffer(bytes, storage)?;
        let values: Vec<u8> = (0..side as u32)
            .flat_map(|i| (((i.wrapping_mul(seed) >> 3) % 7) as f32 / 7.0).to_le_bytes())
            .collect();
        session.write(buffer, 0, &values)?;
        Ok(buffer)
    };
    let (a, b) = (matrix(2_654_435_761)?, matrix(40_503)?);
    let c = session.create_buffer(bytes, storage)?;
    let call = KernelCall::Matmul {
        m: n,
        n,
        k: n,
        a,
        b,
        c,
    };
    let mut batch = |calls: u32| -> Result<Duration, GpuError> {
        let started = Instant::now();
        for _ in 0..calls {
            session.kernel(call)?;
        }
        session.finish()?;
        Ok(started.elapsed())
    };
    // The warm-up, then the batch that takes long enough.
    batch(1)?;
    let mut size = 1;
    while size < MAX_BATCH && batch(size)? < MIN_BATCH_TIME {
        size *= 2;
    }
    let (mut calls, mut spent) = (0u64, Duration::ZERO);
    while spent < MEASURE_FOR {
        spent += batch(size)?;
        calls += u64::from(size);
    }
    let flops = 2.0 * f64::from(n).powi(3) * calls as f64;
    let measured = Measured {
        gflops: flops / spent.as_secs_f64().max(1e-9) / 1e9,
        poisoned: session.poisoned(),
    };
    Ok(Some(measured))
}
