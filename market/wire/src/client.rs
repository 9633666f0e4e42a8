//! A blocking HTTP client for the market API: signs mutating requests,
//! decodes JSON errors into [`ClientError::Api`], and speaks HTTPS (rustls)
//! trusting the platform's certificate authorities or only a given one
//! ([`Roots`]); a certificate it does not trust is [`ClientError::Certificate`].
//! There is no switch to accept any certificate.

use crate::api::{self, ErrorBody};
use crate::auth;
use crate::keys::Keypair;
use serde::{Serialize, de::DeserializeOwned};
use std::io::Read;

/// How long connecting to the market (TCP and TLS) may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long the market may take to start answering once a request is
/// sent: past the market's own request timeout (60 s), so a stalled
/// network fails a call instead of hanging a host for ever.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Largest response read (a component download is the biggest).
const MAX_RESPONSE_BYTES: u64 = 128 << 20;

/// Which certificate authorities a client trusts for an `https://` market.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's (through rustls-platform-verifier).
    Platform,
    /// Only the CA certificates in this PEM file: a private CA.
    CaFile(std::path::PathBuf),
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    key: Option<Keypair>,
    /// The origin of `base`, which signatures name ([`auth::origin_of`]).
    origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The market answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the market at {url}: {source}")]
    Transport { url: String, source: ureq::Error },
    /// The market's certificate does not verify against this client's roots.
    #[error(
        "the market at {url} presented a certificate this client does not trust: {}",
        explain(reason)
    )]
    Certificate {
        url: String,
        reason: rustls::CertificateError,
    },
    #[error("the CA certificate file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("unexpected response from the market: {0}")]
    Decode(String),
    #[error(
        "this command needs a key: pass --key FILE or set AGORA_KEY (make one with `agora keys new`)"
    )]
    NoKey,
    /// A local file the command reads or writes.
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

impl ClientError {
    /// The API error code, if the market sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether asking again may succeed: the market could not be reached
    /// or cut the answer off, or answered that it (or the balancer in
    /// front of it) is busy, failing (a database failing over answers 500)
    /// or unreachable for now (429, 500, 502, 503, 504). A refusal of the
    /// request itself (any other 4xx) is not. Callers bound their retries.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Decode(_) => true,
            ClientError::Api { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }
}

impl Client {
    /// A client for the market at `base` (e.g. `http://127.0.0.1:8080`, or
    /// an `https://` URL whose certificate the platform trusts).
    pub fn new(base: &str, key: Option<Keypair>) -> Self {
        Self::with_roots(base, key, &Roots::Platform).expect("the platform's roots need no file")
    }

    /// [`Client::new`], trusting `roots` for an `https://` market.
    pub fn with_roots(
        base: &str,
        key: Option<Keypair>,
        roots: &Roots,
    ) -> Result<Self, ClientError> {
        use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
        let root_certs = match roots {
            Roots::Platform => RootCerts::PlatformVerifier,
            Roots::CaFile(path) => RootCerts::new_with_certs(&ca_certificates(path)?),
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(root_certs)
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .build();
        let base = base.trim_end_matches('/').to_string();
        // The CLI checks the URL first; an unparsable one fails at the
        // first request anyway.
        let origin = auth::origin_of(&base).unwrap_or_else(|| base.clone());
        Ok(Client {
            base,
            agent: ureq::Agent::new_with_config(config),
            key,
            origin,
        })
    }

    /// The signature headers for a request by this client's key, for the
    /// market at the origin this client dials.
    fn signature(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>, ClientError> {
        let key = self.key.as_ref().ok_or(ClientError::NoKey)?;
        Ok(auth::sign_request(
            key,
            &self.origin,
            method,
            path,
            body,
            auth::now_ms(),
        ))
    }

    /// The market's URL this client talks to.
    pub fn market(&self) -> &str {
        &self.base
    }

    pub fn key(&self) -> Option<&Keypair> {
        self.key.as_ref()
    }

    /// GET `path` (under the base URL) as JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        decode(&self.get_bytes(path)?)
    }

    /// GET `path`, signed (for reads only the owner may make).
    pub fn get_signed<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        decode(&self.send("GET", path, &[], None, None)?)
    }

