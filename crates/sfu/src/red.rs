//! Audio redundancy (RFC 2198 RED) for listeners on lossy links.
//!
//! Opus conceals a lost 20 ms packet, but a listener who loses one packet in twenty hears
//! it. Retransmission is too slow for audio and browsers do not ask for it, so the server
//! repeats: each audio packet sent to a lossy listener also carries the one or two packets
//! before it, and the browser's jitter buffer rebuilds a lost packet from the next one
//! (Chrome decodes RED when its answer accepts `red/48000/2`).
//!
//! Data flow, per audio packet the server forwards:
//! 1. [`RedEncoder::encode`] writes the RED payload (redundant blocks, then the primary)
//!    into a reused buffer, once per source packet and distance, shared by every lossy
//!    listener of the track; [`RedEncoder::push`] then remembers the packet for the next.
//! 2. Each listener's [`RedPolicy`] says, from the loss its receiver reports once a second,
//!    how many past packets to repeat (0, 1 or 2).
//! 3. [`primary`] takes a RED payload apart when a publisher sends RED itself, so the
//!    core always forwards plain Opus and adds redundancy per listener.
//!
//! Sans-IO: payloads, loss and the time in, payloads and distances out.

use std::time::{Duration, Instant};

/// The most past packets one RED packet repeats.
pub const MAX_DISTANCE: usize = 2;
/// Loss from which one past packet is repeated.
const ONE_BLOCK_LOSS: f64 = 0.01;
/// Loss from which two past packets are repeated.
const TWO_BLOCKS_LOSS: f64 = 0.03;
/// Loss from which the link counts as congested (as `LossCap`'s heavy loss).
const CONGESTION_LOSS: f64 = crate::loss_cap::HEAVY_LOSS;
/// Loss below which the link counts as clean.
const CLEAN_LOSS: f64 = 0.005;
/// How long a link must stay clean before redundancy steps down one block.
const STEP_DOWN_AFTER: Duration = Duration::from_secs(10);
/// RED limits: a block length has 10 bits, a timestamp offset 14.
const MAX_BLOCK_LEN: usize = (1 << 10) - 1;
const MAX_TS_OFFSET: u32 = (1 << 14) - 1;
/// Redundancy is left out rather than make a packet bigger than this (bytes of payload).
const MAX_RED_PAYLOAD: usize = 1100;
/// The share of the link (in percent) audio with its repeats may take.
const AUDIO_SHARE_PERCENT: u64 = 80;
/// How long the highest recent estimate stands for the link (two windows of this length).
const ESTIMATE_WINDOW: Duration = Duration::from_secs(5);
/// A loss report this long after the one before covers enough packets to count alone.
const LONG_REPORT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Default)]
struct Block {
    seq: u16,
    ts: u32,
    data: Vec<u8>,
}

/// One audio track's recent packets, and the RED payloads built from them.
#[derive(Debug, Clone, Default)]
pub struct RedEncoder {
    /// Ring of the last [`MAX_DISTANCE`] packets; `filled` of them are valid.
    past: [Block; MAX_DISTANCE],
    next: usize,
    filled: usize,
}

impl RedEncoder {
    /// Writes into `out` the RED payload for the packet `(seq, ts, primary)`: up to
    /// `distance` of the packets just before it (consecutive sequence numbers, in order,
    /// oldest first), then the primary. `pt` is the Opus payload type the listener
    /// negotiated (the blocks' type). Past packets that do not fit RED's limits are left out.
    pub fn encode(
        &self,
        seq: u16,
        ts: u32,
        primary: &[u8],
        pt: u8,
        distance: usize,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let mut picked: [Option<&Block>; MAX_DISTANCE] = [None; MAX_DISTANCE];
        let mut size = 1 + primary.len();
        for back in (1..=distance.min(MAX_DISTANCE).min(self.filled)).rev() {
            let b = &self.past[(self.next + MAX_DISTANCE - back) % MAX_DISTANCE];
            let offset = ts.wrapping_sub(b.ts);
            let consecutive = seq.wrapping_sub(b.seq) as usize == back;
            if !consecutive
                || offset == 0
                || offset > MAX_TS_OFFSET
                || b.data.is_empty()
                || b.data.len() > MAX_BLOCK_LEN
                || size + 4 + b.data.len() > MAX_RED_PAYLOAD
            {
                continue;
            }
            size += 4 + b.data.len();
            picked[MAX_DISTANCE - back] = Some(b);
        }
        for b in picked.iter().flatten() {
            let offset = ts.wrapping_sub(b.ts);
            let word = (offset << 10) | b.data.len() as u32;
            out.push(0x80 | (pt & 0x7f));
            out.extend_from_slice(&word.to_be_bytes()[1..]);
        }
        out.push(pt & 0x7f);
        for b in picked.iter().flatten() {
            out.extend_from_slice(&b.data);
        }
        out.extend_from_slice(primary);
    }

