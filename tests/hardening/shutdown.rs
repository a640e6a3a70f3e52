//! The drain on SIGTERM and SIGINT, against the real binary: every connected client is told
//! `going_away`, a join during the drain gets `shutting_down`, `/healthz` answers 503, the
//! sessions close with `closing` `server_shutdown`, the audit log's rows are all written
//! (the last one says the server stopped), and the process exits with status 0 within 10 s.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plenary::config::Config;
use plenary::grant::{Claims, Permissions};
use plenary_proto::{
    ClientMessage, ErrorCode, HostAction, LeaveReason, Role, ServerMessage, PROTOCOL_VERSION,
};

use crate::support::{bounded, ClientOptions, RawEvent, RawSignaling, TestClient};
use crate::{media_flows, must, T, TEST_LIMIT};

const SECRET: &str = "shutdown-test-secret-of-at-least-32-characters";

/// The binary, started with a configuration file; killed if the test fails.
struct Plenary {
    child: Child,
    http: String,
    dir: PathBuf,
}

impl Drop for Plenary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Plenary {
    /// Starts `plenary serve` with these extra TOML lines and waits until it is healthy.
    async fn start(name: &str, extra: &str) -> Plenary {
        let dir = std::env::temp_dir().join(format!("plenary-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let port = free_port();
        let config = format!(
            "[http]\naddr = \"127.0.0.1:{port}\"\n[media]\naddr = \"127.0.0.1:0\"\nshards = 1\n\
             [auth]\napi_keys = {{ test = \"{SECRET}\" }}\n{extra}"
        );
        let config = config.replace("@DIR@", &dir.display().to_string());
        std::fs::write(dir.join("plenary.toml"), config).expect("config written");
        let log = std::fs::File::create(dir.join("plenary.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_plenary"))
            .arg("--config")
            .arg(dir.join("plenary.toml"))
            .arg("serve")
            .env("PLENARY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("plenary starts");
        let p = Plenary {
            child,
            http: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + T;
        loop {
            if let Ok(r) = reqwest::get(format!("http://{}/healthz", p.http)).await {
                if r.status().is_success() {
                    return p;
                }
            }
            assert!(Instant::now() < deadline, "not healthy: {}", p.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/rtc", self.http)
    }

    fn grant(&self, room: &str, identity: &str, permissions: Permissions) -> String {
        let mut config = Config::default();
        config.auth.api_keys.insert("test".into(), SECRET.into());
        let claims = Claims::new(
            room,
            identity,
            identity,
            Role::Member,
            Duration::from_secs(300),
        )
        .with_permissions(permissions);
        config.mint_grant(&claims).expect("a grant")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("plenary.log")).unwrap_or_default()
    }

    fn signal(&self, name: &str) -> Instant {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        Instant::now()
    }

    /// Waits for the process to end, at most until `deadline`.
    async fn exit(&mut self, deadline: Instant) -> std::process::ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 10 s after the signal: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn host() -> Permissions {
    Permissions {
        is_host: true,
        ..Permissions::speaker()
    }
}

fn going_away(s: &crate::support::ClientState) -> bool {
    s.events
        .iter()
        .any(|e| matches!(e, ServerMessage::GoingAway { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_refuses_joins_flushes_the_audit_log_and_exits_within_10_s() {
    bounded(TEST_LIMIT, async {
        let membership = "[limits]\ndrain_secs = 3\n[membership]\n\
            public_url = \"http://127.0.0.1:1\"\ndatabase = \"@DIR@/db/plenary.db\"\n\
            [[membership.instances]]\nid = \"coop\"\nbase_url = \"http://127.0.0.1:9\"\n";
        let mut p = Plenary::start("sigterm", membership).await;
        let connect = |identity: &'static str, permissions: Permissions| {
            let grant = p.grant("agm", identity, permissions);
            let url = p.url();
            async move {
                TestClient::connect_with(&url, &grant, ClientOptions::publisher())
                    .await
                    .unwrap_or_else(|e| panic!("{identity}: {e}"))
            }
        };
        let alice = connect("alice", host()).await;
        let bob = connect("bob", Permissions::speaker()).await;
        media_flows(&alice, &bob).await;
        // A host action: its audit row is written on its way out at the latest.
        alice
            .send(&ClientMessage::Host(HostAction::ClearQueue))
            .expect("send");
        tokio::time::sleep(Duration::from_millis(200)).await;

        let t0 = p.signal("TERM");
        for c in [&alice, &bob] {
            must(c, "told going_away", going_away).await;
        }
        let told = t0.elapsed();
        // A join during the drain: the typed refusal, then a close.
        let mut late = RawSignaling::connect(&p.url())
            .await
            .expect("connects while draining");
        late.send(&ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant: p.grant("late", "late", Permissions::speaker()),
            room: None,
            resume: None,
        })
        .await
        .expect("send join");
        let (code, message) = late.expect_error(T).await.expect("an error");
        assert_eq!(code, ErrorCode::ShuttingDown, "{message}");
        assert!(message.contains("shutting down"), "{message}");
        late.expect_closed(T)
            .await
            .expect("closed after shutting_down");
        let health = reqwest::get(format!("http://{}/healthz", p.http))
            .await
            .expect("healthz answers while draining");
        assert_eq!(health.status().as_u16(), 503);
        // Still draining: the meeting is not closed yet.
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the checks took too long"
        );
        assert!(!alice.state().ws_closed && !bob.state().ws_closed);
        // Then every session closes with `server_shutdown`, and the process ends.
        for c in [&alice, &bob] {
            must(c, "closed with server_shutdown", |s| {
                s.closing == Some(LeaveReason::ServerShutdown) && s.ws_closed
            })
            .await;
        }
        let status = p.exit(t0 + Duration::from_secs(10)).await;
        let took = t0.elapsed();
        println!("SIGTERM: clients told in {told:?}, process ended after {took:?} ({status})");
        assert!(status.success(), "{status}: {}", p.log());
        assert!(
            took >= Duration::from_secs(3),
            "the drain lasted drain_secs"
        );

        // Every audit row was written: the host action, then the stop.
        let db = p.dir.join("db/plenary.db");
        let store = plenary::membership::store::Store::open(Path::new(&db)).expect("the db");
        let rows = store
            .run_sync(|c| plenary::membership::store::recent_audit(c, 50))
            .expect("audit rows");
        let kinds: Vec<String> = rows
            .iter()
            .map(|r| format!("{}:{}", r.kind, r.actor))
            .collect();
        assert_eq!(rows[0].kind, "server_shutdown", "{kinds:?}");
        assert!(
            rows.iter()
                .any(|r| r.kind == "host_clear_queue" && r.actor == "alice"),
            "{kinds:?}"
        );
        alice.close().await;
        bob.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_too() {
    bounded(TEST_LIMIT, async {
        let mut p = Plenary::start("sigint", "").await;
        let mut raw = RawSignaling::connect(&p.url()).await.expect("connects");
        raw.send(&ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant: p.grant("room", "listener", Permissions::listener()),
            room: None,
            resume: None,
        })
        .await
        .expect("join");
        loop {
            match raw.recv(T).await.expect("welcome") {
                RawEvent::Message(ServerMessage::Welcome { .. }) => break,
                RawEvent::Closed => panic!("closed: {}", p.log()),
                _ => {}
            }
        }
        let t0 = p.signal("INT");
        let mut told = None;
        let mut closing = None;
        loop {
            match raw.recv(T).await.expect("messages until the close") {
                RawEvent::Message(ServerMessage::GoingAway {
                    closes_in_ms,
                    reconnect_after_ms,
                    ..
                }) => told = Some((closes_in_ms, reconnect_after_ms, t0.elapsed())),
                RawEvent::Message(ServerMessage::Closing { reason }) => closing = Some(reason),
                RawEvent::Closed => break,
                _ => {}
            }
        }
        let (closes_in_ms, reconnect_after_ms, after) = told.expect("going_away");
        assert_eq!(closes_in_ms, 2000, "the default drain");
        assert!(reconnect_after_ms > closes_in_ms);
        assert!(after < Duration::from_secs(1), "told at once ({after:?})");
        assert_eq!(closing, Some(LeaveReason::ServerShutdown));
        let status = p.exit(t0 + Duration::from_secs(10)).await;
        println!(
            "SIGINT: told after {after:?}, process ended after {:?}",
            t0.elapsed()
        );
        assert!(status.success(), "{status}: {}", p.log());
    })
    .await;
}
