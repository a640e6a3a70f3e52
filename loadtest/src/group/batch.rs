//! Reading many datagrams per system call on the fast path: Linux `recvmmsg` with the
//! kernel's receive timestamps (`SO_TIMESTAMPNS`), so the group can wake less often without
//! losing arrival-time precision. When a call returns fewer datagrams than asked, the
//! socket's queue was empty: the readiness is cleared inside the same `try_io`, with no
//! extra `recv` that fails with `EAGAIN`. Elsewhere, one `recv` per datagram.
//!
//! The `recvmmsg` headers hold raw pointers (not `Send`), so each worker thread keeps its own
//! in a thread-local, borrowed only inside [`recv_batch`] (no `.await` while held).

use std::net::SocketAddr;

/// Datagrams read per call.
pub(super) const BATCH: usize = 16;
/// Largest datagram (a WebRTC peer's MTU is ~1200; TURN or jumbo framing stays below this).
pub(super) const DGRAM: usize = 2048;

/// Buffers for one batch, owned by a group and reused.
pub(super) struct Batch {
    pub(super) bufs: Box<[[u8; DGRAM]; BATCH]>,
    pub(super) lens: [usize; BATCH],
    pub(super) from: [Option<SocketAddr>; BATCH],
    /// Kernel receive time, ns since the Unix epoch.
    pub(super) at_ns: [Option<u64>; BATCH],
}

impl Batch {
    pub(super) fn new() -> Batch {
        Batch {
            bufs: Box::new([[0; DGRAM]; BATCH]),
            lens: [0; BATCH],
            from: [None; BATCH],
            at_ns: [None; BATCH],
        }
    }
}

/// Asks the kernel to timestamp what `socket` receives (best effort).
pub(crate) fn enable_timestamps(socket: &std::net::UdpSocket) {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::socket::setsockopt(
            socket,
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Reads up to [`BATCH`] datagrams without blocking; returns how many.
pub(super) fn recv_batch(socket: &tokio::net::UdpSocket, b: &mut Batch) -> std::io::Result<usize> {
    let mut n = 0;
    let r = socket.try_io(tokio::io::Interest::READABLE, || {
        n = recv_some(socket, b)?;
        if n < BATCH {
            // The queue is empty: clear the readiness now (tokio keeps it if an event
            // arrived meanwhile).
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(n),
        Err(e) => Err(e),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::RefCell;
    use std::io::IoSliceMut;
    use std::net::SocketAddr;

    use nix::sys::socket::{
        recvmmsg, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
    };
    use nix::sys::time::TimeSpec;

    use super::{Batch, BATCH};

    thread_local! {
        static HEADERS: RefCell<Option<MultiHeaders<SockaddrStorage>>> = const { RefCell::new(None) };
    }

    fn addr(s: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = s.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }

    pub(super) fn recv_some(
        fd: &impl std::os::fd::AsRawFd,
        b: &mut Batch,
    ) -> std::io::Result<usize> {
        HEADERS.with(|cell| {
            let mut guard = cell.borrow_mut();
            let headers = guard.get_or_insert_with(|| {
                MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec)))
            });
            let Batch {
                bufs,
                lens,
                from,
                at_ns,
            } = b;
            let mut it = bufs.iter_mut();
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                [IoSliceMut::new(
                    it.next().map_or(&mut [][..], |b| &mut b[..]),
                )]
            });
            let results = recvmmsg(
                fd.as_raw_fd(),
                headers,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(std::io::Error::from)?;
            let mut n = 0;
            for (i, m) in results.enumerate() {
                lens[i] = m.bytes;
                from[i] = m.address.as_ref().and_then(addr);
                at_ns[i] = m.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|c| match c {
                        ControlMessageOwned::ScmTimestampns(ts) => Some(
                            (ts.tv_sec() as u64)
                                .saturating_mul(1_000_000_000)
                                .saturating_add(ts.tv_nsec() as u64),
                        ),
                        _ => None,
                    })
                });
                n = i + 1;
            }
            Ok(n)
        })
    }
}

#[cfg(target_os = "linux")]
fn recv_some(socket: &tokio::net::UdpSocket, b: &mut Batch) -> std::io::Result<usize> {
    linux::recv_some(socket, b)
}

#[cfg(not(target_os = "linux"))]
fn recv_some(socket: &tokio::net::UdpSocket, b: &mut Batch) -> std::io::Result<usize> {
    let mut n = 0;
    while n < BATCH {
        match socket.try_recv_from(&mut b.bufs[n]) {
            Ok((len, from)) => {
                b.lens[n] = len;
                b.from[n] = Some(from);
                b.at_ns[n] = None;
                n += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && n > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
