//! Plenary's signaling protocol: the JSON messages that browsers, test clients and the
//! load tester exchange with the server over the WebSocket at `/rtc`.
//!
//! Every message is one JSON object with a `"type"` tag (snake_case). The first message a
//! client sends must be [`ClientMessage::Join`], carrying [`PROTOCOL_VERSION`] and a room
//! grant; the server answers [`ServerMessage::Welcome`] or an [`ServerMessage::Error`] and a
//! close. `docs/protocol.md` describes the flow; this crate is its single source of truth.
//!
//! This crate holds data types and the rules every side shares about their values (room
//! names, in [`room`]): no I/O.

use serde::{Deserialize, Serialize};

pub mod governance;
pub mod room;

pub use governance::{
    ClosedBy, MotionInfo, MotionKind, MotionResult, MotionSpec, MotionState, OptionResult,
    QuorumCheck, QuorumRule, QuorumStatus, Speaking,
};
pub use room::{valid_room_name, MAX_ROOM_NAME};

/// The protocol version this crate speaks. A `join` with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest signaling message (in bytes) the server accepts, except `offer` and `answer`;
/// larger ones are refused with [`ErrorCode::TooLarge`] and the connection is closed.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest `offer` or `answer` message (in bytes). SDP grows with the number of tracks a
/// client receives at once (about 1–4 KiB per m-line).
pub const MAX_SDP_MESSAGE_BYTES: usize = 1024 * 1024;

/// Where a published track's media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A microphone (audio).
    Microphone,
    /// A camera (video).
    Camera,
    /// A shared screen (video).
    Screen,
    /// The audio of a shared screen or tab.
    ScreenAudio,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

impl TrackSource {
    /// The name used on the wire and in messages: `microphone`, `camera`, `screen`,
    /// `screen_audio`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Microphone => "microphone",
            TrackSource::Camera => "camera",
            TrackSource::Screen => "screen",
            TrackSource::ScreenAudio => "screen_audio",
        }
    }

    /// The kind of media this source produces.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Microphone | TrackSource::ScreenAudio => TrackKind::Audio,
            TrackSource::Camera | TrackSource::Screen => TrackKind::Video,
        }
    }
}

/// A participant's role in a room, as stated by their grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the meeting.
    Host,
    /// A member of the co-op.
    #[default]
    Member,
    /// A guest, e.g. invited by an ambassador.
    Guest,
}

/// A participant as the other participants see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ParticipantInfo {
    /// Server-assigned id of this session in the room (changes when the person rejoins).
    pub id: String,
    /// Stable identity from the grant (e.g. `@alice@social.coop`).
    pub identity: String,
    /// Display name from the grant.
    pub name: String,
    /// Role from the grant.
    pub role: Role,
    /// For guests: the handle of the member who invited them (shown as "guest of …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<String>,
    /// Has host powers in this meeting (by grant, or made host by a host).
    #[serde(default)]
    pub is_host: bool,
    /// Has a raised hand.
    #[serde(default)]
    pub hand_raised: bool,
    /// May publish now (has the floor, or the room is not in listener mode).
    #[serde(default)]
    pub can_publish: bool,
}

/// Someone who left, in a [`ServerMessage::ParticipantsChanged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftParticipant {
    /// Their participant id.
    pub id: String,
    /// Why.
    pub reason: LeaveReason,
}

/// What the client itself may do now (changes when given or denied the floor, made host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Permissions {
    /// May publish these sources now (empty: nothing).
    pub can_publish: Vec<TrackSource>,
    /// Receives the others' media.
    pub can_subscribe: bool,
    /// May send chat and data messages.
    pub can_chat: bool,
    /// Has host powers.
    pub is_host: bool,
    /// Was given the floor by a host.
    pub has_floor: bool,
}

/// The meeting-wide settings hosts control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RoomState {
    /// No new participants may join (hosts still may).
    pub locked: bool,
    /// Newcomers wait until a host admits them.
    pub lobby: bool,
    /// Only hosts and those given the floor may publish.
    pub listener_mode: bool,
    /// Participants in the room now.
    pub size: usize,
}

/// One track's forwarding choice in a [`ClientMessage::Subscription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionUpdate {
    /// The remote track.
    pub track_id: String,
    /// `true`: the client does not show it; the server stops forwarding it.
    pub paused: bool,
    /// The width, in device pixels, of the tile the client shows this video in (the server
    /// sends no simulcast layer larger than the tile needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// The tile's height in device pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// How the client shows it, which decides who keeps video when bandwidth runs short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<TilePriority>,
}

