//! A cap on one subscriber's bandwidth estimate from the loss its receiver reports.
//!
//! Delay-based estimation (GCC) sees a bottleneck by its growing queue. A policer — a link
//! that drops whatever exceeds its rate, with no queue — shows no delay, so the estimate may
//! climb far above what gets through while packets, audio among them, are dropped. The
//! [`LossCap`] reads the receiver's reports instead: when reported loss is heavy two
//! seconds in a row (one second alone may be the noise of a lossy link), or severe in one,
//! while video flows,
//! the cap falls to what got through and holds there for a minute (20 s when that leaves
//! room for no more than the audio and one low layer) — not back up towards what
//! was being sent, which a policer showed it cannot carry: climbing back within seconds made
//! the allocator walk into the same loss again and again (video paused, resumed, paused). After
//! the minute it rises by a few percent a second, as GCC's increase does, until the link
//! shows loss again or the cap is far above what is sent. The driver feeds the subscriber's
//! allocator `min(estimate, cap)`.
//!
//! Sans-IO: reports and the time in, the cap out.

use std::time::{Duration, Instant};

/// Reported loss (share of packets) from which the cap acts.
pub const HEAVY_LOSS: f64 = 0.1;
/// A report this heavy counts alone: random loss on a usable link does not lose a quarter of
/// a second's packets, a policer under twice its rate does. (With two heavy reports in a
/// row required, a 400 kbit/s listener upgraded into a policer lost 49 % in one second, was
/// downgraded at once, reported 0 % the next, and climbed straight back on the next probe.)
pub const SEVERE_LOSS: f64 = 0.25;
/// How long after a cut further loss reports are taken to describe the time before it.
const HOLD_OFF: Duration = Duration::from_secs(3);
/// Video a first cut leaves room for beside the audio (one low simulcast layer, with room).
const FIRST_CUT_VIDEO_BPS: u64 = 150_000;
/// How long the cap holds at what got through.
const HOLD: Duration = Duration::from_secs(60);
/// How long a cap that leaves room for no more than the audio and one low layer holds: it
/// pauses the video, and the minute that keeps a policed listener from walking back into
/// its loss would keep it without any picture (72–76 s to adapt to 400 kbit/s in one run in
/// four, where loss went on while the allocation came down and a second cut went this deep).
const DEEP_HOLD: Duration = Duration::from_secs(20);
/// How fast it rises after the hold (share per second, compounded).
const GROWTH_PER_SEC: f64 = 0.05;
/// Share of what got through the cap keeps to: below the link by enough that a keyframe's
/// burst and the estimator's probes fit through a policer's small bucket (at 0.95, three
/// thumbnails filled a 400 kbit/s link and stalled for seconds at each keyframe).
const MARGIN: f64 = 0.85;

#[derive(Debug, Clone, Copy)]
struct Cap {
    bps: u64,
    cut_at: Instant,
    hold: Duration,
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct LossCap {
    cap: Option<Cap>,
    /// What is sent now, and since when.
    current: Option<(u64, Instant)>,
    /// The most sent before that within the last [`REPORT_SPAN`], and when it stopped:
    /// reports describe the last seconds, during which the allocation may have come down.
    recent: Option<(u64, Instant)>,
    /// The previous report's loss: heavy loss counts when two reports in a row show it (one
    /// second's sample of ~100 packets at 5 % random loss shows 10 % now and then).
    last_loss: f64,
}

/// How far back what was sent counts for a report: receiver reports come about once a
/// second, describe the second before, are read in one-second windows, and the pacer may
/// still be draining what an over-allocation queued.
const REPORT_SPAN: Duration = Duration::from_secs(5);

impl LossCap {
    /// What is being sent now (audio and video), each time the allocation changes.
    pub fn note_sent(&mut self, now: Instant, sent_bps: u64) {
        match self.current {
            Some((bps, _)) if bps == sent_bps => {}
            Some((bps, _)) => {
                // `bps` was sent until now.
                let fresh = self.recent.is_some_and(|(r, ended)| {
                    r > bps && now.saturating_duration_since(ended) < REPORT_SPAN
                });
                if !fresh {
                    self.recent = Some((bps, now));
                }
                self.current = Some((sent_bps, now));
            }
            None => self.current = Some((sent_bps, now)),
        }
    }

