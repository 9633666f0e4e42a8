//! The GPU seam: what a job's GPU calls need from a backend, per job.
//!
//! A [`GpuBackend`] is one device shared by the jobs a worker runs, one after
//! another; a [`GpuSession`] is one job's view of it: its buffers, shaders
//! and quotas. Buffers and shaders are named by ids that are only valid
//! inside their session, so a job cannot name another job's buffers.
//!
//! Backends: [`wgpu_backend`] (Vulkan/Metal/DX12), [`NoGpu`] (every call
//! fails with [`GpuError::Unavailable`]). A CUDA backend for the standard
//! kernels plugs in behind the same two traits.

pub mod wgpu_backend;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Id of a buffer inside one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferId(pub u32);

/// Id of a validated shader inside one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShaderId(pub u32);

/// What a buffer may be bound as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub storage: bool,
    pub uniform: bool,
}

/// The adapter a backend runs on (crosses to the guest and into reports).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

/// Per-job GPU limits, each enforced by the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuQuota {
    /// Bytes of live buffers (guest buffers and the host's temporaries).
    pub buffer_bytes_max: u64,
    /// Dispatches, standard kernels included (a kernel may count more than one).
    pub dispatches_max: u64,
    /// Time spent inside GPU calls, waits for results included.
    #[serde(with = "crate::report::millis")]
    pub gpu_time_max: Duration,
}

/// What a session used, for the run report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuStats {
    pub buffer_bytes_peak: u64,
    pub dispatches: u64,
    #[serde(with = "crate::report::micros")]
    pub gpu_time: Duration,
}

/// Errors of GPU calls. Every refusal names the limit and the numbers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    #[error("no GPU: {0}")]
    Unavailable(String),
    #[error("GPU quota exceeded: {resource} would be {requested}, limit is {limit}")]
    QuotaExceeded { resource: &'static str, requested: u64, limit: u64 },
    #[error("invalid shader: {0}")]
    InvalidShader(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The device is unusable for the rest of the job (and the worker).
    #[error("device lost: {0}")]
    DeviceLost(String),
}

/// The standard kernels a session runs natively (see `agora-kernels`).
#[derive(Debug, Clone, Copy)]
pub enum KernelCall {
    Saxpy { a: f32, x: BufferId, y: BufferId },
    Matmul { m: u32, n: u32, k: u32, a: BufferId, b: BufferId, c: BufferId },
    Sum { input: BufferId, out: BufferId },
}

/// A device that opens one session per job.
pub trait GpuBackend: Send + Sync {
    /// The adapter, or `None` when there is no GPU.
    fn info(&self) -> Option<AdapterInfo>;
    fn open_session(&self, quota: GpuQuota) -> Box<dyn GpuSession>;
}

/// One job's GPU state. Dropping it frees everything the job allocated.
pub trait GpuSession: Send {
    fn create_buffer(&mut self, size: u64, usage: Usage) -> Result<BufferId, GpuError>;
    /// Write `bytes` at `offset` (both multiples of 4).
    fn write(&mut self, buffer: BufferId, offset: u64, bytes: &[u8]) -> Result<(), GpuError>;
    /// Wait for queued work and read `len` bytes at `offset`.
    fn read(&mut self, buffer: BufferId, offset: u64, len: u64) -> Result<Vec<u8>, GpuError>;
    fn size(&self, buffer: BufferId) -> Result<u64, GpuError>;
    fn destroy(&mut self, buffer: BufferId);
    fn compile_wgsl(&mut self, source: &str) -> Result<ShaderId, GpuError>;
    fn destroy_shader(&mut self, shader: ShaderId);
    fn dispatch(
        &mut self,
        shader: ShaderId,
        entry: &str,
        bindings: &[BufferId],
        groups: [u32; 3],
    ) -> Result<(), GpuError>;
    fn kernel(&mut self, call: KernelCall) -> Result<(), GpuError>;
    /// Wait for all queued work (called before the job's result is taken).
    fn finish(&mut self) -> Result<(), GpuError>;
    fn stats(&self) -> GpuStats;
    /// True once the device hung or was lost: the worker must not run
    /// another job on it.
    fn poisoned(&self) -> bool;
}

/// The backend of a host without a GPU: every call is a clear error.
pub struct NoGpu {
    pub reason: String,
}

impl GpuBackend for NoGpu {
    fn info(&self) -> Option<AdapterInfo> {
        None
    }

    fn open_session(&self, _quota: GpuQuota) -> Box<dyn GpuSession> {
        Box::new(NoGpuSession(self.reason.clone()))
    }
}

struct NoGpuSession(String);

impl NoGpuSession {
    fn err<T>(&self) -> Result<T, GpuError> {
        Err(GpuError::Unavailable(self.0.clone()))
    }
}

impl GpuSession for NoGpuSession {
    fn create_buffer(&mut self, _: u64, _: Usage) -> Result<BufferId, GpuError> {
        self.err()
    }
    fn write(&mut self, _: BufferId, _: u64, _: &[u8]) -> Result<(), GpuError> {
        self.err()
    }
    fn read(&mut self, _: BufferId, _: u64, _: u64) -> Result<Vec<u8>, GpuError> {
        self.err()
    }
    fn size(&self, _: BufferId) -> Result<u64, GpuError> {
        self.err()
    }
    fn destroy(&mut self, _: BufferId) {}
    fn compile_wgsl(&mut self, _: &str) -> Result<ShaderId, GpuError> {
        self.err()
    }
    fn destroy_shader(&mut self, _: ShaderId) {}
    fn dispatch(&mut self, _: ShaderId, _: &str, _: &[BufferId], _: [u32; 3]) -> Result<(), GpuError> {
        self.err()
    }
    fn kernel(&mut self, _: KernelCall) -> Result<(), GpuError> {
        self.err()
    }
    fn finish(&mut self) -> Result<(), GpuError> {
        Ok(())
    }
    fn stats(&self) -> GpuStats {
        GpuStats::default()
    }
    fn poisoned(&self) -> bool {
        false
    }
}

/// Which GPU backend a host uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuChoice {
    /// wgpu when an adapter is found, else none.
    #[default]
    Auto,
    /// wgpu, or fail to start.
    Wgpu,
    /// No GPU: GPU calls return `unavailable`.
    None,
}

impl GpuChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuChoice::Auto => "auto",
            GpuChoice::Wgpu => "wgpu",
            GpuChoice::None => "none",
        }
    }
}

impl std::str::FromStr for GpuChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(GpuChoice::Auto),
            "wgpu" => Ok(GpuChoice::Wgpu),
            "none" => Ok(GpuChoice::None),
            other => Err(format!("unknown GPU backend `{other}` (expected auto, wgpu or none)")),
        }
    }
}

/// Open the backend `choice` asks for.
pub fn open(choice: GpuChoice) -> Result<Box<dyn GpuBackend>, GpuError> {
    match choice {
        GpuChoice::None => Ok(Box::new(NoGpu { reason: "the host runs with --gpu none".into() })),
        GpuChoice::Wgpu => Ok(Box::new(wgpu_backend::WgpuBackend::new()?)),
        GpuChoice::Auto => match wgpu_backend::WgpuBackend::new() {
            Ok(backend) => Ok(Box::new(backend)),
            Err(e) => {
                tracing::warn!("no usable wgpu adapter, running without a GPU: {e}");
                Ok(Box::new(NoGpu { reason: format!("no GPU adapter on this host ({e})") }))
            }
        },
    }
}
