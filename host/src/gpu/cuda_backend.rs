//! The CUDA backend: the standard kernels at native speed on NVIDIA GPUs.
//!
//! Design choices:
//! - CUDA is loaded at run time (cudarc's dynamic loading): the host builds
//!   and runs on machines without it, and [`CudaBackend::new`] says which
//!   library is missing instead of failing to link. A panic inside the
//!   loader (a symbol the installed driver lacks) becomes the same error.
//! - `matmul` is cuBLAS SGEMM in full f32 (the default math mode, no TF32);
//!   `saxpy` and `sum` are the CUDA C sources in `agora-kernels`, compiled
//!   by NVRTC for this device's architecture the first time a job calls
//!   them, and cached for the life of the backend (one per device and
//!   worker process).
//! - This backend runs no WGSL. A job is placed on a backend once, from the
//!   imports of its component ([`super::GpuNeeds`]): a job that compiles
//!   shaders runs wholly on wgpu, a job that only calls the standard kernels
//!   runs wholly on CUDA. No buffer ever moves between backends, so a mixed
//!   job costs nothing extra; it just does not get the CUDA kernels.
//! - Limits are the wgpu backend's ([`super::book`]): buffer bytes counted
//!   per job, dispatches counted (sum is two), GPU time charged per call and
//!   enforced on every wait. A kernel cannot be stopped once launched, so a
//!   wait that outlives the job's GPU time poisons the session and the
//!   supervisor replaces the worker process (its CUDA context goes with it).
//! - Every buffer is zeroed at creation and named by a per-session id;
//!   dropping the session frees them all. One stream serializes the jobs a
//!   worker runs, so no job reads another's memory.

use super::book::{self, SessionBook};
use super::{
    AdapterInfo, BufferId, GpuBackend, GpuError, GpuQuota, GpuSession, GpuStats, KernelCall,
    ShaderId, Usage,
};
use cudarc::cublas::{CudaBlas, sys::cublasOperation_t};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig,
    PushKernelArg, sys::CUresult,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The device memory kept free for the CUDA context, cuBLAS workspaces and
/// other processes: a job may not take the card's last bytes.
const DEVICE_MEMORY_RESERVE: u64 = 256 << 20;

/// Blocks of the first `sum` pass (as `agora_kernels::sum_groups`).
const SUM_BLOCK: u32 = agora_kernels::SUM_WORKGROUP;

pub struct CudaBackend {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    info: AdapterInfo,
    /// `compute_XY` of this device, for NVRTC.
    arch: String,
    /// Compiled kernels by function name, filled on first use.
    kernels: Mutex<HashMap<&'static str, CudaFunction>>,
    total_memory: u64,
}

/// What a CUDA device is, as the host reports it.
#[derive(Clone, Debug)]
pub struct CudaDeviceInfo {
    pub name: String,
    pub memory_bytes: u64,
    pub compute_capability: (i32, i32),
    pub driver: String,
}

fn driver_error(what: &str, e: DriverError) -> GpuError {
    match e.0 {
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
            GpuError::InvalidArgument(format!("{what}: the device is out of memory"))
        }
        _ => GpuError::DeviceLost(format!("{what}: {e}")),
    }
}

/// Which CUDA library this machine lacks, if any.
fn missing_library() -> Option<&'static str> {
    // SAFETY: each call only tries to dlopen the library's candidate names.
    unsafe {
        if !cudarc::driver::sys::is_culib_present() {
            return Some("the CUDA driver library (libcuda.so) is not installed");
        }
        if !cudarc::cublas::sys::is_culib_present() {
            return Some(
                "cuBLAS (libcublas.so) is not on the library path; add it to LD_LIBRARY_PATH",
            );
        }
        if !cudarc::nvrtc::sys::is_culib_present() {
            return Some(
                "NVRTC (libnvrtc.so) is not on the library path; add it to LD_LIBRARY_PATH",
            );
        }
    }
    None
}

