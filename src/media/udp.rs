//! Batched UDP I/O for the media socket: `recvmmsg` reads up to [`BATCH`] datagrams in one
//! system call and `sendmmsg` sends every queued datagram in one call per [`BATCH`], on
//! Linux. Elsewhere it falls back to one `recv_from`/`send_to` per datagram.
//!
//! The shard queues outgoing datagrams in a [`SendQueue`] during one turn of its loop (which
//! may forward one packet to hundreds of subscribers) and flushes them together at the end
//! of the turn. The headers and receive buffers are allocated once and reused.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest datagram read.
pub const MAX_DATAGRAM: usize = 2048;

/// The socket with its batch buffers.
pub struct BatchSocket {
    socket: UdpSocket,
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    #[cfg(target_os = "linux")]
    recv_headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    #[cfg(target_os = "linux")]
    send_headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

/// Datagrams waiting for the next [`BatchSocket::flush`], bounded.
#[derive(Debug, Default)]
pub struct SendQueue {
    items: Vec<(SocketAddr, Vec<u8>)>,
}

/// Most datagrams queued in one turn of the loop; more are dropped.
pub const QUEUE_LIMIT: usize = 16 * 1024;

impl SendQueue {
    /// Queues a datagram. Returns false (dropping it) when the queue is full.
    pub fn push(&mut self, dest: SocketAddr, data: Vec<u8>) -> bool {
        if self.items.len() >= QUEUE_LIMIT {
            return false;
        }
        self.items.push((dest, data));
        true
    }

