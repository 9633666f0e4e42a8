//! `agora`: the one command-line program of Agora.
//!
//! Thin by design: each subcommand parses its flags (clap) and calls a
//! library (`agora-host` for `run`); the code lives in `src/cmd/`.

mod cmd;
mod units;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "agora",
    version,
    about = "Agora: a WebAssembly-first GPU compute marketplace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: cmd::client::ClientArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job component locally under the host's limits.
    Run(cmd::run::RunArgs),
    /// Make or show your key (your account id is its public key).
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Publish a job component to the market's registry, signed.
    Publish(cmd::registry::PublishArgs),
    /// Search the registry.
    Search(cmd::registry::SearchArgs),
    /// A package's versions, digests and publisher, checked against its signed log.
    Info(cmd::registry::InfoArgs),
    /// Download a component, verified against its signed log.
    Fetch(cmd::registry::FetchArgs),
    /// Submit a job: one work unit per input, its cap held in escrow.
    Submit(cmd::jobs::SubmitArgs),
    /// Upload files as blobs a job can name (resumable, by content).
    Upload(cmd::data::UploadArgs),
    /// The blobs you hold on the market.
    #[command(subcommand)]
    Blobs(cmd::data::BlobsCommand),
    /// A job's units, states and costs.
    Status(cmd::jobs::StatusArgs),
    /// A job's log lines (`--follow` to stream them until it ends).
    Logs(cmd::jobs::LogsArgs),
    /// Download a job's verified outputs.
    Result(cmd::jobs::ResultArgs),
    /// Your jobs.
    Jobs,
    /// What runs cost lately, per device class (the going rate your bid
    /// and --max-price are weighed against).
    Prices,
    /// Stop a job: queued units are withdrawn, running ones stopped (paid
    /// the time they ran), and what it did not spend is refunded now.
    Cancel(cmd::jobs::CancelArgs),
    /// Delete a finished job's inputs, outputs and logs from the market now
    /// (the market deletes them anyway some days after the job ends).
    DeleteData(cmd::jobs::DeleteDataArgs),
    /// Provide this machine to a market: lease, run and return work units.
    Host(cmd::host::HostCommand),
    /// Your credits: available, held in escrow, history.
    Balance(cmd::ledger::BalanceArgs),
    /// Create credits in an account (operator key only).
    Mint(cmd::ledger::MintArgs),
    /// Add a known-answer canary unit that untrusted providers get among
    /// their first leases (operator key only).
    Canary(cmd::jobs::CanaryArgs),
    /// Vouch for a provider key: the operator's own host, trusted from the
    /// start and still spot-checked (operator key only).
    Vouch(cmd::jobs::VouchArgs),
    /// Run the market service.
    #[command(subcommand)]
    Market(cmd::market::MarketCommand),
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
            tracing_subscriber::EnvFilter::try_from_env("AGORA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let client = &cli.client;
    let result = match cli.command {
        Command::Run(args) => return cmd::run::run(args),
        Command::Worker { gpu } => return ExitCode::from(agora_host::worker::main(gpu) as u8),
        Command::Keys(c) => cmd::keys::run(c, client),
        Command::Publish(a) => cmd::registry::publish(a, client),
        Command::Search(a) => cmd::registry::search(a, client),
        Command::Info(a) => cmd::registry::info(a, client),
        Command::Fetch(a) => cmd::registry::fetch(a, client),
        Command::Submit(a) => cmd::jobs::submit(a, client),
        Command::Upload(a) => cmd::data::upload(a, client),
        Command::Blobs(c) => cmd::data::blobs(c, client),
        Command::Status(a) => cmd::jobs::status(a, client),
        Command::Logs(a) => cmd::jobs::logs(a, client),
        Command::Result(a) => cmd::jobs::result(a, client),
        Command::Jobs => cmd::jobs::list(client),
        Command::Prices => cmd::jobs::prices(client),
        Command::Cancel(a) => cmd::jobs::cancel(a, client),
        Command::DeleteData(a) => cmd::jobs::delete_data(a, client),
        Command::Host(a) => cmd::host::main(a, client),
        Command::Balance(a) => cmd::ledger::balance(a, client),
        Command::Mint(a) => cmd::ledger::mint(a, client),
        Command::Canary(a) => cmd::jobs::canary(a, client),
        Command::Vouch(a) => cmd::jobs::vouch(a, client),
        Command::Market(c) => cmd::market::run(c, client),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
