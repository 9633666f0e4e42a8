//! The standard kernels (`kernels/` in the Agora repository): the host runs
//! them on its fastest path (CUDA where present, else WGSL).

use crate::bindings::job::agora::compute::kernels as wit;
use crate::{Buffer, Result};

/// y = a * x + y over f32 buffers of equal size.
pub fn saxpy(a: f32, x: &Buffer, y: &Buffer) -> Result<()> {
    Ok(wit::saxpy(a, &x.0, &y.0)?)
}

/// c (m x n) = a (m x k) * b (k x n), row-major f32.
pub fn matmul(m: u32, n: u32, k: u32, a: &Buffer, b: &Buffer, c: &Buffer) -> Result<()> {
    Ok(wit::matmul(m, n, k, &a.0, &b.0, &c.0)?)
}

/// out[0] = sum of the f32 values in `input`.
pub fn sum(input: &Buffer, out: &Buffer) -> Result<()> {
    Ok(wit::sum(&input.0, &out.0)?)
}
