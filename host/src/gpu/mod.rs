//! The GPU seam: what a job's GPU calls need from a backend, per job.
//!
//! A [`GpuBackend`] is one device shared by the jobs a worker runs, one after
//! another; a [`GpuSession`] is one job's view of it: its buffers, shaders
//! and quotas. Buffers and shaders are named by ids that are only valid
//! inside their session, so a job cannot name another job's buffers.
//!
//! Backends: [`wgpu_backend`] (Vulkan/Metal/DX12), [`cuda_backend`] (the
//! standard kernels through cuBLAS and NVRTC), [`NoGpu`] (every call fails
//! with [`GpuError::Unavailable`]). [`Routed`] holds CUDA and wgpu side by
//! side and places each job on one of them from what its component imports
//! ([`GpuNeeds`]); [`book`] keeps the per-job limits all of them enforce;
//! [`speed`] is the benchmark a provider reports.

pub(crate) mod book;
pub mod cuda_backend;
pub mod speed;
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
    /// Device memory, where the backend knows it (CUDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// `major.minor` of a CUDA device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
}

/// What a job's component uses of the GPU contract, read from its imports
/// when it is loaded: it decides which backend the job runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuNeeds {
    /// The component imports `shader.wgsl` or `dispatch`: it runs its own
    /// WGSL and needs wgpu. Otherwise it calls only the standard kernels
    /// (or no GPU at all) and may run on CUDA.
    pub wgsl: bool,
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
    QuotaExceeded {
        resource: &'static str,
        requested: u64,
        limit: u64,
    },
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
    Saxpy {
        a: f32,
        x: BufferId,
        y: BufferId,
    },
    Matmul {
        m: u32,
        n: u32,
        k: u32,
        a: BufferId,
        b: BufferId,
        c: BufferId,
    },
    Sum {
        input: BufferId,
        out: BufferId,
    },
}

/// A device that opens one session per job.
pub trait GpuBackend: Send + Sync {
    /// The adapter, or `None` when there is no GPU.
    fn info(&self) -> Option<AdapterInfo>;
    /// Every device jobs may run on (the host reports them all).
    fn devices(&self) -> Vec<AdapterInfo> {
        self.info().into_iter().collect()
    }
    fn open_session(&self, quota: GpuQuota, needs: GpuNeeds) -> Box<dyn GpuSession>;
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
    /// The device this session runs on (`None` without a GPU).
    fn adapter(&self) -> Option<AdapterInfo>;
}

/// The backend of a host without a GPU: every call is a clear error.
pub struct NoGpu {
    pub reason: String,
}

impl GpuBackend for NoGpu {
    fn info(&self) -> Option<AdapterInfo> {
        None
    }

    fn open_session(&self, _quota: GpuQuota, _needs: GpuNeeds) -> Box<dyn GpuSession> {
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
    fn dispatch(
        &mut self,
        _: ShaderId,
        _: &str,
        _: &[BufferId],
        _: [u32; 3],
    ) -> Result<(), GpuError> {
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
    fn adapter(&self) -> Option<AdapterInfo> {
        None
    }
}

/// CUDA beside wgpu on one host: a job that only calls the standard
/// kernels runs on CUDA, a job with its own WGSL on wgpu (or, without a
/// wgpu adapter, gets `unavailable` from its first shader call).
pub struct Routed {
    pub cuda: cuda_backend::CudaBackend,
    pub wgpu: Option<wgpu_backend::WgpuBackend>,
}

impl GpuBackend for Routed {
    fn info(&self) -> Option<AdapterInfo> {
        self.cuda.info()
    }

    fn devices(&self) -> Vec<AdapterInfo> {
        self.cuda
            .info()
            .into_iter()
            .chain(self.wgpu.as_ref().and_then(|w| w.info()))
            .collect()
    }

    fn open_session(&self, quota: GpuQuota, needs: GpuNeeds) -> Box<dyn GpuSession> {
        match (&self.wgpu, needs.wgsl) {
            (Some(wgpu), true) => wgpu.open_session(quota, needs),
            (None, true) => Box::new(NoGpuSession(
                "the job compiles WGSL shaders, and this host has CUDA but no wgpu adapter".into(),
            )),
            (_, false) => self.cuda.open_session(quota, needs),
        }
    }
}

/// Which GPU backend a host uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuChoice {
    /// CUDA for kernel-only jobs where an NVIDIA GPU and its libraries
    /// are found, wgpu for the rest (and for all jobs without CUDA), else none.
    #[default]
    Auto,
    /// wgpu only, or fail to start.
    Wgpu,
    /// CUDA for kernel-only jobs, or fail to start; jobs with their own WGSL
    /// still run on wgpu when an adapter exists.
    Cuda,
    /// No GPU: GPU calls return `unavailable`.
    None,
}

impl GpuChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuChoice::Auto => "auto",
            GpuChoice::Wgpu => "wgpu",
            GpuChoice::Cuda => "cuda",
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
            "cuda" => Ok(GpuChoice::Cuda),
            "none" => Ok(GpuChoice::None),
            other => Err(format!(
                "unknown GPU backend `{other}` (expected auto, wgpu, cuda or none)"
            )),
        }
    }
}

/// Open the backend `choice` asks for.
pub fn open(choice: GpuChoice) -> Result<Box<dyn GpuBackend>, GpuError> {
    match choice {
        GpuChoice::None => Ok(Box::new(NoGpu {
            reason: "the host runs with --gpu none".into(),
        })),
        GpuChoice::Wgpu => Ok(Box::new(wgpu_backend::WgpuBackend::new()?)),
        GpuChoice::Cuda => {
            let cuda = cuda_backend::CudaBackend::new(0)?;
            Ok(Box::new(Routed {
                cuda,
                wgpu: wgpu_backend::WgpuBackend::new().ok(),
            }))
        }
        GpuChoice::Auto => {
            let wgpu = wgpu_backend::WgpuBackend::new();
            match (cuda_backend::CudaBackend::new(0), wgpu) {
                (Ok(cuda), wgpu) => Ok(Box::new(Routed {
                    cuda,
                    wgpu: wgpu.ok(),
                })),
                (Err(no_cuda), Ok(wgpu)) => {
                    tracing::debug!("{no_cuda}");
                    Ok(Box::new(wgpu))
                }
                (Err(no_cuda), Err(e)) => {
                    tracing::warn!("no usable GPU, running without one: {e}; {no_cuda}");
                    Ok(Box::new(NoGpu {
                        reason: format!("no GPU adapter on this host ({e})"),
                    }))
                }
            }
        }
    }
}
