//! The gRPC listener's connections: at most `server.max_connections` at once, each TLS handshake
//! and HTTP/2 opening bounded by `server.handshake_timeout_ms`, failures counted and logged with
//! the peer, connections idle (no stream open) for `server.idle_timeout_ms` closed ([`idle`]),
//! and accept errors (EMFILE) met with a back-off rather than a busy loop.
//!
//! tonic's own TLS acceptor has no connection cap and reports handshake failures nowhere an
//! operator looks, so the gateway accepts and handshakes itself and hands tonic finished streams.
//! The client certificate is read once, at the handshake: each request of the connection carries
//! the principal it names ([`TlsPeer`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::call::CallerCredential;
use crate::identity::{AuthMode, IdentityError};
use crate::metrics::Metrics;

mod idle;

use idle::{CLIENT_GOAWAY, Close, IdleWatch};

/// How long to wait after an accept error (out of file descriptors, ...) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file holds no usable certificate or key.
    #[error("{key}: {problem}")]
    Pem {
        /// The config key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle cannot verify clients.
    #[error("auth.client_ca: cannot build the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A TLS acceptor requiring client certificates that chain to `client_ca` (PEM), presenting
/// `cert` and `key` (PEM), offering HTTP/2 only.
pub fn mtls_acceptor(
    cert: &[u8],
    key: &[u8],
    client_ca: &[u8],
) -> Result<TlsAcceptor, TlsSetupError> {
    let pem = |key: &'static str, problem: String| TlsSetupError::Pem { key, problem };
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("auth.cert", e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("auth.cert", "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem("auth.key", e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca) {
        let ca = ca.map_err(|e| pem("auth.client_ca", e.to_string()))?;
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // A client CA makes client certificates required; rustls checks chain, validity and usage.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Flushes and shutdowns go straight to the wrapped `stream`.
macro_rules! flush_and_shutdown_through {
    () => {
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_shutdown(cx)
        }
    };
}

/// Vectored writes when the wrapped `stream` takes them: without them, h2 writes a frame's
/// header and its payload with a syscall each.
macro_rules! vectored_like_the_stream {
    () => {
        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }
    };
}

/// A stream carrying something for as long as it is open (`with`): reads and writes go to
/// the stream.
#[derive(Debug)]
pub struct With<S, W> {
    stream: S,
    with: W,
}

impl<S: AsyncRead + Unpin, W: Unpin> AsyncRead for With<S, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

// Writes go straight to the wrapped stream.
impl<S: AsyncWrite + Unpin, W: Unpin> AsyncWrite for With<S, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    flush_and_shutdown_through!();

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    vectored_like_the_stream!();
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface and the 9-byte header of the SETTINGS frame that must follow it.
const OPENING_LEN: usize = PREFACE.len() + 9;
/// The frame type of SETTINGS, the fourth byte of a frame header.
const SETTINGS_FRAME: u8 = 0x4;

/// A connection that opened HTTP/2, its opening (the preface and the header of its SETTINGS
/// frame) already read: reads give those bytes first, then the stream's. Its frames are followed
/// both ways, and once no stream has been open for the idle timeout it is closed ([`idle`]).
#[derive(Debug)]
pub struct Opened<S> {
    stream: S,
    /// Bytes the reader gets before the stream's own: the opening, at the end a GOAWAY.
    replay: bytes::Bytes,
    idle: IdleWatch,
}

impl<S: AsyncRead + Unpin> AsyncRead for Opened<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use bytes::Buf as _;
        let this = &mut *self;
        if this.replay.is_empty() {
            match this.idle.poll_close(cx) {
                None => {}
                Some(Close::GoAway) => this.replay = bytes::Bytes::from_static(&CLIENT_GOAWAY),
                Some(Close::Eof) => return Poll::Ready(Ok(())),
            }
        }
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.idle.client_sent(&buf.filled()[before..]);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Opened<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.idle.server_sent(cx, &buf[..n]);
        }
        written
    }

    flush_and_shutdown_through!();

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = written {
            for buf in bufs {
                let sent = n.min(buf.len());
                this.idle.server_sent(cx, &buf[..sent]);
                n -= sent;
                if n == 0 {
                    break;
                }
            }
        }
        written
    }

    vectored_like_the_stream!();
}

impl<S: Connected> Connected for Opened<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Waits up to `limits.handshake_timeout` for the client to open HTTP/2: the preface, then a
/// SETTINGS frame. hyper would wait for it forever, so a connection that says nothing after its
/// TLS handshake (or after connecting, in plaintext) would hold its slot for good. Connections
/// that stay silent or open with something else are closed, counted by reason and logged; those
/// that open are closed after `limits.idle_timeout` with no stream open.
pub async fn await_opening<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: Option<SocketAddr>,
    limits: &Limits,
    metrics: &Arc<Metrics>,
) -> Option<Opened<S>> {
    use tokio::io::AsyncReadExt;
    let mut opening = [0u8; OPENING_LEN];
    let read = tokio::time::timeout(limits.handshake_timeout, stream.read_exact(&mut opening));
    let reason = match read.await {
        Ok(Ok(_))
            if opening.starts_with(PREFACE) && opening[PREFACE.len() + 3] == SETTINGS_FRAME =>
        {
            return Some(Opened {
                stream,
                replay: bytes::Bytes::copy_from_slice(&opening),
                idle: IdleWatch::new(
                    &opening[PREFACE.len()..],
                    limits.idle_timeout,
                    peer,
                    metrics.clone(),
                ),
            });
        }
        Ok(Ok(_)) => "not_http2",
        // Closed (or broken) before it said anything useful.
        Ok(Err(_)) => "closed_before_preface",
        Err(_) => "no_preface",
    };
    metrics.connection_refused(reason);
    tracing::debug!(peer = ?peer, reason, "connection closed before HTTP/2 began");
    None
}

