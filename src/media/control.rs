//! The control loop: one task that runs every room's meeting rules
//! (`plenary_meeting::Meeting`) and places peers on shards.
//!
//! Inputs: session [`Command`]s (joins, resumes, chat, hands, mutes, host actions, leaves),
//! shard [`ShardEvent`]s (a peer gone, a track published or stopped), and a 100 ms tick
//! (participant batches, lobby pruning, resume expiry). Outputs: [`ShardCmd`]s to the
//! shards (add/remove a peer, add/remove/mute a track, what a peer may publish, which shards
//! hold a room) and [`SessionEvent`]s to the sessions — a broadcast is serialised once and
//! shared. It holds no media: it never blocks on a shard, and a shard never waits for it.
//!
//! Placement: each new peer goes to the shard with the fewest peers, so a room's members
//! spread over every core. Peer ids name their shard and slot; the loop hands out a slot
//! and takes it back only when the shard reports the peer gone, so ids stay unique across
//! shards. Limits (per room, per server) count the whole server.
//!
//! Meetings: each room holds one meeting (an id, and its governance). When a room empties
//! its meeting is parked, and goes on if someone comes back in time (also after a
//! restart, from the store); the records the meetings produce go to the recorder
//! ([`keep`]).

mod keep;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use keep::clock;
use keep::{Outbox, Parked};
use plenary_meeting::{Entry, Meeting, Output, Pid, Refusal, Restore, Rights};
use plenary_proto::{LeaveReason, ParticipantInfo, ServerMessage, TrackSource, PROTOCOL_VERSION};
use plenary_sfu::{OverloadLevel, TrackKey};
use tokio::sync::mpsc;

use super::shard::{AddPeer, RoomKey, ShardCmd, ShardEvent, TrackSpec};
use super::{
    peer_id, shard_of, slot_of, Command, JoinError, JoinOutcome, JoinRequest, Joined,
    MediaSettings, PeerId, RecordItem, SessionEvent,
};
use crate::grant::Permissions;
use crate::metrics::Metrics;

/// How long after a drop a session may be resumed.
pub const RESUME_WINDOW: Duration = Duration::from_secs(60);
/// Most resumable sessions remembered.
const MAX_RESUMABLE: usize = 10_000;
/// How often participant batches go out.
const TICK: Duration = Duration::from_millis(100);

/// Slots of one shard: free ones, and each slot's generation.
#[derive(Debug, Default)]
struct Slots {
    free: Vec<u32>,
    generations: Vec<u32>,
    /// Peers placed on the shard (slots in use).
    used: usize,
}

impl Slots {
    fn take(&mut self, shard: usize) -> PeerId {
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None => {
                self.generations.push(0);
                self.generations.len() - 1
            }
        };
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.used += 1;
        peer_id(shard, slot, self.generations[slot])
    }

    fn give_back(&mut self, id: PeerId) {
        let slot = slot_of(id);
        if self.generations.get(slot).copied() == Some((id.0 >> 32) as u32)
            && !self.free.contains(&(slot as u32))
        {
            self.free.push(slot as u32);
            self.used = self.used.saturating_sub(1);
        }
    }
}

/// A room: its rules, and where its members and tracks are.
struct RoomCtl {
    key: RoomKey,
    name: Arc<str>,
    /// The meeting it holds (the key of its records).
    meeting_id: Arc<str>,
    meeting: Meeting<JoinRequest>,
    /// Members per shard.
    on_shard: Vec<u32>,
    /// Published tracks' media specs, by protocol id.
    specs: HashMap<String, TrackSpec>,
}

impl RoomCtl {
    fn mask(&self) -> u64 {
        self.on_shard
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .fold(0, |m, (i, _)| m | (1 << i))
    }
}

