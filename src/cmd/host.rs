//! `agora host`: provide this machine's CPU and GPU to a market, set up by
//! flags, a config file (`--config host.toml`; flags override it) or both,
//! and `--print-config` to see the settings in effect.

use super::client::ClientArgs;
use agora_host::policy::{Machine, Policy};
use agora_host::pool::{PoolConfig, WorkerPool};
use agora_host::provider::{self, ProviderConfig};
use agora_host::status::HostStatus;
use agora_host::{GpuChoice, SandboxConfig};
use agora_wire::api::{Ask, UnitKinds, WorkFilter};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `agora host [FLAGS]` serves; `agora host install-service` and `agora
/// host status` manage a host that runs as a service.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HostCommand {
    #[command(subcommand)]
    action: Option<HostAction>,
    #[command(flatten)]
    args: HostArgs,
}

#[derive(Subcommand)]
enum HostAction {
    /// Write a systemd unit that runs `agora host --config FILE` (a user
    /// service by default), and say how to enable it.
    InstallService(InstallArgs),
    /// What the host running with this key (or its config file's) is
    /// doing: its units, its policy's verdict, its last heartbeat.
    Status(StatusArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// The host's config file, for its key (`--key` comes first).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct InstallArgs {
    /// The host's config file (`agora host --print-config` writes one).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A system service (/etc/systemd/system, run as you) instead of a
    /// user service (~/.config/systemd/user).
    #[arg(long)]
    system: bool,
    /// Test-only: write the unit into this folder.
    #[arg(long, hide = true)]
    unit_dir: Option<PathBuf>,
}

pub fn main(command: HostCommand, client_args: &ClientArgs) -> Result<()> {
    match command.action {
        None => run(command.args, client_args),
        Some(HostAction::InstallService(install)) => install_service(&install),
        Some(HostAction::Status(args)) => status(&args, client_args),
    }
}

/// Where a host keeps its status for `agora host status`: one file per key.
fn status_path(provider: &str) -> PathBuf {
    super::client::home()
        .join("hosts")
        .join(format!("{provider}.json"))
}

/// Whether process `pid` runs, where the system says (Linux's /proc).
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    proc.is_dir().then(|| proc.join(pid.to_string()).exists())
}

fn status(args: &StatusArgs, client_args: &ClientArgs) -> Result<()> {
    let file_key = match &args.config {
        Some(path) => HostConfig::read(path)?.key,
        None => None,
    };
    let client_args = ClientArgs {
        key: client_args.key.clone().or(file_key),
        ..client_args.clone()
    };
    let id = client_args.keypair()?.id().to_string();
    let path = status_path(&id);
    let s = match HostStatus::read(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "no host has run with key {id} here (AGORA_HOME {})",
                super::client::home().display()
            );
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let now = agora_wire::auth::now_ms();
    let ago = |ms: i64| {
        humantime::format_duration(Duration::from_secs(((now - ms).max(0) / 1000) as u64))
    };
    if !s.is_current(now) || process_alive(s.pid) == Some(false) {
        println!(
            "host {} is not running (its last heartbeat was {} ago, pid {})",
            s.provider,
            ago(s.updated_at_ms),
            s.pid
        );
        return Ok(());
    }
    println!(
        "host       {} on {} (pid {}, up {})",
        s.provider,
        s.market,
        s.pid,
        ago(s.started_at_ms)
    );
    match (&s.heartbeat_error, &s.paused) {
        (Some(e), _) => println!("state      cannot reach the market: {e}"),
        (None, Some(why)) => println!("state      paused: {why} (running units finish)"),
        (None, None) => println!("state      taking work"),
    }
    println!(
        "units      {} of {} slots busy; {} answered, {} stopped by the market",
        s.running.len(),
        s.max_concurrent,
        s.answered,
        s.stopped
    );
    for u in &s.running {
        let progress = u
            .progress
            .map(|p| format!(" {}/{}", p.done, p.total))
            .unwrap_or_default();
        println!(
            "  {} unit {}{progress}  (lease {})",
            u.package, u.unit, u.lease_id
        );
    }
    if let Some(free) = s.free_cpu_cores {
        println!("cpu        {free:.1} cores idle");
    }
    Ok(())
}

/// `text`, which must fit on one line of a systemd unit.
fn one_line(text: &str) -> Result<&str> {
    anyhow::ensure!(
        !text.contains(['\n', '\r']),
        "a path with a line break cannot go into a systemd unit: {text:?}"
    );
    Ok(text)
}

