//! Replays every stored fuzz input — the minimised corpus in `fuzz/corpus/<target>/` and
//! the crashes found so far in `fuzz/regressions/<target>/` — through the same target
//! bodies `cargo fuzz` runs (`fuzz/src/targets.rs`), on stable Rust. This is what CI runs
//! of the fuzzing (docs/fuzzing.md): a few seconds, no nightly toolchain.

use std::path::Path;

use crate::fuzz_targets::{self as targets, TARGETS};

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable");
            (p.display().to_string(), bytes)
        })
        .collect()
}

#[test]
fn every_stored_fuzz_input_replays_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, run) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        let regressions = inputs(&root.join("regressions").join(name));
        assert!(
            corpus.len() >= 3,
            "fuzz/corpus/{name} holds its seeds at least ({} files)",
            corpus.len()
        );
        for (path, bytes) in corpus.iter().chain(&regressions) {
            let outcome = std::panic::catch_unwind(|| run(bytes));
            assert!(outcome.is_ok(), "{path} crashes the {name} target");
        }
        println!(
            "{name}: {} corpus inputs, {} regressions",
            corpus.len(),
            regressions.len()
        );
    }
}

/// The rigs reach deep: the reference offer is answered, and a valid STUN check from the
/// client nominates its address (so fuzzed DTLS and SRTP from there reach str0m's parsers).
#[test]
fn fuzz_rigs_reach_past_the_first_checks() {
    let mut peer = targets::new_peer();
    let answer = peer
        .accept_offer(targets::REFERENCE_OFFER)
        .expect("the reference offer is accepted");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(answer.contains("a=simulcast:recv q;h;f"), "{answer}");
    // A check with a valid MESSAGE-INTEGRITY is accepted; one with a broken one is not.
    let pass = peer.rtc.direct_api().local_ice_credentials().pass;
    let check =
        targets::stun_binding_request(&peer.ufrag, targets::CLIENT_UFRAG, &pass, [9; 12], &[]);
    fn input(bytes: &[u8]) -> str0m::Input<'_> {
        str0m::Input::Receive(
            std::time::Instant::now(),
            str0m::net::Receive {
                proto: str0m::net::Protocol::Udp,
                source: targets::CLIENT_ADDR,
                destination: targets::SERVER_ADDR,
                contents: bytes.try_into().expect("a datagram"),
            },
        )
    }
    assert!(
        peer.rtc.accepts(&input(&check)),
        "a valid check is accepted"
    );
    let mut forged = check.clone();
    let n = forged.len();
    forged[n - 13] ^= 1;
    assert!(!peer.rtc.accepts(&input(&forged)), "a broken check is not");
    // The seed answers name the new m-line as `@mid@` and are accepted.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sdp");
    for (seed, kind) in [
        ("seed-answer-audio", str0m::media::MediaKind::Audio),
        ("seed-answer-video", str0m::media::MediaKind::Video),
    ] {
        let bytes = std::fs::read(root.join(seed)).expect("the seed exists");
        let text = std::str::from_utf8(&bytes[1..]).expect("text");
        let mut peer = targets::new_peer();
        peer.accept_offer(targets::REFERENCE_OFFER).expect("offer");
        peer.add_out(plenary::media::peer::OutTrack {
            track: plenary_sfu::TrackKey(7),
            track_id: "TR_7".into(),
            publisher_id: "PA_2".into(),
            kind,
            state: plenary::media::peer::OutState::ToOpen,
            pt_map: None,
            ssrc: None,
        });
        let Some(plenary_proto::ServerMessage::Offer { tracks, .. }) = peer.negotiate().0 else {
            panic!("no offer");
        };
        let opened = peer
            .accept_answer(&text.replace("@mid@", &tracks[0].mid))
            .unwrap_or_else(|e| panic!("{seed} is refused: {e}"));
        assert_eq!(opened.len(), 1, "{seed} opens the slot");
    }
    // The valid grant seeds verify, with each kind of key.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/grant");
    for (seed, signer) in [
        ("seed-hs256-valid", plenary::grant::Signer::ApiKey),
        ("seed-ed25519-valid", plenary::grant::Signer::Server),
    ] {
        let bytes = std::fs::read(root.join(seed)).expect("the seed exists");
        let token = targets::grant_token(&bytes).expect("a token");
        let verified = targets::grant_ring().verify_signed(&token);
        assert_eq!(verified.map(|(_, s)| s), Ok(signer), "{seed}");
    }
    // Each target runs on an empty and on a short input.
    for (_, run) in TARGETS {
        run(&[]);
        run(&[1, 2, 3]);
    }
}
