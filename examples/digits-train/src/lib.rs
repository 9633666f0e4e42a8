//! Train a small neural network on the digits data set, on the GPU: one
//! unit is one hyperparameter configuration of a sweep.
//!
//! Shared input `digits`: the data set (`examples/mlp/prepare_digits.py`).
//! Input: the configuration as JSON, as `agora submit --sweep` makes it:
//! `{"lr":0.1,"hidden":64,"epochs":8,"seed":1,"batch":32}` (seed and
//! batch optional). Output: the configuration, the trained weights, the
//! weights after each earlier epoch, and the accuracy measured on the
//! held-out rows, as JSON ([`Trained`]); and the named output `model`, the
//! trained weights alone (what `digits-classify` takes as its shared input
//! `model`: `agora result -o DIR` writes it as `unit-N.model`).
//!
//! `verify` takes nothing on trust. The training procedure is fixed
//! (`mlp::train`): the first weights follow from the seed, each epoch's
//! order of rows too. So `verify` checks that every epoch moved the weights
//! no further than an epoch can (the gradient's bound at the epoch's
//! start), replays on the CPU the last epoch and [`RANDOM_REPLAYS`] others
//! chosen at random, each from the weights the provider says it began that
//! epoch with, and compares: a final model no honest last epoch gives is
//! refused outright, and a made-up epoch is caught with a chance of at
//! least two in the number of epochs (certainly up to three epochs). It
//! then checks the claimed held-out accuracy against the CPU's
//! classification of the returned weights: a near-tie may go either way on
//! a GPU, but a claim may not pass the CPU's own count by more than
//! [`MAX_UNDECIDED`] rows and one in a hundred.

use agora_guest::prelude::*;
use base64::Engine as _;
use mlp::dataset::Dataset;
use mlp::model::Model;
use mlp::net::{Net, Shaders, Trainer};
use mlp::train::{Orders, cpu_epoch, initial_weights, is_possible_epoch};
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hasher, RandomState};

/// Most epochs a configuration asks for: bounds the output (the weights
/// after every epoch).
const MAX_EPOCHS: u32 = 50;
/// Largest learning rate: beyond it SGD on this network is chaos, where no
/// replay can tell rounding from cheating.
const MAX_LR: f32 = 2.0;
/// Smallest learning rate: below it an epoch barely moves the weights, and
/// a replay could not tell an epoch done from one skipped.
const MIN_LR: f32 = 1e-4;
/// Most bytes of output a configuration may make (the weights after every
/// epoch as base64, the last as JSON): well within `MAX_UNIT_BYTES` (64 MiB),
/// checked before any work.
const MAX_OUTPUT_BYTES: u64 = 32 << 20;
/// Held-out rows whose class is a near-tie a claim may count beyond the
/// CPU's own count, besides one in a hundred (a data set may hold the same
/// row more than once). Near-ties are rare in a trained network; weights
/// that leave many rows undecided (all scores equal, say) would otherwise
/// let any accuracy be claimed.
const MAX_UNDECIDED: u32 = 2;
/// Epochs besides the last that `verify` replays, chosen at random: a
/// made-up epoch is caught with a chance of at least this many in the
/// number of epochs (certainly when there are no more than this many).
const RANDOM_REPLAYS: u32 = 2;
const MAX_BATCH: u32 = 1024;
/// How far an epoch replayed on the CPU may land from the provider's, as a
/// share of how far that epoch moved the weights. An honest GPU epoch lands
/// within about 3e-6 of the replay (lavapipe, `agora run --verify`), float
/// rounding and the ReLUs it flips included; skipping one batch in forty
/// moves it by about 2e-2.
const EPOCH_TOLERANCE: f64 = 1e-3;

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
        if !(MIN_LR..=MAX_LR).contains(&config.lr) {
            return Err(Error::msg(format!("lr {} is not in [{MIN_LR}, {MAX_LR}]", config.lr)));
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
    /// The weights after the last epoch.
    pub model: Model,
    /// The weights after each earlier epoch (1 .. epochs - 1), as base64 of
    /// [`Model::to_le_bytes`]: what `verify` replays epochs from.
    pub checkpoints: Vec<String>,
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
        let weights = (data.features as u64 + 1 + data.classes as u64) * config.hidden as u64 + data.classes as u64;
        let output_bytes = config.epochs as u64 * weights * 16;
        if output_bytes > MAX_OUTPUT_BYTES {
            return Err(Error::msg(format!(
                "{} epochs of {weights} weights make an output of about {output_bytes} bytes, more than {MAX_OUTPUT_BYTES}: ask for fewer epochs or hidden units",
                config.epochs
            )));
        }
        let shaders = Shaders::new()?;
        let net = Net::from_model(&initial_weights(data.features, config.hidden, data.classes, config.seed))?;
        let checkpoints = train(&net, &shaders, &data, &config)?;
        let model = net.to_model()?;
        // Training that diverged fails here, once, rather than in every verify.
        model.check().map_err(|e| Error::msg(format!("training diverged: {e}")))?;
        let (correct, held_out) = evaluate(&net, &shaders, &data)?;
        let accuracy = correct as f64 / held_out as f64;
        info!("lr {} hidden {} epochs {}: {correct} of {held_out} held-out digits right ({:.3})", config.lr, config.hidden, config.epochs, accuracy);
        Output::from(model_json(&model)?).named(MODEL_OUTPUT)?;
        let trained = Trained { config, accuracy, correct, held_out, model, checkpoints };
        Ok(serde_json::to_vec(&trained).map_err(|e| Error::msg(e.to_string()))?.into())
    }
}

