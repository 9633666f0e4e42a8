//! Real work through the product: the digits examples (`examples/mlp`,
//! `examples/digits-train`, `examples/digits-classify`) on the data set
//! scikit-learn's wheel ships (`cargo xtask digits`).

use super::lifecycle::setup_with;
use super::*;
use base64::Engine as _;
use serde_json::Value;

/// The prepared data (`cargo xtask digits`).
pub(super) fn digits() -> PathBuf {
    let dir = std::env::var_os("AGORA_DIGITS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/digits"));
    assert!(
        dir.join("labels.txt").exists(),
        "{} has no digits data: run `cargo xtask digits`",
        dir.display()
    );
    dir
}

/// The trained network of a `digits-train` output.
pub(super) struct Model {
    features: usize,
    hidden: usize,
    classes: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Model {
    pub(super) fn of(trained: &Value) -> Model {
        let m = &trained["model"];
        let floats = |k: &str| {
            m[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        };
        let size = |k: &str| m[k].as_u64().unwrap() as usize;
        Model {
            features: size("features"),
            hidden: size("hidden"),
            classes: size("classes"),
            w1: floats("w1"),
            b1: floats("b1"),
            w2: floats("w2"),
            b2: floats("b2"),
        }
    }

    /// The CPU reference: the class of one image.
    pub(super) fn classify(&self, x: &[f32]) -> usize {
        let hidden: Vec<f64> = (0..self.hidden)
            .map(|j| {
                (x.iter()
                    .enumerate()
                    .map(|(i, &v)| v as f64 * self.w1[i * self.hidden + j] as f64)
                    .sum::<f64>()
                    + self.b1[j] as f64)
                    .max(0.0)
            })
            .collect();
        let scores: Vec<f64> = (0..self.classes)
            .map(|k| {
                hidden
                    .iter()
                    .enumerate()
                    .map(|(j, &a)| a * self.w2[j * self.classes + k] as f64)
                    .sum::<f64>()
                    + self.b2[k] as f64
            })
            .collect();
        (0..self.classes).fold(0, |best, k| if scores[k] > scores[best] { k } else { best })
    }
}

/// The held-out images of the prepared batches, in order.
pub(super) fn held_out_images(dir: &Path) -> Vec<Vec<f32>> {
    let mut batches: Vec<PathBuf> = std::fs::read_dir(dir.join("batches"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    batches.sort();
    let mut images = Vec::new();
    for batch in batches {
        let bytes = std::fs::read(batch).unwrap();
        let features = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        let values: Vec<f32> = bytes[8..]
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        images.extend(values.chunks(features).map(<[f32]>::to_vec));
    }
    images
}

fn labels(dir: &Path) -> Vec<usize> {
    std::fs::read_to_string(dir.join("labels.txt"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// `agora run` of the component `job` with the shared input `name=file`.
pub(super) fn run_local(job: &Path, shared: &str, input: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        job.to_str().unwrap(),
        "--shared",
        shared,
        "-i",
        input.to_str().unwrap(),
    ];
    args.extend(extra);
    agora(&args)
}

// A provider is paid only for training it did and accuracy its weights
// reach. The job's verify replays epochs on the CPU and re-classifies the
// held-out digits: a boasted or inconsistent accuracy, the weights of
// another configuration, weights changed after training (with their own
// accuracy reported honestly), a skipped last epoch, a doctored checkpoint,
// a made-up jump to a fixed point where every class ties are each refused; the honest answer is accepted. For classify, a class
// the network does not give, a missing answer, an answer not written as
// the job writes it are refused.
#[test]
fn the_digits_jobs_verify_refuses_claims_the_weights_do_not_back() {
    let data = digits();
    let (train, classify) = (guest("digits-train"), guest("digits-classify"));
    let dir = temp_dir("digits-verify");
    let shared = format!("digits={}", data.join("digits.bin").display());
    let config = dir.join("config.json");
    std::fs::write(&config, r#"{"lr":0.3,"hidden":16,"epochs":2,"seed":7}"#).unwrap();
    let honest = dir.join("trained.json");
    let out = run_local(&train, &shared, &config, &["-o", honest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trained: Value = serde_json::from_slice(&std::fs::read(&honest).unwrap()).unwrap();
    // The named output `model`, beside it: the returned weights alone.
    let honest_model = honest.with_extension("model");
    let named: Value = serde_json::from_slice(&std::fs::read(&honest_model).unwrap()).unwrap();
    assert_eq!(
        named, trained["model"],
        "the named output is the returned weights"
    );
    let verify_with = |output: &Path, model: Option<&Path>| {
        let named = model.map(|m| format!("model={}", m.display()));
        let mut extra = vec!["--verify", output.to_str().unwrap()];
        if let Some(named) = &named {
            extra.extend(["--named-output", named]);
        }
        run_local(&train, &shared, &config, &extra).status.success()
    };
    // A doctored answer comes with its own weights as the named output, so
    // each case below meets the check it is about.
    let verify = |output: &Path| verify_with(output, Some(&output.with_extension("model")));
    assert!(verify(&honest), "the honest answer is accepted");
    assert!(
        !verify_with(&honest, None),
        "an answer without its named output `model` is refused"
    );
    // Bytes verify never read are not passed: an extra named output fails
    // the result however right the rest is.
    let (model_arg, extra_arg) = (
        format!("model={}", honest_model.display()),
        format!("extra={}", honest_model.display()),
    );
    let out = run_local(
        &train,
        &shared,
        &config,
        &[
            "--verify",
            honest.to_str().unwrap(),
            "--named-output",
            &model_arg,
            "--named-output",
            &extra_arg,
        ],
    );
    assert!(
        !out.status.success(),
        "a named output verify did not read is refused: {}",
        stderr(&out)
    );
    let other_model = dir.join("other-weights.model");
    let mut shifted = trained["model"].clone();
    shifted["b2"][0] = (shifted["b2"][0].as_f64().unwrap() + 0.5).into();
    std::fs::write(&other_model, serde_json::to_vec(&shifted).unwrap()).unwrap();
    assert!(
        !verify_with(&honest, Some(&other_model)),
        "a named output `model` that is not the returned weights is refused"
    );

    let doctored = |name: &str, change: &dyn Fn(&mut Value)| {
        let mut value = trained.clone();
        change(&mut value);
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
        let model = serde_json::to_vec(&value["model"]).unwrap();
        std::fs::write(path.with_extension("model"), model).unwrap();
        path
    };
    let (images, truth) = (held_out_images(&data), labels(&data));
    // Report a model's own accuracy, as an honest provider would.
    let report_honestly = |v: &mut Value| {
        let model = Model::of(v);
        let correct = images
            .iter()
            .zip(&truth)
            .filter(|&(x, &label)| model.classify(x) == label)
            .count();
        v["correct"] = correct.into();
        v["accuracy"] = (correct as f64 / truth.len() as f64).into();
    };
    let checkpoint = |v: &Value| -> Vec<f32> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["checkpoints"][0].as_str().unwrap())
            .unwrap();
        bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let held_out = trained["held_out"].as_u64().unwrap();
    let boast = |v: &mut Value| {
        let correct = (v["correct"].as_u64().unwrap() + 20).min(held_out);
        v["correct"] = correct.into();
        v["accuracy"] = (correct as f64 / held_out as f64).into();
    };
    let beyond = |v: &mut Value| {
        v["correct"] = (held_out + 1).into();
        v["accuracy"] = ((held_out + 1) as f64 / held_out as f64).into();
    };
    let changed = |v: &mut Value| {
        let w2: Vec<f64> = v["model"]["w2"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_f64().unwrap() * 1.5)
            .collect();
        v["model"]["w2"] = w2.into();
        report_honestly(v);
    };
    let skipped = |v: &mut Value| {
        // The weights after the first epoch, returned as the last.
        let w = checkpoint(v);
        let (f, h, c) = (64, 16, 10);
        v["model"]["w1"] = w[..f * h].into();
        v["model"]["b1"] = w[f * h..f * h + h].into();
        v["model"]["w2"] = w[f * h + h..f * h + h + h * c].into();
        v["model"]["b2"] = w[f * h + h + h * c..].into();
        report_honestly(v);
    };
    let halved_checkpoint = |v: &mut Value| {
        let halved: Vec<u8> = checkpoint(v)
            .iter()
            .flat_map(|w| (w * 0.5).to_le_bytes())
            .collect();
        v["checkpoints"][0] = base64::engine::general_purpose::STANDARD
            .encode(halved)
            .into();
    };
    let degenerate = |v: &mut Value| {
        // No unit ever fires and every class scores the same: a fixed
        // point of training, where any accuracy could be claimed.
        let (f, h, c) = (64, 16, 10);
        let weights: Vec<f32> = [
            vec![0.0; f * h],
            vec![-1e6; h],
            vec![0.0; h * c],
            vec![1e9; c],
        ]
        .concat();
        v["model"]["w1"] = weights[..f * h].into();
        v["model"]["b1"] = weights[f * h..f * h + h].into();
        v["model"]["w2"] = weights[f * h + h..f * h + h + h * c].into();
        v["model"]["b2"] = weights[f * h + h + h * c..].into();
        let bytes: Vec<u8> = weights.iter().flat_map(|w| w.to_le_bytes()).collect();
        v["checkpoints"][0] = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
        v["correct"] = held_out.into();
        v["accuracy"] = 1.0.into();
    };
    let cases: [(&str, &dyn Fn(&mut Value), &str); 8] = [
        (
            "degenerate.json",
            &degenerate,
            "a made-up jump to weights where every class ties, claiming every row",
        ),
        ("boast.json", &boast, "an accuracy the weights do not reach"),
        (
            "inconsistent.json",
            &|v| v["accuracy"] = 1.0.into(),
            "an accuracy that is not correct / held_out",
        ),
        ("beyond.json", &beyond, "more right than there are rows"),
        (
            "other.json",
            &|v| v["config"]["lr"] = 0.5.into(),
            "another configuration",
        ),
        ("changed.json", &changed, "weights changed after training"),
        ("skipped.json", &skipped, "a skipped last epoch"),
        (
            "checkpoint.json",
            &halved_checkpoint,
            "a doctored checkpoint",
        ),
    ];
    for (name, change, what) in cases {
        assert!(!verify(&doctored(name, change)), "{what} is refused");
    }

    // Classify one batch with these weights; a changed answer is refused.
    let model_shared = format!("model={}", honest.display());
    let batch = data.join("batches/batch-000.bin");
    let answers = dir.join("answers.txt");
    let out = run_local(
        &classify,
        &model_shared,
        &batch,
        &["-o", answers.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&answers).unwrap();
    let model = Model::of(&trained);
    let reference: Vec<usize> = held_out_images(&data)
        .iter()
        .take(text.lines().count())
        .map(|x| model.classify(x))
        .collect();
    let given: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
    let differ = given.iter().zip(&reference).filter(|(g, r)| g != r).count();
    assert!(
        given.len() == reference.len() && differ <= 1,
        "the GPU's classes are the CPU reference's (a float tie at most): {given:?} {reference:?}"
    );
    let verify_answers = |path: &Path| {
        run_local(
            &classify,
            &model_shared,
            &batch,
            &["--verify", path.to_str().unwrap()],
        )
        .status
        .success()
    };
    assert!(verify_answers(&answers));
    let mut wrong = given.clone();
    wrong[0] = (wrong[0] + 1) % 10;
    let wrong_file = dir.join("wrong.txt");
    std::fs::write(
        &wrong_file,
        wrong.iter().map(|c| format!("{c}\n")).collect::<String>(),
    )
    .unwrap();
    assert!(
        !verify_answers(&wrong_file),
        "a class the network does not give is refused"
    );
    let short_file = dir.join("short.txt");
    std::fs::write(
        &short_file,
        given[1..]
            .iter()
            .map(|c| format!("{c}\n"))
            .collect::<String>(),
    )
    .unwrap();
    assert!(!verify_answers(&short_file), "a missing answer is refused");
    let padded_file = dir.join("padded.txt");
    std::fs::write(
        &padded_file,
        given.iter().map(|c| format!("0{c}\n")).collect::<String>(),
    )
    .unwrap();
    assert!(
        !verify_answers(&padded_file),
        "an answer not written as the job writes it is refused"
    );
}

// The worked example of the README: the data set goes up once as a shared
// input, a sweep of eight configurations trains on two providers' GPUs
// (each result checked by the job's verify), the best reaches 0.9 on the
// held-out digits, and a second job classifies the held-out folder with it,
// one unit a batch, joined by `agora result --join` into one file that
// matches the CPU reference.
#[test]
fn a_training_sweep_on_two_providers_then_batch_inference_with_the_best() {
    let data = digits();
    let market = Market::start("digits-sweep");
    let buyer = setup_with(&market, "digits-train");
    let classify = guest("digits-classify");
    let out = market.agora(&[
        "publish",
        classify.to_str().unwrap(),
        "--name",
        "digits-classify",
        "--version",
        "1.0.0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let operator = market.home.join("operator.json");
    assert!(
        market
            .agora(&["--key", operator.to_str().unwrap(), "mint", &buyer, "30000"])
            .status
            .success()
    );
    let (_h1, _h2) = (
        market.host("provider-1", &[]),
        market.host("provider-2", &[]),
    );

    let sweep_dir = market.home.join("sweep");
    let shared = format!("digits={}", data.join("digits.bin").display());
    let out = market.agora(&[
        "submit",
        "digits-train",
        "--shared",
        &shared,
        "--sweep",
        "lr=0.1,0.4",
        "--sweep",
        "hidden=32,64",
        "--sweep",
        "epochs=3,6",
        "--max-price",
        "16000",
        "--wait",
        "-o",
        sweep_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let mut results: Vec<Value> = (0..8)
        .map(|i| {
            serde_json::from_slice(&std::fs::read(sweep_dir.join(format!("unit-{i}.out"))).unwrap())
                .unwrap()
        })
        .collect();
    let configs: std::collections::BTreeSet<String> =
        results.iter().map(|r| r["config"].to_string()).collect();
    assert_eq!(
        configs.len(),
        8,
        "every configuration trained once: {configs:?}"
    );
    let images = held_out_images(&data);
    let truth = labels(&data);
    for r in &results {
        let model = Model::of(r);
        assert_eq!(model.features, 64);
        let cpu_correct = images
            .iter()
            .zip(&truth)
            .filter(|&(x, &label)| model.classify(x) == label)
            .count() as i64;
        let claimed = r["correct"].as_i64().unwrap();
        assert!(
            (cpu_correct - claimed).abs() <= 2,
            "{}: claims {claimed}, the CPU finds {cpu_correct}",
            r["config"]
        );
    }
    results.sort_by(|a, b| {
        b["accuracy"]
            .as_f64()
            .partial_cmp(&a["accuracy"].as_f64())
            .unwrap()
    });
    let best = &results[0];
    let accuracy = best["accuracy"].as_f64().unwrap();
    assert!(
        accuracy >= 0.9,
        "the best configuration {} reaches {accuracy}",
        best["config"]
    );

    // The best unit's named output `model` is what classify takes.
    let best_unit = (0..8)
        .find(|i| {
            let r: Value = serde_json::from_slice(
                &std::fs::read(sweep_dir.join(format!("unit-{i}.out"))).unwrap(),
            )
            .unwrap();
            r["config"] == best["config"]
        })
        .unwrap();
    let best_file = sweep_dir.join(format!("unit-{best_unit}.model"));
    let named: Value = serde_json::from_slice(&std::fs::read(&best_file).unwrap()).unwrap();
    assert_eq!(
        named, best["model"],
        "agora result wrote the unit's named output `model` beside its output"
    );
    let model_shared = format!("model={}", best_file.display());
    let out = market.agora(&[
        "submit",
        "digits-classify",
        "--shared",
        &model_shared,
        "--inputs",
        data.join("batches").to_str().unwrap(),
        "--max-price",
        "18000",
        "--wait",
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let job = stdout(&out).lines().next().unwrap().trim().to_string();
    let joined = market.home.join("answers.txt");
    let out = market.agora(&["result", &job, "--join", joined.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<usize> = std::fs::read_to_string(&joined)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        answers.len(),
        truth.len(),
        "one answer per held-out digit, in order"
    );
    let model = Model::of(best);
    let differ = images
        .iter()
        .zip(&answers)
        .filter(|&(x, &a)| model.classify(x) != a)
        .count();
    assert!(
        differ <= 2,
        "{differ} answers differ from the CPU reference (only float ties may)"
    );
    let right = answers.iter().zip(&truth).filter(|(a, t)| a == t).count();
    assert!(
        right as f64 / truth.len() as f64 >= 0.9,
        "{right} of {} right",
        truth.len()
    );
}
