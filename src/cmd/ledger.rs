//! `agora balance` and `agora mint`: credits.

use super::client::ClientArgs;
use agora_wire::api::{Balance, MintRequest, Page, Transfer};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct BalanceArgs {
    /// Also list the latest transfers.
    #[arg(long)]
    history: bool,
    /// Another account (operator only).
    #[arg(long)]
    account: Option<String>,
}

#[derive(Args)]
pub struct MintArgs {
    /// The account (key id) to credit.
    account: String,
    amount: u64,
    /// The transfer id (a retry with the same id mints once).
    #[arg(long)]
    id: Option<String>,
}

pub fn balance(args: BalanceArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let account = args
        .account
        .unwrap_or_else(|| client.key().expect("signed").id().to_string());
    let b: Balance = client.get_signed(&format!("/api/v1/accounts/{account}"))?;
    println!("account    {}", b.account);
    println!("available  {} credits", b.available);
    println!("held       {} credits (in escrow)", b.debits_pending);
    println!("incoming   {} credits (pending)", b.credits_pending);
    if args.history {
        let page: Page<Transfer> =
            client.get_signed(&format!("/api/v1/accounts/{account}/transfers?per_page=20"))?;
        println!("\n{} transfers, latest first:", page.total);
        for t in page.items {
            let sign = if t.credit == account { "+" } else { "-" };
            println!(
                "  {:<8} {sign}{:<10} {:<10} {}",
                t.kind,
                t.amount,
                format!("{:?}", t.state).to_lowercase(),
                t.id
            );
        }
    }
    Ok(())
}

pub fn mint(args: MintArgs, client_args: &ClientArgs) -> Result<()> {
    let client = client_args.signed()?;
    let id = args.id.unwrap_or_else(|| {
        format!(
            "mint-{}-{}",
            &args.account[..12.min(args.account.len())],
            agora_wire::auth::now_ms()
        )
    });
    let transfer: Transfer = client.post(
        "/api/v1/mint",
        &MintRequest {
            id: id.clone(),
            account: args.account,
            amount: args.amount,
        },
        Some(&id),
    )?;
    println!(
        "minted {} credits to {} ({})",
        transfer.amount, transfer.credit, transfer.id
    );
    Ok(())
}
