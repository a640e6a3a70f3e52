//! Per-attendee network conditions, applied in userspace to what each simulated attendee's
//! socket receives (its downlink): a bottleneck of limited rate with a bounded queue (drop-tail,
//! like a real access link), random loss, and delay with jitter. No I/O here: the group feeds
//! datagrams in and takes them out when they are due.
//!
//! Mixes are given as `--network 70%:good,20%:cap=1500kbps,loss=1%,10%:cap=400kbps,loss=3%,delay=80ms`:
//! a share (`N%:`) starts a class, and the parameters after it (until the next share) describe
//! it. Parameters: `good` (none), `cap=<rate>` (`kbps`, `mbps`, `bps`), `loss=<p>%`,
//! `delay=<ms>`, `jitter=<ms>`, `buffer=<ms>` (queue of the cap, default 150 ms). Shares must add
//! up to 100 %.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::synth::Rng;

/// Default queue of a capped link, as time at the cap rate.
pub const DEFAULT_BUFFER: Duration = Duration::from_millis(150);
/// Most bytes one attendee's delay line holds (beyond it, datagrams are dropped and counted).
pub const MAX_QUEUE_BYTES: usize = 512 * 1024;

/// One network class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetClass {
    /// As written (e.g. `cap=400kbps,loss=3%`), or `good`.
    pub name: String,
    /// Share of attendees, percent.
    pub share_pct: f64,
    /// Downlink rate, bits per second.
    pub cap_bps: Option<u64>,
    /// Random loss, 0–1.
    pub loss: f64,
    /// One-way delay added.
    pub delay: Duration,
    /// Extra delay, uniformly 0..jitter (order kept).
    pub jitter: Duration,
    /// Queue of the cap, as time at the cap rate.
    pub buffer: Duration,
}

impl NetClass {
    /// Whether it changes nothing.
    pub fn is_good(&self) -> bool {
        self.cap_bps.is_none() && self.loss == 0.0 && self.delay.is_zero() && self.jitter.is_zero()
    }
}

/// A mix of network classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetMix {
    /// The classes, in the order given.
    pub classes: Vec<NetClass>,
}

fn parse_rate_bps(v: &str) -> Result<u64, String> {
    let v = v.trim().to_ascii_lowercase();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("cap={v:?}: not a rate (try 1500kbps)"))?;
    let mult = match unit {
        "bps" => 1.0,
        "kbps" | "kbit" | "k" => 1e3,
        "mbps" | "mbit" | "m" => 1e6,
        _ => return Err(format!("cap={v:?}: unknown unit (use bps, kbps, mbps)")),
    };
    let bps = n * mult;
    if !(8_000.0..=10e9).contains(&bps) {
        return Err(format!("cap={v:?}: between 8kbps and 10000mbps"));
    }
    Ok(bps as u64)
}

fn parse_ms(key: &str, v: &str) -> Result<Duration, String> {
    let d = crate::cli::parse_duration(v.trim()).map_err(|e| format!("{key}={v}: {e}"))?;
    if d > Duration::from_secs(10) {
        return Err(format!("{key}={v}: at most 10 s"));
    }
    Ok(d)
}

