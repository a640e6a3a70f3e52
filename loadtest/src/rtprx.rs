//! Receiving RTP as a browser accounts for it, from the clear RTP header alone: SRTP leaves
//! the header (SSRC, sequence number, timestamp, marker, header extensions) in clear and
//! encrypts only the payload. No I/O and no allocation per packet here.
//!
//! - [`RtpView`]: a parsed header (with the transport-wide sequence number, if present).
//! - [`SeqTracker`]: extended sequence numbers, loss, duplicates, reordering.
//! - [`SsrcRx`]: one received SSRC — loss, RFC 3550 jitter, bitrate, first/last arrival,
//!   the NACK list (with packets recovered after a NACK), frames and freezes (video), and the
//!   receiver-report block a browser would send for it.
//! - [`RedRepair`]: lost audio packets whose payload a later RED packet carried.
//! - [`TwccRecorder`]: transport-wide arrivals and the TWCC feedback built from them.
//! - [`RemoteSdp`]: what the receive side needs from the server's SDP.

use plenary_proto::TrackKind;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    TransportLayerCc,
};

/// RTCP packet types 192–223 share the first byte range with RTP (RFC 5761 §4).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && (192..=223).contains(&datagram[1])
}

/// Whether a datagram is RTP or RTCP (RFC 7983: first byte 128–191).
pub fn is_rtp_or_rtcp(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (128..=191).contains(b))
}

/// A parsed RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView {
    /// Marker bit (end of a video frame).
    pub marker: bool,
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Bytes of header, CSRCs and extensions: where the (encrypted) payload starts.
    pub header_len: usize,
    /// The P bit: the payload ends with padding.
    pub padding: bool,
    /// Transport-wide sequence number, if the extension `twcc_id` is present.
    pub twcc: Option<u16>,
}

impl RtpView {
    /// Parses the header of `p`; `twcc_id` is the negotiated transport-wide-cc extension id.
    pub fn parse(p: &[u8], twcc_id: Option<u8>) -> Option<RtpView> {
        if p.len() < 12 || p[0] >> 6 != 2 {
            return None;
        }
        let cc = usize::from(p[0] & 0x0f);
        let mut header_len = 12 + 4 * cc;
        let mut twcc = None;
        if p[0] & 0x10 != 0 {
            let ext = p.get(header_len..header_len + 4)?;
            let profile = u16::from_be_bytes([ext[0], ext[1]]);
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            let body = p.get(header_len + 4..header_len + 4 + 4 * words)?;
            if let Some(id) = twcc_id {
                twcc = find_extension(profile, body, id)
                    .and_then(|v| (v.len() >= 2).then(|| u16::from_be_bytes([v[0], v[1]])));
            }
            header_len += 4 + 4 * words;
        }
        if header_len > p.len() {
            return None;
        }
        Some(RtpView {
            marker: p[1] & 0x80 != 0,
            pt: p[1] & 0x7f,
            seq: u16::from_be_bytes([p[2], p[3]]),
            ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            header_len,
            padding: p[0] & 0x20 != 0,
            twcc,
        })
    }
}

/// The value of extension `id` in a one-byte (0xBEDE) or two-byte (0x100x) extension block.
fn find_extension(profile: u16, body: &[u8], id: u8) -> Option<&[u8]> {
    let mut i = 0;
    if profile == 0xBEDE {
        while i < body.len() {
            let b = body[i];
            if b == 0 {
                i += 1;
                continue;
            }
            let eid = b >> 4;
            let len = usize::from(b & 0x0f) + 1;
            if eid == 15 {
                return None;
            }
            let v = body.get(i + 1..i + 1 + len)?;
            if eid == id {
                return Some(v);
            }
            i += 1 + len;
        }
    } else if profile & 0xfff0 == 0x1000 {
        while i + 1 < body.len() {
            let eid = body[i];
            if eid == 0 {
                i += 1;
                continue;
            }
            let len = usize::from(body[i + 1]);
            let v = body.get(i + 2..i + 2 + len)?;
            if eid == id {
                return Some(v);
            }
            i += 2 + len;
        }
    }
    None
}

/// Extends 16-bit counters to 64 bits (the first value is placed one cycle up, so that
/// reordering across the start cannot go below zero).
#[derive(Debug, Clone, Copy, Default)]
pub struct Extender {
    last: Option<u64>,
}

impl Extender {
    /// The extended value of `v` nearest to the last one.
    pub fn extend(&mut self, v: u16) -> u64 {
        let ext = match self.last {
            None => (1 << 16) | u64::from(v),
            Some(last) => {
                let cand = (last & !0xffff) | u64::from(v);
                let mut best = cand;
                for c in [cand.checked_sub(1 << 16), Some(cand + (1 << 16))]
                    .into_iter()
                    .flatten()
                {
                    if c.abs_diff(last) < best.abs_diff(last) {
                        best = c;
                    }
                }
                best
            }
        };
        if self.last.is_none_or(|l| ext > l) {
            self.last = Some(ext);
        }
        ext
    }
}

/// Bits of history kept for duplicate, late-arrival and frame-completeness checks.
pub const HISTORY: u64 = 1024;

/// What a packet was to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// In order; `skipped` sequence numbers were jumped over (now missing).
    New {
        /// Sequence numbers between the previous highest and this one.
        skipped: u64,
    },
    /// Older than the highest, and filled a hole.
    Late,
    /// Seen before.
    Duplicate,
    /// Too old to tell (counted as received).
    TooOld,
}

/// Extended sequence numbers of one SSRC, with a bitmap of what arrived.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    ext: Extender,
    first: u64,
    highest: u64,
    bits: [u64; (HISTORY / 64) as usize],
    /// Distinct packets received.
    pub received: u64,
    /// Packets received more than once.
    pub duplicates: u64,
    /// Packets that arrived after a later one (filled a hole).
    pub reordered: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            ext: Extender::default(),
            first: 0,
            highest: 0,
            bits: [0; (HISTORY / 64) as usize],
            received: 0,
            duplicates: 0,
            reordered: 0,
        }
    }
}

