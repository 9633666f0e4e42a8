//! The wgpu backend: headless compute on Vulkan, Metal or DX12.
//!
//! Design choices:
//! - WGSL is parsed and validated by naga before wgpu sees it, so a bad
//!   shader is a readable [`GpuError::InvalidShader`] and the shader's
//!   bindings are known (the host checks what the guest binds against them).
//! - Every wgpu call that can fail validation runs inside an error scope:
//!   wgpu's default handler would panic the process.
//! - A guest's shader modules and pipelines are cached by the blake3 digest
//!   of the source for its session only: a shader's source may be made from
//!   its job's data, so no job may time whether another compiled one, and
//!   the cache ends with the job. The standard kernels' (our sources, a
//!   fixed set) are cached for the life of the device. Buffers are per
//!   session and zero-initialized by wgpu, so no job sees another's data.
//! - Dispatches are queued without waiting; reads wait, with a timeout taken
//!   from the job's GPU time quota. A wait that times out poisons the device
//!   (a shader that never ends cannot be cancelled in-process): the worker
//!   is then killed and replaced by its supervisor.

use super::book::{self, SessionBook};
use super::{
    AdapterInfo, BufferId, GpuBackend, GpuError, GpuQuota, GpuSession, GpuStats, KernelCall,
    ShaderId, Usage,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a readback waits, after its poll saw the queue empty, for its
/// mapping's callback that another session's poll on the shared device is
/// delivering (a bound, not a cost: it ends as the callback comes).
const MAP_CALLBACK_GRACE: Duration = Duration::from_secs(1);

type SourceDigest = [u8; 32];

pub struct WgpuBackend {
    shared: Arc<Shared>,
}

struct Shared {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    limits: wgpu::Limits,
    /// The standard kernels' modules and pipelines (see the module's note).
    kernels: Mutex<HashMap<SourceDigest, Arc<CompiledShader>>>,
    kernel_pipelines: Mutex<Pipelines>,
    /// Shader modules made on this device, kernels' and guests' together.
    modules_made: std::sync::atomic::AtomicU64,
    lost: AtomicBool,
}

/// Pipelines by module digest and entry point.
type Pipelines = HashMap<(SourceDigest, String), wgpu::ComputePipeline>;

/// A validated module and, per entry point, the bindings it uses.
struct CompiledShader {
    digest: SourceDigest,
    /// A standard kernel's, cached for the device.
    trusted: bool,
    module: wgpu::ShaderModule,
    entries: HashMap<String, Vec<Slot>>,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    binding: u32,
    uniform: bool,
}

impl WgpuBackend {
    /// Open the highest-performance adapter wgpu finds (`WGPU_BACKEND`
    /// narrows the search, as in wgpu's examples).
    pub fn new() -> Result<Self, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        }))
        .map_err(|e| GpuError::Unavailable(format!("no wgpu adapter: {e}")))?;
        let raw = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("agora-job-device"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Unavailable(format!("wgpu device request failed: {e}")))?;
        let info = AdapterInfo {
            name: raw.name.clone(),
            backend: raw.backend.to_string(),
            device_type: match raw.device_type {
                wgpu::DeviceType::DiscreteGpu => "discrete-gpu",
                wgpu::DeviceType::IntegratedGpu => "integrated-gpu",
                wgpu::DeviceType::VirtualGpu => "virtual-gpu",
                wgpu::DeviceType::Cpu => "cpu",
                wgpu::DeviceType::Other => "other",
            }
            .into(),
            driver: format!("{} {}", raw.driver, raw.driver_info)
                .trim()
                .to_string(),
            memory_bytes: None,
            compute_capability: None,
        };
        let shared = Arc::new(Shared {
            device,
            queue,
            info,
            limits,
            kernels: Mutex::default(),
            kernel_pipelines: Mutex::default(),
            modules_made: Default::default(),
            lost: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&shared);
        shared
            .device
            .set_device_lost_callback(move |reason, message| {
                tracing::error!(?reason, %message, "GPU device lost");
                if let Some(shared) = weak.upgrade() {
                    shared.lost.store(true, Ordering::SeqCst);
                }
            });
        // Errors outside a scope (there should be none) are logged, never a panic.
        shared
            .device
            .on_uncaptured_error(Arc::new(|e: wgpu::Error| {
                tracing::error!("uncaptured wgpu error: {e}");
            }));
        tracing::info!(adapter = %shared.info.name, backend = %shared.info.backend, "wgpu device ready");
        Ok(WgpuBackend { shared })
    }

    /// Shader modules made on this device so far: what the caches saved
    /// (or, across jobs, did not share) shows here.
    pub fn modules_made(&self) -> u64 {
        self.shared.modules_made.load(Ordering::Relaxed)
    }
}

