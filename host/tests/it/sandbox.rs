//! The worker sandbox (`agora_host::sandbox`), tested on real workers: each
//! proves its walls at start by trying to read a secret file, list the
//! supervisor's directory, connect to a loopback listener and read the
//! supervisor's environment; a job that holds more host-side memory than the
//! worker's wall is stopped and named, and the pool replaces the worker.

use super::*;
use agora_host::SandboxConfig;
use agora_host::pool::{ComponentBytes, PoolConfig, WorkerPool};
use agora_host::sandbox::memory::WorkerCgroup;
use agora_host::sandbox::{Attempt, Layer};

fn pool_with(sandbox: SandboxConfig, gpu: GpuChoice) -> WorkerPool {
    WorkerPool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_agora-worker").into(),
        args: Vec::new(),
        workers: 1,
        gpu,
        sandbox,
    })
    .expect("workers start")
}

/// A file in the system's temporary directory, which no worker may read.
fn secret_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("agora-sandbox-secret-{}", std::process::id()));
    std::fs::write(&path, b"the provider's private key").unwrap();
    path
}

#[test]
fn a_worker_cannot_read_files_connect_or_see_its_parents_environment() {
    if !cfg!(target_os = "linux") {
        println!("skipped: the worker sandbox is Linux only");
        return;
    }
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
        "the test's own environment has a variable no worker may see"
    );
    let secret = secret_file();
    let pool = pool_with(
        SandboxConfig {
            probe_file: Some(secret.clone()),
            ..SandboxConfig::default()
        },
        GpuChoice::Auto,
    );
    let report = pool.sandbox();
    println!("{report:#?}");
    let layers = [
        Layer::NetworkNamespace,
        Layer::Capabilities,
        Layer::Landlock,
        Layer::Seccomp,
        Layer::Environment,
        Layer::Memory,
        Layer::NoNewPrivs,
    ];
    for layer in layers {
        assert!(
            report.applied(layer),
            "{layer:?} stands on this machine: {:?}",
            report.layer(layer)
        );
    }
    let attempts = [
        Attempt::ReadFile,
        Attempt::ListWorkingDirectory,
        Attempt::ConnectLoopback,
        Attempt::ConnectUnixSocket,
        Attempt::ReadParentEnvironment,
    ];
    for attempt in attempts {
        let probe = report.probes.iter().find(|p| p.attempt == attempt);
        let probe = probe.unwrap_or_else(|| panic!("{attempt:?} was tried: {:?}", report.probes));
        assert!(
            probe.refused,
            "{attempt:?} must fail inside the sandbox: {}",
            probe.detail
        );
    }
    // The walls do not stop honest work, on the GPU included.
    let input = f32_bytes(&[2.0, 1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
    let result = pool.run(
        &ComponentBytes::new(guest("saxpy")),
        &input,
        &Limits::default(),
    );
    assert_ok(&result.report);
    assert_eq!(f32s(&result.output.unwrap()), [12.0, 24.0, 36.0]);
    std::fs::remove_file(secret).unwrap();
}

#[test]
fn host_side_blobs_past_the_workers_memory_wall_stop_the_job_and_the_worker_is_replaced() {
    if !cfg!(target_os = "linux") {
        println!("skipped: the worker sandbox is Linux only");
        return;
    }
    let wall = 384 << 20;
    let pool = pool_with(
        SandboxConfig {
            memory_bytes: wall,
            probe_file: None,
        },
        GpuChoice::None,
    );
    if !pool.sandbox().applied(Layer::Memory) {
        println!(
            "skipped: no memory wall on this machine: {:?}",
            pool.sandbox().layer(Layer::Memory)
        );
        return;
    }
    let component = ComponentBytes::new(guest("hostile"));
    // Within the job's own blob quota (1 GiB), past the worker's wall.
    let result = pool.run(&component, b"host-blobs 768", &Limits::default());
    match &result.report.outcome {
        Outcome::WorkerOutOfMemory { limit_bytes, .. } => assert_eq!(*limit_bytes, wall),
        // Without a cgroup the worker's own RLIMIT_DATA stops it: it dies
        // (an allocation failure aborts), unnamed.
        Outcome::WorkerLost { message } if WorkerCgroup::create(wall).is_err() => {
            println!("stopped by RLIMIT_DATA: {message}")
        }
        other => panic!("expected the worker's memory wall to stop it, got {other}"),
    }
    assert_eq!(
        result.report.outcome.wire().0,
        agora_wire::api::RunOutcome::WorkerLost,
        "on the wire, the host's own limit"
    );
    assert_eq!(pool.counters().killed, 1, "{:?}", pool.counters());
    let next = pool.run(&component, b"host-blobs 64", &Limits::default());
    assert_ok(&next.report);
    assert_eq!(next.output.unwrap(), b"held 4 blobs");
    assert_eq!(
        pool.counters().started,
        2,
        "a fresh worker took the dead one's place"
    );
}