impl SeqTracker {
    fn slot(ext: u64) -> (usize, u64) {
        let i = ext % HISTORY;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// The extended value of `seq`.
    pub fn extend(&mut self, seq: u16) -> u64 {
        self.ext.extend(seq)
    }

    /// Records extended sequence number `ext`.
    pub fn record(&mut self, ext: u64) -> Arrival {
        if self.received == 0 && self.duplicates == 0 {
            self.first = ext;
            self.highest = ext;
            let (w, m) = SeqTracker::slot(ext);
            self.bits[w] |= m;
            self.received = 1;
            return Arrival::New { skipped: 0 };
        }
        if ext > self.highest {
            let skipped = ext - self.highest - 1;
            if ext - self.highest >= HISTORY {
                self.bits = [0; (HISTORY / 64) as usize];
            } else {
                for s in self.highest + 1..=ext {
                    let (w, m) = SeqTracker::slot(s);
                    self.bits[w] &= !m;
                }
            }
            let (w, m) = SeqTracker::slot(ext);
            self.bits[w] |= m;
            self.highest = ext;
            self.received += 1;
            return Arrival::New { skipped };
        }
        if ext < self.first {
            // Before the first packet: widen the range (a reordered start).
            if self.first - ext >= HISTORY || self.highest - ext >= HISTORY {
                self.received += 1;
                return Arrival::TooOld;
            }
            for s in ext + 1..self.first {
                let (w, m) = SeqTracker::slot(s);
                self.bits[w] &= !m;
            }
            self.first = ext;
        } else if self.highest - ext >= HISTORY {
            self.received += 1;
            return Arrival::TooOld;
        }
        let (w, m) = SeqTracker::slot(ext);
        if self.bits[w] & m != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.bits[w] |= m;
        self.received += 1;
        self.reordered += 1;
        Arrival::Late
    }

    /// Whether `ext` arrived (false if outside the history).
    pub fn has(&self, ext: u64) -> bool {
        if ext > self.highest || self.highest - ext >= HISTORY || ext < self.first {
            return false;
        }
        let (w, m) = SeqTracker::slot(ext);
        self.bits[w] & m != 0
    }

    /// Highest extended sequence number.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Lowest extended sequence number counted (the first received, or an earlier late one).
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Packets expected from the first to the highest.
    pub fn expected(&self) -> u64 {
        if self.received == 0 {
            0
        } else {
            self.highest - self.first + 1
        }
    }

    /// Packets never received in that range.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// Lost packets of an audio SSRC whose payload arrived inside a later RED packet (RFC 2198):
/// what the listener's decoder gets back. A bitmap over the last [`HISTORY`] sequence
/// numbers (the tracker's window: a packet arriving later than that is counted by neither),
/// so each lost packet is repaired at most once, and one that arrives late after all is
/// taken back out.
#[derive(Debug, Clone)]
pub struct RedRepair {
    highest: Option<u64>,
    bits: [u64; (HISTORY / 64) as usize],
    /// RED packets received (well-formed, distinct).
    pub red_packets: u64,
    /// Lost packets repaired (and still lost on the wire).
    pub repaired: u64,
}

impl Default for RedRepair {
    fn default() -> Self {
        RedRepair {
            highest: None,
            bits: [0; (HISTORY / 64) as usize],
            red_packets: 0,
            repaired: 0,
        }
    }
}

impl RedRepair {
    fn in_window(&self, ext: u64) -> bool {
        self.highest.is_some_and(|h| ext <= h && h - ext < HISTORY)
    }

    /// Every distinct packet of the SSRC: a new highest forgets what the reused slots
    /// held; a late packet that had been repaired no longer counts as repaired.
    pub fn on_arrival(&mut self, ext: u64, arrival: Arrival) {
        match arrival {
            Arrival::New { .. } => {
                if let Some(h) = self.highest {
                    if ext <= h {
                        return;
                    }
                    if ext - h >= HISTORY {
                        self.bits = [0; (HISTORY / 64) as usize];
                    } else {
                        for s in h + 1..=ext {
                            let (w, m) = SeqTracker::slot(s);
                            self.bits[w] &= !m;
                        }
                    }
                }
                self.highest = Some(ext);
            }
            Arrival::Late if self.in_window(ext) => {
                let (w, m) = SeqTracker::slot(ext);
                if self.bits[w] & m != 0 {
                    self.bits[w] &= !m;
                    self.repaired -= 1;
                }
            }
            _ => {}
        }
    }

    /// The RED packet `red_ext` carried a block repeating the packet `k` sequence numbers
    /// before it: repairs that packet if it is lost. Returns whether it did.
    pub fn repair(&mut self, seq: &SeqTracker, red_ext: u64, k: u64) -> bool {
        let Some(target) = red_ext.checked_sub(k) else {
            return false;
        };
        if k == 0 || !self.in_window(target) || target < seq.first() || seq.has(target) {
            return false;
        }
        let (w, m) = SeqTracker::slot(target);
        if self.bits[w] & m != 0 {
            return false;
        }
        self.bits[w] |= m;
        self.repaired += 1;
        true
    }
}

/// Most sequence numbers waiting for a retransmission per SSRC (Chrome keeps 1000; a
/// simulated attendee needs fewer).
pub const NACK_LIST: usize = 128;
/// Sends of one NACK before giving up.
pub const NACK_TRIES: u8 = 3;
/// Time between sends of one NACK (an RTT guess on loopback and LAN).
pub const NACK_RETRY_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Missing {
    ext: u64,
    tries: u8,
    last_us: u64,
}

/// Sequence numbers missing and how often they were NACKed.
#[derive(Debug, Clone)]
pub struct NackList {
    items: [Missing; NACK_LIST],
    len: usize,
    /// Sequence numbers put in a NACK (each send counts).
    pub nacked: u64,
    /// Packets that arrived after being NACKed.
    pub recovered: u64,
    /// Missing packets given up on (tries exhausted, or pushed out of the list).
    pub given_up: u64,
}

impl Default for NackList {
    fn default() -> Self {
        NackList {
            items: [Missing::default(); NACK_LIST],
            len: 0,
            nacked: 0,
            recovered: 0,
            given_up: 0,
        }
    }
}

impl NackList {
    /// `ext` is missing.
    pub fn add(&mut self, ext: u64) {
        if self.len == NACK_LIST {
            // Full: forget the oldest.
            self.items.copy_within(1.., 0);
            self.len -= 1;
            self.given_up += 1;
        }
        self.items[self.len] = Missing {
            ext,
            tries: 0,
            last_us: 0,
        };
        self.len += 1;
    }

    /// `ext` arrived; returns whether it had been NACKed (a recovery).
    pub fn arrived(&mut self, ext: u64) -> bool {
        let Some(i) = self.items[..self.len].iter().position(|m| m.ext == ext) else {
            return false;
        };
        let nacked = self.items[i].tries > 0;
        self.items.copy_within(i + 1..self.len, i);
        self.len -= 1;
        if nacked {
            self.recovered += 1;
        }
        nacked
    }

    /// Sequence numbers due for a (re)send at `now_us`, written to `out`; returns how many.
    /// Entries out of tries are dropped (given up) once their last retry has had its time.
    pub fn due(&mut self, now_us: u64, out: &mut [u16]) -> usize {
        let mut n = 0;
        let mut keep = 0;
        for i in 0..self.len {
            let mut m = self.items[i];
            let waited = m.tries == 0 || now_us.saturating_sub(m.last_us) >= NACK_RETRY_US;
            if waited && m.tries >= NACK_TRIES {
                self.given_up += 1;
                continue;
            }
            if waited && n < out.len() {
                out[n] = m.ext as u16;
                n += 1;
                m.tries += 1;
                m.last_us = now_us;
                self.nacked += 1;
            }
            self.items[keep] = m;
            keep += 1;
        }
        self.len = keep;
        n
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A frame is frozen when no complete frame arrives for longer than this.
pub const FREEZE_US: u64 = 200_000;
/// Incomplete frames remembered in case retransmissions complete them.
const PENDING_FRAMES: usize = 8;

/// Frames of a video SSRC, from marker bits and sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    /// First sequence number of the frame being received (one after the last marker).
    start: Option<u64>,
    pending: [(u64, u64); PENDING_FRAMES],
    pending_len: usize,
    /// Frames that arrived complete.
    pub complete: u64,
    /// Frames never completed.
    pub incomplete: u64,
    last_complete_us: Option<u64>,
    /// Gaps between complete frames longer than [`FREEZE_US`].
    pub freezes: u64,
    /// Their total length, µs.
    pub frozen_us: u64,
    /// Packets in complete frames (for the mean frame size).
    packets_in_complete: u64,
}

impl Frames {
    /// The packet `ext` arrived (`marker`: last of its frame). Returns the first sequence
    /// number and length of the frame it completed, if it completed one.
    pub fn on_packet(
        &mut self,
        seq: &SeqTracker,
        ext: u64,
        marker: bool,
        at_us: u64,
    ) -> Option<(u64, u64)> {
        let mut done = None;
        if marker && seq.highest() == ext {
            if let Some(start) = self.start.filter(|s| *s <= ext && ext - s < HISTORY) {
                if (start..=ext).all(|s| seq.has(s)) {
                    self.completed(at_us, ext - start + 1);
                    done = Some((start, ext - start + 1));
                } else {
                    self.push_pending(start, ext);
                }
            }
            self.start = Some(ext + 1);
        } else if seq.highest() != ext {
            // A late packet: it may complete a pending frame.
            let mut i = 0;
            while i < self.pending_len {
                let (s, e) = self.pending[i];
                if (s..=e).contains(&ext) && (s..=e).all(|x| seq.has(x)) {
                    self.pending.copy_within(i + 1..self.pending_len, i);
                    self.pending_len -= 1;
                    self.completed(at_us, e - s + 1);
                    done = Some((s, e - s + 1));
                } else {
                    i += 1;
                }
            }
        }
        if self.start.is_none() && marker {
            self.start = Some(ext + 1);
        }
        done
    }

    fn push_pending(&mut self, s: u64, e: u64) {
        if self.pending_len == PENDING_FRAMES {
            self.pending.copy_within(1.., 0);
            self.pending_len -= 1;
            self.incomplete += 1;
        }
        self.pending[self.pending_len] = (s, e);
        self.pending_len += 1;
    }

    fn completed(&mut self, at_us: u64, packets: u64) {
        self.complete += 1;
        self.packets_in_complete += packets;
        if let Some(last) = self.last_complete_us {
            let gap = at_us.saturating_sub(last);
            if gap > FREEZE_US {
                self.freezes += 1;
                self.frozen_us += gap;
            }
        }
        self.last_complete_us = Some(self.last_complete_us.map_or(at_us, |l| l.max(at_us)));
    }

    /// Mean packets per complete frame.
    pub fn mean_packets(&self) -> f64 {
        if self.complete == 0 {
            0.0
        } else {
            self.packets_in_complete as f64 / self.complete as f64
        }
    }

    /// At the end: frames still pending count as incomplete; a freeze still running at
    /// `end_us` (the media's end) counts too.
    pub fn finish(&mut self, end_us: u64) {
        self.incomplete += self.pending_len as u64;
        self.pending_len = 0;
        if let Some(last) = self.last_complete_us {
            let gap = end_us.saturating_sub(last);
            if gap > FREEZE_US {
                self.freezes += 1;
                self.frozen_us += gap;
            }
            self.last_complete_us = Some(end_us.max(last));
        }
    }
}

/// RFC 3550 interarrival jitter, in RTP timestamp units.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jitter {
    last_transit: Option<i64>,
    /// Current estimate (timestamp units).
    pub value: f64,
}

impl Jitter {
    /// A packet with timestamp `ts` arrived at `at_us`, on a `clock_hz` clock.
    pub fn on_packet(&mut self, ts: u32, at_us: u64, clock_hz: u32) {
        let arrival = (u128::from(at_us) * u128::from(clock_hz) / 1_000_000) as i64;
        let transit = arrival.wrapping_sub(i64::from(ts));
        if let Some(last) = self.last_transit {
            let d = (transit.wrapping_sub(last) as i32).unsigned_abs() as f64;
            self.value += (d - self.value) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// In milliseconds.
    pub fn ms(&self, clock_hz: u32) -> f64 {
        self.value * 1000.0 / f64::from(clock_hz.max(1))
    }
}

/// One received SSRC.
#[derive(Debug, Clone)]
pub struct SsrcRx {
    /// The SSRC.
    pub ssrc: u32,
    /// Audio or video (from the payload type, confirmed by samples).
    pub kind: TrackKind,
    /// RTP clock rate.
    pub clock_hz: u32,
    /// Sequence numbers.
    pub seq: SeqTracker,
    /// Jitter.
    pub jitter: Jitter,
    /// Payload bytes (after the header, before the tag; padding excluded when known).
    pub bytes: u64,
    /// Packets with the P bit (padding, e.g. bandwidth probes).
    pub padding_packets: u64,
    /// First and last arrival, µs since the run's epoch.
    pub first_at_us: u64,
    /// Last arrival.
    pub last_at_us: u64,
    /// NACK state (video).
    pub nack: NackList,
    /// Frames (video).
    pub frames: Frames,
    /// Middle 32 bits of the last sender report's NTP time, and when it arrived (µs).
    pub last_sr: Option<(u32, u64)>,
    /// Losses repaired by RED (audio).
    pub red: RedRepair,
    expected_prior: u64,
    received_prior: u64,
}

impl SsrcRx {
    /// A stream first seen at `at_us`.
    pub fn new(ssrc: u32, kind: TrackKind, clock_hz: u32, at_us: u64) -> SsrcRx {
        SsrcRx {
            ssrc,
            kind,
            clock_hz,
            seq: SeqTracker::default(),
            jitter: Jitter::default(),
            bytes: 0,
            padding_packets: 0,
            first_at_us: at_us,
            last_at_us: at_us,
            nack: NackList::default(),
            frames: Frames::default(),
            last_sr: None,
            red: RedRepair::default(),
            expected_prior: 0,
            received_prior: 0,
        }
    }

    /// Accounts one packet. `nack`: whether to track gaps for NACKs. Returns its extended
    /// sequence number, how it arrived, whether it was a NACK recovery, and the frame it
    /// completed (first extended sequence number, packets), if any.
    pub fn on_packet(
        &mut self,
        h: &RtpView,
        payload_len: usize,
        at_us: u64,
        nack: bool,
    ) -> (u64, Arrival, bool, Option<(u64, u64)>) {
        let ext = self.seq.extend(h.seq);
        let arrival = self.seq.record(ext);
        self.red.on_arrival(ext, arrival);
        let mut recovered = false;
        match arrival {
            Arrival::Duplicate => return (ext, arrival, false, None),
            Arrival::New { skipped } => {
                if nack && skipped > 0 {
                    // Chrome asks for at most a few hundred; a huge jump is a new start.
                    if skipped <= NACK_LIST as u64 {
                        for s in ext - skipped..ext {
                            self.nack.add(s);
                        }
                    }
                }
                self.jitter.on_packet(h.ts, at_us, self.clock_hz);
            }
            Arrival::Late | Arrival::TooOld => {
                if nack {
                    recovered = self.nack.arrived(ext);
                }
            }
        }
        if h.padding {
            self.padding_packets += 1;
        } else {
            self.bytes += payload_len as u64;
        }
        self.last_at_us = self.last_at_us.max(at_us);
        let frame = if self.kind == TrackKind::Video && !h.padding {
            self.frames.on_packet(&self.seq, ext, h.marker, at_us)
        } else {
            None
        };
        (ext, arrival, recovered, frame)
    }

    /// The RED packet `red_ext` (already accounted) repeated the packet `k` before it.
    /// Returns whether that repaired a loss.
    pub fn red_block(&mut self, red_ext: u64, k: u64) -> bool {
        self.red.repair(&self.seq, red_ext, k)
    }

    /// Losses a RED packet repaired (never more than were lost: a late arrival takes a
    /// repair back out, but the loss count may fall first).
    pub fn repaired(&self) -> u64 {
        self.red.repaired.min(self.seq.lost())
    }

    /// Packets lost on the wire whose payload no RED packet brought either.
    pub fn lost_after_red(&self) -> u64 {
        self.seq.lost() - self.repaired()
    }

    /// The RR report block for this SSRC at `now_us` (and the interval's counters move on).
    pub fn report_block(&mut self, now_us: u64) -> ReceptionReport {
        let expected = self.seq.expected();
        let expected_interval = expected - self.expected_prior.min(expected);
        let received_interval = self.seq.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.seq.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        let (lsr, delay) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now_us.saturating_sub(at);
                (lsr, (d * 65_536 / 1_000_000) as u32)
            }
            None => (0, 0),
        };
        ReceptionReport {
            ssrc: self.ssrc,
            fraction_lost,
            total_lost: self.seq.lost().min(0x7f_ffff) as u32,
            // Cycles counted from our start (the tracker starts one cycle up).
            last_sequence_number: self.seq.highest().saturating_sub(1 << 16) as u32,
            jitter: self.jitter.value as u32,
            last_sender_report: lsr,
            delay,
        }
    }
}

/// Transport-wide arrivals remembered between two feedback packets.
pub const TWCC_HISTORY: usize = 1024;

/// Transport-wide sequence numbers and arrival times, and the TWCC feedback built from them
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01).
#[derive(Debug, Clone)]
pub struct TwccRecorder {
    ext: Extender,
    arrivals: Box<[(u64, u64)]>,
    len: usize,
    next_base: Option<u64>,
    fb_count: u8,
    /// Feedback packets built.
    pub sent: u64,
}

impl Default for TwccRecorder {
    fn default() -> Self {
        TwccRecorder {
            ext: Extender::default(),
            arrivals: vec![(0, 0); TWCC_HISTORY].into_boxed_slice(),
            len: 0,
            next_base: None,
            fb_count: 0,
            sent: 0,
        }
    }
}

impl TwccRecorder {
    /// Transport-wide sequence number `seq` arrived at `at_us`.
    pub fn record(&mut self, seq: u16, at_us: u64) {
        let ext = self.ext.extend(seq);
        if self.next_base.is_some_and(|b| ext < b) {
            return; // already reported as lost
        }
        if self.len == TWCC_HISTORY {
            // Feedback is overdue; keep the newest.
            self.arrivals.copy_within(1.., 0);
            self.len -= 1;
        }
        self.arrivals[self.len] = (ext, at_us);
        self.len += 1;
    }

