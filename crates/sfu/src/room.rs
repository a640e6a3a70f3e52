//! One room's forwarding state: who is in it, what they publish, who receives what, and the
//! per-packet fan-out decision.
//!
//! Inputs are `handle_*` calls (joins, publications, RTP packet metadata, keyframe requests,
//! time); outputs are [`Forward`] entries written into a caller-owned buffer (one per
//! subscriber that should get the packet) and [`RoomEvent`]s drained with
//! [`Room::poll_event`]. The room never sees a socket, a clock or a WebRTC library: the media
//! driver maps its peers' streams to [`TrackKey`]s and slots, and does the sending.
//!
//! Fan-out cost: each published track keeps a `Vec` of its down-tracks, so forwarding one
//! packet is a walk over that vector with integer arithmetic and no allocation once the
//! output buffer has grown to the room's size. Subscriptions are participants × tracks by
//! nature (everyone may receive everyone); [`Room::set_paused`] lets a subscriber (or a
//! last-N / loudest-K policy) cut that down to what is actually shown or heard.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::keyframe::{is_keyframe, VideoCodec};
use crate::munger::{InPacket, Munged, Munger};

/// A participant in the room (assigned by the caller, unique per session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantKey(pub u64);

/// A published track (assigned by the caller, unique in the room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u64);

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// Audio at this RTP clock rate (48 kHz for Opus).
    Audio {
        /// RTP clock rate.
        clock_rate: u32,
    },
    /// Video in this codec (90 kHz clock).
    Video(VideoCodec),
}

impl Media {
    fn clock_rate(self) -> u32 {
        match self {
            Media::Audio { clock_rate } => clock_rate,
            Media::Video(_) => 90_000,
        }
    }

    /// Whether this is video.
    pub fn is_video(self) -> bool {
        matches!(self, Media::Video(_))
    }
}

/// Room tuning.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Least time between two keyframe requests sent to one publisher's track.
    pub keyframe_request_interval: Duration,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            keyframe_request_interval: Duration::from_millis(500),
        }
    }
}

/// One RTP packet from a publisher, as the room needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct RtpIn<'a> {
    /// The input stream (the publisher's SSRC, or a simulcast layer's).
    pub stream: u64,
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// The payload (only peeked at for keyframes).
    pub payload: &'a [u8],
    /// Arrival time.
    pub at: Instant,
}

/// "Send this packet to this subscriber, rewritten so."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Who receives it.
    pub subscriber: ParticipantKey,
    /// The caller's binding for this subscription (see [`Room::bind`]).
    pub slot: u32,
    /// Output extended sequence number.
    pub seq: u64,
    /// Output RTP timestamp.
    pub ts: u32,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// Give `subscriber` an outgoing stream for `track` (negotiate it), then call
    /// [`Room::bind`].
    Subscribe {
        /// Who.
        subscriber: ParticipantKey,
        /// What.
        track: TrackKey,
        /// The track's media.
        media: Media,
    },
    /// Remove `subscriber`'s outgoing stream for `track`.
    Unsubscribe {
        /// Who.
        subscriber: ParticipantKey,
        /// What.
        track: TrackKey,
        /// Its binding, if it was bound.
        slot: Option<u32>,
    },
    /// Ask the publisher of `track` for a keyframe (PLI).
    RequestKeyframe {
        /// The publisher.
        publisher: ParticipantKey,
        /// Their track.
        track: TrackKey,
    },
}

/// Misuse of the room's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    /// The participant is already in the room.
    AlreadyJoined,
    /// No such participant.
    UnknownParticipant,
    /// No such track.
    UnknownTrack,
    /// The track key is taken.
    DuplicateTrack,
    /// No such subscription.
    UnknownSubscription,
}

/// Plain counters, read by the driver and published to metrics on a timer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Packets handed out for forwarding (one per subscriber).
    pub forwarded: u64,
    /// Packets not forwarded to a subscriber (waiting for a keyframe, paused, old stream).
    pub dropped: u64,
    /// Keyframe requests emitted.
    pub keyframe_requests: u64,
    /// Keyframe requests folded into an earlier one by the rate limit.
    pub keyframe_requests_limited: u64,
}