    /// Follow the server-sent events at `path` (signed GET), calling
    /// `on_event(event, data)` for each until it returns false or the
    /// stream ends.
    pub fn follow_events(
        &self,
        path: &str,
        on_event: &mut dyn FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        let headers = self.signature("GET", path, &[])?;
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url).header("accept", "text/event-stream");
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let response = request
            .call()
            .map_err(|source| transport_error(&url, source))?;
        if !response.status().is_success() {
            return read(response).map(|_| ());
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let (mut event, mut data) = (String::new(), String::new());
        for line in std::io::BufRead::lines(reader) {
            let line = line.map_err(|e| ClientError::Decode(format!("event stream: {e}")))?;
            if line.is_empty() {
                // A blank line ends an event (comments and keep-alives have
                // no data).
                if !data.is_empty()
                    && !on_event(if event.is_empty() { "message" } else { &event }, &data)
                {
                    return Ok(());
                }
                event.clear();
                data.clear();
            } else if let Some(value) = line.strip_prefix("event:") {
                event = value.trim_start().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        Ok(())
    }

    /// GET `path`, signed, streamed into `sink` (a blob of any size: no
    /// response limit); the bytes written.
    pub fn download_signed(
        &self,
        path: &str,
        sink: &mut dyn std::io::Write,
    ) -> Result<u64, ClientError> {
        let headers = self.signature("GET", path, &[])?;
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let response = request
            .call()
            .map_err(|source| transport_error(&url, source))?;
        if !response.status().is_success() {
            return read(response).map(|_| 0);
        }
        let body = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader();
        receive_into(body, sink).map_err(|e| ClientError::Decode(format!("downloading {url}: {e}")))
    }

    /// GET `path`, signed, as raw bytes.
    pub fn get_signed_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.send("GET", path, &[], None, None)
    }

    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .call()
            .map_err(|source| transport_error(&url, source))?;
        read(response)
    }

    /// A signed POST of `body` as JSON, with an idempotency key.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        decode(&self.send("POST", path, &bytes, idempotency_key, None)?)
    }

    /// An unsigned PUT of raw `body` to `path` (an upload's chunk: its
    /// bytes are checked against the upload's declared values instead).
    pub fn put_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .put(&url)
            .header("content-type", "application/octet-stream")
            .send(body)
            .map_err(|source| transport_error(&url, source))?;
        decode(&read(response)?)
    }

    /// A signed PUT of raw `body` to `path` (an output uploaded under a
    /// lease: the signature covers its bytes, whose blake3 is its digest).
    pub fn put_signed_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
    ) -> Result<T, ClientError> {
        decode(&self.send("PUT", path, body, None, None)?)
    }

    /// A signed DELETE of `path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        decode(&self.send("DELETE", path, &[], None, None)?)
    }

    /// A signed POST whose upload reports its progress as (sent, total).
    pub fn post_with_progress<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        decode(&self.send("POST", path, &bytes, None, Some(progress))?)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
        progress: Option<&mut dyn FnMut(u64, u64)>,
    ) -> Result<Vec<u8>, ClientError> {
        let headers = self.signature(method, path, body)?;
        let url = format!("{}{path}", self.base);
        let builder = match method {
            "GET" | "DELETE" => None,
            "PUT" => Some(self.agent.put(&url)),
            _ => Some(self.agent.post(&url)),
        };
        let transport = |source| transport_error(&url, source);
        let response = match builder {
            None => {
                let mut request = if method == "DELETE" {
                    self.agent.delete(&url)
                } else {
                    self.agent.get(&url)
                };
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                request.call().map_err(transport)?
            }
            Some(mut request) => {
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                if let Some(k) = idempotency_key {
                    request = request.header(auth::HEADER_IDEMPOTENCY_KEY, k);
                }
                let content_type = match method {
                    "PUT" => "application/octet-stream",
                    _ => "application/json",
                };
                request = request.header("content-type", content_type);
                match progress {
                    None => request.send(body).map_err(transport)?,
                    Some(progress) => {
                        let mut reader = Progress {
                            inner: body,
                            sent: 0,
                            total: body.len() as u64,
                            report: progress,
                        };
                        request = request.header("content-length", body.len().to_string());
                        request
                            .send(ureq::SendBody::from_reader(&mut reader))
                            .map_err(transport)?
                    }
                }
            }
        };
        read(response)
    }
}

struct Progress<'a> {
    inner: &'a [u8],
    sent: u64,
    total: u64,
    report: &'a mut dyn FnMut(u64, u64),
}

impl Read for Progress<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let chunk = buf.len().min(64 << 10);
        let n = self.inner.read(&mut buf[..chunk])?;
        self.sent += n as u64;
        (self.report)(self.sent, self.total);
        Ok(n)
    }
}

/// Pieces a download holds between the connection and its sink.
const DOWNLOAD_PIECES: usize = 4;
/// Bytes of one such piece: a blob may be gigabytes.
const DOWNLOAD_PIECE_BYTES: usize = 1 << 20;

/// Copy `body` into `sink`, the connection read on a thread of its own so
/// that receiving overlaps what the sink does (hashing, writing a file);
/// the bytes written. On the sink's error the reader stops after the read
/// it is in (its thread owns the connection, and ends with it). The body
/// ends only at a piece short of full: a reader that stops otherwise is an
/// error, never a short success.
fn receive_into(
    body: impl Read + Send + 'static,
    sink: &mut dyn std::io::Write,
) -> std::io::Result<u64> {
    let (pieces, arriving) =
        std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(DOWNLOAD_PIECES);
    let (give_back, returned) = std::sync::mpsc::channel::<Vec<u8>>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("agora-download".into())
        .spawn(move || read_pieces(body, &stopped, &pieces, &returned))?;
    let received = (|| {
        let mut written = 0;
        for piece in &arriving {
            let piece = piece?;
            sink.write_all(&piece)?;
            written += piece.len() as u64;
            if piece.len() < DOWNLOAD_PIECE_BYTES {
                return Ok(written);
            }
            let _ = give_back.send(piece);
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the download's reader stopped before the end",
        ))
    })();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    received
}

