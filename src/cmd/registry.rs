//! `agora publish`, `agora search`, `agora info`: the package registry.
//!
//! Every command that reads a package log checks it against the head this
//! client saw last (`$AGORA_HOME/known-logs.json`): a rewritten or rolled
//! back log, or a version whose digest differs from its signed release, is
//! an error.

use super::client::{ClientArgs, load_known_logs, save_known_logs};
use agora_wire::api::{PackageInfo, PackageSummary, Page, PublishRequest, VersionInfo};
use agora_wire::client::Client;
use agora_wire::log::{LogAction, LogEntry, LogState, verify_log};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct PublishArgs {
    /// The component (.wasm).
    file: PathBuf,
    #[arg(long)]
    name: String,
    #[arg(long)]
    version: semver::Version,
    #[arg(long, default_value = "")]
    description: String,
    #[arg(long, default_value = "general")]
    category: String,
    /// A search tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Words to look for in names, descriptions and tags.
    query: Option<String>,
    #[arg(long)]
    category: Option<String>,
    /// downloads, recent or name.
    #[arg(long, default_value = "downloads")]
    sort: String,
}

#[derive(Args)]
pub struct InfoArgs {
    name: String,
}

/// Fetch and verify a package's log; `None` when the package does not exist.
pub fn fetch_log(client: &Client, name: &str) -> Result<Option<(Vec<LogEntry>, LogState)>> {
    let log: Vec<LogEntry> = match client.get(&format!("/api/v1/packages/{name}/log")) {
        Ok(log) => log,
        Err(e) if e.code() == Some(agora_wire::api::codes::NOT_FOUND) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut known = load_known_logs()?;
    let head = known.get(name).map(|(seq, hash)| (*seq, hash.as_str()));
    let state = verify_log(&log, head)
        .with_context(|| format!("the market's log of `{name}` fails verification"))?;
    known.insert(name.to_string(), (state.head_seq, state.head_hash.clone()));
    save_known_logs(&known)?;
    Ok(Some((log, state)))
}

pub fn publish(args: PublishArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let key = client.key().expect("signed client");
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let prev = fetch_log(&client, &args.name)?;
    if let Some((_, state)) = &prev {
        if state.owner != *key.id() {
            bail!(
                "package `{}` belongs to {} (you are {})",
                args.name,
                state.owner,
                key.id()
            );
        }
        if state.releases.contains_key(&args.version.to_string()) {
            bail!(
                "{} {} is already published; versions never change",
                args.name,
                args.version
            );
        }
    }
    let head = prev
        .as_ref()
        .map(|(_, s)| (s.head_seq, s.head_hash.as_str()));
    let action = LogAction::Release {
        version: args.version.to_string(),
        digest: agora_wire::digest_hex(&bytes),
        size: bytes.len() as u64,
    };
    let entry = LogEntry::new_signed(key, &args.name, head, action);
    let request = PublishRequest {
        description: args.description,
        category: args.category,
        tags: args.tags,
        component_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        entry: entry.clone(),
    };
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("valid template"),
    );
    let version: VersionInfo = client.post_with_progress(
        &format!("/api/v1/packages/{}/versions", args.name),
        &request,
        &mut |sent, total| {
            bar.set_length(total);
            bar.set_position(sent);
        },
    )?;
    bar.finish_and_clear();
    let mut known = load_known_logs()?;
    known.insert(args.name.clone(), (entry.seq, entry.hash()));
    save_known_logs(&known)?;
    println!(
        "published {} {} ({} bytes, blake3 {})",
        args.name, version.version, version.size, version.digest
    );
    Ok(())
}

pub fn search(args: SearchArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.anonymous()?;
    let mut path = format!("/api/v1/packages?sort={}", args.sort);
    if let Some(q) = &args.query {
        path.push_str(&format!("&q={}", encode(q)));
    }
    if let Some(c) = &args.category {
        path.push_str(&format!("&category={}", encode(c)));
    }
    let page: Page<PackageSummary> = client.get(&path)?;
    if page.items.is_empty() {
        println!("no packages found");
    }
    for p in &page.items {
        println!(
            "{:<24} {:<10} {:>8} downloads  {}",
            p.name,
            p.latest.as_deref().unwrap_or("-"),
            p.downloads,
            super::printable(&p.description)
        );
    }
    Ok(())
}

pub fn info(args: InfoArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.anonymous()?;
    let info: PackageInfo = client.get(&format!("/api/v1/packages/{}", encode(&args.name)))?;
    let (_, state) = fetch_log(&client, &args.name)?
        .with_context(|| format!("package `{}` has no log", args.name))?;
    for v in &info.versions {
        let release = state.releases.get(&v.version);
        if release.map(|r| &r.digest) != Some(&v.digest) {
            bail!(
                "{} {}: the market lists digest {} but the signed log says {:?}",
                args.name,
                v.version,
                v.digest,
                release.map(|r| &r.digest)
            );
        }
    }
    let s = &info.summary;
    println!("{} — {}", s.name, super::printable(&s.description));
    println!("publisher  {}", state.owner);
    println!(
        "category   {}   tags: {}",
        super::printable(&s.category),
        super::printable(&s.tags.join(", "))
    );
    println!("downloads  {}", s.downloads);
    for v in &info.versions {
        println!(
            "  {:<10} {} {:>9} bytes{}  exports [{}]  imports [{}]",
            v.version,
            &v.digest[..16],
            v.size,
            if v.yanked { " (yanked)" } else { "" },
            v.exports.join(", "),
            v.imports.join(", ")
        );
    }
    if let Some(latest) = &s.latest {
        println!(
            "\nget it:  agora fetch {}@{latest} -o {}.wasm && agora run {}.wasm --input FILE",
            s.name, s.name, s.name
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct FetchArgs {
    /// NAME or NAME@VERSION (default: the latest version).
    package: String,
    /// Where to write the component.
    #[arg(long, short)]
    output: PathBuf,
}

/// Download a component and check it against the package's signed log.
pub fn fetch(args: FetchArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.anonymous()?;
    let (name, version) = match args.package.split_once('@') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (args.package.clone(), None),
    };
    let (_, state) = fetch_log(&client, &name)?.with_context(|| format!("no package `{name}`"))?;
    let version = match version {
        Some(v) => v,
        None => {
            let info: PackageInfo = client.get(&format!("/api/v1/packages/{}", encode(&name)))?;
            info.summary
                .latest
                .with_context(|| format!("`{name}` has no version that is not yanked"))?
        }
    };
    let release = state
        .releases
        .get(&version)
        .with_context(|| format!("the signed log of `{name}` has no version {version}"))?;
    let bytes = client.get_bytes(&format!(
        "/api/v1/packages/{}/versions/{}/component",
        encode(&name),
        encode(&version)
    ))?;
    let digest = agora_wire::digest_hex(&bytes);
    if digest != release.digest {
        bail!(
            "{name} {version}: downloaded bytes have digest {digest} but the signed release says {}",
            release.digest
        );
    }
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{name} {version} ({} bytes, blake3 {}) verified against its signed log -> {}",
        bytes.len(),
        &digest[..16],
        args.output.display()
    );
    if release.yanked {
        eprintln!("warning: {name} {version} is yanked");
    }
    Ok(())
}

/// Percent-encode a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
