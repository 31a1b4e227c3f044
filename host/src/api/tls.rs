//! TLS for the server (`--tls-cert`, `--tls-key`, PEM files), with rustls:
//! a listener for `axum::serve` whose connections are TLS streams. The
//! handshakes run on tasks of their own, so a client that stalls in one
//! never holds up the others.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{Certificate, PrivateKey, ServerConfig};
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The server's TLS config from a certificate chain and a private key
/// (PKCS#8, RSA or SEC1), both PEM; errors name the file and what is wrong.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let open = |p: &Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| format!("TLS: cannot read {}: {e}", p.display()))
    };
    let certs: Vec<Certificate> = rustls_pemfile::certs(&mut open(cert)?)
        .map_err(|e| format!("TLS: {} is not PEM: {e}", cert.display()))?
        .into_iter()
        .map(Certificate)
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "TLS: no certificate (`BEGIN CERTIFICATE`) in {}",
            cert.display()
        ));
    }
    let key_path = key;
    let key = rustls_pemfile::read_all(&mut open(key)?)
        .map_err(|e| format!("TLS: {} is not PEM: {e}", key.display()))?
        .into_iter()
        .find_map(|item| match item {
            rustls_pemfile::Item::PKCS8Key(k)
            | rustls_pemfile::Item::RSAKey(k)
            | rustls_pemfile::Item::ECKey(k) => Some(PrivateKey(k)),
            _ => None,
        })
        .ok_or_else(|| format!("TLS: no private key in {}", key.display()))?;
    let mut config = ServerConfig::builder()
        .with_safe_defaults()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS: {} with {}: {e}", cert.display(), key_path.display()))?;
    // WebSockets need HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS connections, accepted on `listener`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accept TCP connections on `listener` (on the current runtime) and
    /// hand on those whose handshake succeeds.
    pub fn new(listener: TcpListener, config: ServerConfig) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, go on.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (it never does while the runtime runs).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
