//! The floor: the least CPU a forwarder must spend per forwarded packet on this machine —
//! one SRTP encryption (AEAD AES-128-GCM, the profile the peers negotiate) and one UDP send
//! to a loopback socket, batched as Plenary batches (`src/media/udp.rs`: up to [`BATCH`]
//! datagrams per `sendmmsg` on Linux, one `send_to` each elsewhere). Measured on one thread
//! with its own CPU clock, so the thread that drains the receiving socket is not counted.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use serde::Serialize;

use crate::cpu::thread_cpu;

/// Datagrams per send call, as the server's `BATCH`.
pub const BATCH: usize = 64;

/// Why the floor could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// Socket trouble.
    #[error("floor: socket: {0}")]
    Io(#[from] std::io::Error),
    /// SRTP setup failed.
    #[error("floor: SRTP: {0}")]
    Srtp(String),
    /// No per-thread CPU clock (not Linux).
    #[error("floor: no per-thread CPU clock on this system")]
    NoClock,
}

/// The floor for one payload size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Floor {
    /// RTP payload bytes.
    pub payload_bytes: usize,
    /// Packets encrypted and sent.
    pub packets: u64,
    /// CPU microseconds per packet (median of the trials).
    pub us_per_packet: f64,
}

/// Measures the floor for `payload_bytes`: `trials` runs of `packets` packets (each run
/// also bounded to 5 s), median.
pub fn measure(payload_bytes: usize, packets: u64, trials: usize) -> Result<Floor, FloorError> {
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    sink.set_read_timeout(Some(Duration::from_millis(100)))?;
    let dest = sink.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = sink.recv(&mut buf);
            }
        })
    };
    let result = (|| {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let crypto =
            rtc::crypto::default_provider().map_err(|e| FloorError::Srtp(e.to_string()))?;
        let key = [7u8; 16];
        let salt = [9u8; 12];
        let mut ctx = Context::new(
            &key,
            &salt,
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
            crypto.crypto(),
        )
        .map_err(|e| FloorError::Srtp(e.to_string()))?;
        // An RTP header (V=2, PT 96, SSRC fixed) and a payload.
        let mut plain = vec![0u8; 12 + payload_bytes];
        plain[0] = 0x80;
        plain[1] = 96;
        plain[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        for (i, b) in plain[12..].iter_mut().enumerate() {
            *b = (i * 31) as u8;
        }
        let mut seq: u16 = 0;
        let mut hdrs = headers();
        let mut results = Vec::with_capacity(trials);
        for _ in 0..trials.max(1) {
            let t0 = thread_cpu().ok_or(FloorError::NoClock)?;
            let wall = Instant::now();
            let mut n = 0u64;
            let mut batch = Vec::with_capacity(BATCH);
            while n < packets && wall.elapsed() < Duration::from_secs(5) {
                batch.clear();
                while batch.len() < BATCH {
                    seq = seq.wrapping_add(1);
                    plain[2..4].copy_from_slice(&seq.to_be_bytes());
                    plain[4..8].copy_from_slice(&(u32::from(seq).wrapping_mul(960)).to_be_bytes());
                    let enc = ctx
                        .encrypt_rtp(&plain)
                        .map_err(|e| FloorError::Srtp(e.to_string()))?;
                    // The server queues each datagram as its own buffer, so do we.
                    batch.push(enc.to_vec());
                }
                // A full socket buffer drops datagrams; the work was done all the same.
                send_batch(&sock, &mut hdrs, &batch, dest);
                n += batch.len() as u64;
            }
            let used = thread_cpu().ok_or(FloorError::NoClock)? - t0;
            results.push(used.as_secs_f64() * 1e6 / n.max(1) as f64);
        }
        results.sort_by(|a, b| a.total_cmp(b));
        Ok(Floor {
            payload_bytes,
            packets,
            us_per_packet: results[results.len() / 2],
        })
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    result
}

/// Headers reused across `sendmmsg` calls (allocated once, as the server does).
#[cfg(target_os = "linux")]
struct Headers(nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>);
#[cfg(target_os = "linux")]
fn headers() -> Headers {
    Headers(nix::sys::socket::MultiHeaders::preallocate(BATCH, None))
}
#[cfg(not(target_os = "linux"))]
struct Headers;
#[cfg(not(target_os = "linux"))]
fn headers() -> Headers {
    Headers
}

#[cfg(target_os = "linux")]
fn send_batch(sock: &UdpSocket, h: &mut Headers, batch: &[Vec<u8>], dest: std::net::SocketAddr) {
    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, SockaddrStorage};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let iovs: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|d| [IoSlice::new(d)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = batch
        .iter()
        .map(|_| Some(SockaddrStorage::from(dest)))
        .collect();
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let _ = sendmmsg(
        sock.as_raw_fd(),
        &mut h.0,
        iovs.iter(),
        &addrs,
        cmsgs,
        MsgFlags::MSG_DONTWAIT,
    );
}

#[cfg(not(target_os = "linux"))]
fn send_batch(sock: &UdpSocket, _: &mut Headers, batch: &[Vec<u8>], dest: std::net::SocketAddr) {
    for d in batch {
        let _ = sock.send_to(d, dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_a_few_microseconds() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let f = measure(1000, 2000, 3).unwrap();
        assert!(f.us_per_packet > 0.1 && f.us_per_packet < 500.0, "{f:?}");
    }
}
