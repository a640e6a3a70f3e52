//! The bodies of Plenary's fuzz targets, shared by `cargo fuzz` (`fuzz/fuzz_targets/*.rs`)
//! and by the replay test (`tests/hardening/fuzz_replay.rs`), which runs every stored input
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) on stable Rust in `cargo test`.
//!
//! Each target takes arbitrary bytes and drives the server's own code as the server drives
//! it — the same public functions, in the same order — so a crash here is a crash a client
//! could cause. Besides "no panic", each checks a few things the server relies on.
//!
//! Only the crates the `plenary` package already depends on are used here, so that its
//! tests can include this file.

#![allow(dead_code)] // The replay test and each fuzz target use different parts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use plenary::grant::{Claims, GrantError, KeyRing, Signer};
use plenary::media::demux::{is_stun, Demux};
use plenary::media::peer::{OutState, OutTrack, Peer};
use plenary::media::shard::AddPeer;
use plenary_proto::{ClientMessage, ErrorCode, TrackSource};
use plenary_sfu::keyframe;
use plenary_sfu::munger::{InPacket, Munged, Munger};
use plenary_sfu::{Forward, Media, ParticipantKey, Room, RoomConfig, RoomEvent, RtpIn, TrackKey};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output};

/// A fuzz target: its name and what it runs on one input.
pub type Target = (&'static str, fn(&[u8]));

/// The targets, by name (as `cargo fuzz` and the corpus folders call them).
pub const TARGETS: [Target; 5] = [
    ("signaling", signaling),
    ("sdp", sdp),
    ("datagram", datagram),
    ("rtp", rtp),
    ("grant", grant),
];

// ---- signaling ---------------------------------------------------------------------------

/// A text frame as the signaling session checks it ([`plenary::signal::check_text`]): size,
/// JSON, type, shape. What it accepts reads back the same after a round trip through JSON
/// (the server relays some of it); what it refuses gets one of the documented codes, and
/// only an oversized message is fatal.
pub fn signaling(data: &[u8]) {
    // Binary frames are refused before any parsing; only text reaches the checks.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match plenary::signal::check_text(text) {
        Ok(msg) => {
            let again = serde_json::to_string(&msg).expect("an accepted message serialises");
            let back: ClientMessage = serde_json::from_str(&again).expect("its JSON reads back");
            assert_eq!(back, msg, "round trip of {again}");
        }
        Err(refused) => {
            assert!(!refused.message.is_empty());
            match refused.code {
                ErrorCode::TooLarge => {
                    assert!(text.len() > plenary_proto::MAX_MESSAGE_BYTES);
                    assert!(refused.code.is_fatal());
                }
                ErrorCode::BadMessage | ErrorCode::UnknownType => {
                    assert!(!refused.code.is_fatal())
                }
                other => panic!("unexpected refusal {other:?}: {}", refused.message),
            }
        }
    }
}

// ---- SDP ---------------------------------------------------------------------------------

/// The client's ICE username fragment and password in [`REFERENCE_OFFER`].
pub const CLIENT_UFRAG: &str = "fzcl";
/// See [`CLIENT_UFRAG`].
pub const CLIENT_PWD: &str = "fuzzclientpasswordfuzzclient";

/// A browser's first offer (Chrome-like): microphone, simulcast camera with RTX, data
/// channel. The seed every SDP and datagram input starts from.
pub const REFERENCE_OFFER: &str = "v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1 2\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS stream\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:fzcl\r
a=ice-pwd:fuzzclientpasswordfuzzclient\r
a=ice-options:trickle\r
a=fingerprint:sha-256 3A:0F:9B:64:C8:1E:2D:55:71:AB:90:4C:D2:EE:13:7F:88:21:5A:C6:B9:04:6E:F1:2C:93:D7:40:5B:A8:1F:66\r
a=setup:actpass\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=sendonly\r
a=msid:stream audio0\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=ssrc:1111 cname:fuzz\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:fzcl\r
a=ice-pwd:fuzzclientpasswordfuzzclient\r
a=ice-options:trickle\r
a=fingerprint:sha-256 3A:0F:9B:64:C8:1E:2D:55:71:AB:90:4C:D2:EE:13:7F:88:21:5A:C6:B9:04:6E:F1:2C:93:D7:40:5B:A8:1F:66\r
a=setup:actpass\r
a=mid:1\r
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r
a=sendonly\r
a=msid:stream video0\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 goog-remb\r
a=rtcp-fb:96 transport-cc\r
a=rtcp-fb:96 ccm fir\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=rid:q send\r
a=rid:h send\r
a=rid:f send\r
a=simulcast:send q;h;f\r
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
c=IN IP4 0.0.0.0\r
a=ice-ufrag:fzcl\r
a=ice-pwd:fuzzclientpasswordfuzzclient\r
a=ice-options:trickle\r
a=fingerprint:sha-256 3A:0F:9B:64:C8:1E:2D:55:71:AB:90:4C:D2:EE:13:7F:88:21:5A:C6:B9:04:6E:F1:2C:93:D7:40:5B:A8:1F:66\r
a=setup:actpass\r
a=mid:2\r
a=sctp-port:5000\r
a=max-message-size:262144\r
";