/// How a client shows a video track, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TilePriority {
    /// The main view (the active speaker, a screen share, the floor holder).
    Stage,
    /// Pinned by the person (e.g. a sign-language interpreter).
    Pinned,
    /// A tile of the grid.
    Thumbnail,
}

/// What a host asks for. Every action is checked by the server: a non-host gets
/// [`ErrorCode::PermissionDenied`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum HostAction {
    /// Let this participant speak: raises their publish permission, lowers their hand.
    GiveFloor {
        /// Who.
        participant_id: String,
    },
    /// Take the floor back: their tracks are unpublished and they return to listening.
    TakeFloor {
        /// Who.
        participant_id: String,
    },
    /// Reorder the raised hands.
    ReorderQueue {
        /// Participant ids, first speaks first (ids not in the queue are ignored).
        order: Vec<String>,
    },
    /// Lower every raised hand.
    ClearQueue,
    /// Mute someone's microphone (they may unmute themselves if they may publish).
    Mute {
        /// Who.
        participant_id: String,
    },
    /// Mute every microphone except the hosts'.
    MuteAll,
    /// Ask someone to unmute (never forced).
    AskUnmute {
        /// Who.
        participant_id: String,
    },
    /// Turn someone's camera off.
    CameraOff {
        /// Who.
        participant_id: String,
    },
    /// Stop someone's screen share.
    StopScreenShare {
        /// Who.
        participant_id: String,
    },
    /// Remove someone from the meeting.
    Remove {
        /// Who.
        participant_id: String,
        /// Also refuse this identity for the rest of the meeting.
        #[serde(default)]
        bar: bool,
    },
    /// Lock or unlock the room.
    Lock {
        /// New state.
        locked: bool,
    },
    /// Turn the lobby on or off (turning it off admits everyone waiting).
    Lobby {
        /// New state.
        enabled: bool,
    },
    /// Let someone waiting in the lobby in.
    Admit {
        /// Who (their id from the `lobby` message).
        participant_id: String,
    },
    /// Turn someone waiting in the lobby away.
    Deny {
        /// Who.
        participant_id: String,
    },
    /// Give someone host powers for this meeting.
    MakeHost {
        /// Who.
        participant_id: String,
    },
    /// End the meeting for everyone.
    EndMeeting,
    /// Write a motion (a draft only hosts see, until it is opened).
    CreateMotion {
        /// The motion.
        motion: MotionSpec,
    },
    /// Open a draft motion for votes (one motion is open at a time).
    OpenMotion {
        /// Its id.
        motion_id: String,
    },
    /// Close an open motion: the result goes to everyone.
    CloseMotion {
        /// Its id.
        motion_id: String,
    },
    /// Set the room's quorum rule (not while a motion is open).
    SetQuorum {
        /// The rule.
        rule: QuorumRule,
    },
    /// Set the speaking time each person given the floor from now on has (0: no limit).
    SpeakerLimit {
        /// Seconds (at most 3600).
        seconds: u32,
    },
}

/// A published track as the other participants see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Server-assigned track id, unique in the room.
    pub id: String,
    /// Id of the participant who publishes it.
    pub participant_id: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// Where it comes from.
    pub source: TrackSource,
    /// Whether the publisher has muted it.
    pub muted: bool,
}

/// A track the client publishes, tied to the `mid` of its transceiver in the offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTrack {
    /// The transceiver's mid in the client's offer.
    pub mid: String,
    /// What the track carries.
    pub source: TrackSource,
}

/// Which remote track a server-offered m-line carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackMapping {
    /// The m-line's mid in the server's offer.
    pub mid: String,
    /// The track it carries.
    pub track_id: String,
    /// The participant who publishes that track.
    pub participant_id: String,
}

/// An ICE server (STUN or TURN) the client should use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN username, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A trickled ICE candidate, in the shape of the browser's `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` line, without `a=`. Empty means end of candidates.
    pub candidate: String,
    /// The m-line's mid, if known.
    #[serde(default, rename = "sdpMid", skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The m-line's index, if known.
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They said `leave`.
    Left,
    /// Their WebSocket closed or their media stopped answering.
    Disconnected,
    /// They joined again from elsewhere with the same identity.
    Replaced,
    /// The server is shutting down.
    ServerShutdown,
    /// They broke the protocol and were closed.
    ProtocolError,
    /// A host removed them.
    Removed,
    /// A host ended the meeting.
    MeetingEnded,
    /// A host turned them away from the lobby.
    Denied,
}

