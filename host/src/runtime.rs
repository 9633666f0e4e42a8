//! The in-process runtime: one wasmtime engine, its compiled-component cache,
//! and running one job in one fresh store under the job's limits.
//!
//! This is what a worker process runs. Nothing here can stop a GPU that never
//! finishes; [`crate::pool`] kills the whole worker for that.

use crate::bindings::{Job, JobPre};
use crate::gpu::{self, GpuBackend, GpuChoice, GpuError};
use crate::limits::{self, Limits};
use crate::report::{LimitKind, LiveObserver, LogLine, Outcome, RunReport};
use crate::state::{BlobData, JobState, NamedOutputs, SharedInputs};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

/// Compiled components kept per runtime; the oldest is evicted past this.
pub const MAX_CACHED_COMPONENTS: usize = 64;

/// Concurrent stores a runtime can hold (pooling allocator slots). A worker
/// runs one job at a time; benchmarks and tests run a few.
const POOL_SLOTS: u32 = 16;

/// blake3 digest of a component's bytes.
pub type Digest = [u8; 32];

pub fn digest_of(bytes: &[u8]) -> Digest {
    *blake3::hash(bytes).as_bytes()
}

pub fn hex(digest: &Digest) -> String {
    blake3::Hash::from_bytes(*digest).to_hex().to_string()
}

/// A component compiled and linked, ready to instantiate.
pub struct LoadedComponent {
    pub digest: Digest,
    pub(crate) pre: JobPre<JobState>,
    /// Whether the component exports `verify` (the `verified-job` world).
    pub has_verify: bool,
    /// How long compiling took.
    pub compile_time: Duration,
    /// What it imports of the GPU contract (which backend it runs on).
    pub gpu_needs: gpu::GpuNeeds,
}

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("component is {size} bytes, the limit is {limit} (MAX_COMPONENT_BYTES)")]
    TooLarge { size: usize, limit: usize },
    #[error("precompiled artifacts (.cwasm) are never loaded: send the component's .wasm")]
    Precompiled,
    #[error(
        "this is a core wasm module, not a component: build it with `cargo component build` or for wasm32-wasip2"
    )]
    CoreModule,
    #[error("not a WebAssembly component (bad magic or version)")]
    NotWasm,
    #[error("invalid component: {0}")]
    Invalid(String),
    /// Valid WebAssembly, but it uses a feature outside
    /// `agora_wire::limits::JOB_WASM_FEATURES` (GC types, threads, ...).
    #[error("the component uses a WebAssembly feature hosts do not enable: {0}")]
    UnsupportedFeature(String),
    #[error("the component does not fit the agora:compute job world: {0}")]
    WrongWorld(String),
}

impl LoadError {
    pub fn outcome(&self) -> Outcome {
        match self {
            LoadError::TooLarge { .. } => Outcome::LimitExceeded {
                limit: LimitKind::ComponentSize,
                message: self.to_string(),
            },
            _ => Outcome::Refused {
                message: self.to_string(),
            },
        }
    }
}

/// Engine settings a host chooses once.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    pub gpu: GpuChoice,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<JobState>,
    gpu: Box<dyn GpuBackend>,
    cache: Mutex<ComponentCache>,
}

#[derive(Default)]
struct ComponentCache {
    by_digest: HashMap<Digest, Arc<LoadedComponent>>,
    order: Vec<Digest>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, GpuError> {
        let gpu = gpu::open(config.gpu)?;
        Ok(Self::with_gpu(gpu))
    }