/// The server's media address in these rigs.
pub const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 7882);
/// The client's address: its STUN checks come from here.
pub const CLIENT_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 50_000);
/// Another address, never checked.
pub const STRANGER_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 40_000);

fn cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("a DTLS certificate")
    })
    .clone()
}

/// A peer as a shard creates it (before the client's offer).
pub fn new_peer() -> Peer {
    let (events, _) = tokio::sync::mpsc::channel(64);
    let started = Instant::now();
    let add = AddPeer {
        id: ParticipantKey(1),
        room: 1,
        room_name: Arc::from("fuzz"),
        info: plenary_proto::ParticipantInfo::default(),
        can_subscribe: true,
        can_publish: vec![TrackSource::Microphone, TrackSource::Camera],
        listener_mode: false,
        events,
        started,
        tracks: Vec::new(),
    };
    let candidates = [Candidate::host(SERVER_ADDR, "udp").expect("a host candidate")];
    Peer::new(ParticipantKey(1), 0, &add, &cert(), &candidates, None)
}

/// The `a=mid:` values of an SDP (at most 16), to ask the peer about as the shard does.
fn mids(text: &str) -> Vec<Mid> {
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .take(16)
        .map(Mid::from)
        .collect()
}

/// SDP at our boundary. The first byte picks the role: a client's first offer, a client's
/// re-offer, or the client's answer to our offer (with a track to send, audio or video;
/// `@mid@` in the input stands for the m-line str0m named at random for it). Whatever str0m
/// accepts as an offer yields an answer str0m reads back.
pub fn sdp(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // The signaling session refuses bigger offers and answers.
    if text.len() > plenary_proto::MAX_SDP_MESSAGE_BYTES {
        return;
    }
    let parsed = SdpOffer::from_sdp_string(text);
    let _ = SdpAnswer::from_sdp_string(text);
    let mut peer = new_peer();
    match mode % 4 {
        0 | 1 => {
            if mode % 4 == 1 {
                peer.accept_offer(REFERENCE_OFFER)
                    .expect("the reference offer is accepted");
            }
            if let Ok(answer) = peer.accept_offer(text) {
                assert!(parsed.is_ok(), "accepted an offer str0m cannot parse");
                SdpAnswer::from_sdp_string(&answer).expect("our answer parses");
                for mid in mids(text) {
                    if peer.client_sends_on(mid).is_some() {
                        let _ = plenary::media::peer::first_codec(&peer.rtc, mid);
                    }
                }
            }
        }
        m => {
            peer.accept_offer(REFERENCE_OFFER)
                .expect("the reference offer is accepted");
            let kind = if m == 2 {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            peer.add_out(OutTrack {
                track: TrackKey(7),
                track_id: "TR_7".into(),
                publisher_id: "PA_2".into(),
                kind,
                state: OutState::ToOpen,
                pt_map: None,
                ssrc: None,
            });
            let (offer, _) = peer.negotiate();
            let Some(plenary_proto::ServerMessage::Offer { tracks, .. }) = offer else {
                panic!("a new track is offered");
            };
            // str0m names new m-lines at random: the input says `@mid@` for it.
            let text = text.replace("@mid@", &tracks[0].mid);
            if let Ok(opened) = peer.accept_answer(&text) {
                assert!(opened.len() <= 1);
                let _ = peer.mappings();
            }
        }
    }
}

// ---- datagrams ---------------------------------------------------------------------------

/// A STUN binding request to the server, as a browser's ICE agent sends it: USERNAME
/// `server:client`, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, `extra` attribute bytes
/// (padded), MESSAGE-INTEGRITY keyed with `password` (the server's ICE password) and
/// FINGERPRINT.
pub fn stun_binding_request(
    server_ufrag: &str,
    client_ufrag: &str,
    password: &str,
    transaction: [u8; 12],
    extra: &[u8],
) -> Vec<u8> {
    fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut attrs = Vec::new();
    attr(
        &mut attrs,
        0x0006,
        format!("{server_ufrag}:{client_ufrag}").as_bytes(),
    );
    attr(&mut attrs, 0x0024, &0x6e7f_00ffu32.to_be_bytes());
    attr(&mut attrs, 0x802A, &0x1234_5678_9abc_def0u64.to_be_bytes());
    attr(&mut attrs, 0x0025, &[]);
    attrs.extend_from_slice(extra);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let header = |len: usize| {
        let mut h = vec![0x00, 0x01];
        h.extend_from_slice(&(len as u16).to_be_bytes());
        h.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        h.extend_from_slice(&transaction);
        h
    };
    // MESSAGE-INTEGRITY covers the message up to it, with the length counting it.
    let mut msg = header(attrs.len() + 24);
    msg.extend_from_slice(&attrs);
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        password.as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, &msg);
    attr(&mut attrs, 0x0008, tag.as_ref());
    // FINGERPRINT covers everything before it, with the length counting it.
    let mut msg = header(attrs.len() + 8);
    msg.extend_from_slice(&attrs);
    let crc = crc32(&msg) ^ 0x5354_554e;
    attr(&mut attrs, 0x8028, &crc.to_be_bytes());
    let mut msg = header(attrs.len());
    msg.extend_from_slice(&attrs);
    msg
}

