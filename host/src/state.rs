//! One job's store data and the host side of the `agora:compute` imports:
//! blobs, GPU buffers and shaders as resources, logs and progress.
//!
//! Every handle a guest holds lives in this store's resource table and names
//! an id inside this job's GPU session: there is no way to reach another
//! job's data.

use crate::bindings::agora::compute::{data, gpu, kernels, progress};
use crate::gpu::{AdapterInfo, BufferId, GpuError, GpuSession, KernelCall, ShaderId, Usage};
use crate::limits::{self, Limits};
use crate::report::{LimitKind, LiveObserver, LiveUpdate, LogLine};
use crate::runtime::log_line;
use std::sync::Arc;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, format_err};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Host-side bytes behind a `blob` handle: the job's own, or one of its
/// shared inputs, held once for every unit and never copied for a handle.
pub enum BlobData {
    Own(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for BlobData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            BlobData::Own(bytes) => bytes,
            BlobData::Shared(bytes) => bytes,
        }
    }
}

/// One shared input: its digest (what workers keep it by) and its bytes,
/// which match it (made only by hashing, or from the provider's checked
/// cache): a worker keeps bytes by this digest for later jobs.
#[derive(Clone, Debug)]
pub struct SharedBlob {
    pub(crate) digest: String,
    pub(crate) bytes: Arc<[u8]>,
}

impl SharedBlob {
    /// `bytes`, hashed here.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        SharedBlob {
            digest: blake3::hash(&bytes).to_hex().to_string(),
            bytes,
        }
    }

    /// Bytes the caller checked against `digest` already (a provider's cache).
    pub(crate) fn checked(digest: String, bytes: Arc<[u8]>) -> Self {
        SharedBlob { digest, bytes }
    }
}

/// A job's shared inputs by name (`data.shared`): the same bytes for every
/// unit of the job.
pub type SharedInputs = std::collections::BTreeMap<String, SharedBlob>;
/// A unit's named outputs (`data.output`) by name: those a run added, or
/// those a checked result carries when `verify` runs.
pub type NamedOutputs = std::collections::BTreeMap<String, Arc<[u8]>>;

/// A `buffer` handle: an id in the job's GPU session.
pub struct BufferHandle(BufferId);
/// A `shader` handle: an id in the job's GPU session.
pub struct ShaderHandle(ShaderId);

pub struct JobState {
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    pub(crate) limiter: JobLimiter,
    pub(crate) gpu: Box<dyn GpuSession>,
    adapter: Option<AdapterInfo>,
    pub(crate) instance: Option<wasmtime::component::Instance>,
    pub(crate) progress: Option<(u64, u64)>,
    limits: Limits,
    /// The job's shared inputs.
    shared: SharedInputs,
    /// The named outputs: added by a run, or a checked result's.
    outputs: NamedOutputs,
    /// Whether `data.output` keeps what it is given (a run; not `verify`).
    keeps_outputs: bool,
    /// The named outputs `verify` read (`data.named-output`).
    outputs_read: std::collections::BTreeSet<String>,
    blob_bytes: u64,
    logs: Vec<LogLine>,
    logs_dropped: u64,
    /// Bytes of the lines kept ([`limits::MAX_LOG_BYTES`]).
    log_bytes: usize,
    /// Who hears about progress and logs while the job runs.
    live: Option<LiveObserver>,
    /// Log lines already sent live, and when the last update went.
    live_sent: usize,
    live_at: Option<std::time::Instant>,
}

impl JobState {
    pub(crate) fn new(
        gpu: Box<dyn GpuSession>,
        adapter: Option<AdapterInfo>,
        limits: Limits,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(limits::MAX_STDIO_BYTES);
        let stderr = MemoryOutputPipe::new(limits::MAX_STDIO_BYTES);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(crate::clocks::CoarseWallClock)
            .monotonic_clock(crate::clocks::CoarseMonotonicClock::new())
            .build();
        JobState {
            wasi,
            table: ResourceTable::new(),
            stdout,
            stderr,
            limiter: JobLimiter::new(limits.memory_bytes),
            gpu,
            adapter,
            instance: None,
            progress: None,
            limits,
            shared: SharedInputs::new(),
            outputs: NamedOutputs::new(),
            keeps_outputs: true,
            outputs_read: Default::default(),
            blob_bytes: 0,
            logs: Vec::new(),
            logs_dropped: 0,
            log_bytes: 0,
            live: None,
            live_sent: 0,
            live_at: None,
        }
    }

