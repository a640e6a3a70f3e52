//! Giving freed memory back to the system after meetings end.
//!
//! glibc's allocator keeps what a thread freed in that thread's arena: after a meeting of
//! hundreds ends (or thousands of short sessions come and go) the heap is small again, but the
//! process stays resident near its peak. `malloc_trim(0)` walks every arena and returns the
//! free pages (`madvise`). It locks each arena while it walks, so it runs only when sessions
//! have ended, on a blocking thread, and at most once every [`Trimmer::MIN_GAP`] while people
//! are still in — at once when the server becomes empty.
//!
//! The same task forgets used grants once they expire (the in-memory replay cache of
//! `grant.rs`, every [`PURGE_EVERY`]): a burst of joins leaves that much behind for the grants'
//! lifetime, and it is returned too.
//!
//! Data flow: a task ticks once a second with the live count (signaling sessions plus media
//! participants) and the grants it forgot → [`Trimmer::handle_tick`] (a plain state machine,
//! tested below) says whether to trim → [`release_free_memory`] on a blocking thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::Admission;
use crate::grant::KeyRing;
use crate::metrics::Metrics;

/// How often expired used grants are forgotten.
pub const PURGE_EVERY: Duration = Duration::from_secs(10);

/// Decides when to trim, from the live count sampled once a second.
#[derive(Debug)]
pub struct Trimmer {
    last_live: usize,
    /// Sessions that ended since the last trim (falls in the live count), and grants
    /// forgotten (counted as [`Trimmer::GRANTS_PER_SESSION`] each session).
    ended: usize,
    last_trim: Option<Instant>,
}

impl Trimmer {
    /// The shortest time between two trims while people are still in.
    pub const MIN_GAP: Duration = Duration::from_secs(30);
    /// Ended sessions that make a trim worth it while people are still in.
    pub const MIN_ENDED: usize = 20;
    /// Forgotten grants that count as one ended session (a grant costs far less).
    pub const GRANTS_PER_SESSION: usize = 20;

    /// A trimmer that has seen nobody.
    pub fn new() -> Self {
        Trimmer {
            last_live: 0,
            ended: 0,
            last_trim: None,
        }
    }

    /// Takes the live count at `now` and the used grants forgotten since the last tick; true
    /// when the allocator should be trimmed now.
    pub fn handle_tick(&mut self, now: Instant, live: usize, forgotten: usize) -> bool {
        self.ended += self.last_live.saturating_sub(live);
        self.ended += forgotten.div_ceil(Self::GRANTS_PER_SESSION);
        self.last_live = live;
        if self.ended == 0 {
            return false;
        }
        let due = if live == 0 {
            true
        } else {
            self.ended >= Self::MIN_ENDED
                && self
                    .last_trim
                    .is_none_or(|t| now.duration_since(t) >= Self::MIN_GAP)
        };
        if due {
            self.ended = 0;
            self.last_trim = Some(now);
        }
        due
    }
}

impl Default for Trimmer {
    fn default() -> Self {
        Self::new()
    }
}

/// Asks the allocator to return the memory it holds free; true if it returned some.
/// Elsewhere than glibc it does nothing (musl and the others return memory themselves).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and touches only the allocator's own state,
    // which glibc locks against every other allocator call.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Asks the allocator to return the memory it holds free (nothing to do here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// Spawns the once-a-second task that trims after sessions end.
pub fn spawn_trimmer(admission: Arc<Admission>, metrics: Arc<Metrics>, keys: KeyRing) {
    tokio::spawn(async move {
        let mut trimmer = Trimmer::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge = Instant::now();
        loop {
            tick.tick().await;
            let now = Instant::now();
            let forgotten = if now.duration_since(last_purge) >= PURGE_EVERY {
                last_purge = now;
                keys.purge_used_grants()
            } else {
                0
            };
            let live = admission.live() + metrics.participants.get().max(0) as usize;
            if !trimmer.handle_tick(now, live, forgotten) {
                continue;
            }
            let t = Instant::now();
            let released = tokio::task::spawn_blocking(release_free_memory)
                .await
                .unwrap_or(false);
            metrics.memory_trims.inc();
            tracing::debug!(live, forgotten, released, took = ?t.elapsed(), "allocator trimmed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_when_the_server_empties() {
        let mut t = Trimmer::new();
        let t0 = Instant::now();
        assert!(!t.handle_tick(t0, 0, 0), "nothing ended yet");
        assert!(!t.handle_tick(t0, 5, 0));
        assert!(
            !t.handle_tick(t0 + Duration::from_secs(1), 3, 0),
            "2 ended, 3 still in"
        );
        assert!(
            t.handle_tick(t0 + Duration::from_secs(2), 0, 0),
            "empty after sessions"
        );
        assert!(!t.handle_tick(t0 + Duration::from_secs(3), 0, 0), "once");
    }

    #[test]
    fn trims_at_most_every_gap_while_people_are_in() {
        let mut t = Trimmer::new();
        let t0 = Instant::now();
        t.handle_tick(t0, 100, 0);
        assert!(
            t.handle_tick(t0 + Duration::from_secs(1), 50, 0),
            "50 ended"
        );
        // 40 more end 10 s later: too soon.
        assert!(!t.handle_tick(t0 + Duration::from_secs(11), 10, 0));
        // The gap has passed and they are still counted.
        assert!(t.handle_tick(t0 + Trimmer::MIN_GAP + Duration::from_secs(1), 10, 0));
        // A few leaving is not worth a walk of every arena.
        let later = t0 + Trimmer::MIN_GAP * 3;
        assert!(!t.handle_tick(later, 5, 0));
    }

    #[test]
    fn forgotten_grants_count_once_nobody_is_in() {
        let mut t = Trimmer::new();
        let t0 = Instant::now();
        assert!(!t.handle_tick(t0, 0, 0));
        assert!(
            t.handle_tick(t0 + Duration::from_secs(10), 0, 3),
            "empty server, grants gone"
        );
        t.handle_tick(t0 + Duration::from_secs(11), 50, 0);
        // With people in, only many forgotten grants are worth it.
        let later = t0 + Trimmer::MIN_GAP * 2;
        assert!(!t.handle_tick(later, 50, 100));
        assert!(t.handle_tick(later + Duration::from_secs(1), 50, 400));
    }

    #[test]
    fn releasing_does_not_disturb_live_memory() {
        let keep: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 4096]).collect();
        drop((0..1000).map(|_| vec![0u8; 4096]).collect::<Vec<_>>());
        let _ = release_free_memory();
        assert!(keep
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|b| *b == i as u8)));
    }
}