impl CudaBackend {
    /// Open CUDA device `ordinal`, or say why this host cannot.
    pub fn new(ordinal: usize) -> Result<Self, GpuError> {
        if let Some(missing) = missing_library() {
            return Err(GpuError::Unavailable(format!("no CUDA: {missing}")));
        }
        match std::panic::catch_unwind(|| Self::open(ordinal)) {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the CUDA loader panicked".into());
                Err(GpuError::Unavailable(format!("no CUDA: {message}")))
            }
        }
    }

    fn open(ordinal: usize) -> Result<Self, GpuError> {
        let unavailable =
            |what: &str, e: DriverError| GpuError::Unavailable(format!("no CUDA: {what}: {e}"));
        let count = CudaContext::device_count().map_err(|e| unavailable("cuInit", e))?;
        if ordinal as i32 >= count {
            return Err(GpuError::Unavailable(format!(
                "no CUDA: device {ordinal} asked for, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable("context", e))?;
        // One stream, one job at a time: cudarc's per-buffer events are not needed.
        // SAFETY: called before any buffer exists, and every use goes through `stream`.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| unavailable("stream", e))?;
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| GpuError::Unavailable(format!("no CUDA: cuBLAS: {e:?}")))?;
        let device = describe(&ctx).map_err(|e| unavailable("device query", e))?;
        let (major, minor) = device.compute_capability;
        let info = AdapterInfo {
            name: device.name.clone(),
            backend: "cuda".into(),
            device_type: "discrete-gpu".into(),
            driver: device.driver.clone(),
            memory_bytes: Some(device.memory_bytes),
            compute_capability: Some(format!("{major}.{minor}")),
        };
        tracing::info!(device = %info.name, cc = %format!("{major}.{minor}"), memory_mib = device.memory_bytes >> 20, "CUDA device ready");
        Ok(CudaBackend {
            shared: Arc::new(Shared {
                ctx,
                stream,
                blas,
                info,
                arch: format!("compute_{major}{minor}"),
                kernels: Mutex::default(),
                total_memory: device.memory_bytes,
            }),
        })
    }

    /// The device this backend runs on.
    pub fn adapter(&self) -> &AdapterInfo {
        &self.shared.info
    }

    /// The CUDA context (for benchmarks that call cuBLAS beside the backend).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.shared.ctx
    }
}

/// Name, memory, compute capability and driver of the context's device:
/// from NVML where it loads (it names the driver release), else from the
/// driver API.
fn describe(ctx: &Arc<CudaContext>) -> Result<CudaDeviceInfo, DriverError> {
    let name = ctx.name()?;
    let memory_bytes = ctx.total_mem()? as u64;
    let compute_capability = ctx.compute_capability()?;
    let uuid = ctx.uuid()?;
    let driver = nvml_driver(&uuid.bytes).unwrap_or_else(|| {
        let mut version = 0;
        // SAFETY: writes one int.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
        format!(
            "CUDA driver API {}.{}",
            version / 1000,
            (version % 1000) / 10
        )
    });
    Ok(CudaDeviceInfo {
        name,
        memory_bytes,
        compute_capability,
        driver,
    })
}

fn nvml_driver(uuid: &[std::ffi::c_char; 16]) -> Option<String> {
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    let b: Vec<u8> = uuid.iter().map(|c| *c as u8).collect();
    let id = format!(
        "GPU-{}-{}-{}-{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    );
    // Only a device NVML knows by the same UUID is described by it.
    nvml.device_by_uuid(id.as_str()).ok()?;
    let version = nvml.sys_driver_version().ok()?;
    let cuda = nvml.sys_cuda_driver_version().ok();
    Some(match cuda {
        Some(v) => format!("NVIDIA {version} (CUDA {}.{})", v / 1000, (v % 1000) / 10),
        None => format!("NVIDIA {version}"),
    })
}

impl Shared {
    /// The kernel `name` of `source`, compiled on first use.
    fn kernel(&self, source: &'static str, name: &'static str) -> Result<CudaFunction, GpuError> {
        let mut cache = self.kernels.lock().expect("kernel cache lock");
        if let Some(f) = cache.get(name) {
            return Ok(f.clone());
        }
        let started = Instant::now();
        let options = cudarc::nvrtc::CompileOptions {
            options: vec![format!("--gpu-architecture={}", self.arch)],
            name: Some(format!("{name}.cu")),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, options).map_err(|e| {
            GpuError::Unavailable(format!(
                "NVRTC could not compile the standard kernel {name}: {e:?}"
            ))
        })?;
        let module = self
            .ctx
            .load_module(ptx)
            .map_err(|e| driver_error("loading a kernel module", e))?;
        for function in kernel_names(source) {
            let f = module
                .load_function(function)
                .map_err(|e| driver_error("loading a kernel", e))?;
            cache.insert(function, f);
        }
        tracing::debug!(kernel = name, ms = started.elapsed().as_millis() as u64, arch = %self.arch, "compiled CUDA kernel");
        cache
            .get(name)
            .cloned()
            .ok_or_else(|| GpuError::Unavailable(format!("kernel {name} missing from its source")))
    }
}

/// The `extern "C" __global__` functions a standard kernel source defines.
fn kernel_names(source: &'static str) -> Vec<&'static str> {
    source
        .split("__global__ void ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect()
}

impl GpuBackend for CudaBackend {
    fn info(&self) -> Option<AdapterInfo> {
        Some(self.shared.info.clone())
    }

    fn open_session(&self, quota: GpuQuota, _needs: super::GpuNeeds) -> Box<dyn GpuSession> {
        Box::new(CudaSession {
            shared: self.shared.clone(),
            book: SessionBook::new(quota),
            buffers: HashMap::new(),
            next_id: 1,
            poisoned: false,
            pending: false,
        })
    }
}

struct CudaSession {
    shared: Arc<Shared>,
    book: SessionBook,
    buffers: HashMap<u32, CudaSlice<u8>>,
    next_id: u32,
    poisoned: bool,
    /// Work was queued since the last wait.
    pending: bool,
}

impl CudaSession {
    fn check_usable(&self) -> Result<(), GpuError> {
        if self.poisoned {
            return Err(GpuError::DeviceLost(
                "the CUDA device is hung or in an error state".into(),
            ));
        }
        Ok(())
    }

    fn live(&self, id: BufferId) -> Result<&CudaSlice<u8>, GpuError> {
        self.buffers
            .get(&id.0)
            .ok_or_else(|| GpuError::InvalidArgument(format!("buffer {} does not exist", id.0)))
    }

    fn size_of(&self, id: BufferId) -> Result<u64, GpuError> {
        Ok(self.live(id)?.len() as u64)
    }

    /// The raw device address of a buffer, for kernel arguments and cuBLAS.
    fn address(&self, id: BufferId) -> Result<u64, GpuError> {
        let slice = self.live(id)?;
        let (ptr, _sync) = slice.device_ptr(&self.shared.stream);
        Ok(ptr)
    }

    /// A failed CUDA call: errors other than out-of-memory leave the
    /// context unusable.
    fn fail(&mut self, what: &str, e: DriverError) -> GpuError {
        let error = driver_error(what, e);
        if matches!(error, GpuError::DeviceLost(_)) {
            self.poisoned = true;
        }
        error
    }

    /// Wait for queued work within the GPU time the quota leaves; past it
    /// the session is poisoned (a running kernel cannot be cancelled).
    fn wait(&mut self) -> Result<(), GpuError> {
        if !self.pending {
            return Ok(());
        }
        let timeout = self.book.wait_timeout();
        let started = Instant::now();
        let event = match self.shared.stream.record_event(None) {
            Ok(event) => event,
            Err(e) => return Err(self.fail("recording an event", e)),
        };
        // Spin on the event: a sleep would add its granularity to every
        // short kernel, and the worker has nothing else to do meanwhile.
        let outcome = loop {
            match event.try_is_complete() {
                Ok(true) => break Ok(()),
                Ok(false) if started.elapsed() >= timeout => break Err(None),
                Ok(false) => std::thread::yield_now(),
                Err(e) => break Err(Some(e)),
            }
        };
        self.book.charge(started);
        match outcome {
            Ok(()) => {
                self.pending = false;
                self.book.check_time()
            }
            Err(None) => {
                self.poisoned = true;
                Err(SessionBook::hung(timeout))
            }
            Err(Some(e)) => Err(self.fail("waiting for the GPU", e)),
        }
    }

    /// Launch `function` on `grid` blocks of `block` threads with `args`
    /// (device addresses and scalars, in the kernel's parameter order).
    fn launch(
        &mut self,
        function: &CudaFunction,
        grid: u32,
        block: u32,
        args: &[KernelArg],
    ) -> Result<(), GpuError> {
        let started = Instant::now();
        let stream = self.shared.stream.clone();
        let mut launch = stream.launch_builder(function);
        for arg in args {
            match arg {
                KernelArg::Address(a) => launch.arg(a),
                KernelArg::F32(v) => launch.arg(v),
                KernelArg::U32(v) => launch.arg(v),
            };
        }
        let config = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's parameters (kernels/cuda/*.cu),
        // and every address is a live buffer of this session whose size was
        // checked against the element count passed with it.
        let result = unsafe { launch.launch(config) };
        self.book.charge(started);
        self.pending = true;
        result
            .map(|_| ())
            .map_err(|e| self.fail("kernel launch", e))
    }
}

fn no_wgsl() -> GpuError {
    GpuError::Unavailable(
        "this job was placed on the CUDA backend, which runs the standard kernels only; \
         a component that imports WGSL shaders runs on wgpu"
            .into(),
    )
}

enum KernelArg {
    Address(u64),
    F32(f32),
    U32(u32),
}

impl GpuSession for CudaSession {
    fn create_buffer(&mut self, size: u64, usage: Usage) -> Result<BufferId, GpuError> {
        self.check_usable()?;
        book::check_new_buffer(size, usage)?;
        let device_max = self
            .shared
            .total_memory
            .saturating_sub(DEVICE_MEMORY_RESERVE);
        if size > device_max {
            return Err(GpuError::InvalidArgument(format!(
                "buffer of {size} bytes exceeds this device's usable memory of {device_max} bytes"
            )));
        }
        self.book.reserve(size)?;
        let started = Instant::now();
        let allocated = self.shared.stream.alloc_zeros::<u8>(size as usize);
        self.book.charge(started);
        let slice = match allocated {
            Ok(slice) => slice,
            Err(e) => {
                self.book.release(size);
                return Err(self.fail(&format!("allocating {size} bytes"), e));
            }
        };
        self.pending = true;
        let id = self.next_id;
        self.next_id += 1;
        self.buffers.insert(id, slice);
        Ok(BufferId(id))
    }

    fn write(&mut self, id: BufferId, offset: u64, bytes: &[u8]) -> Result<(), GpuError> {
        self.check_usable()?;
        book::check_range(self.size_of(id)?, offset, bytes.len() as u64)?;
        if bytes.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let stream = self.shared.stream.clone();
        let slice = self.buffers.get_mut(&id.0).expect("checked above");
        let mut view = slice.slice_mut(offset as usize..offset as usize + bytes.len());
        let result = stream.memcpy_htod(bytes, &mut view);
        self.book.charge(started);
        self.pending = true;
        result.map_err(|e| self.fail("copy to the device", e))
    }

    fn read(&mut self, id: BufferId, offset: u64, len: u64) -> Result<Vec<u8>, GpuError> {
        self.check_usable()?;
        book::check_range(self.size_of(id)?, offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        self.wait()?;
        let started = Instant::now();
        let mut bytes = vec![0u8; len as usize];
        let view = self
            .live(id)?
            .slice(offset as usize..(offset + len) as usize);
        let result = self
            .shared
            .stream
            .memcpy_dtoh(&view, &mut bytes[..])
            .and_then(|()| self.shared.stream.synchronize());
        self.book.charge(started);
        result.map_err(|e| self.fail("copy from the device", e))?;
        Ok(bytes)
    }

    fn size(&self, id: BufferId) -> Result<u64, GpuError> {
        self.size_of(id)
    }

    fn destroy(&mut self, id: BufferId) {
        if let Some(slice) = self.buffers.remove(&id.0) {
            self.book.release(slice.len() as u64);
        }
    }

    fn compile_wgsl(&mut self, _source: &str) -> Result<ShaderId, GpuError> {
        Err(no_wgsl())
    }

    fn destroy_shader(&mut self, _shader: ShaderId) {}

    fn dispatch(
        &mut self,
        _: ShaderId,
        _: &str,
        _: &[BufferId],
        _: [u32; 3],
    ) -> Result<(), GpuError> {
        Err(no_wgsl())
    }

    fn kernel(&mut self, call: KernelCall) -> Result<(), GpuError> {
        self.check_usable()?;
        match call {
            KernelCall::Saxpy { a, x, y } => {
                let n = book::f32_len(self.size_of(x)?, "x")? as u32;
                book::same_size(self.size_of(x)?, self.size_of(y)?)?;
                self.book.count_dispatches(1)?;
                let function = self.shared.kernel(agora_kernels::SAXPY_CU, "saxpy")?;
                let block = agora_kernels::SAXPY_CUDA_BLOCK;
                let grid = n.div_ceil(block).clamp(1, 65_535);
                let args = [
                    KernelArg::F32(a),
                    KernelArg::Address(self.address(x)?),
                    KernelArg::Address(self.address(y)?),
                    KernelArg::U32(n),
                ];
                self.launch(&function, grid, block, &args)
            }
            KernelCall::Matmul { m, n, k, a, b, c } => {
                book::need(self.size_of(a)?, "a", m as u64 * k as u64)?;
                book::need(self.size_of(b)?, "b", k as u64 * n as u64)?;
                book::need(self.size_of(c)?, "c", m as u64 * n as u64)?;
                if m == 0 || n == 0 {
                    return Ok(());
                }
                if [m, n, k].iter().any(|d| *d > i32::MAX as u32) {
                    return Err(GpuError::InvalidArgument(format!(
                        "matmul {m}x{n}x{k}: a dimension exceeds 2^31-1"
                    )));
                }
                self.book.count_dispatches(1)?;
                let (pa, pb, pc) = (self.address(a)?, self.address(b)?, self.address(c)?);
                let started = Instant::now();
                // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS
                // multiplies the n x k matrix B^T by the k x m matrix A^T.
                let (alpha, beta) = (1.0f32, 0.0f32);
                // SAFETY: a, b and c hold at least m*k, k*n and m*n f32 (checked above).
                let result = unsafe {
                    cudarc::cublas::result::sgemm(
                        *self.shared.blas.handle(),
                        cublasOperation_t::CUBLAS_OP_N,
                        cublasOperation_t::CUBLAS_OP_N,
                        n as i32,
                        m as i32,
                        k as i32,
                        &alpha,
                        pb as *const f32,
                        n as i32,
                        pa as *const f32,
                        k as i32,
                        &beta,
                        pc as *mut f32,
                        n as i32,
                    )
                };
                self.book.charge(started);
                self.pending = true;
                result.map_err(|e| {
                    self.poisoned = true;
                    GpuError::DeviceLost(format!("cuBLAS SGEMM: {e:?}"))
                })
            }
            KernelCall::Sum { input, out } => {
                let n = book::f32_len(self.size_of(input)?, "input")? as u32;
                book::need(self.size_of(out)?, "out", 1)?;
                let groups = agora_kernels::sum_groups(n);
                self.book.count_dispatches(2)?;
                let partial = self.shared.kernel(agora_kernels::SUM_CU, "sum_partial")?;
                let finish = self.shared.kernel(agora_kernels::SUM_CU, "sum_finish")?;
                let partials = self.create_buffer(
                    groups as u64 * 4,
                    Usage {
                        storage: true,
                        uniform: false,
                    },
                )?;
                let (pin, ppart, pout) = (
                    self.address(input)?,
                    self.address(partials)?,
                    self.address(out)?,
                );
                let result = self
                    .launch(
                        &partial,
                        groups,
                        SUM_BLOCK,
                        &[
                            KernelArg::Address(pin),
                            KernelArg::Address(ppart),
                            KernelArg::U32(n),
                        ],
                    )
                    .and_then(|()| {
                        self.launch(
                            &finish,
                            1,
                            SUM_BLOCK,
                            &[
                                KernelArg::Address(ppart),
                                KernelArg::Address(pout),
                                KernelArg::U32(groups),
                            ],
                        )
                    });
                // Freed on the stream after the launches that use it.
                self.destroy(partials);
                result
            }
        }
    }

    fn finish(&mut self) -> Result<(), GpuError> {
        if self.poisoned {
            return Ok(());
        }
        self.wait()
    }

    fn stats(&self) -> GpuStats {
        self.book.stats
    }

    fn poisoned(&self) -> bool {
        self.poisoned
    }

    fn adapter(&self) -> Option<AdapterInfo> {
        Some(self.shared.info.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_names_come_from_the_sources() {
        assert_eq!(super::kernel_names(agora_kernels::SAXPY_CU), ["saxpy"]);
        assert_eq!(
            super::kernel_names(agora_kernels::SUM_CU),
            ["sum_partial", "sum_finish"]
        );
    }
}
