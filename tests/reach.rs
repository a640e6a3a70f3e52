//! Reachability, whole-server: TURN credentials in `welcome`, ICE over TCP (a raw client
//! speaking RFC 4571 frames and STUN checks it builds itself), garbage on the ICE-TCP port,
//! ICE restart on the same session, candidates in every m-section, and `leave` carried out
//! before the socket closes. Every wait is bounded.

#[path = "support/ice.rs"]
mod ice;
mod support;

use std::time::Duration;

use plenary::config::Config;
use plenary::grant::{unix_now, Claims, Permissions};
use plenary_proto::{ClientMessage, LeaveReason, Role, ServerMessage, PROTOCOL_VERSION};
use support::{bounded, ClientOptions, RawEvent, RawSignaling, TestClient};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

const T: Duration = Duration::from_secs(20);
const TEST_LIMIT: Duration = Duration::from_secs(150);
const TURN_SECRET: &str = "turn-shared-secret-for-tests";

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

struct Harness {
    server: plenary::Server,
    config: Config,
}

impl Harness {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Harness {
        init_logging();
        let mut config = Config::for_tests();
        tweak(&mut config);
        let server = plenary::start(config.clone())
            .await
            .expect("the server starts");
        Harness { server, config }
    }

    fn url(&self) -> String {
        format!("ws://{}/rtc", self.server.http_addr())
    }

    fn grant(&self, room: &str, identity: &str, permissions: Permissions) -> String {
        let claims = Claims::new(
            room,
            identity,
            identity,
            Role::Member,
            Duration::from_secs(600),
        )
        .with_permissions(permissions);
        self.config.mint_grant(&claims).expect("a grant")
    }

    /// A raw session joined to `room`; returns it and its welcome.
    async fn raw_join(&self, room: &str, identity: &str) -> (RawSignaling, ServerMessage) {
        let mut sig = RawSignaling::connect(&self.url()).await.expect("connect");
        let join = ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant: self.grant(room, identity, Permissions::speaker()),
            resume: None,
            room: None,
        };
        sig.send(&join).await.expect("join");
        loop {
            match sig.recv(T).await.expect("welcome in time") {
                RawEvent::Message(m @ ServerMessage::Welcome { .. }) => return (sig, m),
                RawEvent::Message(ServerMessage::Error { code, message }) => {
                    panic!("join refused: {code:?} {message}")
                }
                RawEvent::Closed => panic!("closed before welcome"),
                _ => {}
            }
        }
    }

    async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// Sends an offer on a raw session and returns the answer's SDP.
async fn offer(sig: &mut RawSignaling, sdp: String) -> String {
    sig.send(&ClientMessage::Offer {
        sdp,
        tracks: Vec::new(),
    })
    .await
    .expect("offer");
    loop {
        match sig.recv(T).await.expect("answer in time") {
            RawEvent::Message(ServerMessage::Answer { sdp, .. }) => return sdp,
            RawEvent::Message(ServerMessage::Error { code, message }) => {
                panic!("offer refused: {code:?} {message}")
            }
            RawEvent::Closed => panic!("closed before the answer"),
            _ => {}
        }
    }
}

/// (1) Each welcome carries TURN REST credentials for the member: `expiry:identity`, the
/// HMAC-SHA1 of it with the shared secret, expiring after `turn.ttl`; never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_carries_turn_credentials_not_the_secret() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start(|c| {
            c.turn.urls = vec![
                "turn:127.0.0.1:3478".into(),
                "turn:127.0.0.1:3478?transport=tcp".into(),
            ];
            c.turn.secret = TURN_SECRET.into();
            c.turn.ttl = 900;
        })
        .await;
        let mut sig = RawSignaling::connect(&h.url()).await.unwrap();
        let grant = h.grant("turn-room", "@ann@social.coop", Permissions::speaker());
        sig.send_text(
            serde_json::json!({"type": "join", "protocol": PROTOCOL_VERSION, "grant": grant})
                .to_string(),
        )
        .await
        .unwrap();
        let before = unix_now();
        let welcome = loop {
            match sig.recv(T).await.unwrap() {
                RawEvent::Message(m @ ServerMessage::Welcome { .. }) => break m,
                RawEvent::Closed => panic!("closed"),
                _ => {}
            }
        };
        let text = serde_json::to_string(&welcome).unwrap();
        assert!(!text.contains(TURN_SECRET), "the secret leaked: {text}");
        let ServerMessage::Welcome { ice_servers, .. } = welcome else {
            unreachable!()
        };
        let turn = ice_servers
            .iter()
            .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
            .expect("a TURN server in welcome");
        assert_eq!(turn.urls.len(), 2);
        let username = turn.username.clone().expect("a username");
        let (expiry, identity) = username.split_once(':').expect("expiry:identity");
        assert_eq!(identity, "@ann@social.coop");
        let expiry: u64 = expiry.parse().expect("a Unix time");
        assert!(
            (before + 900..=unix_now() + 900).contains(&expiry),
            "expires after ttl: {expiry}"
        );
        let expected = plenary::turn::credentials(TURN_SECRET, identity, expiry - 900, 900);
        assert_eq!(turn.credential.as_deref(), Some(expected.password.as_str()));
        h.stop().await;
    })
    .await;
}

