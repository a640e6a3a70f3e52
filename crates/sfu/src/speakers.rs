//! Loudest-speaker selection for one room: which microphones are forwarded, and who is the
//! dominant speaker.
//!
//! A general meeting has hundreds of microphones and a few people talking. One [`Speakers`]
//! per room picks the K loudest (default 3) plus the tracks that are always forwarded (the
//! floor holder's microphone), so each listener receives a handful of audio streams, not
//! hundreds. It never sees a payload:
//!
//! - for every audio packet the media driver calls [`Speakers::handle_level`] with the RFC 6464
//!   `ssrc-audio-level` header extension (str0m's `ExtensionValues::audio_level`, which is
//!   `-level`, so pass `audio_level.unsigned_abs()`; `voice_activity` is the extension's V bit:
//!   pass `None` when the sender's SDP says `vad=off`, since such senders leave it at 0).
//!   This is the hot path: a hash lookup and two additions, no allocation;
//! - audio tracks come and go with [`Speakers::add_track`] / [`Speakers::remove_track`];
//!   [`Speakers::set_always_forwarded`] marks the floor holder's microphone;
//! - the driver calls [`Speakers::handle_timeout`] at [`Speakers::poll_timeout`] (every
//!   [`SpeakersConfig::tick`], 100 ms by default), where all decisions are taken,
//!
//! and drains [`SpeakerEvent`]s with [`Speakers::poll_event`]: `Forward(track)` →
//! `Room::set_paused(subscriber, track, false)` for every subscriber of the track, `Stop(track)`
//! → `Room::set_paused(subscriber, track, true)` (a subscriber that joins later asks
//! [`Speakers::is_forwarded`] when its subscription is bound); `DominantSpeaker(track)` → tell
//! the clients (active-speaker highlight) and give that speaker's camera
//! [`crate::TrackPriority::Speaker`] in every subscriber's [`crate::Allocator`].
//!
//! # How it decides
//! Each packet counts as `quiet_dbov - level` (0 for anything at or below
//! [`SpeakersConfig::quiet_dbov`], for digital silence (127) and when the sender's voice
//! activity detection says "no voice"). Per track, packets are averaged per tick in a ring of
//! buckets covering [`SpeakersConfig::window`] (400 ms), and the track's score is the mean of
//! those buckets, so a tick without packets (muted, DTX) counts as silence. A track whose
//! score reaches [`SpeakersConfig::activity_threshold`] is active. On each tick:
//!
//! 1. a selected track silent for [`SpeakersConfig::hold`] (2 s) since its last loud packet
//!    stops, so the ends of words and short pauses are not clipped;
//! 2. active tracks not selected, loudest first, take a free slot, or replace the quietest
//!    selected track when louder than it by [`SpeakersConfig::margin`]. A selected track is
//!    defended by its *standing*: its score, or while the score falls, a value falling from
//!    its peak by the margin over [`SpeakersConfig::pause_grace`] (500 ms). Pauses between
//!    words do not let an equally loud newcomer in (with four people talking that swapped the
//!    slots every few hundred milliseconds and chopped everyone's words); one who stopped
//!    gives way to an equally loud newcomer after about the grace, long before the hold;
//! 3. the loudest active track becomes the dominant speaker when there is none, or when it has
//!    led the dominant one by the margin for [`SpeakersConfig::dominant_hold`] (1 s) without a
//!    break: two people talking over each other do not make it flap.
//!
//! Deterministic (ties go to the lower track key), no clock, no I/O. Events are queued until
//! drained: drain them after every call.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::TrackKey;

/// Most buckets a track's window may have.
pub const MAX_BUCKETS: usize = 16;

/// What the driver must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpeakerEvent {
    /// Forward this audio track to its subscribers.
    Forward(TrackKey),
    /// Stop forwarding this audio track.
    Stop(TrackKey),
    /// This track's speaker is now the dominant speaker.
    DominantSpeaker(TrackKey),
}

/// Misuse of the selector's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeakersError {
    /// A configuration value is out of range (see [`SpeakersConfig::validate`]).
    InvalidConfig,
    /// The track is already known.
    DuplicateTrack,
    /// No such track.
    UnknownTrack,
}