/// A member, as the control loop knows them.
struct PeerCtl {
    room: Arc<str>,
    events: mpsc::Sender<SessionEvent>,
    /// The grant's permissions (kept for a resume).
    permissions: Permissions,
    /// Hash of the resume token handed out in `welcome`.
    resume_hash: String,
}

/// A dropped session that may come back.
#[derive(Debug, Clone)]
struct Resumable {
    room: Arc<str>,
    info: ParticipantInfo,
    permissions: Permissions,
    restore: Restore,
    expires: Instant,
}

/// The control loop's state. See the module docs.
pub struct Control {
    settings: MediaSettings,
    metrics: Arc<Metrics>,
    shards: Arc<[mpsc::Sender<ShardCmd>]>,
    slots: Vec<Slots>,
    rooms: HashMap<Arc<str>, RoomCtl>,
    next_room: RoomKey,
    peers: HashMap<PeerId, PeerCtl>,
    resumable: HashMap<String, Resumable>,
    /// Meetings of empty rooms that may go on.
    parked: HashMap<Arc<str>, Parked>,
    /// Records waiting for the recorder.
    outbox: Outbox,
    shutting_down: bool,
    /// Each shard's overload level (a shard at `RefuseJoins` takes no newcomers).
    loads: Arc<super::ShardLoads>,
}

/// The grant's permissions as the meeting rules see them.
fn rights(p: &Permissions) -> Rights {
    use TrackSource::*;
    Rights {
        can_publish: [Microphone, Camera, Screen, ScreenAudio]
            .into_iter()
            .filter(|s| p.may_publish(*s))
            .collect(),
        can_subscribe: p.can_subscribe,
        can_chat: p.can_publish_data,
        is_host: p.is_host,
    }
}

impl Control {
    /// A control loop for these shards.
    pub fn new(
        mut settings: MediaSettings,
        metrics: Arc<Metrics>,
        shards: Arc<[mpsc::Sender<ShardCmd>]>,
        loads: Arc<super::ShardLoads>,
    ) -> Control {
        let n = shards.len();
        metrics.shards.set(n as i64);
        let continued = std::mem::take(&mut settings.continued);
        let mut control = Control {
            settings,
            metrics,
            shards,
            slots: (0..n).map(|_| Slots::default()).collect(),
            rooms: HashMap::new(),
            next_room: 1,
            peers: HashMap::new(),
            resumable: HashMap::new(),
            parked: HashMap::new(),
            outbox: Outbox::default(),
            shutting_down: false,
            loads,
        };
        control.park_continued(continued);
        control
    }