    /// Remembers a packet as sent, for the packets after it (its buffer is reused).
    pub fn push(&mut self, seq: u16, ts: u32, primary: &[u8]) {
        let b = &mut self.past[self.next];
        b.seq = seq;
        b.ts = ts;
        b.data.clear();
        b.data.extend_from_slice(primary);
        self.next = (self.next + 1) % MAX_DISTANCE;
        self.filled = (self.filled + 1).min(MAX_DISTANCE);
    }
}

/// The primary (newest) block of a RED payload: where it starts in `payload`, or `None`
/// if the payload is not well-formed RED.
pub fn primary(payload: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut at = 0;
    let mut blocks = 0usize;
    loop {
        let first = *payload.get(at)?;
        if first & 0x80 == 0 {
            at += 1;
            break;
        }
        let header = payload.get(at..at + 4)?;
        blocks += ((u32::from(header[2]) & 0x03) << 8 | u32::from(header[3])) as usize;
        at += 4;
    }
    let start = at.checked_add(blocks)?;
    (start <= payload.len()).then_some(start..payload.len())
}

/// How much redundancy one listener gets, from the loss its receiver reports and what its
/// link carries.
///
/// Loss from a congested link is not helped by sending more, so redundancy is also held to
/// what the listener's link affords: audio with its repeats may take at most 80 % of the
/// highest bandwidth estimate of the last 5–10 s, capped by loss ([`RedPolicy::afford`]).
/// The highest, because a listener whose video is paused sends little, and its estimate then
/// sags and wobbles well below what the link carries (110–340 kbit/s on a 400 kbit/s link in
/// the load tester's mix); following each wobble switched the repeats off every other second
/// and left 2.2 % of its audio lost. Audio comes before video: the repeats' cost is part of
/// the allocator's audio reserve, so video gets what they leave. (At 60 %, three speakers
/// talking at once on that link lost their repeats whenever they all spoke: 1.1 % lost.)
#[derive(Debug, Clone)]
pub struct RedPolicy {
    distance: usize,
    clean_since: Option<Instant>,
    ceiling: usize,
    enabled: bool,
    /// The previous report's loss, and when it came.
    last_loss: f64,
    last_report: Option<Instant>,
    /// Highest estimate in the current window (start, bps) and in the one before.
    window: Option<(Instant, u64)>,
    previous_max: u64,
}

impl Default for RedPolicy {
    fn default() -> Self {
        Self::new(true)
    }
}

impl RedPolicy {
    /// A policy; a disabled one never repeats.
    pub fn new(enabled: bool) -> Self {
        Self {
            distance: 0,
            clean_since: None,
            ceiling: if enabled { MAX_DISTANCE } else { 0 },
            enabled,
            last_loss: 0.0,
            last_report: None,
            window: None,
            previous_max: 0,
        }
    }
}

