//! `agora run`: run a job component locally, in a supervised worker process,
//! under the same limits a provider applies. Flag names follow `wasmtime run`.

use crate::units::parse_bytes;
use agora_host::pool::{ComponentBytes, PoolConfig, WorkerPool};
use agora_host::{GpuChoice, Limits, SharedBlob, SharedInputs};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct RunArgs {
    /// The job component (.wasm).
    job: PathBuf,
    /// The work unit's input: a file, or `-` for stdin. Empty when omitted.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Where to write the output (stdout when omitted); a named output
    /// (`data.output`) goes beside it, its extension the name
    /// (`-o trained.json` and `model` write `trained.model`).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// A shared input, as `--shared NAME=FILE` (what `agora submit --shared`
    /// gives every unit; the job reads it with `data.shared(NAME)`).
    #[arg(long, value_name = "NAME=FILE")]
    shared: Vec<String>,
    /// Instead of `run`, call the job's `verify` on the input and this
    /// output file, under the limits the market would give it (a quarter of
    /// the run's fuel and time); exits 0 when it accepts.
    #[arg(long, value_name = "OUTPUT_FILE", conflicts_with = "output")]
    verify: Option<PathBuf>,
    /// With --verify: a named output of the checked result, as
    /// `--named-output NAME=FILE` (`verify` reads it with
    /// `data.named-output(NAME)`).
    #[arg(long, value_name = "NAME=FILE", requires = "verify")]
    named_output: Vec<String>,
    /// A limit, as `-W NAME=VALUE`: fuel=N, max-memory-size=BYTES,
    /// timeout=DURATION, max-output-size=BYTES, gpu-memory=BYTES,
    /// gpu-dispatches=N, gpu-time=DURATION.
    #[arg(short = 'W', value_name = "NAME=VALUE")]
    limits: Vec<String>,
    /// GPU backend: auto (CUDA for kernel-only jobs on NVIDIA, else wgpu when an
    /// adapter is found), wgpu, cuda (fail without CUDA), or none.
    #[arg(long, default_value = "auto")]
    gpu: GpuChoice,
    /// Print the run report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Apply `-W name=value` options on top of the default limits.
pub fn parse_limits(options: &[String]) -> Result<Limits> {
    let mut limits = Limits::default();
    for option in options {
        let (name, value) = option
            .split_once('=')
            .with_context(|| format!("-W {option}: expected NAME=VALUE"))?;
        let duration = || -> Result<Duration> {
            humantime::parse_duration(value)
                .with_context(|| format!("-W {name}: `{value}` is not a duration (10s, 500ms)"))
        };
        let bytes = || parse_bytes(value).map_err(|e| anyhow::anyhow!("-W {name}: {e}"));
        match name {
            "fuel" => {
                limits.fuel = value
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("-W fuel: `{value}`"))?
            }
            "max-memory-size" => limits.memory_bytes = bytes()?,
            "timeout" => limits.timeout = duration()?,
            "max-output-size" => limits.output_bytes = bytes()?,
            "gpu-memory" => limits.gpu.buffer_bytes_max = bytes()?,
            "gpu-dispatches" => {
                limits.gpu.dispatches_max = value
                    .parse()
                    .with_context(|| format!("-W gpu-dispatches: `{value}`"))?
            }
            "gpu-time" => limits.gpu.gpu_time_max = duration()?,
            other => bail!(
                "-W {other}: unknown limit (fuel, max-memory-size, timeout, max-output-size, gpu-memory, gpu-dispatches, gpu-time)"
            ),
        }
    }
    limits.check().map_err(|e| anyhow::anyhow!(e))?;
    Ok(limits)
}

/// The limits the market verifies a result of a run under `limits` with
/// (a share of its fuel and time): a verify that passes here passes there.
fn verify_limits(limits: &Limits) -> Limits {
    let timeout_ms = u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX);
    let share =
        agora_market::verify::VerifyLimits::for_run(limits.fuel, limits.memory_bytes, timeout_ms);
    Limits {
        fuel: share.fuel,
        memory_bytes: share.memory_bytes,
        timeout: Duration::from_millis(share.timeout_ms),
        ..limits.clone()
    }
}

