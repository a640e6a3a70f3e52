//! One signaling session: a WebSocket at `/rtc` speaking docs/protocol.md.
//!
//! The session checks everything a client sends before the media plane sees it: size, JSON
//! shape, message type, order (join first, once), rate, and the grant on join. It relays
//! valid requests to the media plane as [`Command`]s and the media plane's
//! [`SessionEvent`]s back to the client. A misbehaving client only ever gets errors and,
//! for the serious ones, a close: never a panic, and never a stuck room (leaving, a dropped
//! socket or silence all end in a `Leave`). [`check_text`] is the first of those checks as
//! a plain function (the fuzz target `signaling` calls it).
//!
//! When the server starts to drain, each session tells its client `going_away` and refuses
//! a `join` with `shutting_down`; when it stops, the session closes with `closing`.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use plenary_proto::{
    ClientMessage, ErrorCode, LeaveReason, ParticipantInfo, ServerMessage, MAX_MESSAGE_BYTES,
    MAX_SDP_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};

use crate::grant::{Claims, GrantError, Signer};
use crate::http::AppState;
use crate::lifecycle::Phase;
use crate::media::{
    Command, JoinError, JoinOutcome, JoinRequest, PeerId, SessionEvent, SESSION_QUEUE,
};

/// Time a client has to send `join` after connecting.
const JOIN_DEADLINE: Duration = Duration::from_secs(10);
/// Time to wait for the media plane to answer a join.
const JOIN_REPLY: Duration = Duration::from_secs(10);
/// Longest wait for the media plane to carry out a leave before the socket closes anyway.
const LEAVE_REPLY: Duration = Duration::from_secs(2);
/// Time one message may take to reach a slow client before the session is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages a client may send in a burst, and per second after that.
const RATE_BURST: f64 = 100.0;
const RATE_PER_SEC: f64 = 50.0;

/// The known message types, to tell "unknown type" from "bad shape".
const CLIENT_TYPES: &[&str] = &[
    "join",
    "offer",
    "answer",
    "candidate",
    "mute",
    "data",
    "chat",
    "raise_hand",
    "vote",
    "subscription",
    "host",
    "leave",
    "ping",
];

/// How a session ended.
enum End {
    /// The client closed, or the connection broke.
    Gone,
    /// We close, with this reason told to the client first.
    Close(LeaveReason),
    /// We close after a fatal error (already sent).
    Fatal,
}

struct Session {
    socket: WebSocket,
    state: AppState,
    peer: Option<PeerId>,
    events: Option<mpsc::Receiver<SessionEvent>>,
    tokens: f64,
    refilled: Instant,
    /// For guests: the inviting member, whose monthly guest time this session uses.
    guest_of: Option<String>,
    joined_at: Option<Instant>,
    /// Waiting in the lobby.
    waiting: bool,
}

/// Runs one WebSocket session to its end.
pub async fn run(socket: WebSocket, state: AppState) {
    state.metrics().signaling_sessions.inc();
    let mut session = Session {
        socket,
        state: state.clone(),
        peer: None,
        events: None,
        tokens: RATE_BURST,
        refilled: Instant::now(),
        guest_of: None,
        joined_at: None,
        waiting: false,
    };
    let end = session.serve().await;
    if let Some(peer) = session.peer {
        let reason = match end {
            End::Close(r) => r,
            End::Fatal => LeaveReason::ProtocolError,
            End::Gone => LeaveReason::Disconnected,
        };
        // Replaced/shutdown sessions were already removed by the media plane; a second
        // removal of the same peer id is a no-op there. The socket closes only once the
        // leave is carried out (bounded), so that the others see why this member went.
        let (done, carried_out) = oneshot::channel();
        let leave = Command::Leave {
            peer,
            reason,
            done: Some(done),
        };
        if state.media().send(leave).await.is_ok() {
            let _ = tokio::time::timeout(LEAVE_REPLY, carried_out).await;
        }
    }
    if let End::Close(reason) = end {
        let _ = session.send(&ServerMessage::Closing { reason }).await;
        let _ = session.close(1000, "bye").await;
    }
    if let (Some(inviter), Some(joined), Some(m)) =
        (&session.guest_of, session.joined_at, state.membership())
    {
        m.record_guest_time(inviter, joined.elapsed().as_secs())
            .await;
    }
    state.metrics().signaling_sessions.dec();
}

