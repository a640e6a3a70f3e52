//! `--turn`: the load tester's attendees reach an in-process Plenary only through Debian's
//! coturn, started here on loopback with the shared secret Plenary signs TURN credentials
//! with (`use-auth-secret`). Every subscriber gets the publisher's audio and video; coturn
//! allocated a relay for every attendee; with a secret coturn does not share, every join
//! fails at the allocation. Needs `turnserver` (Debian's coturn; scripts/test-all installs it).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plenary_loadtest::synth::VideoProfile;
use plenary_loadtest::{run, RunConfig};

const SECRET: &str = "loadtest-turn-secret-0123456789";

/// coturn on 127.0.0.1, killed on drop; its log in a file.
struct Coturn {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Coturn {
    fn start() -> Coturn {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log =
            std::env::temp_dir().join(format!("plenary-coturn-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--fingerprint",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--min-port=49410",
                "--max-port=49600",
                "--use-auth-secret",
                &format!("--static-auth-secret={SECRET}"),
                "--realm=plenary.test",
                // Plenary listens on loopback here; coturn refuses loopback peers otherwise.
                "--allow-loopback-peers",
                "--simple-log",
                "--log-file=stdout",
                "--pidfile=/dev/null",
                "-v",
            ])
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("turnserver (Debian's coturn) runs: apt-get install coturn");
        let c = Coturn { child, port, log };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return c;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("coturn did not listen: {}", c.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

async fn relayed_run(coturn: &Coturn, secret: &str) -> plenary_loadtest::Report {
    let mut config = plenary::config::Config::for_tests();
    config.turn.urls = vec![format!("turn:127.0.0.1:{}?transport=udp", coturn.port)];
    config.turn.secret = secret.into();
    let server = plenary::start(config).await.expect("server starts");
    let mut c = RunConfig::new(
        &format!("http://{}", server.http_addr()),
        "test-key",
        "test-secret-that-is-at-least-32-characters",
    );
    c.room = "relayed".into();
    c.publishers = 1;
    c.subscribers = 3;
    c.duration = Duration::from_secs(4);
    c.ramp_per_sec = 20.0;
    c.video = VideoProfile::by_name("low").expect("profile");
    c.join_timeout = Duration::from_secs(8);
    c.relay = true;
    let report = tokio::time::timeout(Duration::from_secs(60), run(&c))
        .await
        .expect("the run is bounded")
        .expect("the run completes");
    server.shutdown().await;
    report
}

/// One test, so that the two runs (and their coturns) do not compete for the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attendees_through_coturn_receive_everything_and_bad_credentials_are_refused() {
    attendees_through_coturn_receive_everything().await;
    credentials_coturn_cannot_check_are_refused().await;
}

async fn attendees_through_coturn_receive_everything() {
    let coturn = Coturn::start();
    let report = relayed_run(&coturn, SECRET).await;
    let text = report.render();
    println!("{text}");
    let log = coturn.log_text();
    assert!(report.relayed && report.full_decrypt, "{text}");
    assert!(text.contains("TURN server"), "the report says so: {text}");
    assert_eq!(report.joins.failed, 0, "{text}\n{log}");
    assert_eq!(report.joins.succeeded, 4, "{text}\n{log}");
    assert_eq!(report.subscribers_without_media, 0, "{text}");
    assert_eq!(report.missing_streams, 0, "{text}");
    assert_eq!(report.first_video_ms.count, 3, "{text}");
    assert!(report.packets.received > 3 * 2 * 50, "{text}");
    // Loose: coturn, Plenary and the load tester share a small CI machine, and a starved
    // relay drops packets of keyframe bursts like any congested one.
    assert!(report.packets.loss_pct < 25.0, "{text}");
    let allocations = log.matches("ALLOCATE processed, success").count();
    assert!(
        allocations >= 4,
        "coturn allocated a relay per attendee ({allocations}):\n{log}"
    );
}

async fn credentials_coturn_cannot_check_are_refused() {
    let coturn = Coturn::start();
    let report = relayed_run(&coturn, "another-secret-coturn-does-not-know").await;
    let text = report.render();
    println!("{text}");
    assert_eq!(report.joins.succeeded, 0, "{text}");
    assert_eq!(report.joins.failed, 4, "{text}");
    assert!(text.contains("TURN allocation refused"), "{text}");
}
