//! The standard kernels agree with the CPU references within the stated
//! bounds on every backend this machine has: wgpu always (lavapipe without a
//! GPU), CUDA where an NVIDIA GPU and its libraries are found (else each test
//! prints why it skipped CUDA). Fresh random inputs, and sizes that are not
//! multiples of the tile or block size.

use agora_host::gpu::{
    GpuBackend, GpuNeeds, GpuQuota, GpuSession, KernelCall, Usage, cuda_backend::CudaBackend,
    wgpu_backend::WgpuBackend,
};
use agora_kernels::{cpu, rng::Rng, within};
use std::sync::OnceLock;
use std::time::Duration;

const STORAGE: Usage = Usage {
    storage: true,
    uniform: false,
};

/// The backends to check, by name; CUDA only where it opens.
fn backends() -> Vec<(&'static str, &'static dyn GpuBackend)> {
    static WGPU: OnceLock<WgpuBackend> = OnceLock::new();
    static CUDA: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
    let wgpu = WGPU.get_or_init(|| WgpuBackend::new().expect("a wgpu adapter"));
    let mut all: Vec<(&'static str, &'static dyn GpuBackend)> = vec![("wgpu", wgpu)];
    match CUDA.get_or_init(|| CudaBackend::new(0).map_err(|e| e.to_string())) {
        Ok(cuda) => all.push(("cuda", cuda)),
        Err(why) => println!("CUDA skipped: {why}"),
    }
    all
}

fn session(backend: &dyn GpuBackend) -> Box<dyn GpuSession> {
    backend.open_session(
        GpuQuota {
            buffer_bytes_max: 1 << 30,
            dispatches_max: 1000,
            gpu_time_max: Duration::from_secs(120),
        },
        GpuNeeds::default(),
    )
}

fn upload(s: &mut dyn GpuSession, values: &[f32]) -> agora_host::gpu::BufferId {
    let id = s
        .create_buffer((values.len().max(1) * 4) as u64, STORAGE)
        .unwrap();
    s.write(id, 0, &super::f32_bytes(values)).unwrap();
    id
}

fn download(s: &mut dyn GpuSession, id: agora_host::gpu::BufferId) -> Vec<f32> {
    let size = s.size(id).unwrap();
    super::f32s(&s.read(id, 0, size).unwrap())
}

#[test]
fn saxpy_conforms() {
    for (name, backend) in backends() {
        println!("{name}");
        let mut rng = Rng::new(super::seed());
        for n in [1, 255, 257, rng.range(1000, 300_000) as usize] {
            let (a, x, y) = (rng.f32() * 8.0, rng.f32_vec(n), rng.f32_vec(n));
            let mut s = session(backend);
            let (bx, by) = (upload(&mut *s, &x), upload(&mut *s, &y));
            s.kernel(KernelCall::Saxpy { a, x: bx, y: by }).unwrap();
            let got = download(&mut *s, by);
            for i in 0..n {
                assert!(
                    within(
                        got[i],
                        cpu::saxpy_exact(a, x[i], y[i]),
                        cpu::saxpy_bound(a, x[i], y[i])
                    ),
                    "{name} n={n} i={i}: {} vs {}",
                    got[i],
                    cpu::saxpy_exact(a, x[i], y[i])
                );
            }
        }
    }
}

#[test]
fn matmul_conforms_across_tile_edges() {
    for (name, backend) in backends() {
        println!("{name}");
        let mut rng = Rng::new(super::seed());
        let sizes = [
            (1, 1, 1),
            (64, 64, 64),
            (65, 63, 17),
            (128, 128, 8),
            (129, 127, 9),
            (rng.range(1, 200), rng.range(1, 200), rng.range(1, 200)),
            (rng.range(100, 300), rng.range(100, 300), rng.range(1, 40)),
        ];
        for (m, n, k) in sizes {
            let a = rng.f32_vec((m * k) as usize);
            let b = rng.f32_vec((k * n) as usize);
            let mut s = session(backend);
            let (ba, bb) = (upload(&mut *s, &a), upload(&mut *s, &b));
            let bc = s.create_buffer((m * n * 4) as u64, STORAGE).unwrap();
            s.kernel(KernelCall::Matmul {
                m,
                n,
                k,
                a: ba,
                b: bb,
                c: bc,
            })
            .unwrap();
            let got = download(&mut *s, bc);
            let (want, bound) = cpu::matmul(m as usize, n as usize, k as usize, &a, &b);
            for i in 0..got.len() {
                assert!(
                    within(got[i], want[i], bound[i]),
                    "{name} {m}x{n}x{k} C[{i}]: {} vs {} (bound {})",
                    got[i],
                    want[i],
                    bound[i]
                );
            }
        }
    }
}

