//! `agora market serve`: the market service on SQLite or PostgreSQL.

use agora_host::pool::{ComponentBytes, PoolConfig, WorkerPool};
use agora_host::{GpuChoice, Limits};
use agora_market::store::BlobStore;
use agora_market::verify::{ResultVerifier, VerifyFailure, VerifyLimits};
use agora_market::{AppState, Config, Db};
use agora_wire::KeyId;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub enum MarketCommand {
    /// Serve the market API (migrations are applied at start).
    Serve(ServeArgs),
    /// Check the ledger's invariants now (operator key): every transfer
    /// balanced, every escrow within its job's cap, every verification
    /// consistent. Exits 1 on a violation. Replicas share one ledger: run
    /// it against any of them, or through the balancer.
    Check,
}

#[derive(Args)]
pub struct ServeArgs {
    /// `sqlite://FILE` (created if missing) or `postgres://...`.
    #[arg(long, env = "AGORA_DB", default_value = "sqlite://agora-market.db")]
    db: String,
    /// Where blob bytes live (inputs, outputs, components): a directory,
    /// or `s3://BUCKET` (an S3-compatible store; endpoint, region and keys
    /// from the AWS_* environment variables) that replicas share. Default:
    /// `FILE.blobs` beside a SQLite database; required with PostgreSQL.
    #[arg(long, env = "AGORA_BLOBS")]
    blobs: Option<String>,
    #[arg(long, env = "AGORA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    /// Without it the market serves plain HTTP: for loopback, or behind a
    /// proxy that terminates TLS.
    #[arg(long, env = "AGORA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "AGORA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The URL clients reach this market at (repeat for several names; the
    /// same on every replica). A signed request must be made for one of
    /// them, so one made for another market is refused here. Required
    /// unless the market listens on loopback, where the default is its
    /// address and the localhost names.
    #[arg(long = "public-url", env = "AGORA_PUBLIC_URL", value_delimiter = ',')]
    public_url: Vec<String>,
    /// Requests per second one peer address may make (an IPv6 /64 counts
    /// as one; bursts of twice that; 0: no limit, for a market behind a
    /// proxy or NAT that the market sees as one address).
    #[arg(long, default_value_t = agora_market::hygiene::PEER_REQUESTS_PER_SECOND)]
    peer_rate: u32,
    /// The operator's key id (may mint credits).
    #[arg(long, env = "AGORA_OPERATOR")]
    operator: String,
    /// Signed requests per second per key.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Sandboxed worker processes (no GPU) that run packages' `verify` on
    /// results; 0 compares replicas' output digests instead.
    #[arg(long, default_value_t = 1)]
    verify_workers: usize,
    /// The web market's browser bundle (`cargo xtask web`); without it,
    /// pages are server-rendered only. Default: this checkout's
    /// target/web/pkg when it exists.
    #[arg(long, env = "AGORA_WEB_PKG")]
    web_pkg: Option<std::path::PathBuf>,
    /// A lease lives this long past its provider's last heartbeat.
    #[arg(long, default_value = "30s")]
    lease_ttl: humantime::Duration,
    /// How long a job's inputs, outputs and logs are kept after it ends
    /// (its buyer may delete them sooner). Default: a week
    /// (`agora_market::jobs::DATA_RETENTION_MS`).
    #[arg(long)]
    keep_data: Option<humantime::Duration>,
    /// Share of a trusted provider's units given a second replica anyway
    /// (0 to 1): how a trusted key that turns dishonest is caught.
    #[arg(long, default_value_t = agora_market::jobs::SPOT_CHECK_RATE)]
    spot_check_rate: f64,
    /// Most bytes one account may hold and upload (64GiB, 512MiB).
    #[arg(long, default_value = "64GiB", value_parser = crate::units::parse_bytes)]
    storage_quota: u64,
    /// Bytes an account may store per credit it has: storage rests on
    /// money, since keys are free.
    #[arg(long, default_value = "1MiB", value_parser = crate::units::parse_bytes)]
    storage_per_credit: u64,
}

/// Runs `verify` in the host runtime's worker processes.
struct PoolVerifier(WorkerPool);

impl ResultVerifier for PoolVerifier {
    fn verify(
        &self,
        component: &[u8],
        input: &[u8],
        output: &[u8],
        limits: &VerifyLimits,
    ) -> Result<bool, VerifyFailure> {
        self.verify_shared(component, input, output, &Default::default(), limits)
    }

    fn verify_shared(
        &self,
        component: &[u8],
        input: &[u8],
        output: &[u8],
        by_name: &agora_market::verify::ByName,
        limits: &VerifyLimits,
    ) -> Result<bool, VerifyFailure> {
        let limits = Limits {
            fuel: limits.fuel,
            memory_bytes: limits.memory_bytes,
            timeout: Duration::from_millis(limits.timeout_ms),
            ..Limits::default()
        };
        let shared: agora_host::SharedInputs = by_name
            .shared
            .iter()
            .map(|(name, bytes)| (name.clone(), agora_host::SharedBlob::new(bytes.clone())))
            .collect();
        let (report, verdict) = self.0.verify_shared(
            &ComponentBytes::new(component.to_vec()),
            input,
            output,
            &shared,
            &by_name.outputs,
            &limits,
        );
        verdict.ok_or_else(|| VerifyFailure {
            outcome: report.outcome.wire().0,
            message: report.outcome.to_string(),
        })
    }

    fn parallelism(&self) -> usize {
        self.0.workers()
    }
}

pub fn run(command: MarketCommand, client: &super::client::ClientArgs) -> Result<()> {
    match command {
        MarketCommand::Serve(args) => serve(args),
        MarketCommand::Check => check(client),
    }
}