    /// Number of datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Datagrams dropped (send failed or the socket stayed full).
    pub dropped: u64,
    /// System calls made.
    pub calls: u64,
}

impl BatchSocket {
    /// Wraps a non-blocking socket, asking the kernel for large buffers: a keyframe burst
    /// from a screen share is hundreds of datagrams, more than the usual ~200 KiB default.
    pub fn new(socket: UdpSocket) -> BatchSocket {
        #[cfg(target_os = "linux")]
        grow_buffers(&socket);
        BatchSocket {
            socket,
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
            #[cfg(target_os = "linux")]
            recv_headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
            #[cfg(target_os = "linux")]
            send_headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits until the socket may have datagrams to read.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads what is waiting (up to [`BATCH`] datagrams) and hands each to `f`.
    /// Returns how many were read; 0 when nothing was waiting.
    pub fn recv_batch(&mut self, mut f: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::socket::{recvmmsg, MsgFlags};
            use std::io::IoSliceMut;
            use std::os::fd::AsRawFd;
            let fd = self.socket.as_raw_fd();
            let mut got: [(usize, Option<SocketAddr>); BATCH] = [(0, None); BATCH];
            let headers = &mut self.recv_headers;
            let bufs = &mut self.bufs;
            let n = match self.socket.try_io(tokio::io::Interest::READABLE, || {
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                    .iter_mut()
                    .map(|b| [IoSliceMut::new(&mut b[..])])
                    .collect();
                let results = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                    .map_err(io::Error::from)?;
                let mut n = 0;
                for (i, msg) in results.enumerate() {
                    let addr = msg
                        .address
                        .and_then(|a: nix::sys::socket::SockaddrStorage| {
                            if let Some(v4) = a.as_sockaddr_in() {
                                Some(SocketAddr::from((v4.ip(), v4.port())))
                            } else {
                                a.as_sockaddr_in6()
                                    .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
                            }
                        });
                    got[i] = (msg.bytes, addr);
                    n = i + 1;
                }
                Ok(n)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            };
            for (i, (len, addr)) in got.iter().take(n).enumerate() {
                if let Some(addr) = addr {
                    f(*addr, &self.bufs[i][..*len]);
                }
            }
            Ok(n)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut n = 0;
            while n < BATCH {
                match self.socket.try_recv_from(&mut self.bufs[0]) {
                    Ok((len, addr)) => {
                        f(addr, &self.bufs[0][..len]);
                        n += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(n)
        }
    }

    /// Sends everything queued, in batches, and empties the queue. A socket that stays
    /// full drops the rest (UDP: receivers recover through NACK and keyframe requests).
    pub fn flush(&mut self, queue: &mut SendQueue) -> Sent {
        let mut sent = Sent::default();
        let mut start = 0;
        let items = &queue.items;
        while start < items.len() {
            let end = (start + BATCH).min(items.len());
            match self.send_some(&items[start..end]) {
                Ok((n, bytes, calls)) => {
                    sent.datagrams += n as u64;
                    sent.bytes += bytes;
                    sent.calls += calls;
                    if n == 0 {
                        // Not even one went: skip the first (bad address?) and go on.
                        sent.dropped += 1;
                        start += 1;
                    } else {
                        start += n;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sent.dropped += (items.len() - start) as u64;
                    break;
                }
                Err(_) => {
                    sent.dropped += 1;
                    start += 1;
                }
            }
        }
        queue.items.clear();
        sent
    }

    #[cfg(target_os = "linux")]
    fn send_some(&mut self, items: &[(SocketAddr, Vec<u8>)]) -> io::Result<(usize, u64, u64)> {
        use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, SockaddrStorage};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;
        let fd = self.socket.as_raw_fd();
        let iovs: Vec<[IoSlice<'_>; 1]> = items.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = items
            .iter()
            .map(|(a, _)| Some(SockaddrStorage::from(*a)))
            .collect();
        let cmsgs: [ControlMessage<'_>; 0] = [];
        let results = sendmmsg(
            fd,
            &mut self.send_headers,
            iovs.iter(),
            &addrs,
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        let mut bytes = 0;
        for r in results {
            n += 1;
            bytes += r.bytes as u64;
        }
        Ok((n, bytes, 1))
    }

    #[cfg(not(target_os = "linux"))]
    fn send_some(&mut self, items: &[(SocketAddr, Vec<u8>)]) -> io::Result<(usize, u64, u64)> {
        let mut n = 0;
        let mut bytes = 0;
        for (dest, data) in items {
            match self.socket.try_send_to(data, *dest) {
                Ok(b) => {
                    n += 1;
                    bytes += b as u64;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok((n, bytes, n as u64))
    }
}

/// Datagrams the kernel dropped for the UDP socket bound to `port` because its receive
/// buffer was full (the `drops` column of `/proc/net/udp{,6}`), if the system tells.
pub fn kernel_drops(port: u16) -> Option<u64> {
    let want = format!(":{port:04X}");
    let mut total = None;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        total = Some(total.unwrap_or(0) + parse_drops(&text, &want));
    }
    total
}

/// Sums the `drops` column of the rows whose local address ends in `port_suffix`.
fn parse_drops(table: &str, port_suffix: &str) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local = cols.get(1)?;
            if !local.ends_with(port_suffix) {
                return None;
            }
            cols.last()?.parse::<u64>().ok()
        })
        .sum()
}

/// Bytes asked for each of the socket's kernel buffers.
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

#[cfg(target_os = "linux")]
fn grow_buffers(socket: &UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    // The plain options are capped by net.core.{r,w}mem_max; the forcing ones are not, but
    // need CAP_NET_ADMIN. Try both; say so when the result stays small.
    let _ = setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER);
    if getsockopt(socket, sockopt::RcvBuf).unwrap_or(0) < SOCKET_BUFFER {
        let _ = setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER);
        let _ = setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER);
    }
    let got = getsockopt(socket, sockopt::RcvBuf).unwrap_or(0);
    if got < SOCKET_BUFFER {
        tracing::warn!(
            bytes = got,
            "the media socket's receive buffer is small; bursts may be dropped \
             (raise net.core.rmem_max, e.g. sysctl -w net.core.rmem_max=8388608)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_drops_for_one_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:1EC2 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1 2 0000 17\n\
            2: 0100007F:1EC3 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 2 2 0000 5\n";
        assert_eq!(parse_drops(table, ":1EC2"), 17);
        assert_eq!(parse_drops(table, ":0001"), 0);
    }

    #[tokio::test]
    async fn batches_round_trip_on_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let b_addr = b.local_addr().unwrap();
        let mut a = BatchSocket::new(UdpSocket::from_std(a).unwrap());
        let mut b = BatchSocket::new(UdpSocket::from_std(b).unwrap());
        let mut q = SendQueue::default();
        for i in 0..100u8 {
            assert!(q.push(b_addr, vec![i; 100 + i as usize]));
        }
        let sent = a.flush(&mut q);
        assert_eq!(sent.datagrams, 100);
        assert_eq!(sent.dropped, 0);
        assert!(sent.calls <= 2, "100 datagrams in {} calls", sent.calls);
        assert!(q.is_empty());
        let from = a.local_addr().unwrap();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < 100 && std::time::Instant::now() < deadline {
            b.readable().await.unwrap();
            b.recv_batch(|src, data| {
                assert_eq!(src, from);
                seen.push((data[0], data.len()));
            })
            .unwrap();
        }
        assert_eq!(seen.len(), 100);
        for (i, (first, len)) in seen.iter().enumerate() {
            assert_eq!(*first as usize, i);
            assert_eq!(*len, 100 + i);
        }
    }
}