impl Session {
    async fn serve(&mut self) -> End {
        let lifecycle = self.state.lifecycle().clone();
        let draining = lifecycle.reached(Phase::Draining);
        let stopping = lifecycle.reached(Phase::Stopping);
        tokio::pin!(draining, stopping);
        let mut told_going_away = false;
        let join_deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
        let idle = self.state.idle_timeout();
        let mut last_heard = tokio::time::Instant::now();
        loop {
            let deadline = if self.peer.is_some() || self.waiting {
                last_heard + idle
            } else {
                join_deadline
            };
            tokio::select! {
                incoming = self.socket.recv() => {
                    let Some(Ok(msg)) = incoming else { return End::Gone };
                    last_heard = tokio::time::Instant::now();
                    if let Some(end) = self.handle_frame(msg).await {
                        return end;
                    }
                }
                event = recv_event(&mut self.events) => match event {
                    Some(SessionEvent::Send(msg)) => {
                        if self.send(&msg).await.is_err() {
                            return End::Gone;
                        }
                    }
                    Some(SessionEvent::Raw(json)) => {
                        if self.send_text(&json).await.is_err() {
                            return End::Gone;
                        }
                    }
                    Some(SessionEvent::Admitted(joined)) => {
                        self.waiting = false;
                        self.peer = Some(joined.peer);
                        self.joined_at = Some(Instant::now());
                        if self.send(&joined.welcome).await.is_err() {
                            return End::Gone;
                        }
                    }
                    Some(SessionEvent::Close(reason)) => {
                        // The media plane already removed us (replaced, shutdown, too slow).
                        self.peer = None;
                        let _ = self.send(&ServerMessage::Closing { reason }).await;
                        let _ = self.close(1000, "closing").await;
                        return End::Gone;
                    }
                    None => {
                        self.peer = None;
                        return End::Close(LeaveReason::ServerShutdown);
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let what = if self.peer.is_some() {
                        "no message for too long (send a ping every 10 s)"
                    } else {
                        "no join message in time"
                    };
                    self.state.metrics().sessions_cut("idle").inc();
                    let _ = self.fatal(ErrorCode::OutOfOrder, what).await;
                    return End::Gone;
                }
                _ = &mut draining, if !told_going_away => {
                    told_going_away = true;
                    let notice = lifecycle.going_away();
                    if self.send(&notice).await.is_err() {
                        return End::Gone;
                    }
                }
                _ = &mut stopping => {
                    return End::Close(LeaveReason::ServerShutdown);
                }
            }
        }
    }

    /// Handles one frame; `Some` ends the session.
    async fn handle_frame(&mut self, frame: Message) -> Option<End> {
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                return self
                    .error(
                        ErrorCode::BadMessage,
                        "binary frames are not part of the protocol",
                    )
                    .await;
            }
            Message::Close(_) => return Some(End::Gone),
            Message::Ping(_) | Message::Pong(_) => return None,
        };
        if !self.take_token() {
            self.state.metrics().sessions_cut("rate_limited").inc();
            return self
                .fatal(ErrorCode::RateLimited, "more than 50 messages a second")
                .await;
        }
        match check_text(text.as_str()) {
            Ok(msg) => self.handle_message(msg).await,
            Err(Refused { code, message }) if code.is_fatal() => {
                if code == ErrorCode::TooLarge {
                    self.state.metrics().sessions_cut("too_large").inc();
                }
                self.fatal(code, &message).await
            }
            Err(Refused { code, message }) => self.error(code, &message).await,
        }
    }

    async fn handle_message(&mut self, msg: ClientMessage) -> Option<End> {
        let Some(peer) = self.peer else {
            if self.waiting {
                return match msg {
                    ClientMessage::Ping { id } => {
                        self.send_or_end(&ServerMessage::Pong { id }).await
                    }
                    ClientMessage::Leave => Some(End::Close(LeaveReason::Left)),
                    _ => {
                        self.error(
                            ErrorCode::OutOfOrder,
                            "you are waiting in the lobby for a host to let you in",
                        )
                        .await
                    }
                };
            }
            return match msg {
                ClientMessage::Join { .. } if self.state.lifecycle().refuses_joins() => {
                    self.state
                        .metrics()
                        .joins_refused
                        .with_label_values(&["shutting_down"])
                        .inc();
                    self.fatal(
                        ErrorCode::ShuttingDown,
                        "the server is shutting down (for a restart or maintenance): join \
                         again in a moment",
                    )
                    .await
                }
                ClientMessage::Join { protocol, .. } if protocol != PROTOCOL_VERSION => {
                    self.fatal(
                        ErrorCode::UnsupportedVersion,
                        &format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}"),
                    )
                    .await
                }
                ClientMessage::Join {
                    grant,
                    room,
                    resume,
                    ..
                } => match resume {
                    Some(token) => self.resume(&token).await,
                    None => self.join(&grant, room.as_deref()).await,
                },
                ClientMessage::Ping { id } => self.send_or_end(&ServerMessage::Pong { id }).await,
                _ => {
                    self.error(ErrorCode::OutOfOrder, "the first message must be join")
                        .await
                }
            };
        };
        let command = match msg {
            ClientMessage::Join { .. } => {
                return self.error(ErrorCode::OutOfOrder, "already joined").await;
            }
            ClientMessage::Ping { id } => {
                return self.send_or_end(&ServerMessage::Pong { id }).await;
            }
            ClientMessage::Leave => return Some(End::Close(LeaveReason::Left)),
            ClientMessage::Offer { sdp, tracks } => Command::Offer { peer, sdp, tracks },
            ClientMessage::Answer { sdp } => Command::Answer { peer, sdp },
            ClientMessage::Candidate { candidate } => Command::Candidate { peer, candidate },
            ClientMessage::Mute { track_id, muted } => Command::Mute {
                peer,
                track_id,
                muted,
            },
            ClientMessage::Data { text } => Command::Data { peer, text },
            ClientMessage::Chat { text } => Command::Chat { peer, text },
            ClientMessage::RaiseHand { raised } => Command::RaiseHand { peer, raised },
            ClientMessage::Vote { motion_id, choices } => Command::Vote {
                peer,
                motion_id,
                choices,
            },
            ClientMessage::Subscription { tracks } => Command::Subscription { peer, tracks },
            ClientMessage::Host(action) => Command::Host { peer, action },
        };
        if self.state.media().send(command).await.is_err() {
            return Some(End::Close(LeaveReason::ServerShutdown));
        }
        None
    }

    async fn join(&mut self, grant: &str, room: Option<&str>) -> Option<End> {
        let started = Instant::now();
        let claims = match self.verify_grant(grant, room).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!("join refused: {e}");
                let reason = if e == GrantError::WrongRoom {
                    "wrong_room"
                } else {
                    "invalid_grant"
                };
                self.state
                    .metrics()
                    .joins_refused
                    .with_label_values(&[reason])
                    .inc();
                return self.fatal(ErrorCode::InvalidGrant, &e.to_string()).await;
            }
        };
        let (events_tx, events_rx) = mpsc::channel(SESSION_QUEUE);
        let (reply_tx, reply_rx) = oneshot::channel();
        let request = JoinRequest {
            room: claims.room.clone(),
            info: ParticipantInfo {
                id: String::new(),
                identity: claims.sub.clone(),
                name: claims.name.clone(),
                role: claims.role,
                invited_by: claims.invited_by.clone(),
                ..ParticipantInfo::default()
            },
            permissions: claims.permissions.clone(),
            started,
            events: events_tx,
        };
        let command = Command::Join {
            request,
            reply: reply_tx,
        };
        self.send_join(command, reply_rx, events_rx).await
    }

    /// A dropped session comes back with its resume token.
    async fn resume(&mut self, token: &str) -> Option<End> {
        let (events_tx, events_rx) = mpsc::channel(SESSION_QUEUE);
        let (reply_tx, reply_rx) = oneshot::channel();
        let command = Command::Resume {
            token: token.to_string(),
            events: events_tx,
            started: Instant::now(),
            reply: reply_tx,
        };
        self.send_join(command, reply_rx, events_rx).await
    }

    /// Hands a join (or resume) to the media plane and acts on its answer.
    async fn send_join(
        &mut self,
        command: Command,
        reply_rx: oneshot::Receiver<Result<JoinOutcome, JoinError>>,
        events_rx: mpsc::Receiver<SessionEvent>,
    ) -> Option<End> {
        if self.state.media().send(command).await.is_err() {
            return self
                .fatal(ErrorCode::Unavailable, "the server is shutting down")
                .await;
        }
        match tokio::time::timeout(JOIN_REPLY, reply_rx).await {
            Ok(Ok(Ok(JoinOutcome::Joined(joined)))) => {
                // A resumed guest has no grant to tell whose guest time this session uses.
                if let ServerMessage::Welcome { me, .. } = &joined.welcome {
                    if me.role == plenary_proto::Role::Guest {
                        self.guest_of = me.invited_by.clone();
                    }
                }
                self.peer = Some(joined.peer);
                self.events = Some(events_rx);
                self.joined_at = Some(Instant::now());
                self.send_or_end(&joined.welcome).await
            }
            Ok(Ok(Ok(JoinOutcome::Waiting { room }))) => {
                self.waiting = true;
                self.events = Some(events_rx);
                self.send_or_end(&ServerMessage::Waiting { room }).await
            }
            Ok(Ok(Err(e))) => {
                let code = match e {
                    JoinError::Locked => ErrorCode::RoomLocked,
                    JoinError::Barred => ErrorCode::Barred,
                    JoinError::ResumeFailed => ErrorCode::ResumeFailed,
                    JoinError::ShuttingDown => ErrorCode::ShuttingDown,
                    _ => ErrorCode::Unavailable,
                };
                self.fatal(code, &e.to_string()).await
            }
            _ => {
                self.fatal(ErrorCode::Internal, "the media plane did not answer")
                    .await
            }
        }
    }

    /// Verifies a grant; every grant is single-use (in the store with sign-in configured,
    /// else in the key ring's memory).
    ///
    /// The room the client asked for is checked before the `jti` is recorded, so a refused
    /// join uses nothing up.
    async fn verify_grant(
        &mut self,
        grant: &str,
        room: Option<&str>,
    ) -> Result<Claims, GrantError> {
        let keys = self.state.keys().clone();
        let mut verified = keys.verify_signed(grant);
        if verified == Err(GrantError::UnknownKey) {
            // Maybe a key rotated in by `plenary keys rotate` that we have not loaded yet.
            if let Some(m) = self.state.membership() {
                m.refresh_keys().await;
                verified = keys.verify_signed(grant);
            }
        }
        let (claims, signer) = verified?;
        if room.is_some_and(|r| r != claims.room) {
            return Err(GrantError::WrongRoom);
        }
        match self.state.membership() {
            Some(m) => match m.consume_jti(&claims).await {
                Ok(true) => {}
                Ok(false) => return Err(GrantError::Replayed),
                Err(e) => {
                    tracing::error!("cannot record the grant's jti: {e}");
                    return Err(GrantError::Replayed);
                }
            },
            None if signer == Signer::Server => return Err(GrantError::UnknownKey),
            None => keys.consume_jti(&claims)?,
        }
        if claims.role == plenary_proto::Role::Guest {
            self.guest_of = claims.invited_by.clone();
        }
        Ok(claims)
    }

    fn take_token(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * RATE_PER_SEC).min(RATE_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    async fn send(&mut self, msg: &ServerMessage) -> Result<(), ()> {
        let json = serde_json::to_string(msg).map_err(|_| ())?;
        self.send_text(&json).await
    }

    /// Sends an already serialised message (a broadcast is serialised once for everyone).
    async fn send_text(&mut self, json: &str) -> Result<(), ()> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Text(json.into()))).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                // The client has not read for SEND_TIMEOUT with its socket buffer full.
                self.state.metrics().sessions_cut("slow_consumer").inc();
                Err(())
            }
        }
    }

    async fn send_or_end(&mut self, msg: &ServerMessage) -> Option<End> {
        match self.send(msg).await {
            Ok(()) => None,
            Err(()) => Some(End::Gone),
        }
    }

    /// A non-fatal error: tell the client and go on.
    async fn error(&mut self, code: ErrorCode, message: &str) -> Option<End> {
        self.send_or_end(&ServerMessage::error(code, message)).await
    }

    /// A fatal error: tell the client, close the socket, end the session.
    async fn fatal(&mut self, code: ErrorCode, message: &str) -> Option<End> {
        let _ = self.send(&ServerMessage::error(code, message)).await;
        let close_code = match code {
            ErrorCode::TooLarge => 1009,
            ErrorCode::Internal => 1011,
            ErrorCode::Unavailable => 1013,
            _ => 1008,
        };
        let _ = self.close(close_code, message).await;
        self.linger().await;
        Some(End::Fatal)
    }

    /// After the server's close frame: reads (and drops) what the client still sends, until
    /// its close frame, the end of the stream or [`LINGER`]. Closing a TCP socket with
    /// unread data resets the connection, and a client still writing — a flooder — may then
    /// lose the error and close frames it had not read yet, never learning why it was cut.
    async fn linger(&mut self) {
        let until = tokio::time::Instant::now() + LINGER;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, self.socket.recv()).await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), axum::Error> {
        // Close reasons are limited to 123 bytes.
        let mut reason = reason.to_string();
        while reason.len() > 120 {
            reason.pop();
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        self.socket.send(Message::Close(Some(frame))).await?;
        self.socket.flush().await
    }
}