    pub fn with_gpu(gpu: Box<dyn GpuBackend>) -> Self {
        let engine = Engine::new(&engine_config()).expect("the engine configuration is valid");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI links once");
        Job::add_to_linker::<JobState, HasSelf<JobState>>(&mut linker, |s| s)
            .expect("the job world links once");
        spawn_epoch_ticker(&engine);
        Runtime {
            engine,
            linker,
            gpu,
            cache: Mutex::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The GPU jobs on this runtime see.
    pub fn adapter(&self) -> Option<gpu::AdapterInfo> {
        self.gpu.info()
    }

    /// Every GPU device jobs on this runtime may run on.
    pub fn devices(&self) -> Vec<gpu::AdapterInfo> {
        self.gpu.devices()
    }

    /// The default device's fp32 matmul speed in GFLOPS
    /// ([`gpu::speed::measure`]); `None` without a GPU.
    pub fn benchmark(&self) -> Result<Option<gpu::speed::Measured>, GpuError> {
        gpu::speed::measure(self.gpu.as_ref())
    }

    /// Check, compile and link a component, or take it from the cache.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedComponent>, LoadError> {
        if bytes.len() > limits::MAX_COMPONENT_BYTES {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit: limits::MAX_COMPONENT_BYTES,
            });
        }
        let digest = digest_of(bytes);
        if let Some(hit) = self
            .cache
            .lock()
            .expect("cache lock")
            .by_digest
            .get(&digest)
        {
            return Ok(hit.clone());
        }
        if Engine::detect_precompiled(bytes).is_some() {
            return Err(LoadError::Precompiled);
        }
        match bytes.get(0..8) {
            Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => {}
            Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => {
                return Err(LoadError::CoreModule);
            }
            _ => return Err(LoadError::NotWasm),
        }
        check_features(bytes)?;
        let started = Instant::now();
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let compile_time = started.elapsed();
        let has_verify = component.get_export_index(None, "verify").is_some();
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = JobPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let gpu_needs = gpu_needs(&self.engine, &component);
        let loaded = Arc::new(LoadedComponent {
            digest,
            pre,
            has_verify,
            compile_time,
            gpu_needs,
        });
        tracing::debug!(digest = %hex(&digest), ms = compile_time.as_millis() as u64, "compiled component");
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.order.len() >= MAX_CACHED_COMPONENTS {
            let oldest = cache.order.remove(0);
            cache.by_digest.remove(&oldest);
        }
        cache.order.push(digest);
        cache.by_digest.insert(digest, loaded.clone());
        Ok(loaded)
    }

    /// The compiled component with this digest (hex), if cached.
    pub fn cached(&self, digest_hex: &str) -> Option<Arc<LoadedComponent>> {
        let digest = blake3::Hash::from_hex(digest_hex).ok()?;
        self.cache
            .lock()
            .expect("cache lock")
            .by_digest
            .get(digest.as_bytes())
            .cloned()
    }

    /// Run `run(input)` in a fresh store under `limits`.
    pub fn run(
        &self,
        component: &LoadedComponent,
        input: Vec<u8>,
        limits: &Limits,
    ) -> (RunReport, Option<Vec<u8>>) {
        self.run_observed(component, input, limits, None)
    }

    /// [`Runtime::run`], telling `live` about progress and logs as they come.
    pub fn run_observed(
        &self,
        component: &LoadedComponent,
        input: Vec<u8>,
        limits: &Limits,
        live: Option<LiveObserver>,
    ) -> (RunReport, Option<Vec<u8>>) {
        let (report, output) =
            self.run_shared(component, input, &SharedInputs::new(), limits, live);
        (report, output.map(|(main, _)| main))
    }

    /// [`Runtime::run_observed`] for a job with shared inputs
    /// (`data.shared`); the output comes with the run's named outputs
    /// (`data.output`).
    pub fn run_shared(
        &self,
        component: &LoadedComponent,
        input: Vec<u8>,
        shared: &SharedInputs,
        limits: &Limits,
        live: Option<LiveObserver>,
    ) -> (RunReport, Option<(Vec<u8>, NamedOutputs)>) {
        self.execute(component, limits, shared, None, live, |store, job| {
            let input = store.data_mut().push_blob(input);
            let result = job.call_run(&mut *store, input)?;
            Ok(match result {
                Ok(output) => Ok(store.data_mut().take_blob(output)),
                Err(message) => Err(message),
            })
        })
    }

    /// Run `verify(input, output)`; `None` in the second place when the
    /// component has no `verify` export.
    pub fn verify(
        &self,
        component: &LoadedComponent,
        input: Vec<u8>,
        output: Vec<u8>,
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

    /// [`Runtime::verify`] for a job with shared inputs, of a result with
    /// named outputs (`data.named-output` reads them).
    pub fn verify_shared(
        &self,
        component: &LoadedComponent,
        input: Vec<u8>,
        output: Vec<u8>,
        shared: &SharedInputs,
        outputs: &NamedOutputs,
        limits: &Limits,
    ) -> (RunReport, Option<bool>) {
        if !component.has_verify {
            let outcome = Outcome::Refused {
                message: "the component does not export `verify`".into(),
            };
            return (RunReport::new(outcome, hex(&component.digest)), None);
        }
        let (report, answer) = self.execute(
            component,
            limits,
            shared,
            Some(outputs),
            None,
            |store, _job| {
                let instance = store
                    .data()
                    .instance
                    .clone()
                    .expect("instance recorded at instantiation");
                let verify = instance
                    .get_typed_func::<(Resource<BlobData>, Resource<BlobData>), (bool,)>(
                        &mut *store,
                        "verify",
                    )?;
                let input = store.data_mut().push_blob(input);
                let output = store.data_mut().push_blob(output);
                let (ok,) = verify.call(&mut *store, (input, output))?;
                // Passing is for the whole result: a named output `verify`
                // never read was not checked (a provider could add any).
                let ok = ok && !store.data().left_outputs_unread();
                Ok(Ok(vec![ok as u8]))
            },
        );
        (report, answer.map(|(v, _)| v == [1]))
    }

    /// Instantiate into a fresh store, call `body`, and turn what happened
    /// into a report. `checked`: a checked result's named outputs, for
    /// `verify` (a run keeps the ones it adds).
    fn execute(
        &self,
        component: &LoadedComponent,
        limits: &Limits,
        shared: &SharedInputs,
        checked: Option<&NamedOutputs>,
        live: Option<LiveObserver>,
        body: impl FnOnce(&mut Store<JobState>, &Job) -> wasmtime::Result<Result<Vec<u8>, String>>,
    ) -> (RunReport, Option<(Vec<u8>, NamedOutputs)>) {
        let started = Instant::now();
        let mut report = RunReport::new(Outcome::Ok, hex(&component.digest));
        report.adapter = self.gpu.info();
        if let Err(message) = limits.check() {
            report.outcome = Outcome::Refused { message };
            return (report, None);
        }
        let session = self.gpu.open_session(limits.gpu, component.gpu_needs);
        report.adapter = session.adapter();
        let mut store = Store::new(
            &self.engine,
            JobState::new(session, report.adapter.clone(), *limits),
        );
        store.data_mut().set_live(live);
        store.data_mut().set_shared(shared.clone());
        if let Some(checked) = checked {
            store.data_mut().set_checked_outputs(checked.clone());
        }
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel).expect("fuel is enabled");
        let ticks = (limits.timeout.as_nanos() / limits::EPOCH_TICK.as_nanos()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store.set_hostcall_fuel(limits::MAX_HOSTCALL_BYTES);
        store.set_max_component_handles(limits::MAX_HANDLES);

        let result = component
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                store.data_mut().instance = Some(instance.clone());
                let job = Job::new(&mut store, &instance)?;
                body(&mut store, &job)
            });
        let finish = store.data_mut().gpu.finish();

        report.fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        let state = store.data_mut();
        report.peak_memory_bytes = state.limiter.peak_memory_bytes;
        report.gpu = state.gpu.stats();
        report.worker_poisoned = state.gpu.poisoned();
        report.progress = state.progress;
        report.logs = state.take_logs();
        let named = state.take_outputs();
        let named_bytes: u64 = named.values().map(|b| b.len() as u64).sum();
        let mut output = None;
        let late = started.elapsed() >= limits.timeout;
        report.outcome = match result {
            Ok(Ok(bytes)) => match finish {
                Err(e) if late => ran_past_deadline(&format!("gpu: {e}"), limits),
                Err(e) => Outcome::JobError {
                    message: format!("gpu: {e}"),
                },
                Ok(()) if bytes.len() as u64 + named_bytes > limits.output_bytes => {
                    Outcome::LimitExceeded {
                        limit: LimitKind::Output,
                        message: format!(
                            "outputs of {} bytes together exceed the limit of {}",
                            bytes.len() as u64 + named_bytes,
                            limits.output_bytes
                        ),
                    }
                }
                Ok(()) => {
                    report.output_bytes = bytes.len() as u64 + named_bytes;
                    output = Some((bytes, named));
                    Outcome::Ok
                }
            },
            Ok(Err(message)) if late => ran_past_deadline(&message, limits),
            Ok(Err(mut message)) => {
                truncate(&mut message, limits::MAX_ERROR_MESSAGE_BYTES);
                Outcome::JobError { message }
            }
            Err(error) => classify(&error, state, limits),
        };
        drop(store);
        report.wall_time = started.elapsed();
        (report, output)
    }
}

