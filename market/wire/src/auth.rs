//! Signed requests. A signed request carries five headers; the signature
//! covers the market it is meant for (the origin the client connected to:
//! `https://market.example.org`), the method, path and query, timestamp,
//! nonce and the blake3 digest of the body, so nothing of it can be changed,
//! replayed on the same market (nonces) or on another one: a market accepts
//! only its own public origins, and a hostile market cannot pass as another
//! one's origin to the client (TLS names the host the client dialled).

use crate::keys::{KeyId, Keypair};

pub const HEADER_KEY: &str = "agora-key";
pub const HEADER_TIMESTAMP: &str = "agora-timestamp";
pub const HEADER_NONCE: &str = "agora-nonce";
pub const HEADER_SIGNATURE: &str = "agora-signature";
/// The origin the request was signed for (also inside the signature; sent so
/// that a market can say which market a request was meant for).
pub const HEADER_ORIGIN: &str = "agora-origin";

/// Longest origin accepted.
pub const MAX_ORIGIN_LEN: usize = 256;
/// Stripe-style idempotency key: the first response is stored and returned
/// again for a retry with the same key and body.
pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How far a request's timestamp may be from the server's clock. Nonces are
/// remembered at least this long, so a replay is refused either way.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 64;

/// A URL's origin as signatures name it: `scheme://host[:port]`, scheme and
/// host in lower case, no user part, the scheme's default port left out.
/// `None` for anything but an `http` or `https` URL with a host.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority
        .rsplit('@')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let host_port = host_port.strip_suffix(default_port).unwrap_or(&host_port);
    let valid = |c: char| c.is_ascii_alphanumeric() || "-._:[]".contains(c);
    if host_port.is_empty() || host_port.starts_with(':') || !host_port.chars().all(valid) {
        return None;
    }
    Some(format!("{scheme}://{host_port}"))
}

/// The bytes a request signature covers.
pub fn signed_bytes(
    origin: &str,
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "agora-request-v2\n{}\n{}\n{}\n{}\n{}\n{}",
        origin,
        method.to_ascii_uppercase(),
        path_and_query,
        timestamp_ms,
        nonce,
        blake3::hash(body).to_hex()
    )
    .into_bytes()
}

/// The auth headers for a request to the market at `origin` ([`origin_of`]),
/// as (name, value).
pub fn sign_request(
    key: &Keypair,
    origin: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_ms: i64,
) -> Vec<(&'static str, String)> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("the OS provides randomness");
    let nonce = hex::encode(nonce);
    let signature = key.sign(&signed_bytes(
        origin,
        method,
        path_and_query,
        now_ms,
        &nonce,
        body,
    ));
    vec![
        (HEADER_KEY, key.id().to_string()),
        (HEADER_ORIGIN, origin.to_string()),
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
    #[error(
        "the request's timestamp is {skew_ms} ms from the server's clock (at most {MAX_CLOCK_SKEW_MS} allowed)"
    )]
    Stale { skew_ms: i64 },
    #[error("the request was signed for the market at {signed_for}, not this one ({this})")]
    OtherMarket { signed_for: String, this: String },
    #[error("the signature does not verify for this key, market, method, path and body")]
    BadSignature,
    #[error("this request was already seen (replayed nonce)")]
    Replayed,
}

/// Check a request's signature. `header` looks a header up by name.
/// Check a request to the market whose public origins are `origins`.
pub fn verify_request<'a>(
    origins: &[String],
    method: &str,
    path_and_query: &str,
    header: impl Fn(&'static str) -> Option<&'a str>,
    body: &[u8],
    now_ms: i64,
) -> Result<Signer, AuthError> {
    check_headers(header, now_ms)?.verify(origins, method, path_and_query, body)
}

/// A request's signature headers, well formed and fresh: all that can be
/// checked before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    key: KeyId,
    origin: &'a str,
    timestamp_ms: i64,
    nonce: &'a str,
    signature: &'a str,
}

/// Check a request's signature headers for presence, form and freshness,
/// without its body (a server refuses an unsigned or stale upload before
/// reading it). A well-formed signature that does not verify is found only
/// with the body: it signs the body.
pub fn check_headers<'a>(
    header: impl Fn(&'static str) -> Option<&'a str>,
    now_ms: i64,
) -> Result<SignedHeaders<'a>, AuthError> {
    let get = |name| header(name).ok_or(AuthError::Missing(name));
    let key = KeyId::parse(get(HEADER_KEY)?).map_err(|_| AuthError::Malformed(HEADER_KEY))?;
    let origin = get(HEADER_ORIGIN)?;
    if origin.len() > MAX_ORIGIN_LEN || origin_of(origin).as_deref() != Some(origin) {
        return Err(AuthError::Malformed(HEADER_ORIGIN));
    }
    let timestamp_ms: i64 = get(HEADER_TIMESTAMP)?
        .parse()
        .map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP))?;
    let nonce = get(HEADER_NONCE)?;
    if nonce.is_empty()
        || nonce.len() > MAX_NONCE_LEN
        || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
    {
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
    Ok(SignedHeaders {
        key,
        origin,
        timestamp_ms,
        nonce,
        signature,
    })
}

