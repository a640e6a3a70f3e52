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

use crate::keyframe::{is_keyframe, vp8_dimensions, VideoCodec};
use crate::munger::{InPacket, Munged, Munger};
use crate::vp8_ids::{Vp8Ids, Vp8Numbers};

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
    /// Least time between two keyframe requests sent to one publisher's stream (layer).
    pub keyframe_request_interval: Duration,
    /// Least time between two keyframe requests one subscriber's losses may cause (its
    /// PLI/FIR): a subscriber on a weak link cannot make every publisher send keyframes
    /// to everyone.
    pub subscriber_keyframe_interval: Duration,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            keyframe_request_interval: Duration::from_millis(500),
            subscriber_keyframe_interval: Duration::from_secs(1),
        }
    }
}

/// One RTP packet from a publisher, as the room needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct RtpIn<'a> {
    /// The input stream (the publisher's SSRC, or a simulcast layer's).
    pub stream: u64,
    /// The simulcast layer this stream carries (0 = lowest; 0 without simulcast).
    pub layer: u8,
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
    /// VP8 numbers to write in the payload descriptor instead of the input's (continuous
    /// across layer switches, see [`crate::vp8_ids`]); `None`: leave the payload as it is.
    pub vp8: Option<Vp8Numbers>,
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
    /// Ask the publisher of `track` for a keyframe (PLI) on one of its streams.
    RequestKeyframe {
        /// The publisher.
        publisher: ParticipantKey,
        /// Their track.
        track: TrackKey,
        /// The input stream (simulcast layer) that needs one; 0 when not known yet (ask for
        /// the track's main stream).
        stream: u64,
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
    /// Subscriber keyframe requests (PLI/FIR) ignored because that subscriber asked too
    /// recently.
    pub subscriber_keyframe_requests_ignored: u64,
}

#[derive(Debug)]
struct Participant {
    can_subscribe: bool,
    published: Vec<TrackKey>,
}

/// Most simulcast layers of one track.
pub const MAX_LAYERS: usize = 3;

#[derive(Debug)]
struct Track {
    publisher: ParticipantKey,
    media: Media,
    muted: bool,
    /// Not among the audio tracks chosen to be heard (loudest speakers); like muted, kept
    /// apart so that a host's mute and the selection do not undo each other.
    deselected: bool,
    down: Vec<DownTrack>,
    /// The input stream of each layer, once a packet of it arrived (0: not yet).
    streams: [u64; MAX_LAYERS],
    /// Payload bytes per layer since the last [`Room::layer_bitrates`].
    layer_bytes: [u64; MAX_LAYERS],
    /// When the layer bitrates were last read.
    rates_since: Option<Instant>,
    /// Each layer's picture size, when its keyframes tell it (VP8).
    dims: [(u16, u16); MAX_LAYERS],
    last_keyframe_request: [Option<Instant>; MAX_LAYERS],
    /// A request was held back by the rate limit; send it at this time (per layer).
    pending_keyframe_request: [Option<Instant>; MAX_LAYERS],
}

impl Track {
    /// Audio that is forwarded now: neither muted nor deselected.
    fn audible(&self) -> bool {
        !self.media.is_video() && !self.muted && !self.deselected
    }

    fn new(publisher: ParticipantKey, media: Media) -> Track {
        Track {
            publisher,
            media,
            muted: false,
            deselected: false,
            down: Vec::new(),
            streams: [0; MAX_LAYERS],
            layer_bytes: [0; MAX_LAYERS],
            rates_since: None,
            dims: [(0, 0); MAX_LAYERS],
            last_keyframe_request: [None; MAX_LAYERS],
            pending_keyframe_request: [None; MAX_LAYERS],
        }
    }

    /// The layer whose stream is `stream` (0 when unknown).
    fn layer_of(&self, stream: u64) -> usize {
        self.streams
            .iter()
            .position(|s| *s == stream && stream != 0)
            .unwrap_or(0)
    }

    fn simulcast(&self) -> bool {
        self.streams[1..].iter().any(|s| *s != 0)
    }
}