/// (2) ICE over TCP: the answer names a passive TCP candidate (and, like the UDP one, in
/// every m-section, with `a=end-of-candidates`); STUN checks in RFC 4571 frames are answered
/// on it. Garbage on the port — an HTTP request, a bad length after a good check, a run of
/// frames the peer refuses — is cut off, while the good connection and the UDP peers in the
/// room carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_answers_checks_and_cuts_off_garbage() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start(|c| {
            c.media.tcp_addr = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
        let tcp = h.server.tcp_addr().expect("ICE-TCP is on");
        let room = "tcp-room";
        // Two UDP peers exchanging media, to see they are not disturbed.
        let alice = TestClient::connect_with(
            &h.url(),
            &h.grant(room, "alice", Permissions::speaker()),
            ClientOptions::default(),
        )
        .await
        .unwrap();
        let bob = TestClient::connect_with(
            &h.url(),
            &h.grant(room, "bob", Permissions::speaker()),
            ClientOptions::default(),
        )
        .await
        .unwrap();
        alice
            .wait_for(T, |s| {
                s.receives_intact("bob", plenary_proto::TrackKind::Audio, 25)
            })
            .await
            .unwrap();

        let (mut sig, _) = h.raw_join(room, "tina").await;
        let answer = offer(
            &mut sig,
            ice::offer_sdp("tinaUfrag", "tina-password-0123456789"),
        )
        .await;
        let sections = ice::sections(&answer);
        assert_eq!(sections.len(), 2, "{answer}");
        for s in &sections {
            assert!(
                s.end_of_candidates,
                "mid {}: a=end-of-candidates\n{answer}",
                s.mid
            );
            assert_eq!(
                ice::candidate_addr(&s.candidates, "tcp"),
                Some(tcp),
                "mid {} names the TCP candidate\n{answer}",
                s.mid
            );
            assert!(
                s.candidates.iter().any(|c| c.contains("tcptype passive")),
                "{answer}"
            );
            assert!(
                ice::candidate_addr(&s.candidates, "udp").is_some(),
                "{answer}"
            );
        }
        let (ufrag, pwd) = (sections[0].ufrag.clone(), sections[0].pwd.clone());

        let mut good = TcpStream::connect(tcp).await.unwrap();
        assert!(
            ice::check_tcp(&mut good, 1, &ufrag, "tinaUfrag", &pwd).await,
            "a STUN check over ICE-TCP is answered"
        );

        // An HTTP request on the ICE-TCP port: cut off at once.
        let mut http = TcpStream::connect(tcp).await.unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(
            ice::closed_within(&mut http, Duration::from_secs(3)).await,
            "HTTP cut off"
        );
        // A first frame that names nobody: cut off.
        let mut stranger = TcpStream::connect(tcp).await.unwrap();
        let check = ice::binding_request(ice::txid(9), "nobody00", "x", "pw");
        ice::send_frame(&mut stranger, &check).await.unwrap();
        assert!(
            ice::closed_within(&mut stranger, Duration::from_secs(3)).await,
            "unknown ufrag cut off"
        );
        // A good check, then a length over the limit: cut off.
        let mut liar = TcpStream::connect(tcp).await.unwrap();
        assert!(ice::check_tcp(&mut liar, 2, &ufrag, "tinaUfrag", &pwd).await);
        liar.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
        assert!(
            ice::closed_within(&mut liar, Duration::from_secs(3)).await,
            "bad length cut off"
        );
        // A good check, then frames of noise its peer refuses: cut off after a few.
        let mut noisy = TcpStream::connect(tcp).await.unwrap();
        assert!(ice::check_tcp(&mut noisy, 3, &ufrag, "tinaUfrag", &pwd).await);
        for i in 0..40u8 {
            // 0xff starts no STUN, DTLS or RTP packet (RFC 7983): plain noise.
            let mut noise = vec![0xffu8; 200];
            noise[1] = i;
            if ice::send_frame(&mut noisy, &noise).await.is_err() {
                break;
            }
        }
        assert!(
            ice::closed_within(&mut noisy, Duration::from_secs(3)).await,
            "noise cut off"
        );

        // The good connection still works, and the UDP peers' media still flows.
        assert!(
            ice::check_tcp(&mut good, 4, &ufrag, "tinaUfrag", &pwd).await,
            "the good ICE-TCP connection is unaffected"
        );
        let before = alice.state().total_received();
        alice
            .wait_for(T, |s| s.total_received() > before + 50)
            .await
            .unwrap();
        bob.wait_for(T, |s| {
            s.receives_intact("alice", plenary_proto::TrackKind::Audio, 25)
        })
        .await
        .unwrap();
        let client = reqwest::Client::new();
        let metrics = client
            .get(format!("http://{}/metrics", h.server.http_addr()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let refused: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("plenary_ice_tcp_refused_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            refused >= 4,
            "four connections refused or cut off, counted: {refused}"
        );
        drop(sig);
        alice.close().await;
        bob.close().await;
        h.stop().await;
    })
    .await;
}

