//! Signed requests. A mutating request carries four headers; the signature
//! covers the market it is meant for (the id the market announces at
//! `GET /api/v1/health`), the method, path and query, timestamp, nonce and
//! the blake3 digest of the body, so nothing of it can be changed, replayed
//! on the same market (nonces) or on another one (the market id).

use crate::keys::{KeyId, Keypair};

pub const HEADER_KEY: &str = "agora-key";
pub const HEADER_TIMESTAMP: &str = "agora-timestamp";
pub const HEADER_NONCE: &str = "agora-nonce";
pub const HEADER_SIGNATURE: &str = "agora-signature";
/// Stripe-style idempotency key: the first response is stored and returned
/// again for a retry with the same key and body.
pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How far a request's timestamp may be from the server's clock. Nonces are
/// remembered at least this long, so a replay is refused either way.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 64;

/// The bytes a request signature covers.
pub fn signed_bytes(market: &str, method: &str, path_and_query: &str, timestamp_ms: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "agora-request-v2\n{}\n{}\n{}\n{}\n{}\n{}",
        market,
        method.to_ascii_uppercase(),
        path_and_query,
        timestamp_ms,
        nonce,
        blake3::hash(body).to_hex()
    )
    .into_bytes()
}

/// The four auth headers for a request, as (name, value).
pub fn sign_request(key: &Keypair, market: &str, method: &str, path_and_query: &str, body: &[u8], now_ms: i64) -> Vec<(&'static str, String)> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("the OS provides randomness");
    let nonce = hex::encode(nonce);
    let signature = key.sign(&signed_bytes(market, method, path_and_query, now_ms, &nonce, body));
    vec![
        (HEADER_KEY, key.id().to_string()),
        (HEADER_TIMESTAMP, now_ms.to_string()),
        (HEADER_NONCE, nonce),
        (HEADER_SIGNATURE, signature),
    ]
}

/// Who signed a request (the nonce still has to be checked for replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key: KeyId,
    pub nonce: String,
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request is not signed: header `{0}` is missing")]
    Missing(&'static str),
    #[error("header `{0}` is malformed")]
    Malformed(&'static str),
    #[error("the request's timestamp is {skew_ms} ms from the server's clock (at most {MAX_CLOCK_SKEW_MS} allowed)")]
    Stale { skew_ms: i64 },
    #[error("the signature does not verify for this key, market, method, path and body")]
    BadSignature,
    #[error("this request was already seen (replayed nonce)")]
    Replayed,
}

/// Check a request's signature. `header` looks a header up by name.
pub fn verify_request<'a>(
    market: &str,
    method: &str,
    path_and_query: &str,
    header: impl Fn(&'static str) -> Option<&'a str>,
    body: &[u8],
    now_ms: i64,
) -> Result<Signer, AuthError> {
    check_headers(header, now_ms)?.verify(market, method, path_and_query, body)
}

/// A request's signature headers, well formed and fresh: all that can be
/// checked before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    key: KeyId,
    timestamp_ms: i64,
    nonce: &'a str,
    signature: &'a str,
}

/// Check a request's signature headers for presence, form and freshness,
/// without its body (a server refuses an unsigned or stale upload before
/// reading it). A well-formed signature that does not verify is found only
/// with the body: it signs the body.
pub fn check_headers<'a>(header: impl Fn(&'static str) -> Option<&'a str>, now_ms: i64) -> Result<SignedHeaders<'a>, AuthError> {
    let get = |name| header(name).ok_or(AuthError::Missing(name));
    let key = KeyId::parse(get(HEADER_KEY)?).map_err(|_| AuthError::Malformed(HEADER_KEY))?;
    let timestamp_ms: i64 = get(HEADER_TIMESTAMP)?.parse().map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP))?;
    let nonce = get(HEADER_NONCE)?;
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AuthError::Malformed(HEADER_NONCE));
    }
    let skew_ms = now_ms - timestamp_ms;
    if skew_ms.abs() > MAX_CLOCK_SKEW_MS {
        return Err(AuthError::Stale { skew_ms });
    }
    let signature = get(HEADER_SIGNATURE)?;
    // An ed25519 signature in hex; whether it verifies needs the body.
    if signature.len() != 128 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed(HEADER_SIGNATURE));
    }
    Ok(SignedHeaders { key, timestamp_ms, nonce, signature })
}

impl SignedHeaders<'_> {
    /// Verify the signature over the method, path and body.
    pub fn verify(self, market: &str, method: &str, path_and_query: &str, body: &[u8]) -> Result<Signer, AuthError> {
        self.key
            .verify(&signed_bytes(market, method, path_and_query, self.timestamp_ms, self.nonce, body), self.signature)
            .map_err(|_| AuthError::BadSignature)?;
        Ok(Signer { key: self.key, nonce: self.nonce.to_string(), timestamp_ms: self.timestamp_ms })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKET: &str = "m-market-a";

    fn check(headers: &[(&'static str, String)], method: &str, path: &str, body: &[u8], now: i64) -> Result<Signer, AuthError> {
        verify_request(MARKET, method, path, |name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()), body, now)
    }

    #[test]
    fn a_signed_request_verifies_and_nothing_else_does() {
        let key = Keypair::generate();
        let now = 1_700_000_000_000;
        let headers = sign_request(&key, MARKET, "POST", "/api/v1/transfers", b"{}", now);
        assert_eq!(check(&headers, "POST", "/api/v1/transfers", b"{}", now).unwrap().key, *key.id());
        assert_eq!(check(&headers, "POST", "/api/v1/transfers", b"{ }", now), Err(AuthError::BadSignature));
        assert_eq!(check(&headers, "PUT", "/api/v1/transfers", b"{}", now), Err(AuthError::BadSignature));
        assert_eq!(check(&headers, "POST", "/api/v1/holds", b"{}", now), Err(AuthError::BadSignature));
        // Captured on another market, replayed here within the skew window.
        let elsewhere = sign_request(&key, "m-market-b", "POST", "/api/v1/transfers", b"{}", now);
        assert_eq!(check(&elsewhere, "POST", "/api/v1/transfers", b"{}", now), Err(AuthError::BadSignature));
        assert!(matches!(check(&headers, "POST", "/api/v1/transfers", b"{}", now + MAX_CLOCK_SKEW_MS + 1), Err(AuthError::Stale { .. })));
        assert_eq!(check(&headers[1..], "POST", "/api/v1/transfers", b"{}", now), Err(AuthError::Missing(HEADER_KEY)));
        // A signature that is no ed25519 signature in hex is refused without the body.
        let mut garbled = headers.clone();
        garbled[3].1 = "zz".repeat(64);
        assert_eq!(check_headers(|name| garbled.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()), now), Err(AuthError::Malformed(HEADER_SIGNATURE)));
    }
}
