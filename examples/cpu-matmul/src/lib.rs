//! Matrix multiply on the CPU inside the sandbox: the same Rust kernel
//! (`agora_kernels::cpu::matmul_f32`) the host benchmarks natively.
//! Same input and output as the `matmul` example; needs no GPU.

use agora_guest::prelude::*;

struct CpuMatmul;

impl Job for CpuMatmul {
    fn run(input: Input) -> Result<Output> {
        let bytes = input.bytes()?;
        if bytes.len() < 12 {
            return Err(Error::msg("input shorter than the m, n, k header"));
        }
        let dims = <u32 as Element>::from_le_bytes(&bytes[..12]);
        let (m, n, k) = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
        let floats = <f32 as Element>::from_le_bytes(&bytes[12..]);
        if floats.len() != m * k + k * n {
            return Err(Error::msg(format!("{m}x{k} times {k}x{n} needs {} floats, got {}", m * k + k * n, floats.len())));
        }
        let (a, b) = floats.split_at(m * k);
        let mut c = vec![0.0f32; m * n];
        agora_kernels::cpu::matmul_f32(m, n, k, a, b, &mut c);
        Ok(Output::from_slice(&c))
    }
}

agora_guest::export_job!(CpuMatmul);
