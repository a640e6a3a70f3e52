//! An independent WebRTC test client for Plenary's whole-server tests.
//!
//! [`TestClient`] speaks the signaling protocol of `docs/protocol.md` over a real WebSocket
//! (`tokio-tungstenite`) and carries media over a real peer connection built with webrtc-rs
//! (`webrtc` 0.21). None of the server's own media code is used: if media flows between two
//! test clients, it flowed through the SFU as a browser would see it.
//!
//! What a client does:
//!
//! 1. `join` with a grant and wait for `welcome` (or the refusal, see [`ConnectError`]);
//! 2. build a peer connection with the ICE servers from `welcome`, always create the data
//!    channel `plenary`, add a `sendonly` Opus (microphone) and/or VP8 (camera) transceiver as
//!    [`ClientOptions`] asks, `offer` with the `tracks` mid → source mapping and apply the
//!    `answer`;
//! 3. answer every server `offer` (ignoring one that arrives while its own offer is
//!    outstanding: the glare rule of §2.4), trickle its ICE candidates, ping every few seconds;
//! 4. send synthetic RTP on its tracks: 20 ms Opus-sized packets and ~30 packets/s of
//!    ~1000-byte VP8 packets, whose payloads carry a recognisable pattern (see
//!    [`synth_payload`]) so that a receiver can check every byte arrived intact;
//! 5. record everything into a [`ClientState`]: room events, errors, the remote tracks it
//!    receives (keyed by the server's `track_id`, from the `tracks` mapping of the server's
//!    offers) with packet counts and payload verification results.
//!
//! Tests read the state with [`TestClient::state`] or block on a condition with
//! [`TestClient::wait_for`], which is always bounded by a timeout.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use plenary_proto::{
    ClientMessage, ErrorCode, IceCandidate, LeaveReason, ParticipantInfo, PublishedTrack,
    ServerMessage, TrackInfo, TrackKind, TrackMapping, TrackSource, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Mutex as AsyncMutex};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
};
use webrtc::rtp_transceiver::{
    RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpSender, RtpTransceiver,
};

/// How long [`TestClient::connect`] waits for each step (welcome, answer).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Every payload the client sends starts its pattern with these bytes.
pub const MAGIC: &[u8; 4] = b"PLNY";

/// Audio packets are sent this often (one 20 ms Opus frame each).
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Video packets are sent this often (~30 packets/s, one single-packet frame each).
pub const VIDEO_INTERVAL: Duration = Duration::from_millis(33);
/// Every this many video packets one is a keyframe (the first few are keyframes too).
pub const KEYFRAME_EVERY: u32 = 15;

/// An error from the test client's library part.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the join (or a later step) with this error message.
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server closed the connection before the step finished.
    Closed(String),
    /// A step did not finish in time.
    Timeout(String),
    /// Anything else (WebSocket, WebRTC, JSON...).
    Other(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused { code, message } => write!(f, "refused: {code:?}: {message}"),
            ConnectError::Closed(what) => write!(f, "connection closed: {what}"),
            ConnectError::Timeout(what) => write!(f, "timed out: {what}"),
            ConnectError::Other(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl ConnectError {
    /// The refusal's error code, if this is a refusal.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ConnectError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn other(context: &str, err: impl fmt::Display) -> ConnectError {
    ConnectError::Other(format!("{context}: {err}"))
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, ConnectError>;

/// What a [`TestClient`] publishes and how it behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Publish a sendonly Opus track with source `microphone`.
    pub audio: bool,
    /// Publish a sendonly VP8 track with source `camera`.
    pub video: bool,
    /// Send `room` in the join (must equal the grant's room to be accepted).
    pub room: Option<String>,
    /// Trickle local ICE candidates with `candidate` messages.
    pub trickle: bool,
    /// Send `ping` this often (the server drops sessions silent for 30 s).
    pub ping_every: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            audio: true,
            video: true,
            room: None,
            trickle: true,
            ping_every: Duration::from_secs(5),
        }
    }
}

impl ClientOptions {
    /// Publish microphone and camera (the default).
    pub fn publisher() -> Self {
        ClientOptions::default()
    }

    /// Publish nothing; only receive.
    pub fn receiver() -> Self {
        ClientOptions {
            audio: false,
            video: false,
            ..ClientOptions::default()
        }
    }

    /// The same options, naming `room` in the join.
    pub fn in_room(mut self, room: &str) -> Self {
        self.room = Some(room.to_owned());
        self
    }
}

/// What a client knows about one remote track it receives, keyed by the server's track id.
#[derive(Debug, Clone)]
pub struct RemoteTrackStats {
    /// The server's track id (from the offer's `tracks` mapping).
    pub track_id: String,
    /// The publishing participant's id (from the same mapping).
    pub participant_id: String,
    /// The mid of the m-line it arrived on.
    pub mid: String,
    /// RTP packets received.
    pub packets: u64,
    /// Packets whose payload matched the synthetic pattern byte for byte.
    pub payload_ok: u64,
    /// Packets whose payload did not (truncated, altered, foreign).
    pub payload_bad: u64,
    /// Packets whose payload was fine but claimed another kind or publisher than the mapping.
    pub misrouted: u64,
    /// The publisher identity written in the payloads (the last seen).
    pub sender_identity: Option<String>,
    /// The kind written in the payloads (the last seen).
    pub kind: Option<TrackKind>,
    /// Highest payload counter seen.
    pub max_counter: u32,
    /// Keyframes seen (video).
    pub keyframes: u64,
    /// When the first packet arrived.
    pub first_packet: Option<Instant>,
    /// When the last packet arrived.
    pub last_packet: Option<Instant>,
    /// The first few verification failures, for diagnostics.
    pub failures: Vec<String>,
}

impl RemoteTrackStats {
    fn new(mapping: &TrackMapping) -> Self {
        RemoteTrackStats {
            track_id: mapping.track_id.clone(),
            participant_id: mapping.participant_id.clone(),
            mid: mapping.mid.clone(),
            packets: 0,
            payload_ok: 0,
            payload_bad: 0,
            misrouted: 0,
            sender_identity: None,
            kind: None,
            max_counter: 0,
            keyframes: 0,
            first_packet: None,
            last_packet: None,
            failures: Vec::new(),
        }
    }
}

