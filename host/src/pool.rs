//! The supervisor: a pool of warm worker processes that run jobs, with a hard
//! deadline per job enforced by killing the worker.
//!
//! Why processes: a shader that never ends keeps the GPU queue busy and
//! cannot be cancelled inside the process (seen on lavapipe); a worker that
//! ran past its deadline, crashed, or reports a hung device is killed and
//! replaced, and the next job runs on a fresh one.
//!
//! Each worker compiles a component once and keeps it by digest; the pool
//! remembers which worker has which, and sends the bytes only when needed.

use crate::gpu::{AdapterInfo, GpuChoice};
use crate::limits::{self, Limits};
use crate::protocol::{
    Call, Hello, Request, Response, SharedSpec, WorkerMessage, read_frame_within, write_frame,
};
use crate::report::{LimitKind, LiveUpdate, Outcome, RunReport};
use crate::runtime::{digest_of, hex};
use crate::sandbox::memory::WorkerCgroup;
use crate::sandbox::{
    self, Attempt, Layer, LayerState, SandboxConfig, SandboxReport, WorkerSandbox,
};
use crate::state::{NamedOutputs, SharedInputs};
use std::collections::HashSet;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often a stoppable run checks whether it was stopped.
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long a new worker may take to open its GPU and say hello.
pub const WORKER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start workers.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The program and arguments that start one worker (it must call
    /// [`crate::worker::main`]); `--gpu CHOICE` is appended.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Workers kept warm (jobs that can run at once).
    pub workers: usize,
    pub gpu: GpuChoice,
    /// The OS walls around each worker (`crate::sandbox`).
    pub sandbox: SandboxConfig,
}

/// A component as the pool sees it: bytes and their digest.
#[derive(Clone)]
pub struct ComponentBytes {
    pub digest: String,
    pub bytes: Arc<[u8]>,
}

impl ComponentBytes {
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        ComponentBytes {
            digest: hex(&digest_of(&bytes)),
            bytes,
        }
    }
}

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    #[error("cannot start worker `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("worker did not start: {0}")]
    Start(String),
    /// A wall the worker says stands let one of its probes through.
    #[error(
        "the worker sandbox failed its check: {attempt:?} got through although {layers:?} stand: {detail}"
    )]
    SandboxBreached {
        attempt: Attempt,
        layers: Vec<Layer>,
        detail: String,
    },
}

pub struct WorkerPool {
    config: PoolConfig,
    idle: Mutex<Vec<Worker>>,
    returned: Condvar,
    devices: Vec<AdapterInfo>,
    sandbox: SandboxReport,
    counters: Mutex<PoolCounters>,
}

/// What the pool has done, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    pub started: u64,
    pub killed: u64,
    pub jobs: u64,
}

struct Worker {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    responses: Receiver<std::io::Result<(WorkerMessage, Vec<u8>)>>,
    known: HashSet<String>,
    /// Shared inputs (by digest) it was sent and keeps, as far as the
    /// supervisor knows (it may have let one go: it then says so).
    shared: HashSet<String>,
    /// Its memory wall, when the supervisor could make one.
    cgroup: Option<WorkerCgroup>,
    /// Bytes of body the worker's next frame may carry: the output the
    /// request in flight allows (live updates and hellos carry none).
    allowed_body: Arc<AtomicU64>,
}

/// One finished job.
pub struct JobResult {
    pub report: RunReport,
    pub output: Option<Vec<u8>>,
    /// A run's named outputs (`data.output`), with its output.
    pub named: NamedOutputs,
}

enum Waited {
    Answer(Response, Vec<u8>),
    Deadline,
    Lost(String),
    /// The caller stopped the run.
    Stopped,
}

