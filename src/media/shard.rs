//! One media shard: a thread that owns a UDP socket, the peers placed on it, and for each
//! room with members here a local forwarding core (`plenary_sfu::Room`) for its own
//! subscribers. It knows nothing of meeting rules: the control loop tells it what to do
//! ([`ShardCmd`]) and hears what happened ([`ShardEvent`]).
//!
//! Per datagram: demux to a peer (map lookups), `handle_input` into its WebRTC state, then
//! poll it; each incoming RTP packet goes through the room's local core, whose
//! [`Forward`]s are written into this shard's subscribers (the payload is shared, not
//! copied), and — when other shards have members of the room — into the exchange rings
//! for them ([`super::exchange`]). Packets relayed from other shards take the same path
//! from the core on. No lock, no task and no allocation per forwarded packet: the forward
//! buffer, the dirty list and the timer heap are reused, and each subscriber's outgoing
//! stream is found by its SSRC. Counters are plain fields, published to Prometheus once a
//! second.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plenary_proto::{
    ErrorCode, IceCandidate, LeaveReason, ParticipantInfo, PublishedTrack, ServerMessage,
    SubscriptionUpdate, TrackInfo, TrackSource,
};
use plenary_sfu::{
    AllocatorEvent, Forward, Media, Overload, OverloadLevel, RedEncoder, Room, RoomConfig,
    RoomEvent, RtpIn, SpeakerEvent, Speakers, TrackKey, MAX_LAYERS,
};
use str0m::config::DtlsCert;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output};
use tokio::sync::mpsc;

use super::demux::{is_stun, stun_local_ufrag, Demux};
use super::exchange::{Exchange, Relay};
use super::peer::{core_media, first_codec, InParams, InTrack, OutState, OutTrack, Peer};
use super::tcp::{TcpConn, TcpEvent, TcpLinks, UfragRoutes};
use super::udp::{BatchSocket, SendQueue};
use super::{shard_of, slot_of, PeerId, SessionEvent};
use crate::metrics::{DropReason, MediaCounters, Metrics};

mod adapt;

/// Most tracks one participant may publish.
const MAX_TRACKS_PER_PEER: usize = 8;
/// Most `recvmmsg` batches read before the loop looks at commands and timers again.
const READ_BATCHES: usize = 4;
/// Most relayed packets taken from each other shard per turn.
const RELAY_BATCH: usize = 1024;
/// Most commands handled per turn before the loop looks at the socket again.
const COMMAND_BATCH: usize = 64;
/// Most ICE-TCP frames handled per turn.
const TCP_BATCH: usize = 256;
/// Bound of the shards' event queue into the control loop.
pub const EVENT_QUEUE: usize = 16384;
/// A peer whose client closed the connection is removed after this, unless its session's
/// `leave` comes first (so the others see "left", not "disconnected").
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Packets each outgoing video stream keeps for resends (str0m's default).
const VIDEO_RESEND_PACKETS: usize = 1000;
/// How old a packet may be and still be resent (str0m's default: a receiver stops asking
/// well before).
const VIDEO_RESEND_AGE: Duration = Duration::from_secs(3);
/// The most an outgoing video stream's resends may be of its bytes over a second (str0m's
/// default is 0.15, see the forwarding path): resends never more than the fresh media.
const VIDEO_RESEND_SHARE: f32 = 0.5;

/// The patch that writes `numbers` into `payload`'s VP8 payload descriptor (`None` when the
/// descriptor lacks a field, which [`plenary_sfu::Vp8Numbers::parse`] already ruled out).
fn vp8_patch(payload: &[u8], numbers: plenary_sfu::Vp8Numbers) -> Option<str0m::rtp::Vp8Patch> {
    let descriptor = str0m::rtp::Vp8Descriptor::parse(payload).ok()?;
    let mut patch = descriptor.patch();
    if let Some(pid) = numbers.picture_id {
        patch = patch.picture_id(pid);
    }
    if let Some(tl0) = numbers.tl0_pic_idx {
        patch = patch.tl0_pic_idx(tl0);
    }
    patch.build().ok()
}

/// A room as the media plane names it (assigned by the control loop, never reused).
pub type RoomKey = u32;

/// A published track as every shard needs to know it.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    /// Its key (unique on the server: the shard it was published on is in its top bits).
    pub key: TrackKey,
    /// Who publishes it.
    pub publisher: PeerId,
    /// Its protocol record.
    pub info: TrackInfo,
    /// What it carries.
    pub media: Media,
}

/// A peer for this shard (from the control loop).
#[derive(Debug)]
pub struct AddPeer {
    /// Its id (this shard is in it).
    pub id: PeerId,
    /// Its room.
    pub room: RoomKey,
    /// The room's name (for logs).
    pub room_name: Arc<str>,
    /// Its public record.
    pub info: ParticipantInfo,
    /// It receives the others' media.
    pub can_subscribe: bool,
    /// Sources it may publish now.
    pub can_publish: Vec<TrackSource>,
    /// Its room is in listener mode.
    pub listener_mode: bool,
    /// Its session's queue.
    pub events: mpsc::Sender<SessionEvent>,
    /// When the client asked to join.
    pub started: Instant,
    /// Every track published in the room so far.
    pub tracks: Vec<TrackSpec>,
}