    /// The most sent at any time in the last [`REPORT_SPAN`].
    fn sent_lately(&self, now: Instant) -> u64 {
        let current = self.current.map_or(0, |(b, _)| b);
        match self.recent {
            Some((r, ended)) if now.saturating_duration_since(ended) < REPORT_SPAN => {
                current.max(r)
            }
            _ => current,
        }
    }

    /// One reporting period: `loss` (0..1) of what was sent while sending `sent_bps` in
    /// all (audio and video), of which `floor_bps` is the audio that must always fit.
    pub fn handle_report(&mut self, now: Instant, loss: f64, sent_bps: u64, floor_bps: u64) {
        self.note_sent(now, sent_bps);
        let sent_bps = self.sent_lately(now);
        let video_flows = sent_bps > floor_bps;
        // Reports lag: the loss of the seconds just after a cut describes what was sent
        // before it, and must not cut again.
        let settling = self.cap.is_some_and(|c| now < c.cut_at + HOLD_OFF);
        let lasting = std::mem::replace(&mut self.last_loss, loss).min(loss);
        let lasting = if loss >= SEVERE_LOSS { loss } else { lasting };
        if lasting >= HEAVY_LOSS && video_flows && !settling {
            // The lighter of the two reports: a burst of loss as the allocation came down
            // says little of what the link carries.
            let through = (sent_bps as f64 * (1.0 - lasting) * MARGIN) as u64;
            let current = self.cap(now);
            // A first cut keeps room for the audio and one low video layer; only loss that
            // goes on at that rate takes the cap lower (down to the audio and a quarter).
            let video_floor = floor_bps + FIRST_CUT_VIDEO_BPS;
            let bps = if current > video_floor {
                through.max(video_floor)
            } else {
                through.max(floor_bps + floor_bps / 4)
            };
            // Only a real cut counts (and restarts the hold).
            if bps < current {
                let hold = if bps <= video_floor { DEEP_HOLD } else { HOLD };
                self.cap = Some(Cap {
                    bps,
                    cut_at: now,
                    hold,
                });
            }
        } else if self.cap.is_some_and(|c| self.cap(now) >= 4 * c.bps) {
            // Risen far above the cut with no loss since: no longer a cap. (Not judged by
            // what is sent, which is low exactly when the cap pauses the video.)
            self.cap = None;
        }
    }

