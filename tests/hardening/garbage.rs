//! Garbage at the media port while a meeting runs: random datagrams, STUN checks with a bad
//! MESSAGE-INTEGRITY (naming a real peer's ICE username fragment, and unknown ones), and
//! DTLS- and SRTP-looking datagrams, from 64 loopback addresses, to every media shard's
//! port. The server keeps running, counts what it dropped by reason, and the meeting's audio
//! arrives as before.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};

use crate::fuzz_targets::stun_binding_request;
use crate::support::bounded;
use crate::{audio_window, media_flows, metric, Harness, TEST_LIMIT};

/// Source addresses (127.0.1.1 … 127.0.1.64), datagrams of each kind from each, per port.
const SOURCES: u8 = 64;
const PER_KIND: usize = 12;

fn dropped(text: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!("plenary_media_dropped_datagrams_total{{reason=\"{reason}\"}}"),
    )
}

/// Every kind of garbage one source sends to one port.
fn garbage(rng: &mut rand::rngs::StdRng, real_ufrags: &[String]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..PER_KIND {
        // Random bytes, any length.
        let mut random = vec![0u8; rng.random_range(1..1200)];
        rng.fill_bytes(&mut random);
        out.push(random);
        // STUN naming a real peer, with a MESSAGE-INTEGRITY keyed with the wrong password.
        let ufrag = &real_ufrags[i % real_ufrags.len()];
        out.push(stun_binding_request(
            ufrag,
            "evil",
            "not-the-password",
            [i as u8; 12],
            &[],
        ));
        // STUN naming nobody.
        out.push(stun_binding_request("nobody", "evil", "x", [7; 12], &[]));
        // DTLS-looking: a handshake record header, then noise.
        let mut dtls = vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, i as u8, 0, 0x60];
        dtls.extend((0..0x60).map(|_| rng.random::<u8>()));
        out.push(dtls);
        // SRTP-looking: an RTP header (version 2, Opus payload type) and noise.
        let mut srtp = vec![
            0x80, 0x6f, 0, i as u8, 0, 0, 3, 0xe8, 0x12, 0x34, 0x56, 0x78,
        ];
        srtp.extend((0..160).map(|_| rng.random::<u8>()));
        out.push(srtp);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_at_the_media_port_is_counted_and_the_meeting_goes_on() {
    bounded(TEST_LIMIT, async {
        let h = Harness::start_with(|_| {}).await;
        let alice = h.join("garbage", "alice").await;
        let bob = h.join("garbage", "bob").await;
        media_flows(&alice, &bob).await;
        let ufrags: Vec<String> = [&alice, &bob]
            .iter()
            .map(|c| c.state().server_ufrag().expect("the server's SDP names its ufrag"))
            .collect();

        let before = h.metrics().await;
        let (got_before, sent_before, stall_before) =
            audio_window(&bob, &alice, Duration::from_secs(3)).await;

        // The burst, paced over about three seconds, while the audio is measured.
        let ports: Vec<SocketAddr> = h.server.media_addrs().to_vec();
        let burst = tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(12);
            let mut sent = 0u64;
            for s in 1..=SOURCES {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, s));
                let socket = tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0))
                    .await
                    .expect("a loopback source address");
                for port in &ports {
                    for d in garbage(&mut rng, &ufrags) {
                        if socket.send_to(&d, port).await.is_ok() {
                            sent += 1;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(45)).await;
            }
            sent
        });
        let (got_during, sent_during, stall_during) =
            audio_window(&bob, &alice, Duration::from_secs(4)).await;
        let sent = burst.await.expect("the burst ran");
        assert!(sent >= u64::from(SOURCES) * 2 * 60 * 9 / 10, "{sent} sent");

        // Counted, by reason, once the shards published (every second).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = h.metrics().await;
        let rise = |reason: &str| dropped(&after, reason) - dropped(&before, reason);
        let per_kind = f64::from(SOURCES) * ports_len(&h) * PER_KIND as f64;
        println!(
            "sent {sent}: unknown_source +{}, unknown_ufrag +{}, not_accepted +{}, malformed +{}, refused +{}",
            rise("unknown_source"),
            rise("unknown_ufrag"),
            rise("not_accepted"),
            rise("malformed"),
            rise("refused")
        );
        // Random, DTLS and SRTP garbage from strangers: no peer is known by those addresses.
        assert!(rise("unknown_source") >= per_kind * 2.0, "{after}");
        // STUN naming nobody.
        assert!(rise("unknown_ufrag") >= per_kind * 0.9, "{after}");
        // STUN naming a real peer on this port's shard, with a bad integrity: refused by
        // that peer (the other shard does not know the ufrag: unknown there).
        assert!(rise("not_accepted") >= per_kind / 2.0 * 0.9, "{after}");
        let total_before = metric(&before, "plenary_udp_packets_in_total");
        let total_after = metric(&after, "plenary_udp_packets_in_total");
        assert!(total_after - total_before >= sent as f64 * 0.9);

        // The meeting went on: the same audio loss and no longer stall than before.
        let loss = |got: u64, sent: u64| 1.0 - got as f64 / sent.max(1) as f64;
        println!(
            "audio bob→alice before: {got_before}/{sent_before} (longest stall {stall_before:?}); \
             during the burst: {got_during}/{sent_during} (longest stall {stall_during:?})"
        );
        assert!(sent_during >= 50, "bob kept sending ({sent_during})");
        assert!(
            loss(got_during, sent_during) <= loss(got_before, sent_before).max(0.0) + 0.03,
            "loss during the burst {got_during}/{sent_during} vs before {got_before}/{sent_before}"
        );
        assert!(
            stall_during <= stall_before.max(Duration::from_millis(100)) * 3,
            "audio stalled {stall_during:?} during the burst (before: {stall_before:?})"
        );
        for c in [&alice, &bob] {
            let s = c.state();
            assert!(s.errors.is_empty(), "{}: {:?}", c.identity(), s.errors);
            assert!(!s.ws_closed);
        }
        let health = reqwest::get(format!("http://{}/healthz", h.server.http_addr()))
            .await
            .expect("healthz");
        assert!(health.status().is_success());
        alice.close().await;
        bob.close().await;
        h.stop().await;
    })
    .await;
}

fn ports_len(h: &Harness) -> f64 {
    h.server.media_addrs().len() as f64
}
