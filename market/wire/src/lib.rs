//! # agora-wire: what crosses the wire to and from the Agora market
//!
//! - [`keys`]: identities. Every account is an ed25519 public key; key files.
//! - [`auth`]: signed requests (key, timestamp, nonce, body digest) and their
//!   verification (`verify_strict`: no malleable or weak-key signatures).
//! - [`log`]: the append-only, hash-chained, publisher-signed package log a
//!   client checks to detect a swapped version or a rollback.
//! - [`api`]: the JSON types of the HTTP API and its error codes.
//! - [`limits`]: the limits of a work unit the market and providers share.
//! - [`chunks`]: a blob in chunks, each checked on arrival against the
//!   blob's blake3 digest (uploads).
//! - [`client`] (feature `client`): the blocking HTTP client of the CLI and
//!   the provider host; [`upload`], a file uploaded as a blob through it.
//!
//! Only types in this crate are serialized onto the wire.

pub mod api;
pub mod auth;
pub mod chunks;
#[cfg(feature = "client")]
pub mod client;
pub mod keys;
pub mod limits;
pub mod log;
#[cfg(test)]
mod properties;
#[cfg(feature = "client")]
pub mod upload;

pub use keys::{KeyId, Keypair};

/// Whether `text` is a blob digest as the market writes them: 64 lowercase
/// hex digits (blake3).
pub fn is_digest_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// blake3 of `bytes`, hex.
pub fn digest_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
