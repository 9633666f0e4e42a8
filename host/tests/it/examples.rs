//! The example jobs give the right answers.

use super::*;
use agora_kernels::{cpu, rng::Rng, within};

fn matmul_input(m: u32, n: u32, k: u32, rng: &mut Rng) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let a = rng.f32_vec((m * k) as usize);
    let b = rng.f32_vec((k * n) as usize);
    let mut input: Vec<u8> = [m, n, k].iter().flat_map(|v| v.to_le_bytes()).collect();
    input.extend(f32_bytes(&a));
    input.extend(f32_bytes(&b));
    (input, a, b)
}

#[test]
fn saxpy_matches_the_cpu_reference() {
    let mut rng = Rng::new(seed());
    let n = rng.range(1, 100_000) as usize;
    let (a, x, y) = (rng.f32() * 4.0, rng.f32_vec(n), rng.f32_vec(n));
    let mut input = a.to_le_bytes().to_vec();
    input.extend(f32_bytes(&x));
    input.extend(f32_bytes(&y));
    let (report, output) = run("saxpy", &input, &Limits::default());
    assert_ok(&report);
    let got = f32s(&output.unwrap());
    assert_eq!(got.len(), n);
    for i in 0..n {
        let want = cpu::saxpy_exact(a, x[i], y[i]);
        assert!(
            within(got[i], want, cpu::saxpy_bound(a, x[i], y[i])),
            "element {i}: {} vs {want}",
            got[i]
        );
    }
    assert_eq!(report.gpu.dispatches, 1);
    assert!(
        report.logs.iter().any(|l| l.message.contains("saxpy")),
        "the job's log line is kept"
    );
    assert_eq!(report.progress, Some((n as u64, n as u64)));
}

#[test]
fn matmul_matches_the_cpu_reference_and_verifies() {
    let mut rng = Rng::new(seed());
    let (m, n, k) = (rng.range(1, 150), rng.range(1, 150), rng.range(1, 150));
    let (input, a, b) = matmul_input(m, n, k, &mut rng);
    let (report, output) = run("matmul", &input, &Limits::default());
    assert_ok(&report);
    let output = output.unwrap();
    let got = f32s(&output);
    let (want, bound) = cpu::matmul(m as usize, n as usize, k as usize, &a, &b);
    for i in 0..got.len() {
        assert!(
            within(got[i], want[i], bound[i]),
            "C[{i}] of {m}x{n}x{k}: {} vs {}",
            got[i],
            want[i]
        );
    }

    let component = runtime().load(&guest("matmul")).unwrap();
    assert!(component.has_verify);
    let (report, accepted) = runtime().verify(
        &component,
        input.clone(),
        output.clone(),
        &Limits::default(),
    );
    assert_ok(&report);
    assert_eq!(accepted, Some(true), "verify accepts the right product");

    let mut tampered = output;
    let at = 4 * rng.range(0, m * n - 1) as usize;
    // Off by far more than rounding allows. (Freivalds sees an error e at
    // C[i][j] as e * r[j]; with 150-wide products its rounding bound reaches
    // about 0.15, so an error of 0.5 hid behind a small r[j] in both rounds
    // about one run in ten.)
    let wrong = f32::from_le_bytes(tampered[at..at + 4].try_into().unwrap()) + 100.0;
    tampered[at..at + 4].copy_from_slice(&wrong.to_le_bytes());
    let (_, accepted) = runtime().verify(&component, input, tampered, &Limits::default());
    assert_eq!(
        accepted,
        Some(false),
        "verify rejects a product with one element off by 100"
    );
}

#[test]
fn cpu_matmul_runs_without_a_gpu_and_matches() {
    let mut rng = Rng::new(seed());
    let (m, n, k) = (rng.range(1, 64), rng.range(1, 64), rng.range(1, 64));
    let (input, a, b) = matmul_input(m, n, k, &mut rng);
    let no_gpu = Runtime::new(RuntimeConfig {
        gpu: GpuChoice::None,
    })
    .unwrap();
    let component = no_gpu.load(&guest("cpu-matmul")).unwrap();
    let (report, output) = no_gpu.run(&component, input, &Limits::default());
    assert_ok(&report);
    assert!(report.adapter.is_none());
    let got = f32s(&output.unwrap());
    let (want, bound) = cpu::matmul(m as usize, n as usize, k as usize, &a, &b);
    for i in 0..got.len() {
        assert!(
            within(got[i], want[i], bound[i]),
            "C[{i}]: {} vs {}",
            got[i],
            want[i]
        );
    }
    assert!(
        report.fuel_used > (m * n * k) as u64,
        "fuel is metered: {}",
        report.fuel_used
    );
}

