//! What every market client command shares: `--market` and `--key`, and
//! where Agora keeps its files (`AGORA_HOME`, default `~/.agora`).

use agora_wire::Keypair;
use agora_wire::client::{Client, Roots};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The market's URL [default: http://127.0.0.1:8080].
    #[arg(long, env = "AGORA_MARKET", global = true)]
    pub market: Option<String>,
    /// Your key file (default: $AGORA_HOME/key.json).
    #[arg(long, env = "AGORA_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// Trust only the CA certificates in this PEM file for an https://
    /// market (a private CA); default: the platform's certificate store.
    #[arg(long, env = "AGORA_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
}

/// The market a client talks to when told none.
pub const DEFAULT_MARKET: &str = "http://127.0.0.1:8080";

/// `$AGORA_HOME`, or `~/.agora`.
pub fn home() -> PathBuf {
    if let Some(home) = std::env::var_os("AGORA_HOME") {
        return PathBuf::from(home);
    }
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    user_home.join(".agora")
}

impl ClientArgs {
    /// The market's URL: `--market`, `AGORA_MARKET`, or [`DEFAULT_MARKET`].
    pub fn market_url(&self) -> &str {
        self.market.as_deref().unwrap_or(DEFAULT_MARKET)
    }

    pub fn key_path(&self) -> PathBuf {
        self.key.clone().unwrap_or_else(|| home().join("key.json"))
    }

    /// The key, which this command needs.
    pub fn keypair(&self) -> Result<Keypair> {
        let path = self.key_path();
        if !path.exists() {
            anyhow::bail!(
                "no key at {}: make one with `agora keys new` (or pass --key FILE)",
                path.display()
            );
        }
        Keypair::read(&path).map_err(anyhow::Error::msg)
    }

    /// A client that signs with the key.
    pub fn signed(&self) -> Result<Client> {
        self.check_transport()?;
        Ok(Client::with_roots(
            self.market_url(),
            Some(self.keypair()?),
            &self.roots(),
        )?)
    }

    /// A client for public reads.
    pub fn anonymous(&self) -> Result<Client> {
        self.check_transport()?;
        Ok(Client::with_roots(self.market_url(), None, &self.roots())?)
    }

    /// Plain HTTP only to this machine: over a network, signed requests,
    /// inputs and outputs would cross unencrypted and could be changed.
    fn check_transport(&self) -> Result<()> {
        let uri: axum::http::Uri = self
            .market_url()
            .parse()
            .with_context(|| format!("--market {}: not a URL", self.market_url()))?;
        let authority = uri
            .authority()
            .with_context(|| format!("--market {}: no host in it", self.market_url()))?;
        // Credentials in the URL would hide the real host after an `@`.
        anyhow::ensure!(
            !authority.as_str().contains('@'),
            "{}: a market URL carries no user name or password",
            self.market_url()
        );
        if !uri
            .scheme_str()
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http"))
        {
            return Ok(());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback());
        anyhow::ensure!(
            loopback,
            "{} is plain HTTP to another machine: use https:// (plain http is for this machine only)",
            self.market_url()
        );
        Ok(())
    }

    /// The certificate authorities this client trusts.
    fn roots(&self) -> Roots {
        match &self.ca_cert {
            Some(path) => Roots::CaFile(path.clone()),
            None => Roots::Platform,
        }
    }
}

/// The file of package log heads this client has seen (rollback detection).
pub fn known_logs_path() -> PathBuf {
    home().join("known-logs.json")
}

pub fn load_known_logs() -> Result<std::collections::BTreeMap<String, (u64, String)>> {
    let path = known_logs_path();
    if !path.exists() {
        return Ok(Default::default());
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
}

pub fn save_known_logs(heads: &std::collections::BTreeMap<String, (u64, String)>) -> Result<()> {
    let path = known_logs_path();
    std::fs::create_dir_all(path.parent().expect("a file in AGORA_HOME"))?;
    std::fs::write(&path, serde_json::to_string_pretty(heads)?)
        .with_context(|| format!("writing {}", path.display()))
}
