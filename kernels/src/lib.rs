//! The standard kernel library: the WGSL sources every GPU backend can run,
//! the CUDA C sources of the native CUDA path,
//! the CPU reference implementations they are checked against, and the
//! tolerances those checks use.
//!
//! Design choices:
//! - A kernel is named by its WIT function (`agora:compute/kernels`); the
//!   layout of its bindings is fixed here and documented at the top of its
//!   `.wgsl` file. Backends load the sources from this crate, never copies.
//! - CPU references favour accuracy over speed: they accumulate in `f64`, so a
//!   tolerance bounds the backend's rounding, not the reference's.
//! - This crate depends on nothing, so guests (wasm32) and the browser tier
//!   can use it too.

pub mod cpu;
pub mod rng;

/// WGSL source of `saxpy`: bindings params (uniform {a, n}), x, y.
pub const SAXPY_WGSL: &str = include_str!("../wgsl/saxpy.wgsl");
/// Workgroup size (x) of `saxpy`.
pub const SAXPY_WORKGROUP: u32 = 256;

/// WGSL source of `matmul`: bindings params (uniform {m, n, k}), a, b, c.
pub const MATMUL_WGSL: &str = include_str!("../wgsl/matmul.wgsl");
/// Side of the square tile of C one `matmul` workgroup computes.
pub const MATMUL_TILE: u32 = 128;

/// WGSL source of `sum`: entries `partial` and `finish`; bindings params
/// (uniform {n, groups}), input, partials, out.
pub const SUM_WGSL: &str = include_str!("../wgsl/sum.wgsl");
/// Workgroup size of both `sum` passes.
pub const SUM_WORKGROUP: u32 = 256;
/// Most workgroups of the first `sum` pass (the second pass reduces this many
/// partials in one workgroup).
pub const SUM_MAX_GROUPS: u32 = 1024;

/// Number of first-pass workgroups `sum` uses for `n` elements.
pub fn sum_groups(n: u32) -> u32 {
    n.div_ceil(SUM_WORKGROUP).clamp(1, SUM_MAX_GROUPS)
}

/// CUDA C source of `saxpy` (kernel `saxpy(a, x, y, n)`), compiled at run
/// time by the CUDA backend (NVRTC).
pub const SAXPY_CU: &str = include_str!("../cuda/saxpy.cu");
/// Threads per block of the CUDA `saxpy`.
pub const SAXPY_CUDA_BLOCK: u32 = 256;

/// CUDA C source of `sum` (kernels `sum_partial` and `sum_finish`; the same
/// two passes, group counts and block size as the WGSL `sum`). `matmul` has
/// no CUDA source: the CUDA backend calls cuBLAS SGEMM.
pub const SUM_CU: &str = include_str!("../cuda/sum.cu");

/// One unit of f32 rounding (2^-24).
pub const F32_UNIT_ROUNDOFF: f64 = 1.0 / 16_777_216.0;

/// The tolerance a computed value `got` is held to against a reference
/// `want` computed in f64, given the error bound `bound` of the f32
/// computation (see the `*_bound` functions in [`cpu`]).
pub fn within(got: f32, want: f64, bound: f64) -> bool {
    got.is_finite() && ((got as f64) - want).abs() <= bound + f64::MIN_POSITIVE
}