impl NetMix {
    /// Parses a mix (see the module docs). Errors name the offending part.
    pub fn parse(s: &str) -> Result<NetMix, String> {
        let mut classes: Vec<NetClass> = Vec::new();
        let mut params: Vec<String> = Vec::new();
        let finish = |classes: &mut Vec<NetClass>, params: &mut Vec<String>| {
            if let Some(c) = classes.last_mut() {
                c.name = if params.is_empty() {
                    "good".into()
                } else {
                    params.join(",")
                };
            }
            params.clear();
        };
        for token in s.split(',').map(str::trim) {
            if token.is_empty() {
                return Err(format!("{s:?}: empty part (two commas?)"));
            }
            let param = if let Some((share, rest)) = token.split_once("%:") {
                finish(&mut classes, &mut params);
                let share_pct: f64 = share
                    .trim()
                    .parse()
                    .map_err(|_| format!("{token:?}: the share must be a number, e.g. 20%:"))?;
                if !(share_pct > 0.0 && share_pct <= 100.0) {
                    return Err(format!("{token:?}: the share must be in (0, 100] %"));
                }
                classes.push(NetClass {
                    name: String::new(),
                    share_pct,
                    cap_bps: None,
                    loss: 0.0,
                    delay: Duration::ZERO,
                    jitter: Duration::ZERO,
                    buffer: DEFAULT_BUFFER,
                });
                rest.trim()
            } else {
                token
            };
            let Some(class) = classes.last_mut() else {
                return Err(format!(
                    "{token:?}: a class starts with its share, e.g. 20%:cap=1500kbps"
                ));
            };
            if param == "good" {
                continue;
            }
            let (key, value) = param
                .split_once('=')
                .ok_or_else(|| format!("{param:?}: expected key=value or good"))?;
            match key.trim() {
                "cap" => class.cap_bps = Some(parse_rate_bps(value)?),
                "loss" => {
                    let p = crate::cli::parse_percent(value).map_err(|e| format!("loss: {e}"))?;
                    if p >= 100.0 {
                        return Err(format!("loss={value}: below 100 %"));
                    }
                    class.loss = p / 100.0;
                }
                "delay" => class.delay = parse_ms("delay", value)?,
                "jitter" => class.jitter = parse_ms("jitter", value)?,
                "buffer" => {
                    class.buffer = parse_ms("buffer", value)?;
                    if class.buffer < Duration::from_millis(1) {
                        return Err(format!("buffer={value}: at least 1 ms"));
                    }
                }
                other => {
                    return Err(format!(
                        "{other:?}: unknown parameter (good, cap, loss, delay, jitter, buffer)"
                    ))
                }
            }
            params.push(param.to_owned());
        }
        finish(&mut classes, &mut params);
        if classes.is_empty() {
            return Err("empty network mix".into());
        }
        let total: f64 = classes.iter().map(|c| c.share_pct).sum();
        if (total - 100.0).abs() > 0.01 {
            return Err(format!("{s:?}: shares add up to {total} %, not 100 %"));
        }
        Ok(NetMix { classes })
    }

    /// The class of attendee number `i` (0-based, in join order): classes interleave so that
    /// every prefix of the attendees has about the given shares.
    pub fn class_of(&self, i: usize) -> usize {
        // Golden-ratio sequence: low discrepancy, deterministic.
        let x = (i as f64 * 0.618_033_988_749_895 + 0.5).fract() * 100.0;
        let mut acc = 0.0;
        for (k, c) in self.classes.iter().enumerate() {
            acc += c.share_pct;
            if x < acc {
                return k;
            }
        }
        self.classes.len() - 1
    }
}

/// What the shaper decided for a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it on now.
    Now,
    /// Queued; due at this time (µs).
    Later(u64),
    /// Dropped by random loss.
    Lost,
    /// Dropped: the bottleneck's queue was full.
    QueueFull,
}

/// Counts of a shaper.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ShaperStats {
    /// Datagrams offered.
    pub offered: u64,
    /// Dropped by random loss.
    pub lost: u64,
    /// Dropped by the bottleneck queue (over the cap).
    pub queue_drops: u64,
    /// Dropped because the delay line was full.
    pub overflow: u64,
}

/// One attendee's downlink.
pub struct Shaper {
    class: NetClass,
    rng: Rng,
    /// When the bottleneck finishes sending what it holds (µs).
    busy_until_us: u64,
    last_due_us: u64,
    queue: VecDeque<(u64, u16)>,
    bytes: Box<[u8]>,
    head: usize,
    used: usize,
    /// Counts.
    pub stats: ShaperStats,
}

impl Shaper {
    /// A downlink of `class`; `seed` picks its random losses and jitter.
    pub fn new(class: NetClass, seed: u64) -> Shaper {
        // Enough for the cap's queue plus the delay at the cap (or a fixed bound).
        let by_cap = class.cap_bps.map_or(MAX_QUEUE_BYTES, |bps| {
            let secs = (class.buffer + class.delay + class.jitter).as_secs_f64();
            ((bps as f64 / 8.0 * secs) as usize + 4096).min(MAX_QUEUE_BYTES)
        });
        Shaper {
            class,
            rng: Rng::new(seed),
            busy_until_us: 0,
            last_due_us: 0,
            queue: VecDeque::with_capacity(256),
            bytes: vec![0; by_cap].into_boxed_slice(),
            head: 0,
            used: 0,
            stats: ShaperStats::default(),
        }
    }

    /// The class.
    pub fn class(&self) -> &NetClass {
        &self.class
    }

