//! Plenary's signaling protocol: the JSON messages that browsers, test clients and the
//! load tester exchange with the server over the WebSocket at `/rtc`.
//!
//! Every message is one JSON object with a `"type"` tag (snake_case). The first message a
//! client sends must be [`ClientMessage::Join`], carrying [`PROTOCOL_VERSION`] and a room
//! grant; the server answers [`ServerMessage::Welcome`] or an [`ServerMessage::Error`] and a
//! close. `docs/protocol.md` describes the flow; this crate is its single source of truth.
//!
//! This crate holds data types only: no I/O, no validation beyond what serde does.

use serde::{Deserialize, Serialize};

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
    /// The kind of media this source produces.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Microphone | TrackSource::ScreenAudio => TrackKind::Audio,
            TrackSource::Camera | TrackSource::Screen => TrackKind::Video,
        }
    }
}

/// A participant's role in a room, as stated by their grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the meeting.
    Host,
    /// A member of the co-op.
    Member,
    /// A guest, e.g. invited by an ambassador.
    Guest,
}

/// A participant as the other participants see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        /// The signed room grant (a JWT).
        grant: String,
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
    /// Someone joined the room.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left the room.
    ParticipantLeft {
        /// Their participant id.
        participant_id: String,
        /// Why.
        reason: LeaveReason,
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
    /// Answer to [`ClientMessage::Ping`].
    Pong {
        /// The ping's id.
        id: u64,
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
    fn join_round_trips_with_type_tag() {
        let msg = ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant: "abc".into(),
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
    }

    #[test]
    fn sources_know_their_kind() {
        assert_eq!(TrackSource::Microphone.kind(), TrackKind::Audio);
        assert_eq!(TrackSource::Screen.kind(), TrackKind::Video);
    }
}