    /// Runs until [`Command::Shutdown`], or until every session handle is gone.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<ShardEvent>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u32 = 0;
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => {
                        self.shutdown().await;
                        return;
                    }
                    Some(cmd) => self.handle_command(cmd),
                },
                Some(event) = events.recv() => self.handle_event(event),
                _ = tick.tick() => {
                    ticks = ticks.wrapping_add(1);
                    self.tick(Instant::now(), ticks.is_multiple_of(10));
                }
            }
        }
    }

    // ---- commands ----------------------------------------------------------------------

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Join { request, reply } => {
                let result = self.join(request);
                self.reply_join(result, reply);
            }
            Command::Resume {
                token,
                events,
                started,
                reply,
            } => {
                let result = self.resume(&token, events, started);
                self.reply_join(result, reply);
            }
            Command::Chat { peer, text } => {
                self.with_meeting(peer, |m, pid| m.chat(pid, &text, clock()))
            }
            Command::Vote {
                peer,
                motion_id,
                choices,
            } => self.with_meeting(peer, |m, pid| m.vote(pid, &motion_id, &choices, clock())),
            Command::Data { peer, text } => self.with_meeting(peer, |m, pid| m.data(pid, text)),
            Command::RaiseHand { peer, raised } => {
                self.with_meeting(peer, |m, pid| m.raise_hand(pid, raised))
            }
            Command::Mute {
                peer,
                track_id,
                muted,
            } => self.with_meeting(peer, |m, pid| m.mute(pid, &track_id, muted)),
            Command::Host { peer, action } => {
                self.with_meeting(peer, |m, pid| m.host_action(pid, action, clock()))
            }
            Command::Leave { peer, reason, done } => {
                self.leave(peer, reason, true);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            // Routed to the shards by the handle; nothing to do here.
            Command::Offer { .. }
            | Command::Answer { .. }
            | Command::Candidate { .. }
            | Command::Subscription { .. }
            | Command::Shutdown => {}
        }
    }

    /// Runs a rule on the meeting of `peer`'s room, then carries out what it decided.
    fn with_meeting(&mut self, peer: PeerId, f: impl FnOnce(&mut Meeting<JoinRequest>, Pid)) {
        let Some(room) = self.peers.get(&peer).map(|p| Arc::clone(&p.room)) else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(&room) {
            f(&mut r.meeting, Pid(peer.0));
        }
        self.carry_out(&room);
    }

    fn reply_join(
        &mut self,
        result: Result<JoinOutcome, JoinError>,
        reply: tokio::sync::oneshot::Sender<Result<JoinOutcome, JoinError>>,
    ) {
        if let Err(e) = &result {
            self.metrics
                .joins_refused
                .with_label_values(&[e.metric_label()])
                .inc();
        }
        // The session went away while we were joining it.
        if let Err(Ok(JoinOutcome::Joined(joined))) = reply.send(result) {
            self.leave(joined.peer, LeaveReason::Disconnected, true);
        }
    }

    /// A join with a verified grant: refused, into the lobby, or into the room.
    fn join(&mut self, req: JoinRequest) -> Result<JoinOutcome, JoinError> {
        if self.shutting_down {
            return Err(JoinError::ShuttingDown);
        }
        let name: Arc<str> = Arc::from(req.room.as_str());
        let entry = self
            .room(&name)
            .meeting
            .admission(&req.info.identity, req.permissions.is_host);
        match entry {
            Err(Refusal::Locked) => Err(JoinError::Locked),
            Err(Refusal::Barred) => Err(JoinError::Barred),
            Err(Refusal::LobbyFull) => Err(JoinError::LobbyFull),
            Ok(Entry::Wait) => {
                let room = req.room.clone();
                let info = req.info.clone();
                self.room(&name).meeting.wait(info, req);
                self.carry_out(&name);
                Ok(JoinOutcome::Waiting { room })
            }
            Ok(Entry::Enter) => {
                let joined = self.enter(&name, req, None);
                self.close_room_if_empty(&name);
                joined.map(JoinOutcome::Joined)
            }
        }
    }

    /// The room named `name`, opened if needed (with its meeting: one that goes on, or a
    /// new one).
    fn room(&mut self, name: &Arc<str>) -> &mut RoomCtl {
        if !self.rooms.contains_key(name) {
            let key = self.next_room;
            self.next_room = self.next_room.wrapping_add(1).max(1);
            let (meeting, meeting_id) = self.new_meeting(name);
            let room = RoomCtl {
                key,
                name: Arc::clone(name),
                meeting_id,
                meeting,
                on_shard: vec![0; self.shards.len()],
                specs: HashMap::new(),
            };
            self.rooms.insert(Arc::clone(name), room);
        }
        self.rooms.get_mut(name).expect("opened above")
    }

    /// Puts a participant into the room on the least loaded shard.
    fn enter(
        &mut self,
        name: &Arc<str>,
        req: JoinRequest,
        restore: Option<Restore>,
    ) -> Result<Joined, JoinError> {
        if self.shutting_down {
            return Err(JoinError::ShuttingDown);
        }
        if self.peers.len() >= self.settings.max_participants {
            return Err(JoinError::ServerFull);
        }
        let room_limit = self.settings.max_participants_per_room;
        if self.room(name).meeting.members().len() >= room_limit {
            return Err(JoinError::RoomFull(room_limit));
        }
        // The least loaded shard that still takes newcomers; none: the server is overloaded
        // (refused, so that those already in keep a good meeting).
        let shard = (0..self.slots.len())
            .filter(|s| self.loads.get(*s) < OverloadLevel::RefuseJoins.as_u8())
            .min_by_key(|s| self.slots[*s].used)
            .ok_or(JoinError::Overloaded)?;
        let id = self.slots[shard].take(shard);
        let JoinRequest {
            info,
            permissions,
            started,
            events,
            ..
        } = req;
        let room = self.room(name);
        let welcome = room
            .meeting
            .enter(clock(), Pid(id.0), info, rights(&permissions), restore);
        let first_here = room.on_shard[shard] == 0;
        room.on_shard[shard] += 1;
        let tracks: Vec<TrackSpec> = welcome
            .tracks
            .iter()
            .filter_map(|t| {
                room.specs.get(&t.id).map(|s| TrackSpec {
                    info: t.clone(),
                    ..s.clone()
                })
            })
            .collect();
        let add = AddPeer {
            id,
            room: room.key,
            room_name: Arc::clone(&room.name),
            info: welcome.me.clone(),
            can_subscribe: permissions.can_subscribe,
            can_publish: welcome.permissions.can_publish.clone(),
            listener_mode: welcome.room_state.listener_mode,
            events: events.clone(),
            started,
            tracks,
        };
        let mask = room.mask();
        let key = room.key;
        self.to_shard(shard, ShardCmd::AddPeer(Box::new(add)));
        if first_here {
            self.to_room_shards(mask, |_| ShardCmd::RoomShards { room: key, mask });
        }
        let resume_token = crate::secret::random_b64(32);
        self.peers.insert(
            id,
            PeerCtl {
                room: Arc::clone(name),
                events,
                permissions,
                resume_hash: crate::secret::hash_secret(&resume_token),
            },
        );
        self.carry_out(name);
        self.metrics.participants.set(self.peers.len() as i64);
        self.metrics.rooms.set(self.rooms.len() as i64);
        let ice_servers = self.ice_servers_for(&welcome.me.identity);
        Ok(Joined {
            peer: id,
            welcome: ServerMessage::Welcome {
                protocol: PROTOCOL_VERSION,
                room: name.to_string(),
                me: welcome.me,
                participants: welcome.participants,
                tracks: welcome.tracks,
                ice_servers,
                permissions: welcome.permissions,
                room_state: welcome.room_state,
                hand_queue: welcome.hand_queue,
                resume_token,
            },
        })
    }

    /// The STUN/TURN servers for a member's `welcome`: the configured ones, and the TURN
    /// server with credentials made for them (never the shared secret).
    fn ice_servers_for(&self, identity: &str) -> Vec<plenary_proto::IceServer> {
        let mut servers = self.settings.ice_servers.clone();
        servers.extend(crate::turn::ice_server(
            &self.settings.turn,
            identity,
            crate::grant::unix_now(),
        ));
        servers
    }

    /// A dropped session comes back with its resume token (skipping lobby and lock, which
    /// it had passed; a bar still applies).
    fn resume(
        &mut self,
        token: &str,
        events: mpsc::Sender<SessionEvent>,
        started: Instant,
    ) -> Result<JoinOutcome, JoinError> {
        let hash = crate::secret::hash_secret(token);
        let Some(r) = self.resumable.remove(&hash) else {
            return Err(JoinError::ResumeFailed);
        };
        if r.expires <= Instant::now() {
            return Err(JoinError::ResumeFailed);
        }
        if self.rooms.get(&r.room).is_some_and(|room| {
            room.meeting.admission(&r.info.identity, true) == Err(Refusal::Barred)
        }) {
            return Err(JoinError::Barred);
        }
        let request = JoinRequest {
            room: r.room.to_string(),
            info: r.info.clone(),
            permissions: r.permissions.clone(),
            started,
            events,
        };
        tracing::info!(room = %r.room, "session resumed");
        let name = Arc::clone(&r.room);
        let joined = self.enter(&name, request, Some(r.restore));
        self.close_room_if_empty(&name);
        joined.map(JoinOutcome::Joined)
    }

    // ---- leaving -----------------------------------------------------------------------

    /// A member goes: the meeting lets them go, their shard removes them (when `tell_shard`),
    /// and a dropped connection may come back within [`RESUME_WINDOW`].
    fn leave(&mut self, peer: PeerId, reason: LeaveReason, tell_shard: bool) {
        let Some(ctl) = self.peers.remove(&peer) else {
            return;
        };
        if tell_shard {
            self.to_shard(shard_of(peer), ShardCmd::RemovePeer { peer, reason });
        }
        let name = Arc::clone(&ctl.room);
        if let Some(room) = self.rooms.get_mut(&name) {
            let member = room.meeting.member(Pid(peer.0)).cloned();
            room.meeting.leave(Pid(peer.0), reason, clock());
            let shard = shard_of(peer);
            if let Some(n) = room.on_shard.get_mut(shard) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    let mask = room.mask();
                    let key = room.key;
                    if mask != 0 {
                        self.to_room_shards(mask, |_| ShardCmd::RoomShards { room: key, mask });
                    }
                }
            }
            if reason == LeaveReason::Disconnected {
                if let Some(m) = member {
                    self.resumable_insert(
                        ctl.resume_hash.clone(),
                        Resumable {
                            room: Arc::clone(&name),
                            info: m.info.clone(),
                            permissions: ctl.permissions.clone(),
                            restore: Restore {
                                is_host: m.is_host,
                                has_floor: m.has_floor,
                            },
                            expires: Instant::now() + RESUME_WINDOW,
                        },
                    );
                }
            }
        }
        self.carry_out(&name);
        self.close_room_if_empty(&name);
        self.metrics.participants.set(self.peers.len() as i64);
    }

    fn close_room_if_empty(&mut self, name: &Arc<str>) {
        let empty = self
            .rooms
            .get(name)
            .is_some_and(|r| r.meeting.is_empty() && r.on_shard.iter().all(|n| *n == 0));
        if empty {
            if let Some(room) = self.rooms.remove(name) {
                self.park(room);
            }
            tracing::info!(room = %name, "room closed");
            self.metrics.rooms.set(self.rooms.len() as i64);
        }
    }

    fn resumable_insert(&mut self, hash: String, r: Resumable) {
        if self.resumable.len() >= MAX_RESUMABLE {
            let now = Instant::now();
            self.resumable.retain(|_, r| r.expires > now);
            if self.resumable.len() >= MAX_RESUMABLE {
                return;
            }
        }
        self.resumable.insert(hash, r);
    }

    // ---- shard events ------------------------------------------------------------------

    fn handle_event(&mut self, event: ShardEvent) {
        match event {
            ShardEvent::PeerLeft { peer, reason } => {
                // Removed by us already (leave, host action) or by the shard (media gone):
                // either way the slot is free again now.
                self.leave(peer, reason, false);
                if let Some(slots) = self.slots.get_mut(shard_of(peer)) {
                    slots.give_back(peer);
                }
            }
            ShardEvent::TrackPublished { peer, spec } => {
                let Some(name) = self.peers.get(&peer).map(|p| Arc::clone(&p.room)) else {
                    return;
                };
                let Some(room) = self.rooms.get_mut(&name) else {
                    return;
                };
                if room.meeting.publish(Pid(peer.0), spec.info.clone()) {
                    room.specs.insert(spec.info.id.clone(), spec.clone());
                    let mask = room.mask() & !(1 << shard_of(peer));
                    let key = room.key;
                    self.to_room_shards(mask, |_| ShardCmd::AddTrack {
                        room: key,
                        spec: spec.clone(),
                    });
                }
                self.carry_out(&name);
                self.metrics
                    .published_tracks
                    .set(self.rooms.values().map(|r| r.specs.len() as i64).sum());
            }
            ShardEvent::TrackUnpublished { peer, track_id } => {
                self.with_meeting(peer, |m, _| m.unpublished(&track_id));
            }
        }
    }

    // ---- carrying out the rules' decisions ---------------------------------------------

    /// Does what the meeting of room `name` decided.
    fn carry_out(&mut self, name: &Arc<str>) {
        loop {
            let Some(room) = self.rooms.get_mut(name) else {
                return;
            };
            let Some(output) = room.meeting.poll_output() else {
                return;
            };
            let key = room.key;
            let mask = room.mask();
            let meeting_id = Arc::clone(&room.meeting_id);
            match output {
                Output::Send { to, msg } => self.tell(
                    plenary_sfu::ParticipantKey(to.0),
                    SessionEvent::Send(Box::new(msg)),
                ),
                Output::Broadcast { except, msg } => {
                    let Ok(json) = serde_json::to_string(&msg) else {
                        continue;
                    };
                    let json: Arc<str> = Arc::from(json);
                    let members: Vec<PeerId> = room
                        .meeting
                        .members()
                        .iter()
                        .map(|m| plenary_sfu::ParticipantKey(m.pid.0))
                        .filter(|p| except.map(|e| e.0) != Some(p.0))
                        .collect();
                    for m in members {
                        self.tell(m, SessionEvent::Raw(Arc::clone(&json)));
                    }
                }
                Output::Permissions {
                    pid,
                    permissions,
                    listener_mode,
                } => {
                    let peer = plenary_sfu::ParticipantKey(pid.0);
                    // Every shard's speaker selector hears the floor holder always.
                    let floor = permissions.has_floor;
                    self.to_room_shards(mask, |_| ShardCmd::Floor {
                        room: key,
                        peer,
                        floor,
                    });
                    self.to_shard(
                        shard_of(peer),
                        ShardCmd::SetPermissions {
                            peer,
                            can_publish: permissions.can_publish,
                            listener_mode,
                        },
                    );
                }
                Output::Unpublish { pid, tracks } => {
                    let peer = plenary_sfu::ParticipantKey(pid.0);
                    for t in tracks {
                        if let Some(track) = track_key(&t) {
                            self.to_shard(
                                shard_of(peer),
                                ShardCmd::RemoveTrack { room: key, track },
                            );
                        }
                    }
                }
                Output::TrackRemoved { track_id } => {
                    room.specs.remove(&track_id);
                    if let Some(track) = track_key(&track_id) {
                        self.to_room_shards(mask, |_| ShardCmd::RemoveTrack { room: key, track });
                    }
                }
                Output::MuteTrack { track_id, muted } => {
                    if let Some(s) = room.specs.get_mut(&track_id) {
                        s.info.muted = muted;
                    }
                    if let Some(track) = track_key(&track_id) {
                        self.to_room_shards(mask, |_| ShardCmd::MuteTrack {
                            room: key,
                            track,
                            muted,
                        });
                    }
                }
                Output::Remove { pid, reason } => {
                    let peer = plenary_sfu::ParticipantKey(pid.0);
                    // The meeting has let them go already; the rest of leaving happens here.
                    self.leave(peer, reason, true);
                }
                Output::Admit(req) => self.admit(name, req),
                Output::TurnAway { waiting, reason } => {
                    let _ = waiting.events.try_send(SessionEvent::Close(reason));
                }
                Output::Audit(a) => {
                    tracing::info!(target: "plenary::audit", kind = %a.kind, actor = %a.actor, room = %name, detail = %a.detail, "host action");
                    self.keep(name, &meeting_id, RecordItem::Audit(a));
                }
                Output::Record(r) => {
                    // The audit row holds nothing secret (never a secret ballot's choice).
                    let a = r.audit();
                    tracing::info!(target: "plenary::audit", kind = %a.kind, actor = %a.actor, room = %name, detail = %a.detail, "meeting record");
                    self.keep(name, &meeting_id, RecordItem::Record(r));
                }
            }
        }
    }

    /// Lets a waiting participant into the room.
    fn admit(&mut self, name: &Arc<str>, req: JoinRequest) {
        let events = req.events.clone();
        match self.enter(name, req, None) {
            Ok(joined) => {
                let peer = joined.peer;
                if events
                    .try_send(SessionEvent::Admitted(Box::new(joined)))
                    .is_err()
                {
                    self.leave(peer, LeaveReason::Disconnected, true);
                }
            }
            Err(e) => {
                let _ = events.try_send(SessionEvent::Send(Box::new(ServerMessage::error(
                    plenary_proto::ErrorCode::Unavailable,
                    e.to_string(),
                ))));
                let _ = events.try_send(SessionEvent::Close(LeaveReason::Denied));
            }
        }
    }

    /// Queues an event for a member's session; a member whose queue is full is removed (it
    /// cannot keep up, and must not hold the others back).
    fn tell(&mut self, peer: PeerId, event: SessionEvent) {
        let Some(ctl) = self.peers.get(&peer) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = ctl.events.try_send(event) {
            tracing::info!(peer = peer.0, "session cannot keep up: removing it");
            self.leave(peer, LeaveReason::Disconnected, true);
        }
    }

    fn to_shard(&self, shard: usize, cmd: ShardCmd) {
        let Some(tx) = self.shards.get(shard) else {
            return;
        };
        if let Err(e) = tx.try_send(cmd) {
            // A shard that cannot take commands is stuck or gone; say so rather than wait.
            tracing::warn!(shard, "media shard did not take a command: {e}");
        }
    }

    fn to_room_shards(&self, mask: u64, cmd: impl Fn(usize) -> ShardCmd) {
        let mut m = mask;
        while m != 0 {
            let s = m.trailing_zeros() as usize;
            m &= m - 1;
            self.to_shard(s, cmd(s));
        }
    }

    // ---- time --------------------------------------------------------------------------

    fn tick(&mut self, now: Instant, every_second: bool) {
        let time = clock();
        self.flush_outbox();
        let names: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        for name in names {
            if let Some(room) = self.rooms.get_mut(&name) {
                room.meeting.tick(time);
                if every_second {
                    room.meeting.retain_lobby(|req| !req.events.is_closed());
                }
            }
            self.carry_out(&name);
            if every_second {
                self.close_room_if_empty(&name);
            }
        }
        if every_second {
            self.resumable.retain(|_, r| r.expires > now);
            self.expire_parked(time);
        }
    }

    async fn shutdown(&mut self) {
        self.shutting_down = true;
        // Attendance and speaking turns end now; every record reaches the recorder before
        // the loop ends (the recorder then writes them all before the server stops).
        let now = clock();
        let names: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        for name in &names {
            if let Some(room) = self.rooms.get_mut(name) {
                room.meeting.suspend(now);
            }
            self.carry_out(name);
        }
        self.drain_outbox().await;
        for room in self.rooms.values_mut() {
            room.meeting.retain_lobby(|req| {
                let _ = req
                    .events
                    .try_send(SessionEvent::Close(LeaveReason::ServerShutdown));
                false
            });
        }
        for tx in self.shards.iter() {
            let _ = tx.send(ShardCmd::Shutdown).await;
        }
        tracing::info!("media plane stopped");
    }
}

/// The track key a protocol track id names (`TR_<hex>`).
fn track_key(id: &str) -> Option<TrackKey> {
    u64::from_str_radix(id.strip_prefix("TR_")?, 16)
        .ok()
        .map(TrackKey)
}
