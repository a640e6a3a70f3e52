//! The media plane: a control loop that runs the meetings, and media shards — one thread
//! per core, each with its own UDP port — that carry the packets.
//!
//! # Data flow
//! Signaling sessions send [`Command`]s through a [`MediaHandle`], which routes them: SDP,
//! candidates and subscription changes go straight to the shard that holds the peer (its
//! [`PeerId`] names the shard); joins, chat, hands, mutes, host actions and leaves go to the
//! [`control`] loop, which drives one `plenary_meeting::Meeting` per room (the rules) and
//! tells the shards what to do ([`shard::ShardCmd`]): add or remove a peer, add or remove a
//! track, mute one, change what a peer may publish.
//!
//! A [`shard`] owns its socket, its peers' WebRTC state ([`peer`]), its [`demux`], and for
//! each room with members on it a local `plenary_sfu::Room` that forwards to its own
//! subscribers. A packet published on shard A is decrypted there, forwarded to A's
//! subscribers, and handed to every other shard with members of the room through bounded
//! single-producer queues ([`exchange`]) carrying the shared payload; each shard encrypts for
//! its own subscribers. Messages for clients go back to each session as [`SessionEvent`]s on
//! its own bounded channel; a broadcast is serialised once for everyone.
//!
//! The WebRTC library (str0m) appears only in [`peer`] and [`shard`]; the rest of the server
//! sees commands and events. What the meetings decide to keep (attendance, speakers,
//! motions, votes, host actions) leaves as [`RoomRecord`]s on a channel; the media plane
//! knows nothing of where they are stored.

pub mod control;
pub mod demux;
pub mod exchange;
pub mod peer;
pub mod sdp;
pub mod shard;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use plenary_proto::{
    HostAction, IceCandidate, IceServer, LeaveReason, ParticipantInfo, PublishedTrack,
    ServerMessage, SubscriptionUpdate,
};
use tokio::sync::{mpsc, oneshot};

use crate::grant::Permissions;

/// A participant session in the media plane: bits 0–23 its slot on its shard, 24–31 the
/// shard, 32–63 a generation (so a reused slot gets a new id).
pub type PeerId = plenary_sfu::ParticipantKey;

/// Most shards (the shard index has 8 bits in a [`PeerId`]).
pub const MAX_SHARDS: usize = 64;

/// The shard that holds `id`.
pub fn shard_of(id: PeerId) -> usize {
    ((id.0 >> 24) & 0xff) as usize
}

/// `id`'s slot on its shard.
pub fn slot_of(id: PeerId) -> usize {
    (id.0 & 0x00ff_ffff) as usize
}

/// The id of slot `slot` on `shard` in its `generation`.
pub fn peer_id(shard: usize, slot: usize, generation: u32) -> PeerId {
    plenary_sfu::ParticipantKey(
        ((generation as u64) << 32) | ((shard as u64 & 0xff) << 24) | (slot as u64 & 0x00ff_ffff),
    )
}

/// The protocol id of a peer (`PA_<hex>`).
pub fn participant_id(id: PeerId) -> String {
    plenary_meeting::participant_id(plenary_meeting::Pid(id.0))
}

/// What a signaling session asks of the media plane.
#[derive(Debug)]
pub enum Command {
    /// Enter a room.
    Join {
        /// Who and where.
        request: JoinRequest,
        /// The answer.
        reply: oneshot::Sender<Result<JoinOutcome, JoinError>>,
    },
    /// Come back as the participant a resume token names (after a dropped connection).
    Resume {
        /// The token from the earlier `welcome`.
        token: String,
        /// Where the session's messages go.
        events: mpsc::Sender<SessionEvent>,
        /// When the client asked.
        started: Instant,
        /// The answer.
        reply: oneshot::Sender<Result<JoinOutcome, JoinError>>,
    },
    /// The client's SDP offer and the tracks it publishes.
    Offer {
        /// Who.
        peer: PeerId,
        /// The SDP.
        sdp: String,
        /// Tracks by mid.
        tracks: Vec<PublishedTrack>,
    },
    /// The client's answer to our offer.
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
    /// (Un)mute one of the peer's tracks.
    Mute {
        /// Who.
        peer: PeerId,
        /// Which track.
        track_id: String,
        /// New state.
        muted: bool,
    },
    /// A small text message to the room.
    Data {
        /// Who.
        peer: PeerId,
        /// The text.
        text: String,
    },
    /// A chat message to the room.
    Chat {
        /// Who.
        peer: PeerId,
        /// The text.
        text: String,
    },
    /// Vote on a motion.
    Vote {
        /// Who.
        peer: PeerId,
        /// The motion.
        motion_id: String,
        /// Option indexes.
        choices: Vec<u32>,
    },
    /// Raise or lower a hand.
    RaiseHand {
        /// Who.
        peer: PeerId,
        /// New state.
        raised: bool,
    },
    /// Pause or resume forwarding of remote tracks to this peer.
    Subscription {
        /// Who.
        peer: PeerId,
        /// The changes.
        tracks: Vec<SubscriptionUpdate>,
    },
    /// A host action (checked by the meeting rules).
    Host {
        /// Who asks.
        peer: PeerId,
        /// What.
        action: HostAction,
    },
    /// The participant goes.
    Leave {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
        /// Told once the meeting has let them go and the others' `left` is queued, so the
        /// session closes its socket only then (a client that hangs up its media on the
        /// close must not race its own `leave`).
        done: Option<oneshot::Sender<()>>,
    },
    /// Close every session and stop.
    Shutdown,
}