impl RedPolicy {
    /// A second's loss report (share of packets lost, all streams): redundancy rises with
    /// loss that lasts (two reports in a row) and steps down one block after
    /// [`STEP_DOWN_AFTER`] of clean reports. Heavy loss neither starts nor raises it (a
    /// congested or policed link, which more packets would make worse: the loss cap cuts
    /// video then), but does not stop repeats already sent either: audio comes first, the
    /// loss cap frees far more than the repeats cost, and [`RedPolicy::afford`] holds them
    /// to what the link carries. (Stopping them at two heavy seconds in a row — which 5 %
    /// random loss also shows now and then — concealed 1.2 % of a lossy listener's audio.)
    /// One heavy second alone is the noise of a second's sample (a listener gets
    /// ~100 packets a second: at 5 % random loss, 10 % in one second is not rare). A report
    /// that comes [`LONG_REPORT`] or more after the one before describes seconds of packets
    /// by itself (a browser that receives only audio reports every 5 s): it may raise the
    /// repeats alone, but only two heavy reports in a row stop them (one heavy report as
    /// video resumed, on a link with 5 % random loss, once stopped them for 5 s).
    pub fn handle_loss(&mut self, now: Instant, loss: f64) {
        let long = self
            .last_report
            .replace(now)
            .is_some_and(|t| now.saturating_duration_since(t) >= LONG_REPORT);
        let lasting = std::mem::replace(&mut self.last_loss, loss).min(loss);
        if lasting >= CONGESTION_LOSS {
            self.clean_since = None;
            self.last_loss = 0.0;
            return;
        }
        if loss >= CONGESTION_LOSS {
            // Heavy once: maybe noise, maybe the start of congestion. Wait and see.
            self.clean_since = None;
            return;
        }
        let lasting = if long { loss } else { lasting };
        let wanted = if lasting >= TWO_BLOCKS_LOSS {
            2
        } else if lasting >= ONE_BLOCK_LOSS {
            1
        } else {
            0
        };
        if wanted >= self.distance && wanted > 0 {
            self.distance = wanted;
            self.clean_since = None;
            return;
        }
        if loss >= CLEAN_LOSS {
            self.clean_since = None;
            return;
        }
        let since = *self.clean_since.get_or_insert(now);
        if self.distance > 0 && now.saturating_duration_since(since) >= STEP_DOWN_AFTER {
            self.distance -= 1;
            self.clean_since = Some(now);
        }
    }

    /// The listener's bandwidth estimate is `estimate_bps` and the loss cap `cap_bps`
    /// (`u64::MAX` for none); its audio is sent at `payload_bps` of payload plus
    /// `overhead_bps` of headers. Each repeat adds the payload again, and repeats are held to
    /// what keeps audio within [`AUDIO_SHARE_PERCENT`] of the highest recent estimate
    /// (capped by loss).
    pub fn afford(
        &mut self,
        now: Instant,
        estimate_bps: u64,
        cap_bps: u64,
        payload_bps: u64,
        overhead_bps: u64,
    ) {
        let (start, max) = self.window.get_or_insert((now, 0));
        let age = now.saturating_duration_since(*start);
        if age >= ESTIMATE_WINDOW {
            // A window that ended long ago says nothing about the link now.
            self.previous_max = if age < 2 * ESTIMATE_WINDOW { *max } else { 0 };
            (*start, *max) = (now, 0);
        }
        *max = (*max).max(estimate_bps);
        let link = (*max).max(self.previous_max).min(cap_bps);
        let room = u64::try_from(u128::from(link) * u128::from(AUDIO_SHARE_PERCENT) / 100)
            .unwrap_or(u64::MAX);
        self.ceiling = (0..=MAX_DISTANCE)
            .rev()
            .find(|d| {
                payload_bps
                    .saturating_mul(1 + *d as u64)
                    .saturating_add(overhead_bps)
                    <= room
            })
            .filter(|_| self.enabled)
            .unwrap_or(0);
    }