    pub(crate) fn set_live(&mut self, live: Option<LiveObserver>) {
        self.live = live;
    }

    pub(crate) fn set_shared(&mut self, shared: SharedInputs) {
        self.shared = shared;
    }

    /// For `verify`: the checked result's named outputs, and nothing the
    /// guest adds is kept.
    pub(crate) fn set_checked_outputs(&mut self, outputs: NamedOutputs) {
        self.outputs = outputs;
        self.keeps_outputs = false;
    }

    /// Whether a checked result has a named output `verify` never read:
    /// a verdict on it would pass bytes nobody checked.
    pub(crate) fn left_outputs_unread(&self) -> bool {
        self.outputs
            .keys()
            .any(|name| !self.outputs_read.contains(name))
    }

    /// The named outputs a run added.
    pub(crate) fn take_outputs(&mut self) -> NamedOutputs {
        std::mem::take(&mut self.outputs)
    }

    /// `data.output`: keep `blob`'s bytes as output `name`, within
    /// [`agora_wire::limits::MAX_NAMED_OUTPUTS`] and the unit's output bytes.
    fn add_output(
        &mut self,
        name: String,
        blob: &Resource<BlobData>,
    ) -> Result<(), data::OutputError> {
        use agora_wire::limits::{MAX_NAMED_OUTPUTS, is_output_name};
        if !is_output_name(&name) {
            let shown = crate::runtime::truncated(name, limits::MAX_ERROR_MESSAGE_BYTES);
            return Err(data::OutputError::InvalidName(shown));
        }
        if self.outputs.contains_key(&name) {
            return Err(data::OutputError::Duplicate(name));
        }
        if self.outputs.len() >= MAX_NAMED_OUTPUTS {
            return Err(data::OutputError::QuotaExceeded(data::Quota {
                resource: "named outputs".into(),
                requested: self.outputs.len() as u64 + 1,
                limit: MAX_NAMED_OUTPUTS as u64,
            }));
        }
        let held: u64 = self.outputs.values().map(|b| b.len() as u64).sum();
        let requested = held + self.blob(blob).len() as u64;
        if requested > self.limits.output_bytes {
            return Err(data::OutputError::QuotaExceeded(data::Quota {
                resource: "output bytes".into(),
                requested,
                limit: self.limits.output_bytes,
            }));
        }
        if !self.keeps_outputs {
            return Ok(());
        }
        // A shared input's bytes are shared again; the job's own are copied.
        let bytes: Arc<[u8]> = match self.table.get(blob) {
            Ok(BlobData::Shared(bytes)) => bytes.clone(),
            Ok(BlobData::Own(bytes)) => Arc::from(bytes.as_slice()),
            Err(_) => Arc::from(&[][..]),
        };
        self.outputs.insert(name, bytes);
        Ok(())
    }

    /// Send what is new to the live observer, unless one went out less than
    /// [`limits::LIVE_UPDATE_INTERVAL`] ago. What is held back reaches the
    /// observer's owner in the final report.
    fn send_live(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if self
            .live_at
            .is_some_and(|at| at.elapsed() < limits::LIVE_UPDATE_INTERVAL)
        {
            return;
        }
        self.live_at = Some(std::time::Instant::now());
        let logs = self.logs[self.live_sent..].to_vec();
        self.live_sent = self.logs.len();
        live(LiveUpdate {
            progress: self.progress,
            logs,
        });
    }

    pub(crate) fn push_blob(&mut self, bytes: Vec<u8>) -> Resource<BlobData> {
        self.table
            .push(BlobData::Own(bytes))
            .expect("the resource table has room for the input")
    }