impl GpuBackend for WgpuBackend {
    fn info(&self) -> Option<AdapterInfo> {
        Some(self.shared.info.clone())
    }

    fn open_session(&self, quota: GpuQuota, _needs: super::GpuNeeds) -> Box<dyn GpuSession> {
        Box::new(WgpuSession {
            shared: self.shared.clone(),
            book: SessionBook::new(quota),
            buffers: HashMap::new(),
            shaders: HashMap::new(),
            compiled: HashMap::new(),
            pipelines: Mutex::default(),
            next_id: 1,
            poisoned: self.shared.lost.load(Ordering::SeqCst),
        })
    }
}

impl Shared {
    /// A standard kernel's module, compiled once for the device.
    fn kernel(&self, source: &str) -> Result<Arc<CompiledShader>, GpuError> {
        let digest = *blake3::Hasher::new()
            .update(b"agora trusted standard kernel\0")
            .update(source.as_bytes())
            .finalize()
            .as_bytes();
        if let Some(s) = self.kernels.lock().expect("kernel cache lock").get(&digest) {
            return Ok(s.clone());
        }
        let compiled = Arc::new(self.compile(source, digest, true)?);
        self.kernels
            .lock()
            .expect("kernel cache lock")
            .insert(digest, compiled.clone());
        Ok(compiled)
    }

    /// Parse and validate `source` with naga, then create the module.
    ///
    /// `trusted` is for the standard kernels alone: their sources are ours,
    /// every index they compute is guarded by the sizes the host checked
    /// before the dispatch, so wgpu's injected bounds checks are dropped
    /// (they cost several times the kernel's time on NVIDIA's compiler).
    /// A guest's shader is always checked, even when its source is a
    /// standard kernel's: the cache key tells the two apart.
    /// (`digest` names it in the caches: a trusted kernel's is domain
    /// separated from any guest's.)
    fn compile(
        &self,
        source: &str,
        digest: SourceDigest,
        trusted: bool,
    ) -> Result<CompiledShader, GpuError> {
        let module = naga::front::wgsl::parse_str(source)
            .map_err(|e| GpuError::InvalidShader(e.emit_to_string(source)))?;
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .map_err(|e| GpuError::InvalidShader(e.emit_to_string(source)))?;
        let mut entries = HashMap::new();
        for (index, entry) in module.entry_points.iter().enumerate() {
            if entry.stage != naga::ShaderStage::Compute {
                continue;
            }
            let uses = info.get_entry_point(index);
            let mut slots = Vec::new();
            for (handle, var) in module.global_variables.iter() {
                let Some(binding) = &var.binding else {
                    continue;
                };
                if uses[handle].is_empty() {
                    continue;
                }
                if binding.group != 0 {
                    return Err(GpuError::InvalidShader(format!(
                        "entry point `{}` uses @group({}): only @group(0) can be bound",
                        entry.name, binding.group
                    )));
                }
                let uniform = match var.space {
                    naga::AddressSpace::Uniform => true,
                    naga::AddressSpace::Storage { .. } => false,
                    other => {
                        return Err(GpuError::InvalidShader(format!(
                            "binding {} is in address space {other:?}: only storage and uniform buffers can be bound",
                            binding.binding
                        )));
                    }
                };
                slots.push(Slot {
                    binding: binding.binding,
                    uniform,
                });
            }
            slots.sort_by_key(|s| s.binding);
            entries.insert(entry.name.clone(), slots);
        }
        if entries.is_empty() {
            return Err(GpuError::InvalidShader(
                "the shader has no @compute entry point".into(),
            ));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        let shader_module = if trusted {
            // SAFETY: only the standard kernels of `agora-kernels` come here,
            // and `kernel()` checks every buffer against the sizes they index.
            unsafe {
                self.device.create_shader_module_trusted(
                    descriptor,
                    wgpu::ShaderRuntimeChecks::unchecked(),
                )
            }
        } else {
            self.device.create_shader_module(descriptor)
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::InvalidShader(e.to_string()));
        }
        self.modules_made.fetch_add(1, Ordering::Relaxed);
        Ok(CompiledShader {
            digest,
            trusted,
            module: shader_module,
            entries,
        })
    }

    /// The pipeline of `entry` of `shader`, from `cache` or made into it.
    fn pipeline(
        &self,
        cache: &Mutex<Pipelines>,
        shader: &CompiledShader,
        entry: &str,
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let key = (shader.digest, entry.to_string());
        if let Some(p) = cache.lock().expect("pipeline cache lock").get(&key) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &shader.module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::InvalidShader(format!(
                "pipeline for `{entry}`: {e}"
            )));
        }
        cache
            .lock()
            .expect("pipeline cache lock")
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

