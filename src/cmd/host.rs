//! `agora host`: provide this machine's CPU and GPU to a market.

use super::client::ClientArgs;
use agora_host::pool::{PoolConfig, WorkerPool};
use agora_host::provider::{self, ProviderConfig};
use agora_host::{GpuChoice, SandboxConfig};
use agora_wire::api::Ask;
use anyhow::{Context, Result};
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Args)]
pub struct HostArgs {
    /// Your price per billion units of fuel, in credits.
    #[arg(long, default_value_t = 10)]
    ask_fuel: u64,
    /// Your price per GPU second, in credits.
    #[arg(long, default_value_t = 1)]
    ask_gpu: u64,
    /// Your price per second of wall-clock time a unit holds a slot, in credits.
    #[arg(long, default_value_t = 0)]
    ask_wall: u64,
    /// Work units run at once (one warm worker process each).
    #[arg(long, default_value_t = 2)]
    max_concurrent: u32,
    /// GPU backend: auto (CUDA for kernel-only jobs on NVIDIA, wgpu for the rest),
    /// wgpu, cuda (fail without CUDA), or none.
    #[arg(long, default_value = "auto")]
    gpu: GpuChoice,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5.0)]
    heartbeat: f64,
    /// Where jobs' shared inputs are kept between units (default:
    /// $AGORA_HOME/cache/blobs).
    #[arg(long)]
    cache_dir: Option<std::path::PathBuf>,
    /// Most bytes of shared inputs kept on disk (least recently used go first).
    #[arg(long, default_value = "16GiB", value_parser = crate::units::parse_bytes)]
    cache_size: u64,
    /// Test-only: return wrong outputs, to exercise the market's quorum.
    #[arg(long, hide = true)]
    cheat_for_tests: bool,
}

pub fn run(args: HostArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let pool = WorkerPool::new(PoolConfig {
        program: std::env::current_exe().context("finding the agora executable")?,
        args: vec!["worker".into()],
        workers: args.max_concurrent.max(1) as usize,
        gpu: args.gpu,
        // No worker may read the provider's key: each checks at start.
        sandbox: SandboxConfig {
            probe_file: Some(client_args.key_path()),
            ..SandboxConfig::default()
        },
    })?;
    let devices: Vec<String> = pool
        .devices()
        .iter()
        .map(|a| format!("{} ({})", a.name, a.backend))
        .collect();
    let adapter = if devices.is_empty() {
        "no GPU".to_string()
    } else {
        devices.join(" + ")
    };
    eprintln!(
        "agora host {} on {}: {} workers, {adapter}",
        client.key().expect("signed").id(),
        client_args.market,
        args.max_concurrent
    );
    eprintln!("worker sandbox: {}", pool.sandbox().summary());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a signal runtime");
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        eprintln!("stopping: finishing running units");
        flag.store(true, Ordering::Relaxed);
    });
    let config = ProviderConfig {
        ask: Ask {
            per_billion_fuel: args.ask_fuel,
            per_gpu_second: args.ask_gpu,
            per_wall_second: args.ask_wall,
        },
        max_concurrent: args.max_concurrent.max(1),
        heartbeat_interval: Duration::from_secs_f64(args.heartbeat.max(0.2)),
        cheat: args.cheat_for_tests,
        cache_dir: Some(
            args.cache_dir
                .unwrap_or_else(|| super::client::home().join("cache").join("blobs")),
        ),
        cache_bytes: args.cache_size,
        ..ProviderConfig::default()
    };
    provider::serve(client, pool, config, stop)?;
    Ok(())
}
