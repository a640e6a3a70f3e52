//! The HTTP port's listener: plain TCP, or TLS with the certificate of [`crate::tls`], and —
//! when ICE-TCP shares the port (`media.tcp_addr` = `http.addr`, e.g. 443 on a small VPS)
//! — connections told apart by their first bytes: a TLS ClientHello or an HTTP request goes
//! to the web server, an RFC 4571 frame holding a STUN binding request to the media plane.
//!
//! Each accepted connection is sorted (and its TLS handshake made) in a task of its own,
//! bounded in time and in number, so a slow or silent client never holds up the others;
//! ready connections reach axum through [`Incoming`], an `axum::serve::Listener`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::media::tcp::{looks_like_ice_tcp, TcpIntake};
use crate::tls::TlsFiles;

/// Time a new connection has to show what it is and finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections being sorted or shaking hands at once.
const MAX_HANDSHAKES: usize = 512;
/// Ready connections waiting for the web server.
const READY_QUEUE: usize = 128;

/// A connection for the web server.
pub enum Conn {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Ready connections, for `axum::serve`.
pub struct Incoming {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Kernel send buffer of each HTTP connection: bounds what a client that stops reading
/// holds in the kernel (signaling messages are small; an SDP of a few hundred KiB still
/// goes out in a few writes).
const HTTP_SEND_BUFFER: usize = 256 * 1024;

/// The client's address as handlers see it (`ConnectInfo<ClientAddr>`): the TCP peer of
/// the connection, TLS or not.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Incoming>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// What the HTTP port serves besides plain HTTP.
#[derive(Clone, Default)]
pub struct PortSharing {
    /// HTTPS with these files.
    pub tls: Option<Arc<TlsFiles>>,
    /// ICE-TCP connections on the same port go here.
    pub ice_tcp: Option<TcpIntake>,
}

/// Accepts on `listener` until `shutdown`, sorting each connection in a task of its own.
pub fn spawn(
    listener: TcpListener,
    sharing: PortSharing,
    shutdown: watch::Receiver<bool>,
) -> io::Result<Incoming> {
    let local = listener.local_addr()?;
    let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        let stop = crate::lifecycle::wait_until_true(shutdown);
        tokio::pin!(stop);
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("HTTP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop => return,
            };
            let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                continue; // too many at once: dropped
            };
            let sharing = sharing.clone();
            let ready_tx = ready_tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let sorted =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, sort(stream, remote, &sharing)).await;
                if let Ok(Some(conn)) = sorted {
                    let _ = ready_tx.send((conn, remote)).await;
                }
            });
        }
    });
    Ok(Incoming { ready, local })
}

/// ICE-TCP to the media plane (None), else the web server's connection (TLS handshake
/// made).
async fn sort(stream: TcpStream, remote: SocketAddr, sharing: &PortSharing) -> Option<Conn> {
    if let Some(intake) = &sharing.ice_tcp {
        let head = peek_head(&stream).await?;
        if looks_like_ice_tcp(&head) {
            intake.take(stream, remote);
            return None;
        }
    }
    let _ = nix::sys::socket::setsockopt(
        &stream,
        nix::sys::socket::sockopt::SndBuf,
        &HTTP_SEND_BUFFER,
    );
    match &sharing.tls {
        None => Some(Conn::Plain(stream)),
        Some(files) => match files.acceptor().accept(stream).await {
            Ok(tls) => Some(Conn::Tls(Box::new(tls))),
            Err(e) => {
                tracing::debug!(%remote, "TLS handshake failed: {e}");
                None
            }
        },
    }
}

/// The connection's first four bytes (fewer if it closes first), without consuming them.
async fn peek_head(stream: &TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 4];
    loop {
        let n = stream.peek(&mut head).await.ok()?;
        if n == 0 {
            return None;
        }
        if n >= head.len() {
            return Some(head.to_vec());
        }
        // Part of the first segment only: wait for the rest (bounded by the caller).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
