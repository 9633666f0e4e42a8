//! The market's edge: the certificate it serves (rustls), and the accept
//! loop that (for HTTPS) terminates TLS under a connection cap, a handshake
//! deadline and a header-read deadline, then hands each connection to
//! hyper with the market's router.
//!
//! Design choices:
//! - Without a certificate the market serves plain HTTP through the same
//!   loop (for loopback, or behind a TLS-terminating proxy: the README
//!   shows one), with the same cap in all and the same deadlines, but no
//!   cap per address: a proxy is every caller at once. A proxy that keeps
//!   idle connections to the market open keeps them under
//!   [`HEADER_READ_TIMEOUT`] (the market closes them then).
//! - A permit of [`connection_cap`] is taken before a connection is
//!   accepted, so a flood of idle sockets waits in the kernel's backlog
//!   instead of holding file descriptors and tasks here; the cap fits the
//!   process's open-file limit, which serving raises to its hard limit.
//! - One peer address holds at most [`MAX_CONNECTIONS_PER_PEER`] of them:
//!   a single client cannot take every slot.
//! - A client that never finishes its handshake or its headers is dropped
//!   ([`TLS_HANDSHAKE_TIMEOUT`], [`HEADER_READ_TIMEOUT`]), and so is one
//!   that stops reading what it asked for ([`WRITE_STALL_TIMEOUT`]). A
//!   client that reads a byte now and then keeps its connection; the
//!   per-peer cap is what bounds how many it holds.
//! - On shutdown the loop stops accepting, and connections get
//!   [`SHUTDOWN_GRACE`] to finish what they serve.

use crate::tally::Tally;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Connections served at once, at most: enough for thousands of hosts
/// polling and a crowd of buyers ([`connection_cap`] lowers it to fit the
/// open-file limit).
pub const MAX_CONNECTIONS: usize = 2048;
/// Connections one peer address holds at once: a host or a buyer's browser
/// needs a handful; a proxy in front should be given its own listener.
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// Open files kept for the rest of the process per connection allowed
/// (the database, verify workers' pipes, the web pages' own reads).
const FILES_PER_CONNECTION: u64 = 2;
/// How long a response may wait on a client that does not read it.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client has to complete its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers (restarted for each
/// request of a kept-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish their responses at shutdown:
/// under the 10 s a service manager usually waits after its SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Raise this process's open-file limit to its hard limit, and the
/// connections it can serve within it: [`MAX_CONNECTIONS`], or half the
/// limit when that is lower.
pub fn connection_cap() -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(
                "reading the open-file limit failed ({e}); serving at most 256 connections"
            );
            return 256;
        }
    };
    let cap = (limit / FILES_PER_CONNECTION).min(MAX_CONNECTIONS as u64) as usize;
    if cap < MAX_CONNECTIONS {
        tracing::warn!(
            "the open-file limit is {limit}: serving at most {cap} connections (raise LimitNOFILE or `ulimit -Hn` for {MAX_CONNECTIONS})"
        );
    }
    cap
}

/// Who a connection comes from, for the limits per peer: the address, an
/// IPv6 one cut to its /64 (one subscriber's usual allocation: one holder of
/// a /64 gets one share, not one per address).
pub(crate) fn peer_of(address: std::net::IpAddr) -> std::net::IpAddr {
    match address.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            std::net::IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())
        }
        v4 => v4,
    }
}

/// Why the market's certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading the certificate chain {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("reading the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and the key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server configuration for a PEM certificate chain and private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let cert_error = |reason: String| TlsSetupError::Certificate {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    // The provider named: rustls is built with ring (ureq's) and aws-lc-rs
    // (the object store's S3 client's), so there is no process default.
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, private)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `router` on `listener` until `shutdown`: HTTPS with `tls`, plain
/// HTTP without, under the edge's caps and deadlines (see the module).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(connection_cap()));
    // Connections open per peer address ([`peer_of`]).
    let peers: Arc<Tally<std::net::IpAddr>> = Arc::default();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over its share: closed at once, its permit back. Plain HTTP is
        // served to a proxy (on this machine or a load balancer), which is
        // every caller at once: only the cap in all holds there.
        let per_peer = if acceptor.is_none() {
            usize::MAX
        } else {
            MAX_CONNECTIONS_PER_PEER
        };
        let Ok(slot) = peers.enter(&peer_of(peer.ip()), per_peer, usize::MAX) else {
            continue;
        };
        // The peer's address on each request, for the per-peer request limit.
        let routed = tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let (acceptor, service, watcher) = (
            acceptor.clone(),
            TowerToHyperService::new(routed),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            let _held = (permit, slot);
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(WRITE_STALL_TIMEOUT));
            let stream = Box::pin(stream);
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let served = match acceptor {
                None => {
                    watcher
                        .watch(http1.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            watcher
                                .watch(http1.serve_connection(TokioIo::new(tls_stream), service))
                                .await
                        }
                        _ => return,
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!("a connection ended: {e}");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open after the shutdown grace were dropped"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::Slot;

    #[test]
    fn one_peer_holds_at_most_its_share_and_gets_it_back() {
        let peers: Arc<Tally<std::net::IpAddr>> = Arc::default();
        let enter = |address: std::net::IpAddr| {
            peers
                .enter(&peer_of(address), MAX_CONNECTIONS_PER_PEER, usize::MAX)
                .ok()
        };
        let (greedy, other): (std::net::IpAddr, std::net::IpAddr) =
            ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let mut held: Vec<Slot<std::net::IpAddr>> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| enter(greedy).expect("within its share"))
            .collect();
        assert!(enter(greedy).is_none(), "past its share");
        assert!(enter(other).is_some(), "another peer is served meanwhile");
        held.pop();
        let again = enter(greedy);
        assert!(again.is_some(), "a closed connection gives its slot back");
        drop((held, again));
        assert_eq!(
            peers.held_by(&greedy),
            0,
            "counts are forgotten, not leaked"
        );
        // One /64 is one peer, whatever address in it connects.
        let addresses: Vec<std::net::IpAddr> = (0..=MAX_CONNECTIONS_PER_PEER as u16)
            .map(|i| format!("2001:db8::{i:x}").parse().unwrap())
            .collect();
        let slots: Vec<Option<Slot<std::net::IpAddr>>> =
            addresses.iter().map(|a| enter(*a)).collect();
        assert!(
            slots.last().unwrap().is_none(),
            "a /64 shares one peer's share"
        );
    }
}
