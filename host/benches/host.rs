//! `cargo xtask bench host`: the host runtime against baselines measured in
//! the same run, as ratios (host time / baseline time; lower is better).
//!
//! Baselines:
//! - "bare wasmtime": a minimal embedding written here (pooling allocator,
//!   `InstancePre`, no fuel, no epochs, no limits, no GPU session), the
//!   least a wasmtime host must do to run the same component.
//! - native Rust: the same kernel function compiled for this machine.
//! - raw wgpu: the same dispatches issued from Rust on the same adapter,
//!   without the guest, the WIT calls or the host's checks.
//!
//! Each figure is the median of interleaved repetitions.

use agora_host::pool::{ComponentBytes, PoolConfig, WorkerPool};
use agora_host::{GpuChoice, Limits, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod common;
use common::{guest, median};

/// Time `host` and `base` alternately `reps` times; medians.
fn compare(reps: usize, mut host: impl FnMut(), mut base: impl FnMut()) -> (Duration, Duration) {
    host();
    base();
    let (mut h, mut b) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        host();
        h.push(t.elapsed());
        let t = Instant::now();
        base();
        b.push(t.elapsed());
    }
    (median(h), median(b))
}

struct Row {
    name: &'static str,
    host: Duration,
    base: Duration,
    goal: f64,
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} us", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

// ---------------------------------------------------------------- bare wasmtime

/// The baseline embedding's own bindings (a measuring device, not a second
/// host: it implements only what the benchmarked guests call).
mod bare {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "job",
        with: {
            "agora:compute/data.blob": super::BareBlob,
            "agora:compute/gpu.buffer": super::BareUnused,
            "agora:compute/gpu.shader": super::BareUnused,
        },
    });
}

pub struct BareBlob(Vec<u8>);
pub struct BareUnused;

struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

use bare::agora::compute::{data, gpu, kernels, progress};