#[test]
fn mandelbrot_returns_a_png_of_the_requested_size() {
    let (report, output) = run(
        "mandelbrot",
        b"width=320 height=200 iterations=64",
        &Limits::default(),
    );
    assert_ok(&report);
    let png = output.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 320);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 200);
    assert_eq!(report.gpu.dispatches, 1);
}

#[test]
fn a_job_without_a_gpu_gets_a_clear_error() {
    let no_gpu = Runtime::new(RuntimeConfig {
        gpu: GpuChoice::None,
    })
    .unwrap();
    let component = no_gpu.load(&guest("mandelbrot")).unwrap();
    let (report, _) = no_gpu.run(&component, Vec::new(), &Limits::default());
    match &report.outcome {
        Outcome::JobError { message } => assert!(message.contains("unavailable"), "{message}"),
        other => panic!("expected a job error, got {other}"),
    }
}

#[test]
fn bad_input_is_a_job_error_not_a_trap() {
    let (report, _) = run("saxpy", &[1, 2, 3], &Limits::default());
    assert!(
        matches!(&report.outcome, Outcome::JobError { message } if message.contains("not a (f32)")),
        "{}",
        report.outcome
    );
}

#[test]
fn a_job_is_placed_by_what_its_component_imports() {
    // matmul and saxpy call only the standard kernels: CUDA may run them.
    for kernels_only in ["matmul", "saxpy", "cpu-matmul", "kernel-loop"] {
        let component = runtime().load(&guest(kernels_only)).unwrap();
        assert!(!component.gpu_needs.wgsl, "{kernels_only} compiles no WGSL");
    }
    // mandelbrot compiles its own shader: wgpu only.
    let component = runtime().load(&guest("mandelbrot")).unwrap();
    assert!(component.gpu_needs.wgsl, "mandelbrot imports shader.wgsl");
    // And the runtime follows it: on a host with CUDA, kernel-only jobs run
    // there and WGSL jobs on wgpu.
    let backend_of = |name: &str, input: &[u8]| {
        let component = runtime().load(&guest(name)).unwrap();
        let (report, _) = runtime().run(&component, input.to_vec(), &Limits::default());
        assert_ok(&report);
        report.adapter.map(|a| a.backend).unwrap_or_default()
    };
    let mandelbrot = backend_of("mandelbrot", b"width=8 height=8 iterations=4");
    assert_ne!(mandelbrot, "cuda");
    let x: Vec<u8> = f32_bytes(&[1.0; 8]);
    let saxpy = backend_of("saxpy", &[&2.0f32.to_le_bytes()[..], &x, &x].concat());
    if runtime().devices().iter().any(|d| d.backend == "cuda") {
        assert_eq!(saxpy, "cuda", "a kernel-only job on a CUDA host");
    } else {
        println!(
            "no CUDA here: saxpy ran on {saxpy}, the CUDA placement is checked where CUDA exists"
        );
        assert_eq!(saxpy, mandelbrot);
    }
}

#[test]
fn kernel_loop_repeats_the_standard_matmul() {
    let mut rng = Rng::new(super::seed());
    let n = rng.range(20, 90);
    let (a, b) = (rng.f32_vec((n * n) as usize), rng.f32_vec((n * n) as usize));
    let mut input: Vec<u8> = [n, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    input.extend(f32_bytes(&a));
    input.extend(f32_bytes(&b));
    let component = runtime().load(&guest("kernel-loop")).unwrap();
    let (report, output) = runtime().run(&component, input, &Limits::default());
    assert_ok(&report);
    assert_eq!(report.gpu.dispatches, 3);
    assert_eq!(report.progress, Some((3, 3)));
    let got = f32::from_le_bytes(output.unwrap()[..4].try_into().unwrap());
    let (want, bound) = cpu::matmul(n as usize, n as usize, n as usize, &a, &b);
    assert!(within(got, want[0], bound[0]), "C[0] {got} vs {}", want[0]);
}
