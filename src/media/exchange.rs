//! Packets between shards. Each ordered pair of shards has one bounded single-producer,
//! single-consumer ring (`rtrb`) of [`Relay`]s: a packet decrypted on its publisher's shard
//! goes, as metadata plus the shared payload (an `Arc`, not a copy), to every other shard
//! with subscribers in the room, which rewrites and encrypts it for its own subscribers.
//!
//! No lock and no allocation per packet: a push moves the relay into a preallocated slot. A
//! full ring drops the relay and counts it (a shard that falls that far behind is
//! overloaded, and waiting would stall the publisher's shard too). After a turn of pushes
//! the producer wakes each destination shard once (a `Notify`), so an idle shard does not
//! sleep on packets waiting for it.

use std::sync::Arc;
use std::time::Instant;

use plenary_sfu::TrackKey;
use str0m::format::PayloadParams;
use str0m::media::Pt;
use str0m::rtp::VideoOrientation;
use tokio::sync::Notify;

/// Packets one shard may have queued for another.
pub const RING_CAPACITY: usize = 4096;

/// One RTP packet for another shard's subscribers.
#[derive(Debug, Clone)]
pub struct Relay {
    /// The published track.
    pub track: TrackKey,
    /// Its input stream (SSRC, or a simulcast layer's).
    pub stream: u64,
    /// The simulcast layer of `stream` (0 without simulcast).
    pub layer: u8,
    /// Extended input sequence number.
    pub seq: u64,
    /// Input RTP timestamp.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The publisher's payload type and its codec.
    pub pt: Pt,
    /// The codec parameters of `pt`.
    pub params: PayloadParams,
    /// RFC 6464 audio level.
    pub audio_level: Option<i8>,
    /// RFC 6464 voice activity.
    pub voice_activity: Option<bool>,
    /// Video orientation (CVO).
    pub video_orientation: Option<VideoOrientation>,
    /// The payload, shared with every subscriber.
    pub payload: Arc<[u8]>,
    /// When it arrived at the publisher's shard.
    pub at: Instant,
}

/// One shard's end of the mesh: producers to every other shard, consumers from them.
pub struct Exchange {
    /// This shard.
    index: usize,
    out: Vec<Option<rtrb::Producer<Relay>>>,
    inbound: Vec<Option<rtrb::Consumer<Relay>>>,
    wakers: Arc<[Notify]>,
    /// Shards to wake at the end of this turn (one bit each).
    pending: u64,
    /// Relays dropped because a ring was full.
    pub dropped: u64,
    /// Relays sent.
    pub sent: u64,
}

impl Exchange {
    /// The full mesh for `n` shards: element `i` belongs to shard `i`.
    pub fn mesh(n: usize) -> Vec<Exchange> {
        let wakers: Arc<[Notify]> = (0..n).map(|_| Notify::new()).collect();
        let mut ends: Vec<Exchange> = (0..n)
            .map(|index| Exchange {
                index,
                out: (0..n).map(|_| None).collect(),
                inbound: (0..n).map(|_| None).collect(),
                wakers: Arc::clone(&wakers),
                pending: 0,
                dropped: 0,
                sent: 0,
            })
            .collect();
        for from in 0..n {
            for to in 0..n {
                if from == to {
                    continue;
                }
                let (p, c) = rtrb::RingBuffer::new(RING_CAPACITY);
                ends[from].out[to] = Some(p);
                ends[to].inbound[from] = Some(c);
            }
        }
        ends
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Queues `relay` for shard `to`; false (and counted) when its ring is full.
    pub fn send(&mut self, to: usize, relay: Relay) -> bool {
        let Some(Some(p)) = self.out.get_mut(to) else {
            return false;
        };
        self.pending |= 1 << to;
        match p.push(relay) {
            Ok(()) => {
                self.sent += 1;
                true
            }
            Err(_) => {
                self.dropped += 1;
                false
            }
        }
    }

    /// Wakes every shard this turn queued packets for.
    pub fn wake(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        while pending != 0 {
            let to = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            self.wakers[to].notify_one();
        }
    }

    /// Wakes shard `to` (for a command sent on its channel).
    pub fn wake_shard(&self, to: usize) {
        if let Some(w) = self.wakers.get(to) {
            w.notify_one();
        }
    }

    /// Hands at most `max` queued relays from each other shard to `f`; returns how many.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(Relay)) -> usize {
        let mut n = 0;
        for c in self.inbound.iter_mut().flatten() {
            for _ in 0..max {
                match c.pop() {
                    Ok(r) => {
                        n += 1;
                        f(r);
                    }
                    Err(_) => break,
                }
            }
        }
        n
    }

    /// Resolves when another shard has queued packets for this one.
    pub async fn woken(&self) {
        self.wakers[self.index].notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(seq: u64) -> Relay {
        let params = *str0m::format::CodecConfig::new_with_defaults()
            .params()
            .first()
            .expect("default codecs");
        Relay {
            track: TrackKey(1),
            stream: 7,
            layer: 0,
            seq,
            ts: 0,
            marker: false,
            pt: params.pt(),
            params,
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
            payload: Arc::from(&b"x"[..]),
            at: Instant::now(),
        }
    }

    #[test]
    fn relays_arrive_in_order_sharing_the_payload_and_a_full_ring_drops() {
        let mut mesh = Exchange::mesh(3);
        let mut c = mesh.pop().unwrap();
        let mut b = mesh.pop().unwrap();
        let mut a = mesh.pop().unwrap();
        let shared = relay(0).payload;
        for seq in 0..3 {
            let mut r = relay(seq);
            r.payload = Arc::clone(&shared);
            assert!(a.send(1, r.clone()));
            assert!(a.send(2, r));
        }
        assert_eq!(
            Arc::strong_count(&shared),
            7,
            "six relays share one payload"
        );
        let mut got = Vec::new();
        assert_eq!(b.drain(16, |r| got.push(r.seq)), 3);
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(c.drain(2, |_| {}), 2, "at most `max` per shard per call");
        for seq in 0..RING_CAPACITY as u64 {
            a.send(1, relay(seq));
        }
        assert!(!a.send(1, relay(0)));
        assert_eq!(a.dropped, 1);
        assert!(!a.send(0, relay(0)), "no ring to itself");
    }
}