    /// Decides what happens to a datagram of `len` bytes arriving at `now_us`.
    pub fn admit(&mut self, len: usize, now_us: u64) -> Verdict {
        self.stats.offered += 1;
        if self.class.loss > 0.0 {
            let r = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if r < self.class.loss {
                self.stats.lost += 1;
                return Verdict::Lost;
            }
        }
        let mut due = now_us;
        if let Some(bps) = self.class.cap_bps {
            let start = self.busy_until_us.max(now_us);
            if start - now_us > self.class.buffer.as_micros() as u64 {
                self.stats.queue_drops += 1;
                return Verdict::QueueFull;
            }
            let tx_us = (len as u64 * 8 * 1_000_000).div_ceil(bps);
            self.busy_until_us = start + tx_us;
            due = self.busy_until_us;
        }
        due += self.class.delay.as_micros() as u64;
        let j = self.class.jitter.as_micros() as u64;
        if j > 0 {
            due += self.rng.next_u64() % j;
        }
        // The order is kept (a FIFO link).
        due = due.max(self.last_due_us);
        self.last_due_us = due;
        if due <= now_us && self.queue.is_empty() {
            Verdict::Now
        } else {
            Verdict::Later(due)
        }
    }

    /// Queues `datagram` to be delivered at `due_us` (after [`Shaper::admit`] said `Later`).
    /// Returns false (and counts it) when the delay line is full.
    pub fn push(&mut self, due_us: u64, datagram: &[u8]) -> bool {
        let n = datagram.len();
        if n > u16::MAX as usize || self.used + n > self.bytes.len() {
            self.stats.overflow += 1;
            return false;
        }
        let cap = self.bytes.len();
        let tail = (self.head + self.used) % cap;
        let first = n.min(cap - tail);
        self.bytes[tail..tail + first].copy_from_slice(&datagram[..first]);
        self.bytes[..n - first].copy_from_slice(&datagram[first..]);
        self.used += n;
        self.queue.push_back((due_us, n as u16));
        true
    }

    /// When the next queued datagram is due.
    pub fn next_due(&self) -> Option<u64> {
        self.queue.front().map(|(d, _)| *d)
    }

