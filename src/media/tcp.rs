//! ICE over TCP: the passive TCP candidate (RFC 6544) for attendees whose network blocks UDP,
//! with RFC 4571 framing (each packet preceded by its length, two bytes, big-endian) — what
//! browsers speak to a `tcptype passive` candidate.
//!
//! One listening port serves every shard. The [`TcpIntake`] takes each accepted connection
//! (from its own listener, or diverted from the HTTP listener when both share a port),
//! reads the first frame, which must be a STUN binding request naming one of our ICE
//! username fragments, finds the shard that holds that peer ([`UfragRoutes`]) and hands the
//! socket over. From then on the connection lives on its shard's thread ([`TcpLinks`]): a
//! reader task cuts frames out of the stream and queues them for the shard loop, which feeds
//! them to the peer's str0m `Rtc` like datagrams (`Protocol::Tcp`); what str0m sends back
//! to that address goes to a writer task that frames it.
//!
//! Bounds: frames of at most [`MAX_FRAME`] bytes; [`MAX_CONNECTIONS`] open connections and
//! [`MAX_PENDING`] unidentified ones per server; [`MAX_PER_PEER`] per peer; each
//! connection's outgoing queue [`OUT_QUEUE`] frames and each shard's incoming queue
//! [`IN_QUEUE`] (full queues drop, as a congested UDP path would). A client that sends a
//! bad length, a first frame that is not ours, or [`MAX_REJECTED`] frames in a row its peer
//! refuses, is cut off; the others never wait for it. Received frames are cut from a shared
//! read buffer (no allocation per packet in steady state); no lock is taken per packet (the
//! ufrag map is locked once per new connection and on join, leave and ICE restart).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::demux::{is_stun, stun_local_ufrag};
use super::shard::ShardCmd;
use super::PeerId;

/// Largest frame accepted (as large as the biggest datagram the UDP path reads).
pub const MAX_FRAME: usize = super::udp::MAX_DATAGRAM;
/// Time a new connection has to send its first frame.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Most open ICE-TCP connections on the server.
pub const MAX_CONNECTIONS: usize = 8192;
/// Most connections not yet identified by their first frame.
pub const MAX_PENDING: usize = 256;
/// Most connections per peer (a browser opens one per candidate pair it tries).
pub const MAX_PER_PEER: usize = 4;
/// Frames waiting for one connection's socket.
pub const OUT_QUEUE: usize = 512;
/// Frames from all of a shard's connections waiting for the shard.
pub const IN_QUEUE: usize = 4096;
/// Frames in a row a connection's peer may refuse before the connection is cut off.
pub const MAX_REJECTED: u32 = 16;
/// Read buffer growth: frames are cut from chunks of this size.
const READ_CHUNK: usize = 16 * 1024;

/// Why a connection was refused or cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpRefusal {
    /// A length prefix of 0 or above [`MAX_FRAME`].
    #[error("bad frame length {0}")]
    BadLength(usize),
    /// The first frame is not a STUN binding request with a username.
    #[error("the first frame is not an ICE connectivity check")]
    NotStun,
    /// The first frame names no peer of ours.
    #[error("unknown ICE username fragment")]
    UnknownUfrag,
    /// Nothing came in time.
    #[error("no first frame within {FIRST_FRAME_TIMEOUT:?}")]
    Timeout,
    /// Too many connections (open, pending, or for one peer).
    #[error("too many connections")]
    TooMany,
    /// The peer refused too many frames in a row.
    #[error("{MAX_REJECTED} frames in a row refused")]
    Rejected,
}

/// Which shard holds the peer an ICE username fragment names. Locked only when a peer
/// joins, leaves or restarts ICE, and once per new TCP connection — never per packet.
#[derive(Debug, Default)]
pub struct UfragRoutes(Mutex<HashMap<String, usize>>);

impl UfragRoutes {
    /// `ufrag` is a peer on `shard`.
    pub fn insert(&self, ufrag: &str, shard: usize) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(ufrag.to_string(), shard);
        }
    }

    /// `ufrag` is gone.
    pub fn remove(&self, ufrag: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(ufrag);
        }
    }

    /// The shard of `ufrag`'s peer.
    pub fn shard_of(&self, ufrag: &str) -> Option<usize> {
        self.0.lock().ok()?.get(ufrag).copied()
    }
}

