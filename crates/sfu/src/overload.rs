//! Graceful overload: when a media shard nears saturation, shed load in a fixed order
//! instead of letting queues, retransmissions and keyframe requests spiral.
//!
//! The shard measures, once a second, the share of wall-clock time its loop spent working
//! (time taken from it by other processes counts as work: the packets wait either way) and
//! whether the kernel dropped datagrams at its socket. [`Overload`] turns those samples into
//! a [`Level`], with hysteresis so that it neither flaps nor sheds for one noisy second:
//!
//! | level | what the shard does |
//! |---|---|
//! | [`Level::Normal`] | nothing |
//! | [`Level::ShedThumbnails`] | every subscriber's video budget halves: the allocator drops thumbnails' layers and pauses them first (they come last in its priority order) |
//! | [`Level::ShedVideo`] | the budget falls to a fifth: most listeners keep at most the stage's low layer, those who need video least (thumbnails only) lose it |
//! | [`Level::RefuseJoins`] | as above, and the control loop places no new participant here (refused with `overloaded` when every shard is here) |
//!
//! Audio is never shed: the allocator reserves it before any video, whatever the budget.
//! A level rises after two busy seconds in a row (one second for kernel drops) and falls one
//! step after five calm seconds.
//!
//! Sans-IO: samples and the time in, a level out.

use std::time::{Duration, Instant};

/// How loaded a shard is, in the order load is shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// Everything as usual.
    #[default]
    Normal,
    /// Thumbnails' video goes first.
    ShedThumbnails,
    /// Video for the listeners who need it least.
    ShedVideo,
    /// No new participants on this shard.
    RefuseJoins,
}

impl Level {
    /// What each subscriber's video budget is multiplied by at this level.
    pub fn budget_factor(self) -> f64 {
        match self {
            Level::Normal => 1.0,
            Level::ShedThumbnails => 0.5,
            Level::ShedVideo | Level::RefuseJoins => 0.2,
        }
    }

    /// A small number for metrics (0 = normal … 3 = refusing joins).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    fn up(self) -> Level {
        match self {
            Level::Normal => Level::ShedThumbnails,
            Level::ShedThumbnails => Level::ShedVideo,
            Level::ShedVideo | Level::RefuseJoins => Level::RefuseJoins,
        }
    }

    fn down(self) -> Level {
        match self {
            Level::Normal | Level::ShedThumbnails => Level::Normal,
            Level::ShedVideo => Level::ShedThumbnails,
            Level::RefuseJoins => Level::ShedVideo,
        }
    }
}

/// Thresholds of [`Overload`].
#[derive(Debug, Clone, Copy)]
pub struct OverloadConfig {
    /// Busy share from which a second counts as overloaded.
    pub busy: f64,
    /// Busy share under which a second counts as calm.
    pub calm: f64,
    /// Overloaded seconds in a row before the level rises.
    pub rise_after: u32,
    /// Calm time before the level falls one step.
    pub fall_after: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            busy: 0.85,
            calm: 0.6,
            rise_after: 2,
            fall_after: Duration::from_secs(5),
        }
    }
}

/// One shard's overload state (see the module docs).
#[derive(Debug, Clone)]
pub struct Overload {
    config: OverloadConfig,
    level: Level,
    busy_run: u32,
    calm_since: Option<Instant>,
}

impl Overload {
    /// A monitor at [`Level::Normal`].
    pub fn new(config: OverloadConfig) -> Self {
        Self {
            config,
            level: Level::Normal,
            busy_run: 0,
            calm_since: None,
        }
    }

    /// One second's sample: the share of it the shard's loop was working (0..=1, may exceed
    /// 1 slightly from clock rounding) and whether the kernel dropped datagrams at its
    /// socket. Returns the level if it changed.
    pub fn handle_sample(&mut self, now: Instant, busy: f64, kernel_drops: bool) -> Option<Level> {
        let before = self.level;
        if kernel_drops || busy >= self.config.busy {
            self.calm_since = None;
            self.busy_run += 1;
            if kernel_drops || self.busy_run >= self.config.rise_after {
                self.level = self.level.up();
                self.busy_run = 0;
            }
        } else {
            self.busy_run = 0;
            if busy < self.config.calm {
                let since = *self.calm_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.config.fall_after {
                    self.level = self.level.down();
                    self.calm_since = Some(now);
                }
            } else {
                self.calm_since = None;
            }
        }
        (self.level != before).then_some(self.level)
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }
}

impl Default for Overload {
    fn default() -> Self {
        Self::new(OverloadConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn sustained_busy_seconds_raise_the_level_step_by_step() {
        let t0 = Instant::now();
        let mut o = Overload::default();
        assert_eq!(
            o.handle_sample(t0, 0.95, false),
            None,
            "one busy second is noise"
        );
        assert_eq!(
            o.handle_sample(t0 + S, 0.95, false),
            Some(Level::ShedThumbnails)
        );
        assert_eq!(o.handle_sample(t0 + 2 * S, 0.95, false), None);
        assert_eq!(
            o.handle_sample(t0 + 3 * S, 0.95, false),
            Some(Level::ShedVideo)
        );
        o.handle_sample(t0 + 4 * S, 0.95, false);
        assert_eq!(
            o.handle_sample(t0 + 5 * S, 0.95, false),
            Some(Level::RefuseJoins)
        );
        o.handle_sample(t0 + 6 * S, 0.95, false);
        assert_eq!(
            o.handle_sample(t0 + 7 * S, 0.95, false),
            None,
            "no level above"
        );
    }

    #[test]
    fn kernel_drops_raise_it_at_once() {
        let t0 = Instant::now();
        let mut o = Overload::default();
        assert_eq!(o.handle_sample(t0, 0.3, true), Some(Level::ShedThumbnails));
    }

    #[test]
    fn calm_lowers_it_one_step_per_five_seconds_and_a_busy_second_resets_the_wait() {
        let t0 = Instant::now();
        let mut o = Overload::default();
        for i in 0..6 {
            o.handle_sample(t0 + i * S, 0.99, false);
        }
        assert_eq!(o.level(), Level::RefuseJoins);
        let mut t = t0 + 6 * S;
        for _ in 0..4 {
            assert_eq!(o.handle_sample(t, 0.2, false), None);
            t += S;
        }
        // Half busy: neither calm nor overloaded; the calm wait starts again.
        assert_eq!(o.handle_sample(t, 0.7, false), None);
        t += S;
        for _ in 0..5 {
            assert_eq!(o.handle_sample(t, 0.2, false), None);
            t += S;
        }
        assert_eq!(o.handle_sample(t, 0.2, false), Some(Level::ShedVideo));
        for _ in 0..20 {
            t += S;
            o.handle_sample(t, 0.2, false);
        }
        assert_eq!(o.level(), Level::Normal);
    }

    #[test]
    fn budget_shrinks_with_the_level() {
        assert_eq!(Level::Normal.budget_factor(), 1.0);
        assert!(Level::ShedThumbnails.budget_factor() < 1.0);
        assert!(Level::ShedVideo.budget_factor() < Level::ShedThumbnails.budget_factor());
    }
}
