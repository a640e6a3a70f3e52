//! RTP rewriting for one subscriber's view of one outgoing stream.
//!
//! A [`Munger`] turns packets of one or more *input* streams (a publisher's SSRC, a simulcast
//! layer, or another participant's track when the subscriber's slot changes source) into one
//! continuous *output* stream: sequence numbers without jumps and timestamps that keep
//! advancing. It starts (and switches) only where the receiver can decode: any packet for
//! audio, a keyframe for video. Packets of the old input stream that arrive after a switch are
//! dropped. Plain arithmetic on integers: no allocation, no I/O, no clock.

use std::time::Instant;

/// What the munger decided for one input packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Munged {
    /// Forward with these output values.
    Forward {
        /// Extended output sequence number.
        seq: u64,
        /// Output RTP timestamp.
        ts: u32,
    },
    /// Drop it (waiting for a keyframe, not the current stream, or too old).
    Drop,
}

/// One input packet as the munger sees it.
#[derive(Debug, Clone, Copy)]
pub struct InPacket {
    /// Which input stream it belongs to (SSRC, or any id unique among the inputs).
    pub stream: u64,
    /// Extended (64-bit, rollover-free) input sequence number.
    pub seq: u64,
    /// Input RTP timestamp.
    pub ts: u32,
    /// Whether a decoder may start at this packet.
    pub keyframe: bool,
    /// When it arrived.
    pub at: Instant,
}

/// Rewrites one output stream's sequence numbers and timestamps.
#[derive(Debug, Clone)]
pub struct Munger {
    clock_rate: u32,
    needs_keyframe: bool,
    current: Option<Active>,
    target: Option<u64>,
    /// The last output values, kept across switches.
    last_out: Option<(u64, u32, Instant)>,
    first_out_seq: u64,
    /// Segments started so far (each start is a keyframe for video).
    segment: u32,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    stream: u64,
    /// Output seq = input seq + seq_offset (wrapping).
    seq_offset: u64,
    /// Output ts = input ts + ts_offset (wrapping).
    ts_offset: u32,
    /// First input seq of this stream segment; older packets are dropped.
    first_in_seq: u64,
}

impl Munger {
    /// A munger for a stream with this RTP clock rate. Video (`needs_keyframe`) starts and
    /// switches only on keyframes. Output sequence numbers start at `first_out_seq`.
    pub fn new(clock_rate: u32, needs_keyframe: bool, first_out_seq: u64) -> Munger {
        Munger {
            clock_rate: clock_rate.max(1),
            needs_keyframe,
            current: None,
            target: None,
            last_out: None,
            first_out_seq,
            segment: 0,
        }
    }

    /// The input stream currently forwarded, if any.
    pub fn current_stream(&self) -> Option<u64> {
        self.current.map(|a| a.stream)
    }

    /// The number of the segment forwarded now: it changes at each start or switch (a
    /// keyframe, for video), where codec numbering must be made continuous too.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Whether the munger waits for a keyframe before it forwards anything new.
    pub fn is_waiting_for_keyframe(&self) -> bool {
        self.needs_keyframe && (self.current.is_none() || self.target.is_some())
    }

    /// Ask to switch to `stream` at its next decodable point (now, for audio). Switching to
    /// the current stream cancels a pending switch.
    pub fn switch_to(&mut self, stream: u64) {
        if self.current.map(|a| a.stream) == Some(stream) {
            self.target = None;
        } else {
            self.target = Some(stream);
        }
    }

    /// Stop forwarding; the next packet (keyframe for video) starts a new segment that
    /// continues the output numbering without a gap (used to pause and resume).
    pub fn pause(&mut self) {
        self.current = None;
        self.target = None;
    }

    /// Decides what to do with one input packet.
    pub fn process(&mut self, p: &InPacket) -> Munged {
        match self.current {
            Some(a) if a.stream == p.stream && self.target.is_none() => self.forward(a, p),
            Some(a) if a.stream == p.stream => {
                // A switch is pending; keep forwarding the current stream until it happens.
                self.forward(a, p)
            }
            _ => {
                let wanted = match (self.current, self.target) {
                    (_, Some(t)) => t == p.stream,
                    (None, None) => true,
                    (Some(_), None) => false,
                };
                if !wanted || (self.needs_keyframe && !p.keyframe) {
                    return Munged::Drop;
                }
                let a = self.start_segment(p);
                self.current = Some(a);
                self.segment = self.segment.wrapping_add(1);
                self.target = None;
                self.forward(a, p)
            }
        }
    }

    fn start_segment(&self, p: &InPacket) -> Active {
        let (out_seq, out_ts) = match self.last_out {
            None => (self.first_out_seq, p.ts),
            Some((seq, ts, at)) => {
                // Advance the timestamp by the wall-clock time since the last output packet,
                // at least one tick, so the receiver's jitter buffer sees time move on.
                let elapsed = p.at.saturating_duration_since(at);
                let ticks =
                    (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000).max(1) as u32;
                (seq + 1, ts.wrapping_add(ticks))
            }
        };
        Active {
            stream: p.stream,
            seq_offset: out_seq.wrapping_sub(p.seq),
            ts_offset: out_ts.wrapping_sub(p.ts),
            first_in_seq: p.seq,
        }
    }

