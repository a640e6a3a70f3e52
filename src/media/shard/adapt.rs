//! What each attendee's network and ears can take: the shard's driver for the forwarding
//! core's per-subscriber bandwidth allocator and per-room loudest-speakers selector
//! (`plenary_sfu::Allocator`, `plenary_sfu::Speakers`, both sans-IO).
//!
//! Allocation, per subscriber: str0m's egress estimate (TWCC with probing), the audio it
//! receives (reserved first), and for each video track its layers' measured bitrates and
//! sizes (read from the room's core each second) and the tile the client shows it in (from
//! its `subscription` messages) go into its allocator; the decisions come back as a layer
//! per track (`Room::set_layer`, switched at the layer's next keyframe) or a pause
//! (`Room::set_paused`), a `video_paused` notice when the connection is the reason, and a
//! bitrate target for str0m's estimator, which probes to climb back.
//!
//! Loudest speakers, per room replica: every audio packet's RFC 6464 level (local or
//! relayed) goes into the selector on the hot path (O(1)); every 100 ms its decisions
//! select or deselect microphones in the core (only when the room has more microphones
//! than K) and name the dominant speaker to this shard's members.

use std::time::Instant;

use plenary_proto::{ServerMessage, SubscriptionUpdate, TilePriority, TrackSource};
use plenary_sfu::{
    Allocator, AllocatorConfig, AllocatorEvent, Decision, OverloadLevel, PauseReason, SpeakerEvent,
    Speakers, SpeakersConfig, Tile, TrackKey, TrackPriority, VideoLayer, MAX_LAYERS,
};
use str0m::bwe::{Bitrate, BweKind};

use super::{LocalRoom, Shard};
use crate::media::peer::Peer;
use crate::media::{PeerId, SessionEvent};

/// The tile a video is assumed to be shown in until the client says.
const DEFAULT_TILE: (u32, u32) = (640, 360);
/// The starting estimate (bits/s), for str0m's estimator and the allocator alike: enough
/// for the stage and a few thumbnails at their low layers; probing climbs from there, and a
/// weak link brings it down within a second.
pub(super) const INITIAL_ESTIMATE_BPS: u64 = 1_500_000;
/// The pacer's rate for a client that gives no bandwidth feedback.
pub(super) const UNCONSTRAINED_BPS: u64 = 50_000_000;
/// A layer's bitrate assumed until it is measured (the allocator never chooses a layer
/// measured at 0, which is how a layer the publisher stopped sending is recognised).
const UNMEASURED_BPS: u64 = 300_000;

/// Most tiles remembered per subscriber (a bound on what a client can make us keep).
const MAX_TILES: usize = 256;

/// The allocator's priority for a track the client shows with `priority`.
fn track_priority(priority: Option<TilePriority>, screen: bool) -> TrackPriority {
    match priority {
        Some(TilePriority::Stage) => TrackPriority::Stage,
        Some(TilePriority::Pinned) => TrackPriority::Pinned,
        _ if screen => TrackPriority::ScreenShare,
        _ => TrackPriority::Thumbnail,
    }
}

/// The nominal size of `layer` of `count` layers whose top layer is `top` (each layer half
/// the size of the next), when keyframes have not told it.
fn nominal_size(top: (u32, u32), layer: usize, count: usize) -> (u32, u32) {
    let shift = (count - 1 - layer.min(count - 1)) as u32;
    ((top.0 >> shift).max(1), (top.1 >> shift).max(1))
}

impl Shard {
    /// The audio tracks forwarded now in `id`'s room (its audio reserve covers no more).
    fn audible(&self, id: PeerId) -> usize {
        self.peer(id)
            .and_then(|p| self.rooms.get(p.room))
            .and_then(|r| r.as_ref())
            .map_or(usize::MAX, |r| r.core.audible_tracks())
    }

