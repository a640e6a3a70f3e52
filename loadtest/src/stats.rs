//! Measurement maths: per-stream loss and jitter, a fixed-size latency histogram, and
//! percentile summaries. Nothing here allocates per packet.

use plenary_proto::TrackKind;
use serde::Serialize;

/// Sequence numbers remembered for duplicate and reorder detection.
const WINDOW: u32 = 512;

/// What one receiver saw of one sending stream (identified by the payload stamp).
#[derive(Debug, Clone)]
pub struct StreamRx {
    /// The sending stream.
    pub stream: u32,
    /// Audio or video.
    pub kind: TrackKind,
    first_seq: u32,
    highest_seq: u32,
    window: [u64; (WINDOW / 64) as usize],
    /// Distinct packets received.
    pub received: u64,
    /// Packets received more than once.
    pub duplicates: u64,
    /// Payload bytes received (distinct packets).
    pub bytes: u64,
    jitter_us: f64,
    last_transit: Option<i64>,
    /// Arrival of the first packet, µs since the run's epoch.
    pub first_at_us: u64,
    /// Arrival of the last packet, µs since the run's epoch.
    pub last_at_us: u64,
}

impl StreamRx {
    /// A stream whose first received packet is `seq`.
    pub fn new(stream: u32, kind: TrackKind, seq: u32, at_us: u64) -> StreamRx {
        StreamRx {
            stream,
            kind,
            first_seq: seq,
            highest_seq: seq,
            window: [0; (WINDOW / 64) as usize],
            received: 0,
            duplicates: 0,
            bytes: 0,
            jitter_us: 0.0,
            last_transit: None,
            first_at_us: at_us,
            last_at_us: at_us,
        }
    }

    fn bit(&mut self, seq: u32) -> (&mut u64, u64) {
        let i = seq % WINDOW;
        (&mut self.window[(i / 64) as usize], 1u64 << (i % 64))
    }

    /// Records packet `seq` sent at `sent_us` and received at `at_us` (both µs since the
    /// epoch). Returns whether it was new (not a duplicate, not older than the first).
    pub fn on_packet(&mut self, seq: u32, sent_us: u64, at_us: u64, bytes: usize) -> bool {
        if seq < self.first_seq {
            // Older than where counting started (reordered across the start): ignore.
            return false;
        }
        if seq > self.highest_seq {
            let gap = seq - self.highest_seq;
            if gap >= WINDOW {
                self.window = [0; (WINDOW / 64) as usize];
            } else {
                // Forget what the slots of the new range held one window ago (`seq`'s too).
                for s in self.highest_seq + 1..=seq {
                    let (w, m) = self.bit(s);
                    *w &= !m;
                }
            }
            self.highest_seq = seq;
        } else if self.received > 0 && self.highest_seq - seq >= WINDOW {
            // Too old to tell whether it is a duplicate; count it as a (late) arrival.
            self.account(sent_us, at_us, bytes);
            return true;
        }
        let started = self.received > 0;
        let (w, m) = self.bit(seq);
        if *w & m != 0 && started {
            self.duplicates += 1;
            return false;
        }
        *w |= m;
        self.account(sent_us, at_us, bytes);
        true
    }

    fn account(&mut self, sent_us: u64, at_us: u64, bytes: usize) {
        self.received += 1;
        self.bytes += bytes as u64;
        self.last_at_us = self.last_at_us.max(at_us);
        // RFC 3550 interarrival jitter, on the sender's clock (the stamp).
        let transit = at_us as i64 - sent_us as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Packets the sender sent from the first received one to the highest received one.
    pub fn expected(&self) -> u64 {
        u64::from(self.highest_seq - self.first_seq) + 1
    }

    /// Packets never received in that range.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_us / 1000.0
    }
}

/// Sub-buckets per power of two in [`Histogram`] (precision about 1.6 %).
const SUB: u64 = 64;
const SUB_BITS: u32 = 6;
/// Buckets: values up to 2^40 µs (12 days) fit.
const BUCKETS: usize = (SUB as usize) * (1 + 40 - SUB_BITS as usize);