/// The named output with the trained weights alone.
const MODEL_OUTPUT: &str = "model";

/// The weights as the named output `model` holds them.
fn model_json(model: &Model) -> Result<Vec<u8>> {
    serde_json::to_vec(model).map_err(|e| Error::msg(e.to_string()))
}

/// Minibatch SGD on the GPU, epoch by epoch in the orders of
/// [`Orders`]; the weights after each epoch but the last, in base64.
fn train(net: &Net, shaders: &Shaders, data: &Dataset, config: &Config) -> Result<Vec<String>> {
    let x = Buffer::from_input(&data.input, data.train_x_offset(), 4 * (data.train_count * data.features) as u64, Usage::STORAGE)?;
    let y = Buffer::from_input(&data.input, data.train_y_offset(), 4 * data.train_count as u64, Usage::STORAGE)?;
    let trainer = Trainer::new(net, shaders, x, y, config.batch)?;
    let mut orders = Orders::new(config.seed, data.train_count);
    let batches = (data.train_count / config.batch) as u64;
    let mut checkpoints = Vec::new();
    for epoch in 0..config.epochs {
        for rows in orders.next_epoch().chunks_exact(config.batch as usize) {
            trainer.step(rows, config.lr)?;
        }
        if epoch + 1 < config.epochs {
            checkpoints.push(base64::engine::general_purpose::STANDARD.encode(net.to_model()?.to_le_bytes()));
        }
        agora_guest::log::report_progress((epoch + 1) as u64 * batches, config.epochs as u64 * batches);
    }
    Ok(checkpoints)
}

/// Held-out rows the GPU classifies right, and how many there are.
fn evaluate(net: &Net, shaders: &Shaders, data: &Dataset) -> Result<(u32, u32)> {
    let x = Buffer::from_input(&data.input, data.test_x_offset(), 4 * (data.test_count * data.features) as u64, Usage::STORAGE)?;
    let classes = net.classify(shaders, &x, data.test_count)?;
    let (_, labels) = data.test_set()?;
    let correct = classes.iter().zip(&labels).filter(|&(&class, &label)| class == label as usize).count();
    Ok((correct as u32, data.test_count))
}