/// Machine-readable error codes in [`ServerMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message was not valid JSON or did not match its type's shape.
    BadMessage,
    /// The `type` is not one this protocol version knows.
    UnknownType,
    /// The message was larger than [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// The message is not allowed in the session's current state (e.g. `offer` before `join`).
    OutOfOrder,
    /// The client's protocol version is not supported.
    UnsupportedVersion,
    /// The grant is missing, malformed, expired, for another room or badly signed.
    InvalidGrant,
    /// The grant does not allow this action.
    PermissionDenied,
    /// The SDP could not be parsed or applied.
    BadSdp,
    /// The client sends too much, too fast.
    RateLimited,
    /// The server is full or shutting down and takes no joins.
    Unavailable,
    /// Something went wrong on the server's side.
    Internal,
    /// The room is locked.
    RoomLocked,
    /// A host barred this identity from the meeting.
    Barred,
    /// The session to resume is unknown or expired (join with a grant instead).
    ResumeFailed,
    /// A motion a host wrote is not acceptable (empty title, text too long, bad options…).
    InvalidMotion,
    /// No motion with that id in this meeting.
    UnknownMotion,
    /// The motion takes no votes (a draft, or closed already), or cannot be opened again.
    MotionNotOpen,
    /// Another motion is open: close it first (or the quorum cannot change during a vote).
    MotionInProgress,
    /// The choices name an option the motion does not have, or too many, or none.
    InvalidChoice,
    /// A secret ballot is final: this member's ballot is cast.
    AlreadyVoted,
    /// This participant may not vote on this motion (a guest, unless a host allowed guests).
    NotEligible,
    /// The server is shutting down (draining) and takes no joins: come back later, as
    /// [`ServerMessage::GoingAway`] says.
    ShuttingDown,
}

impl ErrorCode {
    /// Whether the server closes the connection after sending this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::TooLarge
                | ErrorCode::UnsupportedVersion
                | ErrorCode::InvalidGrant
                | ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::RateLimited
                | ErrorCode::RoomLocked
                | ErrorCode::Barred
                | ErrorCode::ResumeFailed
                | ErrorCode::ShuttingDown
        )
    }
}

/// Messages from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message: enter the room the grant names.
    Join {
        /// Must equal [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The signed room grant (a JWT). May be empty when `resume` is given.
        #[serde(default)]
        grant: String,
        /// A resume token from an earlier `welcome` of this client: rejoins as the same
        /// participant within a minute of losing the connection, without a new grant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
        /// The room the client means to enter. When given it must equal the grant's room,
        /// else the join is refused with [`ErrorCode::InvalidGrant`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// An SDP offer from the client (its first, or a change to what it publishes).
    Offer {
        /// The SDP.
        sdp: String,
        /// Tracks the client sends, by transceiver mid.
        #[serde(default)]
        tracks: Vec<PublishedTrack>,
    },
    /// The client's answer to a server [`ServerMessage::Offer`].
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// A trickled ICE candidate of the client.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Mute or unmute one of the client's own tracks.
    Mute {
        /// The track id the server assigned.
        track_id: String,
        /// The new state.
        muted: bool,
    },
    /// A small application message to everyone in the room (at most 4 KiB of text).
    Data {
        /// The text.
        text: String,
    },
    /// A chat message to the room (at most 2000 characters).
    Chat {
        /// The text.
        text: String,
    },
    /// Vote on the open motion (one vote per member identity, not per tab).
    Vote {
        /// The motion.
        motion_id: String,
        /// Indexes of the chosen options (one, or up to the motion's `max_choices`).
        choices: Vec<u32>,
    },
    /// Raise or lower one's hand.
    RaiseHand {
        /// New state.
        raised: bool,
    },
    /// Pause or resume forwarding of remote tracks to this client (e.g. only the visible
    /// tiles of a grid receive video).
    Subscription {
        /// The changes.
        tracks: Vec<SubscriptionUpdate>,
    },
    /// A host action (see [`HostAction`]).
    Host(HostAction),
    /// Leave the room.
    Leave,
    /// Keep-alive; answered with [`ServerMessage::Pong`].
    Ping {
        /// Echoed back.
        #[serde(default)]
        id: u64,
    },
}