    /// Past packets each audio packet to this listener repeats (0 = plain Opus).
    pub fn distance(&self) -> usize {
        self.distance.min(self.ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder_with(packets: &[(u16, u32, &[u8])]) -> RedEncoder {
        let mut e = RedEncoder::default();
        for (seq, ts, p) in packets {
            e.push(*seq, *ts, p);
        }
        e
    }

    #[test]
    fn two_blocks_then_primary_in_rfc_2198_layout() {
        let e = encoder_with(&[(10, 960, b"aa"), (11, 1920, b"bbb")]);
        let mut out = Vec::new();
        e.encode(12, 2880, b"cccc", 111, 2, &mut out);
        // Block 1: F=1 pt=111, offset 1920, len 2; block 2: offset 960, len 3; primary pt.
        let w1 = (1920u32 << 10) | 2;
        let w2 = (960u32 << 10) | 3;
        let mut want = vec![0x80 | 111];
        want.extend_from_slice(&w1.to_be_bytes()[1..]);
        want.push(0x80 | 111);
        want.extend_from_slice(&w2.to_be_bytes()[1..]);
        want.push(111);
        want.extend_from_slice(b"aabbbcccc");
        assert_eq!(out, want);
        assert_eq!(primary(&out), Some(want.len() - 4..want.len()));
    }

    #[test]
    fn distance_one_repeats_only_the_previous_packet() {
        let e = encoder_with(&[(10, 960, b"aa"), (11, 1920, b"bbb")]);
        let mut out = Vec::new();
        e.encode(12, 2880, b"cc", 111, 1, &mut out);
        assert_eq!(&out[5..], b"bbbcc");
        assert_eq!(out[0], 0x80 | 111);
        assert_eq!(out[4], 111);
    }

    #[test]
    fn a_gap_in_sequence_numbers_is_not_repeated_as_if_adjacent() {
        let e = encoder_with(&[(10, 960, b"aa"), (11, 1920, b"bbb")]);
        let mut out = Vec::new();
        // Packet 12 never came: 11 is two back from 13, and 10 three back (beyond 2).
        e.encode(13, 3840, b"d", 111, 2, &mut out);
        assert_eq!(out, [111, b'd']);
    }

    #[test]
    fn blocks_beyond_reds_limits_are_left_out() {
        // A timestamp offset over 14 bits (a long silence) cannot be said in RED.
        let e = encoder_with(&[(10, 0, b"aa")]);
        let mut out = Vec::new();
        e.encode(11, 20_000, b"b", 111, 2, &mut out);
        assert_eq!(out, [111, b'b']);
        // Nor a block longer than 10 bits.
        let big = vec![7u8; 1024];
        let e = encoder_with(&[(10, 0, &big)]);
        e.encode(11, 960, b"b", 111, 2, &mut out);
        assert_eq!(out, [111, b'b']);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let e = encoder_with(&[(65534, 0, b"x"), (65535, 960, b"y")]);
        let mut out = Vec::new();
        e.encode(0, 1920, b"z", 111, 2, &mut out);
        assert_eq!(&out[9..], b"xyz");
    }

    #[test]
    fn primary_rejects_truncated_red() {
        assert_eq!(primary(&[]), None);
        assert_eq!(primary(&[0x80 | 111, 0, 0]), None);
        // Header says a 5-byte block but only 2 bytes follow.
        assert_eq!(primary(&[0x80 | 111, 0, 0x04, 5, 111, 1, 2]), None);
        assert_eq!(primary(&[111, 9, 9]), Some(1..3));
    }

    #[test]
    fn policy_rises_at_once_and_steps_down_after_clean_reports() {
        let t0 = Instant::now();
        let mut p = RedPolicy::default();
        p.handle_loss(t0, 0.0);
        assert_eq!(p.distance(), 0);
        p.handle_loss(t0, 0.05);
        assert_eq!(p.distance(), 0, "one lossy second is not yet a lossy link");
        p.handle_loss(t0, 0.05);
        assert_eq!(p.distance(), 2);
        // Moderate loss does not lower it.
        p.handle_loss(t0 + Duration::from_secs(1), 0.015);
        assert_eq!(p.distance(), 2);
        let mut t = t0 + Duration::from_secs(2);
        for _ in 0..11 {
            p.handle_loss(t, 0.0);
            t += Duration::from_secs(1);
        }
        assert_eq!(p.distance(), 1, "one step down after 10 clean seconds");
        p.handle_loss(t, 0.004);
        assert_eq!(p.distance(), 1);
        for _ in 0..11 {
            t += Duration::from_secs(1);
            p.handle_loss(t, 0.0);
        }
        assert_eq!(p.distance(), 0);
    }

    #[test]
    fn a_report_covering_seconds_counts_alone() {
        // A browser receiving only audio sends a receiver report every 5 s.
        let t0 = Instant::now();
        let s = Duration::from_secs(5);
        let mut p = RedPolicy::default();
        p.handle_loss(t0, 0.0);
        p.handle_loss(t0 + s, 0.05);
        assert_eq!(p.distance(), 2, "five seconds of 5 % loss is a lossy link");
        // Heavy reports (congestion) do not stop them: audio first.
        p.handle_loss(t0 + s * 2, 0.18);
        assert_eq!(p.distance(), 2);
        p.handle_loss(t0 + s * 3, 0.3);
        assert_eq!(
            p.distance(),
            2,
            "heavy loss twice in a row keeps the repeats"
        );
    }

    #[test]
    fn heavy_loss_neither_starts_nor_stops_repeats() {
        let t0 = Instant::now();
        let mut p = RedPolicy::default();
        p.handle_loss(t0, 0.04);
        p.handle_loss(t0, 0.04);
        assert_eq!(p.distance(), 2);
        // One heavy second is noise: the repeats stay (and none start from it).
        p.handle_loss(t0, 0.12);
        assert_eq!(p.distance(), 2);
        let mut fresh = RedPolicy::default();
        fresh.handle_loss(t0, 0.05);
        fresh.handle_loss(t0, 0.28);
        assert_eq!(
            fresh.distance(),
            0,
            "a policed link's first heavy report starts nothing"
        );
        p.handle_loss(t0, 0.04);
        assert_eq!(p.distance(), 2);
        // Heavy twice in a row: congestion; the repeats already sent stay.
        p.handle_loss(t0, 0.25);
        assert_eq!(p.distance(), 2);
        p.handle_loss(t0, 0.25);
        assert_eq!(p.distance(), 2);
        // A policed link whose repeats never started: congestion starts none.
        fresh.handle_loss(t0, 0.3);
        fresh.handle_loss(t0, 0.3);
        assert_eq!(fresh.distance(), 0);
        // Merely lossy: they start.
        fresh.handle_loss(t0, 0.02);
        fresh.handle_loss(t0, 0.02);
        assert_eq!(fresh.distance(), 1);
    }

    #[test]
    fn repeats_are_held_to_what_the_link_affords() {
        let t0 = Instant::now();
        let mut p = RedPolicy::default();
        p.handle_loss(t0, 0.05);
        p.handle_loss(t0, 0.05);
        // Three speakers at 32 kbit/s (+25 of headers each) on a 250 kbit/s link: no room.
        p.afford(t0, 250_000, u64::MAX, 96_000, 75_000);
        assert_eq!(p.distance(), 0);
        // One speaker: two repeats fit in 80 % of 400 kbit/s…
        let t1 = t0 + Duration::from_secs(11);
        p.afford(t1, 400_000, u64::MAX, 32_000, 25_000);
        assert_eq!(p.distance(), 2);
        // …and the loss cap counts: one repeat in 80 % of 150 kbit/s.
        p.afford(t1, 400_000, 150_000, 32_000, 25_000);
        assert_eq!(p.distance(), 1);
        // No estimate (no congestion control): loss alone decides.
        p.afford(t1, u64::MAX, u64::MAX, 96_000, 75_000);
        assert_eq!(p.distance(), 2);
        // Turned off by the operator: never.
        let mut off = RedPolicy::new(false);
        off.handle_loss(t0, 0.2);
        off.afford(t0, u64::MAX, u64::MAX, 32_000, 25_000);
        assert_eq!(off.distance(), 0);
    }

    #[test]
    fn a_sagging_estimate_does_not_switch_repeats_off_until_it_lasts() {
        let t0 = Instant::now();
        let mut p = RedPolicy::default();
        p.handle_loss(t0, 0.04);
        p.handle_loss(t0, 0.04);
        let s = Duration::from_secs(1);
        // 330 kbit/s seen: two repeats of 40 kbit/s + 40 of headers fit (160 ≤ 198).
        p.afford(t0, 330_000, u64::MAX, 40_000, 40_000);
        assert_eq!(p.distance(), 2);
        // The estimate wobbles down to 120 kbit/s for the next seconds: still two.
        for i in 1..9 {
            p.afford(t0 + s * i, 120_000, u64::MAX, 40_000, 40_000);
            assert_eq!(p.distance(), 2, "second {i}");
        }
        // Low for two whole windows: the link is that narrow, repeats go.
        p.afford(t0 + s * 10, 120_000, u64::MAX, 40_000, 40_000);
        p.afford(t0 + s * 15, 120_000, u64::MAX, 40_000, 40_000);
        assert_eq!(p.distance(), 0);
    }
}
