//! One subscriber's video allocation driven in simulated time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use plenary_sfu::allocator::{AUDIO_TRACK_RESERVE, COLLAPSE_PERCENT};
use plenary_sfu::{
    Allocator, AllocatorConfig, AllocatorEvent, BitrateTarget, Decision, PauseReason, Tile,
    TrackKey as T, TrackPriority, VideoLayer,
};

const STAGE: T = T(1);
const SECOND: T = T(2);
const THIRD: T = T(3);
const MS: Duration = Duration::from_millis(1);

fn camera(low: u64, mid: u64, high: u64) -> [VideoLayer; 3] {
    [
        VideoLayer::new(320, 180, low),
        VideoLayer::new(640, 360, mid),
        VideoLayer::new(1280, 720, high),
    ]
}

fn cam() -> [VideoLayer; 3] {
    camera(150_000, 500_000, 1_500_000)
}

fn paused(reason: PauseReason) -> Decision {
    Decision::Paused(reason)
}

/// A deterministic pseudo-random sequence (no dependency, same numbers on every run).
struct Lcg(u64);

impl Lcg {
    /// A number in `-1.0..1.0`.
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// `value` moved by up to ± `percent` per cent.
    fn jitter(&mut self, value: u64, percent: f64) -> u64 {
        (value as f64 * (1.0 + self.next() * percent / 100.0)) as u64
    }
}

/// An allocator, a clock, and everything it said.
struct Sim {
    alloc: Allocator,
    t0: Instant,
    now: Instant,
    decisions: HashMap<T, Decision>,
    /// (time since start, track, decision) for every decision change.
    changes: Vec<(Duration, T, Decision)>,
    targets: Vec<(Duration, BitrateTarget)>,
    audio: u64,
    /// Since when the video has needed more than the estimate less audio.
    short_since: Option<Duration>,
}

impl Sim {
    fn new(config: AllocatorConfig) -> Sim {
        let t0 = Instant::now();
        Sim {
            alloc: Allocator::new(config).unwrap(),
            t0,
            now: t0,
            decisions: HashMap::new(),
            changes: Vec::new(),
            targets: Vec::new(),
            audio: 0,
            short_since: None,
        }
    }

    /// Audio for `tracks` audio tracks, then the estimate.
    fn start(estimate: u64, audio_tracks: u64) -> Sim {
        let mut sim = Sim::new(AllocatorConfig::default());
        sim.set_audio(audio_tracks * AUDIO_TRACK_RESERVE);
        sim.estimate(estimate);
        sim
    }