impl data::Host for BareState {
    fn shared(&mut self, _name: String) -> Option<Resource<BareBlob>> {
        None
    }
    fn output(
        &mut self,
        name: String,
        _value: Resource<BareBlob>,
    ) -> Result<(), data::OutputError> {
        Err(data::OutputError::InvalidName(name))
    }
    fn named_output(&mut self, _name: String) -> Option<Resource<BareBlob>> {
        None
    }
}
impl data::HostBlob for BareState {
    fn from_bytes(&mut self, bytes: Vec<u8>) -> Result<Resource<BareBlob>, data::DataError> {
        Ok(self.table.push(BareBlob(bytes)).unwrap())
    }
    fn len(&mut self, b: Resource<BareBlob>) -> u64 {
        self.table.get(&b).unwrap().0.len() as u64
    }
    fn read(
        &mut self,
        b: Resource<BareBlob>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, data::DataError> {
        Ok(self.table.get(&b).unwrap().0[offset as usize..(offset + len) as usize].to_vec())
    }
    fn drop(&mut self, b: Resource<BareBlob>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}
impl gpu::Host for BareState {
    fn dispatch(
        &mut self,
        _: Resource<BareUnused>,
        _: String,
        _: Vec<Resource<BareUnused>>,
        _: (u32, u32, u32),
    ) -> Result<(), gpu::GpuError> {
        unreachable!("the bare baseline runs CPU guests only")
    }
    fn info(&mut self) -> Option<gpu::AdapterInfo> {
        None
    }
}
impl gpu::HostBuffer for BareState {
    fn create(
        &mut self,
        _: u64,
        _: gpu::BufferUsage,
    ) -> Result<Resource<BareUnused>, gpu::GpuError> {
        unreachable!()
    }
    fn from_bytes(
        &mut self,
        _: Vec<u8>,
        _: gpu::BufferUsage,
    ) -> Result<Resource<BareUnused>, gpu::GpuError> {
        unreachable!()
    }
    fn from_blob(
        &mut self,
        _: Resource<BareBlob>,
        _: u64,
        _: u64,
        _: gpu::BufferUsage,
    ) -> Result<Resource<BareUnused>, gpu::GpuError> {
        unreachable!()
    }
    fn size(&mut self, _: Resource<BareUnused>) -> u64 {
        unreachable!()
    }
    fn write(&mut self, _: Resource<BareUnused>, _: u64, _: Vec<u8>) -> Result<(), gpu::GpuError> {
        unreachable!()
    }
    fn read(&mut self, _: Resource<BareUnused>, _: u64, _: u64) -> Result<Vec<u8>, gpu::GpuError> {
        unreachable!()
    }
    fn to_blob(&mut self, _: Resource<BareUnused>) -> Result<Resource<BareBlob>, gpu::GpuError> {
        unreachable!()
    }
    fn drop(&mut self, _: Resource<BareUnused>) -> wasmtime::Result<()> {
        unreachable!()
    }
}
impl gpu::HostShader for BareState {
    fn wgsl(&mut self, _: String) -> Result<Resource<BareUnused>, gpu::GpuError> {
        unreachable!()
    }
    fn drop(&mut self, _: Resource<BareUnused>) -> wasmtime::Result<()> {
        unreachable!()
    }
}
impl kernels::Host for BareState {
    fn saxpy(
        &mut self,
        _: f32,
        _: Resource<BareUnused>,
        _: Resource<BareUnused>,
    ) -> Result<(), gpu::GpuError> {
        unreachable!()
    }
    fn matmul(
        &mut self,
        _: u32,
        _: u32,
        _: u32,
        _: Resource<BareUnused>,
        _: Resource<BareUnused>,
        _: Resource<BareUnused>,
    ) -> Result<(), gpu::GpuError> {
        unreachable!()
    }
    fn sum(
        &mut self,
        _: Resource<BareUnused>,
        _: Resource<BareUnused>,
    ) -> Result<(), gpu::GpuError> {
        unreachable!()
    }
}
impl progress::Host for BareState {
    fn log(&mut self, _: progress::Level, _: String) {}
    fn report(&mut self, _: u64, _: u64) {}
}

struct Bare {
    engine: Engine,
    pre: bare::JobPre<BareState>,
    fuel: bool,
}

impl Bare {
    fn new(bytes: &[u8]) -> Bare {
        Self::metered(bytes, false, false)
    }

    /// With wasmtime's fuel and/or epoch instrumentation switched on (the
    /// budgets set so that they never run out): splits the host's metering
    /// cost into its two parts.
    fn metered(bytes: &[u8], fuel: bool, epoch: bool) -> Bare {
        let mut config = Config::new();
        config.consume_fuel(fuel).epoch_interruption(epoch);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(
            PoolingAllocationConfig::default(),
        ));
        let engine = Engine::new(&config).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        bare::Job::add_to_linker::<BareState, HasSelf<BareState>>(&mut linker, |s| s).unwrap();
        let component = Component::from_binary(&engine, bytes).unwrap();
        let pre = bare::JobPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        Bare { engine, pre, fuel }
    }

    fn run(&self, input: &[u8]) -> Vec<u8> {
        let mut store = Store::new(
            &self.engine,
            BareState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        if self.fuel {
            store.set_fuel(u64::MAX).unwrap();
        }
        store.set_epoch_deadline(u64::MAX / 2);
        let job = self.pre.instantiate(&mut store).unwrap();
        let input = store
            .data_mut()
            .table
            .push(BareBlob(input.to_vec()))
            .unwrap();
        let output = job.call_run(&mut store, input).unwrap().unwrap();
        store.data_mut().table.delete(output).unwrap().0
    }
}

// ---------------------------------------------------------------- raw wgpu

struct RawGpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
}

const TRIVIAL_WGSL: &str = "@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1)
fn main() { d[0] = d[0] + 1u; }";

impl RawGpu {
    fn new() -> RawGpu {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        }))
        .unwrap();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .unwrap();
        RawGpu { device, queue }
    }

    fn pipeline(&self, wgsl: &str) -> wgpu::ComputePipeline {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(wgsl.into()),
            });
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
    }

    fn buffer(&self, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes.len() as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, bytes);
        buffer
    }

    fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        self.queue.submit([encoder.finish()]);
    }

    fn read(&self, buffer: &wgpu::Buffer) -> Vec<u8> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: buffer.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
        self.queue.submit([encoder.finish()]);
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, |r| r.unwrap());
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .unwrap();
        let bytes = staging.slice(..).get_mapped_range().unwrap().to_vec();
        staging.unmap();
        bytes
    }
}