/// CRC-32 (IEEE), for STUN's FINGERPRINT.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A peer that accepted the reference offer, and the shard's demux knowing it.
struct Rig {
    peer: Peer,
    demux: Demux,
    now: Instant,
}

impl Rig {
    fn new() -> Rig {
        let mut peer = new_peer();
        peer.accept_offer(REFERENCE_OFFER)
            .expect("the reference offer is accepted");
        let mut demux = Demux::default();
        demux.add_peer(peer.id, peer.ufrag.clone());
        let mut rig = Rig {
            peer,
            demux,
            now: Instant::now(),
        };
        rig.drain();
        rig
    }

    fn password(&mut self) -> String {
        self.peer.rtc.direct_api().local_ice_credentials().pass
    }

    /// One datagram, as `Shard::handle_datagram` takes it: demux, `accepts`,
    /// `handle_input`, learn the address of an accepted STUN check, then poll.
    fn receive(&mut self, source: SocketAddr, data: &[u8]) {
        let Some(id) = self.demux.lookup(source, data) else {
            return;
        };
        assert_eq!(id, self.peer.id, "the demux names only peers it was given");
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            self.now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: SERVER_ADDR,
                contents,
            },
        );
        if !self.peer.rtc.accepts(&input) {
            return;
        }
        if self.peer.rtc.handle_input(input).is_ok() && is_stun(data) {
            self.demux.learn(id, source);
        }
        self.drain();
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        let _ = self.peer.rtc.handle_input(Input::Timeout(self.now));
        self.drain();
    }

    /// Polls until the peer waits for time (bounded).
    fn drain(&mut self) {
        for _ in 0..10_000 {
            if !self.peer.rtc.is_alive() {
                return;
            }
            match self.peer.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => return,
                Ok(Output::Transmit(_)) | Ok(Output::Event(_)) => {}
            }
        }
        panic!("the peer kept producing output");
    }
}

/// Reads fuzz input as numbers and slices; past the end everything is 0 / empty.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Over `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    /// Whether anything is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }

    /// Four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }
}

