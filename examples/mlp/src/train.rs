//! The training procedure a provider runs on the GPU and `verify` replays
//! on the CPU: the initial weights from the seed, each epoch's order of the
//! training rows, one epoch of minibatch SGD (softmax cross-entropy, whole
//! batches in that order, `w -= lr * dw`), and how far one epoch can move
//! the weights at most.

use crate::model::Model;
use agora_kernels::rng::Rng;

/// Weights drawn uniformly within the Glorot bound from `seed` (w1, then
/// w2); biases zero.
pub fn initial_weights(features: u32, hidden: u32, classes: u32, seed: u64) -> Model {
    let mut rng = Rng::new(seed);
    let mut glorot = |fan_in: u32, fan_out: u32| -> Vec<f32> {
        let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
        (0..fan_in * fan_out).map(|_| rng.f32() * bound).collect()
    };
    let w1 = glorot(features, hidden);
    let w2 = glorot(hidden, classes);
    Model { features, hidden, classes, w1, b1: vec![0.0; hidden as usize], w2, b2: vec![0.0; classes as usize] }
}

/// Each epoch's order of the training rows: shuffled from the seed, epoch
/// after epoch.
pub struct Orders {
    rng: Rng,
    order: Vec<u32>,
}

impl Orders {
    pub fn new(seed: u64, rows: u32) -> Orders {
        Orders { rng: Rng::new(seed ^ 0x5eed_0f_5eed), order: (0..rows).collect() }
    }

    /// The next epoch's order (Fisher–Yates on the last one).
    pub fn next_epoch(&mut self) -> &[u32] {
        for i in (1..self.order.len()).rev() {
            self.order.swap(i, self.rng.range(0, i as u32) as usize);
        }
        &self.order
    }
}

/// One epoch of SGD on the CPU, in f64: the rows of `x` (`features` wide)
/// and labels `y` in `order`, in whole batches of `batch`. Zero inputs
/// (most of a digit's pixels) are skipped: they add nothing.
pub fn cpu_epoch(model: &mut Model, x: &[f32], y: &[u32], order: &[u32], batch: u32, lr: f32) {
    let (f, h, c) = (model.features as usize, model.hidden as usize, model.classes as usize);
    for rows in order.chunks_exact(batch as usize) {
        let (mut dw1, mut db1, mut dw2, mut db2) = (vec![0f64; f * h], vec![0f64; h], vec![0f64; h * c], vec![0f64; c]);
        for &row in rows {
            let xr = &x[row as usize * f..(row as usize + 1) * f];
            // Forward: act = relu(x w1 + b1), scores = act w2 + b2.
            let mut act: Vec<f64> = model.b1.iter().map(|&b| b as f64).collect();
            for (i, &v) in xr.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                for (a, &w) in act.iter_mut().zip(&model.w1[i * h..(i + 1) * h]) {
                    *a += v as f64 * w as f64;
                }
            }
            act.iter_mut().for_each(|a| *a = a.max(0.0));
            let mut scores: Vec<f64> = model.b2.iter().map(|&b| b as f64).collect();
            for (j, &a) in act.iter().enumerate().filter(|(_, a)| **a > 0.0) {
                for (s, &w) in scores.iter_mut().zip(&model.w2[j * c..(j + 1) * c]) {
                    *s += a * w as f64;
                }
            }
            // Softmax cross-entropy's gradient, over the batch.
            let top = scores.iter().cloned().fold(f64::MIN, f64::max);
            let total: f64 = scores.iter().map(|s| (s - top).exp()).sum();
            let label = y[row as usize] as usize;
            let grad: Vec<f64> = (0..c).map(|k| ((scores[k] - top).exp() / total - f64::from(u8::from(k == label))) / batch as f64).collect();
            // Backward.
            let mut back = vec![0f64; h];
            for j in (0..h).filter(|&j| act[j] > 0.0) {
                let w2 = &model.w2[j * c..(j + 1) * c];
                back[j] = grad.iter().zip(w2).map(|(g, &w)| g * w as f64).sum();
                for (d, g) in dw2[j * c..(j + 1) * c].iter_mut().zip(&grad) {
                    *d += act[j] * g;
                }
                db1[j] += back[j];
            }
            for (i, &v) in xr.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                for (d, b) in dw1[i * h..(i + 1) * h].iter_mut().zip(&back) {
                    *d += v as f64 * b;
                }
            }
            db2.iter_mut().zip(&grad).for_each(|(d, g)| *d += g);
        }
        let step = |w: &mut Vec<f32>, d: &[f64]| w.iter_mut().zip(d).for_each(|(w, d)| *w = (*w as f64 - lr as f64 * d) as f32);
        step(&mut model.w1, &dw1);
        step(&mut model.b1, &db1);
        step(&mut model.w2, &dw2);
        step(&mut model.b2, &db2);
    }
}

/// Most one batch's gradient can weigh (Euclidean norm) at weights `m`,
/// for rows no longer than `row_norm`: the softmax gradient of a row is at
/// most sqrt(2) over the batch size, and each layer's gradient is that
/// times what multiplies it (activations, the layer above's weights).
pub fn batch_gradient_bound(m: &Model, row_norm: f64) -> f64 {
    let norm = |v: &[f32]| v.iter().map(|w| (*w as f64).powi(2)).sum::<f64>().sqrt();
    let activations = row_norm * norm(&m.w1) + norm(&m.b1);
    std::f64::consts::SQRT_2 * (1.0 + activations + norm(&m.w2) * (1.0 + row_norm))
}

/// Whether the step from `before` to `after` is one an epoch of `batches`
/// batches at `lr` could take: within [`STEP_SLACK`] times every batch's
/// gradient at its bound, measured at the weights the epoch began with. A
/// heuristic, not a proof (the weights inside an epoch are unknown), and
/// measured at the start only: the bound at a made-up end (weights blown
/// up to where training stands still) would excuse the jump to it.
pub fn is_possible_epoch(before: &Model, after: &Model, row_norm: f64, batches: u32, lr: f32) -> bool {
    before.distance(after) <= STEP_SLACK * lr as f64 * batches as f64 * batch_gradient_bound(before, row_norm)
}

/// How much the weights may grow within an epoch beyond the bound at its
/// start: honest epochs use at most 1% of the bound (digits, `lr` up to 2,
/// measured with `agora run --verify`).
pub const STEP_SLACK: f64 = 4.0;
