//! `agora host`: provide this machine's CPU and GPU to a market, set up by
//! flags, a config file (`--config host.toml`; flags override it) or both,
//! and `--print-config` to see the settings in effect.

use super::client::ClientArgs;
use agora_host::policy::{Machine, Policy};
use agora_host::pool::{PoolConfig, WorkerPool};
use agora_host::provider::{self, ProviderConfig};
use agora_host::{GpuChoice, SandboxConfig};
use agora_wire::api::Ask;
use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Args)]
pub struct HostArgs {
    /// Read settings from this TOML file (`--print-config` shows its form);
    /// a flag given here overrides the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings in effect (the file's, the flags', the defaults)
    /// as a config file, and exit.
    #[arg(long)]
    print_config: bool,
    /// Your price per billion units of fuel, in credits (default 10).
    #[arg(long)]
    ask_fuel: Option<u64>,
    /// Your price per GPU second, in credits (default 1).
    #[arg(long)]
    ask_gpu: Option<u64>,
    /// Your price per second of wall-clock time a unit holds a slot, in
    /// credits (default 0).
    #[arg(long)]
    ask_wall: Option<u64>,
    /// Work units run at once, one warm worker process each (default 2).
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// GPU backend: auto (CUDA for kernel-only jobs on NVIDIA, wgpu for the
    /// rest), wgpu, cuda (fail without CUDA), or none (default auto).
    #[arg(long)]
    gpu: Option<GpuChoice>,
    /// Seconds between heartbeats (default 5).
    #[arg(long)]
    heartbeat: Option<f64>,
    /// Where jobs' shared inputs are kept between units (default:
    /// $AGORA_HOME/cache/blobs).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Most bytes of shared inputs kept on disk, least recently used going
    /// first (default 16GiB).
    #[arg(long, value_parser = crate::units::parse_bytes)]
    cache_size: Option<u64>,
    /// Take no new work while on battery power.
    #[arg(long)]
    pause_on_battery: bool,
    /// Take no new work while a GPU is at or above this temperature (°C).
    #[arg(long, value_name = "CELSIUS")]
    max_gpu_celsius: Option<f64>,
    /// Take new work only while at least this many CPU cores are idle.
    #[arg(long, value_name = "CORES")]
    min_free_cores: Option<f64>,
    /// Test-only: read power, temperatures and CPU times under this root
    /// instead of `/` (a fake sysfs and procfs).
    #[arg(long, hide = true)]
    machine_root: Option<PathBuf>,
    /// Test-only: return wrong outputs, to exercise the market's quorum.
    #[arg(long, hide = true)]
    cheat_for_tests: bool,
}

/// `agora host`'s settings as a config file holds them (TOML); each is
/// optional, and a flag overrides it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The market's URL (`--market`, `AGORA_MARKET`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market: Option<String>,
    /// The provider's key file (`--key`, `AGORA_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Bytes, or a size such as `16GiB`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ask: Option<AskConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// The `[ask]` table: prices in credits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskConfig {
    pub per_billion_fuel: Option<u64>,
    pub per_gpu_second: Option<u64>,
    pub per_wall_second: Option<u64>,
}

impl HostConfig {
    fn read(path: &Path) -> Result<HostConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the host config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("the host config {}", path.display()))
    }

    /// The settings in effect: each flag given, else the file's, else the
    /// default; every field filled.
    fn effective(self, args: &HostArgs, client_args: &ClientArgs) -> Result<HostConfig> {
        let file_ask = self.ask.unwrap_or_default();
        let file_policy = self.policy.unwrap_or_default();
        let cache_size = match (args.cache_size, &self.cache_size) {
            (Some(bytes), _) => bytes,
            (None, Some(text)) => crate::units::parse_bytes(text)
                .map_err(anyhow::Error::msg)
                .context("cache_size in the host config")?,
            (None, None) => provider::DEFAULT_CACHE_BYTES,
        };
        Ok(HostConfig {
            market: Some(
                client_args
                    .market
                    .clone()
                    .or(self.market)
                    .unwrap_or_else(|| super::client::DEFAULT_MARKET.into()),
            ),
            key: Some(
                client_args
                    .key
                    .clone()
                    .or(self.key)
                    .unwrap_or_else(|| super::client::home().join("key.json")),
            ),
            max_concurrent: Some(args.max_concurrent.or(self.max_concurrent).unwrap_or(2)),
            gpu: Some(args.gpu.or(self.gpu).unwrap_or_default()),
            heartbeat_seconds: Some(args.heartbeat.or(self.heartbeat_seconds).unwrap_or(5.0)),
            cache_dir: Some(
                args.cache_dir
                    .clone()
                    .or(self.cache_dir)
                    .unwrap_or_else(|| super::client::home().join("cache").join("blobs")),
            ),
            cache_size: Some(cache_size.to_string()),
            ask: Some(AskConfig {
                per_billion_fuel: Some(args.ask_fuel.or(file_ask.per_billion_fuel).unwrap_or(10)),
                per_gpu_second: Some(args.ask_gpu.or(file_ask.per_gpu_second).unwrap_or(1)),
                per_wall_second: Some(args.ask_wall.or(file_ask.per_wall_second).unwrap_or(0)),
            }),
            policy: Some(Policy {
                pause_on_battery: args.pause_on_battery || file_policy.pause_on_battery,
                max_gpu_celsius: args.max_gpu_celsius.or(file_policy.max_gpu_celsius),
                min_free_cores: args.min_free_cores.or(file_policy.min_free_cores),
            }),
        })
    }
}

pub fn run(args: HostArgs, client_args: &ClientArgs) -> Result<()> {
    let file = match &args.config {
        Some(path) => HostConfig::read(path)?,
        None => HostConfig::default(),
    };
    let settings = file.effective(&args, client_args)?;
    if args.print_config {
        print!(
            "{}",
            toml::to_string(&settings).context("writing the config")?
        );
        return Ok(());
    }
    let client_args = ClientArgs {
        market: settings.market.clone(),
        key: settings.key.clone(),
        ..client_args.clone()
    };
    let client_args = &client_args;
    let client = client_args.signed()?;
    let (max_concurrent, gpu) = (
        settings.max_concurrent.expect("filled"),
        settings.gpu.expect("filled"),
    );
    let pool = WorkerPool::new(PoolConfig {
        program: std::env::current_exe().context("finding the agora executable")?,
        args: vec!["worker".into()],
        workers: max_concurrent.max(1) as usize,
        gpu,
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
        client_args.market_url(),
        max_concurrent
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
    let ask = settings.ask.expect("filled");
    let config = ProviderConfig {
        ask: Ask {
            per_billion_fuel: ask.per_billion_fuel.expect("filled"),
            per_gpu_second: ask.per_gpu_second.expect("filled"),
            per_wall_second: ask.per_wall_second.expect("filled"),
        },
        max_concurrent: max_concurrent.max(1),
        heartbeat_interval: Duration::from_secs_f64(
            settings.heartbeat_seconds.expect("filled").max(0.2),
        ),
        cheat: args.cheat_for_tests,
        cache_dir: settings.cache_dir.clone(),
        cache_bytes: crate::units::parse_bytes(settings.cache_size.as_deref().expect("filled"))
            .map_err(anyhow::Error::msg)?,
        policy: settings.policy.clone().expect("filled"),
        machine: match &args.machine_root {
            Some(root) => Machine::under(root),
            None => Machine::system(),
        },
        ..ProviderConfig::default()
    };
    provider::serve(client, pool, config, stop)?;
    Ok(())
}
