//! Whole-server tests: start Plenary in-process and drive it with independent WebRTC clients
//! (webrtc-rs peer connections and a tokio-tungstenite WebSocket, see `support/mod.rs`).
//!
//! Every wait is bounded (`T`), and every test body is bounded as a whole (`TEST_LIMIT`), so
//! a broken server fails these tests instead of hanging them. Run with `RUST_LOG=debug` to see
//! the server's (and webrtc-rs's) logs.

mod support;

use std::time::Duration;

use plenary::config::Config;
use plenary::grant::{unix_now, Claims, Permissions};
use plenary_proto::{
    ClientMessage, ErrorCode, LeaveReason, Role, ServerMessage, TrackKind, TrackSource,
    PROTOCOL_VERSION,
};
use support::{
    bounded, ClientOptions, ClientState, ConnectError, RawEvent, RawSignaling, TestClient,
};

/// The bound on any single wait.
const T: Duration = Duration::from_secs(20);
/// The bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(150);
/// Intact audio packets (20 ms each) a receiver must see before media counts as flowing.
const AUDIO_PACKETS: u64 = 25;
/// Intact video packets (~33 ms each) a receiver must see before media counts as flowing.
const VIDEO_PACKETS: u64 = 15;

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A running server and the configuration it was started with.
struct Harness {
    server: plenary::Server,
    config: Config,
}

impl Harness {
    async fn start() -> Harness {
        init_logging();
        let config = Config::for_tests();
        let server = plenary::start(config.clone())
            .await
            .expect("the server starts");
        Harness { server, config }
    }

    fn url(&self) -> String {
        format!("ws://{}/rtc", self.server.http_addr())
    }

    fn claims(&self, room: &str, identity: &str, permissions: Permissions) -> Claims {
        Claims::new(
            room,
            identity,
            &format!("{identity} (test)"),
            Role::Member,
            Duration::from_secs(600),
        )
        .with_permissions(permissions)
    }

    fn mint(&self, claims: &Claims) -> String {
        self.config.mint_grant(claims).expect("a grant is minted")
    }

    fn grant(&self, room: &str, identity: &str, permissions: Permissions) -> String {
        self.mint(&self.claims(room, identity, permissions))
    }

    /// Joins as a speaker publishing microphone and camera.
    async fn join(&self, room: &str, identity: &str) -> TestClient {
        self.join_with(
            room,
            identity,
            Permissions::speaker(),
            ClientOptions::publisher(),
        )
        .await
    }

    async fn join_with(
        &self,
        room: &str,
        identity: &str,
        permissions: Permissions,
        options: ClientOptions,
    ) -> TestClient {
        let grant = self.grant(room, identity, permissions);
        TestClient::connect_with(&self.url(), &grant, options)
            .await
            .unwrap_or_else(|e| panic!("{identity} could not join {room}: {e}"))
    }

    /// Tries to join with `grant`, expecting a refusal; returns its code.
    async fn refused(&self, grant: &str, options: ClientOptions) -> ErrorCode {
        match TestClient::connect_with(&self.url(), grant, options).await {
            Ok(client) => panic!(
                "the join was accepted: {}",
                support::describe(&client.state())
            ),
            Err(ConnectError::Refused { code, .. }) => code,
            Err(e) => panic!("the join failed without an error message: {e}"),
        }
    }

    async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// Panics with the client's state if the wait fails.
async fn must(client: &TestClient, what: &str, cond: impl FnMut(&ClientState) -> bool) {
    if let Err(e) = client.wait_for(T, cond).await {
        panic!("{what}: {e}");
    }
}

/// Waits until `client` receives intact audio and video from each of `from`.
async fn must_receive_from(client: &TestClient, from: &[&str]) {
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    let what = format!(
        "{} receives audio and video from {from:?}",
        client.identity()
    );
    must(client, &what, |s| {
        from.iter().all(|o| {
            s.receives_intact(o, TrackKind::Audio, AUDIO_PACKETS)
                && s.receives_intact(o, TrackKind::Video, VIDEO_PACKETS)
        })
    })
    .await;
}

/// Packets received so far from `identity`'s track of `kind` (0 if none).
fn packets_from(s: &ClientState, identity: &str, kind: TrackKind) -> u64 {
    s.received_from(identity, kind).map_or(0, |r| r.packets)
}

/// Packets received so far on the remote track `track_id` (0 if none).
fn packets_on(s: &ClientState, track_id: &str) -> u64 {
    s.remote.get(track_id).map_or(0, |r| r.packets)
}

/// No remote track has seen a corrupted or misrouted payload.
fn assert_all_intact(client: &TestClient) {
    let s = client.state();
    for r in s.remote.values() {
        assert!(
            r.payload_bad == 0 && r.misrouted == 0,
            "{} got damaged payloads on {}: {}",
            client.identity(),
            r.track_id,
            support::describe(&s)
        );
    }
}

/// (1) Three peers each publish Opus + VP8; each receives the other two's audio and video
/// with every payload byte intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_receive_each_others_media_intact() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let room = "three-peers";
        let alice = h.join(room, "alice").await;
        let bob = h.join(room, "bob").await;
        let carol = h.join(room, "carol").await;