// ---------------------------------------------------------------- the runs

fn matmul_input(m: u32, n: u32, k: u32) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let mut rng = agora_kernels::rng::Rng::new(42);
    let a = rng.f32_vec((m * k) as usize);
    let b = rng.f32_vec((k * n) as usize);
    let mut input: Vec<u8> = [m, n, k].iter().flat_map(|v| v.to_le_bytes()).collect();
    input.extend(a.iter().flat_map(|v| v.to_le_bytes()));
    input.extend(b.iter().flat_map(|v| v.to_le_bytes()));
    (input, a, b)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    let limits = Limits {
        timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let runtime = Runtime::new(RuntimeConfig {
        gpu: GpuChoice::Auto,
    })
    .unwrap();
    let adapter = runtime
        .adapter()
        .map(|a| format!("{} ({})", a.name, a.backend))
        .unwrap_or("none".into());
    let mut rows = Vec::new();

    // 1. A no-op job: everything a run costs besides the job itself.
    let hostile = guest("hostile");
    let host_noop = runtime.load(&hostile).unwrap();
    let bare_noop = Bare::new(&hostile);
    let (host, base) = compare(
        300,
        || {
            let (r, _) = runtime.run(&host_noop, b"noop".to_vec(), &limits);
            assert!(r.outcome.is_ok());
        },
        || {
            bare_noop.run(b"noop");
        },
    );
    rows.push(Row {
        name: "no-op job: host runtime vs bare wasmtime",
        host,
        base,
        goal: 1.3,
    });
    let pool = WorkerPool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_agora-worker").into(),
        args: Vec::new(),
        workers: 1,
        gpu: GpuChoice::Auto,
        sandbox: agora_host::SandboxConfig::default(),
    })
    .unwrap();
    let component = ComponentBytes::new(hostile.clone());
    let (host, base) = compare(
        300,
        || {
            assert!(
                pool.run(&component, b"noop", &limits)
                    .report
                    .outcome
                    .is_ok()
            );
        },
        || {
            bare_noop.run(b"noop");
        },
    );
    rows.push(Row {
        name: "no-op job: warm worker process vs bare wasmtime",
        host,
        base,
        goal: f64::NAN,
    });

    // 2 and 3. A CPU kernel: metered vs unmetered, wasm vs native.
    let (m, n, k) = (256u32, 256u32, 256u32);
    let (input, a, b) = matmul_input(m, n, k);
    let cpu = guest("cpu-matmul");
    let host_cpu = runtime.load(&cpu).unwrap();
    let bare_cpu = Bare::new(&cpu);
    let (host, base) = compare(
        15,
        || {
            let (r, _) = runtime.run(&host_cpu, input.clone(), &limits);
            assert!(r.outcome.is_ok());
        },
        || {
            bare_cpu.run(&input);
        },
    );
    rows.push(Row {
        name: "CPU matmul 256^3: fuel+epoch vs unmetered",
        host,
        base,
        goal: 1.15,
    });
    for (name, fuel, epoch) in [
        ("CPU matmul 256^3: epoch only vs unmetered", false, true),
        ("CPU matmul 256^3: fuel only vs unmetered", true, false),
    ] {
        let metered = Bare::metered(&cpu, fuel, epoch);
        let (host, base) = compare(
            15,
            || {
                metered.run(&input);
            },
            || {
                bare_cpu.run(&input);
            },
        );
        rows.push(Row {
            name,
            host,
            base,
            goal: f64::NAN,
        });
    }
    let mut c = vec![0.0f32; (m * n) as usize];
    let (host, base) = compare(
        15,
        || {
            bare_cpu.run(&input);
        },
        || {
            agora_kernels::cpu::matmul_f32(m as usize, n as usize, k as usize, &a, &b, &mut c);
            std::hint::black_box(&c);
        },
    );
    rows.push(Row {
        name: "CPU matmul 256^3: wasm vs native",
        host,
        base,
        goal: 1.3,
    });

    // 4. GPU: small dispatches and a large kernel, guest vs raw wgpu.
    if runtime.adapter().is_some() {
        let raw = RawGpu::new();
        let trivial = raw.pipeline(TRIVIAL_WGSL);
        let (host, base) = compare(
            10,
            || {
                let (r, out) = runtime.run(&host_noop, b"dispatches 1000".to_vec(), &limits);
                assert!(r.outcome.is_ok() && out.is_some());
            },
            || {
                let d = raw.buffer(&[0u8; 4], wgpu::BufferUsages::STORAGE);
                for _ in 0..1000 {
                    raw.dispatch(&trivial, &[&d], [1, 1, 1]);
                }
                assert_eq!(raw.read(&d), 1000u32.to_le_bytes());
            },
        );
        rows.push(Row {
            name: "1,000 small dispatches: guest WIT vs raw wgpu",
            host,
            base,
            goal: 1.10,
        });

        let (m, n, k) = (512u32, 512u32, 512u32);
        let (input, a, b) = matmul_input(m, n, k);
        let host_mm = runtime.load(&guest("matmul")).unwrap();
        let matmul = raw.pipeline(agora_kernels::MATMUL_WGSL);
        let a_bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b_bytes: Vec<u8> = b.iter().flat_map(|v| v.to_le_bytes()).collect();
        let params: Vec<u8> = [m, n, k, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let (host, base) = compare(
            7,
            || {
                let (r, out) = runtime.run(&host_mm, input.clone(), &limits);
                assert!(r.outcome.is_ok() && out.is_some());
            },
            || {
                let p = raw.buffer(&params, wgpu::BufferUsages::UNIFORM);
                let ba = raw.buffer(&a_bytes, wgpu::BufferUsages::STORAGE);
                let bb = raw.buffer(&b_bytes, wgpu::BufferUsages::STORAGE);
                let bc = raw.buffer(
                    &vec![0u8; (4 * m * n) as usize],
                    wgpu::BufferUsages::STORAGE,
                );
                raw.dispatch(
                    &matmul,
                    &[&p, &ba, &bb, &bc],
                    [
                        n.div_ceil(agora_kernels::MATMUL_TILE),
                        m.div_ceil(agora_kernels::MATMUL_TILE),
                        1,
                    ],
                );
                std::hint::black_box(raw.read(&bc));
            },
        );
        rows.push(Row {
            name: "matmul 512^3 (large kernel): guest vs raw wgpu",
            host,
            base,
            goal: 1.03,
        });
    } else {
        eprintln!("no GPU adapter: GPU rows skipped");
    }

    println!("\nagora host benchmarks (adapter: {adapter}; medians; ratio = host / baseline)\n");
    println!(
        "{:<52} {:>12} {:>12} {:>7} {:>6}",
        "case", "host", "baseline", "ratio", "goal"
    );
    for row in rows {
        let ratio = row.host.as_secs_f64() / row.base.as_secs_f64();
        let goal = if row.goal.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}", row.goal)
        };
        let verdict = if row.goal.is_nan() {
            ""
        } else if ratio <= row.goal {
            " ok"
        } else {
            " MISS"
        };
        println!(
            "{:<52} {:>12} {:>12} {:>6.2}x {:>6}{verdict}",
            row.name,
            fmt(row.host),
            fmt(row.base),
            ratio,
            goal
        );
    }
}