    /// Copies the next datagram due by `now_us` into `out` (cleared first); false if none.
    pub fn pop_due(&mut self, now_us: u64, out: &mut Vec<u8>) -> bool {
        let Some(&(due, n)) = self.queue.front() else {
            return false;
        };
        if due > now_us {
            return false;
        }
        self.queue.pop_front();
        let n = usize::from(n);
        let cap = self.bytes.len();
        let first = n.min(cap - self.head);
        out.clear();
        out.extend_from_slice(&self.bytes[self.head..self.head + first]);
        out.extend_from_slice(&self.bytes[..n - first]);
        self.head = (self.head + n) % cap;
        self.used -= n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses() {
        let m =
            NetMix::parse("70%:good,20%:cap=1500kbps,loss=1%,10%:cap=400kbps,loss=3%,delay=80ms")
                .unwrap();
        assert_eq!(m.classes.len(), 3);
        assert_eq!(m.classes[0].name, "good");
        assert!(m.classes[0].is_good());
        assert_eq!(m.classes[1].cap_bps, Some(1_500_000));
        assert!((m.classes[1].loss - 0.01).abs() < 1e-12);
        assert_eq!(m.classes[1].name, "cap=1500kbps,loss=1%");
        assert_eq!(m.classes[2].delay, Duration::from_millis(80));
        assert_eq!(m.classes[2].cap_bps, Some(400_000));
        assert_eq!(m.classes[2].buffer, DEFAULT_BUFFER);
        let m = NetMix::parse("100%:cap=2mbps,jitter=20ms,buffer=200ms").unwrap();
        assert_eq!(m.classes[0].cap_bps, Some(2_000_000));
        assert_eq!(m.classes[0].jitter, Duration::from_millis(20));
        assert_eq!(m.classes[0].buffer, Duration::from_millis(200));
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        for (bad, says) in [
            ("70%:good,20%:cap=1mbps", "add up to 90"),
            ("cap=1mbps", "starts with its share"),
            ("100%:cap=fast", "not a rate"),
            ("100%:cap=10kbit/s", "unknown unit"),
            ("100%:loss=120%", "between 0 and 100"),
            ("100%:loss=100%", "below 100"),
            ("100%:delay=soon", "delay=soon"),
            ("100%:delay=20s", "at most 10 s"),
            ("100%:colour=blue", "unknown parameter"),
            ("100%:good,,", "empty part"),
            ("x%:good", "must be a number"),
            ("0%:good,100%:good", "(0, 100]"),
            ("", "empty part"),
        ] {
            let err = NetMix::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn classes_interleave_at_their_shares() {
        let m = NetMix::parse("70%:good,20%:loss=1%,10%:loss=2%").unwrap();
        let mut counts = [0usize; 3];
        for i in 0..1000 {
            counts[m.class_of(i)] += 1;
        }
        assert!((680..=720).contains(&counts[0]), "{counts:?}");
        assert!((180..=220).contains(&counts[1]), "{counts:?}");
        assert!((80..=120).contains(&counts[2]), "{counts:?}");
        let mut first = [0usize; 3];
        for i in 0..20 {
            first[m.class_of(i)] += 1;
        }
        assert!(
            first.iter().all(|c| *c > 0),
            "small runs get every class: {first:?}"
        );
    }

    fn class(spec: &str) -> NetClass {
        NetMix::parse(&format!("100%:{spec}"))
            .unwrap()
            .classes
            .remove(0)
    }

    #[test]
    fn a_cap_queues_then_drops_what_exceeds_it() {
        // 800 kbps: a 1000-byte datagram takes 10 ms; 150 ms of queue.
        let mut s = Shaper::new(class("cap=800kbps"), 1);
        let mut delivered = 0;
        let mut dropped = 0;
        let mut out = Vec::new();
        let dgram = [7u8; 1000];
        // Offer 2 Mbps for one second (a datagram every 4 ms).
        for i in 0..250u64 {
            let now = i * 4_000;
            while s.pop_due(now, &mut out) {
                delivered += 1;
                assert_eq!(out.len(), 1000);
            }
            match s.admit(1000, now) {
                Verdict::Now => delivered += 1,
                Verdict::Later(at) => {
                    assert!(
                        at > now && at - now <= 160_000,
                        "bounded delay {}",
                        at - now
                    );
                    assert!(s.push(at, &dgram));
                }
                Verdict::QueueFull => dropped += 1,
                Verdict::Lost => unreachable!(),
            }
        }
        while s.pop_due(u64::MAX, &mut out) {
            delivered += 1;
        }
        // About 800 kbps got through: 1 s worth + the 150 ms queue ≈ 115 datagrams.
        assert!((105..=125).contains(&delivered), "{delivered}");
        assert_eq!(delivered + dropped, 250);
        assert_eq!(s.stats.queue_drops, dropped as u64);
    }

    #[test]
    fn loss_and_delay_keep_order() {
        let mut s = Shaper::new(class("loss=10%,delay=80ms,jitter=20ms"), 3);
        let mut out = Vec::new();
        let mut lost = 0;
        let mut last_due = 0;
        for i in 0..10_000u64 {
            let now = i * 1_000;
            match s.admit(100, now) {
                Verdict::Lost => lost += 1,
                Verdict::Later(at) => {
                    assert!(at >= now + 80_000 && at < now + 100_000 + 20_000);
                    assert!(at >= last_due, "FIFO");
                    last_due = at;
                    assert!(s.push(at, &(i as u32).to_be_bytes()));
                }
                v => panic!("{v:?}"),
            }
        }
        assert!((900..=1100).contains(&lost), "{lost}");
        let mut prev = None;
        while s.pop_due(u64::MAX, &mut out) {
            let v = u32::from_be_bytes([out[0], out[1], out[2], out[3]]);
            assert!(prev.is_none_or(|p| v > p));
            prev = Some(v);
        }
        // A good link passes everything at once.
        let mut g = Shaper::new(class("good"), 1);
        assert_eq!(g.admit(1200, 5), Verdict::Now);
        assert_eq!(g.stats.offered, 1);
    }

    #[test]
    fn the_delay_line_is_bounded_and_wraps() {
        let mut s = Shaper::new(class("cap=100kbps,buffer=100ms"), 1);
        let cap = s.bytes.len();
        assert!(cap < 8_000, "{cap}");
        let mut out = Vec::new();
        let mut pushed = 0;
        for i in 0..100u8 {
            if s.push(u64::from(i), &[i; 700]) {
                pushed += 1;
            }
            if i % 3 == 0 {
                assert!(s.pop_due(u64::MAX, &mut out));
                assert!(out.iter().all(|b| *b == out[0]));
            }
        }
        assert!(s.stats.overflow > 0);
        assert!(pushed > 30);
    }
}
