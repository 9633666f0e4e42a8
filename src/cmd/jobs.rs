//! `agora submit`, `agora status`, `agora logs`, `agora result`, `agora
//! jobs`: buying work and watching it run; `agora canary`: the operator's
//! known-answer units.

use super::client::ClientArgs;
use super::unit_inputs::UnitSource;
use agora_wire::api::{
    AddCanary, CanaryInfo, JobInfo, JobLogLine, JobLogs, JobState, SubmitJob, UnitInfo, UnitLimits,
    UnitState, UnitsQuery,
};
use agora_wire::client::Client;
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct SubmitArgs {
    /// PACKAGE or PACKAGE@VERSION (default: the latest).
    package: String,
    /// One work unit per file (repeatable).
    #[arg(long = "input", short)]
    inputs: Vec<PathBuf>,
    /// One work unit per file of a folder, or per file a glob matches
    /// ('data/*.png'), in name order (repeatable).
    #[arg(long = "inputs", value_name = "FOLDER|GLOB")]
    input_sets: Vec<String>,
    /// One work unit per piece of FILE (--piece-size each).
    #[arg(long, value_name = "FILE")]
    split: Option<PathBuf>,
    /// The size of each piece of --split (64MiB, 512KiB).
    #[arg(long, default_value = "64MiB", value_parser = crate::units::parse_bytes)]
    piece_size: u64,
    /// One work unit per combination of values, its input the JSON object of
    /// them: `--sweep lr=0.1,0.01 --sweep hidden=64,128` makes four units.
    #[arg(long, value_name = "KEY=V1,V2")]
    sweep: Vec<String>,
    /// A blob every unit reads by name (`data.shared(NAME)` in the job),
    /// uploaded first; an interrupted upload resumes (repeatable).
    #[arg(long, value_name = "NAME=FILE")]
    shared: Vec<String>,
    /// The most the job may cost, in credits (held in escrow until it ends).
    #[arg(long, default_value_t = 1000)]
    max_price: u64,
    /// Providers that must agree on each output.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    #[command(flatten)]
    limits: UnitLimitArgs,
    #[command(flatten)]
    needs: NeedsArgs,
    /// How long the job may run before it expires (2h, 3days; at most a
    /// week): its unfinished units fail and the rest is refunded. A day
    /// when not given.
    #[arg(long)]
    deadline: Option<humantime::Duration>,
    /// Your bid, in percent of each provider's ask (100 to 1000; 100 when
    /// not given): runs are paid the ask times this, and the market serves
    /// higher bids first. Your --max-price must pay it at the going rate
    /// (`agora prices`), or the units wait behind every unit that can.
    #[arg(long, value_name = "PERCENT")]
    bid: Option<u32>,
    /// Failed runs a unit may have before only the market operator's own
    /// hosts run it, and the failures (a vouched host's among them) that
    /// fail it for good: 1 to 3 (the default).
    #[arg(long, value_name = "N")]
    attempts: Option<u32>,
    /// Do not retry a unit that fails on its own (a trap, an error, a
    /// limit) on one of the operator's hosts: fail it at once.
    #[arg(long)]
    no_retry_own_failures: bool,
    /// Wait this long after a unit's failed run before it runs again
    /// (30s, 5min), doubled with each failure, at most an hour.
    #[arg(long)]
    backoff: Option<humantime::Duration>,
    /// Wait for the job to end, with a progress bar.
    #[arg(long)]
    wait: bool,
    /// With --wait: write the outputs here.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// What the providers that run a job must have or be.
#[derive(Args)]
struct NeedsArgs {
    /// A GPU with at least this much memory (8GiB); only CUDA devices
    /// report theirs.
    #[arg(long, value_parser = crate::units::parse_bytes)]
    gpu_memory: Option<u64>,
    /// A GPU on this backend: vulkan, metal, dx12, gl or cuda.
    #[arg(long)]
    gpu_backend: Option<String>,
    /// A GPU of this type: discrete-gpu, integrated-gpu, virtual-gpu, or
    /// cpu (a software adapter such as llvmpipe).
    #[arg(long)]
    gpu_type: Option<String>,
    /// A CUDA GPU of at least this compute capability (8.0).
    #[arg(long)]
    compute_capability: Option<String>,
    /// A GPU whose measured fp32 matmul speed (its host's benchmark,
    /// `agora host` prints it) is at least this many GFLOPS.
    #[arg(long, value_name = "GFLOPS")]
    min_gflops: Option<u32>,
    /// Only providers whose reputation (0 to 1) is at least this.
    #[arg(long)]
    min_reputation: Option<f64>,
    /// Only this provider (its key; repeatable).
    #[arg(long = "allow-provider", value_name = "KEY")]
    allow: Vec<String>,
    /// Never this provider (its key; repeatable).
    #[arg(long = "deny-provider", value_name = "KEY")]
    deny: Vec<String>,
}

impl NeedsArgs {
    fn requirements(&self) -> agora_wire::api::GpuRequirements {
        agora_wire::api::GpuRequirements {
            memory_bytes: self.gpu_memory,
            backend: self.gpu_backend.clone(),
            device_type: self.gpu_type.clone(),
            compute_capability: self.compute_capability.clone(),
            min_gflops: self.min_gflops,
        }
    }

    fn filter(&self) -> agora_wire::api::ProviderFilter {
        agora_wire::api::ProviderFilter {
            min_reputation: self.min_reputation,
            allow: self.allow.clone(),
            deny: self.deny.clone(),
        }
    }
}

/// The limits of each unit (of a job or a canary).
#[derive(Args)]
pub struct UnitLimitArgs {
    /// Fuel per unit.
    #[arg(long, default_value_t = 5_000_000_000)]
    fuel: u64,
    /// Wall-clock limit per unit (10s, 2m).
    #[arg(long, default_value = "60s")]
    timeout: humantime::Duration,
    /// Linear memory per unit (bytes).
    #[arg(long, default_value_t = 512 << 20)]
    memory: u64,
    /// Units need a GPU.
    #[arg(long)]
    gpu: bool,
}

impl UnitLimitArgs {
    fn limits(&self) -> UnitLimits {
        UnitLimits {
            fuel: self.fuel,
            memory_bytes: self.memory,
            timeout_ms: self.timeout.as_millis() as u64,
            gpu: self.gpu,
        }
    }
}

#[derive(Args)]
pub struct CanaryArgs {
    /// PACKAGE@VERSION the canary runs.
    package: String,
    /// The unit's input.
    #[arg(long, short)]
    input: PathBuf,
    /// Its one exact answer (every honest implementation must produce these bytes).
    #[arg(long)]
    expect: PathBuf,
    #[command(flatten)]
    limits: UnitLimitArgs,
}

#[derive(Args)]
pub struct VouchArgs {
    /// The provider's key id (`agora keys show` on its machine).
    provider: String,
}

#[derive(Args)]
pub struct StatusArgs {
    job: String,
    /// List every unit, not only the first page of them.
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
pub struct DeleteDataArgs {
    job: String,
}

#[derive(Args)]
pub struct CancelArgs {
    job: String,
}

#[derive(Args)]
pub struct LogsArgs {
    job: String,
    /// Keep printing lines as they come, until the job ends.
    #[arg(long, short)]
    follow: bool,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("into").required(true))]
pub struct ResultArgs {
    job: String,
    /// The folder for the outputs (unit-N.out, or .png for PNG images; a
    /// named output beside it as unit-N.NAME).
    #[arg(long, short, group = "into")]
    output: Option<PathBuf>,
    /// One file of every unit's output, joined in unit order (every unit
    /// must have one: a job that split its input, or answers a line a unit).
    #[arg(long, value_name = "FILE", group = "into")]
    join: Option<PathBuf>,
}

pub fn submit(args: SubmitArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let (package, version) = match args.package.split_once('@') {
        Some((p, v)) => (p.to_string(), Some(v.to_string())),
        None => (args.package.clone(), None),
    };
    let mut request = SubmitJob {
        package,
        version,
        inputs_base64: Vec::new(),
        input_digests: Vec::new(),
        shared: Default::default(),
        limits: args.limits.limits(),
        max_price: args.max_price,
        replicas: args.replicas,
        requirements: args.needs.requirements(),
        providers: args.needs.filter(),
        deadline_ms: args
            .deadline
            .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        bid_percent: args.bid,
        retry: agora_wire::api::RetryPolicy {
            max_attempts: args.attempts,
            retry_own_failures: args.no_retry_own_failures.then_some(false),
            backoff_ms: args
                .backoff
                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        },
    };
    for named in &args.shared {
        let (name, file) = named
            .split_once('=')
            .with_context(|| format!("--shared {named}: expected NAME=FILE"))?;
        let blob = super::data::upload_one(&client, Path::new(file))?;
        request.shared.insert(name.to_string(), blob.digest);
    }
    add_units(&client, &mut request, unit_sources(&args)?)?;
    let job: JobInfo = client.post("/api/v1/jobs", &request, None)?;
    eprintln!(
        "job {} submitted: {} units of {} {}, {} credits held in escrow",
        job.id, job.unit_counts.total, job.package, job.version, job.max_price
    );
    if job.priority == 0 {
        eprintln!(
            "note: --max-price {} cannot pay the median trusted provider's ask for {} units, so they wait behind every unit that can (see `agora prices`; raise --max-price)",
            job.max_price, job.unit_counts.total
        );
    } else if job.priority < job.bid_percent {
        eprintln!(
            "note: --max-price {} pays a {}% bid at the median trusted provider's ask, not {}%: the units queue at {}% (raise --max-price for more)",
            job.max_price, job.priority, job.bid_percent, job.priority
        );
    }
    println!("{}", job.id);
    if !args.wait {
        return Ok(());
    }
    let job = wait(&client, &job.id)?;
    print_job(&job);
    if let Some(dir) = &args.output {
        download(&client, &job.id, dir)?;
    }
    if job.state != JobState::Done {
        bail!("job {} ended {:?}", job.id, job.state);
    }
    Ok(())
}

/// A unit's input sent inline (in the submit request) at most: larger ones
/// are uploaded as blobs first.
const INLINE_INPUT_BYTES: u64 = 1 << 20;
/// Inline inputs of one submit together at most (its body is bounded).
const INLINE_TOTAL_BYTES: u64 = 32 << 20;

/// The units `args` name, in order: files, folders and globs, pieces, sweep.
fn unit_sources(args: &SubmitArgs) -> Result<Vec<UnitSource>> {
    let mut sources: Vec<UnitSource> = args.inputs.iter().cloned().map(UnitSource::File).collect();
    for set in &args.input_sets {
        sources.extend(
            super::unit_inputs::files_of(set)?
                .into_iter()
                .map(UnitSource::File),
        );
    }
    if let Some(file) = &args.split {
        sources.extend(super::unit_inputs::pieces_of(file, args.piece_size)?);
    }
    sources.extend(
        super::unit_inputs::sweep(&args.sweep)?
            .into_iter()
            .map(UnitSource::Made),
    );
    if sources.is_empty() {
        bail!(
            "name the job's units: --input FILE, --inputs FOLDER|GLOB, --split FILE or --sweep KEY=V1,V2"
        );
    }
    Ok(sources)
}

/// Add `sources` to `request` as its units, in order: all inline when each
/// is small and all fit in one request, else all uploaded as blobs first
/// (the market numbers inline units before uploaded ones, so one job never
/// mixes them).
fn add_units(client: &Client, request: &mut SubmitJob, sources: Vec<UnitSource>) -> Result<()> {
    let sizes: Vec<u64> = sources.iter().map(source_len).collect::<Result<_>>()?;
    let inline = sizes.iter().all(|&s| s <= INLINE_INPUT_BYTES)
        && sizes.iter().sum::<u64>() <= INLINE_TOTAL_BYTES;
    let count = sources.len();
    for (i, source) in sources.into_iter().enumerate() {
        match (inline, source) {
            (true, UnitSource::Made(bytes)) => request
                .inputs_base64
                .push(base64::engine::general_purpose::STANDARD.encode(bytes)),
            (true, UnitSource::File(path)) => {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                request
                    .inputs_base64
                    .push(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            (_, source) => {
                eprintln!("uploading unit {} of {count}", i + 1);
                request.input_digests.push(upload_source(client, source)?);
            }
        }
    }
    Ok(())
}

fn source_len(source: &UnitSource) -> Result<u64> {
    Ok(match source {
        UnitSource::File(path) => std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len(),
        UnitSource::Piece(_, range) => range.end - range.start,
        UnitSource::Made(bytes) => bytes.len() as u64,
    })
}

/// Upload one unit's input; its digest.
fn upload_source(client: &Client, source: UnitSource) -> Result<String> {
    Ok(match source {
        UnitSource::File(path) => super::data::upload_one(client, &path)?.digest,
        UnitSource::Piece(path, range) => {
            let what = format!("{} bytes {}..{}", path.display(), range.start, range.end);
            client
                .upload_range(&path, range, &mut |_, _, _| {})
                .with_context(|| format!("uploading {what}"))?
                .digest
        }
        UnitSource::Made(bytes) => client.upload_bytes(&bytes)?.digest,
    })
}

/// Follow the job's event stream to its end: a progress bar, with its log
/// lines printed above it.
fn wait(client: &Client, id: &str) -> Result<JobInfo> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} units {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut last: Option<JobInfo> = None;
    let mut bad = None;
    let mut after = 0;
    let mut broken = 0;
    // A dropped stream (market restart) is picked up again where it was.
    while last.as_ref().is_none_or(|j| j.state == JobState::Running) {
        let followed = client.follow_events(
            &format!("/api/v1/jobs/{id}/events?after={after}"),
            &mut |event, data| {
                match event {
                    "log" => match serde_json::from_str::<JobLogLine>(data) {
                        Ok(line) => {
                            after = line.seq;
                            say(&bar, format_line(&line));
                        }
                        Err(e) => bad = Some(e),
                    },
                    "job" => match serde_json::from_str::<JobInfo>(data) {
                        Ok(job) => {
                            show(&bar, &job);
                            last = Some(job);
                        }
                        Err(e) => bad = Some(e),
                    },
                    _ => {}
                }
                bad.is_none()
            },
        );
        if let Some(e) = bad.take() {
            bail!("unexpected event from the market: {e}");
        }
        match broken_stream(followed, &mut broken) {
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
            Ok(Some(line)) => say(&bar, line),
            Ok(None) => {}
        }
        // A stream that ended early (or broke) is asked for again, not at once.
        if last.as_ref().is_none_or(|j| j.state == JobState::Running) {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    bar.finish_and_clear();
    Ok(last.expect("the loop ends with a job"))
}

/// Failed reconnections of an event stream in a row before a command
/// gives up (a second apart: a market down for two minutes).
const MAX_RECONNECTS: u32 = 120;

/// An event stream's end, counted in `broken`: the line to print before
/// reconnecting after a failure, none after a clean end (which resets the
/// count), or the error to stop with (a refusal, or a failure past
/// [`MAX_RECONNECTS`] in a row).
fn broken_stream(
    followed: Result<(), agora_wire::client::ClientError>,
    broken: &mut u32,
) -> Result<Option<String>> {
    match followed {
        Ok(()) => {
            *broken = 0;
            Ok(None)
        }
        Err(e) if !e.is_transient() || *broken >= MAX_RECONNECTS => Err(e.into()),
        Err(e) => {
            *broken += 1;
            Ok(Some(format!("lost the event stream ({e}); reconnecting")))
        }
    }
}

/// A line above the progress bar, or on stderr when there is no bar (not
/// a terminal: indicatif's `println` would drop it).
fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Running units the progress bar names, at most: the rest are counted.
const RUNNING_NAMED: usize = 8;

fn show(bar: &indicatif::ProgressBar, job: &JobInfo) {
    let counts = &job.unit_counts;
    let mut running: Vec<String> = job
        .units
        .iter()
        .filter(|u| u.state == UnitState::Running)
        .take(RUNNING_NAMED)
        .map(|u| match u.progress {
            Some(p) if p.total > 0 => {
                format!("#{} {}%", u.index, p.done as u128 * 100 / p.total as u128)
            }
            _ => format!("#{}", u.index),
        })
        .collect();
    if let Some(more) = (counts.running as usize)
        .checked_sub(running.len())
        .filter(|n| *n > 0)
    {
        running.push(format!("+{more}"));
    }
    bar.set_length(counts.total as u64);
    bar.set_position(counts.finished() as u64);
    let running = if running.is_empty() {
        String::new()
    } else {
        format!("running {} · ", running.join(" "))
    };
    bar.set_message(format!(
        "{running}{} credits spent",
        job.cost.paid_to_providers + job.cost.fees
    ));
}

fn format_line(line: &JobLogLine) -> String {
    // The provider tells replicas of one unit apart.
    format!(
        "unit {:<4} {} {:<5} {}",
        line.unit,
        super::printable(&line.provider.chars().take(8).collect::<String>()),
        super::printable(&line.level),
        super::printable(&line.message)
    )
}

pub fn logs(args: LogsArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let mut after = 0;
    loop {
        let page: JobLogs =
            client.get_signed(&format!("/api/v1/jobs/{}/logs?after={after}", args.job))?;
        if page.lines.is_empty() {
            break;
        }
        for line in &page.lines {
            println!("{}", format_line(line));
        }
        after = page.next;
    }
    if !args.follow {
        return Ok(());
    }
    // A dropped stream (a market restarting, a replica gone behind a
    // balancer) is picked up again after the last line printed.
    let mut end = None;
    let mut broken = 0;
    while end.is_none() {
        let followed = client.follow_events(
            &format!("/api/v1/jobs/{}/events?after={after}", args.job),
            &mut |event, data| {
                if event == "log"
                    && let Ok(line) = serde_json::from_str::<JobLogLine>(data)
                {
                    after = line.seq;
                    println!("{}", format_line(&line));
                }
                if event == "job"
                    && let Ok(job) = serde_json::from_str::<JobInfo>(data)
                    && job.state != JobState::Running
                {
                    end = Some(job.state);
                }
                end.is_none()
            },
        );
        if end.is_none() {
            let line = broken_stream(followed, &mut broken)?;
            eprintln!(
                "{}",
                line.as_deref()
                    .unwrap_or("the event stream ended early; reconnecting")
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    eprintln!(
        "job {} ended: {:?}",
        args.job,
        end.expect("the loop ends with a state")
    );
    Ok(())
}

fn print_job(job: &JobInfo) {
    print_head(job);
    job.units.iter().for_each(print_unit);
    if let Some(next) = job.units_next {
        println!(
            "  … units {next} to {} not shown (agora status {} --all lists them)",
            job.unit_counts.total.saturating_sub(1),
            job.id
        );
    }
    print_tail(job);
}

fn print_head(job: &JobInfo) {
    let c = &job.unit_counts;
    println!("job        {} ({:?})", job.id, job.state);
    println!(
        "package    {} {} ({})",
        job.package,
        job.version,
        &job.digest[..16]
    );
    println!(
        "units      {}: {} verified, {} failed, {} running, {} verifying, {} queued",
        c.total, c.verified, c.failed, c.running, c.verifying, c.queued
    );
    for blob in &job.shared {
        println!(
            "shared     {} {} ({})",
            blob.name,
            blob.digest,
            super::data::human_bytes(blob.size)
        );
    }
}

fn print_unit(u: &UnitInfo) {
    println!(
        "  unit {:<4} {:<9} attempts {}  {}{}",
        u.index,
        u.state.as_str(),
        u.attempts,
        u.output_bytes
            .map(|b| format!("{b} bytes"))
            .unwrap_or_default(),
        u.message
            .as_deref()
            .map(|m| format!("  ({})", super::printable(m)))
            .unwrap_or_default()
    );
}

fn print_tail(job: &JobInfo) {
    let c = &job.cost;
    println!(
        "credits    held {}  paid to providers {}  fee {}  refunded {}",
        c.held, c.paid_to_providers, c.fees, c.refunded
    );
    match (job.data_deleted_at_ms, job.data_kept_until_ms) {
        (Some(at), _) => println!("data       deleted {}", when(at)),
        (None, Some(until)) => println!(
            "data       kept until {} (agora delete-data {} deletes it now)",
            when(until),
            job.id
        ),
        (None, None) => {}
    }
}

/// The job read page by page, each page as large as the market gives:
/// `each` sees every page in unit order. The last page is returned.
fn each_page(
    client: &Client,
    id: &str,
    mut each: impl FnMut(&JobInfo) -> Result<()>,
) -> Result<JobInfo> {
    let mut from = 0;
    loop {
        let page: JobInfo = client.get_signed(&format!(
            "/api/v1/jobs/{id}?{}",
            UnitsQuery::from(from).to_query()
        ))?;
        each(&page)?;
        match page.units_next {
            // A market that does not move on would be read forever.
            Some(next) if next > from && !page.units.is_empty() => from = next,
            Some(_) => bail!("the market's page of units from {from} does not lead further"),
            None => return Ok(page),
        }
    }
}

/// Write each verified output into `dir`, with a progress bar.
fn download(client: &Client, id: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} outputs {msg}")
            .expect("valid template"),
    );
    each_page(client, id, |page| {
        bar.set_length(page.unit_counts.verified as u64);
        for u in page.units.iter().filter(|u| u.state == UnitState::Verified) {
            let mut partial = Partial::beside(&dir.join(format!("unit-{}", u.index)))?;
            let head = stream_output(client, id, u, &mut partial)?;
            let ext = if head.starts_with(b"\x89PNG") {
                "png"
            } else {
                "out"
            };
            let path = dir.join(format!("unit-{}.{ext}", u.index));
            partial.finish(&path)?;
            for named in &u.outputs {
                let beside = super::named_output_path(&path, &named.name)?;
                let mut partial = Partial::beside(&beside)?;
                stream_checked(
                    client,
                    &format!("/api/v1/jobs/{id}/units/{}/outputs/{}", u.index, named.name),
                    Some(&named.digest),
                    Some(named.bytes),
                    &format!("the output `{}` of unit {}", named.name, u.index),
                    &mut partial,
                )?;
                partial.finish(&beside)?;
            }
            bar.set_message(path.display().to_string());
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    eprintln!("wrote {} outputs into {}", bar.position(), dir.display());
    Ok(())
}

/// A file written beside its final name under a name of its own
/// (`create_new`: never a file planted there, never another command's),
/// synced and renamed into place by [`Partial::finish`], removed when
/// dropped unfinished: a name holds a whole, checked file or nothing new.
struct Partial {
    path: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
}

impl Partial {
    fn beside(target: &Path) -> Result<Partial> {
        let name = target
            .file_name()
            .with_context(|| format!("{} names no file", target.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = target.with_file_name(format!(
            ".{}.{}-{nanos}.partial",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        let file = file.with_context(|| format!("creating {}", path.display()))?;
        Ok(Partial {
            path,
            out: Some(std::io::BufWriter::new(file)),
        })
    }

    fn finish(mut self, target: &Path) -> Result<()> {
        let out = self.out.take().expect("a partial file is finished once");
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&self.path, target).with_context(|| format!("writing {}", target.display()))
    }
}

impl std::io::Write for Partial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out
            .as_mut()
            .expect("an unfinished partial file")
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out
            .as_mut()
            .expect("an unfinished partial file")
            .flush()
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Unfinished, or finished but not renamed: not ours to leave.
        if self.out.is_some() || self.path.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub fn status(args: StatusArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    if !args.all {
        let job: JobInfo = client.get_signed(&format!("/api/v1/jobs/{}", args.job))?;
        print_job(&job);
        return Ok(());
    }
    let mut first = true;
    let last = each_page(&client, &args.job, |page| {
        if std::mem::take(&mut first) {
            print_head(page);
        }
        page.units.iter().for_each(print_unit);
        Ok(())
    })?;
    print_tail(&last);
    Ok(())
}

pub fn result(args: ResultArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    match (&args.output, &args.join) {
        (Some(dir), _) => download(&client, &args.job, dir),
        (None, Some(file)) => join(&client, &args.job, file),
        (None, None) => unreachable!("clap requires -o or --join"),
    }
}

/// Every unit's output, in unit order, into one file: written beside it
/// and renamed into place once whole, so a failed join leaves no partial
/// file under the name.
fn join(client: &Client, id: &str, file: &Path) -> Result<()> {
    let mut out = Partial::beside(file)?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} outputs joined")
            .expect("valid template"),
    );
    let mut next = 0u64;
    let last = each_page(client, id, |page| {
        bar.set_length(page.unit_counts.total as u64);
        for u in &page.units {
            // Every unit once, in order: a listing that skips one is not the job's output.
            if u.index as u64 != next {
                bail!(
                    "the market listed unit {} where unit {next} was due; nothing was joined",
                    u.index
                );
            }
            if u.state != UnitState::Verified {
                bail!(
                    "unit {} is {:?}: --join needs every unit's output (agora result -o DIR writes those there are)",
                    u.index,
                    u.state
                );
            }
            stream_output(client, id, u, &mut out)?;
            next += 1;
            bar.inc(1);
        }
        Ok(())
    });
    bar.finish_and_clear();
    let total = last?.unit_counts.total as u64;
    if next != total {
        bail!("the market listed {next} of the job's {total} units; nothing was joined");
    }
    out.finish(file)?;
    eprintln!("joined {next} outputs into {}", file.display());
    Ok(())
}

/// Stream a verified unit's output into `sink`, checked against the digest
/// the market verified (an output of any size never sits in memory); its
/// first bytes.
fn stream_output(
    client: &Client,
    id: &str,
    unit: &UnitInfo,
    sink: &mut dyn std::io::Write,
) -> Result<Vec<u8>> {
    stream_checked(
        client,
        &format!("/api/v1/jobs/{id}/units/{}/output", unit.index),
        unit.output_digest.as_deref(),
        unit.output_bytes,
        &format!("the output of unit {}", unit.index),
        sink,
    )
}

/// Stream the bytes at `path` into `sink`, checked against `digest` (the
/// one the market verified) and no more than `size` (when the market
/// lists one; else the digest alone holds it); their first bytes.
fn stream_checked(
    client: &Client,
    path: &str,
    digest: Option<&str>,
    size: Option<u64>,
    what: &str,
    sink: &mut dyn std::io::Write,
) -> Result<Vec<u8>> {
    let mut checked = Checked {
        inner: sink,
        hasher: blake3::Hasher::new(),
        head: Vec::new(),
        room: size.unwrap_or(u64::MAX),
    };
    client.download_signed(path, &mut checked)?;
    // The market streams what its store holds: the digest it verified is
    // the check.
    if digest != Some(checked.hasher.finalize().to_hex().as_str()) {
        bail!("{what} does not match its verified digest; nothing more was written");
    }
    Ok(checked.head)
}

/// A writer that hashes what passes through it, keeps its first bytes and
/// takes no more than it expects.
struct Checked<'a> {
    inner: &'a mut dyn std::io::Write,
    hasher: blake3::Hasher,
    head: Vec<u8>,
    /// Bytes still expected: a market that sends more is cut off.
    room: u64,
}

/// How many first bytes of an output tell its kind (a PNG's signature).
const HEAD_BYTES: usize = 8;

impl std::io::Write for Checked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.room {
            return Err(std::io::Error::other(
                "the market sent more than the output's size",
            ));
        }
        let n = self.inner.write(buf)?;
        self.room -= n as u64;
        self.hasher.update(&buf[..n]);
        let room = HEAD_BYTES.saturating_sub(self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..room]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn cancel(args: CancelArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let job: JobInfo = client.post(
        &format!("/api/v1/jobs/{}/cancel", args.job),
        &serde_json::json!({}),
        None,
    )?;
    match job.state {
        JobState::Cancelled => println!("cancelled {}", job.id),
        JobState::Running => println!(
            "cancelled {}: its units are stopped; it ends, and its refund comes, when the market settles it",
            job.id
        ),
        state => println!("{} was already {state}", job.id),
    }
    print_tail(&job);
    Ok(())
}

pub fn delete_data(args: DeleteDataArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let deleted: agora_wire::api::DataDeleted =
        client.delete(&format!("/api/v1/jobs/{}/data", args.job))?;
    println!(
        "deleted the inputs, outputs and logs of {} ({})",
        deleted.job,
        when(deleted.deleted_at_ms)
    );
    Ok(())
}

/// A time as the user reads it: UTC, to the second.
fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

pub fn list(client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let jobs: agora_wire::api::Page<agora_wire::api::JobSummary> =
        client.get_signed("/api/v1/jobs?per_page=100")?;
    if jobs.items.is_empty() {
        println!("no jobs yet");
    }
    for j in &jobs.items {
        println!(
            "{}  {:<9} {}/{} units  {} {}",
            j.id,
            j.state.as_str(),
            j.units_verified,
            j.units,
            j.package,
            j.version
        );
    }
    if jobs.total > jobs.items.len() as u64 {
        println!("(the newest {} of {} jobs)", jobs.items.len(), jobs.total);
    }
    Ok(())
}

/// Add a known-answer canary unit (operator key only).
pub fn vouch(args: VouchArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let _: serde_json::Value = client.post(
        "/api/v1/operator/vouch",
        &agora_wire::api::Vouch {
            provider: args.provider.clone(),
        },
        None,
    )?;
    println!("vouched for {}", args.provider);
    Ok(())
}

pub fn canary(args: CanaryArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let Some((package, version)) = args.package.split_once('@') else {
        bail!("a canary names its exact version: PACKAGE@VERSION");
    };
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let request = AddCanary {
        package: package.into(),
        version: version.into(),
        input_base64: b64(read(&args.input)?),
        expected_output_base64: b64(read(&args.expect)?),
        limits: args.limits.limits(),
    };
    let added: CanaryInfo = client.post("/api/v1/operator/canaries", &request, None)?;
    println!(
        "canary {}: {} {} (input {}, answer {})",
        added.id,
        added.package,
        added.version,
        &added.input_digest[..16],
        &added.output_digest[..16]
    );
    Ok(())
}

/// The market's going rate per device class (what recent accepted runs
/// were paid), and the suggested ask for a new job.
pub fn prices(client_args: &ClientArgs) -> Result<()> {
    let stats: agora_wire::api::MarketStats = client_args.anonymous()?.get("/api/v1/stats")?;
    let s = stats.suggested_ask;
    println!(
        "suggested now: {} per billion fuel, {} per GPU second, {} per wall second ({} providers online, {} units queued)",
        s.per_billion_fuel,
        s.per_gpu_second,
        s.per_wall_second,
        stats.providers_online,
        stats.queued_units
    );
    if stats.prices.is_empty() {
        println!("no trades in the price window yet");
        return Ok(());
    }
    println!(
        "{:<32} {:>12} {:>12} {:>12} {:>7} {:>7}",
        "device class", "/bn fuel", "/GPU s", "/wall s", "trades", "trusted"
    );
    for p in &stats.prices {
        println!(
            "{:<32} {:>12} {:>12} {:>12} {:>7} {:>7}",
            super::printable(&p.class),
            p.rate.per_billion_fuel,
            p.rate.per_gpu_second,
            p.rate.per_wall_second,
            p.trades,
            p.trusted_online
        );
    }
    Ok(())
}