struct WgpuSession {
    shared: Arc<Shared>,
    book: SessionBook,
    buffers: HashMap<u32, LiveBuffer>,
    shaders: HashMap<u32, Arc<CompiledShader>>,
    /// This job's own modules and pipelines (see the module's note).
    compiled: HashMap<SourceDigest, Arc<CompiledShader>>,
    pipelines: Mutex<Pipelines>,
    next_id: u32,
    poisoned: bool,
}

struct LiveBuffer {
    buffer: wgpu::Buffer,
    size: u64,
    usage: Usage,
}

impl WgpuSession {
    fn check_usable(&self) -> Result<(), GpuError> {
        if self.poisoned || self.shared.lost.load(Ordering::SeqCst) {
            return Err(GpuError::DeviceLost(
                "the GPU device is lost or hung".into(),
            ));
        }
        Ok(())
    }

    fn live(&self, id: BufferId) -> Result<&LiveBuffer, GpuError> {
        self.buffers
            .get(&id.0)
            .ok_or_else(|| GpuError::InvalidArgument(format!("buffer {} does not exist", id.0)))
    }

    fn range(&self, id: BufferId, offset: u64, len: u64) -> Result<&LiveBuffer, GpuError> {
        let live = self.live(id)?;
        book::check_range(live.size, offset, len)?;
        Ok(live)
    }

    fn charge(&mut self, started: Instant) {
        self.book.charge(started);
    }

    /// Wait until queued work is done, within the time the quota leaves.
    fn wait(&mut self) -> Result<(), GpuError> {
        // With the quota spent this still polls once: a queue that is not
        // empty by then means work is running past the quota.
        let timeout = self.book.wait_timeout();
        let started = Instant::now();
        let result = self.shared.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(timeout),
        });
        self.charge(started);
        match result {
            // Some drivers (lavapipe) finish the wait late instead of timing out.
            Ok(wgpu::PollStatus::QueueEmpty | wgpu::PollStatus::WaitSucceeded) => {
                self.book.check_time()?;
                self.check_usable()
            }
            Ok(wgpu::PollStatus::Poll) | Err(wgpu::PollError::Timeout) => {
                self.poisoned = true;
                Err(SessionBook::hung(timeout))
            }
            Err(e) => {
                self.poisoned = true;
                Err(GpuError::DeviceLost(e.to_string()))
            }
        }
    }

    /// A host-internal uniform buffer holding `bytes` (counted in the quota).
    fn params(&mut self, bytes: &[u8]) -> Result<BufferId, GpuError> {
        let id = self.create_buffer(
            bytes.len().next_multiple_of(16) as u64,
            Usage {
                storage: false,
                uniform: true,
            },
        )?;
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().next_multiple_of(16), 0);
        self.write(id, 0, &padded)?;
        Ok(id)
    }

    fn encode_dispatch(
        &mut self,
        shader: &CompiledShader,
        entry: &str,
        bindings: &[BufferId],
        groups: [u32; 3],
    ) -> Result<(), GpuError> {
        self.check_usable()?;
        let max = self.shared.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|g| *g > max) {
            return Err(GpuError::InvalidArgument(format!(
                "workgroup count {groups:?} exceeds the per-dimension limit {max}"
            )));
        }
        let slots = shader.entries.get(entry).ok_or_else(|| {
            let mut names: Vec<_> = shader.entries.keys().cloned().collect();
            names.sort();
            GpuError::InvalidArgument(format!(
                "no @compute entry point `{entry}` (the shader has: {})",
                names.join(", ")
            ))
        })?;
        let mut entries = Vec::with_capacity(slots.len());
        for slot in slots {
            let id = *bindings.get(slot.binding as usize).ok_or_else(|| {
                GpuError::InvalidArgument(format!(
                    "entry point `{entry}` uses @binding({}) but only {} bindings were given",
                    slot.binding,
                    bindings.len()
                ))
            })?;
            let live = self.live(id)?;
            let ok = if slot.uniform {
                live.usage.uniform
            } else {
                live.usage.storage
            };
            if !ok {
                return Err(GpuError::InvalidArgument(format!(
                    "@binding({}) is a {} buffer but buffer {} was not created with that usage",
                    slot.binding,
                    if slot.uniform { "uniform" } else { "storage" },
                    id.0
                )));
            }
            entries.push((slot.binding, live.buffer.clone()));
        }
        self.book.count_dispatches(1)?;
        let entries: Vec<_> = entries
            .iter()
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let started = Instant::now();
        let cache = if shader.trusted {
            &self.shared.kernel_pipelines
        } else {
            &self.pipelines
        };
        let pipeline = self.shared.pipeline(cache, shader, entry)?;
        let device = &self.shared.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = pipeline.get_bind_group_layout(0);
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        self.shared.queue.submit([encoder.finish()]);
        let error = pollster::block_on(scope.pop());
        self.charge(started);
        match error {
            Some(e) => Err(GpuError::InvalidArgument(format!(
                "dispatch of `{entry}`: {e}"
            ))),
            None => Ok(()),
        }
    }

    /// A standard kernel's module (see [`Shared::compile`] on trust).
    fn internal(&self, source: &str) -> Result<Arc<CompiledShader>, GpuError> {
        self.shared.kernel(source)
    }

    fn f32_len(&self, id: BufferId, what: &str) -> Result<u64, GpuError> {
        book::f32_len(self.live(id)?.size, what)
    }

    fn need(&self, id: BufferId, what: &str, elements: u64) -> Result<(), GpuError> {
        book::need(self.live(id)?.size, what, elements)
    }
}

