//! The worker's second wall. wasmtime is the first: a guest sees only the
//! job contract. A bug in wasmtime or a GPU driver that lets a guest run
//! code in its worker process would give it whatever the process has, so
//! each worker (the provider's and the market's verify workers) gives up,
//! before any job reaches it, what it does not need — as Chromium's GPU
//! process does:
//!
//! - **network and other processes**: a fresh network namespace (no
//!   interfaces but a loopback that is down) inside a user namespace of its
//!   own, Landlock's TCP rules, and a seccomp filter that refuses every
//!   socket (named Unix sockets included: D-Bus, Docker, an ssh agent), new
//!   processes, signals to other processes and terminal input injection;
//! - **privileges**: no capabilities and `no_new_privs`, even when the
//!   provider runs as root;
//! - **filesystem**: Landlock, read-only on what libraries and the GPU
//!   driver need ([`walls::readable_paths`]), read-write on GPU device nodes
//!   only; no home directory, no key files, no working directory;
//! - **environment**: the supervisor starts the worker with the variables a
//!   GPU driver or the logs need ([`WORKER_ENVIRONMENT`]) and nothing else;
//! - **memory**: everything the worker holds (linear memory, host-side blobs,
//!   GPU read-backs, the runtime itself) is bounded by a cgroup's memory
//!   limit where the supervisor can make one ([`memory`]), else by
//!   `RLIMIT_DATA`;
//!
//! A layer the machine lacks is reported, not fatal: the worker says in its
//! hello which layers stand and proves the important ones by trying to get
//! past them ([`Probe`]); the pool logs that once at start.
//!
//! Everything here is Linux; elsewhere every layer reports "unsupported".

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub mod memory;
#[cfg(target_os = "linux")]
mod walls;

/// The variable through which the supervisor hands a worker its
/// [`WorkerSandbox`] settings (JSON).
pub const SETTINGS_VAR: &str = "AGORA_WORKER_SANDBOX";

/// The only environment variables a worker inherits: what the dynamic
/// loader, the GPU drivers and the logs read. Secrets a provider keeps in
/// its environment (tokens, key paths, cloud credentials) stay out.
pub const WORKER_ENVIRONMENT: &[&str] = &[
    "PATH",
    "LD_LIBRARY_PATH",
    "VK_ICD_FILENAMES",
    "VK_DRIVER_FILES",
    "VK_ADD_DRIVER_FILES",
    "WGPU_BACKEND",
    "WGPU_ADAPTER_NAME",
    "CUDA_VISIBLE_DEVICES",
    "LP_NUM_THREADS",
    "AGORA_LOG",
    "RUST_BACKTRACE",
];

/// Set in every worker: Mesa's on-disk shader cache would be a channel
/// between tenants (one job timing another's compiles) and the worker
/// cannot write it anyway; so would CUDA's JIT cache in the home directory,
/// and the NVIDIA driver's own shader disk cache.
pub const WORKER_FIXED_ENVIRONMENT: &[(&str, &str)] = &[
    ("MESA_SHADER_CACHE_DISABLE", "true"),
    ("CUDA_CACHE_DISABLE", "1"),
    ("__GL_SHADER_DISK_CACHE", "0"),
];

/// A wall of the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// A network namespace of its own.
    NetworkNamespace,
    /// Landlock: files, TCP, abstract sockets and signals.
    Landlock,
    /// seccomp: sockets other than Unix ones, and the syscalls that reach
    /// other processes or the kernel's attack surface.
    Seccomp,
    /// Only [`WORKER_ENVIRONMENT`] inherited.
    Environment,
    /// The worker's whole memory bounded.
    Memory,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Every capability dropped.
    Capabilities,
}

/// Whether a layer stands, and how or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerState {
    pub layer: Layer,
    pub applied: bool,
    pub detail: String,
}

/// What a worker tried to do from inside its sandbox to check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attempt {
    /// Read a file outside the allowed set (the provider's key file).
    ReadFile,
    /// List the supervisor's working directory.
    ListWorkingDirectory,
    /// Connect to a TCP listener the supervisor opened on loopback.
    ConnectLoopback,
    /// Connect to a named Unix socket the supervisor listens on.
    ConnectUnixSocket,
    /// Read the supervisor's environment through `/proc`.
    ReadParentEnvironment,
}

/// One attempt and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub attempt: Attempt,
    /// The attempt failed, as it must.
    pub refused: bool,
    /// The error it met, or what it got through to.
    pub detail: String,
}

/// The sandbox of one worker, as it reports it in its hello (the pool adds
/// the memory layer, which it applies from outside).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    pub layers: Vec<LayerState>,
    pub probes: Vec<Probe>,
}

impl SandboxReport {
    pub fn layer(&self, layer: Layer) -> Option<&LayerState> {
        self.layers.iter().find(|l| l.layer == layer)
    }

    pub fn applied(&self, layer: Layer) -> bool {
        self.layer(layer).is_some_and(|l| l.applied)
    }

    /// Attempts that got through.
    pub fn escapes(&self) -> impl Iterator<Item = &Probe> {
        self.probes.iter().filter(|p| !p.refused)
    }

    /// The names of the layers that stand (`applied`) or are missing.
    fn names(&self, applied: bool) -> Vec<String> {
        self.layers
            .iter()
            .filter(|l| l.applied == applied)
            .map(|l| format!("{:?}", l.layer))
            .collect()
    }

    /// The layers that stand, in one line, and those missing.
    pub fn summary(&self) -> String {
        let (standing, missing) = (self.names(true), self.names(false));
        match missing.is_empty() {
            true => standing.join(", "),
            false => format!("{} (without {})", standing.join(", "), missing.join(", ")),
        }
    }

