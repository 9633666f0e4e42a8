//! The market's edge for HTTPS: the certificate it serves (rustls, on
//! ring), and the accept loop that terminates TLS under a connection cap,
//! a handshake deadline and a header-read deadline, then hands each
//! connection to hyper with the market's router.
//!
//! Design choices:
//! - Without a certificate the market serves plain HTTP (`axum::serve`),
//!   for loopback or behind a TLS-terminating proxy (the README shows one).
//! - A permit of [`MAX_CONNECTIONS`] is taken before a connection is
//!   accepted, so a flood of idle sockets waits in the kernel's backlog
//!   instead of holding file descriptors and tasks here.
//! - A client that never finishes its handshake or its headers is dropped
//!   ([`TLS_HANDSHAKE_TIMEOUT`], [`HEADER_READ_TIMEOUT`]): a slow-loris
//!   holds a permit for seconds, not for ever.
//! - On shutdown the loop stops accepting, and connections get
//!   [`SHUTDOWN_GRACE`] to finish what they serve.

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

/// Connections served at once: enough for thousands of hosts polling and a
/// crowd of buyers, under the usual 4096 open-file limit with room for the
/// database and worker pipes.
pub const MAX_CONNECTIONS: usize = 2048;
/// How long a client has to complete its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers (restarted for each
/// request of a kept-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish their responses at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    let cert_error = |reason: String| TlsSetupError::Certificate { path: cert.display().to_string(), reason };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key { path: key.display().to_string(), reason: e.to_string() })?;
    // The process's provider: ring, the one crate feature built in.
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, private)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `router` over HTTPS on `listener` until `shutdown` resolves.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (acceptor, service, watcher) = (acceptor.clone(), TowerToHyperService::new(router.clone()), graceful.watcher());
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls_stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                return;
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls_stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!("an HTTPS connection ended: {e}");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open after the shutdown grace were dropped"),
    }
    Ok(())
}