/// Selector tuning.
#[derive(Debug, Clone)]
pub struct SpeakersConfig {
    /// How many tracks are forwarded for their loudness (K), besides the always-forwarded.
    pub max_speakers: usize,
    /// How often decisions are taken; also the length of one bucket of the window.
    pub tick: Duration,
    /// How much recent audio a score covers.
    pub window: Duration,
    /// Levels at or below this many dBov (RFC 6464: 0 loudest, 127 silence) count as silence.
    pub quiet_dbov: u8,
    /// Score (mean of `quiet_dbov - level` over the window) from which a track is active;
    /// a packet this loud also renews the track's hold.
    pub activity_threshold: u32,
    /// How long a selected track stays after its last loud packet.
    pub hold: Duration,
    /// How much higher a score must be to replace a selected track or to challenge the
    /// dominant speaker.
    pub margin: u32,
    /// How long a challenger must lead the dominant speaker, without a break, to replace it.
    pub dominant_hold: Duration,
    /// How long a selected track may pause before an equally loud newcomer may take its
    /// slot: a selected track's standing falls from its score by `margin` over this time.
    pub pause_grace: Duration,
}

impl Default for SpeakersConfig {
    fn default() -> Self {
        SpeakersConfig {
            max_speakers: 3,
            tick: Duration::from_millis(100),
            window: Duration::from_millis(400),
            quiet_dbov: 70,
            activity_threshold: 10,
            hold: Duration::from_secs(2),
            margin: 8,
            dominant_hold: Duration::from_secs(1),
            pause_grace: Duration::from_millis(500),
        }
    }
}

impl SpeakersConfig {
    /// Checks that K and the threshold are at least 1, the tick is not zero, the window
    /// holds between 1 and [`MAX_BUCKETS`] ticks and `quiet_dbov` is at most 127.
    pub fn validate(&self) -> Result<(), SpeakersError> {
        if self.max_speakers == 0
            || self.activity_threshold == 0
            || self.tick.is_zero()
            || self.window < self.tick
            || self.buckets() > MAX_BUCKETS
            || self.quiet_dbov > 127
        {
            return Err(SpeakersError::InvalidConfig);
        }
        Ok(())
    }

    /// How much a track's standing falls per tick once its score is below it (at least 1).
    fn standing_decay(&self) -> u32 {
        let grace = self.pause_grace.as_micros().max(1);
        let per_tick = self.margin as u128 * self.tick.as_micros() / grace;
        per_tick.clamp(1, u32::MAX as u128) as u32
    }

    fn buckets(&self) -> usize {
        let tick = self.tick.as_micros().max(1);
        self.window.as_micros().div_ceil(tick).max(1) as usize
    }
}

/// Opus payload size from which a packet without a level is taken for speech (20 ms at
/// 16 kbit/s; silence and DTX frames are a few bytes).
pub const SPEECH_BYTES: usize = 40;
/// The level assumed for such a packet: clearly speech, but quieter than most measured
/// voices, so a sender that measures its levels wins a tie.
pub const GUESSED_SPEECH_DBOV: u8 = 40;

/// The level of an audio packet whose sender sends no `ssrc-audio-level` extension (some
/// non-browser clients, the load tester): guessed from its size, so such a speaker is still
/// heard when it talks and dropped when it is silent.
pub fn level_from_size(payload_len: usize) -> u8 {
    if payload_len >= SPEECH_BYTES {
        GUESSED_SPEECH_DBOV
    } else {
        127
    }
}

/// How loud one packet counts: `quiet_dbov - level_dbov`, or 0 when at or below the quiet
/// level, silent (127) or marked "no voice".
pub fn loudness(level_dbov: u8, voice_activity: Option<bool>, quiet_dbov: u8) -> u32 {
    if voice_activity == Some(false) {
        return 0;
    }
    quiet_dbov.saturating_sub(level_dbov.min(127)) as u32
}

/// The packets of one tick: their summed loudness and how many there were.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    sum: u32,
    count: u32,
}

impl Bucket {
    fn mean(&self) -> u32 {
        self.sum.checked_div(self.count).unwrap_or(0)
    }
}

/// A track's score: the mean of its buckets' mean loudness (an empty bucket is silence).
fn score(buckets: &[Bucket]) -> u32 {
    let total: u32 = buckets.iter().map(Bucket::mean).sum();
    total / buckets.len().max(1) as u32
}

