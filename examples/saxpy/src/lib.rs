//! SAXPY on the GPU through the standard kernel.
//!
//! Input: `a` (f32), then `x` and `y` (n little-endian f32 each).
//! Output: `a * x + y` (n f32). The data goes from the input straight into
//! GPU buffers and from the GPU into the output, never through guest memory.

use agora_guest::prelude::*;

struct Saxpy;

impl Job for Saxpy {
    fn run(input: Input) -> Result<Output> {
        let len = input.len() as u64;
        if len < 4 || (len - 4) % 8 != 0 {
            return Err(Error::msg(format!("input of {len} bytes is not a (f32) + 2n f32")));
        }
        let n = (len - 4) / 8;
        let a = input.read_slice::<f32>(0, 1)?[0];
        let x = Buffer::from_input(&input, 4, n * 4, Usage::STORAGE)?;
        let y = Buffer::from_input(&input, 4 + n * 4, n * 4, Usage::STORAGE)?;
        kernels::saxpy(a, &x, &y)?;
        info!("saxpy: {n} elements, a = {a}");
        report_progress(n, n);
        Output::from_buffer(&y)
    }
}

agora_guest::export_job!(Saxpy);