/// Everything a client has observed. Read it with [`TestClient::state`].
#[derive(Debug, Clone, Default)]
pub struct ClientState {
    /// This client's own participant record (from `welcome`).
    pub me: Option<ParticipantInfo>,
    /// The room's name (from `welcome`).
    pub room: String,
    /// The ICE servers `welcome` named.
    pub ice_servers: Vec<plenary_proto::IceServer>,
    /// The others in the room, by participant id (welcome + joined − left).
    pub participants: BTreeMap<String, ParticipantInfo>,
    /// Every track published in the room, by track id (welcome + published − unpublished,
    /// mute state kept up to date).
    pub room_tracks: BTreeMap<String, TrackInfo>,
    /// Room events in arrival order: participants_changed, track_published/unpublished,
    /// track_muted, data, closing.
    pub events: Vec<ServerMessage>,
    /// Error messages in arrival order.
    pub errors: Vec<(ErrorCode, String)>,
    /// The `closing` reason, if the server sent one.
    pub closing: Option<LeaveReason>,
    /// Whether the signaling WebSocket has closed (either side).
    pub ws_closed: bool,
    /// Track ids the server gave this client's own tracks (from its `answer`s).
    pub published: Vec<TrackMapping>,
    /// The current mid → remote track mapping (from the last applied server offer).
    pub mid_map: HashMap<String, TrackMapping>,
    /// Remote tracks received, by track id.
    pub remote: BTreeMap<String, RemoteTrackStats>,
    /// RTP packets that arrived on an m-line the mapping does not name.
    pub unmapped_packets: u64,
    /// Server offers received, applied, and ignored under the glare rule.
    pub server_offers: u32,
    /// Server offers answered.
    pub answers_sent: u32,
    /// Server offers ignored because this client's own offer was outstanding.
    pub offers_ignored: u32,
    /// Client offers answered by the server.
    pub answers_received: u32,
    /// Failures while handling signaling (applying descriptions...), for diagnostics.
    pub failures: Vec<String>,
    /// The peer connection's state, as last reported.
    pub connection_state: Option<RTCPeerConnectionState>,
    /// RTP packets this client handed to its peer connection, per source.
    pub sent: HashMap<TrackSource, u64>,
    /// `pong` ids received.
    pub pongs: Vec<u64>,
    /// The SDP of the server's last offer or answer.
    pub server_sdp: Option<String>,
}

impl ClientState {
    /// The other participant with this identity, if exactly... the first one found.
    pub fn participant_by_identity(&self, identity: &str) -> Option<&ParticipantInfo> {
        self.participants.values().find(|p| p.identity == identity)
    }

    /// How many others in the room carry this identity.
    pub fn count_identity(&self, identity: &str) -> usize {
        self.participants
            .values()
            .filter(|p| p.identity == identity)
            .count()
    }

    /// The remote track of `kind` published by the participant with this identity, judged by
    /// the mapping's participant id, among the tracks this client receives.
    pub fn received_from(&self, identity: &str, kind: TrackKind) -> Option<&RemoteTrackStats> {
        let participant = self.participant_by_identity(identity)?;
        self.remote.values().find(|r| {
            r.participant_id == participant.id
                && self
                    .room_tracks
                    .get(&r.track_id)
                    .map(|t| t.kind == kind)
                    .or(r.kind.map(|k| k == kind))
                    .unwrap_or(false)
        })
    }

    /// Whether `received_from(identity, kind)` has at least `n` intact packets and no bad
    /// or misrouted one.
    pub fn receives_intact(&self, identity: &str, kind: TrackKind, n: u64) -> bool {
        self.received_from(identity, kind).is_some_and(|r| {
            r.payload_ok >= n
                && r.payload_bad == 0
                && r.misrouted == 0
                && r.sender_identity.as_deref() == Some(identity)
        })
    }

    /// Whether an error with this code has arrived.
    pub fn has_error(&self, code: ErrorCode) -> bool {
        self.errors.iter().any(|(c, _)| *c == code)
    }

    /// The server's ICE username fragment for this client (from its SDP).
    pub fn server_ufrag(&self) -> Option<String> {
        self.server_sdp
            .as_deref()?
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
    }

    /// How many errors with this code have arrived.
    pub fn error_count(&self, code: ErrorCode) -> usize {
        self.errors.iter().filter(|(c, _)| *c == code).count()
    }

    /// Whether a `participants_changed` saying this participant id left has arrived.
    pub fn saw_left(&self, participant_id: &str) -> Option<LeaveReason> {
        self.events.iter().find_map(|e| match e {
            ServerMessage::ParticipantsChanged { left, .. } => left
                .iter()
                .find(|l| l.id == participant_id)
                .map(|l| l.reason),
            _ => None,
        })
    }

    /// Whether a `track_unpublished` for this track id has arrived.
    pub fn saw_unpublished(&self, track_id: &str) -> bool {
        self.events.iter().any(
            |e| matches!(e, ServerMessage::TrackUnpublished { track_id: id } if id == track_id),
        )
    }

    /// Whether a `participants_changed` saying someone with this identity joined has arrived.
    pub fn saw_joined(&self, identity: &str) -> bool {
        self.events.iter().any(|e| match e {
            ServerMessage::ParticipantsChanged { joined, .. } => {
                joined.iter().any(|p| p.identity == identity)
            }
            _ => false,
        })
    }

    /// Total RTP packets received over all remote tracks.
    pub fn total_received(&self) -> u64 {
        self.remote.values().map(|r| r.packets).sum()
    }
}

/// State shared between the client handle and its tasks.
struct Shared {
    state: StdMutex<ClientState>,
    /// Bumped on every change, so waiters wake up.
    changed: watch::Sender<u64>,
    /// Serialises negotiation (own offers, answers to server offers).
    negotiation: AsyncMutex<Negotiation>,
    /// This client's identity, for the payload pattern.
    identity: String,
}

#[derive(Default)]
struct Negotiation {
    /// Our own offer is outstanding (we are in `have-local-offer`).
    offer_outstanding: bool,
    /// Sources of the m-lines of our outstanding offer, by mid.
    offered: Vec<PublishedTrack>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ClientState> {
        // A panic while holding the lock poisons it; the state is still readable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update<R>(&self, f: impl FnOnce(&mut ClientState) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        r
    }
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WsSink = SplitSink<WsStream, Message>;
type WsSource = SplitStream<WsStream>;

/// A participant driven by the test: one signaling WebSocket and one webrtc-rs peer
/// connection.
pub struct TestClient {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Message>,
    pc: Arc<dyn PeerConnection>,
    tasks: Vec<JoinHandle<()>>,
    _data_channel: Arc<dyn DataChannel>,
    identity: String,
}

impl fmt::Debug for TestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClient")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl TestClient {
    /// Joins with `grant` at `ws_url` (e.g. `ws://127.0.0.1:1234/rtc`), publishing microphone
    /// and camera. See [`TestClient::connect_with`].
    pub async fn connect(ws_url: &str, grant: &str) -> Result<TestClient> {
        TestClient::connect_with(ws_url, grant, ClientOptions::default()).await
    }