        must_receive_from(&alice, &["bob", "carol"]).await;
        must_receive_from(&bob, &["alice", "carol"]).await;
        must_receive_from(&carol, &["alice", "bob"]).await;

        for client in [&alice, &bob, &carol] {
            let s = client.state();
            assert_all_intact(client);
            // Exactly the four tracks of the two others, every one mapped.
            assert_eq!(
                s.remote.len(),
                4,
                "{}: {}",
                client.identity(),
                support::describe(&s)
            );
            assert_eq!(
                s.unmapped_packets,
                0,
                "{}: {}",
                client.identity(),
                support::describe(&s)
            );
            // Its own tracks were given ids, and everyone else knows them.
            assert_eq!(
                s.published.len(),
                2,
                "{}: {}",
                client.identity(),
                support::describe(&s)
            );
            for other in [&alice, &bob, &carol] {
                if other.identity() == client.identity() {
                    continue;
                }
                let theirs = other.state();
                for mine in &s.published {
                    let t = theirs.room_tracks.get(&mine.track_id).unwrap_or_else(|| {
                        panic!(
                            "{} does not know {}'s track {}: {}",
                            other.identity(),
                            client.identity(),
                            mine.track_id,
                            support::describe(&theirs)
                        )
                    });
                    assert_eq!(t.participant_id, client.participant_id());
                }
            }
            // Nobody saw an error.
            assert!(s.errors.is_empty(), "{}: {:?}", client.identity(), s.errors);
        }
        // Each participant list holds exactly the two others.
        for client in [&alice, &bob, &carol] {
            let s = client.state();
            assert_eq!(
                s.participants.len(),
                2,
                "{}: {}",
                client.identity(),
                support::describe(&s)
            );
        }

        alice.close().await;
        bob.close().await;
        carol.close().await;
        h.stop().await;
    })
    .await;
}

/// (2) A peer that leaves is announced to the others (participant_left, track_unpublished) and
/// its streams stop arriving; one that vanishes without a word is announced as disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_peer_is_announced_and_its_media_stops() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let room = "leaving";
        let alice = h.join(room, "alice").await;
        let bob = h.join(room, "bob").await;
        let carol = h.join(room, "carol").await;

        must_receive_from(&alice, &["bob", "carol"]).await;
        must_receive_from(&bob, &["alice", "carol"]).await;

        let carol_id = carol.participant_id();
        let carol_tracks: Vec<String> = carol
            .state()
            .published
            .iter()
            .map(|m| m.track_id.clone())
            .collect();
        assert_eq!(
            carol_tracks.len(),
            2,
            "carol: {}",
            support::describe(&carol.state())
        );

        carol.leave().await.expect("carol says leave");

        // The reason must be `left`. (A server that drops the session's event queue right after
        // queuing its Leave can misreport it as `disconnected` when it happens to message the
        // peer in between: this assertion is what catches that race.)
        for client in [&alice, &bob] {
            must(client, "carol's departure is announced", |s| {
                s.saw_left(&carol_id) == Some(LeaveReason::Left)
                    && carol_tracks.iter().all(|t| s.saw_unpublished(t))
            })
            .await;
            let s = client.state();
            assert!(
                !s.participants.contains_key(&carol_id),
                "{}",
                support::describe(&s)
            );
            assert!(
                s.room_tracks.values().all(|t| t.participant_id != carol_id),
                "{}",
                support::describe(&s)
            );
        }

        // Her streams stop: after a short grace for packets in flight, no more arrive.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before: Vec<(u64, u64, u64)> = [&alice, &bob]
            .iter()
            .map(|c| {
                let s = c.state();
                (
                    packets_on(&s, &carol_tracks[0]),
                    packets_on(&s, &carol_tracks[1]),
                    packets_from(&s, "bob", TrackKind::Audio)
                        + packets_from(&s, "alice", TrackKind::Audio),
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (client, (a0, v0, _)) in [&alice, &bob].iter().zip(&before) {
            let s = client.state();
            assert_eq!(
                (
                    packets_on(&s, &carol_tracks[0]),
                    packets_on(&s, &carol_tracks[1])
                ),
                (*a0, *v0),
                "{} still receives carol's media after she left: {}",
                client.identity(),
                support::describe(&s)
            );
        }
        // ...while the remaining peers' media still flows (waited for: a loaded machine may
        // deliver well under the nominal 50 packets a second).
        for (client, (_, _, others0)) in [&alice, &bob].iter().zip(before) {
            must(client, "the remaining peer's audio keeps flowing", |s| {
                packets_from(s, "bob", TrackKind::Audio)
                    + packets_from(s, "alice", TrackKind::Audio)
                    >= others0 + 25
            })
            .await;
        }
        assert_all_intact(&alice);
        assert_all_intact(&bob);

        // Bob vanishes without `leave` (socket and peer connection just go away).
        let bob_id = bob.participant_id();
        bob.close().await;
        must(&alice, "bob's disconnection is announced", |s| {
            s.saw_left(&bob_id) == Some(LeaveReason::Disconnected)
                && s.room_tracks.values().all(|t| t.participant_id != bob_id)
        })
        .await;

        alice.close().await;
        h.stop().await;
    })
    .await;
}