/// `--shared NAME=FILE` options, each file read and hashed.
fn read_shared(options: &[String]) -> Result<SharedInputs> {
    Ok(read_named(options, "--shared")?
        .into_iter()
        .map(|(name, bytes)| (name, SharedBlob::new(bytes)))
        .collect())
}

/// `FLAG NAME=FILE` options, each file read, each name once.
fn read_named(
    options: &[String],
    flag: &str,
) -> Result<std::collections::BTreeMap<String, std::sync::Arc<[u8]>>> {
    let mut named = std::collections::BTreeMap::new();
    for option in options {
        let (name, path) = option
            .split_once('=')
            .with_context(|| format!("{flag} {option}: expected NAME=FILE"))?;
        let bytes =
            std::fs::read(path).with_context(|| format!("{flag} {name}: reading {path}"))?;
        if named.insert(name.to_string(), bytes.into()).is_some() {
            bail!("{flag} {name}: the name is given twice");
        }
    }
    Ok(named)
}

fn read_input(path: Option<&PathBuf>) -> Result<Vec<u8>> {
    match path {
        None => Ok(Vec::new()),
        Some(p) if p.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the input from stdin")?;
            Ok(bytes)
        }
        Some(p) => std::fs::read(p).with_context(|| format!("reading the input {}", p.display())),
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    match try_run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn try_run(args: RunArgs) -> Result<ExitCode> {
    let limits = parse_limits(&args.limits)?;
    let bytes =
        std::fs::read(&args.job).with_context(|| format!("reading {}", args.job.display()))?;
    let input = read_input(args.input.as_ref())?;
    let shared = read_shared(&args.shared)?;
    let checked_outputs = read_named(&args.named_output, "--named-output")?;
    let expected = args
        .verify
        .as_ref()
        .map(std::fs::read)
        .transpose()
        .context("reading the output to verify")?;

    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("starting a worker");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let pool = WorkerPool::new(PoolConfig {
        program: std::env::current_exe().context("finding the agora executable")?,
        args: vec!["worker".into()],
        workers: 1,
        gpu: args.gpu,
        sandbox: agora_host::SandboxConfig::default(),
    })?;
    let component = ComponentBytes::new(bytes);
    let running = format!("running {}", args.job.display());
    spinner.set_message(running.clone());
    let mut named = agora_host::NamedOutputs::new();
    let (report, output) = match &expected {
        Some(out) => {
            let (report, answer) = pool.verify_shared(
                &component,
                &input,
                out,
                &shared,
                &checked_outputs,
                &verify_limits(&limits),
            );
            (
                report,
                answer.map(|ok| {
                    if ok {
                        b"accepted\n".to_vec()
                    } else {
                        b"rejected\n".to_vec()
                    }
                }),
            )
        }
        None => {
            let result = pool.run_shared(&component, &input, &shared, &limits, &mut |update| {
                if let Some((done, total)) = update.progress.filter(|&(_, total)| total > 0) {
                    spinner.set_message(format!(
                        "{running}: {}%",
                        done.min(total).saturating_mul(100) / total
                    ));
                }
            });
            named = result.named;
            (result.report, result.output)
        }
    };
    spinner.finish_and_clear();

    if args.json {
        eprintln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in &report.logs {
            eprintln!("[{}] {}", line.level, line.message);
        }
        eprintln!("{report}");
    }
    if !report.outcome.is_ok() {
        eprintln!("error: {}", report.outcome);
        return Ok(ExitCode::from(1));
    }
    let output = output.unwrap_or_default();
    if expected.is_some() {
        let accepted = output == b"accepted\n";
        eprintln!("verify: {}", if accepted { "accepted" } else { "rejected" });
        return Ok(if accepted {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match &args.output {
        Some(path) => {
            let mut files = vec![(path.clone(), &output[..])];
            for (name, bytes) in &named {
                files.push((super::named_output_path(path, name)?, &bytes[..]));
            }
            for (path, bytes) in files {
                std::fs::write(&path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!(
                    "wrote {} to {}",
                    agora_host::report::bytes(bytes.len() as u64),
                    path.display()
                );
            }
        }
        None if !named.is_empty() => {
            bail!(
                "the job gave named outputs ({}): pass --output FILE to write them beside it",
                named.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            if stdout.is_terminal() && std::str::from_utf8(&output).is_err() {
                bail!("the output is binary: pass --output FILE (or redirect stdout)");
            }
            stdout.write_all(&output)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