    /// Say once which layers stand: each missing one is a warning the
    /// provider can act on (a newer kernel, cgroup delegation).
    pub fn log(&self) {
        tracing::info!("worker sandbox: {}", self.names(true).join(", "));
        for layer in self.layers.iter().filter(|l| !l.applied) {
            tracing::warn!(
                "worker sandbox: running without {:?}: {}",
                layer.layer,
                layer.detail
            );
        }
    }
}

/// How the supervisor sandboxes its workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Bytes one worker process may hold in all.
    pub memory_bytes: u64,
    /// A file no worker may read, tried at start (the provider's key file).
    pub probe_file: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_bytes: crate::limits::WORKER_MEMORY_BYTES,
            probe_file: None,
        }
    }
}

/// What the supervisor tells a worker, through [`SETTINGS_VAR`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerSandbox {
    /// Set when no cgroup bounds the worker: the worker bounds its data
    /// segment itself.
    pub memory_rlimit: Option<u64>,
    pub probe_file: Option<PathBuf>,
    /// The supervisor's working directory, listed as a probe.
    pub probe_directory: Option<PathBuf>,
    /// A loopback port the supervisor listens on, connected to as a probe.
    pub probe_port: Option<u16>,
    /// A Unix socket the supervisor listens on, connected to as a probe.
    pub probe_socket: Option<PathBuf>,
}

/// Enter the sandbox: called first thing in the worker, while it has one
/// thread (a user namespace and Landlock need that), before it opens its GPU.
/// Returns the report for the hello; without settings (a worker started by
/// hand) the walls still go up.
pub fn enter() -> SandboxReport {
    let settings: WorkerSandbox = std::env::var(SETTINGS_VAR)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let mut report = SandboxReport::default();
    report.layers.push(environment_state());
    #[cfg(target_os = "linux")]
    walls::raise(&settings, &mut report);
    #[cfg(not(target_os = "linux"))]
    for layer in [
        Layer::NetworkNamespace,
        Layer::Capabilities,
        Layer::Landlock,
        Layer::Seccomp,
        Layer::NoNewPrivs,
    ] {
        report.layers.push(LayerState {
            layer,
            applied: false,
            detail: "unsupported on this OS".into(),
        });
    }
    report.probes = probes(&settings);
    report
}

fn environment_state() -> LayerState {
    let foreign: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| !inherited(k))
        .collect();
    LayerState {
        layer: Layer::Environment,
        applied: foreign.is_empty(),
        detail: if foreign.is_empty() {
            "only the GPU driver's and the logs' variables".into()
        } else {
            format!("started with other variables: {}", foreign.join(", "))
        },
    }
}

/// Whether a worker may inherit the variable `name`.
pub fn inherited(name: &str) -> bool {
    name == SETTINGS_VAR
        || WORKER_ENVIRONMENT.contains(&name)
        || WORKER_FIXED_ENVIRONMENT.iter().any(|(k, _)| *k == name)
}

/// What workers may read, resolved as the kernel sees it (none where there
/// are no walls).
fn readable() -> Vec<PathBuf> {
    #[cfg(target_os = "linux")]
    return walls::readable_paths()
        .into_iter()
        .map(|r| r.canonicalize().unwrap_or(r))
        .collect();
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Whether `path` lies beneath one of the `readable` paths.
fn permitted(path: &std::path::Path, readable: &[PathBuf]) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    readable.iter().any(|r| path.starts_with(r))
}

/// Try to get past the walls; each attempt must fail.
fn probes(settings: &WorkerSandbox) -> Vec<Probe> {
    let mut probes = Vec::new();
    let readable = readable();
    let mut record = |attempt, result: Result<String, String>| {
        let refused = result.is_err();
        let detail = result.unwrap_or_else(|e| e);
        probes.push(Probe {
            attempt,
            refused,
            detail,
        });
    };
    if let Some(file) = &settings.probe_file {
        // A key inside what workers may read is readable, whatever happens
        // to be in it now.
        let read = match permitted(file, &readable) {
            true => Ok(format!(
                "{} lies inside what workers may read",
                file.display()
            )),
            false => std::fs::read(file)
                .map(|b| format!("read {} bytes of {}", b.len(), file.display()))
                .map_err(|e| e.to_string()),
        };
        record(Attempt::ReadFile, read);
    }
    // A working directory inside the readable set (a checkout under /usr)
    // holds nothing secret: no probe.
    if let Some(dir) = settings
        .probe_directory
        .as_ref()
        .filter(|d| !permitted(d, &readable))
    {
        record(
            Attempt::ListWorkingDirectory,
            std::fs::read_dir(dir)
                .map(|_| format!("listed {}", dir.display()))
                .map_err(|e| e.to_string()),
        );
    }
    if let Some(port) = settings.probe_port {
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        record(
            Attempt::ConnectLoopback,
            std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(2))
                .map(|_| format!("connected to {to}"))
                .map_err(|e| e.to_string()),
        );
    }
    #[cfg(unix)]
    if let Some(socket) = &settings.probe_socket {
        record(
            Attempt::ConnectUnixSocket,
            std::os::unix::net::UnixStream::connect(socket)
                .map(|_| format!("connected to {}", socket.display()))
                .map_err(|e| e.to_string()),
        );
    }
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        let path = format!("/proc/{parent}/environ");
        record(
            Attempt::ReadParentEnvironment,
            std::fs::read(&path)
                .map(|b| format!("read {} bytes of {path}", b.len()))
                .map_err(|e| e.to_string()),
        );
    }
    probes
}