/// A guest that failed after its deadline passed ran out of time, whatever
/// it returned: the epoch deadline interrupts at wasm instructions only, so
/// a guest inside a long host call when the deadline passes gets that
/// call's result (a GPU wait cut short under load, say) and may return its
/// error before the interrupt. The time limit is what stopped it.
fn ran_past_deadline(error: &str, limits: &Limits) -> Outcome {
    Outcome::LimitExceeded {
        limit: LimitKind::Timeout,
        message: truncated(
            format!(
                "the job ran past its {} ms deadline (it ended with: {error})",
                limits.timeout.as_millis()
            ),
            limits::MAX_ERROR_MESSAGE_BYTES,
        ),
    }
}

/// Name the limit behind a trap, or keep it as a plain trap.
fn classify(error: &wasmtime::Error, state: &JobState, limits: &Limits) -> Outcome {
    if let Some((limit, message)) = &state.limiter.hit {
        return Outcome::LimitExceeded {
            limit: *limit,
            message: message.clone(),
        };
    }
    let message = format!("{error:#}");
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::LimitExceeded {
            limit: LimitKind::Fuel,
            message: format!("all {} units of fuel were used", limits.fuel),
        },
        Some(Trap::Interrupt) => Outcome::LimitExceeded {
            limit: LimitKind::Timeout,
            message: format!(
                "the job ran past its {} ms deadline",
                limits.timeout.as_millis()
            ),
        },
        Some(Trap::StackOverflow) => Outcome::LimitExceeded {
            limit: LimitKind::Stack,
            message: format!(
                "wasm stack exhausted ({} bytes)",
                limits::MAX_WASM_STACK_BYTES
            ),
        },
        _ if message.contains("fuel allocated for hostcalls has been exhausted") => {
            Outcome::LimitExceeded {
                limit: LimitKind::HostcallData,
                message: format!(
                    "one host call copied more than {} bytes",
                    limits::MAX_HOSTCALL_BYTES
                ),
            }
        }
        _ => Outcome::Trap { message },
    }
}