impl WorkerPool {
    /// Start `config.workers` workers and wait until each has opened its GPU.
    pub fn new(config: PoolConfig) -> Result<Self, PoolError> {
        // A worker that got past its walls must not read or write this
        // process's memory through /proc (same user, Landlock missing).
        #[cfg(target_os = "linux")]
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
        let mut workers = Vec::new();
        let mut devices = Vec::new();
        let mut sandbox = SandboxReport::default();
        for _ in 0..config.workers.max(1) {
            let (worker, hello) = spawn(&config)?;
            devices = hello.devices;
            sandbox = hello.sandbox;
            workers.push(worker);
        }
        sandbox.log();
        let counters = PoolCounters {
            started: workers.len() as u64,
            ..Default::default()
        };
        Ok(WorkerPool {
            config,
            idle: Mutex::new(workers),
            returned: Condvar::new(),
            devices,
            sandbox,
            counters: Mutex::new(counters),
        })
    }

    /// The walls around the workers, and what their checks at start met.
    pub fn sandbox(&self) -> &SandboxReport {
        &self.sandbox
    }

    /// The adapter workers run jobs on by default.
    pub fn adapter(&self) -> Option<&AdapterInfo> {
        self.devices.first()
    }

    /// Every device workers may run jobs on (CUDA and wgpu on an NVIDIA host).
    pub fn devices(&self) -> &[AdapterInfo] {
        &self.devices
    }

    /// Jobs the pool runs at once.
    pub fn workers(&self) -> usize {
        self.config.workers.max(1)
    }

    pub fn counters(&self) -> PoolCounters {
        *self.counters.lock().expect("counters lock")
    }

    /// Run `run(input)` on a warm worker.
    pub fn run(&self, component: &ComponentBytes, input: &[u8], limits: &Limits) -> JobResult {
        self.call(
            component,
            &[input],
            &SharedInputs::new(),
            limits,
            Call::Run,
            None,
            None,
        )
    }

    /// [`WorkerPool::run`], calling `live` with progress and logs while the
    /// job runs (on this thread, between waits for the worker).
    pub fn run_observed(
        &self,
        component: &ComponentBytes,
        input: &[u8],
        limits: &Limits,
        live: &mut dyn FnMut(LiveUpdate),
    ) -> JobResult {
        self.call(
            component,
            &[input],
            &SharedInputs::new(),
            limits,
            Call::Run,
            Some(live),
            None,
        )
    }

    /// [`WorkerPool::run_observed`] for a job with shared inputs.
    pub fn run_shared(
        &self,
        component: &ComponentBytes,
        input: &[u8],
        shared: &SharedInputs,
        limits: &Limits,
        live: &mut dyn FnMut(LiveUpdate),
    ) -> JobResult {
        self.call(
            component,
            &[input],
            shared,
            limits,
            Call::Run,
            Some(live),
            None,
        )
    }

    /// [`WorkerPool::run_shared`] that another thread can stop: once
    /// `stop` is set (seen within [`STOP_CHECK_INTERVAL`]) the worker is
    /// killed and replaced, and the run ends as a lost worker.
    pub fn run_stoppable(
        &self,
        component: &ComponentBytes,
        input: &[u8],
        shared: &SharedInputs,
        limits: &Limits,
        live: &mut dyn FnMut(LiveUpdate),
        stop: &AtomicBool,
    ) -> JobResult {
        self.call(
            component,
            &[input],
            shared,
            limits,
            Call::Run,
            Some(live),
            Some(stop),
        )
    }

    /// Run `verify(input, output)` on a warm worker; the answer is
    /// `Some(true|false)`, or `None` when it did not complete.
    pub fn verify(
        &self,
        component: &ComponentBytes,
        input: &[u8],
        output: &[u8],
        limits: &Limits,
    ) -> (RunReport, Option<bool>) {
        self.verify_shared(
            component,
            input,
            output,
            &SharedInputs::new(),
            &NamedOutputs::new(),
            limits,
        )
    }

