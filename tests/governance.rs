//! Governance, whole server: motions and votes over real WebSockets, kept in the SQLite
//! store; a restart in the middle of a secret ballot loses no vote and no attendance, and
//! the meeting goes on; the minutes come from `GET /api/minutes/{room}` with a host's
//! grant.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use plenary::config::Config;
use plenary::grant::{Claims, Permissions};
use plenary::membership::store::Store;
use plenary_proto::{
    ClientMessage, ErrorCode, HostAction, MotionKind, MotionSpec, MotionState, Role, ServerMessage,
    PROTOCOL_VERSION,
};
use support::{bounded, RawEvent, RawSignaling};

const WAIT: Duration = Duration::from_secs(20);
const TEST_LIMIT: Duration = Duration::from_secs(120);
const ROOM: &str = "agm";

/// A server that keeps the record of meetings in a database of its own.
struct Harness {
    server: Option<plenary::Server>,
    config: Config,
    dir: PathBuf,
}

impl Harness {
    async fn start() -> Harness {
        let dir = std::env::temp_dir().join(format!(
            "plenary-governance-{}",
            plenary::secret::random_id()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut config = Config::for_tests();
        config.limits.shutdown_grace_secs = 1;
        config.membership.database = dir.join("plenary.db").display().to_string();
        config.meetings.always_record = true;
        let server = plenary::start(config.clone()).await.expect("it starts");
        Harness {
            server: Some(server),
            config,
            dir,
        }
    }

    /// Stops the server as an operator would (SIGTERM) and starts it again on the same
    /// database.
    async fn restart(&mut self) {
        let s = self.server.take().expect("running");
        tokio::time::timeout(WAIT, s.shutdown())
            .await
            .expect("it stops in time");
        let server = plenary::start(self.config.clone())
            .await
            .expect("it starts again");
        self.server = Some(server);
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").http_addr()
    }

    fn grant(&self, identity: &str, role: Role, publish: bool) -> String {
        let mut permissions = if publish {
            Permissions::speaker()
        } else {
            Permissions {
                can_publish_data: true,
                ..Permissions::listener()
            }
        };
        permissions.is_host = role == Role::Host;
        let mut claims = Claims::new(ROOM, identity, identity, role, Duration::from_secs(600))
            .with_permissions(permissions);
        if role == Role::Guest {
            claims.invited_by = Some("ann".into());
        }
        self.config.mint_grant(&claims).expect("a grant")
    }

    /// Joins over a bare WebSocket and waits for the welcome.
    async fn join(&self, identity: &str, role: Role, publish: bool) -> Member {
        let url = format!("ws://{}/rtc", self.addr());
        let mut raw = RawSignaling::connect(&url).await.expect("ws");
        raw.send(&ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant: self.grant(identity, role, publish),
            resume: None,
            room: None,
        })
        .await
        .expect("join");
        let mut m = Member {
            raw,
            seen: Vec::new(),
        };
        m.until(|x| matches!(x, ServerMessage::Welcome { .. }))
            .await;
        m
    }

    fn store(&self) -> Store {
        Store::open(std::path::Path::new(&self.config.membership.database)).expect("the db")
    }

    fn rows(&self, sql: &str) -> i64 {
        self.store()
            .run_sync(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
            .expect("a count")
    }

    async fn minutes(&self, grant: Option<&str>, format: &str) -> (u16, String) {
        let url = format!("http://{}/api/minutes/{ROOM}?format={format}", self.addr());
        let mut req = reqwest::Client::new().get(url);
        if let Some(g) = grant {
            req = req.bearer_auth(g);
        }
        let res = req.send().await.expect("minutes answer");
        let status = res.status().as_u16();
        (status, res.text().await.unwrap_or_default())
    }
}

/// One participant's socket and every message it got.
struct Member {
    raw: RawSignaling,
    seen: Vec<ServerMessage>,
}

impl Member {
    /// Reads until a message matches (also looking at what was read before); panics after
    /// [`WAIT`].
    async fn until(&mut self, f: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        if let Some(pos) = self.seen.iter().position(&f) {
            return self.seen.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.raw.recv(left).await {
                Ok(RawEvent::Message(m)) if f(&m) => return m,
                Ok(RawEvent::Message(m)) => self.seen.push(m),
                Ok(RawEvent::Unparsed(_)) => {}
                other => panic!("no matching message ({other:?}); seen: {:?}", self.seen),
            }
        }
    }

    async fn send(&mut self, msg: ClientMessage) {
        self.raw.send(&msg).await.expect("send");
    }

    async fn host(&mut self, action: HostAction) {
        self.send(ClientMessage::Host(action)).await;
    }

    /// Votes and waits until the server says it counts.
    async fn vote(&mut self, motion: &str, choices: Vec<u32>) {
        self.send(ClientMessage::Vote {
            motion_id: motion.into(),
            choices,
        })
        .await;
        self.until(
            |m| matches!(m, ServerMessage::VoteRecorded { motion_id, .. } if motion_id == motion),
        )
        .await;
    }

    async fn error(&mut self) -> ErrorCode {
        match self
            .until(|m| matches!(m, ServerMessage::Error { .. }))
            .await
        {
            ServerMessage::Error { code, .. } => code,
            _ => unreachable!(),
        }
    }

    /// Waits for the motion in `state` and returns it.
    async fn motion(&mut self, id: &str, state: MotionState) -> plenary_proto::MotionInfo {
        match self
            .until(|m| matches!(m, ServerMessage::Motion { motion } if motion.id == id && motion.state == state))
            .await
        {
            ServerMessage::Motion { motion } => motion,
            _ => unreachable!(),
        }
    }
}

fn spec(title: &str, kind: MotionKind) -> MotionSpec {
    MotionSpec {
        title: title.into(),
        text: format!("That the members approve {title}."),
        kind,
        ..MotionSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_vote_loses_no_vote_and_no_attendance_and_the_minutes_show_it_all() {
    bounded(TEST_LIMIT, async {
        let mut h = Harness::start().await;
        let mut chair = h.join("chair", Role::Host, true).await;
        let mut ann = h.join("ann", Role::Member, true).await;
        let mut bob = h.join("bob", Role::Member, true).await;
        let mut cat = h.join("cat", Role::Member, true).await;
        let mut gus = h.join("gus", Role::Guest, true).await;
        let mut lou = h.join("lou", Role::Member, false).await;

        // A recorded vote: members and a listener vote, the guest is refused.
        chair
            .host(HostAction::CreateMotion {
                motion: spec("the accounts", MotionKind::Recorded),
            })
            .await;
        chair.motion("MO_1", MotionState::Draft).await;
        ann.host(HostAction::OpenMotion {
            motion_id: "MO_1".into(),
        })
        .await;
        assert_eq!(ann.error().await, ErrorCode::PermissionDenied);
        chair
            .host(HostAction::OpenMotion {
                motion_id: "MO_1".into(),
            })
            .await;
        lou.motion("MO_1", MotionState::Open).await;
        ann.vote("MO_1", vec![0]).await;
        bob.vote("MO_1", vec![1]).await;
        lou.vote("MO_1", vec![0]).await;
        gus.send(ClientMessage::Vote {
            motion_id: "MO_1".into(),
            choices: vec![0],
        })
        .await;
        assert_eq!(gus.error().await, ErrorCode::NotEligible);
        chair
            .host(HostAction::CloseMotion {
                motion_id: "MO_1".into(),
            })
            .await;
        let closed = cat.motion("MO_1", MotionState::Closed).await;
        let r = closed.result.expect("a result for everyone");
        assert_eq!(
            r.options.iter().map(|o| o.votes).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        assert_eq!(r.options[0].voters, ["ann", "lou"]);

        // A secret ballot, and the server restarts in the middle of it.
        chair
            .host(HostAction::CreateMotion {
                motion: spec("the board", MotionKind::Secret),
            })
            .await;
        chair
            .host(HostAction::OpenMotion {
                motion_id: "MO_2".into(),
            })
            .await;
        ann.motion("MO_2", MotionState::Open).await;
        ann.vote("MO_2", vec![1]).await;
        cat.vote("MO_2", vec![0]).await;
        h.restart().await;

        // Everything is in the store: votes, ballots apart from their voters, attendance
        // of all six with its end.
        assert_eq!(h.rows("SELECT COUNT(*) FROM votes WHERE motion_id = 'MO_1'"), 3);
        assert_eq!(h.rows("SELECT COUNT(*) FROM ballot_voters"), 2);
        assert_eq!(h.rows("SELECT COUNT(*) FROM secret_ballots"), 2);
        assert_eq!(
            h.rows("SELECT COUNT(DISTINCT identity) FROM attendance"),
            6
        );
        assert_eq!(
            h.rows(
                "SELECT COUNT(*) FROM attendance WHERE left_at IS NOT NULL
                 AND leave_reason = 'server_shutdown'"
            ),
            6
        );

        // The meeting goes on: the secret ballot is still open with its two ballots.
        let mut chair = h.join("chair", Role::Host, true).await;
        let mut ann = h.join("ann", Role::Member, true).await;
        let mut bob = h.join("bob", Role::Member, true).await;
        let open = ann.motion("MO_2", MotionState::Open).await;
        assert_eq!(open.votes_cast, 2);
        ann.until(|m| {
            matches!(m, ServerMessage::VoteRecorded { motion_id, choices: None } if motion_id == "MO_2")
        })
        .await;
        ann.send(ClientMessage::Vote {
            motion_id: "MO_2".into(),
            choices: vec![0],
        })
        .await;
        assert_eq!(ann.error().await, ErrorCode::AlreadyVoted);
        bob.vote("MO_2", vec![1]).await;
        chair
            .host(HostAction::CloseMotion {
                motion_id: "MO_2".into(),
            })
            .await;
        let r = bob
            .motion("MO_2", MotionState::Closed)
            .await
            .result
            .expect("a result");
        assert_eq!(
            r.options.iter().map(|o| o.votes).collect::<Vec<_>>(),
            [1, 2, 0],
            "both ballots from before the restart count"
        );
        assert!(r.options.iter().all(|o| o.voters.is_empty()), "secret");

        // The minutes: for a host's grant only.
        let (status, _) = h.minutes(None, "json").await;
        assert_eq!(status, 401);
        let (status, _) = h
            .minutes(Some(&h.grant("ann", Role::Member, true)), "json")
            .await;
        assert_eq!(status, 403);
        let host_grant = h.grant("chair", Role::Host, true);
        // The recorder writes shortly after the close.
        let deadline = tokio::time::Instant::now() + WAIT;
        let doc: serde_json::Value = loop {
            let (status, body) = h.minutes(Some(&host_grant), "json").await;
            assert_eq!(status, 200, "{body}");
            let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            let closed = doc["meetings"][0]["motions"][1]["state"] == "closed";
            if closed || tokio::time::Instant::now() > deadline {
                break doc;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let meetings = doc["meetings"].as_array().expect("meetings");
        assert_eq!(meetings.len(), 1, "one meeting, before and after the restart");
        let m = &meetings[0];
        let attendance = m["attendance"].as_array().unwrap();
        assert_eq!(attendance.len(), 6);
        let ann_row = attendance.iter().find(|a| a["identity"] == "ann").unwrap();
        assert_eq!(ann_row["sessions"].as_array().unwrap().len(), 2);
        let gus_row = attendance.iter().find(|a| a["identity"] == "gus").unwrap();
        assert_eq!(gus_row["role"], "guest");
        assert_eq!(gus_row["invited_by"], "ann");
        let motions = m["motions"].as_array().unwrap();
        assert_eq!(motions[0]["votes"].as_array().unwrap().len(), 3);
        assert_eq!(motions[1]["voters"].as_array().unwrap().len(), 3);
        assert_eq!(motions[1]["result"]["votes_cast"], 3);
        let (status, md) = h.minutes(Some(&host_grant), "markdown").await;
        assert_eq!(status, 200);
        assert!(md.contains("### MO_2: the board (secret ballot)"), "{md}");
        assert!(md.contains("- lou (lou): For"), "{md}");

        drop((chair, ann, bob, cat, gus, lou));
        if let Some(s) = h.server.take() {
            s.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&h.dir);
    })
    .await;
}
