//! The meeting layer of the media loop: raised hands and the floor, chat, per-subscriber
//! pausing, the lobby, resuming dropped sessions, batched participant updates, and every
//! host action — each checked here (a client that ignores its UI cannot get round a rule)
//! and each recorded for the audit log.
//!
//! Participant changes are not sent one by one: joins, updates and departures collect in
//! the room's [`Diff`] and go out as one `participants_changed` per room every
//! housekeeping tick (100 ms), so a crowd arriving at once costs each client a few messages.

use std::time::{Duration, Instant};

use plenary_proto::{
    ErrorCode, HostAction, LeaveReason, LeftParticipant, ParticipantInfo, ServerMessage,
    SubscriptionUpdate, TrackSource,
};
use plenary_sfu::ParticipantKey;

use super::super::{AuditRecord, JoinError, JoinOutcome, JoinRequest, PeerId, SessionEvent};
use super::Shard;
use crate::grant::Permissions;

/// How long after a drop a session may be resumed.
pub const RESUME_WINDOW: Duration = Duration::from_secs(60);
/// Most resumable sessions remembered.
const MAX_RESUMABLE: usize = 10_000;
/// Most characters in a chat message.
const MAX_CHAT_CHARS: usize = 2000;

/// Participant changes waiting to be sent.
#[derive(Debug, Default)]
pub struct Diff {
    pub joined: Vec<PeerId>,
    pub updated: Vec<PeerId>,
    pub left: Vec<LeftParticipant>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.updated.is_empty() && self.left.is_empty()
    }
}

/// Someone in the lobby.
#[derive(Debug)]
pub struct Waiting {
    /// Their id in the `lobby` message (`LB_n`).
    pub lobby_id: String,
    /// Their join.
    pub request: JoinRequest,
    /// When resuming into a lobby-enabled room (not used: resumes skip the lobby).
    pub restore: Option<Resumable>,
}

/// A dropped session that may come back.
#[derive(Debug, Clone)]
pub struct Resumable {
    pub room: String,
    pub info: ParticipantInfo,
    pub permissions: Permissions,
    pub is_host: bool,
    pub has_floor: bool,
    pub expires: Instant,
}

/// The protocol id of a participant.
pub fn participant_id(id: PeerId) -> String {
    format!("PA_{:x}", id.0)
}

/// The participant a protocol id names, if it parses.
fn parse_participant_id(s: &str) -> Option<PeerId> {
    u64::from_str_radix(s.strip_prefix("PA_")?, 16)
        .ok()
        .map(ParticipantKey)
}

impl Shard {
    pub(super) fn resumable_insert(&mut self, hash: String, r: Resumable) {
        if self.resumable.len() >= MAX_RESUMABLE {
            let now = Instant::now();
            self.resumable.retain(|_, r| r.expires > now);
            if self.resumable.len() >= MAX_RESUMABLE {
                return;
            }
        }
        self.resumable.insert(hash, r);
    }

    /// A dropped session comes back with its resume token (skipping lobby and lock, which
    /// it had passed; a bar still applies).
    pub(super) fn resume(
        &mut self,
        token: &str,
        events: tokio::sync::mpsc::Sender<SessionEvent>,
        started: Instant,
    ) -> Result<JoinOutcome, JoinError> {
        let hash = crate::membership::store::hash_secret(token);
        let Some(r) = self.resumable.remove(&hash) else {
            return Err(JoinError::ResumeFailed);
        };
        if r.expires <= Instant::now() {
            return Err(JoinError::ResumeFailed);
        }
        if let Some(&room) = self.room_index.get(&r.room) {
            if self.rooms[room]
                .as_ref()
                .is_some_and(|e| e.barred.contains(&r.info.identity))
            {
                return Err(JoinError::Barred);
            }
        }
        let mut permissions = r.permissions.clone();
        permissions.is_host = r.is_host;
        let request = JoinRequest {
            room: r.room.clone(),
            info: r.info.clone(),
            permissions,
            started,
            events,
        };
        tracing::info!(room = %r.room, "session resumed");
        self.enter(request, Some(&r)).map(JoinOutcome::Joined)
    }

    fn room_of(&self, id: PeerId) -> Option<usize> {
        self.peer(id).map(|p| p.room)
    }