    /// [`WorkerPool::verify`] for a job with shared inputs, of a result
    /// with named outputs.
    pub fn verify_shared(
        &self,
        component: &ComponentBytes,
        input: &[u8],
        output: &[u8],
        shared: &SharedInputs,
        outputs: &NamedOutputs,
        limits: &Limits,
    ) -> (RunReport, Option<bool>) {
        let mut body = vec![input, output];
        body.extend(outputs.values().map(|b| &b[..]));
        let result = self.call(
            component,
            &body,
            shared,
            limits,
            Call::Verify {
                output_len: output.len() as u64,
                outputs: outputs
                    .iter()
                    .map(|(n, b)| (n.clone(), b.len() as u64))
                    .collect(),
            },
            None,
            None,
        );
        (result.report, result.output.map(|o| o == [1]))
    }

    /// The default device's fp32 matmul speed in GFLOPS, measured in a
    /// worker ([`crate::gpu::speed`]); `None` without a GPU, or when the
    /// measurement failed (logged: a provider still serves, unrated).
    pub fn benchmark(&self) -> Option<f64> {
        let mut worker = self.checkout().ok()?;
        let nothing = ComponentBytes::new(Vec::new());
        let mut ignore = |_: LiveUpdate| {};
        let waited = worker.ask(
            &nothing,
            &[],
            &SharedInputs::new(),
            &Limits::default(),
            Call::Benchmark,
            crate::gpu::speed::MEASURE_FOR * 50 + limits::KILL_GRACE,
            false,
            &mut ignore,
            None,
        );
        let Waited::Answer(response, body) = waited else {
            tracing::warn!("the GPU benchmark did not finish: replacing its worker");
            self.replace(worker);
            return None;
        };
        if response.report.worker_poisoned {
            self.replace(worker);
        } else {
            self.checkin(worker);
        }
        if !response.report.outcome.is_ok() {
            tracing::warn!("the GPU benchmark failed: {}", response.report.outcome);
            return None;
        }
        let bytes: [u8; 8] = body.get(..8)?.try_into().ok()?;
        // (A non-finite or negative reading is no speed.)
        Some(f64::from_le_bytes(bytes)).filter(|g| g.is_finite() && *g > 0.0)
    }