impl GpuSession for WgpuSession {
    fn create_buffer(&mut self, size: u64, usage: Usage) -> Result<BufferId, GpuError> {
        self.check_usable()?;
        book::check_new_buffer(size, usage)?;
        let limits = &self.shared.limits;
        let binding_max = if usage.storage {
            limits.max_storage_buffer_binding_size
        } else {
            limits.max_uniform_buffer_binding_size
        }
        .min(limits.max_buffer_size);
        if size > binding_max {
            return Err(GpuError::InvalidArgument(format!(
                "buffer of {size} bytes exceeds this adapter's binding size limit of {binding_max} bytes"
            )));
        }
        self.book.reserve(size)?;
        let mut wgpu_usage = wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        if usage.storage {
            wgpu_usage |= wgpu::BufferUsages::STORAGE;
        }
        if usage.uniform {
            wgpu_usage |= wgpu::BufferUsages::UNIFORM;
        }
        let scope = self
            .shared
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.shared.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu_usage,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.book.release(size);
            return Err(GpuError::InvalidArgument(format!(
                "the device refused a buffer of {size} bytes: {e}"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.buffers.insert(
            id,
            LiveBuffer {
                buffer,
                size,
                usage,
            },
        );
        Ok(BufferId(id))
    }

    fn write(&mut self, id: BufferId, offset: u64, bytes: &[u8]) -> Result<(), GpuError> {
        self.check_usable()?;
        let live = self.range(id, offset, bytes.len() as u64)?;
        if !bytes.is_empty() {
            self.shared.queue.write_buffer(&live.buffer, offset, bytes);
        }
        Ok(())
    }

    fn read(&mut self, id: BufferId, offset: u64, len: u64) -> Result<Vec<u8>, GpuError> {
        self.check_usable()?;
        self.range(id, offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let device = &self.shared.device;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: len,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.live(id)?.buffer, offset, &staging, 0, len);
        self.shared.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.charge(started);
        self.wait()?;
        // The device is shared by the worker's sessions: another session's
        // poll may have taken this mapping's callback and be calling it
        // right now, after this poll saw the queue empty.
        let mapped = rx.try_recv().or_else(|_| {
            let _ = self.shared.device.poll(wgpu::PollType::Poll);
            rx.recv_timeout(MAP_CALLBACK_GRACE)
        });
        match mapped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::DeviceLost(format!("readback failed: {e}"))),
            Err(_) => {
                self.poisoned = true;
                return Err(GpuError::DeviceLost("readback did not complete".into()));
            }
        }
        let bytes = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::DeviceLost(format!("readback mapping failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    fn size(&self, id: BufferId) -> Result<u64, GpuError> {
        Ok(self.live(id)?.size)
    }

    fn destroy(&mut self, id: BufferId) {
        if let Some(live) = self.buffers.remove(&id.0) {
            live.buffer.destroy();
            self.book.release(live.size);
        }
    }

    fn compile_wgsl(&mut self, source: &str) -> Result<ShaderId, GpuError> {
        self.check_usable()?;
        let started = Instant::now();
        let digest = *blake3::hash(source.as_bytes()).as_bytes();
        let compiled = match self.compiled.get(&digest) {
            Some(known) => Ok(known.clone()),
            None => self.shared.compile(source, digest, false).map(Arc::new),
        };
        if let Ok(new) = &compiled {
            self.compiled.entry(digest).or_insert_with(|| new.clone());
        }
        self.charge(started);
        let id = self.next_id;
        self.next_id += 1;
        self.shaders.insert(id, compiled?);
        Ok(ShaderId(id))
    }

    fn destroy_shader(&mut self, id: ShaderId) {
        // A module no shader id of the job names any more leaves its cache,
        // with its pipelines: a job compiling one source after another
        // holds only what it still uses.
        if let Some(gone) = self.shaders.remove(&id.0)
            && !gone.trusted
            && !self.shaders.values().any(|s| Arc::ptr_eq(s, &gone))
        {
            self.compiled.remove(&gone.digest);
            self.pipelines
                .lock()
                .expect("pipeline cache lock")
                .retain(|(digest, _), _| *digest != gone.digest);
        }
    }

    fn dispatch(
        &mut self,
        shader: ShaderId,
        entry: &str,
        bindings: &[BufferId],
        groups: [u32; 3],
    ) -> Result<(), GpuError> {
        let compiled = self.shaders.get(&shader.0).cloned().ok_or_else(|| {
            GpuError::InvalidArgument(format!("shader {} does not exist", shader.0))
        })?;
        self.encode_dispatch(&compiled, entry, bindings, groups)
    }

    fn kernel(&mut self, call: KernelCall) -> Result<(), GpuError> {
        use agora_kernels as k;
        match call {
            KernelCall::Saxpy { a, x, y } => {
                let n = self.f32_len(x, "x")?;
                book::same_size(self.live(x)?.size, self.live(y)?.size)?;
                let groups = (n as u32).div_ceil(k::SAXPY_WORKGROUP).max(1);
                let max = self.shared.limits.max_compute_workgroups_per_dimension;
                let (gx, gy) = if groups <= max {
                    (groups, 1)
                } else {
                    (max, groups.div_ceil(max))
                };
                let mut params = a.to_le_bytes().to_vec();
                params.extend_from_slice(&(n as u32).to_le_bytes());
                let p = self.params(&params)?;
                let shader = self.internal(k::SAXPY_WGSL)?;
                let result = self.encode_dispatch(&shader, "main", &[p, x, y], [gx, gy, 1]);
                self.destroy(p);
                result
            }
            KernelCall::Matmul {
                m,
                n,
                k: kk,
                a,
                b,
                c,
            } => {
                self.need(a, "a", m as u64 * kk as u64)?;
                self.need(b, "b", kk as u64 * n as u64)?;
                self.need(c, "c", m as u64 * n as u64)?;
                if m == 0 || n == 0 {
                    return Ok(());
                }
                let params: Vec<u8> = [m, n, kk, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
                let p = self.params(&params)?;
                let shader = self.internal(k::MATMUL_WGSL)?;
                let groups = [n.div_ceil(k::MATMUL_TILE), m.div_ceil(k::MATMUL_TILE), 1];
                let result = self.encode_dispatch(&shader, "main", &[p, a, b, c], groups);
                self.destroy(p);
                result
            }
            KernelCall::Sum { input, out } => {
                let n = self.f32_len(input, "input")? as u32;
                self.need(out, "out", 1)?;
                let groups = k::sum_groups(n);
                let params: Vec<u8> = [n, groups].iter().flat_map(|v| v.to_le_bytes()).collect();
                let p = self.params(&params)?;
                let partials = match self.create_buffer(
                    groups as u64 * 4,
                    Usage {
                        storage: true,
                        uniform: false,
                    },
                ) {
                    Ok(id) => id,
                    Err(e) => {
                        self.destroy(p);
                        return Err(e);
                    }
                };
                let shader = self.internal(k::SUM_WGSL)?;
                let result = self
                    .encode_dispatch(
                        &shader,
                        "partial",
                        &[p, input, partials, out],
                        [groups, 1, 1],
                    )
                    .and_then(|()| {
                        self.encode_dispatch(
                            &shader,
                            "finish",
                            &[p, input, partials, out],
                            [1, 1, 1],
                        )
                    });
                self.destroy(p);
                self.destroy(partials);
                result
            }
        }
    }

    fn finish(&mut self) -> Result<(), GpuError> {
        if self.book.stats.dispatches == 0 || self.poisoned {
            return Ok(());
        }
        self.wait()
    }

    fn stats(&self) -> GpuStats {
        self.book.stats
    }

    fn poisoned(&self) -> bool {
        self.poisoned || self.shared.lost.load(Ordering::SeqCst)
    }

    fn adapter(&self) -> Option<AdapterInfo> {
        Some(self.shared.info.clone())
    }
}

impl Drop for WgpuSession {
    fn drop(&mut self) {
        for (_, live) in self.buffers.drain() {
            live.buffer.destroy();
        }
    }
}
