//! Meetings, server side: the rules hosts rely on are enforced by the server whatever a
//! client sends. Independent webrtc-rs peers (`support::TestClient`) check that media really
//! starts and stops; bare WebSockets (`support::RawSignaling`) check the signaling.

mod support;

use std::time::Duration;

use plenary::config::Config;
use plenary::grant::{Claims, Permissions};
use plenary_proto::{
    ClientMessage, ErrorCode, HostAction, LeaveReason, Role, ServerMessage, TrackKind, TrackSource,
    PROTOCOL_VERSION,
};
use support::{bounded, ClientOptions, RawEvent, RawSignaling, TestClient};

const WAIT: Duration = Duration::from_secs(20);
const TEST_LIMIT: Duration = Duration::from_secs(90);

struct Harness {
    server: plenary::Server,
    config: Config,
}

impl Harness {
    async fn start_with(f: impl FnOnce(&mut Config)) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = Config::for_tests();
        f(&mut config);
        let server = plenary::start(config.clone())
            .await
            .expect("the server starts");
        Harness { server, config }
    }

    async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    fn url(&self) -> String {
        format!("ws://{}/rtc", self.server.http_addr())
    }

    fn grant(&self, room: &str, identity: &str, host: bool, permissions: Permissions) -> String {
        let role = if host { Role::Host } else { Role::Member };
        let mut permissions = permissions;
        permissions.is_host = host;
        let claims = Claims::new(room, identity, identity, role, Duration::from_secs(600))
            .with_permissions(permissions);
        self.config.mint_grant(&claims).expect("a grant")
    }

    async fn client(
        &self,
        room: &str,
        identity: &str,
        host: bool,
        options: ClientOptions,
    ) -> TestClient {
        let grant = self.grant(room, identity, host, Permissions::speaker());
        TestClient::connect_with(&self.url(), &grant, options)
            .await
            .unwrap_or_else(|e| panic!("{identity} joins: {e}"))
    }

    /// A signaling-only participant: joins and returns the socket and the `welcome`.
    async fn raw(&self, room: &str, identity: &str, host: bool) -> (RawSignaling, ServerMessage) {
        let mut raw = self.raw_join(room, identity, host).await;
        let welcome = next_matching(&mut raw, |m| matches!(m, ServerMessage::Welcome { .. }))
            .await
            .unwrap_or_else(|| panic!("{identity} gets a welcome"));
        (raw, welcome)
    }

    async fn raw_join(&self, room: &str, identity: &str, host: bool) -> RawSignaling {
        let mut raw = RawSignaling::connect(&self.url()).await.expect("ws");
        let grant = self.grant(room, identity, host, Permissions::speaker());
        raw.send(&ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant,
            resume: None,
            room: None,
        })
        .await
        .expect("send join");
        raw
    }
}

/// Reads until a message matches (or the socket closes, or [`WAIT`] passes).
async fn next_matching(
    raw: &mut RawSignaling,
    f: impl Fn(&ServerMessage) -> bool,
) -> Option<ServerMessage> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match raw.recv(left).await {
            Ok(RawEvent::Message(m)) if f(&m) => return Some(m),
            Ok(RawEvent::Message(_)) | Ok(RawEvent::Unparsed(_)) => continue,
            Ok(RawEvent::Closed) | Err(_) => return None,
        }
    }
}

fn me_id(welcome: &ServerMessage) -> String {
    match welcome {
        ServerMessage::Welcome { me, .. } => me.id.clone(),
        other => panic!("not a welcome: {other:?}"),
    }
}

