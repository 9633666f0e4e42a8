//! The edge under attack over real sockets and real TLS: a flood of idle
//! connections from one address, clients that never finish their handshake
//! or their headers. Loopback addresses other than 127.0.0.1 stand for
//! other peers (Linux routes all of 127.0.0.0/8 to loopback).

use crate::*;
use agora_market::edge::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS_PER_PEER, TLS_HANDSHAKE_TIMEOUT};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server has closed `stream` (a read ends) within `wait`.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

// One address opens all the connections it may and leaves them idle, or
// finishes the handshake and sends half a request: past its share its next
// connection is dropped, another address is served meanwhile, and the
// idle ones are cut at the handshake and header deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_flood_from_one_address_is_cut_while_another_is_served() {
    let m = TestMarket::sqlite().await;
    let dir = std::env::temp_dir().join(format!("agora-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let tls = agora_market::edge::tls_config(&cert_path, &key_path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = m.state.clone();
    tokio::spawn(agora_market::serve_with(
        listener,
        state,
        axum::Router::new(),
        Some(tls),
        std::future::pending(),
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let honest_read = async |from: &str| {
        let tcp = connect_from(from, address).await;
        let mut tls = connector
            .connect(name.clone(), tcp)
            .await
            .expect("the handshake completes");
        tls.write_all(
            b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(
        honest_read("127.0.0.3").await.starts_with("HTTP/1.1 200"),
        "served before the flood"
    );

    // The flood: most connections never start their handshake; a few
    // finish it and send half a request's headers.
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_PEER - 4 {
        idle.push(connect_from("127.0.0.2", address).await);
    }
    let mut half = Vec::new();
    for _ in 0..4 {
        let mut tls = connector
            .connect(name.clone(), connect_from("127.0.0.2", address).await)
            .await
            .unwrap();
        tls.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        half.push(tls);
    }
    // Give the accept loop time to count them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut one_more = connect_from("127.0.0.2", address).await;
    assert!(
        closed_within(&mut one_more, Duration::from_secs(5)).await,
        "past its share, the address's next connection is dropped"
    );
    let answer = honest_read("127.0.0.3").await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "another address is served during the flood: {answer}"
    );

    // The deadlines cut the flood without any help.
    let deadline = TLS_HANDSHAKE_TIMEOUT.max(HEADER_READ_TIMEOUT) + Duration::from_secs(5);
    for stream in idle.iter_mut() {
        assert!(
            closed_within(stream, deadline.saturating_sub(started.elapsed())).await,
            "a connection that never shook hands is cut"
        );
    }
    for stream in half.iter_mut() {
        assert!(
            closed_within(stream, deadline.saturating_sub(started.elapsed())).await,
            "half a request's headers are cut"
        );
    }
    assert!(
        honest_read("127.0.0.2").await.starts_with("HTTP/1.1 200"),
        "once cut, the address is served again"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// Plain HTTP (loopback, or behind a TLS-terminating proxy) goes through the
// same edge: a client that sends half its headers is cut at the header
// deadline while others are served, and a proxy on this machine, which is
// every caller at once, is not held to one address's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_cuts_half_sent_headers_and_serves_a_local_proxy_in_full() {
    let m = TestMarket::sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(agora_market::serve_with(
        listener,
        m.state.clone(),
        axum::Router::new(),
        None,
        std::future::pending(),
    ));
    let get = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut proxied = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_PEER + 4 {
        proxied.push(connect_from("127.0.0.2", address).await);
    }
    let mut slow = connect_from("127.0.0.3", address).await;
    let slow_since = Instant::now();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut last = proxied.pop().unwrap();
    last.write_all(get).await.unwrap();
    let mut answer = Vec::new();
    last.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "the proxy's connection past one address's share is served: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        closed_within(&mut slow, HEADER_READ_TIMEOUT + Duration::from_secs(5)).await,
        "half-sent headers are cut"
    );
    assert!(
        slow_since.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "cut by the header deadline, not at once"
    );
    let mut honest = connect_from("127.0.0.4", address).await;
    honest.write_all(get).await.unwrap();
    let mut answer = Vec::new();
    honest.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