#[test]
fn sum_conforms() {
    for (name, backend) in backends() {
        println!("{name}");
        let mut rng = Rng::new(super::seed());
        for n in [1, 256, 257, 1 << 16, rng.range(1, 2_000_000) as usize] {
            let x = rng.f32_vec(n);
            let mut s = session(backend);
            let input = upload(&mut *s, &x);
            let out = s.create_buffer(4, STORAGE).unwrap();
            s.kernel(KernelCall::Sum { input, out }).unwrap();
            let got = download(&mut *s, out)[0];
            let (want, bound) = cpu::sum(&x);
            assert!(
                within(got, want, bound),
                "{name} n={n}: {got} vs {want} (bound {bound})"
            );
        }
    }
}

#[test]
fn kernel_arguments_are_checked() {
    for (name, backend) in backends() {
        println!("{name}");
        let mut s = session(backend);
        let small = upload(&mut *s, &[1.0; 4]);
        let big = upload(&mut *s, &[1.0; 8]);
        let err = s
            .kernel(KernelCall::Saxpy {
                a: 1.0,
                x: small,
                y: big,
            })
            .unwrap_err();
        assert!(err.to_string().contains("saxpy"), "{err}");
        let err = s
            .kernel(KernelCall::Matmul {
                m: 4,
                n: 4,
                k: 4,
                a: small,
                b: small,
                c: small,
            })
            .unwrap_err();
        assert!(err.to_string().contains("needs"), "{err}");
    }
}

#[test]
fn buffers_of_one_session_are_invisible_to_another() {
    for (name, backend) in backends() {
        println!("{name}");
        let mut one = session(backend);
        let mut two = session(backend);
        let id = upload(&mut *one, &[42.0; 4]);
        // Ids are per session: the same number names nothing (or something
        // else) in another session, never the first session's data.
        match two.read(id, 0, 16) {
            Err(e) => assert!(e.to_string().contains("does not exist"), "{e}"),
            Ok(bytes) => assert_ne!(super::f32s(&bytes), vec![42.0; 4]),
        }
        // A new buffer starts zeroed, whatever was on the device before.
        let fresh = two.create_buffer(16, STORAGE).unwrap();
        assert_eq!(download(&mut *two, fresh), vec![0.0; 4]);
    }
}

#[test]
fn limits_mean_the_same_on_every_backend() {
    use agora_host::gpu::GpuError;
    for (name, backend) in backends() {
        // wgpu counts its 16-byte parameter buffers too: leave room for them.
        let quota = GpuQuota {
            buffer_bytes_max: 1088,
            dispatches_max: 2,
            gpu_time_max: Duration::from_secs(60),
        };
        let mut s = backend.open_session(quota, GpuNeeds::default());
        let x = s.create_buffer(512, STORAGE).unwrap();
        match s.create_buffer(1024, STORAGE) {
            Err(GpuError::QuotaExceeded {
                resource,
                requested: 1536,
                limit: 1088,
            }) => assert!(resource.contains("bytes")),
            other => panic!("{name}: {other:?}"),
        }
        let y = s.create_buffer(512, STORAGE).unwrap();
        s.kernel(KernelCall::Saxpy { a: 2.0, x, y }).unwrap();
        s.kernel(KernelCall::Saxpy { a: 2.0, x, y }).unwrap();
        match s.kernel(KernelCall::Saxpy { a: 2.0, x, y }) {
            Err(GpuError::QuotaExceeded {
                resource: "dispatches",
                requested: 3,
                limit: 2,
            }) => {}
            other => panic!("{name}: {other:?}"),
        }
        s.destroy(x);
        assert!(
            s.read(x, 0, 4)
                .unwrap_err()
                .to_string()
                .contains("does not exist"),
            "{name}"
        );
        assert_eq!(s.read(y, 0, 8).unwrap(), vec![0; 8], "{name}: 2 * 0 + 0");
        assert!(
            matches!(s.write(y, 2, &[0; 4]), Err(GpuError::InvalidArgument(_))),
            "{name}: unaligned write"
        );
        s.finish().unwrap();
        assert_eq!(s.stats().dispatches, 2, "{name}");
        let peak = s.stats().buffer_bytes_peak;
        assert!((1024..=1040).contains(&peak), "{name}: peak {peak}");
    }
}