/// One open connection, counted in the server's total until dropped.
#[derive(Debug)]
pub struct OpenSlot(Arc<AtomicUsize>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An identified connection on its way to its shard.
#[derive(Debug)]
pub struct TcpConn {
    /// The socket (moved to the shard's runtime there).
    pub stream: std::net::TcpStream,
    /// The client's address (its ICE candidate's address as the server sees it).
    pub remote: SocketAddr,
    /// The first frame (a STUN binding request), to handle first.
    pub first: Vec<u8>,
    /// Its place in the server's connection count.
    pub slot: OpenSlot,
}

/// Takes new ICE-TCP connections and hands each to the shard of its peer.
#[derive(Clone)]
pub struct TcpIntake {
    routes: Arc<UfragRoutes>,
    shards: Arc<[mpsc::Sender<ShardCmd>]>,
    open: Arc<AtomicUsize>,
    pending: Arc<Semaphore>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl TcpIntake {
    /// An intake routing by `routes` to `shards`.
    pub fn new(
        routes: Arc<UfragRoutes>,
        shards: Arc<[mpsc::Sender<ShardCmd>]>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> TcpIntake {
        TcpIntake {
            routes,
            shards,
            open: Arc::new(AtomicUsize::new(0)),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            metrics,
        }
    }

    /// Accepts connections on `listener` until `shutdown` turns true.
    pub fn spawn_accept_loop(self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        tokio::spawn(async move {
            let stop = crate::lifecycle::wait_until_true(shutdown);
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, remote)) => self.take(stream, remote),
                        Err(e) => {
                            tracing::debug!("ICE-TCP accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    _ = &mut stop => return,
                }
            }
        });
    }

    /// Identifies a new connection (in a task of its own) and hands it to its shard.
    pub fn take(&self, stream: TcpStream, remote: SocketAddr) {
        let Ok(permit) = Arc::clone(&self.pending).try_acquire_owned() else {
            self.refused(remote, TcpRefusal::TooMany);
            return;
        };
        let intake = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(why) = intake.identify(stream, remote).await {
                intake.refused(remote, why);
            }
        });
    }

    async fn identify(&self, mut stream: TcpStream, remote: SocketAddr) -> Result<(), TcpRefusal> {
        let first = tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_one_frame(&mut stream))
            .await
            .map_err(|_| TcpRefusal::Timeout)??;
        if !is_stun(&first) {
            return Err(TcpRefusal::NotStun);
        }
        let ufrag = stun_local_ufrag(&first).ok_or(TcpRefusal::NotStun)?;
        let shard = self
            .routes
            .shard_of(ufrag)
            .ok_or(TcpRefusal::UnknownUfrag)?;
        if self.open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(TcpRefusal::TooMany);
        }
        let slot = OpenSlot(Arc::clone(&self.open));
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            return Ok(()); // the socket broke meanwhile
        };
        let conn = TcpConn {
            stream,
            remote,
            first,
            slot,
        };
        if let Some(tx) = self.shards.get(shard) {
            if tx
                .try_send(ShardCmd::TcpConnection(Box::new(conn)))
                .is_err()
            {
                tracing::debug!(%remote, "ICE-TCP: shard {shard} busy, connection dropped");
            }
        }
        Ok(())
    }

    fn refused(&self, remote: SocketAddr, why: TcpRefusal) {
        self.metrics.ice_tcp_refused.inc();
        tracing::debug!(%remote, "ICE-TCP connection refused: {why}");
    }
}

/// Reads exactly one frame (used before the connection is handed over, so nothing is read
/// past it).
async fn read_one_frame(stream: &mut TcpStream) -> Result<Vec<u8>, TcpRefusal> {
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|_| TcpRefusal::NotStun)?;
    let len = u16::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(TcpRefusal::BadLength(len));
    }
    let mut frame = vec![0u8; len];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|_| TcpRefusal::NotStun)?;
    Ok(frame)
}