#[derive(Debug, Clone)]
struct Mic {
    key: TrackKey,
    buckets: [Bucket; MAX_BUCKETS],
    /// Score at the last tick.
    score: u32,
    /// The score, or when it fell, a value falling from its last peak by
    /// [`SpeakersConfig::standing_decay`] per tick: what a selected track is defended with.
    standing: u32,
    /// When the last packet at or above the activity threshold arrived.
    last_voice: Option<Instant>,
    selected: bool,
    always: bool,
}

/// One room's loudest-speaker selector (see the [module](self) documentation).
#[derive(Debug)]
pub struct Speakers {
    config: SpeakersConfig,
    buckets: usize,
    /// The bucket packets go into now.
    cursor: usize,
    mics: Vec<Mic>,
    index: HashMap<TrackKey, usize>,
    /// Tracks forwarded for their loudness (not the always-forwarded), at most K.
    selected: Vec<TrackKey>,
    dominant: Option<TrackKey>,
    /// The track leading the dominant speaker, and since when.
    challenger: Option<(TrackKey, Instant)>,
    next_tick: Option<Instant>,
    events: VecDeque<SpeakerEvent>,
    /// Scratch for the candidates of one tick.
    candidates: Vec<usize>,
}

impl Speakers {
    /// A selector with no tracks.
    pub fn new(config: SpeakersConfig) -> Result<Speakers, SpeakersError> {
        config.validate()?;
        Ok(Speakers {
            buckets: config.buckets(),
            selected: Vec::with_capacity(config.max_speakers),
            config,
            cursor: 0,
            mics: Vec::new(),
            index: HashMap::new(),
            dominant: None,
            challenger: None,
            next_tick: None,
            events: VecDeque::new(),
            candidates: Vec::new(),
        })
    }

    /// An audio track joins the room. It is not forwarded until it is loud (or always
    /// forwarded).
    pub fn add_track(&mut self, track: TrackKey) -> Result<(), SpeakersError> {
        if self.index.contains_key(&track) {
            return Err(SpeakersError::DuplicateTrack);
        }
        self.index.insert(track, self.mics.len());
        self.mics.push(Mic {
            key: track,
            buckets: [Bucket::default(); MAX_BUCKETS],
            score: 0,
            standing: 0,
            last_voice: None,
            selected: false,
            always: false,
        });
        Ok(())
    }

    /// An audio track leaves. No `Stop` is sent for it (the driver removes its subscriptions);
    /// its slot is free for the next tick, and if it was the dominant speaker there is none
    /// until the next active track.
    pub fn remove_track(&mut self, track: TrackKey) -> Result<(), SpeakersError> {
        let i = self
            .index
            .remove(&track)
            .ok_or(SpeakersError::UnknownTrack)?;
        self.mics.swap_remove(i);
        if let Some(moved) = self.mics.get(i) {
            self.index.insert(moved.key, i);
        }
        self.selected.retain(|k| *k != track);
        if self.dominant == Some(track) {
            self.dominant = None;
        }
        if self.challenger.is_some_and(|(c, _)| c == track) {
            self.challenger = None;
        }
        Ok(())
    }

    /// Marks `track` as always forwarded (the floor holder's microphone) or not. It does not
    /// count towards K. When it stops being always forwarded it stays if it spoke within the
    /// hold and a slot is free, else it stops.
    pub fn set_always_forwarded(
        &mut self,
        now: Instant,
        track: TrackKey,
        always: bool,
    ) -> Result<(), SpeakersError> {
        let i = *self.index.get(&track).ok_or(SpeakersError::UnknownTrack)?;
        let held = self.is_held(i, now);
        let m = &mut self.mics[i];
        if m.always == always {
            return Ok(());
        }
        m.always = always;
        if always {
            if m.selected {
                m.selected = false;
                self.selected.retain(|k| *k != track);
            } else {
                self.events.push_back(SpeakerEvent::Forward(track));
            }
        } else if held && self.selected.len() < self.config.max_speakers {
            m.selected = true;
            self.selected.push(track);
        } else {
            self.events.push_back(SpeakerEvent::Stop(track));
        }
        Ok(())
    }

