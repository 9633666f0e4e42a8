//! # agora-host: the provider runtime
//!
//! Runs Agora jobs (WebAssembly components of the `agora:compute` job world)
//! under fuel, memory, stack, output and wall-clock limits, with the `gpu`
//! and `kernels` imports mapped onto a [`gpu::GpuBackend`] (wgpu, or none).
//!
//! Two layers:
//! - [`Runtime`]: one wasmtime engine in this process, a compiled-component
//!   cache keyed by blake3 digest, and one fresh store per job.
//! - [`WorkerPool`]: the supervisor. Untrusted jobs run in worker processes
//!   (each holding a `Runtime`) that it kills on a hard deadline and
//!   replaces, because a GPU that never finishes cannot be stopped
//!   in-process.
//!
//! Errors: loading returns [`LoadError`]; everything that happens while a
//! job runs ends up in its [`RunReport`]'s [`Outcome`], which names the limit
//! that stopped it.

mod bindings;
pub mod blob_cache;
mod clocks;
pub mod gpu;
pub mod limits;
pub mod policy;
pub mod pool;
mod protocol;
pub mod provider;
pub mod report;
mod runtime;
pub mod sandbox;
mod state;
pub mod status;
pub mod worker;

pub use gpu::{AdapterInfo, GpuChoice};
pub use limits::Limits;
pub use pool::{PoolConfig, WorkerPool};
pub use report::{LimitKind, Outcome, RunReport};
pub use runtime::{Digest, LoadError, LoadedComponent, Runtime, RuntimeConfig, digest_of, hex};
pub use sandbox::{SandboxConfig, SandboxReport};
pub use state::{NamedOutputs, SharedBlob, SharedInputs};
