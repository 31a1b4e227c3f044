//! Read access and transport over real HTTP: with `--read-token`, `/ws`,
//! `GET /api/…` and `/metrics` need it (401 without, 403 with a wrong one;
//! the admin token reads too, the read token changes nothing), `/health`
//! stays open; with `--tls-cert`/`--tls-key` the same server speaks HTTPS
//! and `wss://` (certificates made here with rcgen), a client that does not
//! trust the certificate is refused, and unusable files stop the start with
//! a message naming them.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const READ: &str = "read-secret-1";
const ADMIN: &str = "admin-secret-1";

fn host(plugins: &std::path::Path, data: &std::path::Path, port: u16) -> HostCmd {
    HostCmd::new(plugins)
        .rate(2000)
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data)
        .admin_token(ADMIN)
        .args(["--read-token", READ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_token_guards_reading_and_only_reading() {
    let plugins = plugins_dir(&["page-views", "error-rate"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = host(plugins.path(), data.path(), port).spawn();
    wait_ready(port);
    let bearer = |t: &str| format!("Bearer {t}");
    for path in ["/api/plugins", "/api/pipeline", "/api/history", "/metrics"] {
        let (code, body) = http(port, "GET", path, &[], b"").unwrap();
        assert_eq!(code, 401, "{path} without a token: {body}");
        assert!(body.contains("RTAP_READ_TOKEN"), "{body}");
        let (code, _) = http(
            port,
            "GET",
            path,
            &[("Authorization", &bearer("nope"))],
            b"",
        )
        .unwrap();
        assert_eq!(code, 403, "{path} with a wrong token");
        let (code, body) =
            http(port, "GET", path, &[("Authorization", &bearer(READ))], b"").unwrap();
        assert_eq!(code, 200, "{path} with the read token: {body}");
        let (code, _) = http(port, "GET", path, &[("Authorization", &bearer(ADMIN))], b"").unwrap();
        assert_eq!(code, 200, "{path} with the admin token");
    }
    // Probes stay open.
    assert_eq!(http(port, "GET", "/health", &[], b"").unwrap().0, 200);
    // The read token changes nothing.
    let (code, _) = http(
        port,
        "PATCH",
        "/api/plugins/page-views/config",
        &[("Authorization", &bearer(READ))],
        b"{}",
    )
    .unwrap();
    assert_eq!(code, 403, "the read token must not change plugins");
    // The WebSocket: refused without the token, streams with it.
    let url = format!("ws://127.0.0.1:{port}/ws");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!(
            "/ws without the token: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?access_token={READ}"))
        .await
        .unwrap();
    let (_tx, mut rx) = ws.split();
    let msg = tokio::time::timeout(Duration::from_secs(20), rx.next())
        .await
        .expect("a message on /ws within 20 s")
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&msg.into_text().unwrap()).unwrap();
    assert!(v["type"].is_string(), "{v}");
}

/// A CA, and a certificate for `localhost` it signed: (CA DER, cert PEM, key PEM).
fn certificates() -> (Vec<u8>, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.der().to_vec(), cert.pem(), key.serialize_pem())
}

/// A TLS connection to the host that trusts `ca`.
async fn tls_connect(
    port: u16,
    ca: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(&rustls::Certificate(ca.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_safe_defaults()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// `GET path` over TLS: the whole response.
async fn https_get(port: u16, ca: &[u8], path: &str, token: &str) -> String {
    let mut s = tls_connect(port, ca).await.expect("TLS handshake");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_tls() {
    let (ca, cert_pem, key_pem) = certificates();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let plugins = plugins_dir(&["page-views"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = host(plugins.path(), data.path(), port)
        .args(["--tls-cert".as_ref(), cert.as_os_str()])
        .args(["--tls-key".as_ref(), key.as_os_str()])
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let resp = loop {
        if tls_connect(port, &ca).await.is_ok() {
            break https_get(port, &ca, "/api/pipeline", READ).await;
        }
        assert!(Instant::now() < deadline, "no TLS server on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"events_in\""), "{resp}");
    let resp = https_get(port, &ca, "/api/pipeline", "wrong").await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    // Plain HTTP on the TLS port gets no answer.
    assert!(http(port, "GET", "/health", &[], b"").is_none());
    // A client that trusts another CA refuses the server.
    let (other_ca, _, _) = certificates();
    let Err(err) = tls_connect(port, &other_ca).await else {
        panic!("a client that trusts another CA connected");
    };
    assert!(err.to_string().contains("certificate"), "{err}");
    // wss:// with the read token.
    let tls = tls_connect(port, &ca).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{port}/ws?access_token={READ}"),
        tls,
    )
    .await
    .unwrap();
    let (_tx, mut rx) = ws.split();
    let msg = tokio::time::timeout(Duration::from_secs(20), rx.next())
        .await
        .expect("a message on wss:// within 20 s")
        .unwrap()
        .unwrap();
    assert!(msg.into_text().unwrap().starts_with('{'));
}

#[test]
fn unusable_tls_files_stop_the_start_with_their_names() {
    let plugins = plugins_dir(&["page-views"]);
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, certificates().2).unwrap();
    let run = |cert: &std::path::Path| {
        let out = host(plugins.path(), data.path(), free_port())
            .args(["--tls-cert".as_ref(), cert.as_os_str()])
            .args(["--tls-key".as_ref(), key.as_os_str()])
            .output();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&cert);
    assert!(
        err.contains("no certificate") && err.contains("cert.pem"),
        "{err}"
    );
    let missing = dir.path().join("missing.pem");
    let err = run(&missing);
    assert!(
        err.contains("cannot read") && err.contains("missing.pem"),
        "{err}"
    );
}
