//! The media loop: one thread that owns the UDP socket, every peer and every room, and
//! drives them from datagrams, commands and timers.
//!
//! Per datagram: demux to a peer (map lookups), `handle_input` into its WebRTC state,
//! then poll it; each incoming RTP packet goes through the room's forwarding core, whose
//! [`Forward`]s are written into the subscribers' peers (the payload is shared, not
//! copied), which are then polled in turn for datagrams to send. No lock, no task and no
//! allocation per forwarded packet: the forward buffer, the dirty list and the timer heap
//! are reused. Counters are plain fields, published to Prometheus once a second.
//!
//! One shard holds whole rooms. Running one shard per core means giving each its own
//! socket (port, or `SO_REUSEPORT` with steering by ufrag) and placing rooms on shards;
//! nothing in here is shared between shards.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plenary_proto::{
    ErrorCode, IceCandidate, LeaveReason, ParticipantInfo, PublishedTrack, ServerMessage,
    TrackInfo, PROTOCOL_VERSION,
};

mod meeting;
use meeting::{participant_id, Diff, Resumable, Waiting};
use plenary_sfu::{Forward, ParticipantKey, Room, RoomConfig, RoomEvent, RtpIn, TrackKey};
use str0m::config::DtlsCert;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output};
use tokio::sync::mpsc;

use super::demux::{is_stun, Demux};
use super::peer::{core_media, first_codec, InTrack, OutState, OutTrack, Peer};
use super::udp::{BatchSocket, SendQueue};
use super::{
    Command, JoinError, JoinOutcome, JoinRequest, Joined, MediaSettings, PeerId, SessionEvent,
};
use crate::metrics::{MediaCounters, Metrics};

/// Most tracks one participant may publish.
const MAX_TRACKS_PER_PEER: usize = 8;
/// Most `recvmmsg` batches read before the loop looks at commands and timers again.
const READ_BATCHES: usize = 4;
/// Most text in a data message.
const MAX_DATA_TEXT: usize = 4096;

struct RoomEntry {
    name: String,
    core: Room,
    /// In join order.
    members: Vec<PeerId>,
    /// Published tracks with their protocol records.
    tracks: Vec<(TrackKey, TrackInfo)>,
    /// No new non-hosts.
    locked: bool,
    /// Newcomers wait for a host.
    lobby_on: bool,
    /// Only hosts and those with the floor may publish.
    listener_mode: bool,
    /// Waiting in the lobby, in arrival order.
    lobby: Vec<Waiting>,
    /// Identities a host removed for the rest of the meeting.
    barred: std::collections::HashSet<String>,
    /// Raised hands in order.
    hands: Vec<PeerId>,
    /// Participant changes not yet sent (flushed by housekeeping).
    diff: Diff,
}

impl RoomEntry {
    fn new(name: String) -> RoomEntry {
        RoomEntry {
            name,
            core: Room::new(RoomConfig::default()),
            members: Vec::new(),
            tracks: Vec::new(),
            locked: false,
            lobby_on: false,
            listener_mode: false,
            lobby: Vec::new(),
            barred: Default::default(),
            hands: Vec::new(),
            diff: Diff::default(),
        }
    }

    fn state(&self) -> plenary_proto::RoomState {
        plenary_proto::RoomState {
            locked: self.locked,
            lobby: self.lobby_on,
            listener_mode: self.listener_mode,
            size: self.members.len(),
        }
    }
}

/// The media loop's state. See the module docs.
pub struct Shard {
    /// The socket (taken out while a batch of datagrams is handled).
    io: Option<BatchSocket>,
    /// Datagrams to send at the end of this turn.
    out: SendQueue,
    /// The address put in `Receive::destination` (our announced candidate).
    local: SocketAddr,
    /// The port the media socket is bound to (for the kernel's drop counter).
    local_port: Option<u16>,
    settings: MediaSettings,
    metrics: Arc<Metrics>,
    cert: DtlsCert,
    candidates: Vec<Candidate>,
    peers: Vec<Option<Peer>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    demux: Demux,
    rooms: Vec<Option<RoomEntry>>,
    room_index: HashMap<String, usize>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    dirty: Vec<PeerId>,
    forwards: Vec<Forward>,
    to_remove: Vec<(PeerId, LeaveReason)>,
    counters: MediaCounters,
    published: MediaCounters,
    next_track: u64,
    next_lobby: u64,
    /// Sessions that dropped recently and may resume, by token hash.
    resumable: HashMap<String, Resumable>,
    shutting_down: bool,
}

