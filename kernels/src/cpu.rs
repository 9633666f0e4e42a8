//! CPU reference implementations of the standard kernels, and the error bound
//! an f32 implementation of each must stay within.
//!
//! The bounds are the classical forward-error bounds of floating-point
//! summation (Higham, *Accuracy and Stability of Numerical Algorithms*,
//! ch. 3): a dot product of length k computed in any order with rounding unit
//! u errs by at most gamma_k * sum |a_i b_i|, gamma_k = k u / (1 - k u). We
//! allow twice that, so that fused and unfused multiply-adds both pass.

use crate::F32_UNIT_ROUNDOFF as U;

fn gamma(k: usize) -> f64 {
    let ku = k as f64 * U;
    ku / (1.0 - ku).max(0.5)
}

/// y[i] = a * x[i] + y[i], the way a GPU computes it in f32 (one rounding per
/// operation). Panics when the lengths differ.
pub fn saxpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "saxpy: x and y differ in length");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = a * *xi + *yi;
    }
}

/// Error bound of one f32 saxpy element: two roundings.
pub fn saxpy_bound(a: f32, x: f32, y: f32) -> f64 {
    2.0 * U * ((a as f64 * x as f64).abs() + (y as f64).abs())
}

/// Reference saxpy element in f64.
pub fn saxpy_exact(a: f32, x: f32, y: f32) -> f64 {
    a as f64 * x as f64 + y as f64
}

/// C (m x n) = A (m x k) * B (k x n), row-major, accumulated in f64.
/// Returns C and, per element, the bound an f32 implementation must meet.
pub fn matmul(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), m * k, "matmul: A is not m x k");
    assert_eq!(b.len(), k * n, "matmul: B is not k x n");
    let mut c = vec![0.0f64; m * n];
    let mut bound = vec![0.0f64; m * n];
    let g = 2.0 * gamma(k);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut abs) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = a[i * k + p] as f64 * b[p * n + j] as f64;
                s += t;
                abs += t.abs();
            }
            c[i * n + j] = s;
            bound[i * n + j] = g * abs;
        }
    }
    (c, bound)
}

/// C = A * B in plain f32 with the loop order a compiler vectorizes well:
/// the CPU kernel examples and benchmarks run this (as wasm and natively).
pub fn matmul_f32(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert_eq!(a.len(), m * k, "matmul_f32: A is not m x k");
    assert_eq!(b.len(), k * n, "matmul_f32: B is not k x n");
    assert_eq!(c.len(), m * n, "matmul_f32: C is not m x n");
    // Rows of C are updated 32 columns at a time in a fixed-length inner
    // loop the compiler unrolls and vectorizes: fewer loop back-edges, which
    // is also where a metered wasm host pays for fuel and epoch checks.
    const LANES: usize = 32;
    c.fill(0.0);
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let aip = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            let mut c_chunks = row.chunks_exact_mut(LANES);
            let mut b_chunks = brow.chunks_exact(LANES);
            for (cc, bc) in (&mut c_chunks).zip(&mut b_chunks) {
                for j in 0..LANES {
                    cc[j] += aip * bc[j];
                }
            }
            for (cij, bpj) in c_chunks
                .into_remainder()
                .iter_mut()
                .zip(b_chunks.remainder())
            {
                *cij += aip * *bpj;
            }
        }
    }
}

/// Sum in f64 and the bound an f32 reduction of `x` must meet.
pub fn sum(x: &[f32]) -> (f64, f64) {
    let (mut s, mut abs) = (0.0f64, 0.0f64);
    for v in x {
        s += *v as f64;
        abs += (*v as f64).abs();
    }
    (s, 2.0 * gamma(x.len()) * abs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_f32_agrees_with_reference_within_bound() {
        let (m, n, k) = (7, 5, 33);
        let mut rng = crate::rng::Rng::new(7);
        let a = rng.f32_vec(m * k);
        let b = rng.f32_vec(k * n);
        let mut c = vec![0.0; m * n];
        matmul_f32(m, n, k, &a, &b, &mut c);
        let (want, bound) = matmul(m, n, k, &a, &b);
        for i in 0..m * n {
            assert!(
                crate::within(c[i], want[i], bound[i]),
                "element {i}: {} vs {}",
                c[i],
                want[i]
            );
        }
    }

    #[test]
    fn bounds_are_tight_enough_to_catch_a_wrong_answer() {
        let x = [1.0f32, 2.0, 3.0];
        let (s, bound) = sum(&x);
        assert!(crate::within(6.0, s, bound));
        assert!(!crate::within(6.001, s, bound));
        assert!(!crate::within(f32::NAN, s, bound));
    }

    #[test]
    fn saxpy_matches_f64_within_two_roundings() {
        let mut y = [1.5f32, -2.0, 1e7];
        let x = [0.1f32, 3.0, 1e-7];
        let y0 = y;
        saxpy(3.0, &x, &mut y);
        for i in 0..3 {
            assert!(crate::within(
                y[i],
                saxpy_exact(3.0, x[i], y0[i]),
                saxpy_bound(3.0, x[i], y0[i])
            ));
        }
    }
}