    /// The first SDP a client sends with media in it (its offer, or its answer to ours for a
    /// listener who publishes nothing) tells whether it gives transport-wide feedback.
    pub(super) fn decide_allocation(&mut self, id: PeerId, sdp: &str) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        if peer.allocation_decided || !(sdp.contains("m=audio") || sdp.contains("m=video")) {
            return;
        }
        peer.allocation_decided = true;
        let feedback = sdp.contains("transport-wide-cc");
        self.start_allocation(Instant::now(), id, feedback);
    }

    /// Once a subscriber's feedback is known: with transport-wide congestion control offered
    /// (browsers do), it gets an allocator, fed every subscription it has so far; without,
    /// nothing can estimate its bandwidth, so it gets no allocator (only its own pauses)
    /// and its pacer is not held to the starting estimate.
    pub(super) fn start_allocation(&mut self, now: Instant, id: PeerId, feedback: bool) {
        if !self.settings.allocate {
            return;
        }
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        if !feedback {
            peer.rtc.bwe().reset(Bitrate::bps(UNCONSTRAINED_BPS));
            return;
        }
        let config = AllocatorConfig {
            initial_estimate: INITIAL_ESTIMATE_BPS,
            ..AllocatorConfig::default()
        };
        let Ok(alloc) = Allocator::new(config) else {
            return;
        };
        peer.alloc = Some(alloc);
        peer.audio_in = 0;
        let room = peer.room;
        let tracks: Vec<TrackKey> = peer.out.iter().flatten().map(|o| o.track).collect();
        for track in tracks {
            self.allocation_subscribe(now, id, room, track);
        }
        self.handle_room_events(room);
    }

    /// The layers of `track` as the allocator needs them: measured bitrates (from the last
    /// reading) and sizes.
    fn layers_of(room: &LocalRoom, track: TrackKey) -> Vec<VideoLayer> {
        let rates = room
            .rates
            .iter()
            .find(|(k, _)| *k == track)
            .map(|(_, r)| *r);
        let sizes = room.core.layer_sizes(track).unwrap_or([(0, 0); MAX_LAYERS]);
        let count = match rates {
            Some(r) => r.iter().rposition(|b| *b > 0).map(|i| i + 1).unwrap_or(1),
            None => 1,
        };
        let top = sizes[count - 1];
        let top = if top.0 > 0 {
            (top.0 as u32, top.1 as u32)
        } else if count > 1 {
            (1280, 720)
        } else {
            DEFAULT_TILE
        };
        (0..count)
            .map(|i| {
                let (w, h) = match sizes[i] {
                    (0, _) | (_, 0) => nominal_size(top, i, count),
                    (w, h) => (w as u32, h as u32),
                };
                let bitrate = rates.map(|r| r[i]).unwrap_or(UNMEASURED_BPS);
                VideoLayer::new(w, h, bitrate)
            })
            .collect()
    }

    /// A subscription opened: video goes to the subscriber's allocator; audio raises its
    /// audio reserve.
    pub(super) fn allocation_subscribe(
        &mut self,
        now: Instant,
        sub: PeerId,
        room: usize,
        track: TrackKey,
    ) {
        let Some(entry) = self.rooms.get(room).and_then(|r| r.as_ref()) else {
            return;
        };
        let video = entry.core.is_video(track);
        let screen = entry
            .tracks
            .iter()
            .any(|t| t.key == track && matches!(t.info.source, TrackSource::Screen));
        let layers = Self::layers_of(entry, track);
        let audible = entry.core.audible_tracks();
        let Some(peer) = self.peer_mut(sub) else {
            return;
        };
        let Some(alloc) = peer.alloc.as_mut() else {
            return;
        };
        if video {
            // What the client said of this track, if it spoke before the allocator existed
            // (or before the subscription opened).
            let (tile, priority) = peer
                .tiles
                .iter()
                .find(|(k, _, _)| *k == track)
                .map(|(_, t, p)| (*t, *p))
                .unwrap_or((Tile::shown(DEFAULT_TILE.0, DEFAULT_TILE.1), None));
            let _ = alloc.add_track(now, track, track_priority(priority, screen), tile, &layers);
        } else {
            peer.audio_in += 1;
            let reserve = peer.audio_reserve(audible);
            if let Some(alloc) = peer.alloc.as_mut() {
                alloc.set_audio_reserve(now, reserve);
            }
        }
        self.apply_allocation(now, sub);
    }

    /// A subscription closed.
    pub(super) fn allocation_unsubscribe(
        &mut self,
        now: Instant,
        sub: PeerId,
        track: TrackKey,
        video: bool,
    ) {
        let audible = self.audible(sub);
        let Some(peer) = self.peer_mut(sub) else {
            return;
        };
        if video {
            peer.bw_paused.retain(|t| *t != track);
            peer.tiles.retain(|(k, _, _)| *k != track);
            if let Some(alloc) = peer.alloc.as_mut() {
                let _ = alloc.remove_track(now, track);
            }
        } else {
            peer.audio_in = peer.audio_in.saturating_sub(1);
            let reserve = peer.audio_reserve(audible);
            if let Some(alloc) = peer.alloc.as_mut() {
                alloc.set_audio_reserve(now, reserve);
            }
        }
        self.apply_allocation(now, sub);
    }

    /// A second of the subscriber's receiver reports: how much of what it was sent it lost.
    /// Heavy loss caps its estimate (`plenary_sfu::LossCap`: a policer shows no delay, so
    /// the estimate alone would climb back into it), and no probing goes above the cap.
    pub(super) fn allocation_loss(&mut self, now: Instant, id: PeerId, loss: f32) {
        let level = self.overload.level();
        let audible = self.audible(id);
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        // Audio first, with the repeats (RED) its loss now calls for.
        let audio = peer.audio_reserve(audible);
        let Some(alloc) = peer.alloc.as_mut() else {
            return;
        };
        alloc.set_audio_reserve(now, audio);
        let sent = alloc.video_rate() + audio;
        peer.loss_cap
            .handle_report(now, f64::from(loss), sent, audio);
        let estimate = budget(peer, now, level, audio);
        tracing::debug!(
            target: "plenary::bwe",
            peer = id.0,
            loss,
            audio,
            red = peer.red.distance(),
            cap = peer.loss_cap.cap(now),
            estimate,
            "loss report"
        );
        let can_probe = peer.can_probe && level == OverloadLevel::Normal;
        if let Some(alloc) = peer.alloc.as_mut() {
            alloc.handle_loss(now, f64::from(loss));
            alloc.handle_estimate(now, estimate, can_probe);
        }
        self.apply_allocation(now, id);
    }

    /// The shard's overload level changed: the subscriber's video budget follows.
    pub(super) fn allocation_rebudget(&mut self, now: Instant, id: PeerId) {
        let level = self.overload.level();
        let audible = self.audible(id);
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        let audio = peer.audio_reserve(audible);
        let estimate = budget(peer, now, level, audio);
        let can_probe = peer.can_probe && level == OverloadLevel::Normal;
        if let Some(alloc) = peer.alloc.as_mut() {
            alloc.handle_estimate(now, estimate, can_probe);
        }
        self.apply_allocation(now, id);
    }

    /// The subscriber's bandwidth estimate changed.
    pub(super) fn allocation_estimate(&mut self, now: Instant, id: PeerId, kind: BweKind) {
        let level = self.overload.level();
        let audible = self.audible(id);
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        let (estimate, can_probe) = match kind {
            BweKind::Twcc {
                estimate,
                can_probe,
            } => (estimate.as_u64(), can_probe),
            BweKind::Remb { estimate, .. } => (estimate.as_u64(), false),
            _ => return,
        };
        peer.last_estimate = estimate;
        peer.can_probe = can_probe;
        let capped = budget(peer, now, level, peer.audio_reserve(audible));
        let Some(alloc) = peer.alloc.as_mut() else {
            return;
        };
        tracing::debug!(
            target: "plenary::bwe",
            peer = id.0,
            estimate,
            capped,
            can_probe,
            video = alloc.video_rate(),
            "estimate"
        );
        // No probing (padding) while the shard sheds load.
        alloc.handle_estimate(now, capped, can_probe && level == OverloadLevel::Normal);
        self.apply_allocation(now, id);
    }

    /// What the client shows: pauses for hidden tiles, tile sizes and priorities for the
    /// allocator (without one, the pauses go straight to the core).
    pub(super) fn client_subscription(
        &mut self,
        now: Instant,
        id: PeerId,
        updates: Vec<SubscriptionUpdate>,
    ) {
        let Some(room) = self.peer(id).map(|p| p.room) else {
            return;
        };
        for u in updates {
            let Some(entry) = self.room_mut(room) else {
                return;
            };
            // Tracks that went away meanwhile are ignored.
            let Some(spec) = entry.tracks.iter().find(|t| t.info.id == u.track_id) else {
                continue;
            };
            let key = spec.key;
            let screen = matches!(spec.info.source, TrackSource::Screen);
            let video = entry.core.is_video(key);
            let tile = if u.paused {
                Tile::hidden()
            } else {
                let (w, h) = match (u.width, u.height) {
                    (Some(w), Some(h)) if w > 0 && h > 0 => (w.min(8192), h.min(8192)),
                    _ => DEFAULT_TILE,
                };
                Tile::shown(w, h)
            };
            let Some(peer) = self.peer_mut(id) else {
                return;
            };
            if video {
                // Remembered for an allocator that starts later (see allocation_subscribe).
                let known = peer.tiles.iter().position(|(k, _, _)| *k == key);
                match known {
                    Some(i) => peer.tiles[i] = (key, tile, u.priority),
                    None if peer.tiles.len() < MAX_TILES => {
                        peer.tiles.push((key, tile, u.priority))
                    }
                    None => {}
                }
            }
            match peer.alloc.as_mut() {
                Some(alloc) if video => {
                    let _ = alloc.set_tile(now, key, tile);
                    let _ = alloc.set_priority(now, key, track_priority(u.priority, screen));
                }
                _ => {
                    if let Some(entry) = self.room_mut(room) {
                        let _ = entry.core.set_paused(id, key, u.paused);
                    }
                }
            }
        }
        self.apply_allocation(now, id);
        self.handle_room_events(room);
    }

    /// Carries out the subscriber's allocation decisions.
    pub(super) fn apply_allocation(&mut self, now: Instant, id: PeerId) {
        let mut events = std::mem::take(&mut self.alloc_events);
        let room = {
            let Some(peer) = self.peer_mut(id) else {
                self.alloc_events = events;
                return;
            };
            let Some(alloc) = peer.alloc.as_mut() else {
                self.alloc_events = events;
                return;
            };
            while let Some(e) = alloc.poll_event() {
                events.push(e);
            }
            peer.room
        };
        for e in events.drain(..) {
            match e {
                AllocatorEvent::Track { track, decision } => {
                    tracing::debug!(target: "plenary::alloc", peer = id.0, track = track.0, ?decision, "decision");
                    let Some(entry) = self.room_mut(room) else {
                        continue;
                    };
                    let paused = matches!(decision, Decision::Paused(_));
                    let _ = entry.core.set_paused(id, track, paused);
                    if let Decision::Layer(layer) = decision {
                        let _ = entry.core.set_layer(now, id, track, layer);
                    }
                    let track_id = entry
                        .tracks
                        .iter()
                        .find(|t| t.key == track)
                        .map(|t| t.info.id.clone());
                    let bw = decision == Decision::Paused(PauseReason::Bandwidth);
                    let Some(peer) = self.peer_mut(id) else {
                        continue;
                    };
                    let was = peer.bw_paused.contains(&track);
                    if bw != was {
                        if bw {
                            peer.bw_paused.push(track);
                        } else {
                            peer.bw_paused.retain(|t| *t != track);
                        }
                        if let Some(track_id) = track_id {
                            peer.send(ServerMessage::VideoPaused {
                                track_id,
                                paused: bw,
                            });
                        }
                    }
                }
                AllocatorEvent::Bitrate(mut target) => {
                    // An overloaded shard sends no padding: each padding packet costs an
                    // encryption and a send, the work the shard is short of.
                    if self.overload.level() > OverloadLevel::Normal {
                        target.minimum = 0;
                    }
                    if let Some(peer) = self.peer_mut(id) {
                        // No probing above what a lossy link let through.
                        let ceiling = peer.loss_cap.cap(now);
                        target.desired = target.desired.min(ceiling);
                        target.minimum = target.minimum.min(target.desired);
                        peer.rtc.bwe().set_bitrate(
                            Bitrate::bps(target.minimum),
                            Bitrate::bps(target.desired),
                        );
                    }
                }
            }
        }
        let audible = self.audible(id);
        if let Some(peer) = self.peer_mut(id) {
            if let Some(alloc) = peer.alloc.as_ref() {
                let sent = alloc.video_rate() + peer.audio_reserve(audible);
                peer.loss_cap.note_sent(now, sent);
            }
        }
        self.alloc_events = events;
        // The core's keyframe requests for new layers go out with the caller's next
        // `handle_room_events` (every caller outside the event loop makes one).
        let _ = room;
        self.mark_dirty(id);
    }

    /// Every second: reads each video track's layer bitrates from the room's core and hands
    /// them to the allocators of its subscribers here.
    pub(super) fn refresh_layers(&mut self, now: Instant) {
        if !self.settings.allocate {
            return;
        }
        for room in 0..self.rooms.len() {
            let Some(entry) = self.rooms[room].as_mut() else {
                continue;
            };
            entry.rates.clear();
            for t in &entry.tracks {
                if let Some(r) = entry.core.layer_bitrates(now, t.key) {
                    if entry.core.is_video(t.key) {
                        entry.rates.push((t.key, r));
                    }
                }
            }
            let tracks: Vec<(TrackKey, Vec<VideoLayer>)> = entry
                .rates
                .iter()
                .map(|(k, _)| (*k, Self::layers_of(entry, *k)))
                .collect();
            let members = entry.members.clone();
            for m in members {
                let Some(alloc) = self.peer_mut(m).and_then(|p| p.alloc.as_mut()) else {
                    continue;
                };
                for (key, layers) in &tracks {
                    if alloc.decision(*key).is_some() {
                        let _ = alloc.set_layers(now, *key, layers);
                    }
                }
                self.apply_allocation(now, m);
            }
            self.handle_room_events(room);
        }
    }

    /// Every tick: allocators whose holds ran out decide again.
    pub(super) fn allocation_timers(&mut self, now: Instant) {
        if !self.settings.allocate {
            return;
        }
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .flatten()
            .filter(|p| {
                p.alloc
                    .as_ref()
                    .and_then(|a| a.poll_timeout())
                    .is_some_and(|t| t <= now)
            })
            .map(|p| p.id)
            .collect();
        for id in due {
            if let Some(alloc) = self.peer_mut(id).and_then(|p| p.alloc.as_mut()) {
                alloc.handle_timeout(now);
            }
            self.apply_allocation(now, id);
            if let Some(room) = self.peer(id).map(|p| p.room) {
                self.handle_room_events(room);
            }
        }
    }

    // ---- loudest speakers --------------------------------------------------------------

    /// A room replica's selector, when loudest-speaker selection is on.
    pub(super) fn new_speakers(&self) -> Option<Speakers> {
        if self.settings.loudest_speakers == 0 {
            return None;
        }
        Speakers::new(SpeakersConfig {
            max_speakers: self.settings.loudest_speakers,
            ..SpeakersConfig::default()
        })
        .ok()
    }

    /// An audio track joined a room replica.
    pub(super) fn speakers_add(
        &mut self,
        now: Instant,
        room: usize,
        track: TrackKey,
        publisher: PeerId,
    ) {
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        let floor = entry.floor.contains(&publisher);
        let Some(sp) = entry.speakers.as_mut() else {
            return;
        };
        let _ = sp.add_track(track);
        if floor {
            let _ = sp.set_always_forwarded(now, track, true);
        }
        self.update_gating(room);
    }

    /// An audio track left a room replica.
    pub(super) fn speakers_remove(&mut self, room: usize, track: TrackKey) {
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        if let Some(sp) = entry.speakers.as_mut() {
            let _ = sp.remove_track(track);
        }
        self.update_gating(room);
    }

    /// Selection applies only when the room has more microphones than K: below that,
    /// everyone is heard and nothing is clipped.
    fn update_gating(&mut self, room: usize) {
        let k = self.settings.loudest_speakers;
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        let Some(sp) = entry.speakers.as_ref() else {
            return;
        };
        let gating = sp.track_count() > k;
        if gating == entry.gating {
            return;
        }
        entry.gating = gating;
        let audio: Vec<TrackKey> = entry
            .tracks
            .iter()
            .filter(|t| !entry.core.is_video(t.key))
            .map(|t| t.key)
            .collect();
        for t in audio {
            let selected = !gating || sp.is_forwarded(t);
            let _ = entry.core.set_selected(t, selected);
        }
    }

    /// The floor holder's microphones are always heard.
    pub(super) fn speakers_floor(
        &mut self,
        now: Instant,
        room: usize,
        publisher: PeerId,
        floor: bool,
    ) {
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        entry.floor.retain(|p| *p != publisher);
        if floor {
            entry.floor.push(publisher);
        }
        let mics: Vec<TrackKey> = entry
            .tracks
            .iter()
            .filter(|t| t.publisher == publisher && !entry.core.is_video(t.key))
            .map(|t| t.key)
            .collect();
        if let Some(sp) = entry.speakers.as_mut() {
            for t in mics {
                let _ = sp.set_always_forwarded(now, t, floor);
            }
        }
    }

    /// Every tick: the selectors decide; the core follows; members hear who speaks.
    pub(super) fn speaker_timers(&mut self, now: Instant) {
        for room in 0..self.rooms.len() {
            let mut events = std::mem::take(&mut self.speaker_events);
            {
                let Some(entry) = self.rooms[room].as_mut() else {
                    self.speaker_events = events;
                    continue;
                };
                let Some(sp) = entry.speakers.as_mut() else {
                    self.speaker_events = events;
                    continue;
                };
                if sp.poll_timeout().is_some_and(|t| t <= now) {
                    sp.handle_timeout(now);
                }
                while let Some(e) = sp.poll_event() {
                    events.push(e);
                }
            }
            for e in events.drain(..) {
                let Some(entry) = self.rooms[room].as_mut() else {
                    break;
                };
                match e {
                    SpeakerEvent::Forward(t) | SpeakerEvent::Stop(t) if !entry.gating => {
                        let _ = t;
                    }
                    SpeakerEvent::Forward(t) => {
                        tracing::debug!(target: "plenary::speakers", track = t.0, "forward");
                        let _ = entry.core.set_selected(t, true);
                    }
                    SpeakerEvent::Stop(t) => {
                        tracing::debug!(target: "plenary::speakers", track = t.0, "stop");
                        let _ = entry.core.set_selected(t, false);
                    }
                    SpeakerEvent::DominantSpeaker(t) => {
                        let Some(who) = entry.tracks.iter().find(|s| s.key == t) else {
                            continue;
                        };
                        let msg = ServerMessage::DominantSpeaker {
                            participant_id: who.info.participant_id.clone(),
                        };
                        let Ok(json) = serde_json::to_string(&msg) else {
                            continue;
                        };
                        let json: std::sync::Arc<str> = json.into();
                        for m in entry.members.clone() {
                            if let Some(p) = self.peer(m) {
                                let _ = p
                                    .events
                                    .try_send(SessionEvent::Raw(std::sync::Arc::clone(&json)));
                            }
                        }
                    }
                }
            }
            self.speaker_events = events;
        }
    }
}

/// What a subscriber's allocator may spend: its estimate, capped by reported loss, with the
/// video part of it cut by the shard's overload level (its `audio` reserve is never cut).
fn budget(peer: &Peer, now: Instant, level: OverloadLevel, audio: u64) -> u64 {
    let estimate = peer.last_estimate.min(peer.loss_cap.cap(now));
    let factor = level.budget_factor();
    if factor >= 1.0 {
        return estimate;
    }
    let audio = audio.min(estimate);
    audio + ((estimate - audio) as f64 * factor) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_layers_halve_downwards() {
        assert_eq!(nominal_size((1280, 720), 2, 3), (1280, 720));
        assert_eq!(nominal_size((1280, 720), 1, 3), (640, 360));
        assert_eq!(nominal_size((1280, 720), 0, 3), (320, 180));
        assert_eq!(nominal_size((640, 360), 0, 1), (640, 360));
    }
}