/// What a shard's connections tell it.
#[derive(Debug)]
pub enum TcpEvent {
    /// A frame from `remote`.
    Frame {
        /// The connection.
        remote: SocketAddr,
        /// The packet.
        data: Bytes,
    },
    /// The connection ended (closed by the client, or cut for bad framing).
    Closed {
        /// The connection.
        remote: SocketAddr,
        /// Why it was cut, if it was.
        refusal: Option<TcpRefusal>,
    },
}

/// One connection as its shard sees it.
struct Link {
    out: mpsc::Sender<Vec<u8>>,
    peer: Option<PeerId>,
    reader: tokio::task::AbortHandle,
    rejected: u32,
    _slot: OpenSlot,
}

/// A shard's ICE-TCP connections, by the client's address.
pub struct TcpLinks {
    links: HashMap<SocketAddr, Link>,
    events_tx: mpsc::Sender<TcpEvent>,
    /// Frames and ends from every connection, for the shard loop.
    pub events: mpsc::Receiver<TcpEvent>,
}

impl Default for TcpLinks {
    fn default() -> Self {
        let (events_tx, events) = mpsc::channel(IN_QUEUE);
        TcpLinks {
            links: HashMap::new(),
            events_tx,
            events,
        }
    }
}

impl TcpLinks {
    /// Takes over an identified connection: its reader and writer run as tasks on the
    /// current (the shard's) runtime. Returns the first frame, for the caller to handle.
    pub fn adopt(&mut self, conn: TcpConn) -> std::io::Result<Vec<u8>> {
        let TcpConn {
            stream,
            remote,
            first,
            slot,
        } = conn;
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(stream)?;
        let (reader, writer) = stream.into_split();
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let reader = tokio::spawn(read_frames(reader, remote, self.events_tx.clone()));
        tokio::spawn(write_frames(writer, out_rx));
        if let Some(old) = self.links.insert(
            remote,
            Link {
                out,
                peer: None,
                reader: reader.abort_handle(),
                rejected: 0,
                _slot: slot,
            },
        ) {
            old.reader.abort();
        }
        Ok(first)
    }

    /// Whether a connection from `remote` is open, and the peer it belongs to (once known).
    pub fn peer_of(&self, remote: SocketAddr) -> Option<Option<PeerId>> {
        self.links.get(&remote).map(|l| l.peer)
    }

    /// The connection from `remote` carries `peer`'s checks: it is `peer`'s now. Returns
    /// false (and cuts it off) when `peer` has too many already.
    pub fn bind(&mut self, remote: SocketAddr, peer: PeerId) -> bool {
        match self.links.get(&remote) {
            Some(l) if l.peer == Some(peer) => {}
            Some(_) => {
                let count = self.links.values().filter(|l| l.peer == Some(peer)).count();
                if count >= MAX_PER_PEER {
                    self.cut(remote);
                    return false;
                }
            }
            None => return false,
        }
        if let Some(l) = self.links.get_mut(&remote) {
            l.peer = Some(peer);
            l.rejected = 0;
        }
        true
    }

    /// A frame from `remote` was taken: its run of refusals ends.
    pub fn accepted(&mut self, remote: SocketAddr) {
        if let Some(l) = self.links.get_mut(&remote) {
            l.rejected = 0;
        }
    }

    /// A frame from `remote` was refused; cuts the connection off after [`MAX_REJECTED`] in
    /// a row. Returns whether it was cut.
    pub fn rejected(&mut self, remote: SocketAddr) -> bool {
        let Some(l) = self.links.get_mut(&remote) else {
            return false;
        };
        l.rejected += 1;
        if l.rejected >= MAX_REJECTED {
            self.cut(remote);
            return true;
        }
        false
    }

    /// Queues a packet for `dest`'s connection. False when there is none or its queue is
    /// full (the packet is dropped).
    pub fn send(&mut self, dest: SocketAddr, data: Vec<u8>) -> bool {
        match self.links.get(&dest) {
            Some(l) => l.out.try_send(data).is_ok(),
            None => false,
        }
    }

    /// Closes the connection from `remote` (the writer ends when its queue is dropped).
    pub fn cut(&mut self, remote: SocketAddr) {
        if let Some(l) = self.links.remove(&remote) {
            l.reader.abort();
        }
    }

