//! The media plane: one UDP socket shared by every peer, the WebRTC stack behind Plenary's
//! own boundary, and the forwarding core.
//!
//! # Data flow
//! Signaling sessions send [`Command`]s (join, SDP, candidates, mute, leave) into a bounded
//! channel. A [`shard`] thread owns the socket, every peer's WebRTC state ([`peer`]) and every
//! room's [`plenary_sfu::Room`]; it reads datagrams, finds their peer with [`demux`] (ICE
//! username fragment, then remote address: map lookups only), lets the peer decrypt them,
//! hands RTP metadata to the room, and writes the room's [`plenary_sfu::Forward`]s to the
//! subscribers' peers, which encrypt and send. Messages for clients go back to each session
//! as [`SessionEvent`]s on its own bounded channel.
//!
//! The WebRTC library (str0m) appears only in [`peer`] and [`shard`]; the rest of the server
//! sees commands and events.

pub mod demux;
pub mod peer;
pub mod shard;
pub mod udp;

use std::net::SocketAddr;
use std::time::Instant;

use plenary_proto::{
    HostAction, IceCandidate, IceServer, LeaveReason, ParticipantInfo, PublishedTrack,
    ServerMessage, SubscriptionUpdate,
};
use tokio::sync::{mpsc, oneshot};

use crate::grant::Permissions;

/// A participant session in the media plane (slab index and generation).
pub type PeerId = plenary_sfu::ParticipantKey;

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
    /// A host action (checked by the media plane).
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
    /// The resume token is unknown or expired.
    #[error("this session cannot be resumed; join again with a new grant")]
    ResumeFailed,
}

/// What the media plane tells one session.
#[derive(Debug)]
pub enum SessionEvent {
    /// Send this to the client.
    Send(ServerMessage),
    /// A host admitted the session from the lobby: it is now in the room.
    Admitted(Joined),
    /// Tell the client `closing` with this reason and close the connection.
    Close(LeaveReason),
}

/// Settings the media plane needs.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Addresses put in our ICE candidates.
    pub announce: Vec<SocketAddr>,
    /// Handed to clients in `welcome`.
    pub ice_servers: Vec<IceServer>,
    /// Room limit.
    pub max_participants_per_room: usize,
    /// Server limit.
    pub max_participants: usize,
    /// Remove a peer whose ICE stays disconnected this long.
    pub ice_timeout: std::time::Duration,
    /// Rooms with more participants than this switch to listener mode.
    pub listener_mode_above: usize,
    /// Where host actions are recorded (the audit log), if anywhere.
    pub audit: Option<mpsc::Sender<AuditRecord>>,
}

/// A host action (or other meeting event) for the audit log.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// What happened (`host_mute`, `host_remove`, ...).
    pub kind: String,
    /// Who did it (identity).
    pub actor: String,
    /// The room.
    pub room: String,
    /// Details (JSON).
    pub detail: serde_json::Value,
}

/// The signaling side's handle to the media plane.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    commands: mpsc::Sender<Command>,
}

impl MediaHandle {
    /// Sends a command, waiting while the queue is full. Errors when the media plane stopped.
    pub async fn send(&self, command: Command) -> Result<(), MediaGone> {
        self.commands.send(command).await.map_err(|_| MediaGone)
    }

    /// Asks the media plane to close every session and stop.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// The media plane has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the media plane has stopped")]
pub struct MediaGone;

/// Bound of the command queue into the media plane.
pub const COMMAND_QUEUE: usize = 4096;
/// Bound of each session's event queue; a session that lets it fill is dropped.
pub const SESSION_QUEUE: usize = 512;

/// Starts the media plane on its own thread around `socket`.
pub fn spawn(
    socket: std::net::UdpSocket,
    settings: MediaSettings,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> std::io::Result<(MediaHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    socket.set_nonblocking(true)?;
    let thread = std::thread::Builder::new()
        .name("plenary-media".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("media plane: cannot start its runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                match shard::Shard::new(socket, settings, metrics) {
                    Ok(shard) => shard.run(rx).await,
                    Err(e) => tracing::error!("media plane: cannot start: {e}"),
                }
            });
        })?;
    Ok((MediaHandle { commands: tx }, thread))
}