    /// Whether anything waits to be reported.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The feedback for every arrival since the last one (`None` if there were none).
    pub fn feedback(&mut self, sender_ssrc: u32, media_ssrc: u32) -> Option<TransportLayerCc> {
        if self.len == 0 {
            return None;
        }
        let arr = &mut self.arrivals[..self.len];
        arr.sort_unstable_by_key(|a| a.0);
        let base = self.next_base.unwrap_or(arr[0].0).min(arr[0].0);
        let last = arr[self.len - 1].0;
        let count = (last - base + 1).min(0xffff);
        let reference_us = arr[0].1;
        let reference_time = ((reference_us / 64_000) & 0x00ff_ffff) as u32;
        let mut prev_us = (u64::from(reference_time) * 64_000) as i64;
        let mut chunks: Vec<PacketStatusChunk> = Vec::new();
        let mut deltas = Vec::with_capacity(self.len);
        let mut run: Option<(SymbolTypeTcc, u16)> = None;
        let mut push = |sym: SymbolTypeTcc, chunks: &mut Vec<PacketStatusChunk>| match run {
            Some((s, n)) if s == sym && n < 0x1fff => run = Some((s, n + 1)),
            _ => {
                if let Some((s, n)) = run.take() {
                    chunks.push(rle(s, n));
                }
                run = Some((sym, 1));
            }
        };
        let mut i = 0;
        for seq in base..base + count {
            while i < arr.len() && arr[i].0 < seq {
                i += 1; // duplicates
            }
            if i < arr.len() && arr[i].0 == seq {
                let at = arr[i].1 as i64;
                // Deltas in 250 µs units, rounded.
                let d = (at - prev_us) / 250 * 250;
                prev_us += d;
                let sym = if (0..=255 * 250).contains(&d) {
                    SymbolTypeTcc::PacketReceivedSmallDelta
                } else {
                    SymbolTypeTcc::PacketReceivedLargeDelta
                };
                let d = d.clamp(i64::from(i16::MIN) * 250, i64::from(i16::MAX) * 250);
                deltas.push(RecvDelta {
                    type_tcc_packet: sym,
                    delta: d,
                });
                push(sym, &mut chunks);
            } else {
                push(SymbolTypeTcc::PacketNotReceived, &mut chunks);
            }
        }
        if let Some((s, n)) = run {
            chunks.push(rle(s, n));
        }
        self.next_base = Some(base + count);
        self.len = 0;
        let fb = TransportLayerCc {
            sender_ssrc,
            media_ssrc,
            base_sequence_number: base as u16,
            packet_status_count: count as u16,
            reference_time,
            fb_pkt_count: self.fb_count,
            packet_chunks: chunks,
            recv_deltas: deltas,
        };
        self.fb_count = self.fb_count.wrapping_add(1);
        self.sent += 1;
        Some(fb)
    }
}

fn rle(sym: SymbolTypeTcc, n: u16) -> PacketStatusChunk {
    PacketStatusChunk::RunLengthChunk(RunLengthChunk {
        type_tcc: StatusChunkTypeTcc::RunLengthChunk,
        packet_status_symbol: sym,
        run_length: n,
    })
}

/// A payload type of the server's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadType {
    /// The number.
    pub pt: u8,
    /// Media kind of its m-line.
    pub kind: TrackKind,
    /// Clock rate.
    pub clock_hz: u32,
    /// For RTX: the payload type it repairs.
    pub rtx_of: Option<u8>,
    /// For RED (RFC 2198): the payload type of its blocks (fmtp `111/111`: Opus 111).
    pub red_of: Option<u8>,
}