fn check(client_args: &super::client::ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let report: agora_wire::api::InvariantReport =
        client.get_signed("/api/v1/operator/invariants")?;
    println!(
        "posted   {} debits, {} credits\npending  {} debits, {} credits",
        report.debits_posted, report.credits_posted, report.debits_pending, report.credits_pending
    );
    for violation in &report.violations {
        println!("VIOLATED {violation}");
    }
    if !report.ok {
        anyhow::bail!("{} invariant(s) violated", report.violations.len());
    }
    println!("ok");
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let operator = KeyId::parse(&args.operator).context("--operator")?;
    let mut url = args.db.clone();
    if url.starts_with("sqlite://") && !url.contains('?') {
        url.push_str("?mode=rwc");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let blobs = match &args.blobs {
            Some(location) => BlobStore::open(location)?,
            None => BlobStore::beside(&url)?.context(
                "--blobs (a directory or s3://BUCKET) is required with PostgreSQL: the market keeps blob bytes there, not in the database",
            )?,
        };
        tracing::info!("blob bytes live in {}", blobs.location);
        let db = Db::connect_with(&url, blobs).await.with_context(|| format!("opening {}", args.db))?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(agora_market::edge::tls_config(cert, key)?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
        let public_origins = public_origins(&args.public_url, scheme, listener.local_addr()?)?;
        let mut config =
            Config { rate_per_second: args.rate, public_origins, peer_rate_per_second: args.peer_rate, ..Config::new(operator) };
        config.jobs.lease_ttl_ms = args.lease_ttl.as_millis() as i64;
        if let Some(keep) = args.keep_data {
            config.jobs.data_retention_ms = i64::try_from(keep.as_millis()).context("--keep-data is too long")?;
        }
        anyhow::ensure!((0.0..=1.0).contains(&args.spot_check_rate), "--spot-check-rate is between 0 and 1");
        config.jobs.spot_check_rate = args.spot_check_rate;
        config.storage = agora_market::uploads::StorageConfig { quota_bytes: args.storage_quota, bytes_per_credit: args.storage_per_credit };
        let mut state = AppState::new(db, config);
        if args.verify_workers > 0 {
            let pool = WorkerPool::new(PoolConfig {
                program: std::env::current_exe().context("finding the agora executable")?,
                args: vec!["worker".into()],
                workers: args.verify_workers,
                gpu: GpuChoice::None,
                sandbox: agora_host::SandboxConfig::default(),
            })
            .context("starting the verify workers")?;
            state = state.with_verifier(Arc::new(PoolVerifier(pool)));
        }
        eprintln!("agora market on {scheme}://{} ({})", listener.local_addr()?, args.db);
        // Ctrl-C, or the SIGTERM a service manager stops it with.
        let shutdown = async {
            #[cfg(unix)]
            {
                let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down");
        };
        // The web pages read the API server-side, through a plain listener
        // of the market's own on loopback: the public one may be HTTPS
        // (whose certificate names the public host, not this socket), and
        // reads from the market's own address would share one visitor's
        // per-address rate among all the pages it renders.
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("listening on loopback for the web pages")?;
        let url = format!("http://{}", internal.local_addr()?);
        let api = agora_market::app(state.clone());
        tokio::spawn(async move { axum::serve(internal, api).await });
        let pkg = args.web_pkg.clone().or_else(|| {
            let built = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/web/pkg"));
            built.join("agora-web.js").exists().then(|| built.to_path_buf())
        });
        match &pkg {
            Some(dir) => eprintln!("web market at {scheme}://{}/ (hydrating from {})", listener.local_addr()?, dir.display()),
            None => eprintln!("web market at {scheme}://{}/ (server-rendered only: run `cargo xtask web` to build the browser half)", listener.local_addr()?),
        }
        let web = agora_web::server::router(agora_web::api::MarketUrl(url), pkg);
        agora_market::serve_with(listener, state.clone(), web, tls, shutdown).await?;
        // Requests already inside the database finish (a commit after a
        // client went away still lands): two seconds more, under the ten a
        // service manager waits after its SIGTERM.
        if tokio::time::timeout(std::time::Duration::from_secs(2), state.quiesce()).await.is_err() {
            eprintln!("requests still running after the shutdown grace were dropped");
        }
        Ok(())
    })
}

/// The origins signed requests may name: each `--public-url`, or else, for
/// a market on loopback, its address and the localhost names as clients on
/// this machine dial them.
fn public_origins(
    urls: &[String],
    scheme: &str,
    local: std::net::SocketAddr,
) -> Result<Vec<String>> {
    use agora_wire::auth::origin_of;
    if !urls.is_empty() {
        return urls.iter().map(|u| public_origin(u)).collect();
    }
    let ip = local.ip();
    // Another machine's clients dial a name only the operator knows.
    anyhow::ensure!(
        ip.is_loopback(),
        "listening on {ip}: pass --public-url with the URL clients reach this market at (signatures name it)"
    );
    let mut hosts = vec![match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }];
    hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
    let mut origins: Vec<String> = hosts
        .iter()
        .filter_map(|h| origin_of(&format!("{scheme}://{h}:{}", local.port())))
        .collect();
    origins.sort();
    origins.dedup();
    Ok(origins)
}

/// One `--public-url`, as signatures name it: an http(s) URL of a whole host
/// (two markets under paths of one host would share an origin, and accept
/// each other's requests).
fn public_origin(url: &str) -> Result<String> {
    let origin = agora_wire::auth::origin_of(url)
        .with_context(|| format!("--public-url {url}: not an http:// or https:// URL (an international name in its punycode form)"))?;
    let (_, rest) = url.split_once("://").expect("origin_of found a scheme");
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    anyhow::ensure!(
        path.is_empty() || path == "/",
        "--public-url {url}: a market is a whole host, without a path"
    );
    Ok(origin)
}