    fn listener_mode(&self, room: usize) -> bool {
        self.rooms
            .get(room)
            .and_then(|r| r.as_ref())
            .is_some_and(|e| e.listener_mode)
    }

    /// A member of `room` by protocol id.
    fn member(&self, room: usize, participant: &str) -> Option<PeerId> {
        let id = parse_participant_id(participant)?;
        let entry = self.rooms.get(room)?.as_ref()?;
        entry.members.contains(&id).then_some(id)
    }

    fn tell(&mut self, id: PeerId, msg: ServerMessage) {
        if let Some(p) = self.peer(id) {
            if !p.send(msg) {
                self.to_remove.push((id, LeaveReason::Disconnected));
            }
        }
    }

    fn mark_updated(&mut self, room: usize, id: PeerId) {
        if let Some(entry) = self.room_mut(room) {
            if !entry.diff.updated.contains(&id) {
                entry.diff.updated.push(id);
            }
        }
    }

    fn audit(&self, kind: &str, actor: PeerId, room: usize, detail: serde_json::Value) {
        let actor = self
            .peer(actor)
            .map(|p| p.info.identity.clone())
            .unwrap_or_default();
        let room = self
            .rooms
            .get(room)
            .and_then(|r| r.as_ref())
            .map(|e| e.name.clone())
            .unwrap_or_default();
        tracing::info!(target: "plenary::audit", kind, %actor, %room, %detail, "host action");
        if let Some(tx) = &self.settings.audit {
            let _ = tx.try_send(AuditRecord {
                kind: kind.to_string(),
                actor,
                room,
                detail,
            });
        }
    }

    /// Sends each room's collected participant changes as one message to every member.
    pub(super) fn flush_participant_diffs(&mut self) {
        for room in 0..self.rooms.len() {
            let Some(entry) = self.rooms[room].as_mut() else {
                continue;
            };
            if entry.diff.is_empty() {
                continue;
            }
            let diff = std::mem::take(&mut entry.diff);
            let listener_mode = entry.listener_mode;
            let info = |id: &PeerId| self.peer(*id).map(|p| p.public_info(listener_mode));
            let joined: Vec<ParticipantInfo> = diff.joined.iter().filter_map(info).collect();
            let updated: Vec<ParticipantInfo> = diff
                .updated
                .iter()
                .filter(|id| !diff.joined.contains(id))
                .filter_map(info)
                .collect();
            let msg = ServerMessage::ParticipantsChanged {
                joined,
                updated,
                left: diff.left,
            };
            self.broadcast(room, None, &msg);
        }
    }

    pub(super) fn room_state_changed(&mut self, room: usize) {
        let Some(entry) = self.rooms.get(room).and_then(|r| r.as_ref()) else {
            return;
        };
        let msg = ServerMessage::RoomStateChanged {
            room_state: entry.state(),
        };
        let members = entry.members.clone();
        self.broadcast(room, None, &msg);
        // Everyone's effective permissions may have changed with listener mode.
        for id in members {
            self.permissions_changed(room, id);
        }
    }

    fn permissions_changed(&mut self, room: usize, id: PeerId) {
        let lm = self.listener_mode(room);
        let Some(p) = self.peer(id) else { return };
        let permissions = p.effective_permissions(lm);
        self.tell(id, ServerMessage::PermissionsChanged { permissions });
        self.mark_updated(room, id);
    }

    pub(super) fn send_hand_queue(&mut self, room: usize) {
        let Some(entry) = self.rooms.get(room).and_then(|r| r.as_ref()) else {
            return;
        };
        let queue = entry.hands.iter().map(|h| participant_id(*h)).collect();
        self.broadcast(room, None, &ServerMessage::HandQueue { queue });
    }

    fn lobby_message(&self, room: usize) -> Option<ServerMessage> {
        let entry = self.rooms.get(room)?.as_ref()?;
        let waiting = entry
            .lobby
            .iter()
            .map(|w| {
                let mut info = w.request.info.clone();
                info.id = w.lobby_id.clone();
                info
            })
            .collect();
        Some(ServerMessage::Lobby { waiting })
    }

