//! A cap on one subscriber's bandwidth estimate from the loss its receiver reports.
//!
//! Delay-based estimation (GCC) sees a bottleneck by its growing queue. A policer — a link
//! that drops whatever exceeds its rate, with no queue — shows no delay, so the estimate may
//! climb far above what gets through while packets, audio among them, are dropped. The
//! [`LossCap`] reads the receiver's reports instead: when reported loss is heavy two
//! seconds in a row (one second alone may be the noise of a lossy link) while video flows,
//! the cap falls to what got through, stays there a few seconds, then
//! rises slowly (additive increase, as TCP after a loss), and for a minute never above
//! what was being sent when the loss came, so the allocator does not walk back into it
//! every few seconds. The driver feeds the subscriber's allocator `min(estimate, cap)`.
//!
//! Sans-IO: reports and the time in, the cap out.

use std::time::{Duration, Instant};

/// Reported loss (share of packets) from which the cap acts.
pub const HEAVY_LOSS: f64 = 0.1;
/// How long after a cut further loss reports are taken to describe the time before it.
const HOLD_OFF: Duration = Duration::from_secs(3);
/// How long the cap stays put after a loss.
const SETTLE: Duration = Duration::from_secs(5);
/// Time constant (seconds) of the climb back towards the loss point.
const RECOVERY_SECS: f64 = 4.0;
/// Share of the loss point the climb aims at.
const TARGET_SHARE: f64 = 0.9;
/// How fast it rises once the loss point is forgotten (bits/s per second).
const GROWTH_BPS_PER_SEC: f64 = 10_000.0;
/// How long the rate at which loss came stays a ceiling.
const REMEMBER: Duration = Duration::from_secs(60);
/// Share of what got through the cap keeps to (a little below the link).
const MARGIN: f64 = 0.95;

#[derive(Debug, Clone, Copy)]
struct Cap {
    bps: u64,
    grow_from: Instant,
    limit: u64,
    limit_until: Instant,
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct LossCap {
    cap: Option<Cap>,
    /// The most sent lately, and when: reports describe the last second or two, during
    /// which the allocation may already have come down.
    recent: Option<(u64, Instant)>,
    /// The previous report's loss: heavy loss counts when two reports in a row show it (one
    /// second's sample of ~100 packets at 5 % random loss shows 10 % now and then).
    last_loss: f64,
}

/// How far back what was sent counts for a report.
const REPORT_SPAN: Duration = Duration::from_secs(3);

impl LossCap {
    /// What is being sent now (audio and video), each time the allocation changes.
    pub fn note_sent(&mut self, now: Instant, sent_bps: u64) {
        match self.recent {
            Some((bps, at))
                if bps >= sent_bps && now.saturating_duration_since(at) < REPORT_SPAN => {}
            _ => self.recent = Some((sent_bps, now)),
        }
    }

    /// One reporting period: `loss` (0..1) of what was sent while sending `sent_bps` in
    /// all (audio and video), of which `floor_bps` is the audio that must always fit.
    pub fn handle_report(&mut self, now: Instant, loss: f64, sent_bps: u64, floor_bps: u64) {
        let sent_bps = match self.recent {
            Some((bps, at)) if now.saturating_duration_since(at) < REPORT_SPAN => sent_bps.max(bps),
            _ => sent_bps,
        };
        self.note_sent(now, sent_bps);
        let video_flows = sent_bps > floor_bps;
        // Reports lag: the loss of the seconds just after a cut describes what was sent
        // before it, and must not cut again.
        let settling = self
            .cap
            .is_some_and(|c| now < c.limit_until - REMEMBER + HOLD_OFF);
        let lasting = std::mem::replace(&mut self.last_loss, loss).min(loss);
        if lasting >= HEAVY_LOSS && video_flows && !settling {
            let through = (sent_bps as f64 * (1.0 - loss) * MARGIN) as u64;
            let bps = through.max(floor_bps + floor_bps / 4);
            let limit = (sent_bps as f64 * MARGIN) as u64;
            let current = self.cap(now);
            let (old_limit, old_until) = self
                .cap
                .map_or((u64::MAX, now), |c| (c.limit, c.limit_until));
            let limit = if old_until > now {
                limit.min(old_limit)
            } else {
                limit
            };
            self.cap = Some(Cap {
                bps: bps.min(current),
                grow_from: now + SETTLE,
                limit,
                limit_until: now + REMEMBER,
            });
        } else if self
            .cap
            .is_some_and(|c| now >= c.limit_until && self.cap(now) > 4 * sent_bps.max(1))
        {
            // Far above what is sent, with no loss for a long while: no longer a cap.
            self.cap = None;
        }
    }