    /// Joins, builds the peer connection, publishes what `options` asks and returns once the
    /// server's answer to the first offer has been applied (media may still be connecting:
    /// see [`TestClient::wait_connected`]).
    ///
    /// A refused join is [`ConnectError::Refused`] with the server's code.
    pub async fn connect_with(
        ws_url: &str,
        grant: &str,
        options: ClientOptions,
    ) -> Result<TestClient> {
        let (ws, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(ws_url))
            .await
            .map_err(|_| ConnectError::Timeout("WebSocket connect".into()))?
            .map_err(|e| other("WebSocket connect", e))?;
        let (mut sink, mut source) = ws.split();

        // 1. Join.
        let join = ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant: grant.to_owned(),
            resume: None,
            room: options.room.clone(),
        };
        send_json(&mut sink, &join).await?;
        let mut early = Vec::new();
        let welcome = tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                match next_server_message(&mut source).await? {
                    msg @ ServerMessage::Welcome { .. } => return Ok(msg),
                    ServerMessage::Error { code, message } => {
                        return Err(ConnectError::Refused { code, message })
                    }
                    msg => early.push(msg),
                }
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout("welcome".into()))??;
        let ServerMessage::Welcome {
            room,
            me,
            participants,
            tracks,
            ice_servers,
            ..
        } = welcome
        else {
            return Err(ConnectError::Other("not a welcome".into()));
        };
        let identity = me.identity.clone();

        let initial = ClientState {
            me: Some(me.clone()),
            room,
            ice_servers: ice_servers.clone(),
            participants: participants
                .into_iter()
                .map(|p| (p.id.clone(), p))
                .collect(),
            room_tracks: tracks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            ..ClientState::default()
        };
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: StdMutex::new(initial),
            changed,
            negotiation: AsyncMutex::new(Negotiation::default()),
            identity: identity.clone(),
        });

        // Writer task: everything the client sends goes through `out`.
        let (out, out_rx) = mpsc::unbounded_channel::<Message>();
        let mut tasks = vec![tokio::spawn(write_loop(sink, out_rx, Arc::clone(&shared)))];

        // 2. The peer connection.
        let (candidate_tx, candidate_rx) = mpsc::unbounded_channel::<RTCIceCandidateInit>();
        let pc_slot: Arc<OnceLock<Weak<dyn PeerConnection>>> = Arc::new(OnceLock::new());
        let handler = Arc::new(Handler {
            shared: Arc::clone(&shared),
            pc: Arc::clone(&pc_slot),
            candidates: options.trickle.then_some(candidate_tx),
        });
        let pc = build_peer_connection(&ice_servers, handler).await?;
        // The slot is fresh, so this cannot fail; ignore the impossible error.
        let _ = pc_slot.set(Arc::downgrade(&pc));

        let data_channel = pc
            .create_data_channel("plenary", None)
            .await
            .map_err(|e| other("create data channel", e))?;
        tasks.push(tokio::spawn(drain_data_channel(Arc::clone(&data_channel))));

        let mut local_tracks = Vec::new();
        if options.audio {
            local_tracks.push(add_sendonly(&pc, TrackSource::Microphone, &identity).await?);
        }
        if options.video {
            local_tracks.push(add_sendonly(&pc, TrackSource::Camera, &identity).await?);
        }

        // Signaling task: handles every server message from here on (room events recorded
        // before `welcome` too).
        for msg in early {
            record_event(&shared, msg);
        }
        tasks.push(tokio::spawn(read_loop(
            source,
            Arc::clone(&shared),
            Arc::clone(&pc),
            out.clone(),
        )));

        // 3. Offer what we publish (mids are known once the offer is applied locally).
        let answered = {
            let mut neg = shared.negotiation.lock().await;
            let offer = pc
                .create_offer(None)
                .await
                .map_err(|e| other("create offer", e))?;
            pc.set_local_description(offer.clone())
                .await
                .map_err(|e| other("set local offer", e))?;
            let mut tracks = Vec::new();
            for (transceiver, source, _, _) in &local_tracks {
                let mid = transceiver
                    .mid()
                    .await
                    .map_err(|e| other("transceiver mid", e))?
                    .ok_or_else(|| ConnectError::Other("transceiver has no mid".into()))?;
                tracks.push(PublishedTrack {
                    mid,
                    source: *source,
                });
            }
            let sdp = pc
                .local_description()
                .await
                .map(|d| d.sdp)
                .unwrap_or(offer.sdp);
            neg.offer_outstanding = true;
            neg.offered = tracks.clone();
            let before = shared.lock().answers_received;
            send_message(&out, &ClientMessage::Offer { sdp, tracks })?;
            before
        };

        // Candidates go out only after the offer, as a browser would send them.
        if let Some(rx) = options.trickle.then_some(candidate_rx) {
            tasks.push(tokio::spawn(forward_candidates(rx, out.clone())));
        }

        // Keep-alive.
        tasks.push(tokio::spawn(ping_loop(out.clone(), options.ping_every)));

        // Media senders start now; packets written before the transport is up are dropped
        // by the peer connection, which is what a browser's encoder would see too.
        for (transceiver, source, track, ssrc) in local_tracks {
            let sender = transceiver
                .sender()
                .await
                .map_err(|e| other("transceiver sender", e))?
                .ok_or_else(|| ConnectError::Other("transceiver has no sender".into()))?;
            tasks.push(tokio::spawn(send_media(
                Arc::clone(&shared),
                sender,
                track,
                ssrc,
                source,
            )));
        }

        let client = TestClient {
            shared,
            out,
            pc,
            tasks,
            _data_channel: data_channel,
            identity,
        };

        // 4. Wait for the answer (or a refusal / close).
        client
            .wait_until(STEP_TIMEOUT, |s| {
                if s.answers_received > answered {
                    Some(Ok(()))
                } else if let Some((code, message)) =
                    s.errors.iter().find(|(c, _)| c.is_fatal()).cloned()
                {
                    Some(Err(ConnectError::Refused { code, message }))
                } else if s.ws_closed {
                    Some(Err(ConnectError::Closed("before the answer".into())))
                } else {
                    None
                }
            })
            .await
            .map_err(|_| ConnectError::Timeout("answer to the first offer".into()))??;
        Ok(client)
    }

    /// Offers again with the same tracks (e.g. after a host gave this client the floor:
    /// the server then publishes what it refused before). Waits for the answer.
    pub async fn reoffer(&self) -> Result<()> {
        let answered = {
            let mut neg = self.shared.negotiation.lock().await;
            let offer = self
                .pc
                .create_offer(None)
                .await
                .map_err(|e| other("create offer", e))?;
            self.pc
                .set_local_description(offer.clone())
                .await
                .map_err(|e| other("set local offer", e))?;
            let sdp = self
                .pc
                .local_description()
                .await
                .map(|d| d.sdp)
                .unwrap_or(offer.sdp);
            neg.offer_outstanding = true;
            let tracks = neg.offered.clone();
            let before = self.shared.lock().answers_received;
            send_message(&self.out, &ClientMessage::Offer { sdp, tracks })?;
            before
        };
        self.wait_until(STEP_TIMEOUT, |s| {
            (s.answers_received > answered).then_some(())
        })
        .await
        .map_err(|_| ConnectError::Timeout("answer to the new offer".into()))
    }

    /// This client's identity (the grant's `sub`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// This client's participant id (from `welcome`).
    pub fn participant_id(&self) -> String {
        self.shared
            .lock()
            .me
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default()
    }

    /// A snapshot of everything observed so far.
    pub fn state(&self) -> ClientState {
        self.shared.lock().clone()
    }

    /// Runs `f` on the current state without copying it.
    pub fn with_state<R>(&self, f: impl FnOnce(&ClientState) -> R) -> R {
        f(&self.shared.lock())
    }

    /// Waits until `cond` holds, at most `timeout`. On timeout the error describes the state,
    /// so a failing test says what it saw.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&ClientState) -> bool,
    ) -> std::result::Result<(), String> {
        self.wait_until(timeout, |s| cond(s).then_some(()))
            .await
            .map_err(|_| {
                format!(
                    "{}: condition not met within {timeout:?}; state: {}",
                    self.identity,
                    describe(&self.shared.lock())
                )
            })
    }

    /// Waits until `f` returns `Some`, at most `timeout`, and returns its value.
    pub async fn wait_until<R>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&ClientState) -> Option<R>,
    ) -> std::result::Result<R, ()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.changed.subscribe();
        loop {
            if let Some(r) = f(&self.shared.lock()) {
                return Ok(r);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `shared`, which we hold: cannot end. Poll instead.
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => return Err(()),
            }
        }
    }

    /// Waits until the peer connection reports `connected`.
    pub async fn wait_connected(&self, timeout: Duration) -> std::result::Result<(), String> {
        self.wait_for(timeout, |s| {
            s.connection_state == Some(RTCPeerConnectionState::Connected)
        })
        .await
    }

    /// Waits for an error with `code` beyond the `already_seen` ones of that code.
    pub async fn wait_for_error(
        &self,
        code: ErrorCode,
        already_seen: usize,
        timeout: Duration,
    ) -> std::result::Result<String, String> {
        self.wait_until(timeout, |s| {
            s.errors
                .iter()
                .filter(|(c, _)| *c == code)
                .nth(already_seen)
                .map(|(_, m)| m.clone())
        })
        .await
        .map_err(|_| {
            format!(
                "{}: no {code:?} error within {timeout:?}; errors: {:?}",
                self.identity,
                self.shared.lock().errors
            )
        })
    }

    /// The errors received so far.
    pub fn errors(&self) -> Vec<(ErrorCode, String)> {
        self.shared.lock().errors.clone()
    }

    /// Sends a protocol message.
    pub fn send(&self, msg: &ClientMessage) -> Result<()> {
        send_message(&self.out, msg)
    }

    /// Sends `text` as one text frame, as is (for malformed-message tests).
    pub fn send_raw(&self, text: impl Into<String>) -> Result<()> {
        self.out
            .send(Message::text(text.into()))
            .map_err(|_| ConnectError::Closed("signaling writer has stopped".into()))
    }

    /// Sends one binary frame (which the protocol refuses).
    pub fn send_binary(&self, bytes: Vec<u8>) -> Result<()> {
        self.out
            .send(Message::binary(bytes))
            .map_err(|_| ConnectError::Closed("signaling writer has stopped".into()))
    }

    /// Says `leave`, waits for the server to close the socket (at most [`STEP_TIMEOUT`]), and
    /// shuts down. An error says the message could not be sent or the server did not close.
    pub async fn leave(self) -> Result<()> {
        let result = match self.send(&ClientMessage::Leave) {
            Ok(()) => self
                .wait_for(STEP_TIMEOUT, |s| s.ws_closed)
                .await
                .map_err(|e| ConnectError::Timeout(format!("close after leave: {e}"))),
            Err(e) => Err(e),
        };
        self.close().await;
        result
    }

    /// Shuts the client down without saying `leave`: the socket and the peer connection just
    /// go away, as when a browser tab is killed.
    pub async fn close(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pc.close()).await;
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        // Close the peer connection in the background if the runtime is still there.
        let pc = Arc::clone(&self.pc);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// A one-line summary of a state, for timeout messages.
