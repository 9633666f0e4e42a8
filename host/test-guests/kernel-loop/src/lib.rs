//! The guest of `cargo xtask bench gpu`: `reps` standard matmuls of one pair
//! of square matrices, then 4 bytes of C read back. It imports only the
//! standard kernels, so a CUDA host places it on CUDA.
//!
//! Input: `n`, `reps` (u32), then A and B (n x n, row-major f32).
//! Output: C[0] as 4 little-endian bytes.

use agora_guest::prelude::*;

struct KernelLoop;

impl Job for KernelLoop {
    fn run(input: Input) -> Result<Output> {
        if input.len() < 8 {
            return Err(Error::msg("input shorter than the n, reps header"));
        }
        let head = input.read_slice::<u32>(0, 2)?;
        let (n, reps) = (head[0] as u64, head[1]);
        let bytes = 4 * n * n;
        if input.len() as u64 != 8 + 2 * bytes {
            return Err(Error::msg(format!("n={n} needs {} input bytes, got {}", 8 + 2 * bytes, input.len())));
        }
        let a = Buffer::from_input(&input, 8, bytes, Usage::STORAGE)?;
        let b = Buffer::from_input(&input, 8 + bytes, bytes, Usage::STORAGE)?;
        let c = Buffer::zeroed(bytes, Usage::STORAGE)?;
        for done in 0..reps {
            kernels::matmul(n as u32, n as u32, n as u32, &a, &b, &c)?;
            report_progress(done as u64 + 1, reps as u64);
        }
        let first = c.read_at::<f32>(0, 1)?;
        Ok(first[0].to_le_bytes().to_vec().into())
    }
}

agora_guest::export_job!(KernelLoop);