    /// Forgets a connection that ended by itself.
    pub fn closed(&mut self, remote: SocketAddr) {
        self.links.remove(&remote);
    }

    /// Closes every connection of `peer`.
    pub fn cut_peer(&mut self, peer: PeerId) {
        let gone: Vec<SocketAddr> = self
            .links
            .iter()
            .filter(|(_, l)| l.peer == Some(peer))
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            self.cut(a);
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

/// Cuts frames out of the stream and queues them for the shard (dropping when its queue is
/// full); tells the shard when the connection ends, and why.
async fn read_frames(mut reader: OwnedReadHalf, remote: SocketAddr, tx: mpsc::Sender<TcpEvent>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let refusal = loop {
        match next_frames(&mut buf, |data| {
            let _ = tx.try_send(TcpEvent::Frame { remote, data });
        }) {
            Ok(()) => {}
            Err(why) => break Some(why),
        }
        if buf.capacity() - buf.len() < MAX_FRAME + 2 {
            buf.reserve(READ_CHUNK);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
    };
    let _ = tx.send(TcpEvent::Closed { remote, refusal }).await;
}

/// Hands every complete frame in `buf` to `each` (sharing `buf`'s memory), leaving a
/// partial one in place. Fails on a length of 0 or above [`MAX_FRAME`].
pub fn next_frames(buf: &mut BytesMut, mut each: impl FnMut(Bytes)) -> Result<(), TcpRefusal> {
    while buf.len() >= 2 {
        let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(TcpRefusal::BadLength(len));
        }
        if buf.len() < 2 + len {
            break;
        }
        buf.advance(2);
        each(buf.split_to(len).freeze());
    }
    Ok(())
}

/// Frames and writes what the shard queues, flushing when the queue runs dry.
async fn write_frames(writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut w = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next {
            if write_frame(&mut w, &frame).await.is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn write_frame(w: &mut BufWriter<OwnedWriteHalf>, frame: &[u8]) -> std::io::Result<()> {
    let Ok(len) = u16::try_from(frame.len()) else {
        return Ok(()); // cannot be framed; str0m never sends such
    };
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(frame).await
}

/// Whether the first bytes of a connection look like ICE-TCP (a frame holding a STUN
/// binding request) rather than TLS or HTTP — for a port shared with the HTTP listener.
pub fn looks_like_ice_tcp(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] == 0 && head[1] >= 20 && head[2..4] == [0x00, 0x01]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_from_the_stream_and_bad_lengths_refused() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 3, b'a', b'b', b'c', 0, 2, b'x']);
        let mut got = Vec::new();
        next_frames(&mut buf, |f| got.push(f)).unwrap();
        assert_eq!(got, [Bytes::from_static(b"abc")]);
        assert_eq!(&buf[..], &[0, 2, b'x'], "a partial frame waits");
        buf.extend_from_slice(b"y");
        next_frames(&mut buf, |f| got.push(f)).unwrap();
        assert_eq!(got[1], Bytes::from_static(b"xy"));
        assert!(buf.is_empty());

        let mut bad = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let err = next_frames(&mut bad, |_| {}).unwrap_err();
        assert_eq!(err, TcpRefusal::BadLength(0x4745));
        let mut zero = BytesMut::from(&[0u8, 0][..]);
        assert_eq!(
            next_frames(&mut zero, |_| {}).unwrap_err(),
            TcpRefusal::BadLength(0)
        );
    }

    #[test]
    fn ice_tcp_is_told_from_tls_and_http() {
        assert!(looks_like_ice_tcp(&[0, 100, 0, 1]));
        assert!(!looks_like_ice_tcp(&[0x16, 3, 1, 2]), "a TLS ClientHello");
        assert!(!looks_like_ice_tcp(b"GET "));
        assert!(!looks_like_ice_tcp(&[0, 100]));
    }

    #[test]
    fn routes_follow_ufrags() {
        let r = UfragRoutes::default();
        r.insert("abcd", 1);
        assert_eq!(r.shard_of("abcd"), Some(1));
        r.remove("abcd");
        assert_eq!(r.shard_of("abcd"), None);
    }
}