/// (3) Bad grants are refused with `invalid_grant` (and a close); a grant without publish
/// permission gets `permission_denied` for the tracks it offers, and nothing of it is
/// published, while an allowed source of a partly-allowed offer still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grants_are_refused_and_permissions_enforced() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let room = "grants";
        let speaker = Permissions::speaker();

        // Expired (well beyond the leeway).
        let mut expired = h.claims(room, "eve", speaker.clone());
        expired.nbf = unix_now() - 3600;
        expired.exp = unix_now() - 600;
        let code = h
            .refused(&h.mint(&expired), ClientOptions::receiver())
            .await;
        assert_eq!(code, ErrorCode::InvalidGrant, "expired grant");

        // Not valid yet.
        let mut early = h.claims(room, "eve", speaker.clone());
        early.nbf = unix_now() + 3600;
        early.exp = unix_now() + 3700;
        let code = h.refused(&h.mint(&early), ClientOptions::receiver()).await;
        assert_eq!(code, ErrorCode::InvalidGrant, "not-yet-valid grant");

        // Signed with another secret under the same key name.
        let mut forger = h.config.clone();
        for secret in forger.auth.api_keys.values_mut() {
            *secret = "a-completely-different-secret-of-40-chars".into();
        }
        let forged = forger
            .mint_grant(&h.claims(room, "eve", speaker.clone()))
            .expect("mint");
        let code = h.refused(&forged, ClientOptions::receiver()).await;
        assert_eq!(code, ErrorCode::InvalidGrant, "badly signed grant");

        // A tampered payload under a genuine signature.
        let genuine = h.grant(room, "eve", Permissions::listener());
        let parts: Vec<&str> = genuine.split('.').collect();
        assert_eq!(parts.len(), 3);
        let other = h.grant("another-room", "eve", Permissions::speaker());
        let other_payload = other.split('.').nth(1).expect("payload");
        let tampered = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
        let code = h.refused(&tampered, ClientOptions::receiver()).await;
        assert_eq!(code, ErrorCode::InvalidGrant, "tampered grant");

        // Wrong audience.
        let mut wrong_aud = h.claims(room, "eve", speaker.clone());
        wrong_aud.aud = "some-other-server".into();
        let code = h
            .refused(&h.mint(&wrong_aud), ClientOptions::receiver())
            .await;
        assert_eq!(code, ErrorCode::InvalidGrant, "grant for another audience");

        // Issuer that is not the signing key.
        let mut wrong_iss = h.claims(room, "eve", speaker.clone());
        wrong_iss.iss = "not-the-signing-key".into();
        let code = h
            .refused(&h.mint(&wrong_iss), ClientOptions::receiver())
            .await;
        assert_eq!(code, ErrorCode::InvalidGrant, "grant with a foreign issuer");

        // A grant for room A used to enter room B.
        let code = h
            .refused(
                &h.grant(room, "eve", speaker.clone()),
                ClientOptions::receiver().in_room("some-other-room"),
            )
            .await;
        assert_eq!(code, ErrorCode::InvalidGrant, "grant for another room");

        // Not a JWT at all.
        let code = h.refused("not-a-jwt", ClientOptions::receiver()).await;
        assert_eq!(code, ErrorCode::InvalidGrant, "garbage grant");

        // The refusal is followed by a close.
        let mut raw = RawSignaling::connect(&h.url()).await.expect("ws");
        raw.send(&ClientMessage::Join {
            resume: None,
            protocol: PROTOCOL_VERSION,
            grant: h.mint(&expired),
            room: None,
        })
        .await
        .expect("send join");
        let (code, _) = raw.expect_error(T).await.expect("an error");
        assert_eq!(code, ErrorCode::InvalidGrant);
        raw.expect_closed(T)
            .await
            .expect("closed after invalid_grant");

        // Permissions: an observer sees what gets published.
        let observer = h
            .join_with(
                room,
                "observer",
                Permissions::speaker(),
                ClientOptions::receiver(),
            )
            .await;

        // A listener offering microphone and camera: both refused, the offer still answered.
        let listener = h
            .join_with(
                room,
                "listener",
                Permissions::listener(),
                ClientOptions::publisher(),
            )
            .await;
        let listener_id = listener.participant_id();
        listener
            .wait_for_error(ErrorCode::PermissionDenied, 0, T)
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        // A speaker allowed only the microphone, offering both.
        let mic_only = Permissions {
            can_publish_sources: vec![TrackSource::Microphone],
            ..Permissions::speaker()
        };
        let talker = h
            .join_with(room, "talker", mic_only, ClientOptions::publisher())
            .await;
        let talker_id = talker.participant_id();
        talker
            .wait_for_error(ErrorCode::PermissionDenied, 0, T)
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        // The observer gets the talker's microphone, intact...
        must(
            &observer,
            "the observer receives the talker's microphone",
            |s| s.receives_intact("talker", TrackKind::Audio, AUDIO_PACKETS),
        )
        .await;
        // ...and nothing else from either.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = observer.state();
        let published_by = |pid: &str| -> Vec<TrackSource> {
            s.room_tracks
                .values()
                .filter(|t| t.participant_id == pid)
                .map(|t| t.source)
                .collect()
        };
        assert!(
            published_by(&listener_id).is_empty(),
            "{}",
            support::describe(&s)
        );
        assert_eq!(
            published_by(&talker_id),
            vec![TrackSource::Microphone],
            "{}",
            support::describe(&s)
        );
        assert!(
            s.remote.values().all(|r| r.participant_id == talker_id),
            "{}",
            support::describe(&s)
        );
        assert!(
            talker.state().published.len() <= 1,
            "the camera got a track id: {}",
            support::describe(&talker.state())
        );
        assert!(
            listener.state().published.is_empty(),
            "the listener's tracks got ids: {}",
            support::describe(&listener.state())
        );
        assert_all_intact(&observer);

        listener.close().await;
        talker.close().await;
        observer.close().await;
        h.stop().await;
    })
    .await;
}

