//! `agora upload` and `agora blobs`: a buyer's data on the market. Files go
//! up as blobs by content, in chunks, resumed where an interrupted upload
//! stopped; a job names them by digest (`agora submit --shared`,
//! `--input-blob`).

use super::client::ClientArgs;
use agora_wire::api::{Storage, UploadInfo};
use agora_wire::client::Client;
use agora_wire::upload::UploadStage;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct UploadArgs {
    /// Files to upload (each becomes a blob you hold; run the same command
    /// again to resume one that was interrupted).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Subcommand)]
pub enum BlobsCommand {
    /// The blobs you hold, what they use and your quota.
    List {
        /// Page (100 blobs a page, newest first).
        #[arg(long, default_value_t = 0)]
        page: u32,
    },
    /// Let a blob go: it no longer counts against your quota, and the market
    /// deletes it once no job of yours names it.
    Rm { digest: String },
}

pub fn upload(args: UploadArgs, client: &ClientArgs) -> Result<()> {
    let market = client.signed()?;
    for file in &args.files {
        let info = upload_one(&market, file)?;
        println!(
            "{}  {}  {}",
            info.digest,
            human_bytes(info.size),
            file.display()
        );
    }
    Ok(())
}

/// Upload `file` with a progress bar (hashing, then sending); its blob.
pub fn upload_one(market: &Client, file: &Path) -> Result<UploadInfo> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>9} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("valid template"),
    );
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut stage = None;
    let info = market
        .upload_file(file, &mut |now, done, total| {
            if stage != Some(now) {
                // Each stage's bar starts again, so its rate is its own.
                stage = Some(now);
                bar.reset();
                bar.set_message(match now {
                    UploadStage::Hashing => "hashing",
                    UploadStage::Sending => "sending",
                });
            }
            bar.set_length(total);
            bar.set_position(done);
        })
        .with_context(|| format!("uploading {name} (run the same command again to resume)"))?;
    bar.finish_and_clear();
    Ok(info)
}

pub fn blobs(command: BlobsCommand, client: &ClientArgs) -> Result<()> {
    let market = client.signed()?;
    match command {
        BlobsCommand::List { page } => {
            let storage: Storage = market.get_signed(&format!("/api/v1/storage?page={page}"))?;
            println!(
                "{} of {} used",
                human_bytes(storage.used_bytes),
                human_bytes(storage.quota_bytes)
            );
            for blob in &storage.blobs {
                println!("{}  {:>10}", blob.digest, human_bytes(blob.size));
            }
        }
        BlobsCommand::Rm { digest } => {
            let _: serde_json::Value = market.delete(&format!("/api/v1/blobs/{digest}"))?;
            println!("released {digest}");
        }
    }
    Ok(())
}

/// `bytes` for people: 1.5 GiB, 300 KiB, 12 B.
pub fn human_bytes(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