/// `text` as one quoted word of a systemd unit's command line or
/// assignment: backslashes and quotes escaped, `%` specifiers and `$`
/// variables doubled, so systemd takes it as it is.
fn systemd_word(text: &str) -> Result<String> {
    let escaped = one_line(text)?
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    Ok(format!("\"{escaped}\""))
}

/// The user a system service runs as: the one who ran `sudo`, never root
/// (the host runs other people's code).
fn service_user() -> Result<String> {
    let user = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    anyhow::ensure!(
        !user.is_empty() && user != "root",
        "a system service runs as the user who installs it (through sudo), never as root: run it as that user with sudo"
    );
    anyhow::ensure!(
        user.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "`{user}` is not a user name systemd takes"
    );
    Ok(user)
}

/// How long a stopping service waits for its running units: the longest a
/// unit may run, and five minutes to return its result.
const STOP_WAIT_MINUTES: u64 = agora_wire::limits::MAX_UNIT_TIMEOUT_MS / 60_000 + 5;

/// The systemd unit that runs this `agora` as a host with `config`.
fn unit_text(agora: &Path, config: &Path, home: &Path, user: Option<&str>) -> Result<String> {
    let run_as = match user {
        Some(user) => format!("User={user}\n"),
        None => String::new(),
    };
    let wanted_by = if user.is_some() {
        "multi-user.target"
    } else {
        "default.target"
    };
    // A path setting, one value: only its specifiers are escaped.
    let home_dir = one_line(&home.display().to_string())?.replace('%', "%%");
    Ok(format!(
        "[Unit]\n\
         Description=Agora provider host (agora host)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         {run_as}\
         Environment={env}\n\
         WorkingDirectory={home_dir}\n\
         ExecStart={agora} host --config {config}\n\
         # A stop lets running units finish: SIGINT to the host alone (its\n\
         # workers are its own to end), for as long as a unit may run.\n\
         KillSignal=SIGINT\n\
         KillMode=mixed\n\
         TimeoutStopSec={STOP_WAIT_MINUTES}min\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        env = systemd_word(&format!("AGORA_HOME={}", home.display()))?,
        agora = systemd_word(&agora.display().to_string())?,
        config = systemd_word(&config.display().to_string())?,
    ))
}

fn install_service(install: &InstallArgs) -> Result<()> {
    let config = std::fs::canonicalize(&install.config).with_context(|| {
        format!(
            "{}: write the host's config first (agora host --print-config > {0})",
            install.config.display()
        )
    })?;
    HostConfig::read(&config)?;
    let agora = std::env::current_exe().context("finding the agora executable")?;
    let home = std::path::absolute(super::client::home())?;
    let dir = match (&install.unit_dir, install.system) {
        (Some(dir), _) => dir.clone(),
        (None, true) => PathBuf::from("/etc/systemd/system"),
        (None, false) => std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
            })
            .join("systemd")
            .join("user"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    let unit = dir.join("agora-host.service");
    let user = install.system.then(service_user).transpose()?;
    std::fs::write(&unit, unit_text(&agora, &config, &home, user.as_deref())?)
        .with_context(|| format!("writing {}", unit.display()))?;
    println!("wrote {}", unit.display());
    if install.system {
        println!(
            "enable and start it:\n  sudo systemctl daemon-reload && sudo systemctl enable --now agora-host"
        );
        println!("its log: journalctl -u agora-host -f");
    } else {
        println!(
            "enable and start it:\n  systemctl --user daemon-reload && systemctl --user enable --now agora-host"
        );
        println!("keep it running while you are logged out: loginctl enable-linger $USER");
        println!("its log: journalctl --user -u agora-host -f");
    }
    println!("what it is doing: agora host status");
    Ok(())
}

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
    /// Take only units that need no GPU (cpu-only), or only units that
    /// need one (gpu-only); the config's `[accepts]` table also names
    /// packages and publishers to take or refuse, and the longest and
    /// largest units.
    #[arg(long)]
    units: Option<UnitKinds>,
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
    /// Asks per device class (`[asks."nvidia-geforce-rtx-4090"]`, names as
    /// `agora host` prints its device's): the ask of this machine's class
    /// is in force; a field left out is `[ask]`'s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub asks: BTreeMap<String, AskConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// The work this host takes: `packages`/`deny_packages`,
    /// `publishers`/`deny_publishers` (keys), `max_timeout_ms`,
    /// `max_memory_bytes`, `units` (any, cpu-only, gpu-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepts: Option<WorkFilter>,
}

/// The `[ask]` table: prices in credits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskConfig {
    pub per_billion_fuel: Option<u64>,
    pub per_gpu_second: Option<u64>,
    pub per_wall_second: Option<u64>,
}

