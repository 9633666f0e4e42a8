//! Trained weights as JSON (what `digits-train` returns and
//! `digits-classify` takes as its shared input `model`), and the CPU forward
//! pass with its rounding bounds: the reference every `verify` re-runs instead of trusting a
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
        if f == 0 || self.features > crate::MAX_FEATURES || h == 0 || self.hidden > crate::MAX_HIDDEN || !(2..=crate::MAX_CLASSES).contains(&self.classes) {
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
    /// f64 sums, each with how far an f32 GPU's may
    /// fall from it: [`ROUNDING`] of the magnitudes summed into it (a
    /// rounding error grows with the terms added, not with their sum).
    pub fn scores(&self, x: &[f32]) -> Vec<Score> {
        let (h, c) = (self.hidden as usize, self.classes as usize);
        let (mut hidden, mut hidden_error) = (vec![0f64; h], vec![0f64; h]);
        for j in 0..h {
            let terms = x.iter().enumerate().map(|(i, &v)| v as f64 * self.w1[i * h + j] as f64);
            let (z, magnitude) = terms.fold((self.b1[j] as f64, (self.b1[j] as f64).abs()), |(z, m), t| (z + t, m + t.abs()));
            hidden[j] = z.max(0.0);
            hidden_error[j] = ROUNDING * magnitude;
        }
        (0..c)
            .map(|k| {
                let (mut value, mut magnitude) = (self.b2[k] as f64, (self.b2[k] as f64).abs());
                for j in 0..h {
                    let w = self.w2[j * c + k] as f64;
                    value += hidden[j] * w;
                    magnitude += (hidden[j] + hidden_error[j]) * w.abs();
                }
                Score { value, error: ROUNDING * magnitude + hidden_error.iter().zip(0..h).map(|(e, j)| e * (self.w2[j * c + k] as f64).abs()).sum::<f64>() }
            })
            .collect()
    }

    /// How many rows of `x` (row-major, `features` wide) are classified as
    /// their label: at least (the label the only plausible class), at most
    /// (the label among the plausible classes), whichever way float
    /// rounding on a GPU breaks the near-ties, and by the CPU's own best
    /// class.
    pub fn correct_range(&self, x: &[f32], labels: &[u32]) -> Correct {
        let mut count = Correct { surely: 0, maybe: 0, cpu: 0 };
        for (row, &label) in x.chunks_exact(self.features as usize).zip(labels) {
            let scores = self.scores(row);
            let plausible = (0..scores.len()).filter(|&c| is_plausible_class(&scores, c)).count();
            if is_plausible_class(&scores, label as usize) {
                count.maybe += 1;
                count.surely += u32::from(plausible == 1);
            }
            let values: Vec<f64> = scores.iter().map(|s| s.value).collect();
            count.cpu += u32::from(argmax(&values) == label as usize);
        }
        count
    }

    /// Every weight, in the order w1, b1, w2, b2, as little-endian f32.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        [&self.w1, &self.b1, &self.w2, &self.b2].iter().flat_map(|v| v.iter()).flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A model of this one's shape with the weights of `bytes`
    /// ([`Model::to_le_bytes`]), checked.
    pub fn with_le_bytes(&self, bytes: &[u8]) -> Result<Model, String> {
        let (f, h, c) = (self.features as usize, self.hidden as usize, self.classes as usize);
        if bytes.len() != 4 * (f * h + h + h * c + c) {
            return Err(format!("{} bytes of weights for a model of {} weights", bytes.len(), f * h + h + h * c + c));
        }
        let mut values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("four bytes")));
        let mut take = |n: usize| values.by_ref().take(n).collect::<Vec<f32>>();
        let model = Model { features: self.features, hidden: self.hidden, classes: self.classes, w1: take(f * h), b1: take(h), w2: take(h * c), b2: take(c) };
        model.check()?;
        Ok(model)
    }

    /// The Euclidean distance between two models' weights (same shape).
    pub fn distance(&self, other: &Model) -> f64 {
        let pairs = [(&self.w1, &other.w1), (&self.b1, &other.b1), (&self.w2, &other.w2), (&self.b2, &other.b2)];
        let squares: f64 = pairs.iter().flat_map(|(a, b)| a.iter().zip(b.iter())).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
        squares.sqrt()
    }
}

/// The index of the largest score (the first of equals).
pub fn argmax(scores: &[f64]) -> usize {
    scores.iter().enumerate().fold(0, |best, (i, &s)| if s > scores[best] { i } else { best })
}

/// Relative error (of the magnitudes summed) an f32 sum's rounding may
/// reach: f32's unit roundoff (6e-8) times the terms of one sum, at most
/// MAX_FEATURES + 1 (4,097), is 2.4e-4 at worst.
pub const ROUNDING: f64 = 2.5e-4;

/// Rows classified right, counted three ways ([`Model::correct_range`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Correct {
    pub surely: u32,
    pub maybe: u32,
    pub cpu: u32,
}

/// A class score computed on the CPU, and how far a GPU's may differ.
#[derive(Clone, Copy, Debug)]
pub struct Score {
    pub value: f64,
    pub error: f64,
}

/// Whether `class` is an answer a GPU may give for these scores: the best,
/// or within both scores' rounding of it (a GPU sums in another order, so
/// two near-equal scores may swap).
pub fn is_plausible_class(scores: &[Score], class: usize) -> bool {
    let best = scores.iter().fold(&scores[0], |best, s| if s.value > best.value { s } else { best });
    scores.get(class).is_some_and(|s| s.value + s.error >= best.value - best.error)
}
