//! `agora market serve`: the market service on SQLite or PostgreSQL.

use agora_market::{AppState, Config, Db};
use agora_wire::KeyId;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum MarketCommand {
    /// Serve the market API (migrations are applied at start).
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// `sqlite://FILE` (created if missing) or `postgres://...`.
    #[arg(long, env = "AGORA_DB", default_value = "sqlite://agora-market.db")]
    db: String,
    #[arg(long, env = "AGORA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The operator's key id (may mint credits).
    #[arg(long, env = "AGORA_OPERATOR")]
    operator: String,
    /// Signed requests per second per key.
    #[arg(long, default_value_t = 50)]
    rate: u32,
}

pub fn run(command: MarketCommand) -> Result<()> {
    let MarketCommand::Serve(args) = command;
    let operator = KeyId::parse(&args.operator).context("--operator")?;
    let mut url = args.db.clone();
    if url.starts_with("sqlite://") && !url.contains('?') {
        url.push_str("?mode=rwc");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let db = Db::connect(&url).await.with_context(|| format!("opening {}", args.db))?;
        let state = AppState::new(db, Config { rate_per_second: args.rate, ..Config::new(operator) });
        let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
        eprintln!("agora market on http://{} ({})", listener.local_addr()?, args.db);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down");
        };
        agora_market::serve(listener, state, shutdown).await?;
        Ok(())
    })
}
