//! `agora`: the one command-line program of Agora.
//!
//! Thin by design: each subcommand parses its flags (clap) and calls a
//! library (`agora-host` for `run`); the code lives in `src/cmd/`.

mod cmd;
mod units;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "agora", version, about = "Agora: a WebAssembly-first GPU compute marketplace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job component locally under the host's limits.
    Run(cmd::run::RunArgs),
    /// A worker process of the host's supervisor (internal).
    #[command(hide = true)]
    Worker {
        #[arg(long, default_value = "auto")]
        gpu: agora_host::GpuChoice,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGORA_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Worker { gpu } => ExitCode::from(agora_host::worker::main(gpu) as u8),
    }
}