/// A kernel cannot be stopped once launched: on CUDA a wait that outlives
/// the job's GPU time ends the job with `device-lost` and marks the session
/// poisoned, so the supervisor replaces the worker. (wgpu's case is the
/// hostile guest's `gpu-hang`.)
#[test]
fn cuda_work_past_the_gpu_time_quota_poisons_the_session() {
    use agora_host::gpu::GpuError;
    let Some((_, cuda)) = backends().into_iter().find(|(name, _)| *name == "cuda") else {
        println!("CUDA skipped: no CUDA device here (see above)");
        return;
    };
    let quota = GpuQuota {
        buffer_bytes_max: 1 << 30,
        dispatches_max: 1000,
        gpu_time_max: Duration::from_millis(2),
    };
    let mut s = cuda.open_session(quota, GpuNeeds::default());
    let n = 4096u32;
    let bytes = 4 * n as u64 * n as u64;
    let (a, b, c) = (
        s.create_buffer(bytes, STORAGE).unwrap(),
        s.create_buffer(bytes, STORAGE).unwrap(),
        s.create_buffer(bytes, STORAGE).unwrap(),
    );
    // Ten 4096^3 products: tens of milliseconds on any GPU.
    let mut queued = 0;
    for _ in 0..10 {
        match s.kernel(KernelCall::Matmul {
            m: n,
            n,
            k: n,
            a,
            b,
            c,
        }) {
            Ok(()) => queued += 1,
            Err(GpuError::QuotaExceeded { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(queued > 0);
    match s.read(c, 0, 4) {
        Err(GpuError::DeviceLost(message)) => {
            assert!(message.contains("GPU time quota"), "{message}")
        }
        Err(GpuError::QuotaExceeded { resource, .. }) => assert!(resource.contains("GPU time")),
        other => panic!("expected the GPU time limit, got {other:?}"),
    }
    assert!(s.poisoned() || s.stats().gpu_time >= quota.gpu_time_max);
    drop(s);
    // The device itself is fine for the next job once the work drains.
    let mut next = session(cuda);
    let x = upload(&mut *next, &[1.0, 2.0]);
    assert_eq!(download(&mut *next, x), vec![1.0, 2.0]);
}

// A job makes its shader's source from its secret input; a later job on the
// same worker compiles candidate sources and times them. A guest's shaders
// are cached for its own job only: the second job's compile of the same
// source is a compile of its own, while one job compiling a source twice,
// and every job's standard kernels, come from the caches.
#[test]
fn a_guests_shaders_are_cached_for_its_own_job_only() {
    let backend = WgpuBackend::new().expect("a wgpu adapter");
    let secret = "@group(0) @binding(0) var<storage, read_write> v: array<f32>;
                  @compute @workgroup_size(1) fn main() { v[0] = 42.0; }";
    let mut first = session(&backend);
    first.compile_wgsl(secret).unwrap();
    first.compile_wgsl(secret).unwrap();
    assert_eq!(
        backend.modules_made(),
        1,
        "within a job, a source compiles once"
    );
    let mut second = session(&backend);
    let id = second.compile_wgsl(secret).unwrap();
    assert_eq!(
        backend.modules_made(),
        2,
        "another job compiles it afresh: no timing tells it the first did"
    );
    // A job's cache holds only the modules it still names.
    second.destroy_shader(id);
    second.compile_wgsl(secret).unwrap();
    assert_eq!(
        backend.modules_made(),
        3,
        "a destroyed module left the job's cache"
    );
    let (x, y) = (upload(&mut *first, &[1.0]), upload(&mut *first, &[2.0]));
    first.kernel(KernelCall::Saxpy { a: 2.0, x, y }).unwrap();
    let made = backend.modules_made();
    let (x, y) = (upload(&mut *second, &[1.0]), upload(&mut *second, &[2.0]));
    second.kernel(KernelCall::Saxpy { a: 2.0, x, y }).unwrap();
    assert_eq!(
        backend.modules_made(),
        made,
        "the standard kernels are the device's, compiled once"
    );
    assert_eq!(download(&mut *second, y), vec![4.0]);
}