/// Datagrams at a peer's media port, through the shard's demux and the peer's WebRTC
/// stack. The first byte's low bit first sends a valid STUN check with USE-CANDIDATE from
/// [`CLIENT_ADDR`], so that what follows from there reaches DTLS and SRTP; then each
/// datagram is `[source][kind][len u16][bytes]`: source the client, a stranger or an
/// address from the input; kind raw bytes, or the bytes as attributes of a STUN check
/// with a valid or a broken MESSAGE-INTEGRITY.
pub fn datagram(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut rig = Rig::new();
    let server_ufrag = rig.peer.ufrag.clone();
    let password = rig.password();
    if r.u8() & 1 == 1 {
        let check = stun_binding_request(&server_ufrag, CLIENT_UFRAG, &password, [1; 12], &[]);
        rig.receive(CLIENT_ADDR, &check);
    }
    let mut sent = 0u8;
    while !r.is_empty() && sent < 64 {
        sent += 1;
        let source = match r.u8() % 4 {
            0 | 1 => CLIENT_ADDR,
            2 => STRANGER_ADDR,
            _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(r.u32())), r.u16()),
        };
        let kind = r.u8();
        let len = usize::from(r.u16()) % 1500;
        let bytes = r.take(len);
        match kind % 4 {
            0 | 1 => rig.receive(source, bytes),
            2 => {
                let check =
                    stun_binding_request(&server_ufrag, CLIENT_UFRAG, &password, [2; 12], bytes);
                rig.receive(source, &check);
            }
            _ => {
                let mut check =
                    stun_binding_request(&server_ufrag, CLIENT_UFRAG, "wrong", [3; 12], bytes);
                let n = check.len();
                check[n - 13] ^= 0x5a; // inside MESSAGE-INTEGRITY
                rig.receive(source, &check);
            }
        }
        if kind & 0x80 != 0 {
            rig.tick(u64::from(kind & 0x3f) * 10);
        }
    }
}

// ---- RTP payloads, munger, forwarding core -----------------------------------------------

/// The codec peeks on one payload: never a panic, and a VP8 payload that tells a size is a
/// keyframe.
fn peeks(payload: &[u8]) {
    use plenary_sfu::VideoCodec::*;
    for codec in [Vp8, Vp9, H264, Av1] {
        let _ = keyframe::is_keyframe(codec, payload);
    }
    if keyframe::vp8_dimensions(payload).is_some() {
        assert!(keyframe::vp8_is_keyframe(payload));
    }
}

/// Sequence numbers stay below this in the rigs, as str0m's extended ones do in practice.
const SEQ_LIMIT: u64 = 1 << 48;

/// The munger alone: each output segment starts right after the highest sequence number
/// sent so far, and within a segment distinct inputs get distinct outputs.
fn munger_ops(r: &mut Reader<'_>) {
    let video = r.u8() & 1 == 1;
    let first_out = u64::from(r.u16());
    let mut m = Munger::new(if video { 90_000 } else { 48_000 }, video, first_out);
    let t0 = Instant::now();
    let mut at = t0;
    let mut next_seq = [u64::from(r.u32()) % SEQ_LIMIT; 3];
    let mut highest: Option<u64> = None;
    let mut segment: Vec<(u64, u64)> = Vec::new(); // (input seq, output seq) of this segment
    for _ in 0..512 {
        if r.is_empty() {
            break;
        }
        let op = r.u8();
        match op % 8 {
            0 => {
                m.pause();
                segment.clear();
            }
            1 => m.switch_to(u64::from(r.u8() % 3)),
            _ => {
                let stream = u64::from(op >> 6) % 3;
                let delta = i64::from(r.u8() as i8);
                let s = &mut next_seq[stream as usize];
                *s = s.saturating_add_signed(delta).min(SEQ_LIMIT);
                at += Duration::from_millis(u64::from(r.u8()));
                let before = m.current_stream();
                let p = InPacket {
                    stream,
                    seq: *s,
                    ts: r.u32(),
                    keyframe: op & 0x20 != 0,
                    at,
                };
                if let Munged::Forward { seq, .. } = m.process(&p) {
                    // A packet of another stream than the one forwarded (or the first after
                    // a pause) starts a segment, numbered on from the highest output so far.
                    if before != Some(p.stream) {
                        let expected = highest.map_or(first_out, |h| h + 1);
                        assert_eq!(seq, expected, "a new segment continues the numbering");
                        segment.clear();
                    }
                    if let Some(&(_, out)) = segment.iter().find(|(i, _)| *i == p.seq) {
                        assert_eq!(out, seq, "the same input maps to the same output");
                    } else {
                        assert!(
                            segment.iter().all(|(_, o)| *o != seq),
                            "distinct inputs, distinct outputs"
                        );
                        if segment.len() < 4096 {
                            segment.push((p.seq, seq));
                        }
                    }
                    highest = Some(highest.map_or(seq, |h| h.max(seq)));
                }
            }
        }
    }
}