impl Shard {
    /// A shard around a bound, non-blocking socket.
    pub fn new(
        socket: std::net::UdpSocket,
        settings: MediaSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Shard, String> {
        let socket = tokio::net::UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or("cannot generate a DTLS certificate")?;
        let candidates = settings
            .announce
            .iter()
            .map(|a| Candidate::host(*a, "udp").map_err(|e| format!("candidate {a}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let local = *settings.announce.first().ok_or("no address to announce")?;
        Ok(Shard {
            local_port: socket.local_addr().ok().map(|a| a.port()),
            io: Some(BatchSocket::new(socket)),
            out: SendQueue::default(),
            local,
            settings,
            metrics,
            cert,
            candidates,
            peers: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            demux: Demux::default(),
            rooms: Vec::new(),
            room_index: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            forwards: Vec::new(),
            to_remove: Vec::new(),
            counters: MediaCounters::default(),
            published: MediaCounters::default(),
            next_track: 1,
            next_lobby: 1,
            resumable: HashMap::new(),
            shutting_down: false,
        })
    }

    /// Runs until [`Command::Shutdown`] or until every handle is gone.
    ///
    /// Timers are checked against the clock on every turn, not only when tokio's timer
    /// fires: under overload the socket is always readable and the loop may not yield to
    /// the runtime's timer driver for a long time, and ICE, DTLS, RTCP and housekeeping
    /// (metrics, ICE timeouts, participant batches) must not stall then.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        const HOUSEKEEPING: Duration = Duration::from_millis(100);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        let mut ticks: u32 = 0;
        let mut turns: u32 = 0;
        loop {
            let next_timer = self
                .timers
                .peek()
                .map(|Reverse((t, _))| *t)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
                .min(next_housekeeping);
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => {
                        self.shutdown();
                        return;
                    }
                    Some(cmd) => self.handle_command(cmd),
                },
                ready = readable(&self.io) => {
                    if ready.is_ok() {
                        self.read_datagrams();
                    }
                }
                _ = tokio::time::sleep_until(next_timer.into()) => {}
            }
            let now = Instant::now();
            self.handle_timers(now);
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING;
                ticks = ticks.wrapping_add(1);
                self.housekeeping(now, ticks.is_multiple_of(10));
            }
            self.flush();
            // Let the runtime poll its I/O and timer drivers now and then, even when the
            // socket never runs dry.
            turns = turns.wrapping_add(1);
            if turns.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        }
    }