#[derive(Debug)]
struct Participant {
    can_subscribe: bool,
    published: Vec<TrackKey>,
}

#[derive(Debug)]
struct Track {
    publisher: ParticipantKey,
    media: Media,
    muted: bool,
    down: Vec<DownTrack>,
    last_keyframe_request: Option<Instant>,
    /// A request was held back by the rate limit; send it at this time.
    pending_keyframe_request: Option<Instant>,
}

#[derive(Debug)]
struct DownTrack {
    subscriber: ParticipantKey,
    slot: Option<u32>,
    paused: bool,
    munger: Munger,
}

/// One room's forwarding state machine.
#[derive(Debug, Default)]
pub struct Room {
    config: RoomConfig,
    participants: HashMap<ParticipantKey, Participant>,
    tracks: HashMap<TrackKey, Track>,
    events: VecDeque<RoomEvent>,
    stats: RoomStats,
}

impl Room {
    /// An empty room.
    pub fn new(config: RoomConfig) -> Room {
        Room {
            config,
            ..Room::default()
        }
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Number of participants.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Number of published tracks.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// Number of subscriptions (down-tracks).
    pub fn subscription_count(&self) -> usize {
        self.tracks.values().map(|t| t.down.len()).sum()
    }

    /// The counters so far.
    pub fn stats(&self) -> RoomStats {
        self.stats
    }

    /// Who publishes `track`.
    pub fn publisher_of(&self, track: TrackKey) -> Option<ParticipantKey> {
        self.tracks.get(&track).map(|t| t.publisher)
    }

    /// A participant enters. If it may subscribe, it is subscribed to every track already
    /// published ([`RoomEvent::Subscribe`] each).
    pub fn handle_join(&mut self, p: ParticipantKey, can_subscribe: bool) -> Result<(), RoomError> {
        if self.participants.contains_key(&p) {
            return Err(RoomError::AlreadyJoined);
        }
        self.participants.insert(
            p,
            Participant {
                can_subscribe,
                published: Vec::new(),
            },
        );
        if can_subscribe {
            let mut keys: Vec<TrackKey> = self.tracks.keys().copied().collect();
            keys.sort();
            for key in keys {
                self.subscribe(p, key);
            }
        }
        Ok(())
    }

    /// A participant goes: its tracks are unpublished and its subscriptions dropped (no
    /// events for the latter: the driver drops the whole peer).
    pub fn handle_leave(&mut self, p: ParticipantKey) -> Result<(), RoomError> {
        let participant = self
            .participants
            .remove(&p)
            .ok_or(RoomError::UnknownParticipant)?;
        for track in participant.published {
            let _ = self.handle_unpublish(track);
        }
        for track in self.tracks.values_mut() {
            track.down.retain(|d| d.subscriber != p);
        }
        Ok(())
    }

    /// `p` publishes a new track; every other participant that may subscribe gets a
    /// [`RoomEvent::Subscribe`].
    pub fn handle_publish(
        &mut self,
        p: ParticipantKey,
        track: TrackKey,
        media: Media,
    ) -> Result<(), RoomError> {
        if self.tracks.contains_key(&track) {
            return Err(RoomError::DuplicateTrack);
        }
        let participant = self
            .participants
            .get_mut(&p)
            .ok_or(RoomError::UnknownParticipant)?;
        participant.published.push(track);
        self.tracks.insert(
            track,
            Track {
                publisher: p,
                media,
                muted: false,
                down: Vec::new(),
                last_keyframe_request: None,
                pending_keyframe_request: None,
            },
        );
        let mut subscribers: Vec<ParticipantKey> = self
            .participants
            .iter()
            .filter(|(k, v)| **k != p && v.can_subscribe)
            .map(|(k, _)| *k)
            .collect();
        subscribers.sort();
        for s in subscribers {
            self.subscribe(s, track);
        }
        Ok(())
    }

    /// A track published by someone who is not in this room value: with the media plane
    /// split over shards, each shard holds a replica of the room for its own subscribers,
    /// and the publisher sits on another shard. Every participant here that may subscribe
    /// gets a [`RoomEvent::Subscribe`]; keyframe requests name `publisher`.
    pub fn handle_publish_remote(
        &mut self,
        publisher: ParticipantKey,
        track: TrackKey,
        media: Media,
    ) -> Result<(), RoomError> {
        if self.tracks.contains_key(&track) {
            return Err(RoomError::DuplicateTrack);
        }
        self.tracks.insert(
            track,
            Track {
                publisher,
                media,
                muted: false,
                down: Vec::new(),
                last_keyframe_request: None,
                pending_keyframe_request: None,
            },
        );
        let mut subscribers: Vec<ParticipantKey> = self
            .participants
            .iter()
            .filter(|(k, v)| **k != publisher && v.can_subscribe)
            .map(|(k, _)| *k)
            .collect();
        subscribers.sort();
        for s in subscribers {
            self.subscribe(s, track);
        }
        Ok(())
    }

    /// A track goes away; each subscriber gets a [`RoomEvent::Unsubscribe`].
    pub fn handle_unpublish(&mut self, track: TrackKey) -> Result<(), RoomError> {
        let t = self.tracks.remove(&track).ok_or(RoomError::UnknownTrack)?;
        if let Some(p) = self.participants.get_mut(&t.publisher) {
            p.published.retain(|k| *k != track);
        }
        for d in t.down {
            self.events.push_back(RoomEvent::Unsubscribe {
                subscriber: d.subscriber,
                track,
                slot: d.slot,
            });
        }
        Ok(())
    }

    /// The publisher (un)muted a track: a muted track is not forwarded; on unmute every
    /// subscriber restarts at the next keyframe without a sequence gap.
    pub fn handle_mute(&mut self, track: TrackKey, muted: bool) -> Result<(), RoomError> {
        let t = self.tracks.get_mut(&track).ok_or(RoomError::UnknownTrack)?;
        if t.muted != muted {
            t.muted = muted;
            for d in &mut t.down {
                d.munger.pause();
            }
        }
        Ok(())
    }

    /// The publisher turned out to send another codec than announced (e.g. H.264 instead of
    /// VP8): keyframes are recognised by the new one from now on. The clock rate stays.
    pub fn set_media(&mut self, track: TrackKey, media: Media) -> Result<(), RoomError> {
        let t = self.tracks.get_mut(&track).ok_or(RoomError::UnknownTrack)?;
        t.media = media;
        Ok(())
    }

    /// The driver has negotiated `subscriber`'s outgoing stream for `track` as `slot`;
    /// packets flow from now on (for video, from the next keyframe, which is requested).
    pub fn bind(
        &mut self,
        subscriber: ParticipantKey,
        track: TrackKey,
        slot: u32,
    ) -> Result<(), RoomError> {
        let d = self.down_mut(subscriber, track)?;
        d.slot = Some(slot);
        Ok(())
    }

    /// Pause or resume forwarding `track` to `subscriber` (the subscriber's choice, or a
    /// selection policy such as last-N video).
    pub fn set_paused(
        &mut self,
        subscriber: ParticipantKey,
        track: TrackKey,
        paused: bool,
    ) -> Result<(), RoomError> {
        let d = self.down_mut(subscriber, track)?;
        if d.paused != paused {
            d.paused = paused;
            d.munger.pause();
        }
        Ok(())
    }

    /// Switch `subscriber`'s view of `track` to another input stream of that track (a
    /// simulcast layer), effective at that stream's next keyframe.
    pub fn switch_stream(
        &mut self,
        subscriber: ParticipantKey,
        track: TrackKey,
        stream: u64,
    ) -> Result<(), RoomError> {
        let d = self.down_mut(subscriber, track)?;
        d.munger.switch_to(stream);
        Ok(())
    }

    /// One RTP packet of `track` arrived: appends one [`Forward`] per subscriber that should
    /// get it to `out` (which the caller clears and reuses).
    pub fn handle_rtp(&mut self, track: TrackKey, pkt: &RtpIn<'_>, out: &mut Vec<Forward>) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if t.muted {
            return;
        }
        let keyframe = match t.media {
            Media::Audio { .. } => true,
            Media::Video(codec) => is_keyframe(codec, pkt.payload),
        };
        let input = InPacket {
            stream: pkt.stream,
            seq: pkt.seq,
            ts: pkt.ts,
            keyframe,
            at: pkt.at,
        };
        let mut want_keyframe = false;
        for d in &mut t.down {
            let Some(slot) = d.slot else { continue };
            if d.paused {
                self.stats.dropped += 1;
                continue;
            }
            match d.munger.process(&input) {
                Munged::Forward { seq, ts } => {
                    self.stats.forwarded += 1;
                    out.push(Forward {
                        subscriber: d.subscriber,
                        slot,
                        seq,
                        ts,
                    });
                }
                Munged::Drop => {
                    self.stats.dropped += 1;
                    want_keyframe |= d.munger.is_waiting_for_keyframe();
                }
            }
        }
        if want_keyframe {
            self.request_keyframe(track, pkt.at);
        }
    }