fn truncate(message: &mut String, max: usize) {
    if message.len() > max {
        let mut cut = max;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" [truncated]");
    }
}

pub(crate) fn truncated(mut message: String, max: usize) -> String {
    truncate(&mut message, max);
    message
}

/// The engine's WebAssembly features: exactly the set market and hosts share.
pub fn job_wasm_features() -> wasmtime::wasmparser::WasmFeatures {
    use wasmtime::wasmparser::WasmFeatures;
    agora_wire::limits::JOB_WASM_FEATURES
        .iter()
        .fold(WasmFeatures::empty(), |all, name| {
            all | WasmFeatures::from_name(name).unwrap_or_else(|| {
                panic!("JOB_WASM_FEATURES names `{name}`, unknown to wasmtime's wasmparser")
            })
        })
}

/// Validate against exactly the engine's features before compiling, so a
/// component reaching for a proposal the engine was built without (GC types,
/// function subtypes, threads, shared memory) gets a clear refusal instead of
/// meeting code paths compiled out of wasmtime.
fn check_features(bytes: &[u8]) -> Result<(), LoadError> {
    use wasmtime::wasmparser::{Validator, WasmFeatures};
    let Err(e) = Validator::new_with_features(job_wasm_features()).validate_all(bytes) else {
        return Ok(());
    };
    // Only when it fails: invalid whatever the features, or outside ours.
    match Validator::new_with_features(WasmFeatures::all()).validate_all(bytes) {
        Ok(_) => Err(LoadError::UnsupportedFeature(e.to_string())),
        Err(invalid) => Err(LoadError::Invalid(invalid.to_string())),
    }
}

fn engine_config() -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_SLOTS)
        .total_core_instances(POOL_SLOTS * limits::MAX_INSTANCES as u32)
        .total_memories(POOL_SLOTS * limits::MAX_MEMORIES as u32)
        .total_tables(POOL_SLOTS * limits::MAX_TABLES as u32)
        .max_memory_size(limits::MAX_MEMORY_BYTES_CEILING as usize)
        .table_elements(limits::MAX_TABLE_ELEMENTS)
        .max_core_instances_per_component(limits::MAX_INSTANCES as u32)
        .max_memories_per_component(limits::MAX_MEMORIES as u32)
        .max_tables_per_component(limits::MAX_TABLES as u32);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(limits::MAX_WASM_STACK_BYTES)
        .wasm_features(!job_wasm_features(), false)
        .wasm_features(job_wasm_features(), true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advance the engine's epoch every [`limits::EPOCH_TICK`] until the engine
/// is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("agora-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(limits::EPOCH_TICK);
            }
        })
        .expect("spawn the epoch thread");
}

/// A log line, cut to the host's limit.
pub(crate) fn log_line(level: &str, message: String) -> LogLine {
    LogLine {
        level: level.into(),
        message: truncated(message, limits::MAX_LOG_LINE_BYTES),
    }
}

/// Whether a component compiles its own WGSL: wit-component keeps only the
/// functions a module really imports, so the instance type names them.
fn gpu_needs(engine: &Engine, component: &Component) -> gpu::GpuNeeds {
    use wasmtime::component::types::ComponentItem;
    let wgsl = component
        .component_type()
        .imports(engine)
        .any(|(name, item)| {
            name.starts_with("agora:compute/gpu")
                && match item.ty {
                    ComponentItem::ComponentInstance(instance) => instance
                        .exports(engine)
                        .any(|(f, _)| f == "[static]shader.wgsl" || f == "dispatch"),
                    _ => false,
                }
        });
    gpu::GpuNeeds { wgsl }
}