    pub(crate) fn take_blob(&mut self, blob: Resource<BlobData>) -> Vec<u8> {
        match self.table.delete(blob) {
            Ok(BlobData::Own(bytes)) => bytes,
            // A shared input returned as the output is copied once, here.
            Ok(BlobData::Shared(bytes)) => bytes.to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// The job's log lines, then its stdout and stderr as lines.
    pub(crate) fn take_logs(&mut self) -> Vec<LogLine> {
        let mut logs = std::mem::take(&mut self.logs);
        for (level, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let text = String::from_utf8_lossy(&pipe.contents()).into_owned();
            for line in text.lines().take(limits::MAX_LOG_LINES) {
                logs.push(log_line(level, line.to_string()));
            }
        }
        if self.logs_dropped > 0 {
            logs.push(log_line(
                "warn",
                format!(
                    "{} log lines dropped (MAX_LOG_LINES, MAX_LOG_BYTES)",
                    self.logs_dropped
                ),
            ));
        }
        logs
    }

    fn blob(&self, blob: &Resource<BlobData>) -> &[u8] {
        self.table.get(blob).expect("wasmtime checked the handle")
    }

    fn buffer(&self, buffer: &Resource<BufferHandle>) -> BufferId {
        self.table
            .get(buffer)
            .expect("wasmtime checked the handle")
            .0
    }

    fn new_blob(&mut self, bytes: Vec<u8>) -> Result<Resource<BlobData>, data::Quota> {
        let requested = self.blob_bytes + bytes.len() as u64;
        if requested > self.limits.blob_bytes {
            return Err(data::Quota {
                resource: "host blob bytes".into(),
                requested,
                limit: self.limits.blob_bytes,
            });
        }
        self.blob_bytes = requested;
        Ok(self.push_blob(bytes))
    }

    fn new_buffer(
        &mut self,
        size: u64,
        usage: gpu::BufferUsage,
    ) -> Result<Resource<BufferHandle>, GpuError> {
        let usage = Usage {
            storage: usage.contains(gpu::BufferUsage::STORAGE),
            uniform: usage.contains(gpu::BufferUsage::UNIFORM),
        };
        let id = self.gpu.create_buffer(size, usage)?;
        Ok(self
            .table
            .push(BufferHandle(id))
            .expect("handle count is capped by the store"))
    }

    /// Create a buffer and fill it, freeing it again if the fill fails.
    fn filled_buffer(
        &mut self,
        bytes: Option<&[u8]>,
        size: u64,
        usage: gpu::BufferUsage,
    ) -> Result<Resource<BufferHandle>, GpuError> {
        let handle = self.new_buffer(size, usage)?;
        if let Some(bytes) = bytes {
            let id = self.buffer(&handle);
            if let Err(e) = self.gpu.write(id, 0, bytes) {
                self.gpu.destroy(id);
                let _ = self.table.delete(handle);
                return Err(e);
            }
        }
        Ok(handle)
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Bounds linear memory and tables, and remembers which bound a guest hit.
pub(crate) struct JobLimiter {
    memory_max: u64,
    memory_bytes: u64,
    pub(crate) peak_memory_bytes: u64,
    pub(crate) hit: Option<(LimitKind, String)>,
}

impl JobLimiter {
    fn new(memory_max: u64) -> Self {
        JobLimiter {
            memory_max,
            memory_bytes: 0,
            peak_memory_bytes: 0,
            hit: None,
        }
    }

    fn refuse(&mut self, limit: LimitKind, message: String) -> wasmtime::Result<bool> {
        self.hit = Some((limit, message.clone()));
        Err(format_err!("{message}"))
    }
}

impl ResourceLimiter for JobLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_bytes - current as u64 + desired as u64;
        if total > self.memory_max {
            return self.refuse(
                LimitKind::Memory,
                format!(
                    "linear memory would grow to {total} bytes, the limit is {} (max-memory-size)",
                    self.memory_max
                ),
            );
        }
        self.memory_bytes = total;
        self.peak_memory_bytes = self.peak_memory_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > limits::MAX_TABLE_ELEMENTS {
            return self.refuse(
                LimitKind::Table,
                format!(
                    "a table would grow to {desired} elements, the limit is {}",
                    limits::MAX_TABLE_ELEMENTS
                ),
            );
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        limits::MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        limits::MAX_TABLES
    }

    fn memories(&self) -> usize {
        limits::MAX_MEMORIES
    }
}

impl From<GpuError> for gpu::GpuError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::Unavailable(m) => gpu::GpuError::Unavailable(m),
            GpuError::QuotaExceeded {
                resource,
                requested,
                limit,
            } => gpu::GpuError::QuotaExceeded(data::Quota {
                resource: resource.into(),
                requested,
                limit,
            }),
            GpuError::InvalidShader(m) => gpu::GpuError::InvalidShader(m),
            GpuError::InvalidArgument(m) => gpu::GpuError::InvalidArgument(m),
            GpuError::DeviceLost(m) => gpu::GpuError::DeviceLost(m),
        }
    }
}

