//! Train a small neural network on the digits data set, on the GPU: one
//! unit is one hyperparameter configuration of a sweep.
//!
//! Shared input `digits`: the data set (`examples/mlp/prepare_digits.py`).
//! Input: the configuration as JSON, as `agora submit --sweep` makes it:
//! `{"lr":0.1,"hidden":64,"epochs":8,"seed":1,"batch":32}` (seed and
//! batch optional). Output: the configuration, the trained weights and the
//! accuracy measured on the held-out rows, as JSON ([`Trained`]).
//!
//! `verify` re-evaluates the returned weights on the held-out rows on the
//! CPU and checks the claimed accuracy: float rounding between GPUs moves
//! it by a row or two at most, a claim the weights do not reach is refused.

use agora_guest::prelude::*;
use mlp::dataset::Dataset;
use mlp::model::{Model, argmax};
use mlp::net::{Net, Shaders, Trainer};
use serde::{Deserialize, Serialize};

/// Held-out rows whose class may flip between a GPU and the CPU check (two
/// near-equal scores summed in another order).
const ROUNDING_FLIPS: u32 = 2;
const MAX_EPOCHS: u32 = 200;
const MAX_BATCH: u32 = 1024;

/// One configuration of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub lr: f32,
    pub hidden: u32,
    pub epochs: u32,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_batch")]
    pub batch: u32,
}

fn default_seed() -> u64 {
    1
}

fn default_batch() -> u32 {
    32
}

impl Config {
    fn parse(input: &Input) -> Result<Config> {
        let config: Config = serde_json::from_slice(&input.bytes()?).map_err(|e| Error::msg(format!("the configuration: {e}")))?;
        if !(config.lr > 0.0 && config.lr <= 10.0) {
            return Err(Error::msg(format!("lr {} is not in (0, 10]", config.lr)));
        }
        if !(1..=mlp::MAX_HIDDEN).contains(&config.hidden) || !(1..=MAX_EPOCHS).contains(&config.epochs) || !(1..=MAX_BATCH).contains(&config.batch) {
            return Err(Error::msg(format!(
                "hidden {} (1..={}), epochs {} (1..={MAX_EPOCHS}) or batch {} (1..={MAX_BATCH}) is out of range",
                config.hidden,
                mlp::MAX_HIDDEN,
                config.epochs,
                config.batch
            )));
        }
        Ok(config)
    }
}

/// What a unit returns.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trained {
    pub config: Config,
    /// correct / held_out.
    pub accuracy: f64,
    pub correct: u32,
    pub held_out: u32,
    pub model: Model,
}

struct DigitsTrain;

impl Job for DigitsTrain {
    fn run(input: Input) -> Result<Output> {
        let config = Config::parse(&input)?;
        let data = Dataset::open()?;
        data.check_labels()?;
        if config.batch > data.train_count {
            return Err(Error::msg(format!("batch {} is larger than the {} training rows", config.batch, data.train_count)));
        }
        let shaders = Shaders::new()?;
        let net = Net::init(data.features, config.hidden, data.classes, config.seed)?;
        train(&net, &shaders, &data, &config)?;
        let (correct, held_out) = evaluate(&net, &shaders, &data)?;
        let accuracy = correct as f64 / held_out as f64;
        info!("lr {} hidden {} epochs {}: {correct} of {held_out} held-out digits right ({:.3})", config.lr, config.hidden, config.epochs, accuracy);
        let trained = Trained { config, accuracy, correct, held_out, model: net.to_model()? };
        Ok(serde_json::to_vec(&trained).map_err(|e| Error::msg(e.to_string()))?.into())
    }
}

/// Minibatch SGD: each epoch visits the training rows in an order shuffled
/// from the seed, in whole batches.
fn train(net: &Net, shaders: &Shaders, data: &Dataset, config: &Config) -> Result<()> {
    let x = Buffer::from_input(&data.input, data.train_x_offset(), 4 * (data.train_count * data.features) as u64, Usage::STORAGE)?;
    let y = Buffer::from_input(&data.input, data.train_y_offset(), 4 * data.train_count as u64, Usage::STORAGE)?;
    let trainer = Trainer::new(net, shaders, x, y, config.batch)?;
    let mut rng = agora_kernels::rng::Rng::new(config.seed ^ 0x5eed_0f_5eed);
    let mut order: Vec<u32> = (0..data.train_count).collect();
    let batches = data.train_count / config.batch;
    for epoch in 0..config.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.range(0, i as u32) as usize);
        }
        for rows in order.chunks_exact(config.batch as usize) {
            trainer.step(rows, config.lr)?;
        }
        agora_guest::log::report_progress((epoch + 1) as u64 * batches as u64, config.epochs as u64 * batches as u64);
    }
    Ok(())
}

/// Held-out rows the GPU classifies right, and how many there are.
fn evaluate(net: &Net, shaders: &Shaders, data: &Dataset) -> Result<(u32, u32)> {
    let x = Buffer::from_input(&data.input, data.test_x_offset(), 4 * (data.test_count * data.features) as u64, Usage::STORAGE)?;
    let scores = net.logits(shaders, &x, data.test_count)?;
    let (_, labels) = data.test_set()?;
    let c = data.classes as usize;
    let correct = scores
        .chunks_exact(c)
        .zip(&labels)
        .filter(|&(row, &label)| argmax(&row.iter().map(|&s| s as f64).collect::<Vec<_>>()) == label as usize)
        .count();
    Ok((correct as u32, data.test_count))
}

impl Verify for DigitsTrain {
    fn verify(input: Input, output: Input) -> bool {
        let (Ok(config), Ok(bytes), Ok(data)) = (Config::parse(&input), output.bytes(), Dataset::open()) else { return false };
        let Ok(trained) = serde_json::from_slice::<Trained>(&bytes) else { return false };
        let model = &trained.model;
        let shaped = model.check().is_ok()
            && (model.features, model.hidden, model.classes) == (data.features, config.hidden, data.classes)
            && trained.config == config
            && trained.held_out == data.test_count
            && (trained.accuracy - trained.correct as f64 / trained.held_out as f64).abs() < 1e-9;
        if !shaped {
            return false;
        }
        let Ok((x, labels)) = data.test_set() else { return false };
        model.correct(&x, &labels).abs_diff(trained.correct) <= ROUNDING_FLIPS
    }
}

agora_guest::export_job!(DigitsTrain, verify);