pub fn describe(s: &ClientState) -> String {
    let remote: Vec<String> = s
        .remote
        .values()
        .map(|r| {
            format!(
                "{}(from {} {:?} mid {}: {} pkts, {} ok, {} bad, {} misrouted, sender {:?}{})",
                r.track_id,
                r.participant_id,
                r.kind,
                r.mid,
                r.packets,
                r.payload_ok,
                r.payload_bad,
                r.misrouted,
                r.sender_identity,
                r.failures
                    .first()
                    .map(|f| format!(", first failure: {f}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!(
        "me={:?} pc={:?} participants={:?} room_tracks={:?} published={:?} mid_map={:?} \
         remote=[{}] unmapped={} offers(server={}, answered={}, ignored={}) answers_received={} \
         sent={:?} errors={:?} closing={:?} ws_closed={} failures={:?} events=[{}]",
        s.me.as_ref().map(|m| (&m.id, &m.identity)),
        s.connection_state,
        s.participants
            .values()
            .map(|p| (&p.id, &p.identity))
            .collect::<Vec<_>>(),
        s.room_tracks
            .values()
            .map(|t| (&t.id, &t.participant_id, t.source))
            .collect::<Vec<_>>(),
        s.published,
        s.mid_map
            .values()
            .map(|m| (&m.mid, &m.track_id))
            .collect::<Vec<_>>(),
        remote.join(", "),
        s.unmapped_packets,
        s.server_offers,
        s.answers_sent,
        s.offers_ignored,
        s.answers_received,
        s.sent,
        s.errors,
        s.closing,
        s.ws_closed,
        s.failures,
        s.events
            .iter()
            .map(event_summary)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// A short form of a room event, for [`describe`].
fn event_summary(e: &ServerMessage) -> String {
    match e {
        ServerMessage::ParticipantsChanged {
            joined,
            updated,
            left,
        } => {
            let mut parts: Vec<String> = joined
                .iter()
                .map(|p| format!("joined({}={})", p.id, p.identity))
                .collect();
            parts.extend(updated.iter().map(|p| format!("updated({})", p.id)));
            parts.extend(
                left.iter()
                    .map(|l| format!("left({}, {:?})", l.id, l.reason)),
            );
            parts.join(", ")
        }
        ServerMessage::TrackPublished { track } => {
            format!("published({} of {})", track.id, track.participant_id)
        }
        ServerMessage::TrackUnpublished { track_id } => format!("unpublished({track_id})"),
        ServerMessage::TrackMuted { track_id, muted } => format!("muted({track_id}, {muted})"),
        ServerMessage::Closing { reason } => format!("closing({reason:?})"),
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A raw signaling connection, for tests of what happens before / instead of a proper join.
// ---------------------------------------------------------------------------------------------

/// A bare signaling WebSocket: send whatever, read server messages. No peer connection.
pub struct RawSignaling {
    sink: WsSink,
    source: WsSource,
}

/// What [`RawSignaling::recv`] got.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Matched by value in tests; size does not matter here.
pub enum RawEvent {
    /// A server message.
    Message(ServerMessage),
    /// A text frame that is not a server message.
    Unparsed(String),
    /// The connection closed.
    Closed,
}

impl RawSignaling {
    /// Opens the WebSocket.
    pub async fn connect(ws_url: &str) -> Result<RawSignaling> {
        let (ws, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(ws_url))
            .await
            .map_err(|_| ConnectError::Timeout("WebSocket connect".into()))?
            .map_err(|e| other("WebSocket connect", e))?;
        let (sink, source) = ws.split();
        Ok(RawSignaling { sink, source })
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.sink
            .send(Message::text(text.into()))
            .await
            .map_err(|e| other("send", e))
    }

    /// Sends one binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.sink
            .send(Message::binary(bytes))
            .await
            .map_err(|e| other("send", e))
    }

    /// Sends a protocol message.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        send_json(&mut self.sink, msg).await
    }

    /// The next event, at most `timeout` away.
    pub async fn recv(&mut self, timeout: Duration) -> Result<RawEvent> {
        tokio::time::timeout(timeout, async {
            loop {
                match self.source.next().await {
                    None | Some(Err(_)) => return RawEvent::Closed,
                    Some(Ok(Message::Close(_))) => return RawEvent::Closed,
                    Some(Ok(Message::Text(text))) => {
                        return match serde_json::from_str::<ServerMessage>(text.as_str()) {
                            Ok(msg) => RawEvent::Message(msg),
                            Err(_) => RawEvent::Unparsed(text.as_str().to_owned()),
                        }
                    }
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout("raw signaling receive".into()))
    }

    /// Reads until an `error` arrives and returns its code and message.
    pub async fn expect_error(&mut self, timeout: Duration) -> Result<(ErrorCode, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await? {
                RawEvent::Message(ServerMessage::Error { code, message }) => {
                    return Ok((code, message))
                }
                RawEvent::Message(_) | RawEvent::Unparsed(_) => continue,
                RawEvent::Closed => {
                    return Err(ConnectError::Closed(
                        "closed before an error arrived".into(),
                    ))
                }
            }
        }
    }

    /// Reads until the server closes the connection (discarding messages).
    pub async fn expect_closed(&mut self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let RawEvent::Closed = self.recv(left).await? {
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signaling plumbing.
// ---------------------------------------------------------------------------------------------

async fn send_json(sink: &mut WsSink, msg: &ClientMessage) -> Result<()> {
    let text = serde_json::to_string(msg).map_err(|e| other("encode", e))?;
    sink.send(Message::text(text))
        .await
        .map_err(|e| other("send", e))
}

fn send_message(out: &mpsc::UnboundedSender<Message>, msg: &ClientMessage) -> Result<()> {
    let text = serde_json::to_string(msg).map_err(|e| other("encode", e))?;
    out.send(Message::text(text))
        .map_err(|_| ConnectError::Closed("signaling writer has stopped".into()))
}

/// The next server message; errors on close or on a frame that is not one.
async fn next_server_message(source: &mut WsSource) -> Result<ServerMessage> {
    loop {
        match source.next().await {
            None => return Err(ConnectError::Closed("WebSocket ended".into())),
            Some(Err(e)) => return Err(ConnectError::Closed(e.to_string())),
            Some(Ok(Message::Close(frame))) => {
                return Err(ConnectError::Closed(format!("close frame {frame:?}")))
            }
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| other(&format!("unparsable server message {text}"), e))
            }
            Some(Ok(_)) => continue,
        }
    }
}

async fn write_loop(
    mut sink: WsSink,
    mut rx: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
) {
    while let Some(msg) = rx.recv().await {
        if sink.send(msg).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
    shared.update(|s| s.ws_closed = true);
}

async fn ping_loop(out: mpsc::UnboundedSender<Message>, every: Duration) {
    let mut id = 0;
    loop {
        tokio::time::sleep(every).await;
        id += 1;
        if send_message(&out, &ClientMessage::Ping { id }).is_err() {
            return;
        }
    }
}

async fn forward_candidates(
    mut rx: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
    out: mpsc::UnboundedSender<Message>,
) {
    while let Some(c) = rx.recv().await {
        let msg = ClientMessage::Candidate {
            candidate: IceCandidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
            },
        };
        if send_message(&out, &msg).is_err() {
            return;
        }
    }
}

/// Handles every server message after `welcome`.
async fn read_loop(
    mut source: WsSource,
    shared: Arc<Shared>,
    pc: Arc<dyn PeerConnection>,
    out: mpsc::UnboundedSender<Message>,
) {
    loop {
        let msg = match source.next().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(msg) => msg,
                    Err(e) => {
                        shared.update(|s| {
                            s.failures
                                .push(format!("unparsable server message {text}: {e}"))
                        });
                        continue;
                    }
                }
            }
            Some(Ok(_)) => continue,
        };
        if let ServerMessage::Offer { sdp, .. } | ServerMessage::Answer { sdp, .. } = &msg {
            let sdp = sdp.clone();
            shared.update(|s| s.server_sdp = Some(sdp));
        }
        match msg {
            ServerMessage::Offer { sdp, tracks } => {
                if let Err(e) = handle_server_offer(&shared, &pc, &out, sdp, tracks).await {
                    shared.update(|s| s.failures.push(format!("server offer: {e}")));
                }
            }
            ServerMessage::Answer { sdp, tracks } => {
                if let Err(e) = handle_server_answer(&shared, &pc, sdp, tracks).await {
                    shared.update(|s| s.failures.push(format!("server answer: {e}")));
                }
            }
            ServerMessage::Candidate { candidate } => {
                let init = RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_mline_index,
                    ..Default::default()
                };
                if let Err(e) = pc.add_ice_candidate(init).await {
                    shared.update(|s| s.failures.push(format!("server candidate: {e}")));
                }
            }
            other => record_event(&shared, other),
        }
    }
    shared.update(|s| s.ws_closed = true);
}

/// Records a room event, error, pong or closing.
fn record_event(shared: &Shared, msg: ServerMessage) {
    shared.update(|s| {
        match &msg {
            ServerMessage::ParticipantsChanged {
                joined,
                updated,
                left,
            } => {
                for p in joined.iter().chain(updated) {
                    if Some(&p.id) != s.me.as_ref().map(|m| &m.id) {
                        s.participants.insert(p.id.clone(), p.clone());
                    }
                }
                for l in left {
                    s.participants.remove(&l.id);
                }
            }
            ServerMessage::TrackPublished { track } => {
                s.room_tracks.insert(track.id.clone(), track.clone());
            }
            ServerMessage::TrackUnpublished { track_id } => {
                s.room_tracks.remove(track_id);
            }
            ServerMessage::TrackMuted { track_id, muted } => {
                if let Some(t) = s.room_tracks.get_mut(track_id) {
                    t.muted = *muted;
                }
            }
            ServerMessage::Error { code, message } => {
                s.errors.push((*code, message.clone()));
                return;
            }
            ServerMessage::Pong { id } => {
                s.pongs.push(*id);
                return;
            }
            ServerMessage::Closing { reason } => {
                s.closing = Some(*reason);
            }
            _ => {}
        }
        s.events.push(msg);
    });
}

/// §2.3/§2.4: answer a server offer, unless our own offer is outstanding (glare).
async fn handle_server_offer(
    shared: &Shared,
    pc: &Arc<dyn PeerConnection>,
    out: &mpsc::UnboundedSender<Message>,
    sdp: String,
    tracks: Vec<TrackMapping>,
) -> std::result::Result<(), String> {
    let neg = shared.negotiation.lock().await;
    shared.update(|s| s.server_offers += 1);
    if neg.offer_outstanding {
        shared.update(|s| s.offers_ignored += 1);
        return Ok(());
    }
    let offer = RTCSessionDescription::offer(sdp).map_err(|e| format!("parse offer: {e}"))?;
    // Record the mapping before applying: packets may arrive as soon as the answer is out.
    shared.update(|s| {
        s.mid_map = tracks.iter().map(|m| (m.mid.clone(), m.clone())).collect();
    });
    pc.set_remote_description(offer)
        .await
        .map_err(|e| format!("set remote offer: {e}"))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| format!("create answer: {e}"))?;
    pc.set_local_description(answer.clone())
        .await
        .map_err(|e| format!("set local answer: {e}"))?;
    let sdp = pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or(answer.sdp);
    send_message(out, &ClientMessage::Answer { sdp }).map_err(|e| e.to_string())?;
    shared.update(|s| s.answers_sent += 1);
    Ok(())
}

/// Applies the server's answer to our offer.
async fn handle_server_answer(
    shared: &Shared,
    pc: &Arc<dyn PeerConnection>,
    sdp: String,
    tracks: Vec<TrackMapping>,
) -> std::result::Result<(), String> {
    let mut neg = shared.negotiation.lock().await;
    if !neg.offer_outstanding {
        return Err("an answer arrived but no offer of ours is outstanding".into());
    }
    neg.offer_outstanding = false;
    let result = match RTCSessionDescription::answer(sdp) {
        Ok(answer) => pc
            .set_remote_description(answer)
            .await
            .map_err(|e| format!("set remote answer: {e}")),
        Err(e) => Err(format!("parse answer: {e}")),
    };
    shared.update(|s| {
        s.published.extend(tracks);
        s.answers_received += 1;
    });
    result
}

// ---------------------------------------------------------------------------------------------
// The peer connection.
// ---------------------------------------------------------------------------------------------

async fn build_peer_connection(
    ice_servers: &[plenary_proto::IceServer],
    handler: Arc<Handler>,
) -> Result<Arc<dyn PeerConnection>> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .map_err(|e| other("register codecs", e))?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .map_err(|e| other("register interceptors", e))?;
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(
            ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
        )
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        // One concrete loopback address: one host candidate, no interface enumeration.
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .map_err(|e| other("build peer connection", e))?;
    Ok(Arc::new(pc))
}

/// `T::default()` for the `T` that `use_it` takes.
///
/// webrtc 0.21 hands out some types of its private `rtc` dependency (the RTP packet that
/// `TrackLocal::write_rtp` takes) without re-exporting them, and this test crate has no
/// direct `rtc` dependency to name them by. Inference names them for us.
fn default_arg<T: Default, R>(_use_it: impl FnOnce(T) -> R) -> T {
    T::default()
}

/// One local track: its transceiver, source, track and SSRC.
type LocalTrack = (
    Arc<dyn RtpTransceiver>,
    TrackSource,
    Arc<TrackLocalStaticRTP>,
    u32,
);

/// Adds a sendonly transceiver for `source` (Opus for audio sources, VP8 for video) with our
/// own SSRC, and restricts its codecs to that one codec.
async fn add_sendonly(
    pc: &Arc<dyn PeerConnection>,
    source: TrackSource,
    identity: &str,
) -> Result<LocalTrack> {
    let (kind, mime) = match source.kind() {
        TrackKind::Audio => ("audio", "audio/opus"),
        TrackKind::Video => ("video", "video/VP8"),
    };
    let ssrc: u32 = rand::random::<u32>() | 1;
    let stream_id = format!("{identity}-stream");
    let track_id = format!("{identity}-{source:?}").to_lowercase();
    // An encoding with our SSRC; the codec is left to negotiation (and the preferences below).
    let template = MediaStreamTrack::new(
        stream_id.clone(),
        track_id.clone(),
        track_id.clone(),
        kind.into(),
        vec![Default::default()],
    );
    let mut coding = template
        .codings()
        .first()
        .cloned()
        .ok_or_else(|| ConnectError::Other("track lost its coding".into()))?;
    coding.rtp_coding_parameters.ssrc = Some(ssrc);
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id.clone(),
        track_id.clone(),
        track_id,
        kind.into(),
        vec![coding],
    )));
    let transceiver = pc
        .add_transceiver_from_track(
            Arc::clone(&track) as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![stream_id],
                send_encodings: vec![],
            }),
        )
        .await
        .map_err(|e| other("add transceiver", e))?;
    // Offer only Opus / VP8, as the server's codec policy expects.
    if let Some(sender) = transceiver
        .sender()
        .await
        .map_err(|e| other("transceiver sender", e))?
    {
        let params = sender
            .get_parameters()
            .await
            .map_err(|e| other("sender parameters", e))?;
        let wanted: Vec<_> = params
            .rtp_parameters
            .codecs
            .into_iter()
            .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .collect();
        if !wanted.is_empty() {
            transceiver
                .set_codec_preferences(wanted)
                .await
                .map_err(|e| other("codec preferences", e))?;
        }
    }
    Ok((transceiver, source, track, ssrc))
}