impl AskConfig {
    /// Each field given here, else `base`'s.
    fn over(self, base: Ask) -> Ask {
        Ask {
            per_billion_fuel: self.per_billion_fuel.unwrap_or(base.per_billion_fuel),
            per_gpu_second: self.per_gpu_second.unwrap_or(base.per_gpu_second),
            per_wall_second: self.per_wall_second.unwrap_or(base.per_wall_second),
        }
    }

    fn of(ask: Ask) -> AskConfig {
        AskConfig {
            per_billion_fuel: Some(ask.per_billion_fuel),
            per_gpu_second: Some(ask.per_gpu_second),
            per_wall_second: Some(ask.per_wall_second),
        }
    }
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
        let ask = Ask {
            per_billion_fuel: args.ask_fuel.or(file_ask.per_billion_fuel).unwrap_or(10),
            per_gpu_second: args.ask_gpu.or(file_ask.per_gpu_second).unwrap_or(1),
            per_wall_second: args.ask_wall.or(file_ask.per_wall_second).unwrap_or(0),
        };
        let file_policy = self.policy.unwrap_or_default();
        let file_accepts = self.accepts.unwrap_or_default();
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
            ask: Some(AskConfig::of(ask)),
            asks: self
                .asks
                .into_iter()
                .map(|(class, a)| (class, AskConfig::of(a.over(ask))))
                .collect(),
            policy: Some(Policy {
                pause_on_battery: args.pause_on_battery || file_policy.pause_on_battery,
                max_gpu_celsius: args.max_gpu_celsius.or(file_policy.max_gpu_celsius),
                min_free_cores: args.min_free_cores.or(file_policy.min_free_cores),
            }),
            accepts: Some(WorkFilter {
                units: args.units.unwrap_or(file_accepts.units),
                ..file_accepts
            }),
        })
    }
}

fn run(args: HostArgs, client_args: &ClientArgs) -> Result<()> {
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
    let gflops = pool.benchmark();
    if let (Some(gflops), Some(device)) = (gflops, pool.adapter()) {
        eprintln!(
            "benchmark: {gflops:.1} GFLOPS (fp32 matmul, {side}x{side}) on {}",
            device.name,
            side = agora_host::gpu::speed::MATRIX_SIDE
        );
    }
    let policy = settings.policy.clone().unwrap_or_default();
    if !cfg!(target_os = "linux") && policy != Policy::default() {
        eprintln!(
            "policies: unsupported on this system (they read Linux's sysfs and procfs); they will never pause this host"
        );
    }
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
    let ask = settings.ask.expect("filled").over(Ask::default());
    let class_asks: BTreeMap<String, Ask> = settings
        .asks
        .iter()
        .map(|(class, a)| (class.clone(), a.over(ask)))
        .collect();
    let caps = provider::capabilities(&pool);
    let in_force = caps.ask_in_force(ask, &class_asks);
    eprintln!(
        "device class {}: asking {} per billion fuel, {} per GPU second, {} per wall second{}",
        caps.device_class(),
        in_force.per_billion_fuel,
        in_force.per_gpu_second,
        in_force.per_wall_second,
        if class_asks.contains_key(&caps.device_class()) {
            " ([asks] of this class)"
        } else {
            ""
        }
    );
    let config = ProviderConfig {
        ask,
        class_asks,
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
        status_file: Some(status_path(client.key().expect("signed").id().as_str())),
        accepts: settings.accepts.clone().unwrap_or_default(),
        gflops,
        ..ProviderConfig::default()
    };
    provider::serve(client, pool, config, stop)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_goes_into_a_unit_as_one_word_taken_as_it_is() {
        assert_eq!(
            systemd_word(r#"/home/a b/100%$HOME"q\x"#).unwrap(),
            r#""/home/a b/100%%$$HOME\"q\\x""#
        );
        assert!(systemd_word("/a\nExecStartPre=/bin/evil").is_err());
        let unit = unit_text(
            Path::new("/opt/my agora/agora"),
            Path::new("/etc/agora/host.toml"),
            Path::new("/home/me/.agora"),
            Some("me"),
        )
        .unwrap();
        assert!(
            unit.contains(
                r#"ExecStart="/opt/my agora/agora" host --config "/etc/agora/host.toml""#
            ),
            "{unit}"
        );
        assert!(
            unit.contains("User=me\n") && unit.contains("WantedBy=multi-user.target"),
            "{unit}"
        );
        assert!(
            unit.contains("KillMode=mixed") && unit.contains("TimeoutStopSec=65min"),
            "{unit}"
        );
    }
}
