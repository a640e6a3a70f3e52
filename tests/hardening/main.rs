//! Hardening (issue 12): fuzz inputs replayed, garbage at the media port, slow and abusive
//! clients, the drain on SIGTERM and SIGINT, the operators' dashboard, churn. Whole-server
//! tests drive Plenary with independent webrtc-rs peers (`tests/support`); every wait and
//! every test is bounded, and every load loop is bounded in count and time.

#[path = "../support/mod.rs"]
mod support;

#[path = "../../fuzz/src/targets.rs"]
mod fuzz_targets;

mod abuse;
mod churn;
mod dashboard;
mod fuzz_replay;
mod garbage;
mod shutdown;

use std::time::Duration;

use plenary::config::Config;
use plenary::grant::{Claims, Permissions};
use plenary_proto::{Role, TrackKind};
use support::{ClientOptions, ClientState, TestClient};

/// The bound on any single wait.
pub const T: Duration = Duration::from_secs(20);
/// The bound on a whole test.
pub const TEST_LIMIT: Duration = Duration::from_secs(180);

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server started in this process.
pub struct Harness {
    pub server: plenary::Server,
    pub config: Config,
}

impl Harness {
    /// With the test configuration changed by `change`.
    pub async fn start_with(change: impl FnOnce(&mut Config)) -> Harness {
        init_logging();
        let mut config = Config::for_tests();
        change(&mut config);
        let server = plenary::start(config.clone())
            .await
            .expect("the server starts");
        Harness { server, config }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/rtc", self.server.http_addr())
    }

    pub fn grant(&self, room: &str, identity: &str, permissions: Permissions) -> String {
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

    pub async fn join_with(
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

    /// A speaker publishing microphone and camera.
    pub async fn join(&self, room: &str, identity: &str) -> TestClient {
        self.join_with(
            room,
            identity,
            Permissions::speaker(),
            ClientOptions::publisher(),
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        scrape(&format!("http://{}", self.server.http_addr())).await
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// `/metrics` of the server at `base` (`http://host:port`).
pub async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a body")
}

/// The value of the sample `name` (with its labels, as printed: `a_total{reason="x"}`).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no sample {name} in /metrics"))
}

/// Panics with the client's state if the wait fails.
pub async fn must(client: &TestClient, what: &str, cond: impl FnMut(&ClientState) -> bool) {
    if let Err(e) = client.wait_for(T, cond).await {
        panic!("{what}: {e}");
    }
}

/// Intact packets of `kind` that `client` got from `identity`.
pub fn received(client: &TestClient, identity: &str, kind: TrackKind) -> u64 {
    client
        .state()
        .received_from(identity, kind)
        .map_or(0, |r| r.payload_ok)
}

/// Waits until `a` and `b` receive each other's audio. (Video may be paused by the
/// bandwidth allocator on a busy test machine; the measures here are on audio.)
pub async fn media_flows(a: &TestClient, b: &TestClient) {
    for (x, y) in [(a, b), (b, a)] {
        let from = y.identity().to_owned();
        must(x, &format!("{} receives {from}", x.identity()), |s| {
            s.receives_intact(&from, TrackKind::Audio, 25)
        })
        .await;
    }
}

/// Audio that `to` receives from `from` over `window`: (packets received, packets sent,
/// longest stretch without a new packet).
pub async fn audio_window(
    from: &TestClient,
    to: &TestClient,
    window: Duration,
) -> (u64, u64, Duration) {
    let sent = |c: &TestClient| {
        c.state()
            .sent
            .get(&plenary_proto::TrackSource::Microphone)
            .copied()
            .unwrap_or(0)
    };
    let (sent0, got0) = (sent(from), received(to, from.identity(), TrackKind::Audio));
    let start = tokio::time::Instant::now();
    let mut last_change = start;
    let mut last = got0;
    let mut stall = Duration::ZERO;
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received(to, from.identity(), TrackKind::Audio);
        if now != last {
            last = now;
            last_change = tokio::time::Instant::now();
        }
        stall = stall.max(last_change.elapsed());
    }
    (last - got0, sent(from) - sent0, stall)
}