    fn call(
        &self,
        component: &ComponentBytes,
        input: &[&[u8]],
        shared: &SharedInputs,
        limits: &Limits,
        call: Call,
        live: Option<&mut dyn FnMut(LiveUpdate)>,
        stop: Option<&AtomicBool>,
    ) -> JobResult {
        let wants_live = live.is_some();
        let mut ignore = |_: LiveUpdate| {};
        let live: &mut dyn FnMut(LiveUpdate) = match live {
            Some(live) => live,
            None => &mut ignore,
        };
        let started = Instant::now();
        let mut worker = match self.checkout() {
            Ok(w) => w,
            Err(e) => {
                return self.failed(
                    component,
                    started,
                    Outcome::WorkerLost {
                        message: e.to_string(),
                    },
                );
            }
        };
        let mut compile_time = Duration::ZERO;
        // At most three times: a worker may have let the component or a
        // shared input go meanwhile.
        let mut waited = Waited::Lost("no attempt".into());
        for _ in 0..3 {
            if !worker.known.contains(&component.digest) {
                let mut ignore_load = |_: LiveUpdate| {};
                match worker.ask(
                    component,
                    &[&component.bytes],
                    &SharedInputs::new(),
                    limits,
                    Call::Load,
                    limits::COMPILE_TIMEOUT,
                    false,
                    &mut ignore_load,
                    stop,
                ) {
                    Waited::Answer(response, _) if response.report.outcome.is_ok() => {
                        compile_time = response.report.compile_time;
                        worker.known.insert(component.digest.clone());
                    }
                    Waited::Answer(response, _) => {
                        // Refused before it ran: the worker is fine.
                        self.checkin(worker);
                        self.counters.lock().expect("counters lock").jobs += 1;
                        return JobResult {
                            report: response.report,
                            output: None,
                            named: NamedOutputs::new(),
                        };
                    }
                    Waited::Deadline => {
                        let outcome = Outcome::LimitExceeded {
                            limit: LimitKind::CompileTime,
                            message: format!(
                                "compiling took longer than {} s; its worker was killed",
                                limits::COMPILE_TIMEOUT.as_secs()
                            ),
                        };
                        tracing::warn!(
                            pid = worker.child.id(),
                            "compile ran past its deadline: killing the worker"
                        );
                        self.replace(worker);
                        return self.failed(component, started, outcome);
                    }
                    lost @ (Waited::Lost(_) | Waited::Stopped) => {
                        waited = lost;
                        break;
                    }
                }
            }
            waited = worker.ask(
                component,
                input,
                shared,
                limits,
                call.clone(),
                limits.timeout + limits::KILL_GRACE,
                wants_live,
                &mut *live,
                stop,
            );
            match &waited {
                Waited::Answer(response, _) if response.needs_component => {
                    worker.known.remove(&component.digest)
                }
                Waited::Answer(response, _) if response.needs_shared => {
                    worker.shared.clear();
                    true
                }
                _ => break,
            };
        }
        let outcome = match waited {
            Waited::Answer(mut response, mut body) => {
                response.report.compile_time = compile_time;
                // Lengths past the body: the worker is not ours any more.
                let named = match crate::protocol::split_named(&mut body, &response.outputs) {
                    Ok(named) => named,
                    Err(e) => {
                        let outcome = lost(&worker, e.to_string());
                        self.replace(worker);
                        return self.failed(component, started, outcome);
                    }
                };
                if response.report.worker_poisoned {
                    tracing::warn!(
                        "worker {} reports a hung GPU device: replacing it",
                        worker.child.id()
                    );
                    self.replace(worker);
                } else {
                    self.checkin(worker);
                }
                self.counters.lock().expect("counters lock").jobs += 1;
                let output = response.has_output.then_some(body);
                return JobResult {
                    report: response.report,
                    output,
                    named,
                };
            }
            Waited::Deadline => {
                tracing::warn!(
                    pid = worker.child.id(),
                    "job ran past {} ms: killing its worker",
                    limits.timeout.as_millis()
                );
                Outcome::LimitExceeded {
                    limit: LimitKind::Timeout,
                    message: format!(
                        "the job ran past its {} ms deadline inside a host or GPU call; its worker was killed",
                        limits.timeout.as_millis()
                    ),
                }
            }
            Waited::Lost(message) => lost(&worker, message),
            Waited::Stopped => {
                tracing::info!(
                    pid = worker.child.id(),
                    "the job was stopped: killing its worker"
                );
                Outcome::WorkerLost {
                    message: "stopped on request; its worker was killed".into(),
                }
            }
        };
        self.replace(worker);
        self.failed(component, started, outcome)
    }

    fn failed(&self, component: &ComponentBytes, started: Instant, outcome: Outcome) -> JobResult {
        self.counters.lock().expect("counters lock").jobs += 1;
        let mut report = RunReport::new(outcome, component.digest.clone());
        report.adapter = self.devices.first().cloned();
        report.wall_time = started.elapsed();
        JobResult {
            report,
            output: None,
            named: NamedOutputs::new(),
        }
    }

    fn checkout(&self) -> Result<Worker, PoolError> {
        let mut idle = self.idle.lock().expect("pool lock");
        loop {
            if let Some(worker) = idle.pop() {
                return Ok(worker);
            }
            if self.alive() == 0 {
                drop(idle);
                // Every worker failed to restart: try once more now.
                let (worker, _) = spawn(&self.config)?;
                self.counters.lock().expect("counters lock").started += 1;
                return Ok(worker);
            }
            idle = self.returned.wait(idle).expect("pool lock");
        }
    }

    fn alive(&self) -> u64 {
        let c = self.counters.lock().expect("counters lock");
        c.started - c.killed
    }

