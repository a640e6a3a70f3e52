//! One room's loudest-speaker selection driven packet by packet in simulated time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use plenary_sfu::{SpeakerEvent as E, Speakers, SpeakersConfig, TrackKey as T};

const MS: Duration = Duration::from_millis(1);
const HOLD: Duration = Duration::from_secs(2);

/// What a microphone sends at some moment: its RFC 6464 level and voice-activity flag.
type Voice = (u8, Option<bool>);

const SILENT: Voice = (127, Some(false));

/// A deterministic pseudo-random sequence.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Talking around `level` dBov (± 6), with voice activity on.
fn talking(rng: &mut Lcg, level: u8) -> Voice {
    (level - 6 + rng.below(13) as u8, Some(true))
}

/// Room noise a voice detector recognises as such, or a sender without one.
fn background(rng: &mut Lcg, track: T) -> Voice {
    match track.0 % 3 {
        0 => SILENT,
        1 => (75 + rng.below(15) as u8, Some(false)),
        _ => (72 + rng.below(20) as u8, None),
    }
}

struct Sim {
    sp: Speakers,
    t0: Instant,
    now: Instant,
    tracks: Vec<T>,
    forwarded: BTreeSet<T>,
    always: BTreeSet<T>,
    dominant: Option<T>,
    log: Vec<(Duration, E)>,
    rng: Lcg,
}

impl Sim {
    fn new(config: SpeakersConfig, n: u64) -> Sim {
        let mut sp = Speakers::new(config).unwrap();
        let tracks: Vec<T> = (1..=n).map(T).collect();
        for t in &tracks {
            sp.add_track(*t).unwrap();
        }
        let t0 = Instant::now();
        Sim {
            sp,
            t0,
            now: t0,
            tracks,
            forwarded: BTreeSet::new(),
            always: BTreeSet::new(),
            dominant: None,
            log: Vec::new(),
            rng: Lcg(11),
        }
    }

    fn at(&self) -> Duration {
        self.now - self.t0
    }

    fn drain(&mut self) {
        while let Some(e) = self.sp.poll_event() {
            match e {
                E::Forward(t) => assert!(self.forwarded.insert(t), "{t:?} forwarded twice"),
                E::Stop(t) => {
                    assert!(
                        self.forwarded.remove(&t),
                        "{t:?} stopped while not forwarded"
                    );
                    assert!(!self.always.contains(&t), "{t:?} is always forwarded");
                }
                E::DominantSpeaker(t) => {
                    assert_ne!(self.dominant, Some(t));
                    self.dominant = Some(t);
                }
            }
            self.log.push((self.at(), e));
        }
        let loud = self.forwarded.difference(&self.always).count();
        assert!(
            loud <= 3,
            "at {:?}: {loud} forwarded besides the floor",
            self.at()
        );
        for t in &self.always {
            assert!(self.forwarded.contains(t), "{t:?} always forwarded");
        }
        let selected: BTreeSet<T> = self.sp.selected().iter().copied().collect();
        let expected: BTreeSet<T> = self.forwarded.difference(&self.always).copied().collect();
        assert_eq!(selected, expected, "events match the state");
    }

    fn set_always(&mut self, t: T, always: bool) {
        if always {
            self.always.insert(t);
        } else {
            self.always.remove(&t);
        }
        self.sp.set_always_forwarded(self.now, t, always).unwrap();
        self.drain();
    }

    /// Runs for `d`: every microphone sends a packet every 20 ms (each at its own phase) with
    /// the level `voice` gives it, and timeouts are served in between.
    fn run(&mut self, d: Duration, mut voice: impl FnMut(&mut Lcg, Duration, T) -> Voice) {
        let end = self.now + d;
        while self.now < end {
            self.now += 5 * MS;
            while let Some(at) = self.sp.poll_timeout() {
                if at > self.now {
                    break;
                }
                self.sp.handle_timeout(at.max(self.now - 5 * MS));
                self.drain();
            }
            let at = self.at();
            let ms = at.as_millis() as u64;
            for i in 0..self.tracks.len() {
                let t = self.tracks[i];
                if (ms + 5 * t.0).is_multiple_of(20) {
                    let (level, vad) = voice(&mut self.rng, at, t);
                    self.sp.handle_level(self.now, t, level, vad);
                }
            }
            self.sp.handle_timeout(self.now);
            self.drain();
        }
    }