/// A log-linear histogram of microsecond values: constant memory, no allocation per value.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u128,
    max: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("max", &self.max)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = exp - SUB_BITS;
        let sub = (v >> shift) & (SUB - 1);
        ((shift as u64 + 1) * SUB + sub).min(BUCKETS as u64 - 1) as usize
    }

    /// The smallest value that falls in bucket `i`.
    fn lower_bound(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        (SUB + i % SUB) << shift
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        self.counts[Histogram::index(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `p`-th percentile (0–100), nearest rank, as the lower bound of its bucket (never
    /// above the maximum).
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = nearest_rank(p, self.count as usize) as u64 + 1;
        if rank == self.count {
            return self.max;
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Histogram::lower_bound(i).min(self.max);
            }
        }
        self.max
    }

    /// Percentiles in milliseconds.
    pub fn summary_ms(&self) -> Summary {
        let ms = |v: u64| v as f64 / 1000.0;
        Summary {
            count: self.count,
            p50: ms(self.percentile(50.0)),
            p95: ms(self.percentile(95.0)),
            p99: ms(self.percentile(99.0)),
            max: ms(self.max),
            mean: if self.count == 0 {
                0.0
            } else {
                self.sum as f64 / self.count as f64 / 1000.0
            },
        }
    }
}

/// Index (0-based) of the nearest-rank `p`-th percentile among `n` sorted values.
pub fn nearest_rank(p: f64, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
    rank.clamp(1, n) - 1
}

/// Percentiles of a distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Values.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `values` (any order).
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| v[nearest_rank(p, v.len())];
        Summary {
            count: v.len() as u64,
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx() -> StreamRx {
        StreamRx::new(1, TrackKind::Audio, 100, 0)
    }

    #[test]
    fn counts_loss_from_the_first_received_packet() {
        let mut s = rx();
        for seq in 100..200 {
            if seq % 10 != 3 {
                assert!(s.on_packet(seq, 0, 0, 50));
            }
        }
        assert_eq!(s.expected(), 100);
        assert_eq!(s.received, 90);
        assert_eq!(s.lost(), 10);
        assert_eq!(s.bytes, 90 * 50);
    }

    #[test]
    fn long_in_order_streams_have_no_loss_or_duplicates() {
        let mut s = rx();
        for seq in 100..100 + 10 * WINDOW {
            assert!(s.on_packet(seq, 0, 0, 1), "{seq}");
        }
        assert_eq!(s.duplicates, 0);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.received, u64::from(10 * WINDOW));
        // A real duplicate far into the stream is still caught.
        assert!(!s.on_packet(100 + 10 * WINDOW - 3, 0, 0, 1));
        assert_eq!(s.duplicates, 1);
    }

    #[test]
    fn late_packets_fill_holes_and_duplicates_do_not_count() {
        let mut s = rx();
        for seq in [100, 101, 103, 104, 102, 104, 101] {
            s.on_packet(seq, 0, 0, 10);
        }
        assert_eq!(s.received, 5);
        assert_eq!(s.duplicates, 2);
        assert_eq!(s.lost(), 0);
        // Older than the first: ignored.
        assert!(!s.on_packet(99, 0, 0, 10));
        assert_eq!(s.expected(), 5);
    }

    #[test]
    fn a_jump_beyond_the_window_clears_it() {
        let mut s = rx();
        s.on_packet(100, 0, 0, 1);
        s.on_packet(100 + 2 * WINDOW, 0, 0, 1);
        assert_eq!(s.lost(), u64::from(2 * WINDOW) - 1);
        // The slot of 100 is reused by 100 + 2*WINDOW; a new 100 + WINDOW is not a duplicate.
        assert!(s.on_packet(100 + WINDOW + 1, 0, 0, 1));
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut s = rx();
        // Sent every 20 ms; arrivals alternate 0 and 4 ms late: |D| = 4 ms each time.
        for i in 0..200u32 {
            let sent = u64::from(i) * 20_000;
            let late = if i % 2 == 0 { 0 } else { 4_000 };
            s.on_packet(100 + i, sent, sent + 1_000 + late, 10);
        }
        assert!((s.jitter_ms() - 4.0).abs() < 0.05, "{}", s.jitter_ms());
        let mut steady = rx();
        for i in 0..50u32 {
            let sent = u64::from(i) * 20_000;
            steady.on_packet(100 + i, sent, sent + 7_000, 10);
        }
        assert_eq!(steady.jitter_ms(), 0.0);
    }

    #[test]
    fn histogram_percentiles_are_within_bucket_precision() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 10);
        }
        let close = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err < 0.02, "got {got}, want {want}");
        };
        close(h.percentile(50.0), 50_000);
        close(h.percentile(95.0), 95_000);
        close(h.percentile(99.0), 99_000);
        assert_eq!(h.percentile(100.0), 100_000);
        assert_eq!(h.count(), 10_000);
        let s = h.summary_ms();
        assert!((s.mean - 50.005).abs() < 0.01, "{}", s.mean);
        assert_eq!(s.max, 100.0);
    }

    #[test]
    fn histogram_small_values_are_exact_and_merge_adds() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in 0..64 {
            a.record(v);
        }
        b.record(1_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 65);
        assert_eq!(a.percentile(50.0), 32);
        assert_eq!(a.percentile(100.0), 1_000_000);
        assert_eq!(Histogram::new().percentile(50.0), 0);
        for v in [64u64, 65, 127, 128, 1000, 123_456_789] {
            let i = Histogram::index(v);
            assert!(Histogram::lower_bound(i) <= v);
            assert!(Histogram::lower_bound(i + 1) > v, "{v}");
        }
    }

    #[test]
    fn summary_uses_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Summary::of(&v);
        assert_eq!(s.p50, 10.0);
        assert_eq!(s.p95, 19.0);
        assert_eq!(s.p99, 20.0);
        assert_eq!(s.max, 20.0);
        assert_eq!(s.mean, 10.5);
        assert_eq!(Summary::of(&[3.0]).p50, 3.0);
        assert_eq!(Summary::of(&[]), Summary::default());
        assert_eq!(percent(1, 200), 0.5);
        assert_eq!(percent(1, 0), 0.0);
    }
}