/// Messages from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // built, serialized and dropped: not worth a box
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded.
    Welcome {
        /// The server's protocol version.
        protocol: u32,
        /// The room's name.
        room: String,
        /// This client's own participant record.
        me: ParticipantInfo,
        /// Everyone else already in the room.
        participants: Vec<ParticipantInfo>,
        /// Every track already published in the room.
        tracks: Vec<TrackInfo>,
        /// ICE servers for the client's `RTCPeerConnection`.
        ice_servers: Vec<IceServer>,
        /// What this client may do now.
        #[serde(default)]
        permissions: Permissions,
        /// Lock, lobby, listener mode, size.
        #[serde(default)]
        room_state: RoomState,
        /// Raised hands, in order (participant ids).
        #[serde(default)]
        hand_queue: Vec<String>,
        /// Send this in `join.resume` to come back as the same participant after a
        /// dropped connection (valid for a minute after the drop).
        #[serde(default)]
        resume_token: String,
    },
    /// Joining waits in the lobby until a host admits (then `welcome`) or denies (then
    /// `closing` with reason `denied`).
    Waiting {
        /// The room.
        room: String,
    },
    /// The answer to the client's offer.
    Answer {
        /// The SDP.
        sdp: String,
        /// The server-assigned track id of each track the client publishes.
        tracks: Vec<TrackMapping>,
    },
    /// A server-initiated offer (tracks were added to or removed from what the client receives).
    Offer {
        /// The SDP.
        sdp: String,
        /// Which remote track each sending m-line carries.
        tracks: Vec<TrackMapping>,
    },
    /// A trickled ICE candidate of the server.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Who joined, changed (hand, host, floor) or left since the last such message. The
    /// server batches these (a few per second at most), so a crowd arriving at once costs
    /// each client a few messages, not one per arrival.
    ParticipantsChanged {
        /// New participants.
        #[serde(default)]
        joined: Vec<ParticipantInfo>,
        /// Participants whose record changed.
        #[serde(default)]
        updated: Vec<ParticipantInfo>,
        /// Participants who left.
        #[serde(default)]
        left: Vec<LeftParticipant>,
    },
    /// A chat message.
    Chat {
        /// Sender's participant id.
        participant_id: String,
        /// Sender's display name.
        name: String,
        /// Sent by a host (shown highlighted).
        from_host: bool,
        /// The text.
        text: String,
    },
    /// The raised hands, in order (participant ids). Sent to everyone on change.
    HandQueue {
        /// Participant ids.
        queue: Vec<String>,
    },
    /// This client's permissions changed (floor given or taken, made host).
    PermissionsChanged {
        /// The new permissions.
        permissions: Permissions,
    },
    /// The room's lock, lobby or listener mode changed.
    RoomStateChanged {
        /// The new state.
        room_state: RoomState,
    },
    /// For hosts: who waits in the lobby.
    Lobby {
        /// The waiting participants.
        waiting: Vec<ParticipantInfo>,
    },
    /// A host muted this client's microphone (or turned its camera off, or stopped its
    /// screen share): the client should reflect that in its controls.
    HostMuted {
        /// The track.
        track_id: String,
        /// Its source.
        source: TrackSource,
    },
    /// A host asks this client to unmute.
    AskedToUnmute {
        /// The host's participant id.
        by: String,
    },
    /// The server stopped (or resumed) sending a video track because this client's
    /// connection cannot carry it; audio keeps flowing.
    VideoPaused {
        /// The track.
        track_id: String,
        /// `true`: paused for the connection; `false`: flowing again.
        paused: bool,
    },
    /// Who speaks now (the loudest voice, held a moment so it does not flap).
    DominantSpeaker {
        /// Their participant id.
        participant_id: String,
    },
    /// A track was published.
    TrackPublished {
        /// The track.
        track: TrackInfo,
    },
    /// A track was unpublished.
    TrackUnpublished {
        /// Its id.
        track_id: String,
    },
    /// A track was muted or unmuted by its publisher.
    TrackMuted {
        /// Its id.
        track_id: String,
        /// The new state.
        muted: bool,
    },
    /// A small application message from a participant.
    Data {
        /// Sender's participant id.
        participant_id: String,
        /// The text.
        text: String,
    },
    /// Something went wrong. Fatal codes (see [`ErrorCode::is_fatal`]) are followed by a close.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
    /// The server is closing this session (shutdown, replaced by a new session).
    Closing {
        /// Why.
        reason: LeaveReason,
    },
    /// A motion was written (hosts only, while a draft), opened or closed (with its
    /// result). Also sent on joining, one per motion the newcomer may see.
    Motion {
        /// The motion.
        motion: MotionInfo,
    },
    /// How many have voted on an open motion (sent at most a few times a second).
    VotesCast {
        /// The motion.
        motion_id: String,
        /// Voters so far.
        votes_cast: u32,
    },
    /// To the voter: their vote counts. A recorded vote echoes the choices; a secret ballot
    /// says only that it is cast. Also sent on joining for each motion already voted on.
    VoteRecorded {
        /// The motion.
        motion_id: String,
        /// The choices now counted (recorded votes only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        choices: Option<Vec<u32>>,
    },
    /// For hosts: members present and whether the quorum holds (on change).
    Quorum {
        /// The status.
        status: QuorumStatus,
    },
    /// Who has the floor now, with their time left (on change, and on joining).
    Speakers {
        /// Floor holders, in the order they got it.
        speaking: Vec<Speaking>,
        /// The room's speaking-time limit for new turns, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit_secs: Option<u32>,
    },
    /// For hosts and the speaker: a speaker's time is up (the floor stays until a host
    /// takes it back).
    SpeakerTimeUp {
        /// The speaker's participant id.
        participant_id: String,
        /// Their name.
        name: String,
    },
    /// Answer to [`ClientMessage::Ping`].
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// The server is shutting down: it takes no more joins, and closes this session
    /// (`closing` with reason `server_shutdown`) within `closes_in_ms`. The client should
    /// come back after `reconnect_after_ms` (with some random delay of its own, so that
    /// a whole meeting does not return at the same instant), with a fresh grant.
    GoingAway {
        /// Milliseconds until the server closes this session.
        closes_in_ms: u64,
        /// Milliseconds to wait at least before joining again.
        reconnect_after_ms: u64,
        /// A human-readable explanation.
        message: String,
    },
}