/// How long a session cut off for misbehaving still reads its client's messages (see
/// `Session::linger`): bounded, and what is read is dropped unparsed.
const LINGER: Duration = Duration::from_millis(500);

async fn recv_event(events: &mut Option<mpsc::Receiver<SessionEvent>>) -> Option<SessionEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Why a client's text frame was refused: the error the client is told. Fatal codes
/// ([`ErrorCode::is_fatal`]) end the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The error code.
    pub code: ErrorCode,
    /// The explanation.
    pub message: String,
}

/// The checks every text frame passes before it means anything: its size (64 KiB, or
/// 1 MiB for `offer` and `answer`), JSON, an object with a known `type`, and that type's
/// shape. What the message asks is checked later, by the media plane and the meeting rules.
pub fn check_text(text: &str) -> Result<ClientMessage, Refused> {
    let refuse = |code, message: String| Err(Refused { code, message });
    if text.len() > MAX_SDP_MESSAGE_BYTES {
        return refuse(
            ErrorCode::TooLarge,
            format!("offer and answer messages are limited to {MAX_SDP_MESSAGE_BYTES} bytes"),
        );
    }
    let msg = match parse(text) {
        Ok(m) => m,
        Err((code, message)) => return refuse(code, message),
    };
    let carries_sdp = matches!(
        msg,
        ClientMessage::Offer { .. } | ClientMessage::Answer { .. }
    );
    if !carries_sdp && text.len() > MAX_MESSAGE_BYTES {
        return refuse(
            ErrorCode::TooLarge,
            format!("messages are limited to {MAX_MESSAGE_BYTES} bytes"),
        );
    }
    Ok(msg)
}

