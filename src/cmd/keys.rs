//! `agora keys new|show`: your identity is an ed25519 key in a file only you
//! can read.

use super::client::ClientArgs;
use agora_wire::Keypair;
use anyhow::{Result, bail};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new key file (refuses to overwrite one).
    New,
    /// Print the key's account id (its public key).
    Show,
}

pub fn run(command: KeysCommand, client: &ClientArgs) -> Result<()> {
    let path = client.key_path();
    match command {
        KeysCommand::New => {
            if path.exists() {
                bail!(
                    "{} already exists; pass --key FILE for another key",
                    path.display()
                );
            }
            let key = Keypair::generate();
            key.write_new(&path)?;
            eprintln!("wrote a new key to {} (mode 0600)", path.display());
            println!("{}", key.id());
        }
        KeysCommand::Show => println!("{}", client.keypair()?.id()),
    }
    Ok(())
}