/// Read `body` into pieces of [`DOWNLOAD_PIECE_BYTES`] (the last one short,
/// maybe empty) sent on `pieces`, reusing those `returned`, until the end,
/// an error, or `stop`.
fn read_pieces(
    mut body: impl Read,
    stop: &std::sync::atomic::AtomicBool,
    pieces: &std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    returned: &std::sync::mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let mut piece = returned
            .try_recv()
            .unwrap_or_else(|_| vec![0; DOWNLOAD_PIECE_BYTES]);
        let mut filled = 0;
        while filled < DOWNLOAD_PIECE_BYTES {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            match body.read(&mut piece[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = pieces.send(Err(e));
                    return;
                }
            }
        }
        piece.truncate(filled);
        if pieces.send(Ok(piece)).is_err() || filled < DOWNLOAD_PIECE_BYTES {
            return;
        }
    }
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, ClientError> {
    let status = response.status().as_u16();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    if (200..300).contains(&status) {
        return Ok(bytes);
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Err(ClientError::Api {
            status,
            code: body.error.code,
            message: body.error.message,
        }),
        Err(_) => Err(ClientError::Api {
            status,
            code: api::codes::INTERNAL.into(),
            message: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
        }),
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(e.to_string()))
}

/// A transport error, or the certificate error it is.
fn transport_error(url: &str, source: ureq::Error) -> ClientError {
    match certificate_error(&source) {
        Some(reason) => ClientError::Certificate {
            url: url.to_string(),
            reason,
        },
        None => ClientError::Transport {
            url: url.to_string(),
            source,
        },
    }
}

/// The CA certificates of a PEM file (at least one).
fn ca_certificates(
    path: &std::path::Path,
) -> Result<Vec<ureq::tls::Certificate<'static>>, ClientError> {
    let error = |reason: String| ClientError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(certificate) =
            item.map_err(|e| error(e.to_string()))?
        {
            certificates.push(certificate);
        }
    }
    if certificates.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(certificates)
}

/// The certificate error inside a transport error, if that is what it is:
/// rustls reports it through the handshake's I/O error, typed (never
/// decided from the words of a message).
fn certificate_error(error: &ureq::Error) -> Option<rustls::CertificateError> {
    let rustls_error = match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match rustls_error? {
        rustls::Error::InvalidCertificate(reason) => Some(reason.clone()),
        _ => None,
    }
}

/// What a certificate error means to the person who sees it.
fn explain(reason: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match reason {
        E::UnknownIssuer => "no certificate authority this client trusts issued it (for a private CA, pass --ca-cert FILE)".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => "it was issued for another host name".into(),
        E::Expired | E::ExpiredContext { .. } => "it has expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet (check this machine's clock)".into(),
        E::Revoked => "it was revoked".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `len` bytes that fails with `error` at its end instead of
    /// ending, when given.
    struct Body {
        at: usize,
        len: usize,
        error: Option<std::io::ErrorKind>,
    }

    impl Read for Body {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.len {
                return match self.error {
                    Some(kind) => Err(kind.into()),
                    None => Ok(0),
                };
            }
            // Odd read sizes, as a socket gives them.
            let n = buf.len().min(self.len - self.at).min(70_001);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((self.at + i) % 251) as u8;
            }
            self.at += n;
            Ok(n)
        }
    }

    fn body(len: usize, error: Option<std::io::ErrorKind>) -> Body {
        Body { at: 0, len, error }
    }

    #[test]
    fn a_download_arrives_whole_and_in_order_or_fails() {
        let piece = DOWNLOAD_PIECE_BYTES;
        for len in [
            0,
            1,
            piece - 1,
            piece,
            piece + 1,
            3 * piece,
            7 * piece + 12_345,
        ] {
            let mut sink = Vec::new();
            assert_eq!(
                receive_into(body(len, None), &mut sink).unwrap(),
                len as u64
            );
            assert_eq!(sink.len(), len);
            assert!(
                sink.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
                "{len} bytes in order"
            );
        }
        // A connection that breaks, at a piece's end or inside one, is an
        // error, never a short success.
        for len in [0, piece, 2 * piece + 5] {
            let broken = body(len, Some(std::io::ErrorKind::ConnectionReset));
            let error = receive_into(broken, &mut Vec::new()).unwrap_err();
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset,
                "broken after {len}"
            );
        }
    }

    /// A sink that refuses (a market sending more than it listed) ends the
    /// download with its error, and the reader stops.
    #[test]
    fn a_sink_that_refuses_ends_the_download() {
        struct Full(usize);
        impl std::io::Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 + buf.len() > DOWNLOAD_PIECE_BYTES {
                    return Err(std::io::Error::other("more than listed"));
                }
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let endless = body(usize::MAX, None);
        let error = receive_into(endless, &mut Full(0)).unwrap_err();
        assert_eq!(error.to_string(), "more than listed");
    }
}