/// A verified join.
#[derive(Debug)]
pub struct JoinRequest {
    /// The room.
    pub room: String,
    /// How the others see this participant (`id` is filled in by the media plane).
    pub info: ParticipantInfo,
    /// What the grant allows.
    pub permissions: Permissions,
    /// When the client asked to join (for the join-latency histogram).
    pub started: Instant,
    /// Where the session's messages go.
    pub events: mpsc::Sender<SessionEvent>,
}

/// How a join went.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per join, moved once: not worth a box
pub enum JoinOutcome {
    /// In the room.
    Joined(Joined),
    /// Waiting in the lobby: [`SessionEvent::Admitted`] or a close with reason `denied`
    /// follows.
    Waiting {
        /// The room.
        room: String,
    },
}

/// A successful join.
#[derive(Debug)]
pub struct Joined {
    /// The new participant's id in the media plane.
    pub peer: PeerId,
    /// The `welcome` message for the client.
    pub welcome: ServerMessage,
}

/// Why a join was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    /// The room is at its participant limit.
    #[error("the room is full ({0} participants)")]
    RoomFull(usize),
    /// The server is at its participant limit.
    #[error("the server is full")]
    ServerFull,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A host locked the room.
    #[error("a host has locked this room")]
    Locked,
    /// A host barred this identity from the meeting.
    #[error("a host has removed you from this meeting")]
    Barred,
    /// The lobby is full.
    #[error("too many people are waiting in this room's lobby")]
    LobbyFull,
    /// Every media shard is overloaded: new participants would make the meeting worse for
    /// everyone already in it.
    #[error("the server is too busy to take more participants right now; try again in a minute")]
    Overloaded,
    /// The resume token is unknown or expired.
    #[error("this session cannot be resumed; join again with a new grant")]
    ResumeFailed,
}

impl JoinError {
    /// The `reason` label of `plenary_joins_refused_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            JoinError::RoomFull(_) => "room_full",
            JoinError::ServerFull => "server_full",
            JoinError::Overloaded => "overloaded",
            JoinError::ShuttingDown => "shutting_down",
            JoinError::Locked => "locked",
            JoinError::Barred => "barred",
            JoinError::LobbyFull => "lobby_full",
            JoinError::ResumeFailed => "resume_failed",
        }
    }
}

/// What the media plane tells one session.
#[derive(Debug)]
pub enum SessionEvent {
    /// Send this to the client. (Boxed, as `Admitted`: every session's queue holds its
    /// events inline, so a small event keeps each attendee's queue small.)
    Send(Box<ServerMessage>),
    /// Send this already serialised message (a broadcast, serialised once for everyone).
    Raw(Arc<str>),
    /// A host admitted the session from the lobby: it is now in the room.
    Admitted(Box<Joined>),
    /// Tell the client `closing` with this reason and close the connection.
    Close(LeaveReason),
}

/// Settings the media plane needs.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Handed to clients in `welcome`.
    pub ice_servers: Vec<IceServer>,
    /// A TURN server whose credentials each `welcome` carries.
    pub turn: crate::config::TurnConfig,
    /// Room limit.
    pub max_participants_per_room: usize,
    /// Server limit.
    pub max_participants: usize,
    /// Remove a peer whose ICE stays disconnected this long.
    pub ice_timeout: std::time::Duration,
    /// Rooms with more participants than this switch to listener mode.
    pub listener_mode_above: usize,
    /// Where the meetings' records and host actions go (the store), if anywhere; without
    /// it they are only logged.
    pub recorder: Option<mpsc::Sender<RoomRecord>>,
    /// Quorum, speaking time and chat keeping of new meetings.
    pub governance: plenary_meeting::GovernanceConfig,
    /// A meeting whose room empties goes on when someone comes back within this time.
    pub continue_within: std::time::Duration,
    /// Meetings that go on from before a restart (read from the store at start).
    pub continued: Vec<ContinuedMeeting>,
    /// Estimate each subscriber's bandwidth and choose its video layers.
    pub allocate: bool,
    /// Forward only this many loudest microphones in a room (0: all).
    pub loudest_speakers: usize,
    /// Repeat audio (RED) to listeners on lossy links.
    pub audio_redundancy: bool,
}

