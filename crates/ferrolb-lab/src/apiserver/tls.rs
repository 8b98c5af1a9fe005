//! The server's credentials and TLS.
//!
//! kubectl (client-go) sends the credentials of a kubeconfig only over HTTPS, so a server that
//! authenticates must speak TLS. [`Pki`] is a private CA, a serving certificate it signed (for
//! `localhost`, `127.0.0.1`, `::1`, `kubernetes.default.svc` and the lab's `192.0.2.1`, plus
//! extra addresses) and the admin token, generated once and kept in a directory so restarted
//! servers and the clients' kubeconfigs stay valid. [`DualListener`] serves TLS and plain HTTP
//! on the same port: it looks at the first byte of each connection (a TLS handshake record
//! starts with 0x16), so kube-rs clients of the tests may keep using `http://`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Addresses every serving certificate covers.
const SANS: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "127.0.0.1",
    "::1",
    "192.0.2.1",
];
/// Files of a PKI directory.
const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "server.crt";
const KEY_FILE: &str = "server.key";
const TOKEN_FILE: &str = "admin-token";
/// How long a new connection may take to show its first byte and finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// CA certificate, serving certificate and key (PEM), and the admin token.
#[derive(Clone)]
pub struct Pki {
    /// The CA certificate clients trust (`certificate-authority-data`).
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
    /// The admin bearer token.
    pub admin_token: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pki(..)")
    }
}

impl Pki {
    /// A new CA, a serving certificate for [`SANS`] and `extra`, and a random admin token.
    pub fn generate(extra: &[IpAddr]) -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "ferrolb-lab-ca");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let mut names: Vec<String> = SANS.iter().map(|s| s.to_string()).collect();
        for ip in extra.iter().filter(|ip| !ip.is_unspecified()) {
            if !names.contains(&ip.to_string()) {
                names.push(ip.to_string());
            }
        }
        let mut leaf = CertificateParams::new(names)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
        Ok(Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            admin_token: super::auth::random_token()?,
        })
    }

    /// The PKI kept in `dir`, generated (for [`SANS`] and `extra`) and written there when the
    /// directory holds none.
    pub fn load_or_create(dir: &Path, extra: &[IpAddr]) -> anyhow::Result<Self> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f));
        if let (Ok(ca_pem), Ok(cert_pem), Ok(key_pem), Ok(token)) = (
            read(CA_FILE),
            read(CERT_FILE),
            read(KEY_FILE),
            read(TOKEN_FILE),
        ) {
            return Ok(Pki {
                ca_pem,
                cert_pem,
                key_pem,
                admin_token: token.trim().to_string(),
            });
        }
        let pki = Self::generate(extra)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (f, text) in [
            (CA_FILE, &pki.ca_pem),
            (CERT_FILE, &pki.cert_pem),
            (KEY_FILE, &pki.key_pem),
            (TOKEN_FILE, &pki.admin_token),
        ] {
            let path = dir.join(f);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            if f == KEY_FILE || f == TOKEN_FILE {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(pki)
    }

    /// The rustls configuration serving this certificate.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parsing the serving certificate")?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .context("parsing the serving key")?;
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        Ok(Arc::new(cfg))
    }

    /// The CA certificate in DER (for `kube::Config::root_cert`).
    pub fn ca_der(&self) -> anyhow::Result<Vec<u8>> {
        Ok(CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .context("parsing the CA certificate")?
            .to_vec())
    }
}

/// A connection: TLS, or plain HTTP.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A listener serving TLS and plain HTTP on one port. Connections are sniffed and handshaken
/// on their own tasks, so a slow or silent client never holds up the others.
pub struct DualListener {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl DualListener {
    /// Serves `listener` with `tls`.
    pub fn new(listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::debug!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let tx = tx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                        let mut first = [0u8; 1];
                        stream.peek(&mut first).await?;
                        if first[0] == 0x16 {
                            Ok::<_, std::io::Error>(Conn::Tls(Box::new(
                                acceptor.accept(stream).await?,
                            )))
                        } else {
                            Ok(Conn::Plain(stream))
                        }
                    })
                    .await;
                    match conn {
                        Ok(Ok(c)) => {
                            let _ = tx.send((c, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection dropped"),
                        Err(_) => tracing::debug!(%peer, "connection silent: dropped"),
                    }
                });
            }
        });
        Ok(DualListener {
            rx,
            local,
            acceptor: task,
        })
    }
}

impl Drop for DualListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for DualListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener goes away.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_kept_in_its_directory_and_serves() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path(), &["10.1.2.3".parse().unwrap()]).unwrap();
        let b = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.admin_token, b.admin_token);
        assert_eq!(a.admin_token.len(), 64);
        a.server_config().unwrap();
        assert!(!a.ca_der().unwrap().is_empty());
        assert_ne!(Pki::generate(&[]).unwrap().ca_pem, a.ca_pem);
    }
}
