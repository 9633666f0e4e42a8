//! Trained weights as JSON (what `digits-train` returns and
//! `digits-classify` takes as its shared input `model`), and the CPU forward
//! pass: the reference every `verify` re-runs instead of trusting a
//! provider's numbers.

use serde::{Deserialize, Serialize};

/// A network: `features` inputs, one ReLU layer of `hidden` units, `classes`
/// outputs. Weights are row-major: `w1` is features x hidden, `w2` hidden x
/// classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub features: u32,
    pub hidden: u32,
    pub classes: u32,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

impl Model {
    /// Shapes agree, sizes are within bounds, every weight is finite.
    pub fn check(&self) -> Result<(), String> {
        let (f, h, c) = (self.features as usize, self.hidden as usize, self.classes as usize);
        if f == 0 || f > 4096 || h == 0 || self.hidden > crate::MAX_HIDDEN || !(2..=1024).contains(&c) {
            return Err(format!("a model of {f} features, {h} hidden units and {c} classes is out of bounds"));
        }
        if self.w1.len() != f * h || self.b1.len() != h || self.w2.len() != h * c || self.b2.len() != c {
            return Err("the weights' sizes do not match the model's shape".into());
        }
        let all = [&self.w1, &self.b1, &self.w2, &self.b2];
        if all.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            return Err("a weight is not a finite number".into());
        }
        Ok(())
    }

    /// The class scores of one row of `features` values, on the CPU with
    /// f64 sums.
    pub fn logits(&self, x: &[f32]) -> Vec<f64> {
        let (h, c) = (self.hidden as usize, self.classes as usize);
        let mut hidden = vec![0f64; h];
        for (j, out) in hidden.iter_mut().enumerate() {
            let z: f64 = x.iter().enumerate().map(|(i, &v)| v as f64 * self.w1[i * h + j] as f64).sum();
            *out = (z + self.b1[j] as f64).max(0.0);
        }
        (0..c)
            .map(|k| hidden.iter().enumerate().map(|(j, &a)| a * self.w2[j * c + k] as f64).sum::<f64>() + self.b2[k] as f64)
            .collect()
    }

    /// How many rows of `x` (row-major, `features` wide) the CPU classifies
    /// as their label.
    pub fn correct(&self, x: &[f32], labels: &[u32]) -> u32 {
        x.chunks_exact(self.features as usize).zip(labels).filter(|&(row, &label)| argmax(&self.logits(row)) == label as usize).count() as u32
    }
}

/// The index of the largest score (the first of equals).
pub fn argmax(scores: &[f64]) -> usize {
    scores.iter().enumerate().fold(0, |best, (i, &s)| if s > scores[best] { i } else { best })
}

/// Whether `class` is an answer the CPU agrees with for these scores: the
/// best, or within float rounding of it (a GPU sums in another order, so
/// two near-equal scores may swap).
pub fn is_plausible_class(scores: &[f64], class: usize) -> bool {
    let best = scores[argmax(scores)];
    let tolerance = 1e-4 * (1.0 + scores.iter().map(|s| s.abs()).fold(0.0, f64::max));
    scores.get(class).is_some_and(|&s| s >= best - tolerance)
}