/// Something a meeting asks to keep, with the room and meeting it belongs to.
#[derive(Debug, Clone)]
pub struct RoomRecord {
    /// The room.
    pub room: Arc<str>,
    /// The meeting (a room holds one meeting at a time; see [`ContinuedMeeting`]).
    pub meeting_id: Arc<str>,
    /// What to keep.
    pub item: RecordItem,
}

/// What a [`RoomRecord`] carries.
#[derive(Debug, Clone)]
pub enum RecordItem {
    /// A new meeting began in the room (an older one there, if any, is over).
    Started {
        /// When.
        at: plenary_meeting::Time,
        /// Its quorum rule.
        quorum: plenary_proto::QuorumRule,
        /// Its speaking-time limit.
        speaker_limit_secs: Option<u32>,
    },
    /// Nobody came back to the empty room in time: the meeting is over (at its last
    /// record).
    Over,
    /// A host action for the audit log only.
    Audit(plenary_meeting::AuditEvent),
    /// Attendance, speakers, motions, votes: kept with its audit row, in one transaction.
    Record(plenary_meeting::Record),
}

/// A meeting that goes on: its id, its governance, and when it was last active.
#[derive(Debug, Clone)]
pub struct ContinuedMeeting {
    /// The room.
    pub room: String,
    /// The meeting's id.
    pub meeting_id: String,
    /// Its rules and motions.
    pub governance: plenary_meeting::Governance,
    /// Its last record.
    pub last_active: plenary_meeting::Time,
}

/// The signaling side's handle to the media plane: routes each command to the control loop
/// or to the shard that holds the peer.
#[derive(Clone)]
pub struct MediaHandle {
    control: mpsc::Sender<Command>,
    shards: Arc<[mpsc::Sender<shard::ShardCmd>]>,
    routes: Arc<tcp::UfragRoutes>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for MediaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaHandle")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl MediaHandle {
    /// Sends a command, waiting while the queue is full. Errors when the media plane stopped.
    pub async fn send(&self, command: Command) -> Result<(), MediaGone> {
        let to_shard = match command {
            Command::Offer { peer, sdp, tracks } => {
                Some((peer, shard::ShardCmd::Offer { peer, sdp, tracks }))
            }
            Command::Answer { peer, sdp } => Some((peer, shard::ShardCmd::Answer { peer, sdp })),
            Command::Candidate { peer, candidate } => {
                Some((peer, shard::ShardCmd::Candidate { peer, candidate }))
            }
            Command::Subscription { peer, tracks } => {
                Some((peer, shard::ShardCmd::Subscription { peer, tracks }))
            }
            other => return self.control.send(other).await.map_err(|_| MediaGone),
        };
        let Some((peer, cmd)) = to_shard else {
            return Ok(());
        };
        let Some(tx) = self.shards.get(shard_of(peer)) else {
            return Ok(()); // not an id we handed out: nothing to do
        };
        tx.send(cmd).await.map_err(|_| MediaGone)
    }

    /// What takes ICE-TCP connections and hands each to the shard of its peer.
    pub fn tcp_intake(&self) -> tcp::TcpIntake {
        tcp::TcpIntake::new(
            Arc::clone(&self.routes),
            Arc::clone(&self.shards),
            Arc::clone(&self.metrics),
        )
    }

    /// Asks the media plane to close every session and stop.
    pub async fn shutdown(&self) {
        let _ = self.control.send(Command::Shutdown).await;
    }
}

/// The media plane has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the media plane has stopped")]
pub struct MediaGone;

/// Bound of the command queue into the control loop and into each shard.
pub const COMMAND_QUEUE: usize = 4096;
/// Bound of each session's event queue; a session that lets it fill is dropped.
pub const SESSION_QUEUE: usize = 512;

/// The media plane's threads, to wait for at shutdown.
#[derive(Debug)]
pub struct MediaThreads {
    shards: Vec<std::thread::JoinHandle<()>>,
    control: tokio::task::JoinHandle<()>,
}

