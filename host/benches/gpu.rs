//! `cargo xtask bench gpu`: the standard matmul on an NVIDIA GPU against
//! cuBLAS SGEMM called directly on the same card in the same run, and each
//! as a fraction of the card's fp32 peak. Needs CUDA; without it the bench
//! says what is missing and exits.
//!
//! What runs (n = 4096 unless `AGORA_BENCH_N` says otherwise): the guest
//! `kernel-loop` (upload A and B from the job's input, `reps` x
//! `kernels.matmul`, read C[0]) on the CUDA path and on wgpu (the WGSL tiled
//! kernel), and a baseline program doing the same steps with cuBLAS
//! directly: upload, `reps` x SGEMM, read 4 bytes. Two rows per path:
//! - end to end with 10 products (transfers included);
//! - one product, as the marginal time between 10 and 50 products (the
//!   kernel's throughput through the guest, per-call overhead included).
//!   Goals: CUDA >= 0.95, WGSL >= 0.6.
//!
//! Ratios are baseline time / measured time (higher is better: 1.0 is as
//! fast as cuBLAS). Medians of interleaved runs. Peak = SMs x fp32 lanes
//! per SM x 2 x boost clock, from the driver's device attributes.

use agora_host::{GpuChoice, Limits, Runtime, RuntimeConfig, gpu::GpuQuota};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaContext, sys::CUdevice_attribute};
use std::time::{Duration, Instant};

/// Products per run: the marginal time of one product is
/// (T(REPS_LONG) - T(REPS_SHORT)) / (REPS_LONG - REPS_SHORT).
const REPS_SHORT: u32 = 10;
const REPS_LONG: u32 = 50;
const ROUNDS: usize = 9;

mod common;
use common::{guest, median};

/// fp32 lanes per SM by compute capability (CUDA C programming guide,
/// "arithmetic instructions" throughput table).
fn fp32_lanes_per_sm(major: i32, minor: i32) -> f64 {
    match (major, minor) {
        (7, _) | (8, 0) => 64.0,
        _ => 128.0,
    }
}