/// A TCP connection holding one of the listener's connection slots until it closes.
pub type Slotted = With<TcpStream, OwnedSemaphorePermit>;

impl Slotted {
    /// The client's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }
}

impl Connected for Slotted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// How long a TLS handshake may take, and then the HTTP/2 opening.
    pub handshake_timeout: Duration,
    /// How long a connection may stay open with no stream open.
    pub idle_timeout: Duration,
}

/// Accepts connections on `listener` (TLS with `tls`, plaintext without) and yields those that
/// are ready for HTTP/2, until the returned receiver is dropped.
pub fn incoming<Ready, T>(
    listener: TcpListener,
    limits: Limits,
    handshake: impl Fn(Slotted) -> Ready + Send + 'static,
    metrics: Arc<Metrics>,
) -> mpsc::Receiver<io::Result<T>>
where
    Ready: std::future::Future<Output = Option<T>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: the condition lasts; retrying at once would spin.
                    metrics.accept_failed("grpc");
                    tracing::warn!(error = %err, "cannot accept a connection; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics.connection_refused("over_capacity");
                tracing::debug!(%peer, "connection refused: server.max_connections reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = handshake(Slotted { stream, with: slot });
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(ready) = connection.await {
                    let _ = tx.send(Ok(ready)).await;
                }
            });
        }
    });
    rx
}

/// What a TLS connection's verified client certificate says, worked out once at the handshake;
/// tonic puts a copy in the extensions of every request on the connection.
#[derive(Clone, Debug)]
pub struct TlsPeer {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The principal the leaf certificate names, or why it names none.
    pub credential: Result<CallerCredential, Arc<IdentityError>>,
}

/// A TLS connection after its handshake and its HTTP/2 opening, with what its client
/// certificate says.
pub type TlsConnection = With<Opened<tokio_rustls::server::TlsStream<Slotted>>, TlsPeer>;

impl Connected for TlsConnection {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.with.clone()
    }
}

/// The TLS handshake of one connection and then its HTTP/2 opening, each bounded by
/// `limits.handshake_timeout`; failures are counted and logged with the peer and yield `None`.
pub async fn tls_handshake(
    acceptor: TlsAcceptor,
    connection: Slotted,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> Option<TlsConnection> {
    let peer: Option<SocketAddr> = connection.stream.peer_addr().ok();
    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(connection)).await {
        Ok(Ok(stream)) => {
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first());
            let credential =
                crate::identity::credential_for(AuthMode::Mtls, leaf.map(|c| c.as_ref()), None)
                    .map_err(Arc::new);
            let stream = await_opening(stream, peer, &limits, &metrics).await?;
            Some(TlsConnection {
                stream,
                with: TlsPeer {
                    remote_addr: peer,
                    credential,
                },
            })
        }
        Ok(Err(err)) => {
            metrics.tls_handshake_failed("failed");
            tracing::debug!(peer = ?peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.tls_handshake_failed("timeout");
            tracing::debug!(peer = ?peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn settings_header() -> [u8; 9] {
        // Length 0, type SETTINGS, no flags, stream 0.
        [0, 0, 0, SETTINGS_FRAME, 0, 0, 0, 0, 0]
    }

    fn limits(handshake_timeout: Duration) -> Limits {
        Limits {
            max_connections: 1,
            handshake_timeout,
            idle_timeout: Duration::from_secs(300),
        }
    }

    #[tokio::test]
    async fn the_opening_is_read_then_replayed_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(&settings_header()).await.unwrap();
        client.write_all(b"rest").await.unwrap();
        drop(client);
        let metrics = Metrics::new();
        let mut opened = await_opening(server, None, &limits(Duration::from_secs(5)), &metrics)
            .await
            .expect("an HTTP/2 opening");
        let mut all = Vec::new();
        opened.read_to_end(&mut all).await.unwrap();
        let mut expected = PREFACE.to_vec();
        expected.extend_from_slice(&settings_header());
        expected.extend_from_slice(b"rest");
        assert_eq!(all, expected);
    }

    #[tokio::test]
    async fn silence_and_other_protocols_are_refused() {
        let metrics = Metrics::new();
        let (_client, server) = tokio::io::duplex(256);
        assert!(
            await_opening(server, None, &limits(Duration::from_millis(50)), &metrics)
                .await
                .is_none(),
            "silent"
        );
        let (mut client, server) = tokio::io::duplex(256);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nxxxxxxxxxx")
            .await
            .unwrap();
        assert!(
            await_opening(server, None, &limits(Duration::from_secs(5)), &metrics)
                .await
                .is_none(),
            "HTTP/1.1"
        );
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(PREFACE).await.unwrap();
        drop(client);
        assert!(
            await_opening(server, None, &limits(Duration::from_secs(5)), &metrics)
                .await
                .is_none(),
            "closed after the preface"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_reads_a_goaway_after_the_idle_timeout() {
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(&settings_header()).await.unwrap();
        let metrics = Metrics::new();
        let idle = Duration::from_secs(300);
        let limits = Limits {
            idle_timeout: idle,
            ..limits(Duration::from_secs(5))
        };
        let mut opened = await_opening(server, None, &limits, &metrics)
            .await
            .expect("an HTTP/2 opening");
        let mut opening = [0u8; OPENING_LEN];
        opened.read_exact(&mut opening).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut goaway = [0u8; CLIENT_GOAWAY.len()];
        opened.read_exact(&mut goaway).await.unwrap();
        assert_eq!(goaway, CLIENT_GOAWAY);
        assert_eq!(started.elapsed(), idle);
    }
}