impl SignedHeaders<'_> {
    /// Verify the signature over the method, path and body.
    /// Verify the signature for a market whose public origins are `origins`.
    pub fn verify(
        self,
        origins: &[String],
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<Signer, AuthError> {
        if !origins.iter().any(|o| o == self.origin) {
            return Err(AuthError::OtherMarket {
                signed_for: self.origin.to_string(),
                this: origins.join(", "),
            });
        }
        self.key
            .verify(
                &signed_bytes(
                    self.origin,
                    method,
                    path_and_query,
                    self.timestamp_ms,
                    self.nonce,
                    body,
                ),
                self.signature,
            )
            .map_err(|_| AuthError::BadSignature)?;
        Ok(Signer {
            key: self.key,
            nonce: self.nonce.to_string(),
            timestamp_ms: self.timestamp_ms,
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKET: &str = "https://market.example.org";

    fn check(
        headers: &[(&'static str, String)],
        method: &str,
        path: &str,
        body: &[u8],
        now: i64,
    ) -> Result<Signer, AuthError> {
        let origins = [MARKET.to_string(), "http://127.0.0.1:8080".to_string()];
        verify_request(
            &origins,
            method,
            path,
            |name| {
                headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            },
            body,
            now,
        )
    }

    #[test]
    fn origins_are_normalized_and_only_web_urls_have_one() {
        assert_eq!(
            origin_of("HTTPS://Market.Example.org:443/api?x").as_deref(),
            Some("https://market.example.org")
        );
        assert_eq!(
            origin_of("http://user:pw@127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin_of("http://[::1]:80/").as_deref(),
            Some("http://[::1]")
        );
        assert_eq!(
            origin_of("https://m.example:8443").as_deref(),
            Some("https://m.example:8443")
        );
        for bad in [
            "ftp://x",
            "https://",
            "https://:443",
            "market.example.org",
            "https://a b",
            "https://a\nb",
        ] {
            assert_eq!(origin_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_signed_request_verifies_and_nothing_else_does() {
        let key = Keypair::generate();
        let now = 1_700_000_000_000;
        let headers = sign_request(&key, MARKET, "POST", "/api/v1/transfers", b"{}", now);
        assert_eq!(
            check(&headers, "POST", "/api/v1/transfers", b"{}", now)
                .unwrap()
                .key,
            *key.id()
        );
        assert_eq!(
            check(&headers, "POST", "/api/v1/transfers", b"{ }", now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&headers, "PUT", "/api/v1/transfers", b"{}", now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&headers, "POST", "/api/v1/holds", b"{}", now),
            Err(AuthError::BadSignature)
        );
        // Made for another market and replayed here within the skew window:
        // as sent, or with the origin header rewritten to this market's.
        let elsewhere = sign_request(
            &key,
            "https://other.example",
            "POST",
            "/api/v1/transfers",
            b"{}",
            now,
        );
        assert!(matches!(
            check(&elsewhere, "POST", "/api/v1/transfers", b"{}", now),
            Err(AuthError::OtherMarket { .. })
        ));
        let mut rewritten = elsewhere.clone();
        rewritten[1].1 = MARKET.into();
        assert_eq!(
            check(&rewritten, "POST", "/api/v1/transfers", b"{}", now),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            check(
                &headers,
                "POST",
                "/api/v1/transfers",
                b"{}",
                now + MAX_CLOCK_SKEW_MS + 1
            ),
            Err(AuthError::Stale { .. })
        ));
        assert_eq!(
            check(&headers[1..], "POST", "/api/v1/transfers", b"{}", now),
            Err(AuthError::Missing(HEADER_KEY))
        );
        // A signature that is no ed25519 signature in hex is refused without the body.
        let mut garbled = headers.clone();
        garbled[4].1 = "zz".repeat(64);
        assert_eq!(
            check_headers(
                |name| garbled
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str()),
                now
            ),
            Err(AuthError::Malformed(HEADER_SIGNATURE))
        );
    }
}