impl Verify for DigitsTrain {
    fn verify(input: Input, output: Input) -> bool {
        let (Ok(config), Ok(bytes), Ok(data)) = (Config::parse(&input), output.bytes(), Dataset::open()) else { return false };
        let Ok(trained) = serde_json::from_slice::<Trained>(&bytes) else { return false };
        // The named output `model` is the returned weights.
        let named = Input::named_output(MODEL_OUTPUT).and_then(|m| m.bytes().ok());
        if named.and_then(|b| serde_json::from_slice::<Model>(&b).ok()).as_ref() != Some(&trained.model) {
            return false;
        }
        let Some(states) = states(&trained, &config, &data) else { return false };
        let (Ok((x, y)), Ok((test_x, test_y))) = (data.train_set(), data.test_set()) else { return false };
        // Every epoch within what an epoch can move; the last replayed
        // always (the weights returned are its), two others at random.
        let row_norm = x.chunks_exact(data.features as usize).map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()).fold(0.0, f64::max);
        let batches = data.train_count / config.batch;
        if !states.windows(2).all(|w| is_possible_epoch(&w[0], &w[1], row_norm, batches, config.lr)) {
            return false;
        }
        let last = config.epochs - 1;
        let epochs = replayed_epochs(config.epochs);
        let mut orders = Orders::new(config.seed, data.train_count);
        for epoch in 0..=last {
            let order = orders.next_epoch();
            if epochs.contains(&epoch) && !epoch_replays(&states[epoch as usize], &states[epoch as usize + 1], &x, &y, order, &config) {
                return false;
            }
        }
        let count = trained.model.correct_range(&test_x, &test_y);
        let undecided = MAX_UNDECIDED + data.test_count / 100;
        (count.surely..=count.maybe).contains(&trained.correct) && trained.correct <= count.cpu + undecided
    }
}

/// The weights before each epoch and after the last (epochs + 1 of them),
/// when the output is shaped as this configuration's on this data set and
/// its numbers agree with each other.
fn states(trained: &Trained, config: &Config, data: &Dataset) -> Option<Vec<Model>> {
    let model = &trained.model;
    let consistent = model.check().is_ok()
        && (model.features, model.hidden, model.classes) == (data.features, config.hidden, data.classes)
        && trained.config == *config
        && trained.held_out == data.test_count
        && trained.correct <= trained.held_out
        && (trained.accuracy - trained.correct as f64 / trained.held_out as f64).abs() < 1e-9
        && trained.checkpoints.len() == config.epochs as usize - 1;
    if !consistent {
        return None;
    }
    let mut states = vec![initial_weights(data.features, config.hidden, data.classes, config.seed)];
    for checkpoint in &trained.checkpoints {
        let bytes = base64::engine::general_purpose::STANDARD.decode(checkpoint).ok()?;
        states.push(model.with_le_bytes(&bytes).ok()?);
    }
    states.push(model.clone());
    Some(states)
}

/// Whether one epoch from `before`, replayed on the CPU, lands where the
/// provider says it did (`after`), within [`EPOCH_TOLERANCE`] of the
/// epoch's own step.
fn epoch_replays(before: &Model, after: &Model, x: &[f32], y: &[u32], order: &[u32], config: &Config) -> bool {
    let mut replayed = before.clone();
    cpu_epoch(&mut replayed, x, y, order, config.batch, config.lr);
    let step = before.distance(&replayed);
    replayed.distance(after) <= EPOCH_TOLERANCE * step + 1e-6
}

/// The epochs `verify` replays: the last, and [`RANDOM_REPLAYS`] others
/// drawn without replacement from the host's randomness (a provider cannot
/// guess them), all of them when there are no more.
fn replayed_epochs(epochs: u32) -> Vec<u32> {
    let mut others: Vec<u32> = (0..epochs - 1).collect();
    let mut hasher = RandomState::new().build_hasher();
    for i in (1..others.len()).rev() {
        hasher.write_usize(i);
        others.swap(i, (hasher.finish() % (i as u64 + 1)) as usize);
    }
    others.truncate(RANDOM_REPLAYS as usize);
    others.push(epochs - 1);
    others
}

agora_guest::export_job!(DigitsTrain, verify);