/// What a shard is asked to do.
#[derive(Debug)]
pub enum ShardCmd {
    /// Place a peer here.
    AddPeer(Box<AddPeer>),
    /// Remove a peer (its session is told `closing` with `reason`).
    RemovePeer {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// What a peer may publish changed.
    SetPermissions {
        /// Who.
        peer: PeerId,
        /// Sources it may publish now.
        can_publish: Vec<TrackSource>,
        /// Its room is in listener mode.
        listener_mode: bool,
    },
    /// A track published on another shard (subscribe the local members).
    AddTrack {
        /// The room.
        room: RoomKey,
        /// The track.
        spec: TrackSpec,
    },
    /// A track is gone (unsubscribe; stop receiving it if its publisher is here).
    RemoveTrack {
        /// The room.
        room: RoomKey,
        /// The track.
        track: TrackKey,
    },
    /// Stop (or resume) forwarding a track.
    MuteTrack {
        /// The room.
        room: RoomKey,
        /// The track.
        track: TrackKey,
        /// New state.
        muted: bool,
    },
    /// Which shards have members of a room (one bit each): relay its packets there.
    RoomShards {
        /// The room.
        room: RoomKey,
        /// The shards.
        mask: u64,
    },
    /// A publisher got (or lost) the floor: their microphone is always heard.
    Floor {
        /// The room.
        room: RoomKey,
        /// The publisher.
        peer: PeerId,
        /// New state.
        floor: bool,
    },
    /// Subscribers on another shard need a keyframe of this (local) track.
    KeyframeRequest {
        /// The track.
        track: TrackKey,
        /// The input stream (simulcast layer) that needs one; 0: the main stream.
        stream: u64,
    },
    /// A client's SDP offer.
    Offer {
        /// Who.
        peer: PeerId,
        /// The SDP.
        sdp: String,
        /// Tracks by mid.
        tracks: Vec<PublishedTrack>,
    },
    /// A client's answer to our offer.
    Answer {
        /// Who.
        peer: PeerId,
        /// The SDP.
        sdp: String,
    },
    /// A trickled client candidate.
    Candidate {
        /// Who.
        peer: PeerId,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Pause or resume forwarding of remote tracks to a peer.
    Subscription {
        /// Who.
        peer: PeerId,
        /// The changes.
        tracks: Vec<SubscriptionUpdate>,
    },
    /// An ICE-TCP connection whose first frame named a peer of this shard.
    TcpConnection(Box<TcpConn>),
    /// Close every session and stop.
    Shutdown,
}

/// What a shard tells the control loop.
#[derive(Debug)]
pub enum ShardEvent {
    /// A peer is gone (removed on request, or its media went away).
    PeerLeft {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A peer's offer published a track.
    TrackPublished {
        /// Who.
        peer: PeerId,
        /// The track.
        spec: TrackSpec,
    },
    /// A peer stopped publishing a track.
    TrackUnpublished {
        /// Who.
        peer: PeerId,
        /// The track's protocol id.
        track_id: String,
    },
}

/// How a shard behaves (from the configuration).
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// Remove a peer whose ICE stays disconnected this long.
    pub ice_timeout: Duration,
    /// Estimate each subscriber's bandwidth and choose its video layers and pauses
    /// (`plenary_sfu::Allocator`).
    pub allocate: bool,
    /// In rooms with more microphones than this, forward only this many loudest (plus the
    /// floor holder's); 0 forwards every microphone.
    pub loudest_speakers: usize,
    /// Repeat audio (RED, `plenary_sfu::red`) to listeners on lossy links.
    pub audio_redundancy: bool,
}

/// How a shard talks to the rest of the media plane.
pub struct Links {
    /// This shard's index.
    pub index: usize,
    /// Commands for this shard (from the control loop, sessions and other shards).
    pub commands: mpsc::Receiver<ShardCmd>,
    /// Events for the control loop.
    pub control: mpsc::Sender<ShardEvent>,
    /// Every shard's command queue (for keyframe requests across shards).
    pub shards: Arc<[mpsc::Sender<ShardCmd>]>,
    /// The packet rings to and from the other shards.
    pub exchange: Exchange,
    /// Every shard's overload level (this shard writes its own).
    pub loads: Arc<super::ShardLoads>,
    /// Which shard holds each ICE ufrag (for the ICE-TCP intake).
    pub routes: Arc<UfragRoutes>,
}

/// What ended a wait of the shard's loop.
enum Woke {
    Command(Option<ShardCmd>),
    Readable(bool),
    Tcp(TcpEvent),
    Other,
}

/// A room's replica on this shard.
struct LocalRoom {
    key: RoomKey,
    name: Arc<str>,
    core: Room,
    /// Members placed on this shard.
    members: Vec<PeerId>,
    /// Every published track of the room (local and remote publishers).
    tracks: Vec<TrackSpec>,
    /// Other shards with members of the room (one bit each).
    relay_to: u64,
    /// The loudest-speakers selector, when on.
    speakers: Option<Speakers>,
    /// The room has more microphones than the selector forwards: it gates them.
    gating: bool,
    /// Publishers who have the floor (always heard).
    floor: Vec<PeerId>,
    /// Each video track's layer bitrates at the last reading (for the allocators).
    rates: Vec<(TrackKey, [u64; MAX_LAYERS])>,
}

/// Where a relayed packet's track lives here.
struct TrackRoute {
    room: usize,
    /// The publisher's last payload type, to tell the core when the codec changes.
    last_pt: Option<Pt>,
    /// Its last packets, for redundancy to lossy listeners (audio tracks only).
    red: Option<Box<RedEncoder>>,
}

/// A RED payload built for one audio packet: `(distance, Opus payload type, payload)`.
type RedPayload = (usize, Pt, Arc<[u8]>);

/// The media loop's state. See the module docs.
pub struct Shard {
    index: usize,
    /// The socket (taken out while a batch of datagrams is handled).
    io: Option<BatchSocket>,
    /// Datagrams to send at the end of this turn.
    out: SendQueue,
    /// The address put in `Receive::destination` (our announced candidate).
    local: SocketAddr,
    /// The same for ICE-TCP (our passive TCP candidate), when on.
    tcp_local: Option<SocketAddr>,
    /// ICE-TCP connections of this shard's peers.
    tcp: TcpLinks,
    routes: Arc<UfragRoutes>,
    /// The port the media socket is bound to (for the kernel's drop counter).
    local_port: Option<u16>,
    settings: ShardSettings,
    metrics: Arc<Metrics>,
    cert: DtlsCert,
    candidates: Vec<Candidate>,
    /// Peers by slot. Boxed: a `Peer` (str0m's `Rtc` inline) is kilobytes, and the vector
    /// keeps the high-water mark of slots in use, so an empty slot must cost a pointer.
    peers: Vec<Option<Box<Peer>>>,
    demux: Demux,
    rooms: Vec<Option<LocalRoom>>,
    room_index: HashMap<RoomKey, usize>,
    track_index: HashMap<TrackKey, TrackRoute>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    dirty: Vec<PeerId>,
    forwards: Vec<Forward>,
    to_remove: Vec<(PeerId, LeaveReason)>,
    counters: MediaCounters,
    published: MediaCounters,
    /// Gauges this shard last added to the shared metrics (subscriptions, kernel drops,
    /// ICE-TCP connections).
    gauges_published: (i64, i64, i64),
    commands: mpsc::Receiver<ShardCmd>,
    control: mpsc::Sender<ShardEvent>,
    /// Events the control loop's queue had no room for yet (sent first, next turn).
    outbox: VecDeque<ShardEvent>,
    shards: Arc<[mpsc::Sender<ShardCmd>]>,
    exchange: Exchange,
    /// Relayed packets taken from the rings this turn (reused).
    relay_batch: Vec<Relay>,
    /// RED payloads of the audio packet being forwarded, and the buffer they are built in.
    red_out: Vec<RedPayload>,
    red_buf: Vec<u8>,
    /// Allocator decisions being carried out (reused).
    alloc_events: Vec<AllocatorEvent>,
    /// Speaker selector decisions being carried out (reused).
    speaker_events: Vec<SpeakerEvent>,
    next_track: u64,
    shutting_down: bool,
    /// Every shard's overload level; this shard's is written once a second.
    loads: Arc<super::ShardLoads>,
    /// This shard's load level and what it sheds (`plenary_sfu::overload`).
    overload: Overload,
    /// Wall-clock time the loop spent working since `busy_since`.
    busy: Duration,
    busy_since: Instant,
    /// The kernel's drop count at the socket when last sampled.
    kernel_drops_seen: u64,
    /// Packets lost on the way in (estimated, fractional), since the start.
    lost_in: f64,
    /// Packets subscribers reported lost (fractional), since the start.
    lost_out: f64,
}

impl Shard {
    /// A shard around a bound, non-blocking socket, announcing `announce` as its UDP
    /// candidates and `tcp_announce` as passive TCP ones (the server's shared ICE-TCP port).
    pub fn new(
        socket: std::net::UdpSocket,
        announce: Vec<SocketAddr>,
        tcp_announce: Vec<SocketAddr>,
        settings: ShardSettings,
        metrics: Arc<Metrics>,
        links: Links,
    ) -> Result<Shard, String> {
        let socket = tokio::net::UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or("cannot generate a DTLS certificate")?;
        let mut candidates = announce
            .iter()
            .map(|a| Candidate::host(*a, "udp").map_err(|e| format!("candidate {a}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        for a in &tcp_announce {
            let c = Candidate::builder()
                .tcp()
                .host(*a)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| format!("TCP candidate {a}: {e}"))?;
            candidates.push(c);
        }
        let local = *announce.first().ok_or("no address to announce")?;
        let Links {
            index,
            commands,
            control,
            shards,
            exchange,
            loads,
            routes,
        } = links;
        Ok(Shard {
            index,
            local_port: socket.local_addr().ok().map(|a| a.port()),
            io: Some(BatchSocket::new(socket)),
            out: SendQueue::default(),
            local,
            tcp_local: tcp_announce.first().copied(),
            tcp: TcpLinks::default(),
            routes,
            settings,
            metrics,
            cert,
            candidates,
            peers: Vec::new(),
            demux: Demux::default(),
            rooms: Vec::new(),
            room_index: HashMap::new(),
            track_index: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            forwards: Vec::new(),
            to_remove: Vec::new(),
            counters: MediaCounters::default(),
            published: MediaCounters::default(),
            gauges_published: (0, 0, 0),
            commands,
            control,
            outbox: VecDeque::new(),
            shards,
            exchange,
            relay_batch: Vec::new(),
            red_out: Vec::new(),
            red_buf: Vec::new(),
            alloc_events: Vec::new(),
            speaker_events: Vec::new(),
            next_track: 1,
            shutting_down: false,
            loads,
            overload: Overload::default(),
            busy: Duration::ZERO,
            busy_since: Instant::now(),
            kernel_drops_seen: 0,
            lost_in: 0.0,
            lost_out: 0.0,
        })
    }

    /// Runs until [`ShardCmd::Shutdown`] or until every command sender is gone.
    ///
    /// Timers are checked against the clock on every turn, not only when tokio's timer
    /// fires: under overload the socket is always readable and the loop may not yield to
    /// the runtime's timer driver for a long time, and ICE, DTLS, RTCP and housekeeping
    /// (metrics, ICE timeouts) must not stall then.
    pub async fn run(mut self) {
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
            let woke = tokio::select! {
                cmd = self.commands.recv() => Woke::Command(cmd),
                ready = readable(&self.io) => Woke::Readable(ready.is_ok()),
                _ = self.exchange.woken() => Woke::Other,
                Some(event) = self.tcp.events.recv() => Woke::Tcp(event),
                _ = tokio::time::sleep_until(next_timer.into()) => Woke::Other,
            };
            // From here to the end of the turn the loop works (for the overload monitor).
            let work_started = Instant::now();
            match woke {
                Woke::Command(Some(ShardCmd::Shutdown) | None) => {
                    self.shutdown();
                    return;
                }
                Woke::Command(Some(cmd)) => self.handle_command(cmd),
                Woke::Readable(true) => self.read_datagrams(),
                Woke::Tcp(event) => self.handle_tcp_event(Instant::now(), event),
                Woke::Readable(false) | Woke::Other => {}
            }
            // More ICE-TCP frames that are already waiting, bounded per turn.
            for _ in 0..TCP_BATCH {
                match self.tcp.events.try_recv() {
                    Ok(event) => self.handle_tcp_event(Instant::now(), event),
                    Err(_) => break,
                }
            }
            // More commands that are already waiting (a join storm), bounded per turn.
            for _ in 0..COMMAND_BATCH {
                match self.commands.try_recv() {
                    Ok(ShardCmd::Shutdown) => {
                        self.shutdown();
                        return;
                    }
                    Ok(cmd) => self.handle_command(cmd),
                    Err(_) => break,
                }
            }
            self.drain_relays();
            let now = Instant::now();
            self.handle_timers(now);
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING;
                ticks = ticks.wrapping_add(1);
                self.housekeeping(now, ticks.is_multiple_of(10));
            }
            self.flush();
            self.exchange.wake();
            self.send_events();
            self.busy += work_started.elapsed();
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
        self.peers
            .get_mut(slot_of(id))?
            .as_deref_mut()
            .filter(|p| p.id == id)
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers
            .get(slot_of(id))?
            .as_deref()
            .filter(|p| p.id == id)
    }

    fn mark_dirty(&mut self, id: PeerId) {
        if let Some(p) = self.peer_mut(id) {
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn emit(&mut self, event: ShardEvent) {
        self.outbox.push_back(event);
    }

    /// Hands queued events to the control loop (what does not fit waits for the next turn).
    fn send_events(&mut self) {
        while let Some(event) = self.outbox.pop_front() {
            match self.control.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.outbox.push_front(event);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.outbox.clear();
                    return;
                }
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
            self.counters.drop_datagram(if is_stun(data) {
                DropReason::UnknownUfrag
            } else {
                DropReason::UnknownSource
            });
            return;
        };
        let local = self.local;
        let Some(peer) = self.peer_mut(id) else {
            self.counters.datagrams_unknown += 1;
            self.counters.drop_datagram(DropReason::UnknownSource);
            return;
        };
        let Ok(contents) = data.try_into() else {
            self.counters.datagrams_rejected += 1;
            self.counters.drop_datagram(DropReason::Malformed);
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
            self.counters.drop_datagram(DropReason::NotAccepted);
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
                self.counters.drop_datagram(DropReason::Refused);
            }
        }
        self.drive(id);
    }

    fn handle_tcp_event(&mut self, now: Instant, event: TcpEvent) {
        match event {
            TcpEvent::Frame { remote, data } => self.handle_tcp_frame(now, remote, &data),
            TcpEvent::Closed { remote, refusal } => {
                if let Some(why) = refusal {
                    tracing::debug!(%remote, "ICE-TCP connection cut off: {why}");
                    self.metrics.ice_tcp_refused.inc();
                }
                self.tcp.closed(remote);
            }
        }
    }

    /// One ICE-TCP frame: to the peer its STUN ufrag names, else to the peer its connection
    /// belongs to. A connection whose frames keep being refused is cut off.
    fn handle_tcp_frame(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) {
        self.counters.tcp_frames_in += 1;
        let (Some(bound), Some(destination)) = (self.tcp.peer_of(remote), self.tcp_local) else {
            return; // cut off meanwhile
        };
        let named = match stun_local_ufrag(data) {
            Some(ufrag) => self.demux.peer_by_ufrag(ufrag),
            None => bound,
        };
        let accepted = match named {
            Some(id) if bound.is_none_or(|b| b == id) => {
                let stun = is_stun(data);
                let ok = self.peer_mut(id).is_some_and(|peer| {
                    let Ok(contents) = data.try_into() else {
                        return false;
                    };
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Tcp,
                            source: remote,
                            destination,
                            contents,
                        },
                    );
                    peer.rtc.accepts(&input) && peer.rtc.handle_input(input).is_ok()
                });
                if ok && (!stun || self.tcp.bind(remote, id)) {
                    self.drive(id);
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if accepted {
            self.tcp.accepted(remote);
        } else {
            self.counters.datagrams_rejected += 1;
            if self.tcp.rejected(remote) {
                tracing::debug!(%remote, "ICE-TCP connection cut off: its frames are refused");
                self.metrics.ice_tcp_refused.inc();
            }
        }
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
                // A client that hung up (DTLS close) is removed after CLOSE_GRACE unless its
                // session's `leave`, with the real reason, comes first.
                if peer.closed_at.is_none() {
                    self.to_remove.push((id, LeaveReason::Disconnected));
                }
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
                Output::Transmit(t) if t.proto == Protocol::Tcp => {
                    if self.tcp.send(t.destination, t.contents.into()) {
                        self.counters.tcp_frames_out += 1;
                    } else {
                        self.counters.send_errors += 1;
                    }
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
            let id = plenary_sfu::ParticipantKey(key);
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
                    tracing::debug!(target: "plenary::keyframe", peer = id.0, track = track.0,
                        state = entry.core.describe_down(id, track).as_deref().unwrap_or("none"),
                        "keyframe request from a subscriber");
                    let _ = entry
                        .core
                        .handle_keyframe_request(Instant::now(), id, track);
                }
                self.handle_room_events(room);
            }
            Event::EgressBitrateEstimate(kind) => {
                let now = Instant::now();
                self.allocation_estimate(now, id, kind);
                if let Some(room) = self.peer(id).map(|p| p.room) {
                    self.handle_room_events(room);
                }
            }
            Event::MediaEgressStats(s) => {
                let Some(peer) = self.peer_mut(id) else {
                    return;
                };
                let (nacks, _plis) = delta3(&mut peer.egress_seen, s.mid, s.nacks, s.plis + s.firs);
                let sent = delta2(&mut peer.egress_packets, s.mid, s.packets);
                // Loss over every stream it receives, weighted by packets, once a second: a
                // single thin stream's fraction lost is too noisy to act on.
                let now = Instant::now();
                let reported_lost = s.loss.map_or(0.0, |l| f64::from(l) * sent as f64);
                if s.loss.is_some() {
                    peer.loss_window.0 += reported_lost;
                    peer.loss_window.1 += sent;
                }
                let (lost, packets, since) = peer.loss_window;
                let window_done = now.saturating_duration_since(since) >= Duration::from_secs(1);
                if window_done {
                    peer.loss_window = (0.0, 0, now);
                }
                if window_done && packets >= 50 {
                    peer.handle_loss_report(now, lost / packets as f64);
                }
                self.lost_out += reported_lost;
                self.counters.rtp_lost_out = self.lost_out as u64;
                self.counters.nacks_received += nacks;
                if window_done && packets >= 50 {
                    self.allocation_loss(now, id, (lost / packets as f64) as f32);
                    if let Some(room) = self.peer(id).map(|p| p.room) {
                        self.handle_room_events(room);
                    }
                }
            }
            Event::MediaIngressStats(s) => {
                let Some(peer) = self.peer_mut(id) else {
                    return;
                };
                // Per m-line and RID: a simulcast m-line reports each layer on its own.
                let (nacks, packets) =
                    delta_rid(&mut peer.ingress_seen, (s.mid, s.rid), s.nacks, s.packets);
                self.counters.nacks_sent += nacks;
                if let Some(loss) = s.loss.filter(|l| (0.0..1.0).contains(l)) {
                    // `packets` arrived of the `packets / (1 - loss)` sent.
                    self.lost_in += f64::from(loss) * packets as f64 / f64::from(1.0 - loss);
                    self.counters.rtp_lost_in = self.lost_in as u64;
                }
            }
            Event::Closed => {
                // The client hung up. Its session's `leave` normally follows at once and
                // removes it with the real reason; if not, it goes shortly.
                if let Some(peer) = self.peer_mut(id) {
                    peer.closed_at.get_or_insert_with(Instant::now);
                }
            }
            _ => {}
        }
    }

    /// One RTP packet from a local publisher: through the room's core to the local
    /// subscribers, and to the other shards with members of the room.
    fn forward(&mut self, from: PeerId, pkt: RtpPacket) {
        let Some(peer) = self.peer_mut(from) else {
            return;
        };
        let Some((index, layer)) = peer.in_track_for(pkt.header.ssrc) else {
            return; // not a published track (e.g. a source the grant forbids)
        };
        let Some(InParams {
            params,
            changed,
            red,
        }) = peer.in_params(index, pkt.header.payload_type)
        else {
            return;
        };
        let mut pkt = pkt;
        if red {
            // A publisher sending RED itself: forward the primary, add redundancy per listener.
            let Some(range) = plenary_sfu::red::primary(&pkt.payload) else {
                return;
            };
            pkt.payload = Arc::from(&pkt.payload[range]);
        }
        let pt = params.pt();
        let track = peer.in_tracks[index].key;
        let room = peer.room;
        let video = params.spec().codec.kind() == MediaKind::Video;
        self.counters.rtp_received += 1;
        let mut forwards = std::mem::take(&mut self.forwards);
        forwards.clear();
        let Some(entry) = self.rooms.get_mut(room).and_then(|r| r.as_mut()) else {
            self.forwards = forwards;
            return;
        };
        if changed && video {
            let media = core_media(plenary_proto::TrackKind::Video, Some(params.spec().codec));
            let _ = entry.core.set_media(track, media);
        }
        entry.core.handle_rtp(
            track,
            &RtpIn {
                stream: *pkt.header.ssrc as u64,
                layer,
                seq: *pkt.seq_no,
                ts: pkt.header.timestamp,
                payload: &pkt.payload,
                at: pkt.timestamp,
            },
            &mut forwards,
        );
        let ext = &pkt.header.ext_vals;
        if !video {
            if let Some(sp) = entry.speakers.as_mut() {
                let level = ext.audio_level.map_or_else(
                    || plenary_sfu::speakers::level_from_size(pkt.payload.len()),
                    |l| l.unsigned_abs(),
                );
                sp.handle_level(pkt.timestamp, track, level, ext.voice_activity);
            }
        }
        let relay_to = entry.relay_to;
        if relay_to != 0 {
            let relay = Relay {
                track,
                stream: *pkt.header.ssrc as u64,
                layer,
                seq: *pkt.seq_no,
                ts: pkt.header.timestamp,
                marker: pkt.header.marker,
                pt,
                params,
                audio_level: ext.audio_level,
                voice_activity: ext.voice_activity,
                video_orientation: ext.video_orientation,
                payload: Arc::clone(&pkt.payload),
                at: pkt.timestamp,
            };
            let mut mask = relay_to;
            while mask != 0 {
                let to = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                self.exchange.send(to, relay.clone());
            }
        }
        if !video {
            self.prepare_red(
                track,
                *pkt.seq_no,
                pkt.header.timestamp,
                &pkt.payload,
                &forwards,
            );
        }
        let red = std::mem::take(&mut self.red_out);
        let out = Egress {
            pt,
            params,
            red: &red,
            marker: pkt.header.marker,
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            payload: &pkt.payload,
            at: pkt.timestamp,
            video,
        };
        self.write_forwards(&forwards, &out);
        self.red_out = red;
        self.forwards = forwards;
        self.handle_room_events(room);
    }

    /// Packets other shards relayed for this shard's subscribers (through a reused buffer:
    /// the rings are drained first, then each packet goes through the room's core).
    fn drain_relays(&mut self) {
        let mut batch = std::mem::take(&mut self.relay_batch);
        self.exchange.drain(RELAY_BATCH, |r| batch.push(r));
        for r in batch.drain(..) {
            self.relay_in(r);
        }
        self.relay_batch = batch;
    }

    fn relay_in(&mut self, r: Relay) {
        let Some(route) = self.track_index.get_mut(&r.track) else {
            return; // a track this shard does not (or no longer) know
        };
        let room = route.room;
        let video = r.params.spec().codec.kind() == MediaKind::Video;
        let changed = route.last_pt != Some(r.pt);
        route.last_pt = Some(r.pt);
        let mut forwards = std::mem::take(&mut self.forwards);
        forwards.clear();
        let Some(entry) = self.rooms.get_mut(room).and_then(|e| e.as_mut()) else {
            self.forwards = forwards;
            return;
        };
        if changed && video {
            let media = core_media(plenary_proto::TrackKind::Video, Some(r.params.spec().codec));
            let _ = entry.core.set_media(r.track, media);
        }
        if !video {
            if let Some(sp) = entry.speakers.as_mut() {
                let level = r.audio_level.map_or_else(
                    || plenary_sfu::speakers::level_from_size(r.payload.len()),
                    |l| l.unsigned_abs(),
                );
                sp.handle_level(r.at, r.track, level, r.voice_activity);
            }
        }
        entry.core.handle_rtp(
            r.track,
            &RtpIn {
                stream: r.stream,
                layer: r.layer,
                seq: r.seq,
                ts: r.ts,
                payload: &r.payload,
                at: r.at,
            },
            &mut forwards,
        );
        if !video {
            self.prepare_red(r.track, r.seq, r.ts, &r.payload, &forwards);
        }
        let red = std::mem::take(&mut self.red_out);
        let out = Egress {
            pt: r.pt,
            params: r.params,
            red: &red,
            marker: r.marker,
            audio_level: r.audio_level,
            voice_activity: r.voice_activity,
            video_orientation: r.video_orientation,
            payload: &r.payload,
            at: r.at,
            video,
        };
        self.write_forwards(&forwards, &out);
        self.red_out = red;
        self.forwards = forwards;
        self.handle_room_events(room);
    }

    /// Builds the RED payloads the listeners of this audio packet need (one per distance and
    /// Opus payload type, shared by all of them), then remembers the packet for the next.
    fn prepare_red(
        &mut self,
        track: TrackKey,
        seq: u64,
        ts: u32,
        payload: &[u8],
        forwards: &[Forward],
    ) {
        self.red_out.clear();
        let Some(enc) = self
            .track_index
            .get_mut(&track)
            .and_then(|r| r.red.as_mut())
        else {
            return;
        };
        for f in forwards {
            let Some(sub) = self
                .peers
                .get(slot_of(f.subscriber))
                .and_then(|p| p.as_ref())
            else {
                continue;
            };
            let Some((distance, opus, _)) = sub.red_choice().filter(|_| sub.id == f.subscriber)
            else {
                continue;
            };
            if self.red_out.iter().any(|r| r.0 == distance && r.1 == opus) {
                continue;
            }
            enc.encode(seq as u16, ts, payload, *opus, distance, &mut self.red_buf);
            self.red_out
                .push((distance, opus, Arc::from(&self.red_buf[..])));
        }
        enc.push(seq as u16, ts, payload);
    }

    /// Writes one packet into each forward's subscriber (encrypted when the peer is polled).
    fn write_forwards(&mut self, forwards: &[Forward], e: &Egress<'_>) {
        for f in forwards {
            let Some(sub) = self.peer_mut(f.subscriber) else {
                continue;
            };
            let Some(mut pt) = sub.out_pt(f.slot, e.pt, e.params) else {
                continue;
            };
            let mut payload = e.payload;
            if !e.video {
                sub.audio_sent.0 += e.payload.len() as u64;
                sub.audio_sent.1 += 1;
            }
            if let Some((distance, opus, red_pt)) = sub.red_choice().filter(|_| !e.video) {
                if let Some(r) = e
                    .red
                    .iter()
                    .find(|r| r.0 == distance && r.1 == opus && opus == pt)
                {
                    pt = red_pt;
                    payload = &r.2;
                }
            }
            let Some(Some(out)) = sub.out.get_mut(f.slot as usize) else {
                continue;
            };
            let OutState::Open(mid) = out.state else {
                continue;
            };
            // The outgoing stream by its SSRC (one map lookup). str0m may give the stream a
            // new SSRC when the session is renegotiated, so a miss looks it up by mid again.
            let cached = out.ssrc;
            let mut api = sub.rtc.direct_api();
            let hit = match cached {
                Some(ssrc) => api.stream_tx(&ssrc),
                None => None,
            };
            let tx = match hit {
                Some(tx) => tx,
                None => match api.stream_tx_by_mid(mid, None) {
                    Some(tx) => tx,
                    None => continue,
                },
            };
            let ssrc = tx.ssrc();
            if cached != Some(ssrc) && e.video {
                // A new outgoing video stream (its first packet): str0m's default drops every
                // queued resend once resends pass 15 % of the stream's bytes in a second,
                // which a thin low layer's keyframe losing a few packets can reach on a lossy
                // link; the lost packets would then never come and the picture freeze until
                // the receiver gives up and asks for a keyframe (~3 s in Chrome). Resends are
                // held to what the fresh media carries instead; the pacer holds the sum of
                // both to the subscriber's estimate.
                tx.set_rtx_cache(
                    VIDEO_RESEND_PACKETS,
                    VIDEO_RESEND_AGE,
                    Some(VIDEO_RESEND_SHARE),
                );
            }
            let ext = ExtensionValues {
                audio_level: e.audio_level,
                voice_activity: e.voice_activity,
                video_orientation: e.video_orientation,
                ..ExtensionValues::default()
            };
            let mut write = RtpWrite::new(pt, f.seq.into(), f.ts, e.at, Arc::clone(payload))
                .marker(e.marker)
                .ext_vals(ext)
                .nackable(e.video);
            if let Some(patch) = f.vp8.and_then(|n| vp8_patch(payload, n)) {
                // Written into the packet as str0m serialises it (and its resends): the
                // shared payload is not copied.
                write = write.vp8_patch(patch);
            }
            tx.write_rtp(write);
            if cached != Some(ssrc) {
                if let Some(Some(out)) = sub.out.get_mut(f.slot as usize) {
                    out.ssrc = Some(ssrc);
                }
            }
            self.counters.rtp_forwarded += 1;
            self.mark_dirty(f.subscriber);
        }
    }

    // ---- rooms -------------------------------------------------------------------------

    fn room_mut(&mut self, room: usize) -> Option<&mut LocalRoom> {
        self.rooms.get_mut(room)?.as_mut()
    }

    fn room_slot(&self, key: RoomKey) -> Option<usize> {
        self.room_index.get(&key).copied()
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
                    let Some(spec) = entry.tracks.iter().find(|t| t.key == track) else {
                        continue;
                    };
                    let out = OutTrack {
                        track,
                        track_id: spec.info.id.clone(),
                        publisher_id: spec.info.participant_id.clone(),
                        kind: match spec.info.kind {
                            plenary_proto::TrackKind::Audio => MediaKind::Audio,
                            plenary_proto::TrackKind::Video => MediaKind::Video,
                        },
                        state: OutState::ToOpen,
                        pt_map: None,
                        ssrc: None,
                    };
                    if let Some(sub) = self.peer_mut(subscriber) {
                        sub.add_out(out);
                    }
                    self.allocation_subscribe(Instant::now(), subscriber, room, track);
                    self.mark_dirty(subscriber);
                }
                RoomEvent::Unsubscribe {
                    subscriber, track, ..
                } => {
                    let mut video = false;
                    if let Some(sub) = self.peer_mut(subscriber) {
                        video = sub
                            .out
                            .iter()
                            .flatten()
                            .any(|o| o.track == track && o.kind == MediaKind::Video);
                        sub.remove_out(track);
                    }
                    self.allocation_unsubscribe(Instant::now(), subscriber, track, video);
                    self.mark_dirty(subscriber);
                }
                RoomEvent::RequestKeyframe {
                    publisher,
                    track,
                    stream,
                } => {
                    if shard_of(publisher) != self.index {
                        if let Some(tx) = self.shards.get(shard_of(publisher)) {
                            let _ = tx.try_send(ShardCmd::KeyframeRequest { track, stream });
                        }
                        continue;
                    }
                    let Some(p) = self.peer_mut(publisher) else {
                        continue;
                    };
                    let Some(mid) = p.in_tracks.iter().find(|t| t.key == track).map(|t| t.mid)
                    else {
                        continue;
                    };
                    // The layer's own stream when known, else the track's main stream.
                    let mut api = p.rtc.direct_api();
                    let ssrc = str0m::rtp::Ssrc::from(stream as u32);
                    let rx = match stream {
                        0 => api.stream_rx_by_mid(mid, None),
                        _ => api.stream_rx(&ssrc),
                    };
                    if let Some(rx) = rx {
                        tracing::debug!(target: "plenary::keyframe", track = track.0, stream, "keyframe request to the publisher");
                        rx.request_keyframe(KeyframeRequestKind::Pli);
                        self.counters.keyframe_requests_sent += 1;
                    }
                    self.mark_dirty(publisher);
                }
            }
        }
    }

    /// Adds a track to a local room (from a local publisher, or another shard's).
    fn add_track(&mut self, room: usize, spec: TrackSpec) {
        let local = shard_of(spec.publisher) == self.index;
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        if entry.tracks.iter().any(|t| t.key == spec.key) {
            return;
        }
        let added = if local {
            entry
                .core
                .handle_publish(spec.publisher, spec.key, spec.media)
        } else {
            entry
                .core
                .handle_publish_remote(spec.publisher, spec.key, spec.media)
        };
        if added.is_err() {
            return;
        }
        if spec.info.muted {
            let _ = entry.core.handle_mute(spec.key, true);
        }
        let key = spec.key;
        let audio = spec.info.kind == plenary_proto::TrackKind::Audio;
        let publisher = spec.publisher;
        entry.tracks.push(spec);
        self.track_index.insert(
            key,
            TrackRoute {
                room,
                last_pt: None,
                red: audio.then(Box::default),
            },
        );
        if audio {
            self.speakers_add(Instant::now(), room, key, publisher);
        }
        self.handle_room_events(room);
    }

    /// Removes a track from a local room (and from its publisher, if that is here).
    /// Returns its spec.
    fn remove_track(&mut self, room: usize, key: TrackKey) -> Option<TrackSpec> {
        let entry = self.room_mut(room)?;
        let pos = entry.tracks.iter().position(|t| t.key == key)?;
        let spec = entry.tracks.remove(pos);
        let _ = entry.core.handle_unpublish(key);
        self.track_index.remove(&key);
        if spec.info.kind == plenary_proto::TrackKind::Audio {
            self.speakers_remove(room, key);
        }
        if let Some(p) = self.peer_mut(spec.publisher) {
            p.in_tracks.retain(|t| t.key != key);
            p.ssrc_index.clear();
        }
        self.handle_room_events(room);
        Some(spec)
    }

    // ---- commands ----------------------------------------------------------------------

    fn handle_command(&mut self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::AddPeer(add) => self.add_peer(*add),
            ShardCmd::RemovePeer { peer, reason } => self.to_remove.push((peer, reason)),
            ShardCmd::SetPermissions {
                peer,
                can_publish,
                listener_mode,
            } => {
                if let Some(p) = self.peer_mut(peer) {
                    p.can_publish = can_publish;
                    p.listener_mode = listener_mode;
                }
            }
            ShardCmd::AddTrack { room, spec } => {
                if let Some(slot) = self.room_slot(room) {
                    self.add_track(slot, spec);
                }
            }
            ShardCmd::RemoveTrack { room, track } => {
                if let Some(slot) = self.room_slot(room) {
                    self.remove_track(slot, track);
                }
            }
            ShardCmd::MuteTrack { room, track, muted } => {
                if let Some(entry) = self.room_slot(room).and_then(|s| self.room_mut(s)) {
                    let _ = entry.core.handle_mute(track, muted);
                    if let Some(t) = entry.tracks.iter_mut().find(|t| t.key == track) {
                        t.info.muted = muted;
                    }
                }
            }
            ShardCmd::RoomShards { room, mask } => {
                let me = 1u64 << self.index;
                if let Some(entry) = self.room_slot(room).and_then(|s| self.room_mut(s)) {
                    entry.relay_to = mask & !me;
                }
            }
            ShardCmd::Floor { room, peer, floor } => {
                if let Some(slot) = self.room_slot(room) {
                    self.speakers_floor(Instant::now(), slot, peer, floor);
                }
            }
            ShardCmd::KeyframeRequest { track, stream } => {
                let Some(room) = self.track_index.get(&track).map(|r| r.room) else {
                    return;
                };
                if let Some(entry) = self.room_mut(room) {
                    let _ =
                        entry
                            .core
                            .handle_remote_keyframe_request(Instant::now(), track, stream);
                }
                self.handle_room_events(room);
            }
            ShardCmd::Offer { peer, sdp, tracks } => self.offer(peer, &sdp, tracks),
            ShardCmd::Answer { peer, sdp } => self.answer(peer, &sdp),
            ShardCmd::Candidate { peer, candidate } => self.candidate(peer, candidate),
            ShardCmd::Subscription { peer, tracks } => {
                self.client_subscription(Instant::now(), peer, tracks)
            }
            ShardCmd::TcpConnection(conn) => {
                let remote = conn.remote;
                match self.tcp.adopt(*conn) {
                    Ok(first) => self.handle_tcp_frame(Instant::now(), remote, &first),
                    Err(e) => tracing::debug!(%remote, "ICE-TCP connection lost: {e}"),
                }
            }
            ShardCmd::Shutdown => {}
        }
    }

    /// Places a peer here, in its room's replica (made on first use, with every track the
    /// room has).
    fn add_peer(&mut self, add: AddPeer) {
        if self.shutting_down {
            let _ = add
                .events
                .try_send(SessionEvent::Close(LeaveReason::ServerShutdown));
            self.emit(ShardEvent::PeerLeft {
                peer: add.id,
                reason: LeaveReason::ServerShutdown,
            });
            return;
        }
        let room = match self.room_slot(add.room) {
            Some(r) => r,
            None => {
                let entry = LocalRoom {
                    key: add.room,
                    name: Arc::clone(&add.room_name),
                    core: Room::new(RoomConfig::default()),
                    members: Vec::new(),
                    tracks: Vec::new(),
                    relay_to: 0,
                    speakers: self.new_speakers(),
                    gating: false,
                    floor: Vec::new(),
                    rates: Vec::new(),
                };
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
                self.room_index.insert(add.room, slot);
                slot
            }
        };
        for spec in &add.tracks {
            // Tracks of peers on this shard are known here first; one missing here was
            // unpublished meanwhile.
            if shard_of(spec.publisher) != self.index {
                self.add_track(room, spec.clone());
            }
        }
        let id = add.id;
        let slot = slot_of(id);
        if self.peers.len() <= slot {
            self.peers.resize_with(slot + 1, || None);
        }
        if let Some(old) = self.peers[slot].take() {
            // The control loop reuses a slot only after this shard reported it gone.
            tracing::warn!(peer = old.id.0, "slot reused before its peer was removed");
        }
        let mut peer = Peer::new(
            id,
            room,
            &add,
            &self.cert,
            &self.candidates,
            self.settings
                .allocate
                .then_some(adapt::INITIAL_ESTIMATE_BPS),
        );
        peer.red = plenary_sfu::RedPolicy::new(self.settings.audio_redundancy);
        self.demux.add_peer(id, peer.ufrag.clone());
        self.routes.insert(&peer.ufrag, self.index);
        self.peers[slot] = Some(Box::new(peer));
        if let Some(entry) = self.room_mut(room) {
            let _ = entry.core.handle_join(id, add.can_subscribe);
            entry.members.push(id);
        }
        self.handle_room_events(room);
        self.mark_dirty(id);
        tracing::info!(peer = id.0, shard = self.index, room = %add.room_name, "joined");
    }

    fn offer(&mut self, id: PeerId, sdp: &str, tracks: Vec<PublishedTrack>) {
        let index = self.index;
        let next_track = &mut self.next_track;
        let Some(peer) = self.peers.get_mut(slot_of(id)).and_then(|p| p.as_mut()) else {
            return;
        };
        if peer.id != id {
            return;
        }
        let answer = match peer.accept_offer(sdp) {
            Ok(a) => a,
            Err(message) => {
                peer.send(ServerMessage::error(ErrorCode::BadSdp, message));
                return;
            }
        };
        if let Some(old) = peer.take_ice_restart() {
            // The client restarted ICE (its path broke): same session, new credentials.
            tracing::info!(peer = id.0, restarts = peer.ice_restarts, "ICE restart");
            self.demux.rename(id, &old, peer.ufrag.clone());
            self.routes.remove(&old);
            self.routes.insert(&peer.ufrag, index);
            self.metrics.ice_restarts.inc();
        }

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
                    format!(
                        "mid {:?} carries {kind:?}, not {}",
                        t.mid,
                        t.source.as_str()
                    ),
                ));
                continue;
            }
            if !peer.can_publish.contains(&t.source) {
                let why = if peer.listener_mode {
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
            let key = TrackKey(((index as u64) << 48) | *next_track);
            *next_track += 1;
            let info = TrackInfo {
                id: format!("TR_{:x}", key.0),
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
            new_tracks.push(TrackSpec {
                key,
                publisher: id,
                info,
                media,
            });
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
        // The control loop hears of the tracks before the client hears the answer, so a
        // `mute` the client sends on seeing its track ids finds them registered.
        let room = peer.room;
        for spec in &new_tracks {
            self.outbox.push_back(ShardEvent::TrackPublished {
                peer: id,
                spec: spec.clone(),
            });
        }
        self.send_events();
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        peer.send(ServerMessage::Answer {
            sdp: answer,
            tracks: mappings,
        });
        for (code, message) in errors {
            peer.send(ServerMessage::error(code, message));
        }
        for key in gone {
            if let Some(spec) = self.remove_track(room, key) {
                self.emit(ShardEvent::TrackUnpublished {
                    peer: id,
                    track_id: spec.info.id,
                });
            }
        }
        for spec in new_tracks {
            self.add_track(room, spec);
        }
        self.decide_allocation(id, sdp);
        self.mark_dirty(id);
    }

    fn answer(&mut self, id: PeerId, sdp: &str) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        match peer.accept_answer(sdp) {
            Ok(opened) => {
                self.bind_opened(id, opened);
                self.decide_allocation(id, sdp);
            }
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

    // ---- leaving -----------------------------------------------------------------------

    fn remove_peer(&mut self, id: PeerId, reason: LeaveReason) {
        let Some(peer) = self
            .peers
            .get_mut(slot_of(id))
            .and_then(|p| p.take_if(|p| p.id == id))
        else {
            return;
        };
        self.demux.remove_peer(id, &peer.ufrag);
        self.routes.remove(&peer.ufrag);
        self.tcp.cut_peer(id);
        let _ = peer.events.try_send(SessionEvent::Close(reason));
        tracing::info!(peer = id.0, ?reason, "left");
        self.emit(ShardEvent::PeerLeft { peer: id, reason });
        let room = peer.room;
        let Some(entry) = self.room_mut(room) else {
            return;
        };
        entry.members.retain(|m| *m != id);
        let _ = entry.core.handle_leave(id);
        let mine: Vec<(TrackKey, bool)> = entry
            .tracks
            .iter()
            .filter(|t| t.publisher == id)
            .map(|t| (t.key, t.info.kind == plenary_proto::TrackKind::Audio))
            .collect();
        entry.tracks.retain(|t| t.publisher != id);
        entry.floor.retain(|p| *p != id);
        for (key, audio) in mine {
            self.track_index.remove(&key);
            if audio {
                self.speakers_remove(room, key);
            }
        }
        self.handle_room_events(room);
        self.close_room_if_empty(room);
    }

    fn close_room_if_empty(&mut self, room: usize) {
        let empty = self.rooms[room]
            .as_ref()
            .is_some_and(|e| e.members.is_empty());
        if !empty {
            return;
        }
        if let Some(entry) = self.rooms[room].take() {
            self.room_index.remove(&entry.key);
            for t in &entry.tracks {
                self.track_index.remove(&t.key);
            }
            tracing::debug!(room = %entry.name, shard = self.index, "room replica closed");
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
        self.speaker_timers(now);
        self.allocation_timers(now);
        if publish {
            self.refresh_layers(now);
        }
        for room in 0..self.rooms.len() {
            let due = self.rooms[room]
                .as_ref()
                .is_some_and(|e| e.core.poll_timeout().is_some_and(|t| t <= now));
            if due {
                if let Some(entry) = self.room_mut(room) {
                    entry.core.handle_timeout(now);
                }
                self.handle_room_events(room);
            }
        }
        let timeout = self.settings.ice_timeout;
        for peer in self.peers.iter().flatten() {
            let ice_gone = peer
                .disconnected_since
                .is_some_and(|t| now.saturating_duration_since(t) >= timeout);
            let hung_up = peer
                .closed_at
                .is_some_and(|t| now.saturating_duration_since(t) >= CLOSE_GRACE);
            if ice_gone || hung_up {
                self.to_remove.push((peer.id, LeaveReason::Disconnected));
            }
        }
        if publish {
            self.counters.relayed = self.exchange.sent;
            self.counters.relay_drops = self.exchange.dropped;
            self.counters.publish(&mut self.published, &self.metrics);
            let subscriptions: i64 = self
                .rooms
                .iter()
                .flatten()
                .map(|e| e.core.subscription_count() as i64)
                .sum();
            let drops = self
                .local_port
                .and_then(super::udp::kernel_drops)
                .map(|d| d as i64)
                .unwrap_or(0);
            let tcp = self.tcp.len() as i64;
            let (last_subs, last_drops, last_tcp) = self.gauges_published;
            self.metrics.subscriptions.add(subscriptions - last_subs);
            self.metrics.kernel_drops.add(drops - last_drops);
            self.metrics.ice_tcp_connections.add(tcp - last_tcp);
            self.gauges_published = (subscriptions, drops, tcp);
            self.sample_overload(now, drops as u64);
        }
    }

    /// Once a second: how busy the loop was, and whether to shed load (see
    /// `plenary_sfu::overload`). A new level changes every subscriber's video budget at once
    /// and tells the control loop whether to place newcomers here.
    fn sample_overload(&mut self, now: Instant, kernel_drops: u64) {
        let window = now.saturating_duration_since(self.busy_since);
        if window.is_zero() {
            return;
        }
        let busy = self.busy.as_secs_f64() / window.as_secs_f64();
        let dropped = kernel_drops > self.kernel_drops_seen;
        self.kernel_drops_seen = kernel_drops;
        self.busy = Duration::ZERO;
        self.busy_since = now;
        let Some(level) = self.overload.handle_sample(now, busy, dropped) else {
            return;
        };
        if level > OverloadLevel::Normal {
            tracing::warn!(
                shard = self.index,
                ?level,
                busy = format!("{:.0} %", busy * 100.0),
                kernel_drops = dropped,
                "media shard overloaded: shedding video"
            );
        } else {
            tracing::info!(shard = self.index, "media shard load back to normal");
        }
        self.loads.set(self.index, level.as_u8());
        let (max, overloaded) = self.loads.summary();
        self.metrics.overload_level.set(i64::from(max));
        self.metrics.shards_overloaded.set(overloaded as i64);
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .flatten()
            .filter(|p| p.alloc.is_some())
            .map(|p| p.id)
            .collect();
        for id in ids {
            self.allocation_rebudget(now, id);
        }
    }

    fn shutdown(&mut self) {
        self.shutting_down = true;
        for peer in self.peers.iter_mut().flatten() {
            let _ = peer
                .events
                .try_send(SessionEvent::Close(LeaveReason::ServerShutdown));
            peer.rtc.disconnect();
        }
        self.counters.publish(&mut self.published, &self.metrics);
        let (subs, drops, tcp) = self.gauges_published;
        self.metrics.subscriptions.sub(subs);
        self.metrics.kernel_drops.sub(drops);
        self.metrics.ice_tcp_connections.sub(tcp);
        tracing::info!(shard = self.index, "media shard stopped");
    }
}

/// One packet on its way out to the subscribers the core chose.
struct Egress<'a> {
    pt: Pt,
    params: PayloadParams,
    /// RED payloads for listeners on lossy links (audio).
    red: &'a [RedPayload],
    marker: bool,
    audio_level: Option<i8>,
    voice_activity: Option<bool>,
    video_orientation: Option<str0m::rtp::VideoOrientation>,
    payload: &'a Arc<[u8]>,
    at: Instant,
    video: bool,
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

/// Last-seen counters of one simulcast layer: (m-line, RID), NACKs, packets.
type RidCounts = ((Mid, Option<Rid>), u64, u64);

/// The increase of two cumulative per-stream (m-line and RID) counters since last seen.
fn delta_rid(seen: &mut Vec<RidCounts>, key: (Mid, Option<Rid>), a: u64, b: u64) -> (u64, u64) {
    match seen.iter_mut().find(|(k, _, _)| *k == key) {
        Some(entry) => {
            let d = (a.saturating_sub(entry.1), b.saturating_sub(entry.2));
            entry.1 = a;
            entry.2 = b;
            d
        }
        None => {
            seen.push((key, a, b));
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