    /// One audio packet of `track` with its RFC 6464 level (0 loudest, 127 silence) and voice
    /// activity flag. Unknown tracks are ignored. O(1), no allocation.
    pub fn handle_level(
        &mut self,
        now: Instant,
        track: TrackKey,
        level_dbov: u8,
        voice_activity: Option<bool>,
    ) {
        let Some(&i) = self.index.get(&track) else {
            return;
        };
        let loud = loudness(level_dbov, voice_activity, self.config.quiet_dbov);
        let m = &mut self.mics[i];
        let b = &mut m.buckets[self.cursor];
        b.sum = b.sum.saturating_add(loud);
        b.count = b.count.saturating_add(1);
        if loud >= self.config.activity_threshold {
            m.last_voice = Some(now);
        }
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.tick);
        }
    }

    /// Time passed: on each tick, scores are updated and the selection and the dominant
    /// speaker decided.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.next_tick else {
            self.next_tick = Some(now + self.config.tick);
            return;
        };
        if now < due {
            return;
        }
        self.tick(now);
        // After a long gap (the driver was late), tick from now on rather than catching up.
        let next = due + self.config.tick;
        self.next_tick = Some(if next <= now {
            now + self.config.tick
        } else {
            next
        });
    }

    /// When [`Speakers::handle_timeout`] next has work (`None` until the first call that
    /// carries the time).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<SpeakerEvent> {
        self.events.pop_front()
    }

    /// Whether `track` is forwarded now (selected or always forwarded).
    pub fn is_forwarded(&self, track: TrackKey) -> bool {
        self.index
            .get(&track)
            .is_some_and(|&i| self.mics[i].selected || self.mics[i].always)
    }

    /// The tracks forwarded for their loudness (at most K), not counting the always-forwarded.
    pub fn selected(&self) -> &[TrackKey] {
        &self.selected
    }

    /// The dominant speaker's track, if any.
    pub fn dominant(&self) -> Option<TrackKey> {
        self.dominant
    }

    /// `track`'s score at the last tick.
    pub fn score(&self, track: TrackKey) -> Option<u32> {
        self.index.get(&track).map(|&i| self.mics[i].score)
    }

    /// Number of audio tracks.
    pub fn track_count(&self) -> usize {
        self.mics.len()
    }

    fn is_held(&self, i: usize, now: Instant) -> bool {
        self.mics[i]
            .last_voice
            .is_some_and(|v| now.saturating_duration_since(v) < self.config.hold)
    }

    fn is_active(&self, i: usize) -> bool {
        self.mics[i].score >= self.config.activity_threshold
    }

    fn tick(&mut self, now: Instant) {
        self.update_scores();
        self.expire(now);
        self.fill_slots();
        self.update_dominant(now);
    }

    /// Scores from the window, then the oldest bucket is cleared for the next tick.
    fn update_scores(&mut self) {
        let n = self.buckets;
        let next = (self.cursor + 1) % n;
        let decay = self.config.standing_decay();
        for m in &mut self.mics {
            m.score = score(&m.buckets[..n]);
            m.standing = m.score.max(m.standing.saturating_sub(decay));
            m.buckets[next] = Bucket::default();
        }
        self.cursor = next;
    }

    /// Selected tracks silent for the hold stop.
    fn expire(&mut self, now: Instant) {
        let mut k = 0;
        while k < self.selected.len() {
            let i = self.index[&self.selected[k]];
            if self.is_held(i, now) || self.is_active(i) {
                k += 1;
                continue;
            }
            let track = self.selected.remove(k);
            self.mics[i].selected = false;
            self.events.push_back(SpeakerEvent::Stop(track));
        }
    }

    /// Active tracks take free slots, loudest first, or replace the quietest selected track
    /// when louder by the margin.
    fn fill_slots(&mut self) {
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        candidates.extend(
            (0..self.mics.len())
                .filter(|&i| self.is_active(i) && !self.mics[i].selected && !self.mics[i].always),
        );
        let mics = &self.mics;
        candidates.sort_unstable_by_key(|&i| (std::cmp::Reverse(mics[i].score), mics[i].key));
        for &c in &candidates {
            let track = self.mics[c].key;
            if self.selected.len() < self.config.max_speakers {
                self.mics[c].selected = true;
                self.selected.push(track);
                self.events.push_back(SpeakerEvent::Forward(track));
                continue;
            }
            let Some(slot) = self.quietest_selected() else {
                break;
            };
            let w = self.index[&self.selected[slot]];
            if self.mics[c].score < self.mics[w].standing.saturating_add(self.config.margin) {
                break; // Candidates are loudest first: the rest are not louder either.
            }
            let out = self.selected[slot];
            self.mics[w].selected = false;
            self.mics[c].selected = true;
            self.selected[slot] = track;
            self.events.push_back(SpeakerEvent::Stop(out));
            self.events.push_back(SpeakerEvent::Forward(track));
        }
        self.candidates = candidates;
    }

    /// The selected track to give up first: lowest standing, then longest silent, then
    /// highest key.
    fn quietest_selected(&self) -> Option<usize> {
        (0..self.selected.len()).min_by_key(|&s| {
            let m = &self.mics[self.index[&self.selected[s]]];
            (m.standing, m.last_voice, std::cmp::Reverse(m.key))
        })
    }

    fn update_dominant(&mut self, now: Instant) {
        let top = (0..self.mics.len())
            .filter(|&i| self.is_active(i))
            .min_by_key(|&i| (std::cmp::Reverse(self.mics[i].score), self.mics[i].key));
        let Some(top) = top else {
            self.challenger = None;
            return;
        };
        let top_key = self.mics[top].key;
        let Some(dominant) = self.dominant else {
            self.set_dominant(top_key);
            return;
        };
        let dominant_score = self.index.get(&dominant).map_or(0, |&i| self.mics[i].score);
        if top_key == dominant
            || self.mics[top].score < dominant_score.saturating_add(self.config.margin)
        {
            self.challenger = None;
            return;
        }
        match self.challenger {
            Some((c, since)) if c == top_key => {
                if now.saturating_duration_since(since) >= self.config.dominant_hold {
                    self.set_dominant(top_key);
                }
            }
            _ => self.challenger = Some((top_key, now)),
        }
    }

    fn set_dominant(&mut self, track: TrackKey) {
        self.dominant = Some(track);
        self.challenger = None;
        self.events.push_back(SpeakerEvent::DominantSpeaker(track));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loudness_counts_silence_and_no_voice_as_zero() {
        assert_eq!(loudness(127, None, 70), 0);
        assert_eq!(
            level_from_size(80),
            GUESSED_SPEECH_DBOV,
            "speech-sized: heard"
        );
        assert!(loudness(level_from_size(80), None, 70) > 0);
        assert_eq!(level_from_size(24), 127, "DTX-sized: silence");
        assert_eq!(loudness(127, Some(true), 70), 0);
        assert_eq!(loudness(80, None, 70), 0, "below the quiet level");
        assert_eq!(loudness(70, None, 70), 0);
        assert_eq!(loudness(30, None, 70), 40);
        assert_eq!(loudness(30, Some(false), 70), 0, "the sender says no voice");
        assert_eq!(loudness(0, Some(true), 70), 70);
        assert_eq!(
            loudness(200, None, 127),
            0,
            "out-of-range levels are silence"
        );
    }

    #[test]
    fn score_is_the_mean_of_bucket_means() {
        let b = |sum, count| Bucket { sum, count };
        assert_eq!(score(&[b(200, 5), b(200, 5), b(0, 5), b(0, 0)]), 20);
        assert_eq!(score(&[b(0, 0); 4]), 0);
        // A bucket with few packets weighs as much as one with many.
        assert_eq!(score(&[b(40, 1), b(0, 9)]), 20);
    }

    #[test]
    fn config_is_validated() {
        assert!(SpeakersConfig::default().validate().is_ok());
        assert_eq!(SpeakersConfig::default().buckets(), 4);
        for bad in [
            SpeakersConfig {
                max_speakers: 0,
                ..SpeakersConfig::default()
            },
            SpeakersConfig {
                tick: Duration::ZERO,
                ..SpeakersConfig::default()
            },
            SpeakersConfig {
                window: Duration::from_secs(10),
                ..SpeakersConfig::default()
            },
            SpeakersConfig {
                quiet_dbov: 128,
                ..SpeakersConfig::default()
            },
        ] {
            assert_eq!(bad.validate(), Err(SpeakersError::InvalidConfig));
        }
    }
}