fn host(action: HostAction) -> ClientMessage {
    ClientMessage::Host(action)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_actions_from_a_non_host_are_refused_and_change_nothing() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let (mut member, welcome) = h.raw("r", "member", false).await;
        let (mut other, other_welcome) = h.raw("r", "other", false).await;
        let target = me_id(&other_welcome);
        let _ = me_id(&welcome);
        let actions = vec![
            HostAction::GiveFloor {
                participant_id: target.clone(),
            },
            HostAction::TakeFloor {
                participant_id: target.clone(),
            },
            HostAction::ReorderQueue {
                order: vec![target.clone()],
            },
            HostAction::ClearQueue,
            HostAction::Mute {
                participant_id: target.clone(),
            },
            HostAction::MuteAll,
            HostAction::AskUnmute {
                participant_id: target.clone(),
            },
            HostAction::CameraOff {
                participant_id: target.clone(),
            },
            HostAction::StopScreenShare {
                participant_id: target.clone(),
            },
            HostAction::Remove {
                participant_id: target.clone(),
                bar: true,
            },
            HostAction::Lock { locked: true },
            HostAction::Lobby { enabled: true },
            HostAction::Admit {
                participant_id: "LB_1".into(),
            },
            HostAction::Deny {
                participant_id: "LB_1".into(),
            },
            HostAction::MakeHost {
                participant_id: target.clone(),
            },
            HostAction::EndMeeting,
        ];
        let n = actions.len();
        for a in actions {
            member.send(&host(a)).await.expect("send");
        }
        for i in 0..n {
            let (code, msg) = member
                .expect_error(WAIT)
                .await
                .expect("an error per action");
            assert_eq!(code, ErrorCode::PermissionDenied, "action {i}: {msg}");
        }
        // Nothing happened: the room is not locked, nobody was removed or barred.
        let (_late, late_welcome) = h.raw("r", "late", false).await;
        match late_welcome {
            ServerMessage::Welcome {
                room_state,
                permissions,
                ..
            } => {
                assert!(!room_state.locked && !room_state.lobby);
                assert!(!permissions.is_host);
            }
            _ => unreachable!(),
        }
        other
            .send(&ClientMessage::Ping { id: 9 })
            .await
            .expect("still connected");
        assert!(
            next_matching(&mut other, |m| matches!(m, ServerMessage::Pong { id: 9 }))
                .await
                .is_some()
        );
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_hand_then_floor_lets_a_listener_speak_and_taking_it_back_stops_them() {
    bounded(TEST_LIMIT, async {
        // Listener mode from the second participant on.
        let h = Harness::start_with(|c| c.limits.listener_mode_above = 1).await;
        let chair = h.client("gm", "chair", true, ClientOptions::publisher()).await;
        let member = h.client("gm", "member", false, ClientOptions::publisher()).await;
        // The server refused the member's attempt to publish.
        member
            .wait_for_error(ErrorCode::PermissionDenied, 0, WAIT)
            .await
            .expect("publishing is refused in listener mode");
        assert!(chair.state().received_from("member", TrackKind::Audio).is_none());
        let member_id = member.participant_id();

        // Raise a hand: the chair sees it in the queue.
        member.send(&ClientMessage::RaiseHand { raised: true }).expect("send");
        chair
            .wait_for(WAIT, |s| s.events.iter().any(|e| matches!(e, ServerMessage::HandQueue { queue } if queue == &vec![member_id.clone()])))
            .await
            .expect("the chair sees the raised hand");

        // Give the floor: the member may publish now, and its audio reaches the chair.
        chair.send(&host(HostAction::GiveFloor { participant_id: member_id.clone() })).expect("send");
        member
            .wait_for(WAIT, |s| s.events.iter().any(|e| matches!(e, ServerMessage::PermissionsChanged { permissions } if permissions.has_floor && permissions.can_publish.contains(&TrackSource::Microphone))))
            .await
            .expect("the member is given the floor");
        member.reoffer().await.expect("the member offers again");
        chair
            .wait_for(WAIT, |s| s.receives_intact("member", TrackKind::Audio, 20))
            .await
            .expect("the member's audio reaches the chair");

        // Take it back: the member's tracks are unpublished, its audio stops.
        chair.send(&host(HostAction::TakeFloor { participant_id: member_id.clone() })).expect("send");
        chair
            .wait_for(WAIT, |s| !s.room_tracks.values().any(|t| t.participant_id == member_id))
            .await
            .expect("the member's tracks are unpublished");
        member
            .wait_for(WAIT, |s| s.events.iter().any(|e| matches!(e, ServerMessage::PermissionsChanged { permissions } if !permissions.has_floor && permissions.can_publish.is_empty())))
            .await
            .expect("the member is a listener again");
        // The floor is taken back by the permissions change alone: no `host_muted` that
        // would make a client show an "unmute" control for a track it must stop.
        assert!(
            !member
                .state()
                .events
                .iter()
                .any(|e| matches!(e, ServerMessage::HostMuted { .. })),
            "no host_muted for a floor taken back"
        );
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mute_stops_forwarding_and_the_member_is_told() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let chair = h
            .client("m", "chair", true, ClientOptions::receiver())
            .await;
        let member = h
            .client("m", "member", false, ClientOptions::publisher())
            .await;
        chair
            .wait_for(WAIT, |s| s.receives_intact("member", TrackKind::Audio, 10))
            .await
            .expect("audio flows before the mute");
        chair
            .send(&host(HostAction::Mute {
                participant_id: member.participant_id(),
            }))
            .expect("send");
        member
            .wait_for(WAIT, |s| {
                s.events.iter().any(|e| {
                    matches!(
                        e,
                        ServerMessage::HostMuted {
                            source: TrackSource::Microphone,
                            ..
                        }
                    )
                })
            })
            .await
            .expect("the member is told");
        chair
            .wait_for(WAIT, |s| {
                s.room_tracks
                    .values()
                    .any(|t| t.source == TrackSource::Microphone && t.muted)
            })
            .await
            .expect("the others see the track muted");
        // Forwarding stops: the count settles while the member keeps sending.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = chair
            .state()
            .received_from("member", TrackKind::Audio)
            .map(|r| r.packets)
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = chair
            .state()
            .received_from("member", TrackKind::Audio)
            .map(|r| r.packets)
            .unwrap_or(0);
        assert!(
            after - before <= 2,
            "muted audio still flows: {before} → {after}"
        );
        // Video is untouched.
        let v0 = chair
            .state()
            .received_from("member", TrackKind::Video)
            .map(|r| r.packets)
            .unwrap_or(0);
        chair
            .wait_for(WAIT, |s| {
                s.received_from("member", TrackKind::Video)
                    .is_some_and(|r| r.packets > v0 + 5)
            })
            .await
            .expect("video goes on");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_with_bar_lock_and_end_meeting() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let (mut chair, _) = h.raw("x", "chair", true).await;
        let (mut pest, pest_welcome) = h.raw("x", "pest", false).await;
        chair
            .send(&host(HostAction::Remove { participant_id: me_id(&pest_welcome), bar: true }))
            .await
            .expect("send");
        assert!(next_matching(&mut pest, |m| matches!(m, ServerMessage::Closing { reason: LeaveReason::Removed })).await.is_some());
        assert!(next_matching(&mut chair, |m| matches!(m, ServerMessage::ParticipantsChanged { left, .. } if left.iter().any(|l| l.reason == LeaveReason::Removed))).await.is_some());
        // Barred for the rest of the meeting.
        let mut again = h.raw_join("x", "pest", false).await;
        let (code, _) = again.expect_error(WAIT).await.expect("refused");
        assert_eq!(code, ErrorCode::Barred);

        // Lock: members are refused, hosts still get in.
        chair.send(&host(HostAction::Lock { locked: true })).await.expect("send");
        assert!(next_matching(&mut chair, |m| matches!(m, ServerMessage::RoomStateChanged { room_state } if room_state.locked)).await.is_some());
        let mut late = h.raw_join("x", "late", false).await;
        let (code, _) = late.expect_error(WAIT).await.expect("refused");
        assert_eq!(code, ErrorCode::RoomLocked);
        let (mut cohost, _) = h.raw("x", "cohost", true).await;

        // End the meeting: everyone is closed with meeting_ended.
        chair.send(&host(HostAction::EndMeeting)).await.expect("send");
        for raw in [&mut chair, &mut cohost] {
            assert!(next_matching(raw, |m| matches!(m, ServerMessage::Closing { reason: LeaveReason::MeetingEnded })).await.is_some());
        }
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_admits_and_denies_and_a_late_host_sees_who_waits() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let (mut chair, _) = h.raw("l", "chair", true).await;
        chair.send(&host(HostAction::Lobby { enabled: true })).await.expect("send");
        assert!(next_matching(&mut chair, |m| matches!(m, ServerMessage::RoomStateChanged { room_state } if room_state.lobby)).await.is_some());

        let mut alice = h.raw_join("l", "alice", false).await;
        assert!(next_matching(&mut alice, |m| matches!(m, ServerMessage::Waiting { .. })).await.is_some());
        // While waiting, nothing but ping and leave is allowed.
        alice.send(&ClientMessage::Chat { text: "let me in".into() }).await.expect("send");
        let (code, _) = alice.expect_error(WAIT).await.expect("refused");
        assert_eq!(code, ErrorCode::OutOfOrder);
        let mut bob = h.raw_join("l", "bob", false).await;
        assert!(next_matching(&mut bob, |m| matches!(m, ServerMessage::Waiting { .. })).await.is_some());

        let lobby = next_matching(&mut chair, |m| matches!(m, ServerMessage::Lobby { waiting } if waiting.len() == 2)).await.expect("the chair sees both waiting");
        let ServerMessage::Lobby { waiting } = lobby else { unreachable!() };
        let alice_lb = waiting.iter().find(|w| w.identity == "alice").expect("alice waits").id.clone();
        let bob_lb = waiting.iter().find(|w| w.identity == "bob").expect("bob waits").id.clone();

        // A host arriving later sees the waiting list too.
        let (mut late_host, _) = h.raw("l", "late-host", true).await;
        assert!(next_matching(&mut late_host, |m| matches!(m, ServerMessage::Lobby { waiting } if waiting.len() == 2)).await.is_some());

        chair.send(&host(HostAction::Admit { participant_id: alice_lb })).await.expect("send");
        let welcome = next_matching(&mut alice, |m| matches!(m, ServerMessage::Welcome { .. })).await.expect("alice is admitted");
        let alice_id = me_id(&welcome);
        chair.send(&host(HostAction::Deny { participant_id: bob_lb })).await.expect("send");
        assert!(next_matching(&mut bob, |m| matches!(m, ServerMessage::Closing { reason: LeaveReason::Denied })).await.is_some());
        assert!(next_matching(&mut chair, |m| matches!(m, ServerMessage::ParticipantsChanged { joined, .. } if joined.iter().any(|p| p.id == alice_id))).await.is_some());
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_everyone_and_host_messages_are_marked() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let (mut chair, _) = h.raw("c", "chair", true).await;
        let (mut a, _) = h.raw("c", "a", false).await;
        let (mut b, _) = h.raw("c", "b", false).await;
        a.send(&ClientMessage::Chat {
            text: "hello all".into(),
        })
        .await
        .expect("send");
        chair
            .send(&ClientMessage::Chat {
                text: "welcome".into(),
            })
            .await
            .expect("send");
        // Two senders: the two messages may arrive in either order.
        for raw in [&mut chair, &mut a, &mut b] {
            let (mut member_msg, mut host_msg) = (false, false);
            while !(member_msg && host_msg) {
                let Some(ServerMessage::Chat {
                    text,
                    from_host,
                    name,
                    ..
                }) = next_matching(raw, |m| matches!(m, ServerMessage::Chat { .. })).await
                else {
                    panic!("both chat messages arrive (member: {member_msg}, host: {host_msg})");
                };
                match text.as_str() {
                    "hello all" => {
                        assert!(!from_host && name == "a");
                        member_msg = true;
                    }
                    "welcome" => {
                        assert!(from_host, "a host's message is marked");
                        host_msg = true;
                    }
                    other => panic!("unexpected chat {other:?}"),
                }
            }
        }
        a.send(&ClientMessage::Chat {
            text: "x".repeat(2001),
        })
        .await
        .expect("send");
        let (code, _) = a.expect_error(WAIT).await.expect("too long");
        assert_eq!(code, ErrorCode::BadMessage);
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_arriving_at_once_costs_a_watcher_few_messages() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let (mut watcher, _) = h.raw("big", "watcher", false).await;
        let mut crowd = Vec::new();
        for i in 0..40 {
            crowd.push(h.raw_join("big", &format!("p{i}"), false).await);
        }
        // Count participants_changed messages until all 40 have been announced.
        let mut seen = std::collections::HashSet::new();
        let mut messages = 0;
        let deadline = tokio::time::Instant::now() + WAIT;
        while seen.len() < 40 && tokio::time::Instant::now() < deadline {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Ok(RawEvent::Message(ServerMessage::ParticipantsChanged { joined, .. })) =
                watcher.recv(left).await
            {
                messages += 1;
                seen.extend(
                    joined
                        .into_iter()
                        .map(|p| p.identity)
                        .filter(|i| i != "watcher"),
                );
            }
        }
        assert_eq!(seen.len(), 40, "every arrival announced");
        assert!(
            messages < 40,
            "batched: {messages} messages for 40 arrivals"
        );
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_resumes_as_the_same_participant_without_a_grant() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let (mut other, _) = h.raw("re", "other", false).await;
        let (raw, welcome) = h.raw("re", "traveller", false).await;
        let ServerMessage::Welcome { resume_token, .. } = welcome else { unreachable!() };
        assert!(resume_token.len() >= 40);
        drop(raw); // the connection drops
        assert!(next_matching(&mut other, |m| matches!(m, ServerMessage::ParticipantsChanged { left, .. } if left.iter().any(|l| l.reason == LeaveReason::Disconnected))).await.is_some());

        let mut back = RawSignaling::connect(&h.url()).await.expect("ws");
        back.send(&ClientMessage::Join { protocol: PROTOCOL_VERSION, grant: String::new(), resume: Some(resume_token.clone()), room: None }).await.expect("send");
        let welcome = next_matching(&mut back, |m| matches!(m, ServerMessage::Welcome { .. })).await.expect("resumed");
        let ServerMessage::Welcome { me, .. } = welcome else { unreachable!() };
        assert_eq!(me.identity, "traveller");
        assert!(next_matching(&mut other, |m| matches!(m, ServerMessage::ParticipantsChanged { joined, .. } if joined.iter().any(|p| p.identity == "traveller"))).await.is_some());

        // A token works once.
        let mut twice = RawSignaling::connect(&h.url()).await.expect("ws");
        twice.send(&ClientMessage::Join { protocol: PROTOCOL_VERSION, grant: String::new(), resume: Some(resume_token), room: None }).await.expect("send");
        let (code, _) = twice.expect_error(WAIT).await.expect("refused");
        assert_eq!(code, ErrorCode::ResumeFailed);
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_video_track_stops_and_resumes() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start().await;
        let viewer = h
            .client("p", "viewer", false, ClientOptions::receiver())
            .await;
        let _speaker = h
            .client("p", "speaker", false, ClientOptions::publisher())
            .await;
        viewer
            .wait_for(WAIT, |s| s.receives_intact("speaker", TrackKind::Video, 10))
            .await
            .expect("video flows");
        let video_id = viewer
            .state()
            .room_tracks
            .values()
            .find(|t| t.source == TrackSource::Camera)
            .expect("the camera track")
            .id
            .clone();
        let pause = |paused| ClientMessage::Subscription {
            tracks: vec![plenary_proto::SubscriptionUpdate {
                track_id: video_id.clone(),
                paused,
                width: None,
                height: None,
                priority: None,
            }],
        };
        viewer.send(&pause(true)).expect("send");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = viewer
            .state()
            .received_from("speaker", TrackKind::Video)
            .map(|r| r.packets)
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = viewer
            .state()
            .received_from("speaker", TrackKind::Video)
            .map(|r| r.packets)
            .unwrap_or(0);
        assert!(
            after - before <= 2,
            "paused video still flows: {before} → {after}"
        );
        let a0 = viewer
            .state()
            .received_from("speaker", TrackKind::Audio)
            .map(|r| r.packets)
            .unwrap_or(0);
        viewer
            .wait_for(WAIT, |s| {
                s.received_from("speaker", TrackKind::Audio)
                    .is_some_and(|r| r.packets > a0 + 10)
            })
            .await
            .expect("audio is not paused");
        viewer.send(&pause(false)).expect("send");
        viewer
            .wait_for(WAIT, |s| {
                s.received_from("speaker", TrackKind::Video)
                    .is_some_and(|r| r.packets > after + 10)
            })
            .await
            .expect("video resumes (from the next keyframe)");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_actions_are_written_to_the_audit_log() {
    bounded(TEST_LIMIT, async {
        let dir =
            std::env::temp_dir().join(format!("plenary-audit-{}", plenary::secret::random_id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = dir.join("plenary.db");
        let h = Harness::start_with(|c| {
            // Sign-in configured (its instance is never contacted here): the audit log exists.
            c.membership.public_url = "http://127.0.0.1:1".into();
            c.membership.database = db.display().to_string();
            c.membership.instances = vec![plenary::config::InstanceConfig {
                id: "test".into(),
                base_url: "http://127.0.0.1:9".into(),
                domain: String::new(),
                display_name: String::new(),
                members: true,
                host_roles: Vec::new(),
                host_role_ids: Vec::new(),
                host_permissions: 0,
                pleroma_staff_are_hosts: true,
            }];
        })
        .await;
        let (mut chair, _) = h.raw("audited", "chair", true).await;
        let (_member, member_welcome) = h.raw("audited", "member", false).await;
        let member_id = me_id(&member_welcome);
        chair
            .send(&host(HostAction::Mute {
                participant_id: member_id.clone(),
            }))
            .await
            .expect("send");
        chair
            .send(&host(HostAction::Lock { locked: true }))
            .await
            .expect("send");
        chair
            .send(&host(HostAction::Remove {
                participant_id: member_id,
                bar: false,
            }))
            .await
            .expect("send");
        let store = plenary::membership::store::Store::open(&db).expect("the database");
        let deadline = tokio::time::Instant::now() + WAIT;
        let kinds = loop {
            let entries = store
                .run_sync(|c| plenary::membership::store::recent_audit(c, 50))
                .expect("audit");
            let kinds: Vec<String> = entries
                .iter()
                .filter(|e| e.actor == "chair")
                .map(|e| e.kind.clone())
                .collect();
            let all = ["host_mute", "host_lock", "host_remove"]
                .iter()
                .all(|k| kinds.iter().any(|x| x == k));
            if all || tokio::time::Instant::now() > deadline {
                break kinds;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for k in ["host_mute", "host_lock", "host_remove"] {
            assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
        }
        h.server.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