    // ---- peers -------------------------------------------------------------------------

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        let idx = (id.0 & 0xffff_ffff) as usize;
        self.peers.get_mut(idx)?.as_mut().filter(|p| p.id == id)
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        let idx = (id.0 & 0xffff_ffff) as usize;
        self.peers.get(idx)?.as_ref().filter(|p| p.id == id)
    }

    fn alloc_peer_id(&mut self) -> (usize, PeerId) {
        let idx = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.peers.push(None);
                self.generations.push(0);
                self.peers.len() - 1
            }
        };
        self.generations[idx] = self.generations[idx].wrapping_add(1);
        let id = ParticipantKey(((self.generations[idx] as u64) << 32) | idx as u64);
        (idx, id)
    }

    fn mark_dirty(&mut self, id: PeerId) {
        if let Some(p) = self.peer_mut(id) {
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    // ---- network -----------------------------------------------------------------------

    fn read_datagrams(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        for _ in 0..READ_BATCHES {
            let now = Instant::now();
            match io.recv_batch(|source, data| self.handle_datagram(now, source, data)) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("media socket receive error: {e}");
                    break;
                }
            }
        }
        self.io = Some(io);
    }

    /// Sends every queued datagram (batched).
    fn send_queued(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let Some(io) = self.io.as_mut() else { return };
        let sent = io.flush(&mut self.out);
        self.counters.packets_out += sent.datagrams;
        self.counters.bytes_out += sent.bytes;
        self.counters.send_errors += sent.dropped;
        self.counters.send_calls += sent.calls;
    }

    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        let Some(id) = self.demux.lookup(source, data) else {
            self.counters.datagrams_unknown += 1;
            return;
        };
        let local = self.local;
        let Some(peer) = self.peer_mut(id) else {
            self.counters.datagrams_unknown += 1;
            return;
        };
        let Ok(contents) = data.try_into() else {
            self.counters.datagrams_rejected += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: local,
                contents,
            },
        );
        if !peer.rtc.accepts(&input) {
            self.counters.datagrams_rejected += 1;
            return;
        }
        match peer.rtc.handle_input(input) {
            Ok(()) => {
                if is_stun(data) {
                    self.demux.learn(id, source);
                }
            }
            Err(e) => {
                tracing::debug!(peer = id.0, "datagram refused: {e}");
                self.counters.datagrams_rejected += 1;
            }
        }
        self.drive(id);
    }

    fn send_datagram(&mut self, dest: SocketAddr, data: Vec<u8>) {
        if !self.out.push(dest, data) {
            self.counters.send_errors += 1;
        }
    }

    /// Polls a peer until it has nothing more to say now.
    fn drive(&mut self, id: PeerId) {
        loop {
            let Some(peer) = self.peer_mut(id) else {
                return;
            };
            if !peer.rtc.is_alive() {
                self.to_remove.push((id, LeaveReason::Disconnected));
                return;
            }
            let output = match peer.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::info!(peer = id.0, "WebRTC error, removing the peer: {e}");
                    self.to_remove.push((id, LeaveReason::Disconnected));
                    return;
                }
            };
            match output {
                Output::Timeout(at) => {
                    if peer.scheduled != Some(at) {
                        peer.scheduled = Some(at);
                        self.timers.push(Reverse((at, id.0)));
                    }
                    return;
                }
                Output::Transmit(t) => self.send_datagram(t.destination, t.contents.into()),
                Output::Event(e) => self.handle_event(id, e),
            }
        }
    }

    fn handle_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = ParticipantKey(key);
            let Some(peer) = self.peer_mut(id) else {
                continue;
            };
            if peer.scheduled != Some(at) {
                continue; // superseded
            }
            peer.scheduled = None;
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(peer = id.0, "timeout handling failed: {e}");
            }
            self.drive(id);
        }
    }

    fn handle_event(&mut self, id: PeerId, event: Event) {
        match event {
            Event::RtpPacket(pkt) => self.forward(id, pkt),
            Event::Connected => {
                if let Some(peer) = self.peer_mut(id) {
                    peer.connected = true;
                    let latency = peer.started.elapsed().as_secs_f64();
                    self.metrics.join_latency.observe(latency);
                    tracing::info!(peer = id.0, latency_ms = latency * 1e3, "media connected");
                }
            }
            Event::IceConnectionStateChange(state) => {
                if let Some(peer) = self.peer_mut(id) {
                    peer.disconnected_since = match state {
                        IceConnectionState::Disconnected => Some(Instant::now()),
                        _ => None,
                    };
                }
            }
            Event::KeyframeRequest(req) => {
                self.counters.keyframe_requests_received += 1;
                let Some(peer) = self.peer(id) else { return };
                let Some(track) = peer.slot_by_mid(req.mid).map(|t| t.track) else {
                    return;
                };
                let room = peer.room;
                if let Some(entry) = self.room_mut(room) {
                    let _ = entry
                        .core
                        .handle_keyframe_request(Instant::now(), id, track);
                }
                self.handle_room_events(room);
            }
            Event::MediaEgressStats(s) => {
                let Some(peer) = self.peer_mut(id) else {
                    return;
                };
                let (nacks, plis) = delta3(&mut peer.egress_seen, s.mid, s.nacks, s.plis + s.firs);
                let _ = plis;
                self.counters.nacks_received += nacks;
            }
            Event::MediaIngressStats(s) => {
                let Some(peer) = self.peer_mut(id) else {
                    return;
                };
                let nacks = delta2(&mut peer.ingress_seen, s.mid, s.nacks);
                self.counters.nacks_sent += nacks;
            }
            Event::Closed => self.to_remove.push((id, LeaveReason::Disconnected)),
            _ => {}
        }
    }

    /// One RTP packet from a publisher: through the room's core, out to the subscribers.
    fn forward(&mut self, from: PeerId, pkt: RtpPacket) {
        let Some(peer) = self.peer_mut(from) else {
            return;
        };
        let Some(index) = peer.in_track_for(pkt.header.ssrc) else {
            return; // not a published track (e.g. a source the grant forbids)
        };
        let in_pt = pkt.header.payload_type;
        let Some(params) = peer.in_params(index, in_pt) else {
            return;
        };
        let track = peer.in_tracks[index].key;
        let room = peer.room;
        let video = params.spec().codec.kind() == MediaKind::Video;
        let mut forwards = std::mem::take(&mut self.forwards);
        forwards.clear();
        if let Some(entry) = self.room_mut(room) {
            if video {
                // Cheap: the codec of a video track is set again only when it changes.
                let media = core_media(plenary_proto::TrackKind::Video, Some(params.spec().codec));
                let _ = entry.core.set_media(track, media);
            }
            entry.core.handle_rtp(
                track,
                &RtpIn {
                    stream: *pkt.header.ssrc as u64,
                    seq: *pkt.seq_no,
                    ts: pkt.header.timestamp,
                    payload: &pkt.payload,
                    at: pkt.timestamp,
                },
                &mut forwards,
            );
        }
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..ExtensionValues::default()
        };
        for f in &forwards {
            let Some(sub) = self.peer_mut(f.subscriber) else {
                continue;
            };
            let Some(pt) = sub.out_pt(f.slot, in_pt, params) else {
                continue;
            };
            let Some(Some(out)) = sub.out.get(f.slot as usize) else {
                continue;
            };
            let OutState::Open(mid) = out.state else {
                continue;
            };
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(pt, f.seq.into(), f.ts, pkt.timestamp, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .ext_vals(ext.clone())
                    .nackable(video),
            );
            self.counters.rtp_forwarded += 1;
            self.mark_dirty(f.subscriber);
        }
        self.forwards = forwards;
        self.handle_room_events(room);
    }

    // ---- rooms -------------------------------------------------------------------------

    fn room_mut(&mut self, room: usize) -> Option<&mut RoomEntry> {
        self.rooms.get_mut(room)?.as_mut()
    }

    fn handle_room_events(&mut self, room: usize) {
        loop {
            let Some(entry) = self.room_mut(room) else {
                return;
            };
            let Some(event) = entry.core.poll_event() else {
                return;
            };
            match event {
                RoomEvent::Subscribe {
                    subscriber, track, ..
                } => {
                    let Some((_, info)) = entry.tracks.iter().find(|(k, _)| *k == track) else {
                        continue;
                    };
                    let out = OutTrack {
                        track,
                        track_id: info.id.clone(),
                        publisher_id: info.participant_id.clone(),
                        kind: match info.kind {
                            plenary_proto::TrackKind::Audio => MediaKind::Audio,
                            plenary_proto::TrackKind::Video => MediaKind::Video,
                        },
                        state: OutState::ToOpen,
                        pt_map: None,
                    };
                    if let Some(sub) = self.peer_mut(subscriber) {
                        sub.add_out(out);
                    }
                    self.mark_dirty(subscriber);
                }
                RoomEvent::Unsubscribe {
                    subscriber, track, ..
                } => {
                    if let Some(sub) = self.peer_mut(subscriber) {
                        sub.remove_out(track);
                    }
                    self.mark_dirty(subscriber);
                }
                RoomEvent::RequestKeyframe { publisher, track } => {
                    let Some(p) = self.peer_mut(publisher) else {
                        continue;
                    };
                    let Some(mid) = p.in_tracks.iter().find(|t| t.key == track).map(|t| t.mid)
                    else {
                        continue;
                    };
                    if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, None) {
                        rx.request_keyframe(KeyframeRequestKind::Pli);
                        self.counters.keyframe_requests_sent += 1;
                    }
                    self.mark_dirty(publisher);
                }
            }
        }
    }

    /// Sends `msg` to every member of `room` but `except`; a member whose queue is full is
    /// removed (it cannot keep up, and must not hold the others back).
    fn broadcast(&mut self, room: usize, except: Option<PeerId>, msg: &ServerMessage) {
        let Some(entry) = self.rooms.get(room).and_then(|r| r.as_ref()) else {
            return;
        };
        for member in &entry.members {
            if Some(*member) == except {
                continue;
            }
            let idx = (member.0 & 0xffff_ffff) as usize;
            let Some(Some(peer)) = self.peers.get(idx) else {
                continue;
            };
            if !peer.send(msg.clone()) {
                self.to_remove.push((*member, LeaveReason::Disconnected));
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
            Command::Chat { peer, text } => self.chat(peer, text),
            Command::RaiseHand { peer, raised } => self.raise_hand(peer, raised),
            Command::Subscription { peer, tracks } => self.subscription(peer, tracks),
            Command::Host { peer, action } => self.host_action(peer, action),
            Command::Offer { peer, sdp, tracks } => self.offer(peer, &sdp, tracks),
            Command::Answer { peer, sdp } => self.answer(peer, &sdp),
            Command::Candidate { peer, candidate } => self.candidate(peer, candidate),
            Command::Mute {
                peer,
                track_id,
                muted,
            } => self.mute(peer, &track_id, muted),
            Command::Data { peer, text } => self.data(peer, text),
            Command::Leave { peer, reason } => self.to_remove.push((peer, reason)),
            Command::Shutdown => {}
        }
    }

    fn reply_join(
        &mut self,
        result: Result<JoinOutcome, JoinError>,
        reply: tokio::sync::oneshot::Sender<Result<JoinOutcome, JoinError>>,
    ) {
        if let Err(e) = &result {
            let reason = match e {
                JoinError::RoomFull(_) => "room_full",
                JoinError::ServerFull => "server_full",
                JoinError::ShuttingDown => "shutting_down",
                JoinError::Locked => "locked",
                JoinError::Barred => "barred",
                JoinError::ResumeFailed => "resume_failed",
            };
            self.metrics
                .joins_refused
                .with_label_values(&[reason])
                .inc();
        }
        // The session went away while we were joining it.
        if let Err(Ok(JoinOutcome::Joined(joined))) = reply.send(result) {
            self.to_remove
                .push((joined.peer, LeaveReason::Disconnected));
        }
    }

    /// A join with a verified grant: refused, into the lobby, or into the room.
    fn join(&mut self, req: JoinRequest) -> Result<JoinOutcome, JoinError> {
        if self.shutting_down {
            return Err(JoinError::ShuttingDown);
        }
        if let Some(&room) = self.room_index.get(&req.room) {
            let entry = self.rooms[room].as_mut().expect("indexed rooms exist");
            if entry.barred.contains(&req.info.identity) {
                return Err(JoinError::Barred);
            }
            let host = req.permissions.is_host;
            if entry.locked && !host {
                return Err(JoinError::Locked);
            }
            if entry.lobby_on && !host {
                // The same identity waiting twice: the newer request replaces the older.
                let mut replaced = Vec::new();
                entry.lobby.retain(|w| {
                    let same = w.request.info.identity == req.info.identity;
                    if same {
                        replaced.push(w.request.events.clone());
                    }
                    !same
                });
                for events in replaced {
                    let _ = events.try_send(SessionEvent::Close(LeaveReason::Replaced));
                }
                let lobby_id = format!("LB_{}", self.next_lobby);
                self.next_lobby += 1;
                let room_name = req.room.clone();
                entry.lobby.push(Waiting {
                    lobby_id,
                    request: req,
                    restore: None,
                });
                self.send_lobby_to_hosts(room);
                return Ok(JoinOutcome::Waiting { room: room_name });
            }
        }
        self.enter(req, None).map(JoinOutcome::Joined)
    }

    /// Puts a participant into the room (after the lobby, or on resume).
    fn enter(
        &mut self,
        req: JoinRequest,
        restore: Option<&Resumable>,
    ) -> Result<Joined, JoinError> {
        if self.shutting_down {
            return Err(JoinError::ShuttingDown);
        }
        // The same identity in the same room: the new session replaces the old one.
        if let Some(&room) = self.room_index.get(&req.room) {
            let old: Vec<PeerId> = self.rooms[room]
                .as_ref()
                .map(|e| {
                    e.members
                        .iter()
                        .copied()
                        .filter(|m| {
                            self.peer(*m)
                                .is_some_and(|p| p.info.identity == req.info.identity)
                        })
                        .collect()
                })
                .unwrap_or_default();
            for id in old {
                self.remove_peer(id, LeaveReason::Replaced);
            }
        }
        if self.demux.peer_count() >= self.settings.max_participants {
            return Err(JoinError::ServerFull);
        }
        let room = match self.room_index.get(&req.room) {
            Some(&r) => r,
            None => {
                let entry = RoomEntry::new(req.room.clone());
                let slot = match self.rooms.iter().position(|r| r.is_none()) {
                    Some(i) => {
                        self.rooms[i] = Some(entry);
                        i
                    }
                    None => {
                        self.rooms.push(Some(entry));
                        self.rooms.len() - 1
                    }
                };
                self.room_index.insert(req.room.clone(), slot);
                slot
            }
        };
        let members = self.rooms[room].as_ref().map_or(0, |e| e.members.len());
        if members >= self.settings.max_participants_per_room {
            self.close_room_if_empty(room);
            return Err(JoinError::RoomFull(self.settings.max_participants_per_room));
        }
        let (idx, id) = self.alloc_peer_id();
        let mut info = req.info;
        info.id = format!("PA_{:x}", id.0);
        let mut peer = Peer::new(
            id,
            room,
            JoinRequest {
                info: info.clone(),
                ..req
            },
            &self.cert,
            &self.candidates,
        );
        if let Some(r) = restore {
            peer.is_host = r.is_host;
            peer.has_floor = r.has_floor;
        }
        let resume_token = crate::membership::random_b64(32);
        peer.resume_hash = crate::membership::store::hash_secret(&resume_token);
        self.demux.add_peer(id, peer.ufrag.clone());
        let can_subscribe = peer.permissions.can_subscribe;
        self.peers[idx] = Some(peer);
        let threshold = self.settings.listener_mode_above;
        let entry = self.rooms[room].as_mut().expect("room exists");
        let _ = entry.core.handle_join(id, can_subscribe);
        entry.members.push(id);
        entry.diff.joined.push(id);
        let listener_mode_changed = !entry.listener_mode && entry.members.len() > threshold;
        if listener_mode_changed {
            entry.listener_mode = true;
        }
        let listener_mode = entry.listener_mode;
        let participants: Vec<ParticipantInfo> = entry
            .members
            .iter()
            .filter(|m| **m != id)
            .filter_map(|m| {
                let i = (m.0 & 0xffff_ffff) as usize;
                self.peers
                    .get(i)?
                    .as_ref()
                    .map(|p| p.public_info(listener_mode))
            })
            .collect();
        let tracks: Vec<TrackInfo> = entry.tracks.iter().map(|(_, t)| t.clone()).collect();
        let hand_queue = entry.hands.iter().map(|h| participant_id(*h)).collect();
        let room_state = entry.state();
        let room_name = entry.name.clone();
        let me = self.peer(id).expect("just added");
        let is_host = me.is_host;
        let welcome = ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            room: room_name.clone(),
            me: me.public_info(listener_mode),
            participants,
            tracks,
            ice_servers: self.settings.ice_servers.clone(),
            permissions: me.effective_permissions(listener_mode),
            room_state,
            hand_queue,
            resume_token,
        };
        if listener_mode_changed {
            self.room_state_changed(room);
        }
        if is_host {
            self.send_lobby_to(room, id);
        }
        self.handle_room_events(room);
        self.mark_dirty(id);
        tracing::info!(peer = id.0, room = %room_name, "joined");
        Ok(Joined { peer: id, welcome })
    }

    fn offer(&mut self, id: PeerId, sdp: &str, tracks: Vec<PublishedTrack>) {
        let listener_mode = self
            .peer(id)
            .and_then(|p| self.rooms.get(p.room)?.as_ref())
            .is_some_and(|e| e.listener_mode);
        let next_track = &mut self.next_track;
        let Some(peer) = self.peers.get_mut((id.0 & 0xffff_ffff) as usize) else {
            return;
        };
        let Some(peer) = peer.as_mut().filter(|p| p.id == id) else {
            return;
        };
        let answer = match peer.accept_offer(sdp) {
            Ok(a) => a,
            Err(message) => {
                peer.send(ServerMessage::error(ErrorCode::BadSdp, message));
                return;
            }
        };
        let allowed = peer.effective_permissions(listener_mode);
        let mut errors = Vec::new();
        let mut new_tracks = Vec::new();
        let mut listed: Vec<Mid> = Vec::new();
        for t in &tracks {
            let mid = Mid::from(t.mid.as_str());
            listed.push(mid);
            if peer.in_tracks.iter().any(|x| x.mid == mid) {
                continue;
            }
            let Some(kind) = peer.client_sends_on(mid) else {
                errors.push((
                    ErrorCode::BadSdp,
                    format!("mid {:?} is not an m-line the offer sends media on", t.mid),
                ));
                continue;
            };
            let wanted = match t.source.kind() {
                plenary_proto::TrackKind::Audio => MediaKind::Audio,
                plenary_proto::TrackKind::Video => MediaKind::Video,
            };
            if kind != wanted {
                errors.push((
                    ErrorCode::BadMessage,
                    format!("mid {:?} carries {kind:?}, not {:?}", t.mid, t.source),
                ));
                continue;
            }
            if !allowed.can_publish.contains(&t.source) {
                let why = if listener_mode {
                    "the room is in listener mode: raise your hand and wait for a host to give you the floor"
                } else {
                    "your grant does not allow it"
                };
                errors.push((
                    ErrorCode::PermissionDenied,
                    format!("you may not publish your {}: {why}", t.source.as_str()),
                ));
                continue;
            }
            if peer.in_tracks.len() >= MAX_TRACKS_PER_PEER {
                errors.push((
                    ErrorCode::PermissionDenied,
                    format!("at most {MAX_TRACKS_PER_PEER} tracks per participant"),
                ));
                continue;
            }
            let key = TrackKey(*next_track);
            *next_track += 1;
            let info = TrackInfo {
                id: format!("TR_{}", key.0),
                participant_id: peer.info.id.clone(),
                kind: t.source.kind(),
                source: t.source,
                muted: false,
            };
            let media = core_media(info.kind, first_codec(&peer.rtc, mid));
            peer.in_tracks.push(InTrack {
                mid,
                key,
                id: info.id.clone(),
                source: t.source,
                last_pt: None,
            });
            new_tracks.push((key, info, media));
        }
        // Tracks the client no longer lists, or no longer sends, are unpublished.
        let gone: Vec<TrackKey> = peer
            .in_tracks
            .iter()
            .filter(|t| !listed.contains(&t.mid) || peer.client_sends_on(t.mid).is_none())
            .map(|t| t.key)
            .collect();
        peer.in_tracks.retain(|t| !gone.contains(&t.key));
        peer.ssrc_index.clear();
        let mappings = peer
            .in_tracks
            .iter()
            .map(|t| plenary_proto::TrackMapping {
                mid: t.mid.to_string(),
                track_id: t.id.clone(),
                participant_id: peer.info.id.clone(),
            })
            .collect();
        peer.send(ServerMessage::Answer {
            sdp: answer,
            tracks: mappings,
        });
        for (code, message) in errors {
            peer.send(ServerMessage::error(code, message));
        }
        let room = peer.room;
        for key in gone {
            self.unpublish(room, key);
        }
        for (key, info, media) in new_tracks {
            if let Some(entry) = self.room_mut(room) {
                entry.tracks.push((key, info.clone()));
                let _ = entry.core.handle_publish(id, key, media);
            }
            self.broadcast(
                room,
                Some(id),
                &ServerMessage::TrackPublished { track: info },
            );
        }
        self.handle_room_events(room);
        self.mark_dirty(id);
    }

    fn unpublish(&mut self, room: usize, key: TrackKey) {
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        let _ = entry.core.handle_unpublish(key);
        let Some(pos) = entry.tracks.iter().position(|(k, _)| *k == key) else {
            return;
        };
        let (_, info) = entry.tracks.remove(pos);
        self.broadcast(
            room,
            None,
            &ServerMessage::TrackUnpublished { track_id: info.id },
        );
        self.handle_room_events(room);
    }

    fn answer(&mut self, id: PeerId, sdp: &str) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        match peer.accept_answer(sdp) {
            Ok(opened) => self.bind_opened(id, opened),
            Err(message) => {
                let code = if peer.pending.is_none() && message.starts_with("there is no") {
                    ErrorCode::OutOfOrder
                } else {
                    ErrorCode::BadSdp
                };
                peer.send(ServerMessage::error(code, message));
            }
        }
        self.mark_dirty(id);
    }

    /// Tells the room that these slots of `id` are negotiated, so packets may flow.
    fn bind_opened(&mut self, id: PeerId, opened: Vec<(u32, TrackKey)>) {
        let Some(room) = self.peer(id).map(|p| p.room) else {
            return;
        };
        if let Some(entry) = self.room_mut(room) {
            for (slot, track) in opened {
                let _ = entry.core.bind(id, track, slot);
            }
        }
        self.handle_room_events(room);
    }

    fn candidate(&mut self, id: PeerId, c: IceCandidate) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        let line = c.candidate.trim();
        if line.is_empty() || line.contains(".local ") {
            // End of candidates, or an mDNS name we cannot resolve: the client's STUN
            // checks tell us its address anyway.
            return;
        }
        match Candidate::from_sdp_string(line) {
            Ok(candidate) => peer.rtc.add_remote_candidate(candidate),
            Err(e) => {
                peer.send(ServerMessage::error(
                    ErrorCode::BadMessage,
                    format!("unreadable ICE candidate: {e}"),
                ));
            }
        }
        self.mark_dirty(id);
    }

    fn mute(&mut self, id: PeerId, track_id: &str, muted: bool) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        let Some(key) = peer
            .in_tracks
            .iter()
            .find(|t| t.id == track_id)
            .map(|t| t.key)
        else {
            peer.send(ServerMessage::error(
                ErrorCode::BadMessage,
                format!("you publish no track {track_id:?}"),
            ));
            return;
        };
        let room = peer.room;
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        let _ = entry.core.handle_mute(key, muted);
        if let Some((_, info)) = entry.tracks.iter_mut().find(|(k, _)| *k == key) {
            info.muted = muted;
        }
        self.broadcast(
            room,
            Some(id),
            &ServerMessage::TrackMuted {
                track_id: track_id.to_string(),
                muted,
            },
        );
    }

    fn data(&mut self, id: PeerId, text: String) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        if !peer.permissions.can_publish_data {
            peer.send(ServerMessage::error(
                ErrorCode::PermissionDenied,
                "your grant does not allow sending data messages",
            ));
            return;
        }
        if text.len() > MAX_DATA_TEXT {
            peer.send(ServerMessage::error(
                ErrorCode::BadMessage,
                format!("data messages hold at most {MAX_DATA_TEXT} bytes"),
            ));
            return;
        }
        let msg = ServerMessage::Data {
            participant_id: peer.info.id.clone(),
            text,
        };
        let room = peer.room;
        self.broadcast(room, Some(id), &msg);
    }

    // ---- leaving -----------------------------------------------------------------------

    fn remove_peer(&mut self, id: PeerId, reason: LeaveReason) {
        let idx = (id.0 & 0xffff_ffff) as usize;
        let Some(peer) = self
            .peers
            .get_mut(idx)
            .and_then(|p| p.take_if(|p| p.id == id))
        else {
            return;
        };
        self.free.push(idx as u32);
        self.demux.remove_peer(id, &peer.ufrag);
        let _ = peer.events.try_send(SessionEvent::Close(reason));
        let room = peer.room;
        tracing::info!(peer = id.0, ?reason, "left");
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        if reason == LeaveReason::Disconnected && !peer.resume_hash.is_empty() {
            let restore = Resumable {
                room: entry.name.clone(),
                info: peer.info.clone(),
                permissions: peer.permissions.clone(),
                is_host: peer.is_host,
                has_floor: peer.has_floor,
                expires: Instant::now() + meeting::RESUME_WINDOW,
            };
            self.resumable_insert(peer.resume_hash.clone(), restore);
        }
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        entry.members.retain(|m| *m != id);
        let _ = entry.core.handle_leave(id);
        let had_hand = entry.hands.contains(&id);
        entry.hands.retain(|h| *h != id);
        entry.diff.left.push(plenary_proto::LeftParticipant {
            id: peer.info.id.clone(),
            reason,
        });
        let mut gone = Vec::new();
        entry.tracks.retain(|(_, t)| {
            let mine = t.participant_id == peer.info.id;
            if mine {
                gone.push(t.id.clone());
            }
            !mine
        });
        for track_id in gone {
            self.broadcast(room, None, &ServerMessage::TrackUnpublished { track_id });
        }
        if had_hand {
            self.send_hand_queue(room);
        }
        self.handle_room_events(room);
        self.close_room_if_empty(room);
    }

    fn close_room_if_empty(&mut self, room: usize) {
        let empty = self.rooms[room]
            .as_ref()
            .is_some_and(|e| e.members.is_empty());
        if empty {
            if let Some(entry) = self.rooms[room].take() {
                self.room_index.remove(&entry.name);
                tracing::info!(room = %entry.name, "room closed");
            }
        }
    }

    /// Negotiates and polls every peer that has work, and removes the ones that failed.
    fn flush(&mut self) {
        loop {
            while let Some(id) = self.dirty.pop() {
                let Some(peer) = self.peer_mut(id) else {
                    continue;
                };
                peer.dirty = false;
                let (offer, opened) = peer.negotiate();
                if let Some(offer) = offer {
                    if !peer.send(offer) {
                        self.to_remove.push((id, LeaveReason::Disconnected));
                        continue;
                    }
                }
                if !opened.is_empty() {
                    self.bind_opened(id, opened);
                }
                self.drive(id);
            }
            if self.to_remove.is_empty() {
                self.send_queued();
                return;
            }
            let removals = std::mem::take(&mut self.to_remove);
            for (id, reason) in removals {
                self.remove_peer(id, reason);
            }
        }
    }

    fn housekeeping(&mut self, now: Instant, publish: bool) {
        self.flush_participant_diffs();
        if publish {
            self.resumable.retain(|_, r| r.expires > now);
            self.prune_lobbies();
        }
        for entry in self.rooms.iter_mut().flatten() {
            if entry.core.poll_timeout().is_some_and(|t| t <= now) {
                entry.core.handle_timeout(now);
            }
        }
        for room in 0..self.rooms.len() {
            self.handle_room_events(room);
        }
        let timeout = self.settings.ice_timeout;
        for peer in self.peers.iter().flatten() {
            if peer
                .disconnected_since
                .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
            {
                self.to_remove.push((peer.id, LeaveReason::Disconnected));
            }
        }
        if publish {
            self.counters.publish(&mut self.published, &self.metrics);
            if let Some(drops) = self.local_port.and_then(super::udp::kernel_drops) {
                self.metrics.kernel_drops.set(drops as i64);
            }
            let rooms = self.rooms.iter().flatten();
            let (mut r, mut p, mut t, mut s) = (0, 0, 0, 0);
            for e in rooms {
                r += 1;
                p += e.members.len();
                t += e.core.track_count();
                s += e.core.subscription_count();
            }
            self.metrics.rooms.set(r);
            self.metrics.participants.set(p as i64);
            self.metrics.published_tracks.set(t as i64);
            self.metrics.subscriptions.set(s as i64);
        }
    }

    fn shutdown(&mut self) {
        self.shutting_down = true;
        for entry in self.rooms.iter_mut().flatten() {
            for w in entry.lobby.drain(..) {
                let _ = w
                    .request
                    .events
                    .try_send(SessionEvent::Close(LeaveReason::ServerShutdown));
            }
        }
        for peer in self.peers.iter_mut().flatten() {
            let _ = peer
                .events
                .try_send(SessionEvent::Close(LeaveReason::ServerShutdown));
            peer.rtc.disconnect();
        }
        self.counters.publish(&mut self.published, &self.metrics);
        tracing::info!("media plane stopped");
    }
}

async fn readable(io: &Option<BatchSocket>) -> std::io::Result<()> {
    match io {
        Some(io) => io.readable().await,
        None => std::future::pending().await,
    }
}

/// The increase of two cumulative per-m-line counters since last seen.
fn delta3(seen: &mut Vec<(Mid, u64, u64)>, mid: Mid, a: u64, b: u64) -> (u64, u64) {
    match seen.iter_mut().find(|(m, _, _)| *m == mid) {
        Some(entry) => {
            let d = (a.saturating_sub(entry.1), b.saturating_sub(entry.2));
            entry.1 = a;
            entry.2 = b;
            d
        }
        None => {
            seen.push((mid, a, b));
            (a, b)
        }
    }
}

/// The increase of one cumulative per-m-line counter since last seen.
fn delta2(seen: &mut Vec<(Mid, u64)>, mid: Mid, a: u64) -> u64 {
    match seen.iter_mut().find(|(m, _)| *m == mid) {
        Some(entry) => {
            let d = a.saturating_sub(entry.1);
            entry.1 = a;
            d
        }
        None => {
            seen.push((mid, a));
            a
        }
    }
}