    /// Stage at 1280×720, the second at 640×360, the third a thumbnail.
    fn three_cameras(&mut self) {
        self.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
        self.add(
            SECOND,
            TrackPriority::Speaker,
            Tile::shown(640, 360),
            &cam(),
        );
        self.add(
            THIRD,
            TrackPriority::Thumbnail,
            Tile::shown(320, 180),
            &cam(),
        );
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn drain(&mut self) {
        while let Some(e) = self.alloc.poll_event() {
            match e {
                AllocatorEvent::Track { track, decision } => {
                    if self.decisions.insert(track, decision) != Some(decision) {
                        self.changes.push((self.elapsed(), track, decision));
                    }
                }
                AllocatorEvent::Bitrate(target) => self.targets.push((self.elapsed(), target)),
            }
        }
        self.check_budget();
        if let Some(at) = self.alloc.poll_timeout() {
            assert!(at > self.now, "a timeout in the past would spin the driver");
        }
    }

    /// The promise: the video needs more than the estimate less audio for no longer than
    /// the downgrade hold, and never so much that the estimate is below the collapse share
    /// of what is sent.
    fn check_budget(&mut self) {
        let video = self.alloc.video_rate();
        let estimate = self.alloc.estimate();
        let room = estimate.saturating_sub(self.audio);
        let sent = (video + self.audio) as u128;
        assert!(
            video == 0 || estimate as u128 * 100 >= sent * COLLAPSE_PERCENT as u128,
            "at {:?}: video {video} + audio {} on an estimate of {estimate}",
            self.elapsed(),
            self.audio
        );
        if video <= room {
            self.short_since = None;
            return;
        }
        let since = *self.short_since.get_or_insert(self.elapsed());
        assert!(
            self.elapsed() - since <= AllocatorConfig::default().downgrade_hold,
            "at {:?}: video {video} > estimate {estimate} - audio {} since {since:?}",
            self.elapsed(),
            self.audio
        );
    }

    fn add(&mut self, track: T, priority: TrackPriority, tile: Tile, layers: &[VideoLayer]) {
        self.alloc
            .add_track(self.now, track, priority, tile, layers)
            .unwrap();
        self.drain();
    }

    fn set_audio(&mut self, bits: u64) {
        self.audio = bits;
        self.alloc.set_audio_reserve(self.now, bits);
        self.drain();
    }

    fn estimate(&mut self, estimate: u64) {
        self.alloc.handle_estimate(self.now, estimate, true);
        self.drain();
    }

    fn layers(&mut self, track: T, layers: &[VideoLayer]) {
        self.alloc.set_layers(self.now, track, layers).unwrap();
        self.drain();
    }

    fn tile(&mut self, track: T, tile: Tile) {
        self.alloc.set_tile(self.now, track, tile).unwrap();
        self.drain();
    }

    /// Advances the clock in 100 ms ticks for `d`, reporting `estimate(elapsed)` at each tick
    /// and serving timeouts in between.
    fn run(&mut self, d: Duration, mut estimate: impl FnMut(Duration) -> u64) {
        let end = self.now + d;
        while self.now < end {
            let tick = (self.now + 100 * MS).min(end);
            while let Some(at) = self.alloc.poll_timeout() {
                if at > tick {
                    break;
                }
                self.now = self.now.max(at);
                self.alloc.handle_timeout(self.now);
                self.drain();
            }
            self.now = tick;
            let e = estimate(self.elapsed());
            self.estimate(e);
        }
    }

    fn decision(&self, track: T) -> Decision {
        self.decisions[&track]
    }

    fn changes_since(&self, since: Duration) -> Vec<(Duration, T, Decision)> {
        self.changes
            .iter()
            .filter(|c| c.0 >= since)
            .copied()
            .collect()
    }
}

#[test]
fn at_400_kbits_the_stage_gets_its_low_layer_and_the_rest_pause() {
    let mut sim = Sim::start(400_000, 3);
    sim.three_cameras();
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    assert_eq!(sim.decision(SECOND), paused(PauseReason::Bandwidth));
    assert_eq!(sim.decision(THIRD), paused(PauseReason::Bandwidth));
    assert!(sim.decision(THIRD).is_paused_for_bandwidth());
    // Stays so: nothing more fits, even after holds.
    sim.run(Duration::from_secs(10), |_| 400_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    assert_eq!(sim.decision(SECOND), paused(PauseReason::Bandwidth));
}

#[test]
fn at_1_5_mbits_the_stage_gets_more_and_thumbnails_their_low_layer() {
    let mut sim = Sim::start(1_500_000, 3);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    sim.add(
        SECOND,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &cam(),
    );
    sim.add(
        THIRD,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &cam(),
    );
    sim.run(Duration::from_secs(10), |_| 1_500_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(1));
    assert_eq!(sim.decision(SECOND), Decision::Layer(0));
    assert_eq!(sim.decision(THIRD), Decision::Layer(0));
}

#[test]
fn at_10_mbits_a_small_tile_still_gets_the_low_layer() {
    let mut sim = Sim::start(10_000_000, 3);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    sim.add(
        SECOND,
        TrackPriority::Pinned,
        Tile::shown(1280, 720),
        &cam(),
    );
    sim.add(
        THIRD,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &cam(),
    );
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    assert_eq!(sim.decision(SECOND), Decision::Layer(2));
    assert_eq!(
        sim.decision(THIRD),
        Decision::Layer(0),
        "pixel size caps it"
    );
    sim.run(Duration::from_secs(10), |_| 10_000_000);
    assert_eq!(sim.decision(THIRD), Decision::Layer(0));
    // Everything is where the tiles want it: the desired rate is what is used, and no
    // padding (nothing to climb to).
    let target = sim.alloc.bitrate_target();
    assert_eq!(target.minimum, 0);
    assert!(target.desired < 4_000_000, "{target:?}");
    // Enlarging the tile gives it more at once.
    sim.tile(THIRD, Tile::shown(1280, 720));
    assert_eq!(sim.decision(THIRD), Decision::Layer(2));
    // Shrinking takes it back at once.
    sim.tile(THIRD, Tile::shown(640, 360));
    assert_eq!(sim.decision(THIRD), Decision::Layer(1));
}

#[test]
fn a_drop_downgrades_within_a_second_and_recovery_climbs_step_by_step() {
    let mut sim = Sim::start(3_000_000, 3);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    sim.add(
        SECOND,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &cam(),
    );
    sim.add(
        THIRD,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &cam(),
    );
    sim.run(Duration::from_secs(5), |_| 3_000_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    assert_eq!(sim.decision(SECOND), Decision::Layer(0));
    assert_eq!(sim.decision(THIRD), Decision::Layer(0));

    // The link drops to 400 kbit/s at 10 s.
    sim.run(Duration::from_secs(5), |_| 3_000_000);
    let drop = sim.elapsed();
    sim.run(Duration::from_secs(10), |_| 400_000);
    let downs = sim.changes_since(drop);
    assert!(!downs.is_empty());
    assert!(
        downs.iter().all(|c| c.0 - drop <= Duration::from_secs(1)),
        "downgrades within a second: {downs:?}"
    );
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    assert_eq!(sim.decision(SECOND), paused(PauseReason::Bandwidth));
    assert_eq!(sim.decision(THIRD), paused(PauseReason::Bandwidth));
    // While paused, the estimator is asked to probe for the next step.
    let probe = sim.alloc.bitrate_target().desired;
    assert!(probe > 400_000, "desired {probe}");
    assert!(sim
        .targets
        .iter()
        .any(|(at, t)| *at >= drop && t.desired > 400_000));

    // The link comes back.
    let back = sim.elapsed();
    sim.run(Duration::from_secs(10), |_| 3_000_000);
    let ups = sim.changes_since(back);
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    assert_eq!(sim.decision(SECOND), Decision::Layer(0));
    assert_eq!(sim.decision(THIRD), Decision::Layer(0));
    assert!(ups.len() >= 3, "step by step: {ups:?}");
    for pair in ups.windows(2) {
        assert!(pair[1].0 > pair[0].0, "one step at a time: {ups:?}");
    }
    let last = ups.last().unwrap().0 - back;
    assert!(last <= Duration::from_secs(6), "climbed back in {last:?}");
    assert!(
        ups[0].0 - back >= Duration::from_secs(2),
        "not before the hold"
    );
    // Once everything is where it should be, no more probing above the need.
    let target = sim.alloc.bitrate_target();
    assert!(target.desired < 2_400_000, "{target:?}");
}

#[test]
fn a_top_layer_that_stops_arriving_falls_back_at_once() {
    let mut sim = Sim::start(10_000_000, 1);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    sim.run(Duration::from_secs(3), |_| 10_000_000);
    // The publisher's uplink drops its top layer.
    let gone = sim.elapsed();
    sim.layers(STAGE, &camera(150_000, 500_000, 0));
    assert_eq!(sim.decision(STAGE), Decision::Layer(1));
    assert_eq!(sim.changes_since(gone).len(), 1);
    // And the middle one too.
    sim.layers(STAGE, &camera(150_000, 0, 0));
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    // Nothing arrives at all.
    sim.layers(STAGE, &camera(0, 0, 0));
    assert_eq!(sim.decision(STAGE), paused(PauseReason::NoMedia));
    // It starts again with only the top layer: that is what there is.
    sim.layers(STAGE, &camera(0, 0, 1_400_000));
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    // The lower layers return; the top one is kept.
    sim.layers(STAGE, &cam());
    sim.run(Duration::from_secs(5), |_| 10_000_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
}

#[test]
fn a_returning_layer_is_climbed_back_after_the_hold() {
    let mut sim = Sim::start(10_000_000, 1);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    sim.run(Duration::from_secs(1), |_| 10_000_000);
    sim.layers(STAGE, &camera(150_000, 500_000, 0));
    assert_eq!(sim.decision(STAGE), Decision::Layer(1));
    sim.run(Duration::from_secs(1), |_| 10_000_000);
    let back = sim.elapsed();
    sim.layers(STAGE, &cam());
    assert_eq!(sim.decision(STAGE), Decision::Layer(1), "not at once");
    sim.run(Duration::from_secs(3), |_| 10_000_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    let up = sim.changes_since(back)[0].0 - back;
    assert!(up >= Duration::from_secs(2) && up < Duration::from_secs(3));
}

#[test]
fn hidden_tiles_are_paused_and_come_back_when_shown() {
    let mut sim = Sim::start(3_000_000, 2);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    sim.add(SECOND, TrackPriority::Thumbnail, Tile::hidden(), &cam());
    assert_eq!(sim.decision(SECOND), paused(PauseReason::NotShown));
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    sim.tile(SECOND, Tile::shown(320, 180));
    assert_eq!(sim.decision(SECOND), Decision::Layer(0), "shown: at once");
    sim.tile(STAGE, Tile::hidden());
    assert_eq!(sim.decision(STAGE), paused(PauseReason::NotShown));
    assert_eq!(sim.alloc.video_rate(), 150_000);
}

#[test]
fn the_audio_reserve_comes_first() {
    // Ten audio tracks on a 500 kbit/s link leave 50 kbit/s: no video at all.
    let mut sim = Sim::start(500_000, 10);
    sim.three_cameras();
    for t in [STAGE, SECOND, THIRD] {
        assert_eq!(sim.decision(t), paused(PauseReason::Bandwidth));
    }
    // Fewer audio tracks leave room for the stage after the upgrade hold (the budget check
    // in `drain` covers every step).
    sim.set_audio(2 * AUDIO_TRACK_RESERVE);
    sim.run(Duration::from_secs(4), |_| 500_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    // More audio pushes video out again, at once.
    sim.set_audio(12 * AUDIO_TRACK_RESERVE);
    assert_eq!(sim.decision(STAGE), paused(PauseReason::Bandwidth));
}

#[test]
fn no_allocation_ever_exceeds_the_estimate_less_audio() {
    let mut sim = Sim::start(2_000_000, 4);
    sim.three_cameras();
    sim.add(
        T(4),
        TrackPriority::ScreenShare,
        Tile::shown(1920, 1080),
        &[VideoLayer::new(1920, 1080, 900_000)],
    );
    let mut rng = Lcg(7);
    let mut level = 2_000_000f64;
    for step in 0..3_000 {
        // A random walk between 100 kbit/s and 6 Mbit/s with sudden jumps now and then.
        level = (level * (1.0 + 0.08 * rng.next())).clamp(100_000.0, 6_000_000.0);
        if step % 97 == 0 {
            level = if rng.next() > 0.0 {
                5_000_000.0
            } else {
                300_000.0
            };
        }
        if step % 29 == 0 {
            // Measured rates need not grow with the layer index.
            sim.layers(
                SECOND,
                &camera(
                    rng.jitter(300_000, 50.0),
                    rng.jitter(250_000, 50.0),
                    900_000,
                ),
            );
        }
        if step % 13 == 0 {
            // Layer bitrates move too, and the top layer comes and goes.
            let high = if rng.next() > 0.5 {
                0
            } else {
                rng.jitter(1_500_000, 30.0)
            };
            sim.layers(
                STAGE,
                &camera(rng.jitter(150_000, 30.0), rng.jitter(500_000, 30.0), high),
            );
        }
        let e = level as u64;
        sim.run(100 * MS, |_| e);
    }
    // And it moved: this is not a test of an allocator that never allocates.
    assert!(sim.changes.len() > 20, "{} changes", sim.changes.len());
}

#[test]
fn a_noisy_but_steady_estimate_moves_nothing() {
    for (seed, mean) in [(1, 1_500_000), (2, 900_000), (3, 2_600_000), (4, 5_000_000)] {
        let mut sim = Sim::start(mean, 3);
        sim.three_cameras();
        let mut rng = Lcg(seed);
        // Settle: the initial allocation plus the climb to what the estimate carries.
        sim.run(Duration::from_secs(15), |_| mean);
        let settled = sim.elapsed();
        // 60 s of an estimate within ±10 % of its mean, and layer rates within ±10 %.
        for step in 0..600 {
            if step % 10 == 0 {
                let (a, b, c) = (
                    rng.jitter(150_000, 10.0),
                    rng.jitter(500_000, 10.0),
                    rng.jitter(1_500_000, 10.0),
                );
                for t in [STAGE, SECOND, THIRD] {
                    sim.layers(t, &camera(a, b, c));
                }
            }
            let e = rng.jitter(mean, 10.0);
            sim.run(100 * MS, |_| e);
        }
        let moves = sim.changes_since(settled);
        for (i, c) in moves.iter().enumerate() {
            let within = moves[i + 1..]
                .iter()
                .filter(|d| d.0 - c.0 < Duration::from_secs(10))
                .count();
            assert_eq!(within, 0, "mean {mean}: two changes within 10 s: {moves:?}");
        }
        // In fact the margin between the thresholds keeps it from moving at all.
        assert!(moves.is_empty(), "mean {mean}: {moves:?}");
    }
}

#[test]
fn before_any_estimate_it_starts_conservative() {
    let mut sim = Sim::new(AllocatorConfig::default());
    sim.set_audio(3 * AUDIO_TRACK_RESERVE);
    sim.three_cameras();
    assert_eq!(sim.alloc.estimate(), 500_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    assert_eq!(sim.decision(SECOND), paused(PauseReason::Bandwidth));
    // The first estimate arrives and the climb starts.
    sim.run(Duration::from_secs(8), |_| 4_000_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    assert_eq!(sim.decision(SECOND), Decision::Layer(1));
    assert_eq!(sim.decision(THIRD), Decision::Layer(0));
}

#[test]
fn without_probing_desired_is_the_current_need() {
    let mut sim = Sim::start(400_000, 1);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    sim.add(
        SECOND,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &cam(),
    );
    let probing = sim.alloc.bitrate_target();
    sim.alloc.handle_estimate(sim.now, 400_000, false);
    sim.drain();
    let plain = sim.alloc.bitrate_target();
    assert_eq!(plain.minimum, 150_000 + 40_000);
    assert_eq!(plain.desired, (190_000u64 * 100).div_ceil(90));
    assert!(probing.desired > plain.desired);
    // The probe target is what unpausing the thumbnail needs, margin included.
    let next_need = ((340_000u64 * 100).div_ceil(90) * 120).div_ceil(100);
    assert_eq!(probing.desired, next_need);
}

/// A link that reports 800 kbit/s but collapses as soon as the stage goes up: returns the
/// simulation just after the collapse brought the stage down, and when that was.
fn overshot_once() -> (Sim, Duration) {
    let mut sim = Sim::start(400_000, 1);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    sim.run(Duration::from_secs(3), |_| 800_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(1));
    let up = sim.changes.last().unwrap().0;
    sim.run(Duration::from_secs(1), |_| 400_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    let down = sim.changes.last().unwrap().0;
    assert!(down - up < Duration::from_secs(10));
    (sim, down)
}

fn first_up_after(sim: &Sim, after: Duration) -> Option<Duration> {
    sim.changes
        .iter()
        .find(|c| c.0 > after && c.2 == Decision::Layer(1))
        .map(|c| c.0)
}

#[test]
fn an_upgrade_that_overshot_waits_for_a_better_estimate_and_a_longer_hold() {
    let (mut sim, down) = overshot_once();
    // The same estimate again: the same upgrade is not tried again (two changes each time).
    sim.run(Duration::from_secs(10), |_| 800_000);
    assert_eq!(first_up_after(&sim, down), None, "{:?}", sim.changes);
    // But the estimator is asked to probe for the estimate it needs (else the estimate never
    // gets there, and the step waits for the backoff to reset).
    let target = sim.alloc.bitrate_target();
    assert!(target.desired >= 1_000_000, "{target:?}");
    // A quarter more than the estimate that overshot: tried, after a doubled hold.
    let better = sim.elapsed();
    sim.run(Duration::from_secs(10), |_| 1_050_000);
    let second_up = first_up_after(&sim, down).expect("upgraded on a better estimate");
    assert!(
        second_up - better >= Duration::from_secs(4),
        "hold doubled: {:?}",
        second_up - better
    );
}

#[test]
fn an_upgrade_that_overshot_is_tried_again_once_the_backoff_resets() {
    let (mut sim, down) = overshot_once();
    sim.run(Duration::from_secs(40), |_| 800_000);
    let again = first_up_after(&sim, down).expect("tried again");
    assert!(
        again - down >= Duration::from_secs(30),
        "{:?} after the downgrade",
        again - down
    );
}

#[test]
fn video_paused_by_an_overshoot_resumes_below_the_estimate_that_overshot() {
    let mut sim = Sim::start(400_000, 1);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    sim.add(
        THIRD,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &cam(),
    );
    // Both low at first; the stage goes up on 1 Mbit/s…
    sim.run(Duration::from_secs(4), |_| 1_000_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(1));
    assert_eq!(sim.decision(THIRD), Decision::Layer(0));
    // …and the estimate collapses so far that the thumbnail pauses too.
    sim.run(Duration::from_secs(2), |_| 260_000);
    assert_eq!(sim.decision(THIRD), paused(PauseReason::Bandwidth));
    // Back to 1 Mbit/s (no better than the one that overshot): the thumbnail comes back,
    // the stage stays low.
    sim.run(Duration::from_secs(20), |_| 1_000_000);
    assert_eq!(sim.decision(THIRD), Decision::Layer(0));
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
}

#[test]
fn priority_decides_who_pauses_first() {
    let mut sim = Sim::start(5_000_000, 0);
    let order = [
        (T(10), TrackPriority::Thumbnail),
        (T(11), TrackPriority::ScreenShare),
        (T(12), TrackPriority::Pinned),
        (T(13), TrackPriority::Speaker),
        (T(14), TrackPriority::Stage),
    ];
    for (t, p) in order {
        sim.add(t, p, Tile::shown(320, 180), &cam());
    }
    // Lower the estimate one thumbnail-layer at a time: they pause in reverse priority.
    for (paused_so_far, _) in order.iter().enumerate() {
        let carried = 150_000 * (4 - paused_so_far as u64);
        let e = (carried * 100).div_ceil(90);
        sim.run(Duration::from_secs(2), |_| e);
        for (i, (t, _)) in order.iter().enumerate() {
            let expect = if i <= paused_so_far {
                paused(PauseReason::Bandwidth)
            } else {
                Decision::Layer(0)
            };
            assert_eq!(sim.decision(*t), expect, "track {t:?} at {e}");
        }
    }
    // Raising priority takes bandwidth at once from the least important.
    sim.run(Duration::from_secs(3), |_| 210_000);
    assert_eq!(sim.decision(T(14)), Decision::Layer(0));
    sim.alloc
        .set_priority(sim.now, T(10), TrackPriority::Stage)
        .unwrap();
    sim.drain();
    assert_eq!(sim.decision(T(10)), Decision::Layer(0));
    assert_eq!(
        sim.decision(T(14)),
        paused(PauseReason::Bandwidth),
        "by key"
    );
}

#[test]
fn a_track_without_simulcast_has_one_layer() {
    let mut sim = Sim::start(1_000_000, 1);
    let single = [VideoLayer::new(640, 480, 700_000)];
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(320, 180), &single);
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    sim.run(Duration::from_secs(1), |_| 500_000);
    assert_eq!(sim.decision(STAGE), paused(PauseReason::Bandwidth));
}

#[test]
fn misuse_is_an_error() {
    use plenary_sfu::AllocatorError as E;
    let now = Instant::now();
    let mut a = Allocator::new(AllocatorConfig::default()).unwrap();
    let tile = Tile::shown(320, 180);
    assert_eq!(
        a.add_track(now, STAGE, TrackPriority::Stage, tile, &[]),
        Err(E::LayerCount)
    );
    a.add_track(now, STAGE, TrackPriority::Stage, tile, &cam())
        .unwrap();
    assert_eq!(
        a.add_track(now, STAGE, TrackPriority::Stage, tile, &cam()),
        Err(E::DuplicateTrack)
    );
    assert_eq!(a.set_tile(now, SECOND, tile), Err(E::UnknownTrack));
    assert_eq!(a.remove_track(now, SECOND), Err(E::UnknownTrack));
    let four = [VideoLayer::new(1, 1, 1); 4];
    assert_eq!(a.set_layers(now, STAGE, &four), Err(E::LayerCount));
    a.remove_track(now, STAGE).unwrap();
    assert_eq!(a.track_count(), 0);
    let bad = AllocatorConfig {
        headroom_percent: 100,
        ..AllocatorConfig::default()
    };
    assert_eq!(Allocator::new(bad).unwrap_err(), E::InvalidConfig);
}

#[test]
fn a_publisher_that_stops_simulcast_leaves_one_layer_and_nothing_breaks() {
    let mut sim = Sim::start(10_000_000, 1);
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(1280, 720), &cam());
    sim.run(Duration::from_secs(3), |_| 10_000_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
    // The layer list shrinks to one (a browser that renegotiated without simulcast).
    sim.layers(STAGE, &[VideoLayer::new(640, 360, 600_000)]);
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    sim.run(Duration::from_secs(3), |_| 10_000_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    // And back to three.
    sim.layers(STAGE, &cam());
    sim.run(Duration::from_secs(10), |_| 10_000_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(2));
}

#[test]
fn a_playing_thumbnail_is_not_swapped_for_another_when_its_rate_wobbles() {
    // Room for one 150 kbit/s thumbnail of two (300 kbit/s less 10 % less 40 for audio).
    let mut sim = Sim::start(300_000, 1);
    let low = |bps| [VideoLayer::new(320, 180, bps)];
    sim.add(
        SECOND,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &low(150_000),
    );
    sim.add(
        THIRD,
        TrackPriority::Thumbnail,
        Tile::shown(320, 180),
        &low(150_000),
    );
    sim.run(Duration::from_secs(5), |_| 300_000);
    assert_eq!(sim.decision(SECOND), Decision::Layer(0));
    assert_eq!(sim.decision(THIRD), paused(PauseReason::Bandwidth));
    // A keyframe in the second its rate was measured: the playing one reads 200 kbit/s, still
    // within the budget, but no longer within the upgrade budget the other one fits.
    sim.layers(SECOND, &low(200_000));
    let before = sim.changes.len();
    sim.run(Duration::from_secs(10), |_| 300_000);
    assert_eq!(sim.decision(SECOND), Decision::Layer(0));
    assert_eq!(sim.decision(THIRD), paused(PauseReason::Bandwidth));
    assert_eq!(
        sim.changes.len(),
        before,
        "no swap: {:?}",
        &sim.changes[before..]
    );
}

/// A listener of one low-profile camera (142 kbit/s) and `audio_tracks` microphones, settled
/// at 614 kbit/s, its last loss report `loss`.
fn one_low_camera(audio_tracks: u64, loss: f64) -> Sim {
    let mut sim = Sim::start(614_000, audio_tracks);
    let low = [VideoLayer::new(320, 180, 142_000)];
    sim.add(STAGE, TrackPriority::Stage, Tile::shown(640, 360), &low);
    sim.run(Duration::from_secs(3), |_| 614_000);
    assert_eq!(sim.decision(STAGE), Decision::Layer(0));
    let now = sim.now;
    sim.alloc.handle_loss(now, loss);
    sim.drain();
    sim
}

/// A listener of one low-profile camera, sent exactly what it needs: one overuse signal sets
/// str0m's estimate to 0.85 × the acknowledged rate, just below what is sent, and it climbs
/// back within a second. That must not pause the camera (in the 300-listener general meeting
/// every such delay spike paused it for ~5 s: 2.5 s frozen per viewer in 30 s). A decrease
/// that stays below the need brings it down after the hold; a collapse, at once.
#[test]
fn one_decrease_of_the_estimate_just_below_the_need_is_waited_out() {
    let start = |audio_tracks| one_low_camera(audio_tracks, 0.0);
    // Sent: 142k video + 80k audio = 222k; 0.85 × 243k acknowledged ≈ 207k.
    let mut sim = start(2);
    let dip = sim.elapsed();
    sim.run(600 * MS, |_| 207_000);
    sim.run(Duration::from_secs(5), |at| {
        228_000 + (at - dip).as_millis() as u64 * 10
    });
    assert!(
        sim.changes_since(dip).is_empty(),
        "{:?}",
        sim.changes_since(dip)
    );

    // The same decrease, staying: down after the hold, not before.
    let mut sim = start(2);
    let dip = sim.elapsed();
    sim.run(Duration::from_secs(3), |_| 207_000);
    let downs = sim.changes_since(dip);
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert_eq!(downs[0].2, paused(PauseReason::Bandwidth));
    let after = downs[0].0 - dip;
    assert!(
        after >= 900 * MS && after <= 1_100 * MS,
        "paused {after:?} after the dip"
    );

    // A collapse (a second decrease: 0.72 × what is sent): at once.
    let mut sim = start(2);
    let dip = sim.elapsed();
    sim.run(200 * MS, |_| 160_000);
    let downs = sim.changes_since(dip);
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert!(downs[0].0 - dip <= 100 * MS, "{downs:?}");
}

/// On a lossy link (a policer: no delay, so the estimate floats above what gets through)
/// the headroom is for retransmissions: an allocation within it comes down after the hold,
/// one above the estimate less audio at once. Without loss, the same estimate moves nothing.
#[test]
fn with_loss_the_headroom_is_kept() {
    let start = |loss: f64| one_low_camera(2, loss);
    // 235k: video 142k + audio 80k = 222k fits, but not with the 10 % headroom (211k).
    for (loss, pauses) in [(0.0, false), (0.005, false), (0.03, true)] {
        let mut sim = start(loss);
        let at = sim.elapsed();
        sim.run(Duration::from_secs(3), |_| 235_000);
        let downs = sim.changes_since(at);
        assert_eq!(!downs.is_empty(), pauses, "loss {loss}: {downs:?}");
        if pauses {
            let after = downs[0].0 - at;
            assert!(after >= 900 * MS && after <= 1_100 * MS, "after {after:?}");
        }
    }
    // Short of the estimate less audio on a lossy link: at once.
    let mut sim = start(0.03);
    let at = sim.elapsed();
    sim.run(200 * MS, |_| 207_000);
    let downs = sim.changes_since(at);
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert!(downs[0].0 - at <= 100 * MS, "{downs:?}");
}