/// A room with one publisher and two subscribers, fed packets and subscriber actions.
/// Every forward goes to a subscriber other than the publisher, on the slot it was bound to.
fn room_ops(r: &mut Reader<'_>) {
    use plenary_sfu::VideoCodec::*;
    let codec = [Vp8, Vp9, H264, Av1][usize::from(r.u8() % 4)];
    let media = if r.u8().is_multiple_of(4) {
        Media::Audio { clock_rate: 48_000 }
    } else {
        Media::Video(codec)
    };
    let publisher = ParticipantKey(1);
    let subs = [ParticipantKey(2), ParticipantKey(3)];
    let track = TrackKey(10);
    let mut room = Room::new(RoomConfig::default());
    room.handle_join(publisher, true).expect("join");
    for s in subs {
        room.handle_join(s, true).expect("join");
    }
    room.handle_publish(publisher, track, media)
        .expect("publish");
    let bind = |room: &mut Room| {
        while let Some(e) = room.poll_event() {
            if let RoomEvent::Subscribe {
                subscriber, track, ..
            } = e
            {
                room.bind(subscriber, track, subscriber.0 as u32)
                    .expect("bind");
            }
        }
    };
    bind(&mut room);
    let t0 = Instant::now();
    let mut now = t0;
    let mut seqs = [u64::from(r.u16()); 4];
    let mut out: Vec<Forward> = Vec::new();
    for _ in 0..512 {
        if r.is_empty() {
            break;
        }
        let op = r.u8();
        now += Duration::from_millis(u64::from(r.u8()));
        let sub = subs[usize::from(op >> 7)];
        match op % 8 {
            0 => {
                let _ = room.set_paused(sub, track, op & 0x10 != 0);
            }
            1 => {
                let _ = room.set_layer(now, sub, track, r.u8() % 4);
            }
            2 => {
                let _ = room.handle_keyframe_request(now, sub, track);
            }
            3 => {
                room.handle_timeout(now);
                bind(&mut room);
            }
            _ => {
                let layer = (op >> 4) % 4;
                let s = &mut seqs[usize::from(layer)];
                *s = s
                    .saturating_add_signed(i64::from(r.u8() as i8))
                    .min(SEQ_LIMIT);
                let len = usize::from(r.u8() % 64);
                let payload = r.take(len);
                peeks(payload);
                let pkt = RtpIn {
                    stream: 100 + u64::from(layer),
                    layer,
                    seq: *s,
                    ts: r.u32(),
                    payload,
                    at: now,
                };
                out.clear();
                room.handle_rtp(track, &pkt, &mut out);
                for f in &out {
                    assert_ne!(f.subscriber, publisher, "never back to the publisher");
                    assert_eq!(f.slot, f.subscriber.0 as u32, "on the bound slot");
                }
                assert!(out.len() <= subs.len());
            }
        }
        bind(&mut room);
    }
}

/// RTP payload peeks (VP8, VP9, H.264, AV1), the munger, and the forwarding core, on one
/// input: the whole input as a payload, then the first byte picks the munger or the room
/// and the rest drives it.
pub fn rtp(data: &[u8]) {
    peeks(data);
    let mut r = Reader::new(data);
    if r.u8() & 1 == 0 {
        munger_ops(&mut r);
    } else {
        room_ops(&mut r);
    }
}

// ---- grants ------------------------------------------------------------------------------

/// The API key the grant rig trusts, and its secret.
pub const GRANT_KEY: &str = "fuzz-key";
const GRANT_SECRET: &str = "fuzz-secret-that-is-at-least-32-characters-long";
/// The Ed25519 key id the grant rig trusts.
pub const SERVER_KID: &str = "fuzz-ed";
const MAX_TTL: Duration = Duration::from_secs(600);

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ed_key() -> &'static (jsonwebtoken::EncodingKey, jsonwebtoken::DecodingKey) {
    static KEY: OnceLock<(jsonwebtoken::EncodingKey, jsonwebtoken::DecodingKey)> = OnceLock::new();
    KEY.get_or_init(|| {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let der = signing.to_pkcs8_der().expect("a PKCS#8 key");
        (
            jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            jsonwebtoken::DecodingKey::from_ed_der(signing.verifying_key().as_bytes()),
        )
    })
}