/// (4) Malformed signaling from one client gets the documented errors and does not disturb
/// the media of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signaling_is_refused_without_disturbing_others() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let room = "malformed";
        let alice = h.join(room, "alice").await;
        let bob = h.join(room, "bob").await;
        let mallory = h
            .join_with(
                room,
                "mallory",
                Permissions::speaker(),
                ClientOptions::receiver(),
            )
            .await;
        let mallory_id = mallory.participant_id();

        must_receive_from(&alice, &["bob"]).await;
        must_receive_from(&bob, &["alice"]).await;
        let before = (
            packets_from(&alice.state(), "bob", TrackKind::Audio),
            packets_from(&alice.state(), "bob", TrackKind::Video),
            packets_from(&bob.state(), "alice", TrackKind::Audio),
            packets_from(&bob.state(), "alice", TrackKind::Video),
        );

        // Each malformed message gets its error and the session goes on.
        let cases: Vec<(&str, String, ErrorCode)> = vec![
            (
                "invalid JSON",
                "this is {not json".into(),
                ErrorCode::BadMessage,
            ),
            (
                "JSON that is not an object",
                "[1,2,3]".into(),
                ErrorCode::BadMessage,
            ),
            (
                "unknown type",
                r#"{"type":"dance","steps":3}"#.into(),
                ErrorCode::UnknownType,
            ),
            (
                "offer without sdp",
                r#"{"type":"offer"}"#.into(),
                ErrorCode::BadMessage,
            ),
            (
                "mute with a wrongly typed field",
                r#"{"type":"mute","track_id":7,"muted":"yes"}"#.into(),
                ErrorCode::BadMessage,
            ),
            (
                "offer with bad SDP",
                serde_json::to_string(&ClientMessage::Offer {
                    sdp: "v=0\r\nthis is not SDP\r\n".into(),
                    tracks: vec![],
                })
                .expect("json"),
                ErrorCode::BadSdp,
            ),
        ];
        for (what, text, code) in cases {
            let seen = mallory.state().error_count(code);
            mallory.send_raw(text).expect("send");
            mallory
                .wait_for_error(code, seen, T)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // A binary frame.
        let seen = mallory.state().error_count(ErrorCode::BadMessage);
        mallory.send_binary(vec![1, 2, 3]).expect("send");
        mallory
            .wait_for_error(ErrorCode::BadMessage, seen, T)
            .await
            .unwrap_or_else(|e| panic!("binary frame: {e}"));

        // The session is still alive: it answers a ping, and mallory is still in the room.
        mallory
            .send(&ClientMessage::Ping { id: 4242 })
            .expect("send ping");
        must(
            &mallory,
            "mallory's session answers a ping after the errors",
            |s| s.pongs.contains(&4242) && !s.ws_closed,
        )
        .await;
        assert!(
            alice.state().participants.contains_key(&mallory_id),
            "{}",
            support::describe(&alice.state())
        );

        // Before a join: anything but `join` is out of order, and the socket stays usable.
        let mut raw = RawSignaling::connect(&h.url()).await.expect("ws");
        raw.send(&ClientMessage::Offer {
            sdp: "v=0\r\n".into(),
            tracks: vec![],
        })
        .await
        .expect("send");
        let (code, _) = raw.expect_error(T).await.expect("an error");
        assert_eq!(code, ErrorCode::OutOfOrder, "offer before join");
        raw.send(&ClientMessage::Join {
            resume: None,
            protocol: PROTOCOL_VERSION,
            grant: h.grant(room, "latecomer", Permissions::listener()),
            room: None,
        })
        .await
        .expect("send join");
        let welcomed = loop {
            match raw.recv(T).await.expect("a message") {
                RawEvent::Message(ServerMessage::Welcome { .. }) => break true,
                RawEvent::Message(ServerMessage::Error { code, message }) => {
                    panic!("join after out_of_order refused: {code:?} {message}")
                }
                RawEvent::Closed => break false,
                _ => continue,
            }
        };
        assert!(welcomed, "the connection closed after out_of_order");
        drop(raw);

        // An unsupported protocol version is refused and closed.
        let mut raw = RawSignaling::connect(&h.url()).await.expect("ws");
        raw.send(&ClientMessage::Join {
            resume: None,
            protocol: PROTOCOL_VERSION + 1,
            grant: h.grant(room, "time-traveller", Permissions::listener()),
            room: None,
        })
        .await
        .expect("send join");
        let (code, _) = raw.expect_error(T).await.expect("an error");
        assert_eq!(code, ErrorCode::UnsupportedVersion);
        raw.expect_closed(T)
            .await
            .expect("closed after unsupported_version");

        // An oversized message: too_large, then the server closes mallory's connection.
        let huge = format!(
            r#"{{"type":"data","text":"{}"}}"#,
            "x".repeat(plenary_proto::MAX_MESSAGE_BYTES + 1024)
        );
        mallory.send_raw(huge).expect("send");
        mallory
            .wait_for_error(ErrorCode::TooLarge, 0, T)
            .await
            .unwrap_or_else(|e| panic!("oversized message: {e}"));
        must(&mallory, "the server closes after too_large", |s| {
            s.ws_closed
        })
        .await;
        must(&alice, "mallory is gone from the room", |s| {
            s.saw_left(&mallory_id).is_some() && !s.participants.contains_key(&mallory_id)
        })
        .await;

        // Meanwhile alice and bob kept exchanging media, intact.
        must(&alice, "alice keeps receiving bob", |s| {
            packets_from(s, "bob", TrackKind::Audio) >= before.0 + 50
                && packets_from(s, "bob", TrackKind::Video) >= before.1 + 25
        })
        .await;
        must(&bob, "bob keeps receiving alice", |s| {
            packets_from(s, "alice", TrackKind::Audio) >= before.2 + 50
                && packets_from(s, "alice", TrackKind::Video) >= before.3 + 25
        })
        .await;
        for client in [&alice, &bob] {
            assert_all_intact(client);
            let s = client.state();
            assert!(s.errors.is_empty(), "{}: {:?}", client.identity(), s.errors);
            assert!(
                !s.ws_closed,
                "{}: {}",
                client.identity(),
                support::describe(&s)
            );
        }

        alice.close().await;
        bob.close().await;
        mallory.close().await;
        h.stop().await;
    })
    .await;
}