#[derive(Debug)]
struct DownTrack {
    subscriber: ParticipantKey,
    slot: Option<u32>,
    paused: bool,
    /// The simulcast layer this subscriber should get (the allocator's choice).
    layer: u8,
    /// When this subscriber's losses last caused a keyframe request.
    last_pli: Option<Instant>,
    munger: Munger,
    /// Packets forwarded, and dropped while waiting for a keyframe (for diagnostics:
    /// [`Room::describe_down`]).
    forwarded: u64,
    dropped_waiting: u64,
    /// Keyframe starts forwarded.
    keyframes: u64,
    /// VP8 numbering continuous across this subscriber's switches.
    vp8: Vp8Ids,
}

/// One room's forwarding state machine.
#[derive(Debug, Default)]
pub struct Room {
    config: RoomConfig,
    participants: HashMap<ParticipantKey, Participant>,
    tracks: HashMap<TrackKey, Track>,
    /// Audio tracks neither muted nor deselected (kept as tracks change: every subscriber's
    /// allocator asks on each estimate).
    audible: usize,
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
        self.insert_track(track, Track::new(p, media));
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
        self.insert_track(track, Track::new(publisher, media));
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
        self.audible -= usize::from(t.audible());
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
            self.audible -= usize::from(t.audible());
            t.muted = muted;
            self.audible += usize::from(t.audible());
            for d in &mut t.down {
                d.munger.pause();
            }
        }
        Ok(())
    }

    /// An audio track is (or is no longer) among those chosen to be heard (the loudest
    /// speakers): like a mute, but kept apart from it. Deselected tracks are not forwarded;
    /// on selection every subscriber continues without a sequence gap.
    pub fn set_selected(&mut self, track: TrackKey, selected: bool) -> Result<(), RoomError> {
        let t = self.tracks.get_mut(&track).ok_or(RoomError::UnknownTrack)?;
        if t.deselected == selected {
            self.audible -= usize::from(t.audible());
            t.deselected = !selected;
            self.audible += usize::from(t.audible());
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
        self.audible -= usize::from(t.audible());
        t.media = media;
        self.audible += usize::from(t.audible());
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

    /// The simulcast layer `subscriber` should receive of `track` (0 = lowest). The switch
    /// happens at that layer's next keyframe, which is requested, so the picture never
    /// freezes; until then the current layer keeps flowing.
    pub fn set_layer(
        &mut self,
        now: Instant,
        subscriber: ParticipantKey,
        track: TrackKey,
        layer: u8,
    ) -> Result<(), RoomError> {
        let layer = layer.min(MAX_LAYERS as u8 - 1);
        let t = self.tracks.get_mut(&track).ok_or(RoomError::UnknownTrack)?;
        let stream = t.streams[layer as usize];
        let d = t
            .down
            .iter_mut()
            .find(|d| d.subscriber == subscriber)
            .ok_or(RoomError::UnknownSubscription)?;
        if d.layer == layer {
            return Ok(());
        }
        d.layer = layer;
        if stream != 0 {
            d.munger.switch_to(stream);
            if d.munger.is_waiting_for_keyframe() && !d.paused {
                self.request_keyframe(track, layer as usize, now);
            }
        }
        Ok(())
    }

    /// What `subscriber` gets of `track`, for a debug log when it asks for a keyframe: the
    /// layer chosen, whether paused, the input stream forwarded and the one awaited, each
    /// layer's stream, and the packets forwarded, dropped waiting for a keyframe, and keyframes
    /// forwarded so far.
    pub fn describe_down(&self, subscriber: ParticipantKey, track: TrackKey) -> Option<String> {
        let t = self.tracks.get(&track)?;
        let d = t.down.iter().find(|d| d.subscriber == subscriber)?;
        Some(format!(
            "layer {} paused {} current {:?} waiting {} streams {:?} forwarded {} dropped_waiting {} keyframes {}",
            d.layer,
            d.paused,
            d.munger.current_stream(),
            d.munger.is_waiting_for_keyframe(),
            t.streams,
            d.forwarded,
            d.dropped_waiting,
            d.keyframes
        ))
    }

    /// The bits per second each simulcast layer of `track` carried since the last call
    /// (0 for a layer that sent nothing: a publisher whose uplink cannot carry the top
    /// layer stops sending it). The driver reads this about once a second for the
    /// allocator.
    pub fn layer_bitrates(&mut self, now: Instant, track: TrackKey) -> Option<[u64; MAX_LAYERS]> {
        let t = self.tracks.get_mut(&track)?;
        let since = t.rates_since.replace(now)?;
        let secs = now.saturating_duration_since(since).as_secs_f64();
        let bytes = std::mem::take(&mut t.layer_bytes);
        if secs <= 0.0 {
            return None;
        }
        Some(bytes.map(|b| (b as f64 * 8.0 / secs) as u64))
    }

    /// Each layer's picture size as its keyframes announced it ((0, 0) when not known).
    pub fn layer_sizes(&self, track: TrackKey) -> Option<[(u16, u16); MAX_LAYERS]> {
        self.tracks.get(&track).map(|t| t.dims)
    }

    /// Audio tracks forwarded now (neither muted nor deselected): what a subscriber's audio
    /// reserve must cover at most (muted and deselected tracks cost no bandwidth).
    pub fn audible_tracks(&self) -> usize {
        debug_assert_eq!(
            self.audible,
            self.tracks.values().filter(|t| t.audible()).count()
        );
        self.audible
    }

    fn insert_track(&mut self, key: TrackKey, track: Track) {
        self.audible += usize::from(track.audible());
        self.tracks.insert(key, track);
    }

    /// Whether `track` is video.
    pub fn is_video(&self, track: TrackKey) -> bool {
        self.tracks.get(&track).is_some_and(|t| t.media.is_video())
    }

    /// Whether `track` arrives in more than one simulcast layer.
    pub fn is_simulcast(&self, track: TrackKey) -> bool {
        self.tracks.get(&track).is_some_and(|t| t.simulcast())
    }

    /// One RTP packet of `track` arrived: appends one [`Forward`] per subscriber that should
    /// get it to `out` (which the caller clears and reuses).
    pub fn handle_rtp(&mut self, track: TrackKey, pkt: &RtpIn<'_>, out: &mut Vec<Forward>) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let layer = (pkt.layer as usize).min(MAX_LAYERS - 1);
        t.layer_bytes[layer] += pkt.payload.len() as u64;
        if t.streams[layer] != pkt.stream {
            // A layer's first packet (or a new SSRC for it): subscribers waiting for this
            // layer switch to it at its next keyframe.
            t.streams[layer] = pkt.stream;
            t.rates_since.get_or_insert(pkt.at);
            let mut wanted = false;
            for d in &mut t.down {
                if d.layer as usize == layer {
                    d.munger.switch_to(pkt.stream);
                    wanted |= !d.paused;
                }
            }
            if wanted && t.media.is_video() {
                self.request_keyframe(track, layer, pkt.at);
            }
        }
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if t.muted || t.deselected {
            return;
        }
        let keyframe = match t.media {
            Media::Audio { .. } => true,
            Media::Video(codec) => is_keyframe(codec, pkt.payload),
        };
        if keyframe && t.media == Media::Video(VideoCodec::Vp8) {
            if let Some(d) = vp8_dimensions(pkt.payload) {
                t.dims[layer] = d;
            }
        }
        let input = InPacket {
            stream: pkt.stream,
            seq: pkt.seq,
            ts: pkt.ts,
            keyframe,
            at: pkt.at,
        };
        let simulcast = t.simulcast();
        let vp8 = if t.media == Media::Video(VideoCodec::Vp8) {
            Vp8Numbers::parse(pkt.payload)
        } else {
            Vp8Numbers::default()
        };
        let mut want_keyframe = false;
        for d in &mut t.down {
            let Some(slot) = d.slot else { continue };
            if d.paused {
                self.stats.dropped += 1;
                continue;
            }
            // With simulcast, each subscriber takes one layer: others are not for it
            // (except the current one until a pending switch happens).
            if simulcast
                && t.streams[d.layer as usize] != pkt.stream
                && d.munger.current_stream() != Some(pkt.stream)
            {
                continue;
            }
            match d.munger.process(&input) {
                Munged::Forward { seq, ts } => {
                    self.stats.forwarded += 1;
                    d.forwarded += 1;
                    d.keyframes += u64::from(input.keyframe);
                    out.push(Forward {
                        subscriber: d.subscriber,
                        slot,
                        seq,
                        ts,
                        vp8: d.vp8.rewrite(d.munger.segment(), vp8),
                    });
                }
                Munged::Drop => {
                    self.stats.dropped += 1;
                    let waiting = d.munger.is_waiting_for_keyframe();
                    d.dropped_waiting += u64::from(waiting);
                    want_keyframe |= waiting;
                }
            }
        }
        if want_keyframe {
            self.request_keyframe(track, layer, pkt.at);
        }
    }

    /// `subscriber` lost pictures of `track` (PLI/FIR): forwarded to the publisher for the
    /// layer that subscriber receives, at most once per
    /// [`RoomConfig::subscriber_keyframe_interval`] per subscriber (a weak link does not turn
    /// into a keyframe storm for everyone), and at most once per
    /// [`RoomConfig::keyframe_request_interval`] per layer; requests in between are folded
    /// into one sent when the interval ends.
    pub fn handle_keyframe_request(
        &mut self,
        now: Instant,
        subscriber: ParticipantKey,
        track: TrackKey,
    ) -> Result<(), RoomError> {
        let every = self.config.subscriber_keyframe_interval;
        let t = self.tracks.get_mut(&track).ok_or(RoomError::UnknownTrack)?;
        let current = |d: &DownTrack| d.munger.current_stream();
        let d = t
            .down
            .iter_mut()
            .find(|d| d.subscriber == subscriber)
            .ok_or(RoomError::UnknownSubscription)?;
        if d.paused
            || d.last_pli
                .is_some_and(|at| now.saturating_duration_since(at) < every)
        {
            self.stats.subscriber_keyframe_requests_ignored += 1;
            return Ok(());
        }
        d.last_pli = Some(now);
        let layer = match current(d) {
            Some(stream) => t.layer_of(stream),
            None => d.layer as usize,
        };
        self.request_keyframe(track, layer, now);
        Ok(())
    }

    /// A keyframe request for `track` from elsewhere (another shard's subscribers, whose
    /// own replica already rate-limited it): rate-limited here too, per track, so the
    /// publisher sees at most one per interval whatever the number of shards.
    pub fn handle_remote_keyframe_request(
        &mut self,
        now: Instant,
        track: TrackKey,
        stream: u64,
    ) -> Result<(), RoomError> {
        let Some(t) = self.tracks.get(&track) else {
            return Err(RoomError::UnknownTrack);
        };
        let layer = t.layer_of(stream);
        self.request_keyframe(track, layer, now);
        Ok(())
    }

    /// Time has passed: sends keyframe requests held back by the rate limit.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (key, t) in &mut self.tracks {
            for layer in 0..MAX_LAYERS {
                if t.pending_keyframe_request[layer].is_some_and(|at| at <= now) {
                    t.pending_keyframe_request[layer] = None;
                    t.last_keyframe_request[layer] = Some(now);
                    due.push((t.publisher, *key, t.streams[layer]));
                }
            }
        }
        due.sort();
        for (publisher, track, stream) in due {
            self.stats.keyframe_requests += 1;
            self.events.push_back(RoomEvent::RequestKeyframe {
                publisher,
                track,
                stream,
            });
        }
    }

    /// When [`Room::handle_timeout`] next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks
            .values()
            .flat_map(|t| t.pending_keyframe_request.iter().flatten())
            .min()
            .copied()
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
        let mut munger = Munger::new(t.media.clock_rate(), t.media.is_video(), first_out_seq);
        // Simulcast: start on the lowest layer (the allocator raises it).
        if t.streams[0] != 0 {
            munger.switch_to(t.streams[0]);
        }
        t.down.push(DownTrack {
            subscriber,
            slot: None,
            paused: false,
            layer: 0,
            last_pli: None,
            munger,
            forwarded: 0,
            dropped_waiting: 0,
            keyframes: 0,
            vp8: Vp8Ids::default(),
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

    fn request_keyframe(&mut self, track: TrackKey, layer: usize, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if !t.media.is_video() {
            return;
        }
        let layer = layer.min(MAX_LAYERS - 1);
        let interval = self.config.keyframe_request_interval;
        match t.last_keyframe_request[layer] {
            Some(last) if now.saturating_duration_since(last) < interval => {
                self.stats.keyframe_requests_limited += 1;
                if t.pending_keyframe_request[layer].is_none() {
                    t.pending_keyframe_request[layer] = Some(last + interval);
                }
            }
            _ => {
                t.last_keyframe_request[layer] = Some(now);
                t.pending_keyframe_request[layer] = None;
                self.stats.keyframe_requests += 1;
                self.events.push_back(RoomEvent::RequestKeyframe {
                    publisher: t.publisher,
                    track,
                    stream: t.streams[layer],
                });
            }
        }
    }
}
