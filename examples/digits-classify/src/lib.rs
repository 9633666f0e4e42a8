//! Classify a batch of digit images on the GPU with a trained network (the
//! best output of `digits-train`, given as the shared input `model`).
//!
//! Input: a batch of images, little-endian: `u32 count, u32 features`, then
//! `count * features` f32 pixels scaled to 0..1 (`prepare_digits.py` writes
//! the held-out digits this way). Output: one predicted class per line, in
//! the batch's order, so `agora result --join` gives one file of answers
//! for the whole folder.
//!
//! `verify` re-runs the network on the CPU and accepts each answer that is
//! the best class or within float rounding of it.

use agora_guest::prelude::*;
use mlp::model::{Model, is_plausible_class};
use mlp::net::{Net, Shaders};

/// The shared input's name (`agora submit --shared model=best.json`).
const MODEL: &str = "model";

struct DigitsClassify;

/// The network from the shared input, checked.
fn model() -> Result<Model> {
    let input = Input::shared(MODEL).ok_or_else(|| Error::msg(format!("this job needs the shared input `{MODEL}` (agora submit --shared {MODEL}=best.json)")))?;
    let model = parse_model(&input.bytes()?)?;
    model.check().map_err(Error::msg)?;
    Ok(model)
}

/// A model, or `digits-train`'s output, which holds one under `model`.
fn parse_model(bytes: &[u8]) -> Result<Model> {
    #[derive(serde::Deserialize)]
    struct Trained {
        model: Model,
    }
    serde_json::from_slice::<Model>(bytes)
        .or_else(|_| serde_json::from_slice::<Trained>(bytes).map(|t| t.model))
        .map_err(|e| Error::msg(format!("the shared input `{MODEL}` is neither a model nor digits-train's output: {e}")))
}

/// The batch's image count, checked against the model and the input's size.
fn batch_rows(input: &Input, model: &Model) -> Result<u32> {
    if input.len() < 8 {
        return Err(Error::msg("a batch is at least its 8-byte header"));
    }
    let head = input.read_slice::<u32>(0, 2)?;
    let (count, features) = (head[0], head[1]);
    if features != model.features || count == 0 || count > mlp::MAX_ROWS || input.len() as u64 != 8 + 4 * count as u64 * features as u64 {
        return Err(Error::msg(format!(
            "a batch of {count} images of {features} features (the model takes {}, at most {} images) is not {} bytes",
            model.features,
            mlp::MAX_ROWS,
            input.len()
        )));
    }
    Ok(count)
}

impl Job for DigitsClassify {
    fn run(input: Input) -> Result<Output> {
        let model = model()?;
        let rows = batch_rows(&input, &model)?;
        let net = Net::from_model(&model)?;
        let x = Buffer::from_input(&input, 8, 4 * rows as u64 * model.features as u64, Usage::STORAGE)?;
        let answers: String = net.classify(&Shaders::new()?, &x, rows)?.iter().map(|class| format!("{class}\n")).collect();
        info!("classified {rows} images");
        Ok(answers.into())
    }
}

impl Verify for DigitsClassify {
    fn verify(input: Input, output: Input) -> bool {
        let Ok(model) = model() else { return false };
        let Ok(rows) = batch_rows(&input, &model) else { return false };
        let (Ok(x), Ok(answers)) = (input.read_slice::<f32>(8, (rows * model.features) as usize), output.bytes()) else { return false };
        let Ok(text) = String::from_utf8(answers) else { return false };
        let Some(body) = text.strip_suffix('\n') else { return false };
        // Exactly as `run` writes them: a class in decimal a line, nothing else.
        let classes: Vec<Option<usize>> = body.split('\n').map(|l| l.parse::<usize>().ok().filter(|c| c.to_string() == l)).collect();
        classes.len() == rows as usize
            && x.chunks_exact(model.features as usize).zip(&classes).all(|(row, class)| class.is_some_and(|c| is_plausible_class(&model.scores(row), c)))
    }
}

agora_guest::export_job!(DigitsClassify, verify);