    fn checkin(&self, worker: Worker) {
        self.idle.lock().expect("pool lock").push(worker);
        self.returned.notify_one();
    }

    /// Kill `worker` and start a fresh one in its place.
    fn replace(&self, mut worker: Worker) {
        end(&mut worker.child);
        self.counters.lock().expect("counters lock").killed += 1;
        match spawn(&self.config) {
            Ok((fresh, _)) => {
                self.counters.lock().expect("counters lock").started += 1;
                self.checkin(fresh);
            }
            Err(e) => {
                tracing::error!("could not replace a worker: {e}");
                self.returned.notify_all();
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        for mut worker in self
            .idle
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
        {
            // A worker whose GPU is busy cannot exit by itself: kill.
            end(&mut worker.child);
        }
    }
}

impl Worker {
    /// Send one request and wait for its answer until `deadline`.
    /// Send one request and wait for its answer until `deadline`, passing
    /// live updates to `live` meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn ask(
        &mut self,
        component: &ComponentBytes,
        body: &[&[u8]],
        shared: &SharedInputs,
        limits: &Limits,
        call: Call,
        deadline: Duration,
        wants_live: bool,
        live: &mut dyn FnMut(LiveUpdate),
        stop: Option<&AtomicBool>,
    ) -> Waited {
        // An idle worker has nothing to say: a frame waiting now was sent
        // out of turn (a forged answer queued for the next job).
        if self.responses.try_recv().is_ok() {
            return Waited::Lost("the worker sent a frame nobody asked for".into());
        }
        let answer = match &call {
            Call::Load => 0,
            Call::Run => limits.output_bytes,
            Call::Verify { .. } => 1,
            Call::Benchmark => 8,
        };
        self.allowed_body.store(answer, Ordering::SeqCst);
        let specs: Vec<SharedSpec> = shared
            .iter()
            .map(|(name, blob)| SharedSpec {
                name: name.clone(),
                digest: blob.digest.clone(),
                len: blob.bytes.len() as u64,
                sent: !self.shared.contains(&blob.digest),
            })
            .collect();
        let parts: Vec<&[u8]> = body
            .iter()
            .copied()
            .chain(
                shared
                    .values()
                    .filter(|b| !self.shared.contains(&b.digest))
                    .map(|b| &b.bytes[..]),
            )
            .collect();
        self.shared
            .extend(shared.values().map(|b| b.digest.clone()));
        let request = Request {
            digest: component.digest.clone(),
            limits: *limits,
            call,
            live: wants_live,
            shared: specs,
        };
        if let Err(e) = write_frame(&mut self.stdin, &request, &parts) {
            return Waited::Lost(format!("could not send the job to the worker: {e}"));
        }
        let until = Instant::now() + deadline;
        loop {
            // Checked every frame: a worker streaming updates non-stop must
            // not outlive its deadline.
            if Instant::now() >= until {
                return Waited::Deadline;
            }
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                return Waited::Stopped;
            }
            let wait = until.saturating_duration_since(Instant::now());
            let wait = match stop {
                Some(_) => wait.min(STOP_CHECK_INTERVAL),
                None => wait,
            };
            match self.responses.recv_timeout(wait) {
                Ok(Ok((WorkerMessage::Done(response), body))) => {
                    self.allowed_body.store(0, Ordering::SeqCst);
                    return Waited::Answer(response, body);
                }
                Ok(Ok((WorkerMessage::Live(update), _))) => live(update),
                Ok(Err(e)) => return Waited::Lost(format!("bad reply from the worker: {e}")),
                // The loop's checks say whether it was the deadline.
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Its stdout closed; it may still run: end it first.
                    let status = end(&mut self.child);
                    return Waited::Lost(format!("the worker died during the job ({status})"));
                }
            }
        }
    }
}