/// Parses one client message, telling a bad shape from an unknown type.
fn parse(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (ErrorCode::BadMessage, format!("not valid JSON: {e}")))?;
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return Err((
            ErrorCode::BadMessage,
            "a message must be a JSON object with a string \"type\"".into(),
        ));
    };
    if !CLIENT_TYPES.contains(&kind) {
        return Err((
            ErrorCode::UnknownType,
            format!("unknown message type {kind:?}"),
        ));
    }
    let kind = kind.to_string();
    serde_json::from_value(value).map_err(|e| {
        (
            ErrorCode::BadMessage,
            format!("malformed {kind} message: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tells_errors_apart() {
        assert_eq!(parse("{").unwrap_err().0, ErrorCode::BadMessage);
        assert_eq!(parse("[1]").unwrap_err().0, ErrorCode::BadMessage);
        assert_eq!(
            parse(r#"{"type":"dance"}"#).unwrap_err().0,
            ErrorCode::UnknownType
        );
        let (code, msg) = parse(r#"{"type":"offer"}"#).unwrap_err();
        assert_eq!(code, ErrorCode::BadMessage);
        assert!(msg.contains("sdp"), "{msg}");
        assert!(matches!(
            parse(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        ));
    }

    #[test]
    fn check_text_limits_sizes_by_type() {
        let big_data = format!(
            r#"{{"type":"data","text":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(check_text(&big_data).unwrap_err().code, ErrorCode::TooLarge);
        let big_offer = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(check_text(&big_offer).is_ok());
        let huge = "x".repeat(MAX_SDP_MESSAGE_BYTES + 1);
        assert!(check_text(&huge).unwrap_err().code.is_fatal());
        assert_eq!(check_text("{").unwrap_err().code, ErrorCode::BadMessage);
    }

    #[test]
    fn every_client_type_is_listed() {
        for (json, kind) in [
            (r#"{"type":"join","protocol":1,"grant":"g"}"#, "join"),
            (r#"{"type":"offer","sdp":"s"}"#, "offer"),
            (r#"{"type":"answer","sdp":"s"}"#, "answer"),
            (
                r#"{"type":"candidate","candidate":{"candidate":""}}"#,
                "candidate",
            ),
            (r#"{"type":"mute","track_id":"t","muted":true}"#, "mute"),
            (r#"{"type":"data","text":"x"}"#, "data"),
            (r#"{"type":"ping"}"#, "ping"),
            (r#"{"type":"chat","text":"hi"}"#, "chat"),
            (r#"{"type":"raise_hand","raised":true}"#, "raise_hand"),
            (
                r#"{"type":"vote","motion_id":"MO_1","choices":[0]}"#,
                "vote",
            ),
            (r#"{"type":"subscription","tracks":[]}"#, "subscription"),
            (r#"{"type":"host","action":"mute_all"}"#, "host"),
            (r#"{"type":"leave"}"#, "leave"),
        ] {
            assert!(CLIENT_TYPES.contains(&kind));
            parse(json).unwrap();
        }
    }
}