/// (3) ICE restart: a new offer with new ICE credentials on the same session gets an answer
/// with new credentials of the server's; checks with the old ones are no longer answered,
/// checks with the new ones are — and the participant stays the same, with its hand up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_keeps_the_session_and_the_hand() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start(|_| {}).await;
        let room = "restart-room";
        let (mut observer, _) = h.raw_join(room, "olga").await;
        let (mut sig, welcome) = h.raw_join(room, "rita").await;
        let ServerMessage::Welcome { me, .. } = welcome else {
            unreachable!()
        };
        sig.send(&ClientMessage::RaiseHand { raised: true })
            .await
            .unwrap();

        let first = offer(
            &mut sig,
            ice::offer_sdp("ritaOne1", "rita-password-one-0123456"),
        )
        .await;
        let s1 = ice::sections(&first);
        let udp = ice::candidate_addr(&s1[0].candidates, "udp").expect("a UDP candidate");
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(
            ice::check_udp(&sock, udp, 1, &s1[0].ufrag, "ritaOne1", &s1[0].pwd).await,
            "checks are answered before the restart"
        );

        // The path "breaks"; the client restarts ICE with new credentials.
        let second = offer(
            &mut sig,
            ice::offer_sdp("ritaTwo2", "rita-password-two-0123456"),
        )
        .await;
        let s2 = ice::sections(&second);
        assert_ne!(
            s2[0].ufrag, s1[0].ufrag,
            "new server credentials after a restart"
        );
        assert_ne!(s2[0].pwd, s1[0].pwd);
        assert!(s2
            .iter()
            .all(|s| s.ufrag == s2[0].ufrag && s.end_of_candidates));
        let sock2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(
            !ice::check_udp(&sock2, udp, 2, &s1[0].ufrag, "ritaOne1", &s1[0].pwd).await,
            "the old credentials are void"
        );
        assert!(
            ice::check_udp(&sock2, udp, 3, &s2[0].ufrag, "ritaTwo2", &s2[0].pwd).await,
            "checks with the new credentials, from a new address, are answered"
        );

        // The observer saw the hand raised, and never saw rita leave.
        sig.send(&ClientMessage::Ping { id: 1 }).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut queue = Vec::new();
        while let Ok(ev) = observer
            .recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            match ev {
                RawEvent::Message(ServerMessage::HandQueue { queue: q }) => queue = q,
                RawEvent::Message(ServerMessage::ParticipantsChanged { left, .. }) => {
                    assert!(left.iter().all(|l| l.id != me.id), "rita left: {left:?}");
                }
                RawEvent::Closed => panic!("observer closed"),
                _ => {}
            }
        }
        assert_eq!(
            queue,
            vec![me.id.clone()],
            "rita's hand is still up, first in line"
        );
        h.stop().await;
    })
    .await;
}

/// (6) `leave` is carried out before the socket closes: a client that hangs up its media
/// the moment the socket closes (as aiortc and the test client do) is seen as `left`, never
/// `disconnected`, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_is_carried_out_before_the_socket_closes() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start(|_| {}).await;
        let room = "leave-room";
        let watcher = TestClient::connect_with(
            &h.url(),
            &h.grant(room, "watcher", Permissions::listener()),
            ClientOptions::receiver(),
        )
        .await
        .unwrap();
        for i in 0..6 {
            let who = format!("leaver{i}");
            let c = TestClient::connect_with(
                &h.url(),
                &h.grant(room, &who, Permissions::speaker()),
                ClientOptions::default(),
            )
            .await
            .unwrap();
            c.wait_connected(T).await.unwrap();
            let id = c.participant_id();
            c.leave().await.expect("the server closes after leave");
            watcher
                .wait_for(T, |s| s.saw_left(&id).is_some())
                .await
                .unwrap();
            assert_eq!(
                watcher.state().saw_left(&id),
                Some(LeaveReason::Left),
                "departure {i} is announced as left"
            );
        }
        watcher.close().await;
        h.stop().await;
    })
    .await;
}