fn range_error(offset: u64, len: u64, size: u64) -> data::DataError {
    data::DataError::OutOfRange(data::RangeError { offset, len, size })
}

/// `[offset, offset + len)` inside `size`, as a slice range.
fn checked_range(offset: u64, len: u64, size: u64) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= size).then_some(offset as usize..end as usize)
}

impl data::Host for JobState {
    fn shared(&mut self, name: String) -> Option<Resource<BlobData>> {
        let bytes = self.shared.get(&name)?.bytes.clone();
        // A handle per call, over the same bytes; the store caps handles.
        Some(
            self.table
                .push(BlobData::Shared(bytes))
                .expect("the resource table has room"),
        )
    }

    fn output(&mut self, name: String, value: Resource<BlobData>) -> Result<(), data::OutputError> {
        self.add_output(name, &value)
    }

    fn named_output(&mut self, name: String) -> Option<Resource<BlobData>> {
        let bytes = self.outputs.get(&name)?.clone();
        self.outputs_read.insert(name);
        Some(
            self.table
                .push(BlobData::Shared(bytes))
                .expect("the resource table has room"),
        )
    }
}

impl data::HostBlob for JobState {
    fn from_bytes(&mut self, bytes: Vec<u8>) -> Result<Resource<BlobData>, data::DataError> {
        self.new_blob(bytes).map_err(data::DataError::QuotaExceeded)
    }

    fn len(&mut self, blob: Resource<BlobData>) -> u64 {
        self.blob(&blob).len() as u64
    }

    fn read(
        &mut self,
        blob: Resource<BlobData>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, data::DataError> {
        let bytes = self.blob(&blob);
        let range = checked_range(offset, len, bytes.len() as u64)
            .ok_or_else(|| range_error(offset, len, bytes.len() as u64))?;
        // Bytes to the guest land in its linear memory, which the memory
        // limit bounds; refuse early rather than trap in the lowering.
        if len > self.limits.memory_bytes {
            return Err(data::DataError::QuotaExceeded(data::Quota {
                resource: "bytes read into linear memory".into(),
                requested: len,
                limit: self.limits.memory_bytes,
            }));
        }
        Ok(bytes[range].to_vec())
    }

    fn drop(&mut self, blob: Resource<BlobData>) -> wasmtime::Result<()> {
        self.table.delete(blob)?;
        Ok(())
    }
}

impl gpu::Host for JobState {
    fn dispatch(
        &mut self,
        shader: Resource<ShaderHandle>,
        entry: String,
        bindings: Vec<Resource<BufferHandle>>,
        groups: (u32, u32, u32),
    ) -> Result<(), gpu::GpuError> {
        let shader = self
            .table
            .get(&shader)
            .expect("wasmtime checked the handle")
            .0;
        let ids: Vec<BufferId> = bindings.iter().map(|b| self.buffer(b)).collect();
        Ok(self
            .gpu
            .dispatch(shader, &entry, &ids, [groups.0, groups.1, groups.2])?)
    }

    fn info(&mut self) -> Option<gpu::AdapterInfo> {
        self.adapter.clone().map(|a| gpu::AdapterInfo {
            name: a.name,
            backend: a.backend,
            device_type: a.device_type,
            driver: a.driver,
        })
    }
}

impl gpu::HostBuffer for JobState {
    fn create(
        &mut self,
        size: u64,
        usage: gpu::BufferUsage,
    ) -> Result<Resource<BufferHandle>, gpu::GpuError> {
        Ok(self.filled_buffer(None, size, usage)?)
    }

    fn from_bytes(
        &mut self,
        bytes: Vec<u8>,
        usage: gpu::BufferUsage,
    ) -> Result<Resource<BufferHandle>, gpu::GpuError> {
        Ok(self.filled_buffer(Some(&bytes), bytes.len() as u64, usage)?)
    }

    fn from_blob(
        &mut self,
        src: Resource<BlobData>,
        offset: u64,
        len: u64,
        usage: gpu::BufferUsage,
    ) -> Result<Resource<BufferHandle>, gpu::GpuError> {
        let size = self.blob(&src).len() as u64;
        let range = checked_range(offset, len, size).ok_or_else(|| {
            gpu::GpuError::InvalidArgument(format!(
                "range {offset}+{len} is outside the blob of {size} bytes"
            ))
        })?;
        // Take the bytes out of the table for the write and put them back, so
        // the copy goes from host memory straight to the GPU queue.
        let slot = self
            .table
            .get_mut(&src)
            .expect("wasmtime checked the handle");
        let blob = std::mem::replace(slot, BlobData::Own(Vec::new()));
        let result = self.filled_buffer(Some(&blob[range]), len, usage);
        *self
            .table
            .get_mut(&src)
            .expect("wasmtime checked the handle") = blob;
        Ok(result?)
    }