    /// The cap at `now` (`u64::MAX` for none): what got through for the hold (a minute;
    /// [`DEEP_HOLD`] for a cap that leaves no room for more than one low layer), then rising
    /// by [`GROWTH_PER_SEC`] compounded.
    pub fn cap(&self, now: Instant) -> u64 {
        let Some(c) = self.cap else { return u64::MAX };
        let beyond = now
            .saturating_duration_since(c.cut_at + c.hold)
            .as_secs_f64()
            .min(120.0);
        (c.bps as f64 * (1.0 + GROWTH_PER_SEC).powf(beyond)) as u64
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
    fn heavy_loss_caps_at_what_got_through_holds_then_rises() {
        let t = Instant::now();
        let mut c = LossCap::default();
        // 480 kbit/s into a 400 kbit/s policer: a sixth is lost, report after report.
        c.handle_report(t - S, 1.0 / 6.0, 480_000, 120_000);
        assert!(!c.is_capped(), "one heavy report may be noise");
        c.handle_report(t, 1.0 / 6.0, 480_000, 120_000);
        let first = c.cap(t);
        assert!((330_000..=350_000).contains(&first), "{first}");
        assert_eq!(c.cap(t + 4 * S), first, "it stays put");
        assert_eq!(
            c.cap(t + 59 * S),
            first,
            "for a minute: not back into the policer"
        );
        let later = c.cap(t + 70 * S);
        assert!(
            later > first * 3 / 2 && later < first * 2,
            "then it rises a few percent a second: {later}"
        );
        // Loss again up there: cut again, to what got through then.
        c.handle_report(t + 70 * S, 0.3, 560_000, 120_000);
        c.handle_report(t + 71 * S, 0.3, 560_000, 120_000);
        assert!(c.cap(t + 71 * S) < 400_000, "{}", c.cap(t + 71 * S));
        // No loss, far above what is sent: gone.
        c.handle_report(t + 200 * S, 0.0, 200_000, 120_000);
        assert!(!c.is_capped());
    }

    #[test]
    fn one_severe_report_counts_alone() {
        let t = Instant::now();
        let mut c = LossCap::default();
        // 860 kbit/s into a 400 kbit/s policer: half of it lost in one second.
        c.handle_report(t - S, 0.08, 860_000, 40_000);
        c.handle_report(t, 0.49, 860_000, 40_000);
        assert!(c.is_capped(), "a second losing half is not noise");
        let cap = c.cap(t);
        assert!((350_000..=400_000).contains(&cap), "{cap}");
        // A single heavy but not severe report still waits for the next.
        let mut c = LossCap::default();
        c.handle_report(t, 0.2, 860_000, 40_000);
        assert!(!c.is_capped());
    }

    #[test]
    fn a_cut_down_to_the_audio_and_one_low_layer_holds_for_less() {
        let t = Instant::now();
        let mut c = LossCap::default();
        // 480 kbit/s losing 60 % of it, twice: cut to the floor (audio 40k + 150k).
        c.handle_report(t - S, 0.6, 480_000, 40_000);
        c.handle_report(t, 0.6, 480_000, 40_000);
        let cut = c.cap(t);
        assert_eq!(cut, 190_000);
        assert_eq!(c.cap(t + 19 * S), cut, "it holds");
        assert!(
            c.cap(t + 30 * S) > cut * 3 / 2,
            "then rises well before the minute: {}",
            c.cap(t + 30 * S)
        );
    }

    #[test]
    fn a_cap_that_paused_the_video_is_not_dropped_for_sending_little() {
        let t = Instant::now();
        let mut c = LossCap::default();
        c.handle_report(t - S, 0.5, 300_000, 40_000);
        c.handle_report(t, 0.5, 300_000, 40_000);
        let cut = c.cap(t);
        assert!(c.is_capped());
        // Only audio flows now (the cap paused the video); past the (deep) hold, no loss.
        c.handle_report(t + 25 * S, 0.0, 40_000, 40_000);
        assert!(c.is_capped(), "still a cap: {}", c.cap(t + 25 * S));
        assert!(c.cap(t + 25 * S) < 2 * cut);
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
    fn what_was_sent_counts_until_it_stopped_not_from_when_it_began() {
        let t = Instant::now();
        let mut c = LossCap::default();
        // 700 kbit/s for a long time, then down to 160 kbit/s.
        c.note_sent(t, 700_000);
        c.note_sent(t + 20 * S, 160_000);
        // Two heavy reports 3 s after it came down describe the 700 kbit/s.
        c.handle_report(t + 22 * S, 0.5, 160_000, 40_000);
        c.handle_report(t + 23 * S, 0.5, 160_000, 40_000);
        let cut = c.cap(t + 23 * S);
        assert!((280_000..=310_000).contains(&cut), "{cut}");
        // Long after, it is what is sent now that counts.
        c.note_sent(t + 40 * S, 100_000);
        assert_eq!(c.sent_lately(t + 46 * S), 100_000);
    }

    #[test]
    fn late_reports_of_the_same_loss_do_not_cut_twice() {
        let t = Instant::now();
        let mut c = LossCap::default();
        c.handle_report(t - S, 0.2, 700_000, 120_000);
        c.handle_report(t, 0.2, 700_000, 120_000);
        let one = c.cap(t);
        assert!(c.is_capped());
        // Even a severe one.
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
        c.handle_report(t + 5 * S, 0.9, 400_000, 120_000);
        let two = c.cap(t + 5 * S);
        assert!(two < one);
        assert!(
            two >= 150_000,
            "the audio (plus a quarter) always fits: {two}"
        );
    }
}