/// (5) Joining again with the same identity replaces the old session: it gets `closing`
/// (replaced), the others see it leave and the new one join, and nobody keeps a ghost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_replaces_the_old_session() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let room = "rejoin";
        let alice = h.join(room, "alice").await;
        let bob = h.join(room, "bob").await;
        must_receive_from(&bob, &["alice"]).await;
        let old_id = alice.participant_id();
        let old_tracks: Vec<String> = alice
            .state()
            .published
            .iter()
            .map(|m| m.track_id.clone())
            .collect();

        let alice2 = h.join(room, "alice").await;
        let new_id = alice2.participant_id();
        assert_ne!(old_id, new_id, "the new session got the old participant id");

        must(&alice, "the old session is told it was replaced", |s| {
            s.closing == Some(LeaveReason::Replaced)
        })
        .await;
        must(&alice, "the old session is closed", |s| s.ws_closed).await;

        // The new session's welcome lists bob, and no alice.
        let s2 = alice2.state();
        assert_eq!(s2.count_identity("alice"), 0, "{}", support::describe(&s2));
        assert_eq!(s2.count_identity("bob"), 1, "{}", support::describe(&s2));
        assert!(
            s2.room_tracks.values().all(|t| t.participant_id != old_id),
            "{}",
            support::describe(&s2)
        );

        // Bob sees the old one leave (replaced) and the new one join: one alice, the new one.
        must(&bob, "bob sees the replacement", |s| {
            s.saw_left(&old_id) == Some(LeaveReason::Replaced)
                && s.participants.contains_key(&new_id)
                && s.count_identity("alice") == 1
                && old_tracks.iter().all(|t| s.saw_unpublished(t))
        })
        .await;

        // Media flows between bob and the new session.
        must_receive_from(&bob, &["alice"]).await;
        must_receive_from(&alice2, &["bob"]).await;
        let s = bob.state();
        let from_alice = s
            .received_from("alice", TrackKind::Audio)
            .expect("bob receives alice");
        assert_eq!(
            from_alice.participant_id,
            new_id,
            "{}",
            support::describe(&s)
        );
        assert!(
            s.room_tracks.values().all(|t| t.participant_id != old_id),
            "{}",
            support::describe(&s)
        );
        assert_all_intact(&bob);
        assert_all_intact(&alice2);

        alice.close().await;
        alice2.close().await;
        bob.close().await;
        h.stop().await;
    })
    .await;
}