impl MediaThreads {
    /// Waits for the control loop and every shard thread to end.
    pub async fn join(self) {
        let _ = self.control.await;
        let shards = self.shards;
        let _ = tokio::task::spawn_blocking(move || {
            for s in shards {
                let _ = s.join();
            }
        })
        .await;
    }
}

/// Starts the media plane: one shard thread per socket (each announces its own port in its
/// candidates, and the shared ICE-TCP addresses `tcp_announce`, if any), and the control
/// loop as a task on the current runtime.
pub fn spawn(
    sockets: Vec<(std::net::UdpSocket, Vec<SocketAddr>)>,
    tcp_announce: Vec<SocketAddr>,
    settings: MediaSettings,
    metrics: Arc<crate::metrics::Metrics>,
) -> std::io::Result<(MediaHandle, MediaThreads)> {
    let n = sockets.len();
    assert!((1..=MAX_SHARDS).contains(&n), "1 to {MAX_SHARDS} shards");
    let (control_tx, control_rx) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events_rx) = mpsc::channel(shard::EVENT_QUEUE);
    let mut shard_tx = Vec::with_capacity(n);
    let mut shard_rx = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        shard_tx.push(tx);
        shard_rx.push(rx);
    }
    let shards: Arc<[mpsc::Sender<shard::ShardCmd>]> = shard_tx.into();
    let loads = Arc::new(ShardLoads::new(n));
    let mut exchanges = exchange::Exchange::mesh(n);
    let routes = Arc::new(tcp::UfragRoutes::default());
    let mut threads = Vec::with_capacity(n);
    for (index, ((socket, announce), commands)) in
        sockets.into_iter().zip(shard_rx).enumerate().rev()
    {
        socket.set_nonblocking(true)?;
        let links = shard::Links {
            index,
            commands,
            control: events_tx.clone(),
            shards: Arc::clone(&shards),
            exchange: exchanges.pop().expect("one exchange per shard"),
            loads: Arc::clone(&loads),
            routes: Arc::clone(&routes),
        };
        let tcp_announce = tcp_announce.clone();
        let metrics = Arc::clone(&metrics);
        let shard_settings = shard::ShardSettings {
            ice_timeout: settings.ice_timeout,
            allocate: settings.allocate,
            loudest_speakers: settings.loudest_speakers,
            audio_redundancy: settings.audio_redundancy,
        };
        let thread = std::thread::Builder::new()
            .name(format!("plenary-media-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("media shard {index}: cannot start its runtime: {e}");
                        return;
                    }
                };
                let run = std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                        let shard = shard::Shard::new(
                            socket,
                            announce,
                            tcp_announce,
                            shard_settings,
                            metrics,
                            links,
                        );
                        match shard {
                            Ok(shard) => shard.run().await,
                            Err(e) => tracing::error!("media shard {index}: cannot start: {e}"),
                        }
                    })
                });
                if std::panic::catch_unwind(run).is_err() {
                    // A shard that died leaves its rooms half-served (peers on other shards
                    // lose its publishers). Better a clean stop that the supervisor restarts
                    // and clients rejoin than a server that limps.
                    tracing::error!(
                        "media shard {index} failed (see the panic above); stopping the server"
                    );
                    std::process::exit(70);
                }
            })?;
        threads.push(thread);
    }
    let control = control::Control::new(settings, Arc::clone(&metrics), Arc::clone(&shards), loads);
    let control = tokio::spawn(control.run(control_rx, events_rx));
    Ok((
        MediaHandle {
            control: control_tx,
            shards,
            routes,
            metrics,
        },
        MediaThreads {
            shards: threads,
            control,
        },
    ))
}

/// Each shard's overload level (`plenary_sfu::OverloadLevel` as a number), written by the
/// shard once a second and read by the control loop when it places a participant.
#[derive(Debug)]
pub struct ShardLoads(Box<[std::sync::atomic::AtomicU8]>);

impl ShardLoads {
    /// `n` shards at level 0.
    pub fn new(n: usize) -> ShardLoads {
        ShardLoads(
            (0..n)
                .map(|_| std::sync::atomic::AtomicU8::new(0))
                .collect(),
        )
    }

    /// Shard `shard`'s level.
    pub fn get(&self, shard: usize) -> u8 {
        self.0
            .get(shard)
            .map_or(0, |l| l.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sets shard `shard`'s level.
    pub fn set(&self, shard: usize, level: u8) {
        if let Some(l) = self.0.get(shard) {
            l.store(level, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The highest level and how many shards are above 0.
    pub fn summary(&self) -> (u8, usize) {
        (0..self.0.len()).fold((0, 0), |(max, n), s| {
            let l = self.get(s);
            (max.max(l), n + usize::from(l > 0))
        })
    }
}