impl ServerMessage {
    /// Shorthand for an error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_are_the_wire_names() {
        for s in [
            TrackSource::Microphone,
            TrackSource::Camera,
            TrackSource::Screen,
            TrackSource::ScreenAudio,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn join_round_trips_with_type_tag() {
        let msg = ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant: "abc".into(),
            resume: None,
            room: None,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(json, r#"{"type":"join","protocol":1,"grant":"abc"}"#);
        assert_eq!(serde_json::from_str::<ClientMessage>(&json).unwrap(), msg);
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"dance"}"#).is_err());
    }

    #[test]
    fn candidate_uses_browser_field_names() {
        let json = r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#;
        let msg: ClientMessage = serde_json::from_str(json).unwrap();
        let ClientMessage::Candidate { candidate } = msg else {
            panic!("wrong variant")
        };
        assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
        assert_eq!(candidate.sdp_mline_index, Some(0));
    }

    #[test]
    fn error_codes_serialize_snake_case() {
        let msg = ServerMessage::error(ErrorCode::InvalidGrant, "expired");
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.contains(r#""code":"invalid_grant""#), "{json}");
        assert!(ErrorCode::InvalidGrant.is_fatal());
        assert!(!ErrorCode::BadSdp.is_fatal());
        assert!(ErrorCode::ShuttingDown.is_fatal());
        let json = serde_json::to_string(&ServerMessage::GoingAway {
            closes_in_ms: 2000,
            reconnect_after_ms: 10_000,
            message: "restarting".into(),
        })
        .unwrap();
        assert!(
            json.starts_with(r#"{"type":"going_away","closes_in_ms":2000"#),
            "{json}"
        );
    }

    #[test]
    fn host_actions_are_flat_json() {
        let json = r#"{"type":"host","action":"remove","participant_id":"PA_1","bar":true}"#;
        let msg: ClientMessage = serde_json::from_str(json).unwrap();
        assert_eq!(
            msg,
            ClientMessage::Host(HostAction::Remove {
                participant_id: "PA_1".into(),
                bar: true
            })
        );
        assert_eq!(serde_json::to_string(&msg).unwrap(), json);
        let all: ClientMessage =
            serde_json::from_str(r#"{"type":"host","action":"mute_all"}"#).unwrap();
        assert_eq!(all, ClientMessage::Host(HostAction::MuteAll));
        assert!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"host","action":"fly"}"#).is_err()
        );
    }

    #[test]
    fn sources_know_their_kind() {
        assert_eq!(TrackSource::Microphone.kind(), TrackKind::Audio);
        assert_eq!(TrackSource::Screen.kind(), TrackKind::Video);
    }
}