/// The negotiated payload type of `mime` on `sender`, if any.
async fn payload_type(sender: &Arc<dyn RtpSender>, mime: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

/// Sends synthetic RTP on one local track forever (until aborted).
async fn send_media(
    shared: Arc<Shared>,
    sender: Arc<dyn RtpSender>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    source: TrackSource,
) {
    let kind = source.kind();
    let (interval, mime, ts_step) = match kind {
        TrackKind::Audio => (AUDIO_INTERVAL, "audio/opus", 960u32),
        TrackKind::Video => (VIDEO_INTERVAL, "video/VP8", 3000u32),
    };
    let template = default_arg(|p| track.write_rtp(p));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counter: u32 = 0;
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut pt = None;
    let mut pt_checked = Instant::now();
    loop {
        ticker.tick().await;
        // The negotiated payload type can change with the answer: look again every second.
        if pt.is_none() || pt_checked.elapsed() > Duration::from_secs(1) {
            if let Some(found) = payload_type(&sender, mime).await {
                pt = Some(found);
            }
            pt_checked = Instant::now();
        }
        let Some(pt) = pt else { continue };
        let mut pkt = template.clone();
        pkt.header.version = 2;
        pkt.header.marker = kind == TrackKind::Video; // One packet per frame.
        pkt.header.payload_type = pt;
        pkt.header.sequence_number = seq;
        pkt.header.timestamp = ts;
        pkt.header.ssrc = ssrc;
        pkt.payload = synth_payload(kind, &shared.identity, counter).into();
        if track.write_rtp(pkt).await.is_ok() {
            shared.update(|s| *s.sent.entry(source).or_default() += 1);
        }
        counter = counter.wrapping_add(1);
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(ts_step);
    }
}

async fn drain_data_channel(dc: Arc<dyn DataChannel>) {
    while dc.poll().await.is_some() {}
}

/// The peer connection's event handler.
struct Handler {
    shared: Arc<Shared>,
    pc: Arc<OnceLock<Weak<dyn PeerConnection>>>,
    candidates: Option<mpsc::UnboundedSender<RTCIceCandidateInit>>,
}

type BoxFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

// `PeerConnectionEventHandler` is an `#[async_trait]` trait; this crate has no `async-trait`
// dependency, so the methods are written in the form that macro expands to.
impl PeerConnectionEventHandler for Handler {
    fn on_ice_candidate<'life0, 'async_trait>(
        &'life0 self,
        event: RTCPeerConnectionIceEvent,
    ) -> BoxFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if let (Some(tx), Ok(init)) = (&self.candidates, event.candidate.to_json()) {
                let _ = tx.send(init);
            }
        })
    }

    fn on_connection_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCPeerConnectionState,
    ) -> BoxFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.shared.update(|s| s.connection_state = Some(state));
        })
    }

    fn on_track<'life0, 'async_trait>(
        &'life0 self,
        track: Arc<dyn TrackRemote>,
    ) -> BoxFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            // This runs on the peer connection's driver: hand the track to a task at once.
            let shared = Arc::clone(&self.shared);
            let pc = self.pc.get().cloned();
            tokio::spawn(read_remote_track(shared, pc, track));
        })
    }
}