    fn forward(&mut self, a: Active, p: &InPacket) -> Munged {
        if p.seq < a.first_in_seq {
            return Munged::Drop;
        }
        let seq = p.seq.wrapping_add(a.seq_offset);
        let ts = p.ts.wrapping_add(a.ts_offset);
        match self.last_out {
            Some((last, _, _)) if seq <= last => {} // a retransmission or reordering
            _ => self.last_out = Some((seq, ts, p.at)),
        }
        Munged::Forward { seq, ts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pkt(stream: u64, seq: u64, ts: u32, keyframe: bool, at: Instant) -> InPacket {
        InPacket {
            stream,
            seq,
            ts,
            keyframe,
            at,
        }
    }

    fn fwd(m: Munged) -> (u64, u32) {
        match m {
            Munged::Forward { seq, ts } => (seq, ts),
            Munged::Drop => panic!("expected a forward"),
        }
    }

    #[test]
    fn audio_starts_at_once_and_rebases_sequence() {
        let t0 = Instant::now();
        let mut m = Munger::new(48_000, false, 100);
        let (s, ts) = fwd(m.process(&pkt(7, 50_000, 1_000, false, t0)));
        assert_eq!((s, ts), (100, 1_000));
        let (s, ts) = fwd(m.process(&pkt(7, 50_001, 1_960, false, t0)));
        assert_eq!((s, ts), (101, 1_960));
    }

    #[test]
    fn video_waits_for_a_keyframe() {
        let t0 = Instant::now();
        let mut m = Munger::new(90_000, true, 1);
        assert!(m.is_waiting_for_keyframe());
        assert_eq!(m.process(&pkt(1, 10, 0, false, t0)), Munged::Drop);
        assert_eq!(fwd(m.process(&pkt(1, 11, 3000, true, t0))).0, 1);
        assert_eq!(fwd(m.process(&pkt(1, 12, 3000, false, t0))).0, 2);
        assert!(!m.is_waiting_for_keyframe());
        // An older packet than the segment start is dropped.
        assert_eq!(m.process(&pkt(1, 10, 0, false, t0)), Munged::Drop);
    }

    #[test]
    fn switching_streams_keeps_output_continuous() {
        let t0 = Instant::now();
        let mut m = Munger::new(90_000, true, 1);
        fwd(m.process(&pkt(1, 500, 90_000, true, t0)));
        let (last_seq, last_ts) = fwd(m.process(&pkt(1, 501, 93_000, false, t0)));
        m.switch_to(2);
        // Until stream 2 has a keyframe, stream 1 goes on and stream 2 is dropped.
        assert_eq!(m.process(&pkt(2, 9_000, 5, false, t0)), Munged::Drop);
        let (s, _) = fwd(m.process(&pkt(1, 502, 96_000, false, t0)));
        assert_eq!(s, last_seq + 1);
        let later = t0 + Duration::from_millis(33);
        let (s2, ts2) = fwd(m.process(&pkt(2, 9_001, 7, true, later)));
        assert_eq!(s2, s + 1, "no gap in sequence numbers across the switch");
        assert!(
            ts2.wrapping_sub(last_ts) >= 2_970,
            "timestamp moved on by ~33 ms"
        );
        // The old stream is now dropped; the new one continues.
        assert_eq!(m.process(&pkt(1, 503, 99_000, false, later)), Munged::Drop);
        assert_eq!(
            fwd(m.process(&pkt(2, 9_002, 3_007, false, later))).0,
            s2 + 1
        );
        assert_eq!(m.current_stream(), Some(2));
    }

    #[test]
    fn pause_and_resume_leaves_no_gap() {
        let t0 = Instant::now();
        let mut m = Munger::new(48_000, false, 10);
        fwd(m.process(&pkt(3, 1, 0, false, t0)));
        m.pause();
        let (s, ts) = fwd(m.process(&pkt(3, 400, 400 * 960, false, t0 + Duration::from_secs(8))));
        assert_eq!(s, 11);
        assert!(ts >= 8 * 48_000 - 1);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let t0 = Instant::now();
        let mut m = Munger::new(90_000, false, 65_534);
        let (s, ts) = fwd(m.process(&pkt(1, 10, u32::MAX - 1, false, t0)));
        assert_eq!((s, ts), (65_534, u32::MAX - 1));
        let (s, ts) = fwd(m.process(&pkt(1, 12, 1, false, t0)));
        assert_eq!(s, 65_536, "extended sequence numbers carry across 16 bits");
        assert_eq!(ts, 1);
    }

    #[test]
    fn retransmissions_keep_their_mapping() {
        let t0 = Instant::now();
        let mut m = Munger::new(90_000, false, 1);
        fwd(m.process(&pkt(1, 100, 0, false, t0)));
        fwd(m.process(&pkt(1, 102, 0, false, t0)));
        assert_eq!(fwd(m.process(&pkt(1, 101, 0, false, t0))).0, 2);
        assert_eq!(fwd(m.process(&pkt(1, 103, 0, false, t0))).0, 4);
    }
}