/// Kill `child` (it may be dead already) and reap it: how it ended.
fn end(child: &mut Child) -> String {
    let _ = child.kill();
    child
        .wait()
        .map(|s| s.to_string())
        .unwrap_or_else(|e| e.to_string())
}

/// Why a worker died mid-job: its memory wall, when the cgroup's OOM counter
/// says so.
fn lost(worker: &Worker, message: String) -> Outcome {
    match &worker.cgroup {
        Some(cgroup) if cgroup.oom_kills() > 0 => Outcome::WorkerOutOfMemory {
            limit_bytes: cgroup.limit_bytes(),
            message: "linear memory, host-side blobs and GPU read-backs together passed it; the kernel killed the worker".into(),
        },
        _ => Outcome::WorkerLost { message },
    }
}

/// A worker's command: the program, a clean environment and its sandbox
/// settings.
fn command(config: &PoolConfig, settings: &WorkerSandbox) -> Command {
    let mut command = Command::new(&config.program);
    command
        .args(&config.args)
        .args(["--gpu", config.gpu.as_str()])
        .env_clear();
    for (name, value) in std::env::vars_os() {
        if sandbox::WORKER_ENVIRONMENT
            .iter()
            .any(|allowed| name == *allowed)
        {
            command.env(name, value);
        }
    }
    command.envs(sandbox::WORKER_FIXED_ENVIRONMENT.iter().copied());
    command.env(
        sandbox::SETTINGS_VAR,
        serde_json::to_string(settings).expect("settings serialize"),
    );
    // Its own process group (a Ctrl-C to the provider's terminal is the
    // supervisor's to handle) and no terminal: stderr comes through a pipe.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Copy a worker's stderr (its logs) to the supervisor's, a line at a time,
/// each cut to [`limits::MAX_LOG_LINE_BYTES`] and with control characters
/// replaced: a worker reaches no terminal, not even through escape codes.
fn relay_stderr(stderr: std::process::ChildStderr) {
    use std::io::{BufRead, Read, Write};
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(limits::MAX_LOG_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text: String = String::from_utf8_lossy(&line)
                    .trim_end_matches('\n')
                    .chars()
                    .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                    .collect();
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }
}

fn spawn(config: &PoolConfig) -> Result<(Worker, Hello), PoolError> {
    let cgroup = WorkerCgroup::create(config.sandbox.memory_bytes);
    // Held until the hello: the worker must fail to connect to either.
    let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).ok();
    let socket = ProbeSocket::open();
    let settings = WorkerSandbox {
        memory_rlimit: cgroup.is_err().then_some(config.sandbox.memory_bytes),
        probe_file: config.sandbox.probe_file.clone(),
        probe_directory: std::env::current_dir().ok(),
        probe_port: probe
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port()),
        probe_socket: socket.as_ref().map(|s| s.path.clone()),
    };
    let mut child = command(config, &settings)
        .spawn()
        .map_err(|source| PoolError::Spawn {
            program: config.program.display().to_string(),
            source,
        })?;
    if let Some(stderr) = child.stderr.take() {
        std::thread::Builder::new()
            .name(format!("agora-worker-{}-stderr", child.id()))
            .spawn(move || relay_stderr(stderr))
            .expect("spawn a stderr relay thread");
    }
    // The kernel's first choice when memory runs out is a worker, never the
    // supervisor (raising it back needs a capability the worker dropped).
    let _ = std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "1000");
    let cgroup = match cgroup {
        Ok(cgroup) => match cgroup.attach(child.id()) {
            Ok(()) => Ok(cgroup),
            Err(e) => {
                end(&mut child);
                return Err(PoolError::Start(format!(
                    "cannot move the worker into its cgroup: {e}"
                )));
            }
        },
        Err(why) => Err(why),
    };
    let stdin = BufWriter::new(child.stdin.take().expect("stdin is piped"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let (hello_tx, hello_rx) = channel();
    // Bounded: a worker that streams frames nobody reads (one a guest
    // escaped into) blocks on its own pipe, not the supervisor's memory.
    let (tx, responses) = sync_channel(4);
    let allowed_body = Arc::new(AtomicU64::new(0));
    let allowed = allowed_body.clone();
    std::thread::Builder::new()
        .name(format!("agora-worker-{}", child.id()))
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            let _ = hello_tx.send(read_frame_within::<Hello>(&mut reader, || 0));
            loop {
                match read_frame_within::<WorkerMessage>(&mut reader, || {
                    allowed.load(Ordering::SeqCst)
                }) {
                    Ok(Some(frame)) => {
                        if tx.send(Ok(frame)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        })
        .expect("spawn a reader thread");
    let hello = match hello_rx.recv_timeout(WORKER_START_TIMEOUT) {
        Ok(Ok(Some((hello, _)))) => hello,
        Ok(Ok(None)) | Err(_) => {
            let status = end(&mut child);
            return Err(PoolError::Start(format!(
                "the worker exited or hung before saying hello ({status})"
            )));
        }
        Ok(Err(e)) => {
            end(&mut child);
            return Err(PoolError::Start(format!("bad hello from the worker: {e}")));
        }
    };
    drop((probe, socket));
    let mut hello: Hello = hello;
    if let Some(error) = &hello.error {
        end(&mut child);
        return Err(PoolError::Start(error.clone()));
    }
    if let Err(breach) = checked(&mut hello.sandbox, &cgroup) {
        end(&mut child);
        return Err(breach);
    }
    Ok((
        Worker {
            child,
            stdin,
            responses,
            known: HashSet::new(),
            shared: HashSet::new(),
            cgroup: cgroup.ok(),
            allowed_body,
        },
        hello,
    ))
}

/// Add the memory wall the supervisor raised to the worker's report, and
/// refuse a worker whose walls, by its own account standing, let a probe
/// through (a missing wall only lets the pool warn).
fn checked(
    report: &mut SandboxReport,
    cgroup: &Result<WorkerCgroup, String>,
) -> Result<(), PoolError> {
    match cgroup {
        Ok(cgroup) => report.layers.push(LayerState {
            layer: Layer::Memory,
            applied: true,
            detail: cgroup.describe(),
        }),
        Err(why) => {
            if let Some(rlimit) = report.layers.iter_mut().find(|l| l.layer == Layer::Memory) {
                rlimit.detail = format!("{why}; {}", rlimit.detail);
            }
        }
    }
    for probe in report.escapes() {
        let guards: &[Layer] = match probe.attempt {
            Attempt::ConnectLoopback => &[Layer::NetworkNamespace, Layer::Landlock, Layer::Seccomp],
            Attempt::ConnectUnixSocket => &[Layer::Seccomp],
            Attempt::ReadFile | Attempt::ListWorkingDirectory | Attempt::ReadParentEnvironment => {
                &[Layer::Landlock]
            }
        };
        let standing: Vec<Layer> = guards
            .iter()
            .copied()
            .filter(|&l| report.applied(l))
            .collect();
        if !standing.is_empty() {
            return Err(PoolError::SandboxBreached {
                attempt: probe.attempt,
                layers: standing,
                detail: probe.detail.clone(),
            });
        }
    }
    Ok(())
}

/// A named Unix socket the supervisor listens on while a worker starts, in a
/// fresh directory of the system's temporary one; removed when dropped.
struct ProbeSocket {
    path: PathBuf,
    #[cfg(unix)]
    _listener: std::os::unix::net::UnixListener,
}

impl ProbeSocket {
    #[cfg(unix)]
    fn open() -> Option<ProbeSocket> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "agora-probe-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).ok()?;
        Some(ProbeSocket {
            path,
            _listener: listener,
        })
    }

    #[cfg(not(unix))]
    fn open() -> Option<ProbeSocket> {
        None
    }
}

impl Drop for ProbeSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