/// Finds the mid of the transceiver whose receiver carries `track`.
async fn mid_of(pc: &Arc<dyn PeerConnection>, track: &Arc<dyn TrackRemote>) -> Option<String> {
    for transceiver in pc.get_transceivers().await {
        let Ok(Some(receiver)) = transceiver.receiver().await else {
            continue;
        };
        if std::ptr::addr_eq(Arc::as_ptr(receiver.track()), Arc::as_ptr(track)) {
            return transceiver.mid().await.ok().flatten();
        }
    }
    None
}

/// Reads one remote track's packets and verifies their payloads.
async fn read_remote_track(
    shared: Arc<Shared>,
    pc: Option<Weak<dyn PeerConnection>>,
    track: Arc<dyn TrackRemote>,
) {
    let mut mid = None;
    if let Some(pc) = pc.and_then(|w| w.upgrade()) {
        for _ in 0..50 {
            mid = mid_of(&pc, &track).await;
            if mid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let Some(mid) = mid else {
        shared.update(|s| {
            s.failures
                .push("a remote track arrived whose mid could not be found".into())
        });
        while track.poll().await.is_some() {}
        return;
    };
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = event else {
            continue;
        };
        let verdict = verify_payload(&pkt.payload);
        let now = Instant::now();
        shared.update(|s| {
            let Some(mapping) = s.mid_map.get(&mid).cloned() else {
                s.unmapped_packets += 1;
                return;
            };
            let publisher = s
                .participants
                .get(&mapping.participant_id)
                .map(|p| p.identity.clone());
            let expected_kind = s.room_tracks.get(&mapping.track_id).map(|t| t.kind);
            let stats = s
                .remote
                .entry(mapping.track_id.clone())
                .or_insert_with(|| RemoteTrackStats::new(&mapping));
            stats.mid = mid.clone();
            stats.packets += 1;
            stats.first_packet.get_or_insert(now);
            stats.last_packet = Some(now);
            match verdict {
                Ok(p) => {
                    stats.payload_ok += 1;
                    stats.max_counter = stats.max_counter.max(p.counter);
                    if p.keyframe {
                        stats.keyframes += 1;
                    }
                    let wrong_sender = publisher.as_ref().is_some_and(|id| *id != p.identity);
                    let wrong_kind = expected_kind.is_some_and(|k| k != p.kind);
                    if wrong_sender || wrong_kind {
                        stats.misrouted += 1;
                        if stats.failures.len() < 5 {
                            stats.failures.push(format!(
                                "payload from {} ({:?}) on a track mapped to {:?} ({:?})",
                                p.identity, p.kind, publisher, expected_kind
                            ));
                        }
                    }
                    stats.sender_identity = Some(p.identity);
                    stats.kind = Some(p.kind);
                }
                Err(e) => {
                    stats.payload_bad += 1;
                    if stats.failures.len() < 5 {
                        stats.failures.push(e);
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The synthetic payload.
// ---------------------------------------------------------------------------------------------

/// What a verified payload said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadInfo {
    /// Audio or video.
    pub kind: TrackKind,
    /// The sender's identity.
    pub identity: String,
    /// The sender's per-track packet counter.
    pub counter: u32,
    /// Whether it is a VP8 keyframe.
    pub keyframe: bool,
}

/// Whether video packet number `counter` is a keyframe.
pub fn is_keyframe(counter: u32) -> bool {
    counter < 3 || counter.is_multiple_of(KEYFRAME_EVERY)
}

/// The payload of packet number `counter` of `identity`'s track of `kind`.
///
/// The body is `MAGIC`, a kind byte (`A`/`V`), the identity's length and bytes, the counter
/// (big-endian u32), then filler bytes that are a function of the counter and their position,
/// up to a length that also varies with the counter (~80 bytes for audio, ~1000 for video).
/// Video payloads are prefixed with a VP8 payload descriptor (S=1, partition 0) and a VP8
/// frame tag (P=0 on keyframes, which then also carry the keyframe start code and a 640×480
/// size), so an SFU that looks for keyframes finds them.
pub fn synth_payload(kind: TrackKind, identity: &str, counter: u32) -> Vec<u8> {
    let (target, kind_byte) = match kind {
        TrackKind::Audio => (72 + (counter % 17) as usize, b'A'),
        TrackKind::Video => (960 + (counter % 83) as usize, b'V'),
    };
    let mut out = Vec::with_capacity(target + 16);
    if kind == TrackKind::Video {
        out.push(0x10); // VP8 payload descriptor: X=0, N=0, S=1, PID=0.
        if is_keyframe(counter) {
            // Frame tag: P=0 (key frame), version 0, show_frame=1; then the start code and
            // width/height (640x480, no scaling).
            out.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        } else {
            out.extend_from_slice(&[0x11, 0x02, 0x00]); // P=1 (inter frame), show_frame=1.
        }
    }
    let id = identity.as_bytes();
    let id_len = id.len().min(255);
    out.extend_from_slice(MAGIC);
    out.push(kind_byte);
    out.push(id_len as u8);
    out.extend_from_slice(&id[..id_len]);
    out.extend_from_slice(&counter.to_be_bytes());
    let mut i: u32 = 0;
    while out.len() < target {
        let b = (counter.wrapping_mul(31).wrapping_add(i.wrapping_mul(7)) ^ (i >> 3)) as u8;
        out.push(b);
        i += 1;
    }
    out
}

/// Checks a received payload: it must be exactly what [`synth_payload`] makes for the kind,
/// identity and counter it names.
pub fn verify_payload(payload: &[u8]) -> std::result::Result<PayloadInfo, String> {
    let start = if payload.starts_with(MAGIC) {
        0
    } else if payload.first() == Some(&0x10) {
        // VP8: descriptor, then the 3-byte frame tag and, on keyframes, 7 more bytes.
        match payload.get(1) {
            Some(tag) if tag & 0x01 == 0 => 11,
            Some(_) => 4,
            None => return Err("empty VP8 payload".into()),
        }
    } else {
        return Err(format!(
            "no pattern: payload of {} bytes starts with {:02x?}",
            payload.len(),
            &payload[..payload.len().min(12)]
        ));
    };
    let body = payload
        .get(start..)
        .ok_or_else(|| format!("payload of {} bytes is too short", payload.len()))?;
    if !body.starts_with(MAGIC) {
        return Err(format!(
            "magic missing at offset {start}: {:02x?}",
            &payload[..payload.len().min(16)]
        ));
    }
    let kind = match body.get(4) {
        Some(b'A') => TrackKind::Audio,
        Some(b'V') => TrackKind::Video,
        other => return Err(format!("bad kind byte {other:?}")),
    };
    let id_len = *body.get(5).ok_or("truncated before identity")? as usize;
    let id = body.get(6..6 + id_len).ok_or("truncated identity")?;
    let identity = String::from_utf8(id.to_vec()).map_err(|_| "identity is not UTF-8")?;
    let counter_bytes: [u8; 4] = body
        .get(6 + id_len..10 + id_len)
        .and_then(|b| b.try_into().ok())
        .ok_or("truncated counter")?;
    let counter = u32::from_be_bytes(counter_bytes);
    let expected = synth_payload(kind, &identity, counter);
    if expected != payload {
        let first_diff = expected
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(payload.len()));
        return Err(format!(
            "payload {counter} of {identity} ({kind:?}) differs: {} bytes, expected {}, first \
             difference at byte {first_diff}",
            payload.len(),
            expected.len()
        ));
    }
    Ok(PayloadInfo {
        kind,
        identity,
        counter,
        keyframe: kind == TrackKind::Video && is_keyframe(counter),
    })
}

// ---------------------------------------------------------------------------------------------
// A self-check of the client's media half, without any server.
// ---------------------------------------------------------------------------------------------

/// Connects two webrtc-rs peer connections directly (no SFU): one publishes microphone and
/// camera exactly as a [`TestClient`] does, the other receives and verifies them exactly as a
/// [`TestClient`] does. Returns the receiver's state once it has `audio` and `video` intact
/// packets, or a description of what it saw.
///
/// This is the baseline for the whole-server tests: when it passes and they fail, the
/// difference is the server.
pub async fn loopback_check(
    audio: u64,
    video: u64,
    timeout: Duration,
) -> std::result::Result<ClientState, String> {
    let new_shared = |identity: &str| {
        let (changed, _) = watch::channel(0u64);
        Arc::new(Shared {
            state: StdMutex::new(ClientState::default()),
            changed,
            negotiation: AsyncMutex::new(Negotiation::default()),
            identity: identity.to_owned(),
        })
    };
    let (a_shared, b_shared) = (new_shared("loop-a"), new_shared("loop-b"));
    let (a_tx, mut a_rx) = mpsc::unbounded_channel();
    let (b_tx, mut b_rx) = mpsc::unbounded_channel();
    let (a_slot, b_slot) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let a = build_peer_connection(
        &[],
        Arc::new(Handler {
            shared: Arc::clone(&a_shared),
            pc: Arc::clone(&a_slot),
            candidates: Some(a_tx),
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let b = build_peer_connection(
        &[],
        Arc::new(Handler {
            shared: Arc::clone(&b_shared),
            pc: Arc::clone(&b_slot),
            candidates: Some(b_tx),
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let _ = a_slot.set(Arc::downgrade(&a));
    let _ = b_slot.set(Arc::downgrade(&b));

    let result = async {
        let _dc = a
            .create_data_channel("plenary", None)
            .await
            .map_err(|e| format!("data channel: {e}"))?;
        let mic = add_sendonly(&a, TrackSource::Microphone, "loop-a")
            .await
            .map_err(|e| e.to_string())?;
        let cam = add_sendonly(&a, TrackSource::Camera, "loop-a")
            .await
            .map_err(|e| e.to_string())?;
        let offer = a
            .create_offer(None)
            .await
            .map_err(|e| format!("offer: {e}"))?;
        a.set_local_description(offer.clone())
            .await
            .map_err(|e| format!("a local: {e}"))?;
        b.set_remote_description(offer)
            .await
            .map_err(|e| format!("b remote: {e}"))?;
        let answer = b
            .create_answer(None)
            .await
            .map_err(|e| format!("answer: {e}"))?;
        b.set_local_description(answer.clone())
            .await
            .map_err(|e| format!("b local: {e}"))?;
        a.set_remote_description(answer)
            .await
            .map_err(|e| format!("a remote: {e}"))?;

        // What a welcome and a server offer would have told the receiver.
        let publisher = ParticipantInfo {
            id: "PA_loop".into(),
            identity: "loop-a".into(),
            name: "loop a".into(),
            role: plenary_proto::Role::Member,
            ..ParticipantInfo::default()
        };
        let mut mappings = HashMap::new();
        let mut room_tracks = BTreeMap::new();
        for (n, (transceiver, source, _, _)) in [&mic, &cam].into_iter().enumerate() {
            let mid = transceiver
                .mid()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no mid")?;
            let track_id = format!("TR_loop{n}");
            mappings.insert(
                mid.clone(),
                TrackMapping {
                    mid,
                    track_id: track_id.clone(),
                    participant_id: publisher.id.clone(),
                },
            );
            room_tracks.insert(
                track_id.clone(),
                TrackInfo {
                    id: track_id,
                    participant_id: publisher.id.clone(),
                    kind: source.kind(),
                    source: *source,
                    muted: false,
                },
            );
        }
        b_shared.update(|s| {
            s.participants
                .insert(publisher.id.clone(), publisher.clone());
            s.room_tracks = room_tracks;
            s.mid_map = mappings;
        });

        let mut tasks = Vec::new();
        let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
        tasks.push(tokio::spawn(async move {
            while let Some(c) = a_rx.recv().await {
                let _ = b2.add_ice_candidate(c).await;
            }
        }));
        tasks.push(tokio::spawn(async move {
            while let Some(c) = b_rx.recv().await {
                let _ = a2.add_ice_candidate(c).await;
            }
        }));
        for (transceiver, source, track, ssrc) in [mic, cam] {
            let sender = transceiver
                .sender()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no sender")?;
            tasks.push(tokio::spawn(send_media(
                Arc::clone(&a_shared),
                sender,
                track,
                ssrc,
                source,
            )));
        }

        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = b_shared.changed.subscribe();
        let outcome = loop {
            let done = {
                let s = b_shared.lock();
                s.receives_intact("loop-a", TrackKind::Audio, audio)
                    && s.receives_intact("loop-a", TrackKind::Video, video)
            };
            if done {
                break Ok(b_shared.lock().clone());
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break Err(format!(
                    "loopback: receiver state: {}; sender state: {}",
                    describe(&b_shared.lock()),
                    describe(&a_shared.lock())
                ));
            }
        };
        for task in tasks {
            task.abort();
        }
        outcome
    }
    .await;
    let _ = a.close().await;
    let _ = b.close().await;
    result
}

/// Runs a test body, failing the test if it takes longer than `limit`.
pub async fn bounded(limit: Duration, body: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("the test did not finish within {limit:?}");
    }
}