    /// Drops lobby entries whose session went away, and tells the hosts.
    pub(super) fn prune_lobbies(&mut self) {
        for room in 0..self.rooms.len() {
            let Some(entry) = self.rooms[room].as_mut() else {
                continue;
            };
            let before = entry.lobby.len();
            entry.lobby.retain(|w| !w.request.events.is_closed());
            if entry.lobby.len() != before {
                self.send_lobby_to_hosts(room);
                self.close_room_if_empty(room);
            }
        }
    }

    pub(super) fn send_lobby_to(&mut self, room: usize, host: PeerId) {
        if let Some(msg) = self.lobby_message(room) {
            self.tell(host, msg);
        }
    }

    pub(super) fn send_lobby_to_hosts(&mut self, room: usize) {
        let Some(msg) = self.lobby_message(room) else {
            return;
        };
        let hosts: Vec<PeerId> = self.rooms[room]
            .as_ref()
            .map(|e| {
                e.members
                    .iter()
                    .copied()
                    .filter(|m| self.peer(*m).is_some_and(|p| p.is_host))
                    .collect()
            })
            .unwrap_or_default();
        for h in hosts {
            self.tell(h, msg.clone());
        }
    }

    pub(super) fn chat(&mut self, id: PeerId, text: String) {
        let Some(p) = self.peer(id) else { return };
        if !p.permissions.can_publish_data {
            self.tell(
                id,
                ServerMessage::error(
                    ErrorCode::PermissionDenied,
                    "your grant does not allow chat messages",
                ),
            );
            return;
        }
        let text = text.trim().to_string();
        if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
            self.tell(
                id,
                ServerMessage::error(
                    ErrorCode::BadMessage,
                    format!("a chat message is 1 to {MAX_CHAT_CHARS} characters"),
                ),
            );
            return;
        }
        let msg = ServerMessage::Chat {
            participant_id: p.info.id.clone(),
            name: p.info.name.clone(),
            from_host: p.is_host,
            text,
        };
        let room = p.room;
        self.broadcast(room, None, &msg);
    }

    pub(super) fn raise_hand(&mut self, id: PeerId, raised: bool) {
        let Some(room) = self.room_of(id) else { return };
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        let present = entry.hands.contains(&id);
        if raised == present {
            return;
        }
        if raised {
            entry.hands.push(id);
        } else {
            entry.hands.retain(|h| *h != id);
        }
        if let Some(p) = self.peer_mut(id) {
            p.hand_raised = raised;
        }
        self.mark_updated(room, id);
        self.send_hand_queue(room);
    }

    pub(super) fn subscription(&mut self, id: PeerId, updates: Vec<SubscriptionUpdate>) {
        let Some(room) = self.room_of(id) else { return };
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        for u in updates {
            // Tracks that went away meanwhile are ignored.
            if let Some((key, _)) = entry.tracks.iter().find(|(_, t)| t.id == u.track_id) {
                let _ = entry.core.set_paused(id, *key, u.paused);
            }
        }
        self.handle_room_events(room);
    }

    /// The tracks `target` publishes from these sources: (key, protocol id, source).
    fn tracks_of(
        &self,
        target: PeerId,
        sources: &[TrackSource],
    ) -> Vec<(plenary_sfu::TrackKey, String, TrackSource)> {
        self.peer(target)
            .map(|p| {
                p.in_tracks
                    .iter()
                    .filter(|t| sources.contains(&t.source))
                    .map(|t| (t.key, t.id.clone(), t.source))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A host mutes these sources of `target` (the forwarding stops at once).
    fn host_mute(&mut self, room: usize, target: PeerId, sources: &[TrackSource]) {
        for (key, track_id, source) in self.tracks_of(target, sources) {
            let Some(entry) = self.room_mut(room) else {
                return;
            };
            let _ = entry.core.handle_mute(key, true);
            let already = entry
                .tracks
                .iter_mut()
                .find(|(k, _)| *k == key)
                .map(|(_, info)| std::mem::replace(&mut info.muted, true))
                .unwrap_or(true);
            if !already {
                self.broadcast(
                    room,
                    Some(target),
                    &ServerMessage::TrackMuted {
                        track_id: track_id.clone(),
                        muted: true,
                    },
                );
            }
            self.tell(target, ServerMessage::HostMuted { track_id, source });
        }
    }

    /// Unpublishes these sources of `target` server-side.
    /// Stops forwarding `target`'s tracks of `sources` and unpublishes them; with `tell`, the
    /// target gets `host_muted` for each (a floor taken back is told by its
    /// `permissions_changed` instead, sent first, so the client stops its tracks before
    /// anything else happens to them).
    fn host_unpublish(&mut self, room: usize, target: PeerId, sources: &[TrackSource], tell: bool) {
        let tracks = self.tracks_of(target, sources);
        if let Some(p) = self.peer_mut(target) {
            p.in_tracks.retain(|t| !sources.contains(&t.source));
            p.ssrc_index.clear();
        }
        for (key, track_id, source) in tracks {
            self.unpublish(room, key);
            if tell {
                self.tell(target, ServerMessage::HostMuted { track_id, source });
            }
        }
    }

    pub(super) fn host_action(&mut self, id: PeerId, action: HostAction) {
        let Some(room) = self.room_of(id) else { return };
        if !self.peer(id).is_some_and(|p| p.is_host) {
            self.tell(
                id,
                ServerMessage::error(ErrorCode::PermissionDenied, "only hosts may do that"),
            );
            return;
        }
        let detail = serde_json::to_value(&action).unwrap_or_default();
        let kind = format!(
            "host_{}",
            detail
                .get("action")
                .and_then(|a| a.as_str())
                .unwrap_or("action")
        );
        let needs_target = |this: &Self, pid: &str| -> Option<PeerId> { this.member(room, pid) };
        let missing = |this: &mut Self, pid: &str| {
            this.tell(
                id,
                ServerMessage::error(
                    ErrorCode::BadMessage,
                    format!("no participant {pid:?} in this room"),
                ),
            );
        };
        use HostAction as A;
        match &action {
            A::GiveFloor { participant_id } | A::TakeFloor { participant_id } => {
                let Some(t) = needs_target(self, participant_id) else {
                    return missing(self, participant_id);
                };
                let give = matches!(action, A::GiveFloor { .. });
                if let Some(p) = self.peer_mut(t) {
                    p.has_floor = give;
                    p.hand_raised = false;
                }
                if let Some(entry) = self.room_mut(room) {
                    entry.hands.retain(|h| *h != t);
                }
                self.permissions_changed(room, t);
                if !give {
                    use TrackSource::*;
                    let all = [Microphone, Camera, Screen, ScreenAudio];
                    self.host_unpublish(room, t, &all, false);
                }
                self.send_hand_queue(room);
            }
            A::ReorderQueue { order } => {
                let Some(entry) = self.room_mut(room) else {
                    return;
                };
                let mut queue: Vec<PeerId> = order
                    .iter()
                    .filter_map(|s| parse_participant_id(s))
                    .filter(|p| entry.hands.contains(p))
                    .collect();
                queue.dedup();
                for h in &entry.hands {
                    if !queue.contains(h) {
                        queue.push(*h);
                    }
                }
                entry.hands = queue;
                self.send_hand_queue(room);
            }
            A::ClearQueue => {
                let Some(entry) = self.room_mut(room) else {
                    return;
                };
                let hands = std::mem::take(&mut entry.hands);
                for h in hands {
                    if let Some(p) = self.peer_mut(h) {
                        p.hand_raised = false;
                    }
                    self.mark_updated(room, h);
                }
                self.send_hand_queue(room);
            }
            A::Mute { participant_id } => {
                let Some(t) = needs_target(self, participant_id) else {
                    return missing(self, participant_id);
                };
                self.host_mute(room, t, &[TrackSource::Microphone]);
            }
            A::MuteAll => {
                let others: Vec<PeerId> = self.rooms[room]
                    .as_ref()
                    .map(|e| {
                        e.members
                            .iter()
                            .copied()
                            .filter(|m| !self.peer(*m).is_some_and(|p| p.is_host))
                            .collect()
                    })
                    .unwrap_or_default();
                for t in others {
                    self.host_mute(room, t, &[TrackSource::Microphone]);
                }
            }
            A::AskUnmute { participant_id } => {
                let Some(t) = needs_target(self, participant_id) else {
                    return missing(self, participant_id);
                };
                self.tell(
                    t,
                    ServerMessage::AskedToUnmute {
                        by: participant_id_of(id),
                    },
                );
            }
            A::CameraOff { participant_id } => {
                let Some(t) = needs_target(self, participant_id) else {
                    return missing(self, participant_id);
                };
                self.host_mute(room, t, &[TrackSource::Camera]);
            }
            A::StopScreenShare { participant_id } => {
                let Some(t) = needs_target(self, participant_id) else {
                    return missing(self, participant_id);
                };
                self.host_unpublish(
                    room,
                    t,
                    &[TrackSource::Screen, TrackSource::ScreenAudio],
                    true,
                );
            }
            A::Remove {
                participant_id,
                bar,
            } => {
                let Some(t) = needs_target(self, participant_id) else {
                    return missing(self, participant_id);
                };
                if *bar {
                    let identity = self.peer(t).map(|p| p.info.identity.clone());
                    if let (Some(identity), Some(entry)) = (identity, self.room_mut(room)) {
                        entry.barred.insert(identity);
                    }
                }
                self.to_remove.push((t, LeaveReason::Removed));
            }
            A::Lock { locked } => {
                let Some(entry) = self.room_mut(room) else {
                    return;
                };
                entry.locked = *locked;
                self.room_state_changed(room);
            }
            A::Lobby { enabled } => {
                let Some(entry) = self.room_mut(room) else {
                    return;
                };
                entry.lobby_on = *enabled;
                let admit_all = if *enabled {
                    Vec::new()
                } else {
                    std::mem::take(&mut entry.lobby)
                };
                for w in admit_all {
                    self.admit(w);
                }
                self.room_state_changed(room);
                self.send_lobby_to_hosts(room);
            }
            A::Admit { participant_id } | A::Deny { participant_id } => {
                let Some(entry) = self.room_mut(room) else {
                    return;
                };
                let Some(pos) = entry
                    .lobby
                    .iter()
                    .position(|w| w.lobby_id == *participant_id)
                else {
                    return missing(self, participant_id);
                };
                let w = entry.lobby.remove(pos);
                if matches!(action, A::Admit { .. }) {
                    self.admit(w);
                } else {
                    let _ = w
                        .request
                        .events
                        .try_send(SessionEvent::Close(LeaveReason::Denied));
                }
                self.send_lobby_to_hosts(room);
            }
            A::MakeHost { participant_id } => {
                let Some(t) = needs_target(self, participant_id) else {
                    return missing(self, participant_id);
                };
                if let Some(p) = self.peer_mut(t) {
                    p.is_host = true;
                }
                self.permissions_changed(room, t);
                self.send_lobby_to(room, t);
            }
            A::EndMeeting => {
                let Some(entry) = self.room_mut(room) else {
                    return;
                };
                entry.locked = true;
                let waiting = std::mem::take(&mut entry.lobby);
                let members = entry.members.clone();
                for w in waiting {
                    let _ = w
                        .request
                        .events
                        .try_send(SessionEvent::Close(LeaveReason::MeetingEnded));
                }
                self.audit(&kind, id, room, detail);
                for m in members {
                    self.remove_peer(m, LeaveReason::MeetingEnded);
                }
                return;
            }
        }
        self.audit(&kind, id, room, detail);
    }

    /// Lets a waiting participant into the room.
    fn admit(&mut self, w: Waiting) {
        let events = w.request.events.clone();
        match self.enter(w.request, w.restore.as_ref()) {
            Ok(joined) => {
                let peer = joined.peer;
                if events.try_send(SessionEvent::Admitted(joined)).is_err() {
                    self.to_remove.push((peer, LeaveReason::Disconnected));
                }
            }
            Err(e) => {
                let _ = events.try_send(SessionEvent::Send(ServerMessage::error(
                    ErrorCode::Unavailable,
                    e.to_string(),
                )));
                let _ = events.try_send(SessionEvent::Close(LeaveReason::Denied));
            }
        }
    }
}

fn participant_id_of(id: PeerId) -> String {
    participant_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_round_trip() {
        let id = ParticipantKey((3u64 << 32) | 17);
        assert_eq!(parse_participant_id(&participant_id(id)), Some(id));
        assert_eq!(parse_participant_id("PA_zz"), None);
        assert_eq!(parse_participant_id("XX_1"), None);
    }
}
