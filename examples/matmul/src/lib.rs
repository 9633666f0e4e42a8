//! Matrix multiply on the GPU (standard `matmul` kernel) with a `verify`
//! export: Freivalds' check of another provider's output in O(n^2).
//!
//! Input: `m`, `n`, `k` (u32), then A (m x k) and B (k x n), row-major f32.
//! Output: C = A * B (m x n f32).

use agora_guest::prelude::*;
use std::hash::{BuildHasher, Hasher, RandomState};

struct Matmul;

/// The three dimensions and the byte offsets of A and B.
struct Shape {
    m: u64,
    n: u64,
    k: u64,
}

impl Shape {
    fn parse(input: &Input) -> Result<Shape> {
        if input.len() < 12 {
            return Err(Error::msg("input shorter than the m, n, k header"));
        }
        let dims = input.read_slice::<u32>(0, 3)?;
        let (m, n, k) = (dims[0] as u64, dims[1] as u64, dims[2] as u64);
        let want = 12 + 4 * (m * k + k * n);
        if input.len() as u64 != want {
            return Err(Error::msg(format!("{m}x{k} times {k}x{n} needs {want} input bytes, got {}", input.len())));
        }
        Ok(Shape { m, n, k })
    }

    fn a_offset(&self) -> u64 {
        12
    }

    fn b_offset(&self) -> u64 {
        12 + 4 * self.m * self.k
    }
}

impl Job for Matmul {
    fn run(input: Input) -> Result<Output> {
        let s = Shape::parse(&input)?;
        let a = Buffer::from_input(&input, s.a_offset(), 4 * s.m * s.k, Usage::STORAGE)?;
        let b = Buffer::from_input(&input, s.b_offset(), 4 * s.k * s.n, Usage::STORAGE)?;
        let c = Buffer::zeroed(4 * s.m * s.n, Usage::STORAGE)?;
        kernels::matmul(s.m as u32, s.n as u32, s.k as u32, &a, &b, &c)?;
        info!("matmul {}x{}x{} done", s.m, s.n, s.k);
        Output::from_buffer(&c)
    }
}

impl Verify for Matmul {
    /// Freivalds: for random r, A (B r) must equal C r within the rounding
    /// bound of an f32 matmul (see `agora_kernels::cpu`). Two rounds.
    fn verify(input: Input, output: Input) -> bool {
        let Ok(s) = Shape::parse(&input) else { return false };
        let (m, n, k) = (s.m as usize, s.n as usize, s.k as usize);
        if output.len() != 4 * m * n {
            return false;
        }
        let (Ok(a), Ok(b), Ok(c)) = (
            input.read_slice::<f32>(s.a_offset(), m * k),
            input.read_slice::<f32>(s.b_offset(), k * n),
            output.read_slice::<f32>(0, m * n),
        ) else {
            return false;
        };
        let mut seed = RandomState::new().build_hasher();
        seed.write_u64(m as u64 ^ (n as u64) << 20 ^ (k as u64) << 40);
        let mut rng = agora_kernels::rng::Rng::new(seed.finish());
        let u = agora_kernels::F32_UNIT_ROUNDOFF;
        (0..2).all(|_| {
            let r: Vec<f64> = (0..n).map(|_| rng.f32() as f64).collect();
            let br: Vec<(f64, f64)> = (0..k)
                .map(|p| {
                    let row = &b[p * n..(p + 1) * n];
                    row.iter().zip(&r).fold((0.0, 0.0), |(s, abs), (bv, rv)| {
                        (s + *bv as f64 * rv, abs + (*bv as f64 * rv).abs())
                    })
                })
                .collect();
            (0..m).all(|i| {
                let (mut abr, mut bound) = (0.0f64, 0.0f64);
                for p in 0..k {
                    abr += a[i * k + p] as f64 * br[p].0;
                    bound += (a[i * k + p] as f64).abs() * br[p].1;
                }
                let cr: f64 = c[i * n..(i + 1) * n].iter().zip(&r).map(|(cv, rv)| *cv as f64 * rv).sum();
                (abr - cr).abs() <= 3.0 * k as f64 * u * bound + 1e-30
            })
        })
    }
}

agora_guest::export_job!(Matmul, verify);