    /// The cap at `now` (`u64::MAX` for none). After the settle time it climbs back
    /// towards just below where the loss came (quickly at first, a time constant of a few
    /// seconds), then, once that is forgotten, on at a slow linear pace.
    pub fn cap(&self, now: Instant) -> u64 {
        let Some(c) = self.cap else { return u64::MAX };
        let t = now.saturating_duration_since(c.grow_from).as_secs_f64();
        let target = ((c.limit as f64 * TARGET_SHARE) as u64).max(c.bps);
        let recovered = c.bps as f64 + (target - c.bps) as f64 * (1.0 - (-t / RECOVERY_SECS).exp());
        if now < c.limit_until {
            recovered as u64
        } else {
            let beyond = now.saturating_duration_since(c.limit_until).as_secs_f64();
            (recovered + beyond * GROWTH_BPS_PER_SEC) as u64
        }
    }

    /// Whether a cap is in force.
    pub fn is_capped(&self) -> bool {
        self.cap.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn light_or_probe_loss_sets_no_cap() {
        let t = Instant::now();
        let mut c = LossCap::default();
        c.handle_report(t, 0.05, 800_000, 120_000);
        assert_eq!(c.cap(t), u64::MAX, "5 % is not heavy");
        let mut c = LossCap::default();
        c.handle_report(t, 0.5, 120_000, 120_000);
        assert_eq!(
            c.cap(t),
            u64::MAX,
            "loss while only audio flows is the prober's"
        );
    }

    #[test]
    fn heavy_loss_caps_at_what_got_through_then_rises_slowly_below_the_loss_point() {
        let t = Instant::now();
        let mut c = LossCap::default();
        // 480 kbit/s into a 400 kbit/s policer: a sixth is lost, report after report.
        c.handle_report(t - S, 1.0 / 6.0, 480_000, 120_000);
        assert!(!c.is_capped(), "one heavy report may be noise");
        c.handle_report(t, 1.0 / 6.0, 480_000, 120_000);
        let first = c.cap(t);
        assert!((370_000..=390_000).contains(&first), "{first}");
        assert_eq!(c.cap(t + 4 * S), first, "it stays put a few seconds");
        let later = c.cap(t + 15 * S);
        assert!(later > first + 20_000, "then climbs back: {later}");
        assert!(
            c.cap(t + 50 * S) <= 456_000 * 9 / 10 + 1,
            "to just below where the loss was, for a while"
        );
        assert!(
            c.cap(t + 90 * S) > 456_000 * 9 / 10 + 100_000,
            "it forgets after a minute"
        );
        // No loss, far above what is sent: gone.
        c.handle_report(t + 200 * S, 0.0, 200_000, 120_000);
        assert!(!c.is_capped());
    }

    #[test]
    fn a_report_counts_what_was_sent_before_the_allocation_came_down() {
        let t = Instant::now();
        let mut c = LossCap::default();
        c.note_sent(t, 600_000);
        c.handle_report(t, 0.4, 600_000, 120_000);
        c.note_sent(t + S, 120_000); // video paused by the estimate meanwhile
        c.handle_report(t + S, 0.4, 120_000, 120_000);
        assert!(c.is_capped());
        assert!(
            c.cap(t + S) > 300_000,
            "the loss was of the 600 kbit/s: {}",
            c.cap(t + S)
        );
    }

    #[test]
    fn late_reports_of_the_same_loss_do_not_cut_twice() {
        let t = Instant::now();
        let mut c = LossCap::default();
        c.handle_report(t - S, 0.3, 700_000, 120_000);
        c.handle_report(t, 0.3, 700_000, 120_000);
        let one = c.cap(t);
        assert!(c.is_capped());
        c.handle_report(t + 2 * S, 0.4, 250_000, 120_000);
        assert_eq!(c.cap(t + 2 * S), one, "a report from before the cut");
    }

    #[test]
    fn a_second_loss_lowers_it_further_and_audio_always_fits() {
        let t = Instant::now();
        let mut c = LossCap::default();
        c.handle_report(t - S, 0.2, 500_000, 120_000);
        c.handle_report(t, 0.2, 500_000, 120_000);
        let one = c.cap(t);
        assert!(c.is_capped());
        c.handle_report(t + 4 * S, 0.9, 400_000, 120_000);
        let two = c.cap(t + 4 * S);
        assert!(two < one);
        assert!(
            two >= 150_000,
            "the audio (plus a quarter) always fits: {two}"
        );
    }
}