struct Row {
    name: String,
    ours: Duration,
    base: Duration,
    goal: f64,
    /// Products the times cover.
    flop_reps: u32,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    let n: u32 = std::env::var("AGORA_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let runtime_cuda = match Runtime::new(RuntimeConfig {
        gpu: GpuChoice::Cuda,
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench gpu needs an NVIDIA GPU with CUDA: {e}");
            return;
        }
    };
    for device in runtime_cuda.devices() {
        println!(
            "device: {} ({}, {}; memory {} MiB; compute capability {}; driver {})",
            device.name,
            device.backend,
            device.device_type,
            device
                .memory_bytes
                .map(|b| (b >> 20).to_string())
                .unwrap_or("?".into()),
            device.compute_capability.as_deref().unwrap_or("-"),
            device.driver
        );
    }
    let ctx = CudaContext::new(0).expect("CUDA context");
    let (major, minor) = ctx.compute_capability().unwrap();
    let sms = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .unwrap() as f64;
    let clock_khz = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
        .unwrap() as f64;
    let peak = sms * fp32_lanes_per_sm(major, minor) * 2.0 * clock_khz * 1e3;
    let name = ctx.name().unwrap();

    let mut rng = agora_kernels::rng::Rng::new(42);
    let (a, b) = (rng.f32_vec((n * n) as usize), rng.f32_vec((n * n) as usize));
    let input_for = |reps: u32| -> Vec<u8> {
        let mut input: Vec<u8> = [n, reps].iter().flat_map(|v| v.to_le_bytes()).collect();
        input.extend(a.iter().flat_map(|v| v.to_le_bytes()));
        input.extend(b.iter().flat_map(|v| v.to_le_bytes()));
        input
    };
    let inputs = [input_for(REPS_SHORT), input_for(REPS_LONG)];
    let bytes = 4 * n as u64 * n as u64;
    let limits = Limits {
        timeout: Duration::from_secs(600),
        blob_bytes: 4 * bytes,
        gpu: GpuQuota {
            buffer_bytes_max: 4 * bytes,
            dispatches_max: 10_000,
            gpu_time_max: Duration::from_secs(600),
        },
        ..Limits::default()
    };
    // C[0] against an f64 dot product, within the f32 bound of agora-kernels.
    let terms: Vec<f64> = (0..n as usize)
        .map(|p| a[p] as f64 * b[p * n as usize] as f64)
        .collect();
    let want = terms.iter().sum::<f64>();
    let bound = 2.0
        * n as f64
        * agora_kernels::F32_UNIT_ROUNDOFF
        * terms.iter().map(|t| t.abs()).sum::<f64>();

    // The baseline: a program that got the same input bytes and calls cuBLAS
    // itself: upload A and B, `reps` SGEMMs, read C[0], free the input.
    let stream = ctx.new_stream().unwrap();
    let blas = CudaBlas::new(stream.clone()).unwrap();
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: n as i32,
        k: n as i32,
        alpha: 1.0f32,
        lda: n as i32,
        ldb: n as i32,
        beta: 0.0f32,
        ldc: n as i32,
    };
    let cublas = |input: Vec<u8>| -> f32 {
        let reps = u32::from_le_bytes(input[4..8].try_into().unwrap());
        let half = bytes as usize;
        let da = stream.clone_htod(&input[8..8 + half]).unwrap();
        let db = stream.clone_htod(&input[8 + half..]).unwrap();
        drop(input);
        let mut dc = stream.alloc_zeros::<f32>((n * n) as usize).unwrap();
        // SAFETY: A and B are n x n f32 in bytes; C is n x n.
        let (da, db) = unsafe {
            (
                da.transmute::<f32>((n * n) as usize).unwrap(),
                db.transmute::<f32>((n * n) as usize).unwrap(),
            )
        };
        for _ in 0..reps {
            // Row-major C = A B as column-major C^T = B^T A^T.
            unsafe { blas.gemm(cfg, &db, &da, &mut dc) }.unwrap();
        }
        stream.clone_dtoh(&dc.slice(0..1)).unwrap()[0]
    };

    let kernel_loop = guest("kernel-loop");
    let mut rows = Vec::new();
    let mut measure = |label: String, runtime: &Runtime, goal_e2e: f64, goal_product: f64| {
        let component = runtime.load(&kernel_loop).unwrap();
        let mut gpu_time = Vec::new();
        let mut guest = |input: Vec<u8>| -> f32 {
            let (report, out) = runtime.run(&component, input, &limits);
            assert!(report.outcome.is_ok(), "{label}: {}", report.outcome);
            gpu_time.push(report.gpu.gpu_time);
            f32::from_le_bytes(out.unwrap()[..4].try_into().unwrap())
        };
        for got in [guest(inputs[0].clone()), cublas(inputs[0].clone())] {
            assert!(
                agora_kernels::within(got, want, bound),
                "{label}: C[0] {got} vs {want} (bound {bound})"
            );
        }
        // The job's input arrives as an owned buffer (from the network, on a
        // provider): the copies are made before the clock starts.
        let mut t = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]]; // [ours, cuBLAS][short, long]
        for _ in 0..ROUNDS {
            for (which, input) in inputs.iter().enumerate() {
                let (mine, theirs) = (input.clone(), input.clone());
                let started = Instant::now();
                std::hint::black_box(guest(mine));
                t[0][which].push(started.elapsed());
                let started = Instant::now();
                std::hint::black_box(cublas(theirs));
                t[1][which].push(started.elapsed());
            }
        }
        drop(guest);
        let [[ours_short, ours_long], [base_short, base_long]] = t.map(|pair| pair.map(median));
        let per = |short: Duration, long: Duration| {
            (long.saturating_sub(short)) / (REPS_LONG - REPS_SHORT)
        };
        println!(
            "{label}: GPU time inside the job (median of all runs): {:.1} ms",
            median(gpu_time).as_secs_f64() * 1e3
        );
        rows.push(Row {
            name: format!("{label}, {REPS_SHORT} products end to end"),
            ours: ours_short,
            base: base_short,
            goal: goal_e2e,
            flop_reps: REPS_SHORT,
        });
        rows.push(Row {
            name: format!("{label}, one product (marginal)"),
            ours: per(ours_short, ours_long),
            base: per(base_short, base_long),
            goal: goal_product,
            flop_reps: 1,
        });
    };
    measure(
        format!("CUDA path ({})", runtime_cuda.adapter().unwrap().backend),
        &runtime_cuda,
        f64::NAN,
        0.95,
    );
    drop(runtime_cuda);
    match Runtime::new(RuntimeConfig {
        gpu: GpuChoice::Wgpu,
    }) {
        Ok(runtime_wgpu) => {
            let adapter = runtime_wgpu.adapter().unwrap();
            measure(
                format!("WGSL tiled on wgpu ({})", adapter.backend),
                &runtime_wgpu,
                f64::NAN,
                0.6,
            );
        }
        Err(e) => eprintln!("no wgpu adapter, the WGSL rows are skipped: {e}"),
    }

    let tflops =
        |d: Duration, reps: u32| 2.0 * (n as f64).powi(3) * reps as f64 / d.as_secs_f64() / 1e12;
    println!(
        "\nagora gpu benchmark: matmul fp32 {n}^3 through the guest `kernel-loop` vs cuBLAS SGEMM called directly"
    );
    println!(
        "on {name} (sm_{major}{minor}, fp32 peak {:.1} TFLOP/s); medians of {ROUNDS} interleaved rounds; ratio = cuBLAS time / ours\n",
        peak / 1e12
    );
    println!(
        "{:<58} {:>10} {:>10} {:>7} {:>6} {:>9} {:>8} {:>9} {:>8}",
        "case", "ours", "cuBLAS", "ratio", "goal", "TFLOP/s", "of peak", "cuBLAS TF", "of peak"
    );
    for row in &rows {
        let ratio = row.base.as_secs_f64() / row.ours.as_secs_f64();
        let verdict = if row.goal.is_nan() {
            ""
        } else if ratio >= row.goal {
            "ok"
        } else {
            "MISS"
        };
        let (ours, base) = (
            tflops(row.ours, row.flop_reps),
            tflops(row.base, row.flop_reps),
        );
        println!(
            "{:<58} {:>8.2}ms {:>8.2}ms {:>6.2}x {:>6} {:>9.1} {:>7.1}% {:>9.1} {:>7.1}% {verdict}",
            row.name,
            row.ours.as_secs_f64() * 1e3,
            row.base.as_secs_f64() * 1e3,
            ratio,
            if row.goal.is_nan() {
                "-".to_string()
            } else {
                format!("{:.2}", row.goal)
            },
            ours,
            100.0 * ours * 1e12 / peak,
            base,
            100.0 * base * 1e12 / peak,
        );
    }
    println!(
        "\n\"end to end\" includes uploading A and B (2 x {} MiB from the job's input) and reading C[0] on both sides.",
        bytes >> 20
    );
}