    fn first(&self, after: Duration, pred: impl Fn(&E) -> bool) -> Option<Duration> {
        self.log
            .iter()
            .find(|(at, e)| *at >= after && pred(e))
            .map(|(at, _)| *at)
    }
}

#[test]
fn talkers_taking_turns_are_selected_quickly_and_kept_for_the_hold() {
    let mut sim = Sim::new(SpeakersConfig::default(), 20);
    // Eight turns of 3 s, back to back from 1 s; everyone else makes background noise.
    let order = [3, 7, 11, 15, 19, 2, 6, 10].map(T);
    let turn = |at: Duration| -> Option<T> {
        let ms = at.as_millis() as u64;
        (ms >= 1_000).then(|| order.get(((ms - 1_000) / 3_000) as usize).copied())?
    };
    sim.run(Duration::from_secs(28), |rng, at, t| {
        if turn(at) == Some(t) {
            talking(rng, 28 + (t.0 % 3) as u8 * 6)
        } else {
            background(rng, t)
        }
    });
    for (n, t) in order.iter().enumerate() {
        let start = Duration::from_millis(1_000 + 3_000 * n as u64);
        let end = start + Duration::from_secs(3);
        let on = sim.first(start, |e| *e == E::Forward(*t)).unwrap();
        assert!(
            on - start <= 300 * MS,
            "{t:?} selected {:?} late",
            on - start
        );
        assert!(
            !sim.log
                .iter()
                .any(|(at, e)| *at < start && *e == E::Forward(*t)),
            "{t:?} forwarded before speaking"
        );
        let off = sim.first(on, |e| *e == E::Stop(*t));
        if let Some(off) = off {
            // The hold counts from the last loud packet, at most 20 ms before the end.
            assert!(
                off + 20 * MS >= end + HOLD,
                "{t:?} stopped {:?} after the end",
                off - end
            );
            assert!(off <= end + HOLD + 500 * MS, "{t:?} kept too long");
        } else {
            assert!(end + HOLD > sim.at(), "{t:?} never stopped");
        }
    }
    // Nobody making only background noise was ever forwarded.
    let forwarded: BTreeSet<T> = sim
        .log
        .iter()
        .filter_map(|(_, e)| match e {
            E::Forward(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(forwarded, order.iter().copied().collect());
}

#[test]
fn a_crowd_gets_the_three_loudest_and_the_floor_holder_always() {
    let mut sim = Sim::new(SpeakersConfig::default(), 20);
    let floor = T(20);
    sim.set_always(floor, true);
    assert!(sim.forwarded.contains(&floor));
    // Eight people talk at once, the lower keys louder; the floor holder is silent.
    sim.run(Duration::from_secs(5), |rng, _, t| {
        if (1..=8).contains(&t.0) {
            talking(rng, 12 + 5 * t.0 as u8)
        } else {
            background(rng, t)
        }
    });
    let expect: BTreeSet<T> = [T(1), T(2), T(3), floor].into_iter().collect();
    assert_eq!(sim.forwarded, expect);
    assert_eq!(sim.dominant, Some(T(1)));
    // The floor holder speaks too: still not counted in the three.
    sim.run(Duration::from_secs(3), |rng, _, t| {
        if (1..=8).contains(&t.0) {
            talking(rng, 12 + 5 * t.0 as u8)
        } else if t == floor {
            talking(rng, 20)
        } else {
            background(rng, t)
        }
    });
    assert_eq!(sim.forwarded, expect);
    // The floor moves on while it is quiet: it stops at once.
    sim.run(Duration::from_secs(3), |rng, _, t| background(rng, t));
    sim.set_always(floor, false);
    assert!(!sim.forwarded.contains(&floor));
}

#[test]
fn a_newcomer_needs_to_be_clearly_louder() {
    let mut sim = Sim::new(SpeakersConfig::default(), 6);
    let steady = |t: T| 30 + (t.0 % 2) as u8; // 30 or 31 dBov
                                              // Three talk steadily.
    sim.run(Duration::from_secs(2), |_, _, t| {
        if t.0 <= 3 {
            (steady(t), Some(true))
        } else {
            SILENT
        }
    });
    let three: BTreeSet<T> = [T(1), T(2), T(3)].into_iter().collect();
    assert_eq!(sim.forwarded, three);
    // A fourth a little louder does not get in.
    sim.run(Duration::from_secs(3), |_, _, t| match t.0 {
        1..=3 => (steady(t), Some(true)),
        4 => (27, Some(true)),
        _ => SILENT,
    });
    assert_eq!(sim.forwarded, three);
    // A fifth clearly louder does, in place of the quietest (an odd key: 31 dBov).
    let before = sim.at();
    sim.run(Duration::from_secs(1), |_, _, t| match t.0 {
        1..=3 => (steady(t), Some(true)),
        4 => (27, Some(true)),
        5 => (15, Some(true)),
        _ => SILENT,
    });
    // Its score must build up over the window to beat a talking track by the margin.
    let on = sim.first(before, |e| *e == E::Forward(T(5))).unwrap();
    assert!(on - before <= 500 * MS, "{:?}", on - before);
    assert!(sim.forwarded.contains(&T(5)));
    assert_eq!(sim.forwarded.len(), 3);
    assert!(!sim.forwarded.contains(&T(1)) || !sim.forwarded.contains(&T(3)));
}

#[test]
fn silence_and_no_voice_count_as_quiet() {
    let mut sim = Sim::new(SpeakersConfig::default(), 4);
    sim.run(Duration::from_secs(3), |_, _, t| match t.0 {
        1 => (127, None),       // digital silence
        2 => (20, Some(false)), // loud, but the sender's VAD says it is not voice
        3 => (20, None),        // loud, no VAD: counts
        _ => (85, None),        // quiet room
    });
    assert_eq!(sim.forwarded, [T(3)].into_iter().collect());
    assert_eq!(sim.dominant, Some(T(3)));
}

#[test]
fn two_people_alternating_every_200_ms_do_not_make_the_dominant_speaker_flap() {
    for start in [1_000, 1_050, 1_130] {
        let mut sim = Sim::new(SpeakersConfig::default(), 5);
        sim.run(Duration::from_secs(20), |rng, at, t| {
            let ms = at.as_millis() as u64;
            if ms < start {
                return SILENT;
            }
            let a_turn = ((ms - start) / 200).is_multiple_of(2);
            match t.0 {
                1 if a_turn => talking(rng, 30),
                2 if !a_turn => talking(rng, 30),
                _ => SILENT,
            }
        });
        let changes: Vec<_> = sim
            .log
            .iter()
            .filter(|(_, e)| matches!(e, E::DominantSpeaker(_)))
            .collect();
        assert_eq!(changes.len(), 1, "start {start}: {changes:?}");
        // Both stay forwarded throughout.
        assert!(sim.forwarded.contains(&T(1)) && sim.forwarded.contains(&T(2)));
    }
}

#[test]
fn the_dominant_speaker_follows_a_real_change_of_speaker() {
    let mut sim = Sim::new(SpeakersConfig::default(), 5);
    sim.run(Duration::from_secs(10), |rng, at, t| {
        match (t.0, at.as_secs()) {
            (1, 0..5) => talking(rng, 30),
            (2, 5..) => talking(rng, 30),
            _ => SILENT,
        }
    });
    let a = sim.first(Duration::ZERO, |e| *e == E::DominantSpeaker(T(1)));
    assert!(a.unwrap() <= 300 * MS);
    let b = sim
        .first(Duration::ZERO, |e| *e == E::DominantSpeaker(T(2)))
        .unwrap();
    let after = b - Duration::from_secs(5);
    assert!(
        after >= Duration::from_secs(1) && after <= 1_600 * MS,
        "switched {after:?} after the new speaker started"
    );
}

#[test]
fn removing_a_selected_track_frees_its_slot() {
    let mut sim = Sim::new(SpeakersConfig::default(), 5);
    let voice = |t: T| match t.0 {
        1..=3 => (25, Some(true)),
        4 => (28, Some(true)), // not clearly louder than the three: waits
        _ => SILENT,
    };
    sim.run(Duration::from_secs(3), |_, _, t| voice(t));
    assert_eq!(sim.sp.selected(), &[T(1), T(2), T(3)]);
    assert_eq!(sim.dominant, Some(T(1)));
    assert!(!sim.forwarded.contains(&T(4)));

    // The dominant, selected track goes away: no Stop for it, its slot goes to the next.
    sim.sp.remove_track(T(1)).unwrap();
    sim.forwarded.remove(&T(1));
    sim.tracks.retain(|t| *t != T(1));
    assert!(!sim.sp.is_forwarded(T(1)));
    assert_eq!(sim.sp.dominant(), None);
    let removed = sim.at();
    sim.run(Duration::from_millis(300), |_, _, t| voice(t));
    assert!(!sim.log.iter().any(|(_, e)| *e == E::Stop(T(1))));
    let on = sim.first(removed, |e| *e == E::Forward(T(4))).unwrap();
    assert!(on - removed <= 100 * MS);
    assert_eq!(sim.dominant, Some(T(2)));
    // Unknown tracks are ignored on the hot path and refused elsewhere.
    sim.sp.handle_level(sim.now, T(1), 0, Some(true));
    assert_eq!(
        sim.sp.remove_track(T(1)),
        Err(plenary_sfu::SpeakersError::UnknownTrack)
    );
    assert_eq!(
        sim.sp.add_track(T(2)),
        Err(plenary_sfu::SpeakersError::DuplicateTrack)
    );
}

/// Four people talk at once, equally loud, each in bursts (a quarter second of speech, a
/// quarter second of pause, each at its own phase — how Chromium's fake microphones beep
/// too). Three slots: the three chosen first keep them; the fourth is not swapped in during
/// every pause of theirs (that chops everyone's words, and was seen every 200–300 ms in a
/// four-microphone browser room).
#[test]
fn equally_loud_talkers_pausing_between_words_keep_their_slots() {
    for offset in [0u64, 40, 95] {
        let mut sim = Sim::new(SpeakersConfig::default(), 4);
        sim.run(Duration::from_secs(12), |rng, at, t| {
            let phase = (at.as_millis() as u64 + offset + 125 * t.0) % 500;
            if phase < 250 {
                talking(rng, 30)
            } else {
                SILENT
            }
        });
        let changes = sim
            .log
            .iter()
            .filter(|(at, e)| *at >= Duration::from_secs(2) && !matches!(e, E::DominantSpeaker(_)))
            .count();
        assert_eq!(
            changes,
            0,
            "offset {offset}: {:?}",
            &sim.log[..sim.log.len().min(12)]
        );
        assert_eq!(sim.sp.selected().len(), 3);
    }
}

/// A selected talker who stops: an equally loud newcomer takes the slot soon after (the
/// grace for pauses between words), well before the 2 s hold runs out.
#[test]
fn an_equally_loud_newcomer_gets_the_slot_of_one_who_stopped() {
    let mut sim = Sim::new(SpeakersConfig::default(), 4);
    sim.run(Duration::from_secs(3), |rng, _, t| {
        if t.0 <= 3 {
            talking(rng, 30)
        } else {
            SILENT
        }
    });
    let three: BTreeSet<T> = [T(1), T(2), T(3)].into_iter().collect();
    assert_eq!(sim.forwarded, three);
    let stop = sim.at();
    sim.run(Duration::from_secs(3), |rng, _, t| match t.0 {
        1 | 2 | 4 => talking(rng, 30),
        _ => SILENT,
    });
    let on = sim.first(stop, |e| *e == E::Forward(T(4))).unwrap() - stop;
    assert!(
        on >= 400 * MS && on <= 1_200 * MS,
        "the newcomer came in {on:?} after the third stopped"
    );
    assert!(sim.log.iter().any(|(_, e)| *e == E::Stop(T(3))));
}
