//! Keeping the server's memory bounded after sessions end.
//!
//! Two parts:
//! - **The allocator** is jemalloc (`#[global_allocator]` in `main.rs`). glibc's kept what
//!   each thread freed in that thread's arena: after 10,000 short sessions came and went the
//!   heap held no more live data (heaptrack: +9 KB between 400 and 4,400 cycles), yet the
//!   process stayed 1.3–1.6 MB above its baseline even after `malloc_trim(0)` — pages pinned
//!   by scattered small allocations. jemalloc's size-class slabs and its decay (freed pages go
//!   back after ~10 s of activity) left +0.3 MB for the same churn. It costs ~3.6 MB more at
//!   start and ~7 % more per participant at peak (`loadtest/RESULTS.md`, 2026-11-28).
//!   It is the default cargo feature `jemalloc`; `--no-default-features` builds with the
//!   system allocator, which heap profilers such as heaptrack can see.
//! - **Used grants are forgotten once they expire**: every grant that joins is remembered
//!   until it expires so it cannot be replayed (the in-memory replay cache of `grant.rs`);
//!   a burst of joins leaves that much behind for the grants' lifetime. A task forgets the
//!   expired ones every [`PURGE_EVERY`].
//!
//! Data flow: [`spawn_grant_purge`] ticks every [`PURGE_EVERY`] → `KeyRing::purge_used_grants`.

use std::time::Duration;

use crate::grant::KeyRing;

/// How often expired used grants are forgotten.
pub const PURGE_EVERY: Duration = Duration::from_secs(10);

/// Spawns the task that forgets expired used grants every [`PURGE_EVERY`].
pub fn spawn_grant_purge(keys: KeyRing) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let forgotten = keys.purge_used_grants();
            if forgotten > 0 {
                tracing::debug!(forgotten, "expired used grants forgotten");
            }
        }
    });
}
