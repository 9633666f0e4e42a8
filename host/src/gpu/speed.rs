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
//!   calls until [`MEASURE_FOR`] has passed, each waited for, so a queue
//!   that only accepted work is not counted as done.
//! - It is the provider's claim like its card's name: the market bounds it
//!   (`agora_wire::limits::check_capabilities`, and by the trusted
//!   providers of the same class), and leasing honours it.

use super::{BufferId, GpuBackend, GpuError, GpuNeeds, GpuQuota, KernelCall, Usage};
use std::time::{Duration, Instant};

/// The benchmark's square matrices' side: big enough that a GPU is busy
/// for more than a launch's cost, small enough that a software adapter
/// finishes a call in tens of milliseconds.
pub const MATRIX_SIDE: u32 = 256;
/// How long the timed calls run together (after the warm-up).
pub const MEASURE_FOR: Duration = Duration::from_millis(200);
/// At most this many timed calls (a fast GPU reaches it before
/// [`MEASURE_FOR`]).
const MAX_CALLS: u32 = 4096;

/// Measure `gpu`'s fp32 matmul speed in GFLOPS (`None` without a GPU).
pub fn measure(gpu: &dyn GpuBackend) -> Result<Option<f64>, GpuError> {
    if gpu.info().is_none() {
        return Ok(None);
    }
    let n = MATRIX_SIDE;
    let side = n as usize * n as usize;
    let bytes = side as u64 * 4;
    let mut session = gpu.open_session(
        GpuQuota {
            buffer_bytes_max: bytes * 4,
            dispatches_max: u64::from(MAX_CALLS + 1) * 64,
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
    session.kernel(call)?;
    session.finish()?;
    let started = Instant::now();
    let mut calls = 0u32;
    while calls < MAX_CALLS && started.elapsed() < MEASURE_FOR {
        session.kernel(call)?;
        session.finish()?;
        calls += 1;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    Ok(Some(2.0 * f64::from(n).powi(3) * f64::from(calls) / seconds / 1e9))
}
