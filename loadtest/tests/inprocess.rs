//! The load tester against an in-process Plenary: 2 publishers (camera + microphone) and
//! 20 subscribers for 5 s. Every subscriber must receive both publishers' audio and video,
//! with loss under 5 %, and the report must carry the server's own numbers.

use std::time::Duration;

use plenary_loadtest::synth::VideoProfile;
use plenary_loadtest::{run, RunConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_subscribers_receive_two_publishers() {
    let server = plenary::start(plenary::config::Config::for_tests())
        .await
        .expect("server starts");
    let mut c = RunConfig::new(
        &format!("http://{}", server.http_addr()),
        "test-key",
        "test-secret-that-is-at-least-32-characters",
    );
    c.room = "ci".into();
    c.publishers = 2;
    c.subscribers = 20;
    c.duration = Duration::from_secs(5);
    c.ramp_per_sec = 20.0;
    // Debug builds on a 2-core CI machine: keep the video light.
    c.video = VideoProfile::by_name("low").expect("profile");
    c.peers_per_task = 8;
    c.thresholds.max_loss_pct = Some(5.0);
    let report = tokio::time::timeout(Duration::from_secs(50), run(&c))
        .await
        .expect("the run is bounded")
        .expect("the run completes");
    server.shutdown().await;
    let text = report.render();
    println!("{text}");

    assert_eq!(report.joins.attempted, 22, "{text}");
    assert_eq!(report.joins.failed, 0, "{text}");
    assert_eq!(report.joins.succeeded, 22, "{text}");
    assert!(report.joins.dropped.is_empty(), "{text}");
    assert_eq!(report.subscribers_without_media, 0, "{text}");
    assert_eq!(
        report.missing_streams, 0,
        "every subscriber gets all 4 streams: {text}"
    );
    // Everyone receives audio and video: 20 subscribers + each publisher from the other.
    assert_eq!(report.first_audio_ms.count, 22, "{text}");
    assert_eq!(report.first_video_ms.count, 22, "{text}");
    assert!(report.packets.received > 20 * 4 * 50, "{text}");
    assert!(report.packets.loss_pct < 5.0, "{text}");
    assert_eq!(report.packets.unrecognised, 0, "{text}");
    assert!(report.thresholds.iter().all(|v| v.passed), "{text}");
    assert!(
        report.latency_ms.count > 0 && report.latency_ms.p50 < 200.0,
        "{text}"
    );
    assert!(report.subscriber_kbps.p50 > 100.0, "{text}");
    assert!(
        report.server.whole_run.is_some(),
        "server metrics were read: {text}"
    );
    assert!(report.server.peak_participants >= 22.0, "{text}");

    // The fast receive path: every packet counted from its header, a sample decrypted and
    // verified, and the RTCP a browser sends went out.
    let c = &report.checks;
    assert!(!report.full_decrypt);
    // Every packet is counted from its header; duplicates (retransmissions the server sent
    // as probes, say) are counted but not received twice.
    assert_eq!(
        c.counted,
        report.packets.received + report.packets.duplicates,
        "{text}"
    );
    assert!(
        c.verified >= 22 * 4 * 4,
        "the first 4 packets of every stream at least: {text}"
    );
    assert!(c.decrypted < c.counted / 4, "only a sample: {text}");
    assert_eq!(c.failures(), 0, "{text}");
    assert!(c.keyframes_verified > 0, "{text}");
    assert!(c.rr_sent > 0 && c.twcc_sent > 0, "{text}");
    assert!(report.frames.complete > 0, "{text}");
}

/// Network classes shape each attendee's downlink: the lossy half loses audio, NACKs video
/// and gets packets back by retransmission; the good half loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_downlinks_nack_and_recover() {
    let server = plenary::start(plenary::config::Config::for_tests())
        .await
        .expect("server starts");
    let mut c = RunConfig::new(
        &format!("http://{}", server.http_addr()),
        "test-key",
        "test-secret-that-is-at-least-32-characters",
    );
    c.room = "net".into();
    c.publishers = 1;
    c.subscribers = 8;
    c.duration = Duration::from_secs(4);
    c.ramp_per_sec = 20.0;
    c.video = VideoProfile::by_name("low").expect("profile");
    c.network = Some(
        plenary_loadtest::netem::NetMix::parse("50%:good,50%:loss=5%,delay=20ms").expect("mix"),
    );
    let report = tokio::time::timeout(Duration::from_secs(50), plenary_loadtest::run(&c))
        .await
        .expect("the run is bounded")
        .expect("the run completes");
    server.shutdown().await;
    let text = report.render();
    println!("{text}");
    assert_eq!(report.joins.failed, 0, "{text}");
    assert_eq!(report.classes.len(), 2, "{text}");
    let (good, lossy) = (&report.classes[0], &report.classes[1]);
    assert!(good.attendees > 0 && lossy.attendees > 0, "{text}");
    assert_eq!(good.audio_loss_pct, 0.0, "{text}");
    assert_eq!(good.shaper_drops, (0, 0, 0), "{text}");
    assert!(lossy.shaper_drops.0 > 0, "{text}");
    assert!(lossy.audio_loss_pct > 0.5, "{text}");
    assert!(lossy.nacked > 0, "video gaps are NACKed: {text}");
    assert!(
        lossy.recovered > 0,
        "the server resends what was NACKed: {text}"
    );
    assert_eq!(report.checks.failures(), 0, "{text}");
}