    /// `subscriber` lost pictures of `track` (PLI/FIR): forwarded to the publisher, at most
    /// once per [`RoomConfig::keyframe_request_interval`]; requests in between are folded
    /// into one sent when the interval ends.
    pub fn handle_keyframe_request(
        &mut self,
        now: Instant,
        subscriber: ParticipantKey,
        track: TrackKey,
    ) -> Result<(), RoomError> {
        self.down_mut(subscriber, track)?;
        self.request_keyframe(track, now);
        Ok(())
    }

    /// A keyframe request for `track` from elsewhere (another shard's subscribers, whose
    /// own replica already rate-limited it): rate-limited here too, per track, so the
    /// publisher sees at most one per interval whatever the number of shards.
    pub fn handle_remote_keyframe_request(
        &mut self,
        now: Instant,
        track: TrackKey,
    ) -> Result<(), RoomError> {
        if !self.tracks.contains_key(&track) {
            return Err(RoomError::UnknownTrack);
        }
        self.request_keyframe(track, now);
        Ok(())
    }

    /// Time has passed: sends keyframe requests held back by the rate limit.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (key, t) in &mut self.tracks {
            if t.pending_keyframe_request.is_some_and(|at| at <= now) {
                t.pending_keyframe_request = None;
                t.last_keyframe_request = Some(now);
                due.push((t.publisher, *key));
            }
        }
        due.sort();
        for (publisher, track) in due {
            self.stats.keyframe_requests += 1;
            self.events
                .push_back(RoomEvent::RequestKeyframe { publisher, track });
        }
    }

    /// When [`Room::handle_timeout`] next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter_map(|t| t.pending_keyframe_request)
            .min()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<RoomEvent> {
        self.events.pop_front()
    }

    fn subscribe(&mut self, subscriber: ParticipantKey, track: TrackKey) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let first_out_seq =
            1 + (track.0.wrapping_mul(7919) ^ subscriber.0.wrapping_mul(104_729)) % 20_000;
        t.down.push(DownTrack {
            subscriber,
            slot: None,
            paused: false,
            munger: Munger::new(t.media.clock_rate(), t.media.is_video(), first_out_seq),
        });
        self.events.push_back(RoomEvent::Subscribe {
            subscriber,
            track,
            media: t.media,
        });
    }

    fn down_mut(
        &mut self,
        subscriber: ParticipantKey,
        track: TrackKey,
    ) -> Result<&mut DownTrack, RoomError> {
        let t = self.tracks.get_mut(&track).ok_or(RoomError::UnknownTrack)?;
        t.down
            .iter_mut()
            .find(|d| d.subscriber == subscriber)
            .ok_or(RoomError::UnknownSubscription)
    }

    fn request_keyframe(&mut self, track: TrackKey, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if !t.media.is_video() {
            return;
        }
        let interval = self.config.keyframe_request_interval;
        match t.last_keyframe_request {
            Some(last) if now.saturating_duration_since(last) < interval => {
                self.stats.keyframe_requests_limited += 1;
                if t.pending_keyframe_request.is_none() {
                    t.pending_keyframe_request = Some(last + interval);
                }
            }
            _ => {
                t.last_keyframe_request = Some(now);
                t.pending_keyframe_request = None;
                self.stats.keyframe_requests += 1;
                self.events.push_back(RoomEvent::RequestKeyframe {
                    publisher: t.publisher,
                    track,
                });
            }
        }
    }
}