    fn size(&mut self, buffer: Resource<BufferHandle>) -> u64 {
        let id = self.buffer(&buffer);
        self.gpu.size(id).unwrap_or(0)
    }

    fn write(
        &mut self,
        buffer: Resource<BufferHandle>,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<(), gpu::GpuError> {
        let id = self.buffer(&buffer);
        Ok(self.gpu.write(id, offset, &bytes)?)
    }

    fn read(
        &mut self,
        buffer: Resource<BufferHandle>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, gpu::GpuError> {
        if len > self.limits.memory_bytes {
            return Err(gpu::GpuError::InvalidArgument(format!(
                "a read of {len} bytes cannot fit the job's {} bytes of memory; use to-blob",
                self.limits.memory_bytes
            )));
        }
        let id = self.buffer(&buffer);
        Ok(self.gpu.read(id, offset, len)?)
    }

    fn to_blob(
        &mut self,
        buffer: Resource<BufferHandle>,
    ) -> Result<Resource<BlobData>, gpu::GpuError> {
        let id = self.buffer(&buffer);
        let size = self.gpu.size(id)?;
        let bytes = self.gpu.read(id, 0, size)?;
        self.new_blob(bytes).map_err(gpu::GpuError::QuotaExceeded)
    }

    fn drop(&mut self, buffer: Resource<BufferHandle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(buffer)?;
        self.gpu.destroy(handle.0);
        Ok(())
    }
}

impl gpu::HostShader for JobState {
    fn wgsl(&mut self, source: String) -> Result<Resource<ShaderHandle>, gpu::GpuError> {
        let id = self.gpu.compile_wgsl(&source)?;
        Ok(self
            .table
            .push(ShaderHandle(id))
            .expect("handle count is capped by the store"))
    }

    fn drop(&mut self, shader: Resource<ShaderHandle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(shader)?;
        self.gpu.destroy_shader(handle.0);
        Ok(())
    }
}

impl kernels::Host for JobState {
    fn saxpy(
        &mut self,
        a: f32,
        x: Resource<BufferHandle>,
        y: Resource<BufferHandle>,
    ) -> Result<(), gpu::GpuError> {
        let call = KernelCall::Saxpy {
            a,
            x: self.buffer(&x),
            y: self.buffer(&y),
        };
        Ok(self.gpu.kernel(call)?)
    }

    fn matmul(
        &mut self,
        m: u32,
        n: u32,
        k: u32,
        a: Resource<BufferHandle>,
        b: Resource<BufferHandle>,
        c: Resource<BufferHandle>,
    ) -> Result<(), gpu::GpuError> {
        let call = KernelCall::Matmul {
            m,
            n,
            k,
            a: self.buffer(&a),
            b: self.buffer(&b),
            c: self.buffer(&c),
        };
        Ok(self.gpu.kernel(call)?)
    }

    fn sum(
        &mut self,
        input: Resource<BufferHandle>,
        out: Resource<BufferHandle>,
    ) -> Result<(), gpu::GpuError> {
        let call = KernelCall::Sum {
            input: self.buffer(&input),
            out: self.buffer(&out),
        };
        Ok(self.gpu.kernel(call)?)
    }
}

impl progress::Host for JobState {
    fn log(&mut self, level: progress::Level, message: String) {
        let kept = message.len().min(limits::MAX_LOG_LINE_BYTES);
        if self.logs.len() >= limits::MAX_LOG_LINES || self.log_bytes + kept > limits::MAX_LOG_BYTES
        {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += kept;
        let level = match level {
            progress::Level::Trace => "trace",
            progress::Level::Debug => "debug",
            progress::Level::Info => "info",
            progress::Level::Warn => "warn",
            progress::Level::Error => "error",
        };
        self.logs.push(log_line(level, message));
        self.send_live();
    }

    fn report(&mut self, done: u64, total: u64) {
        self.progress = Some((done, total));
        self.send_live();
    }
}