/// `header.payload.signature`, signed as `alg`.
fn sign(header: &[u8], payload: &[u8], alg: jsonwebtoken::Algorithm) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let key = match alg {
        jsonwebtoken::Algorithm::EdDSA => ed_key().0.clone(),
        _ => jsonwebtoken::EncodingKey::from_secret(GRANT_SECRET.as_bytes()),
    };
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).expect("signs");
    format!("{message}.{signature}")
}

/// Claims JSON whose integer `nbf`, `exp` and `iat` count from now (so the fuzzer can reach
/// grants that are valid at the time it runs); anything else is left as it is.
fn from_now(payload: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return payload.to_vec();
    };
    let now = plenary::grant::unix_now() as i64;
    if let Some(obj) = v.as_object_mut() {
        for key in ["nbf", "exp", "iat"] {
            if let Some(rel) = obj.get(key).and_then(|x| x.as_i64()) {
                if let Some(t) = now.checked_add(rel).filter(|t| *t >= 0) {
                    obj.insert(key.into(), serde_json::Value::from(t));
                }
            }
        }
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| payload.to_vec())
}

/// Grant verification as a join does it (`KeyRing::verify_signed`, then single use). The
/// first byte picks how the rest becomes a token: as it is; as the claims of a token
/// signed with the trusted API key; as claims with times counted from now, signed with the
/// API key or the server's Ed25519 key; or as `header 0x00 claims`, signed with the API key.
/// A grant that verifies is within every rule the server states, and opens one join only.
pub fn grant(data: &[u8]) {
    let Some(token) = grant_token(data) else {
        return;
    };
    let ring = grant_ring();
    let Ok((claims, signer)) = ring.verify_signed(&token) else {
        return;
    };
    check_verified(&claims, signer);
    ring.consume_jti(&claims).expect("a new grant opens a join");
    assert_eq!(
        ring.consume_jti(&claims),
        Err(GrantError::Replayed),
        "a grant opens one join only"
    );
}

/// The token a [`grant`] input stands for.
pub fn grant_token(data: &[u8]) -> Option<String> {
    let (&mode, rest) = data.split_first()?;
    use jsonwebtoken::Algorithm::{EdDSA, HS256};
    let hs_header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{GRANT_KEY}"}}"#);
    let ed_header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{SERVER_KID}"}}"#);
    Some(match mode % 5 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => sign(hs_header.as_bytes(), rest, HS256),
        2 => sign(hs_header.as_bytes(), &from_now(rest), HS256),
        3 => sign(ed_header.as_bytes(), &from_now(rest), EdDSA),
        _ => {
            let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let (header, claims) = rest.split_at(split);
            let claims = claims.get(1..).unwrap_or_default();
            sign(header, &from_now(claims), HS256)
        }
    })
}

/// The keys the grant rig trusts: the API key and the server's Ed25519 key.
pub fn grant_ring() -> KeyRing {
    let mut keys = BTreeMap::new();
    keys.insert(GRANT_KEY.to_string(), GRANT_SECRET.to_string());
    let ring = KeyRing::new(keys, "plenary".into(), MAX_TTL);
    ring.set_server_keys(vec![(SERVER_KID.to_string(), ed_key().1.clone())]);
    ring
}

fn check_verified(claims: &Claims, signer: Signer) {
    let now = plenary::grant::unix_now();
    let leeway = 60;
    assert_eq!(claims.aud, "plenary");
    match signer {
        Signer::ApiKey => {
            assert_eq!(claims.iss, GRANT_KEY);
            assert!(claims.exp.saturating_sub(claims.nbf) <= MAX_TTL.as_secs());
        }
        Signer::Server => assert!(claims.exp.saturating_sub(claims.nbf) <= 120),
    }
    assert!(claims.exp + leeway >= now, "expired: {claims:?}");
    assert!(claims.nbf <= now + leeway, "not yet valid: {claims:?}");
    assert!(!claims.sub.is_empty() && !claims.room.is_empty() && !claims.jti.is_empty());
}