/// The client's media half works against plain webrtc-rs, without the server: the baseline
/// that tells a client fault from a server fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_media_works_without_a_server() {
    bounded(TEST_LIMIT, async {
        init_logging();
        let s = support::loopback_check(AUDIO_PACKETS, VIDEO_PACKETS, T)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.remote.len(), 2, "{}", support::describe(&s));
    })
    .await;
}

/// The synthetic payloads verify, and damage is detected.
#[test]
fn synthetic_payloads_verify() {
    for counter in 0..200 {
        for kind in [TrackKind::Audio, TrackKind::Video] {
            let p = support::synth_payload(kind, "@alice@social.coop", counter);
            let info = support::verify_payload(&p).expect("verifies");
            assert_eq!(
                (info.kind, info.counter, info.identity.as_str()),
                (kind, counter, "@alice@social.coop")
            );
            let mut damaged = p.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 0x40;
            assert!(support::verify_payload(&damaged).is_err());
            assert!(support::verify_payload(&p[..p.len() - 1]).is_err());
        }
    }
    let audio = support::synth_payload(TrackKind::Audio, "bob", 7);
    assert!((70..100).contains(&audio.len()));
    let video = support::synth_payload(TrackKind::Video, "bob", 7);
    assert!((950..1100).contains(&video.len()));
}