/// What receiving needs from the server's SDP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteSdp {
    /// The transport-wide-cc header extension id.
    pub twcc_id: Option<u8>,
    /// Payload types.
    pub pts: Vec<PayloadType>,
    /// RTX SSRC → media SSRC (`a=ssrc-group:FID`).
    pub rtx_ssrcs: Vec<(u32, u32)>,
}

impl RemoteSdp {
    /// Parses an SDP (unknown lines are ignored).
    pub fn parse(sdp: &str) -> RemoteSdp {
        let mut r = RemoteSdp::default();
        let mut kind = None;
        let mut fmtp: Vec<(u8, u8)> = Vec::new();
        let mut red_fmtp: Vec<(u8, u8)> = Vec::new();
        for line in sdp.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("m=") {
                kind = match m.split(' ').next() {
                    Some("audio") => Some(TrackKind::Audio),
                    Some("video") => Some(TrackKind::Video),
                    _ => None,
                };
            } else if let Some(x) = line.strip_prefix("a=extmap:") {
                let mut parts = x.split_whitespace();
                let id = parts.next().and_then(|i| i.split('/').next()?.parse().ok());
                let uri = parts.next().unwrap_or("");
                if uri.contains("transport-wide-cc") {
                    r.twcc_id = r.twcc_id.or(id);
                }
            } else if let Some(x) = line.strip_prefix("a=rtpmap:") {
                let (Some(kind), Some((pt, codec))) = (kind, x.split_once(' ')) else {
                    continue;
                };
                let mut c = codec.split('/');
                let name = c.next().unwrap_or("");
                let (Ok(pt), Some(Ok(clock_hz))) = (pt.parse(), c.next().map(str::parse)) else {
                    continue;
                };
                if !r.pts.iter().any(|p| p.pt == pt) {
                    r.pts.push(PayloadType {
                        pt,
                        kind,
                        clock_hz,
                        rtx_of: name.eq_ignore_ascii_case("rtx").then_some(0),
                        red_of: name.eq_ignore_ascii_case("red").then_some(0),
                    });
                }
            } else if let Some(x) = line.strip_prefix("a=fmtp:") {
                if let Some((pt, params)) = x.split_once(' ') {
                    let apt = params
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("apt="))
                        .and_then(|a| a.parse().ok());
                    if let (Ok(pt), Some(apt)) = (pt.parse::<u8>(), apt) {
                        fmtp.push((pt, apt));
                    }
                    // RED: `111/111` (the blocks' payload types; one codec here).
                    let primary = params
                        .trim()
                        .split('/')
                        .next()
                        .and_then(|a| a.parse::<u8>().ok());
                    if let (Ok(pt), Some(primary)) = (pt.parse::<u8>(), primary) {
                        red_fmtp.push((pt, primary));
                    }
                }
            } else if let Some(x) = line.strip_prefix("a=ssrc-group:FID ") {
                let mut s = x.split_whitespace().map(str::parse::<u32>);
                if let (Some(Ok(media)), Some(Ok(rtx))) = (s.next(), s.next()) {
                    r.rtx_ssrcs.push((rtx, media));
                }
            }
        }
        // RED without an fmtp wraps the first plain codec of its kind.
        let plain = |r: &RemoteSdp, kind| {
            r.pts
                .iter()
                .find(|p| p.kind == kind && p.rtx_of.is_none() && p.red_of.is_none())
                .map(|p| p.pt)
        };
        for i in 0..r.pts.len() {
            let p = r.pts[i];
            if p.rtx_of.is_some() {
                r.pts[i].rtx_of = fmtp.iter().find(|(pt, _)| *pt == p.pt).map(|(_, a)| *a);
            }
            if p.red_of.is_some() {
                r.pts[i].red_of = red_fmtp
                    .iter()
                    .find(|(pt, _)| *pt == p.pt)
                    .map(|(_, a)| *a)
                    .or_else(|| plain(&r, p.kind));
            }
        }
        r
    }

    /// The payload type `pt`, if the SDP has it.
    pub fn pt(&self, pt: u8) -> Option<&PayloadType> {
        self.pts.iter().find(|p| p.pt == pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u16, ts: u32, ssrc: u32, marker: bool) -> Vec<u8> {
        let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn headers_parse_with_one_and_two_byte_extensions() {
        let mut p = header(7, 90_000, 0xdead_beef, true);
        p[0] |= 0x10;
        // One-byte block: id 1 (len 1: abs-send-time-ish 2 bytes), padding, id 3 (2 bytes).
        p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02]);
        p.extend_from_slice(&[0x11, 0xaa, 0xbb, 0x00, 0x31, 0x12, 0x34, 0x00]);
        p.extend_from_slice(b"payload");
        let v = RtpView::parse(&p, Some(3)).unwrap();
        assert_eq!(v.seq, 7);
        assert_eq!(v.ts, 90_000);
        assert_eq!(v.ssrc, 0xdead_beef);
        assert!(v.marker);
        assert_eq!(v.pt, 96);
        assert_eq!(v.header_len, 24);
        assert_eq!(v.twcc, Some(0x1234));
        assert_eq!(RtpView::parse(&p, Some(4)).unwrap().twcc, None);
        // Two-byte block.
        let mut q = header(8, 1, 2, false);
        q[0] |= 0x10;
        q.extend_from_slice(&[0x10, 0x00, 0x00, 0x01, 0x05, 0x02, 0xab, 0xcd]);
        let v = RtpView::parse(&q, Some(5)).unwrap();
        assert_eq!(v.twcc, Some(0xabcd));
        assert_eq!(v.header_len, 20);
        // Truncated or not version 2.
        assert!(RtpView::parse(&q[..18], Some(5)).is_none());
        assert!(RtpView::parse(&[0x40; 20], None).is_none());
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        assert!(!is_rtcp(&p));
        assert!(is_rtp_or_rtcp(&p) && !is_rtp_or_rtcp(&[0x16, 0xfe]));
    }

    #[test]
    fn sequence_numbers_extend_across_the_wrap_and_reordering() {
        let mut e = Extender::default();
        let a = e.extend(65_534);
        assert_eq!(e.extend(65_535), a + 1);
        assert_eq!(e.extend(1), a + 3);
        assert_eq!(e.extend(0), a + 2, "late, before the wrap point");
        assert_eq!(e.extend(65_533), a - 1, "late, from before");
        assert_eq!(e.extend(2), a + 4);
    }

    #[test]
    fn the_tracker_counts_loss_late_duplicates_and_too_old() {
        let mut t = SeqTracker::default();
        let rec = |t: &mut SeqTracker, s: u16| {
            let e = t.extend(s);
            t.record(e)
        };
        assert_eq!(rec(&mut t, 100), Arrival::New { skipped: 0 });
        assert_eq!(rec(&mut t, 101), Arrival::New { skipped: 0 });
        assert_eq!(rec(&mut t, 105), Arrival::New { skipped: 3 });
        assert_eq!(t.lost(), 3);
        assert_eq!(rec(&mut t, 103), Arrival::Late);
        assert_eq!(rec(&mut t, 103), Arrival::Duplicate);
        assert_eq!(t.lost(), 2);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.duplicates, 1);
        // Before the first: the range widens.
        assert_eq!(rec(&mut t, 99), Arrival::Late);
        assert_eq!(t.expected(), 7);
        for s in 106..106 + 2 * HISTORY as u16 {
            rec(&mut t, s);
        }
        assert_eq!(rec(&mut t, 102), Arrival::TooOld);
        assert!(t.has(t.highest()) && !t.has(t.highest() + 1));
    }

    #[test]
    fn nacks_are_sent_retried_given_up_and_recoveries_counted() {
        let mut n = NackList::default();
        n.add(10);
        n.add(11);
        let mut out = [0u16; 16];
        assert_eq!(n.due(1_000, &mut out), 2);
        assert_eq!(&out[..2], &[10, 11]);
        assert_eq!(n.due(2_000, &mut out), 0, "not before the retry time");
        assert!(n.arrived(10));
        assert_eq!(n.recovered, 1);
        assert!(!n.arrived(10), "only once");
        let mut t = 2_000;
        for _ in 0..NACK_TRIES {
            t += NACK_RETRY_US;
            n.due(t, &mut out);
        }
        assert_eq!(n.len(), 0);
        assert_eq!(n.given_up, 1);
        assert_eq!(n.nacked, 2 + u64::from(NACK_TRIES) - 1);
        // A packet that arrives before any NACK went out is no recovery.
        n.add(20);
        assert!(!n.arrived(20));
        assert_eq!(n.recovered, 1);
        for i in 0..NACK_LIST as u64 + 5 {
            n.add(100 + i);
        }
        assert_eq!(n.len(), NACK_LIST);
        assert_eq!(n.given_up, 6);
    }

    fn video() -> SsrcRx {
        SsrcRx::new(5, TrackKind::Video, 90_000, 0)
    }

    fn feed(s: &mut SsrcRx, seq: u16, ts: u32, marker: bool, at_us: u64) -> Option<(u64, u64)> {
        let h = RtpView::parse(&header(seq, ts, 5, marker), None).unwrap();
        s.on_packet(&h, 1000, at_us, true).3
    }

    #[test]
    fn frames_complete_late_and_freezes_are_timed() {
        let mut s = video();
        // Frame 1: seqs 1..=3 (marker on 3); 33 ms frames.
        feed(&mut s, 0, 0, true, 0);
        feed(&mut s, 1, 3000, false, 1_000);
        feed(&mut s, 2, 3000, false, 2_000);
        assert_eq!(feed(&mut s, 3, 3000, true, 3_000).map(|f| f.1), Some(3));
        // Frame 2 loses seq 5: incomplete until the retransmission at 400 ms.
        feed(&mut s, 4, 6000, false, 33_000);
        assert_eq!(feed(&mut s, 6, 6000, true, 35_000), None);
        assert_eq!(s.nack.len(), 1);
        let mut out = [0u16; 4];
        assert_eq!(s.nack.due(40_000, &mut out), 1);
        assert_eq!(feed(&mut s, 5, 6000, false, 400_000).map(|f| f.1), Some(3));
        assert_eq!(s.nack.recovered, 1);
        assert_eq!(s.frames.complete, 2);
        assert_eq!(
            s.frames.freezes, 1,
            "3 ms → 400 ms without a complete frame"
        );
        assert_eq!(s.frames.frozen_us, 397_000);
        // A frame that never completes.
        feed(&mut s, 7, 9000, false, 433_000);
        feed(&mut s, 9, 9000, true, 434_000);
        feed(&mut s, 10, 12000, true, 466_000);
        s.frames.finish(500_000);
        assert_eq!(s.frames.incomplete, 1);
        assert_eq!(s.frames.complete, 3);
        assert_eq!(s.seq.lost(), 1);
    }

    #[test]
    fn receiver_reports_carry_interval_loss_and_the_last_sender_report() {
        let mut s = SsrcRx::new(9, TrackKind::Audio, 48_000, 0);
        for seq in 0..100u16 {
            if seq % 4 != 1 {
                let h = RtpView::parse(&header(seq, u32::from(seq) * 960, 9, false), None).unwrap();
                s.on_packet(&h, 80, u64::from(seq) * 20_000, false);
            }
        }
        s.last_sr = Some((0x1234_5678, 1_000_000));
        let rb = s.report_block(1_500_000);
        assert_eq!(rb.ssrc, 9);
        // 100 expected (0..=99), 25 lost.
        assert_eq!(rb.total_lost, 25);
        assert_eq!(rb.fraction_lost, (25 * 256 / 100) as u8);
        assert_eq!(rb.last_sequence_number, 99);
        assert_eq!(rb.last_sender_report, 0x1234_5678);
        assert_eq!(rb.delay, 32_768, "0.5 s in 1/65536 s");
        // Next interval: nothing lost.
        for seq in 100..150u16 {
            let h = RtpView::parse(&header(seq, u32::from(seq) * 960, 9, false), None).unwrap();
            s.on_packet(&h, 80, u64::from(seq) * 20_000, false);
        }
        assert_eq!(s.report_block(3_000_000).fraction_lost, 0);
        // Audio paced exactly on its clock has no jitter.
        assert!(s.jitter.ms(48_000) < 0.01, "{}", s.jitter.ms(48_000));
    }

    #[test]
    fn twcc_feedback_marks_losses_and_deltas() {
        let mut r = TwccRecorder::default();
        assert!(r.feedback(1, 2).is_none());
        // 10..=15 with 12 missing, arrivals 1 ms apart; 14 arrives late (after 15).
        for (seq, at) in [(10, 100_000), (11, 101_000), (13, 103_000), (15, 105_000)] {
            r.record(seq, at);
        }
        r.record(14, 106_000);
        let fb = r.feedback(1, 2).unwrap();
        assert_eq!(fb.base_sequence_number, 10);
        assert_eq!(fb.packet_status_count, 6);
        assert_eq!(fb.recv_deltas.len(), 5);
        assert_eq!(fb.reference_time, 1, "100 ms in 64 ms units");
        // First delta from the reference time (64 ms) to 100 ms: small; then 1 ms steps,
        // and 14 (106 ms) before 15 (105 ms) is a negative, large delta.
        assert_eq!(fb.recv_deltas[0].delta, 36_000);
        assert_eq!(
            fb.recv_deltas[0].type_tcc_packet,
            SymbolTypeTcc::PacketReceivedSmallDelta
        );
        assert_eq!(fb.recv_deltas[1].delta, 1_000);
        assert_eq!(
            fb.recv_deltas[3].delta, 3_000,
            "14 at 106 ms after 13 at 103"
        );
        assert_eq!(fb.recv_deltas[4].delta, -1_000);
        assert_eq!(
            fb.recv_deltas[4].type_tcc_packet,
            SymbolTypeTcc::PacketReceivedLargeDelta
        );
        let statuses: u16 = fb
            .packet_chunks
            .iter()
            .map(|c| match c {
                PacketStatusChunk::RunLengthChunk(r) => r.run_length,
                PacketStatusChunk::StatusVectorChunk(_) => 0,
            })
            .sum();
        assert_eq!(statuses, 6);
        // It marshals, and webrtc-rs reads back the same statuses and deltas.
        use rtc::shared::marshal::{Marshal, Unmarshal};
        let wire = fb.marshal().unwrap();
        let back = TransportLayerCc::unmarshal(&mut wire.clone()).unwrap();
        assert_eq!(back.base_sequence_number, 10);
        assert_eq!(back.packet_status_count, 6);
        assert_eq!(back.reference_time, 1);
        let deltas: Vec<i64> = back.recv_deltas.iter().map(|d| d.delta).collect();
        assert_eq!(deltas, vec![36_000, 1_000, 2_000, 3_000, -1_000]);
        // The next feedback starts after 15; an old packet is not reported again.
        r.record(12, 107_000);
        assert!(r.is_empty());
        r.record(16, 108_000);
        let fb = r.feedback(1, 2).unwrap();
        assert_eq!(fb.base_sequence_number, 16);
        assert_eq!(fb.fb_pkt_count, 1);
    }

    fn audio_feed(s: &mut SsrcRx, seq: u16) -> u64 {
        let h = RtpView::parse(&header(seq, u32::from(seq) * 960, 9, false), None).unwrap();
        s.on_packet(&h, 80, u64::from(seq) * 20_000, false).0
    }

    #[test]
    fn losses_are_repaired_by_red_blocks_of_the_right_distance_only() {
        let mut s = SsrcRx::new(9, TrackKind::Audio, 48_000, 0);
        for seq in 0..10u16 {
            audio_feed(&mut s, seq);
        }
        // Seq 10 is lost; 11 is a RED packet with a block 960 back: 10 comes back.
        let e11 = audio_feed(&mut s, 11);
        assert_eq!(s.seq.lost(), 1);
        let k = crate::red::block_distance(960, None).unwrap();
        assert!(s.red_block(e11, k));
        assert_eq!(s.red.repaired, 1);
        assert_eq!(s.lost_after_red(), 0);
        // The same loss again (a second block, a duplicate RED): counted once.
        assert!(!s.red_block(e11, 1));
        // A block for a packet that arrived repairs nothing.
        assert!(!s.red_block(e11, 2), "9 arrived");
        // Seq 13 is lost; 14 carries a block whose offset does not match 13 (2 frames
        // back: 12, which arrived) and one that is no whole frame: 13 stays lost.
        audio_feed(&mut s, 12);
        let e14 = audio_feed(&mut s, 14);
        for offset in [1920, 1000] {
            if let Some(k) = crate::red::block_distance(offset, None) {
                assert!(!s.red_block(e14, k));
            }
        }
        assert_eq!(s.seq.lost(), 2);
        assert_eq!(s.lost_after_red(), 1);
        // Seqs 15–16 lost, never covered by any RED packet: they stay lost.
        for seq in 17..40u16 {
            audio_feed(&mut s, seq);
        }
        assert_eq!(s.seq.lost(), 4);
        assert_eq!(s.red.repaired, 1);
        assert_eq!(s.lost_after_red(), 3);
        // A repaired packet that arrives late after all is no longer counted as repaired.
        let e41 = audio_feed(&mut s, 41);
        assert!(s.red_block(e41, 1), "40 lost, repaired");
        assert_eq!(s.red.repaired, 2);
        audio_feed(&mut s, 40);
        assert_eq!(s.red.repaired, 1);
        assert_eq!(s.seq.lost(), 4);
        assert_eq!(s.lost_after_red(), 3);
        // Before the first packet nothing was lost; nothing to repair there.
        let mut t = SsrcRx::new(10, TrackKind::Audio, 48_000, 0);
        let e = audio_feed(&mut t, 500);
        assert!(!t.red_block(e, 1));
        assert!(!t.red_block(e, 0));
        assert_eq!(t.red.repaired, 0);
        // Far behind the window: the slot was reused, nothing is repaired twice.
        for seq in 501..501 + HISTORY as u16 + 10 {
            audio_feed(&mut t, seq);
        }
        let top = t.seq.highest();
        assert!(!t.red_block(top, HISTORY));
    }

    #[test]
    fn the_sdp_gives_red_and_its_primary() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n\
            a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
            a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        let r = RemoteSdp::parse(sdp);
        assert_eq!(
            r.pt(63),
            Some(&PayloadType {
                pt: 63,
                kind: TrackKind::Audio,
                clock_hz: 48_000,
                rtx_of: None,
                red_of: Some(111),
            })
        );
        assert_eq!(r.pt(111).unwrap().red_of, None);
        assert_eq!(r.pt(97).unwrap().rtx_of, Some(96));
        assert_eq!(r.pt(97).unwrap().red_of, None);
        assert_eq!(r.pt(96).unwrap().red_of, None);
        // Without its fmtp, RED wraps the audio codec of its section.
        let bare = RemoteSdp::parse(
            "m=audio 9 UDP/TLS/RTP/SAVPF 109 100\r\na=rtpmap:109 opus/48000/2\r\na=rtpmap:100 red/48000/2\r\n",
        );
        assert_eq!(bare.pt(100).unwrap().red_of, Some(109));
    }

    #[test]
    fn the_sdp_gives_twcc_payload_types_and_rtx() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
            a=rtpmap:111 opus/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
            a=ssrc-group:FID 1111 2222\r\n";
        let r = RemoteSdp::parse(sdp);
        assert_eq!(r.twcc_id, Some(3));
        assert_eq!(
            r.pt(111),
            Some(&PayloadType {
                pt: 111,
                kind: TrackKind::Audio,
                clock_hz: 48_000,
                rtx_of: None,
                red_of: None,
            })
        );
        assert_eq!(r.pt(96).unwrap().kind, TrackKind::Video);
        assert_eq!(r.pt(97).unwrap().rtx_of, Some(96));
        assert_eq!(r.rtx_ssrcs, vec![(2222, 1111)]);
        assert!(r.pt(100).is_none());
    }
}
