//! One simulated attendee's WebRTC side: a webrtc-rs sans-IO `RTCPeerConnection` (ICE,
//! DTLS, SRTP, RTCP, SCTP — the real thing) plus the UDP socket it owns. The group that
//! drives it does all I/O; this module only builds the connection and does negotiation.
//!
//! As the protocol asks, every peer creates the `plenary` data channel and one `sendonly`
//! transceiver per published track (Opus microphone, VP8 camera), offers, and answers the
//! server's offers. Codecs are Opus (PT 111), RED around Opus (PT 63, `red/48000/2` with fmtp
//! `111/111`, as Chrome offers it: the server sends listeners on lossy links audio
//! redundancy, and only if their answer accepted it) and VP8 (PT 96, RTX 97) with NACK, PLI,
//! FIR.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use plenary_proto::{PublishedTrack, TrackKind, TrackSource};
use rtc::interceptor::{NackResponderBuilder, SenderReportBuilder};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_simulcast_extension_headers, configure_twcc_receiver_only,
    register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// Pacing of ICE connectivity checks.
pub const ICE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Payload type we offer for Opus.
pub const PT_OPUS: u8 = 111;
/// Payload type we offer for VP8.
pub const PT_VP8: u8 = 96;
/// Payload type we offer for RED (RFC 2198) around Opus, as Chrome does.
pub const PT_RED: u8 = 63;
/// The MIME type of RED.
pub const MIME_TYPE_RED: &str = "audio/red";

/// Why a peer could not be built or negotiated.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The socket could not be bound.
    #[error("cannot bind a UDP socket on {ip}: {source}")]
    Bind {
        /// The local address asked for.
        ip: IpAddr,
        /// Why.
        source: std::io::Error,
    },
    /// webrtc-rs refused something.
    #[error("{what}: {detail}")]
    Rtc {
        /// The step.
        what: &'static str,
        /// webrtc-rs's error.
        detail: String,
    },
}

fn rtc_err(what: &'static str) -> impl Fn(rtc::shared::error::Error) -> PeerError {
    move |e| PeerError::Rtc {
        what,
        detail: e.to_string(),
    }
}

/// A track this peer sends.
#[derive(Debug)]
pub struct TrackOut {
    /// Audio or video.
    pub kind: TrackKind,
    /// The local track id (how webrtc-rs routes our packets to the sender).
    pub track_id: String,
    /// Our SSRC.
    pub ssrc: u32,
    /// The payload type.
    pub pt: u8,
    /// Next RTP sequence number.
    pub rtp_seq: u16,
    /// With simulcast: each layer's rid and SSRC (RTX SSRCs follow them).
    pub layers: Vec<(&'static str, u32)>,
}

/// What a server's answer said about our simulcast offer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SimulcastAnswer {
    /// The answer's `a=simulcast:` value for the video section, if any (e.g. `recv q;h;f`).
    pub simulcast: Option<String>,
    /// `a=rid:` lines of the answer.
    pub rids: Vec<String>,
    /// Whether the answer kept the rtp-stream-id header extension.
    pub rid_extension: bool,
}

impl SimulcastAnswer {
    /// Whether the server accepted receiving the layers.
    pub fn accepted(&self) -> bool {
        self.simulcast
            .as_deref()
            .is_some_and(|s| s.contains("recv"))
            && self.rid_extension
    }
}

/// Reads the simulcast attributes of an answer (RFC 8853).
pub fn simulcast_in_answer(sdp: &str) -> SimulcastAnswer {
    let mut a = SimulcastAnswer {
        simulcast: None,
        rids: Vec::new(),
        rid_extension: false,
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(v) = line.strip_prefix("a=simulcast:") {
            a.simulcast = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("a=rid:") {
            a.rids.push(v.trim().to_owned());
        } else if line.starts_with("a=extmap:")
            && line.ends_with("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")
        {
            a.rid_extension = true;
        }
    }
    a
}

/// The ids of the mid and rtp-stream-id header extensions in an SDP.
fn extension_ids(sdp: &str) -> (Option<u8>, Option<u8>) {
    let id = |uri: &str| {
        sdp.lines().find_map(|l| {
            let v = l.trim_end().strip_prefix("a=extmap:")?;
            let (id, rest) = v.split_once(' ')?;
            (rest.trim() == uri).then(|| id.split('/').next()?.parse().ok())?
        })
    };
    (
        id("urn:ietf:params:rtp-hdrext:sdes:mid"),
        id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
    )
}

/// A webrtc-rs peer connection and its socket.
pub struct Peer {
    /// The connection.
    pub pc: RTCPeerConnection,
    /// Its own UDP socket (the server tells peers apart by address).
    pub socket: tokio::net::UdpSocket,
    /// The socket's address.
    pub local_addr: SocketAddr,
    /// Tracks we send: audio first, then video.
    pub tracks: Vec<TrackOut>,
    /// Keyframe requests (PLI/FIR) received so far.
    pub keyframe_requests: Arc<AtomicU64>,
    /// The crypto provider that captures the SRTP keys (fast receive path only).
    pub capture: Option<Arc<crate::keys::KeyCapture>>,
    /// With simulcast, once answered: (mid extension id, the video mid, rid extension id).
    pub simulcast_ext: Option<(u8, String, u8)>,
    video_mid: Option<String>,
}

fn codecs() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    vec![
        (
            RTCRtpCodecParameters {
                rtp_codec: opus(),
                payload_type: PT_OPUS,
            },
            RtpCodecKind::Audio,
        ),
        // After Opus (our microphones send plain Opus), as Chrome lists it.
        (
            RTCRtpCodecParameters {
                rtp_codec: red(),
                payload_type: PT_RED,
            },
            RtpCodecKind::Audio,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    rtcp_feedback: vec![
                        fb("goog-remb", ""),
                        fb("ccm", "fir"),
                        fb("nack", ""),
                        fb("nack", "pli"),
                    ],
                    ..vp8()
                },
                payload_type: PT_VP8,
            },
            RtpCodecKind::Video,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={PT_VP8}"),
                    rtcp_feedback: vec![],
                },
                payload_type: PT_VP8 + 1,
            },
            RtpCodecKind::Video,
        ),
    ]
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// RED whose blocks are all Opus (`111/111`: a primary and one repeat, the form Chrome
/// writes; the server may repeat two packets all the same, as browsers decode any number).
fn red() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_RED.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: format!("{PT_OPUS}/{PT_OPUS}"),
        rtcp_feedback: vec![],
    }
}

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

impl Peer {
    /// Binds a socket on `ip`, builds the connection with the data channel and the tracks
    /// to publish (SSRCs `ssrc_base` and `ssrc_base + 1`), and adds the host candidate.
    ///
    /// `fast`: received RTP will not be given to webrtc-rs (see `group::fast`), so the
    /// receive-side interceptors (receiver reports, NACK generator, TWCC feedback) are left
    /// out — the group sends that RTCP itself — and the SRTP keys are captured. The SDP is
    /// the same either way.
    pub fn new(
        ip: IpAddr,
        audio: bool,
        video: bool,
        ssrc_base: u32,
        name: &str,
        fast: bool,
        simulcast: bool,
    ) -> Result<Peer, PeerError> {
        let std_socket = std::net::UdpSocket::bind((ip, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| PeerError::Bind { ip, source })?;
        if fast {
            crate::group::enable_timestamps(&std_socket);
        }
        let local_addr = std_socket
            .local_addr()
            .map_err(|source| PeerError::Bind { ip, source })?;
        let socket = tokio::net::UdpSocket::from_std(std_socket)
            .map_err(|source| PeerError::Bind { ip, source })?;

        let mut media_engine = MediaEngine::default();
        for (codec, kind) in codecs() {
            media_engine
                .register_codec(codec, kind)
                .map_err(rtc_err("register codec"))?;
        }
        let keyframe_requests = Arc::new(AtomicU64::new(0));
        let tap = crate::keyframe_tap::KeyframeTap::new(Arc::clone(&keyframe_requests));
        let registry = if fast {
            // The same capabilities as the default registry (so the same SDP), with only the
            // send-side interceptors.
            let _ = configure_nack(Registry::new(), &mut media_engine);
            configure_simulcast_extension_headers(&mut media_engine)
                .map_err(rtc_err("interceptors"))?;
            let _ = configure_twcc_receiver_only(Registry::new(), &mut media_engine)
                .map_err(rtc_err("interceptors"))?;
            Registry::new()
                .with(Slot::NackResponder, NackResponderBuilder::new().build())
                .with(Slot::SenderReport, SenderReportBuilder::new().build())
                .with(Slot::from(crate::keyframe_tap::SLOT), tap)
        } else {
            register_default_interceptors(Registry::new(), &mut media_engine)
                .map_err(rtc_err("interceptors"))?
                .with(Slot::from(crate::keyframe_tap::SLOT), tap)
        };
        let capture = if fast {
            Some(crate::keys::KeyCapture::new().map_err(|e| PeerError::Rtc {
                what: "crypto provider",
                detail: e.to_string(),
            })?)
        } else {
            None
        };
        // ICE checks every 50 ms as browsers pace them (webrtc-rs defaults to 200 ms, which
        // alone adds ~400 ms to every join), for as long in all as its default (1.4 s).
        let mut settings = SettingEngineBuilder::new()
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(28));
        if let Some(c) = &capture {
            settings = settings
                .with_crypto_provider(Arc::clone(c) as Arc<dyn rtc::crypto::RTCCryptoProvider>);
        }
        let settings = settings.build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .map_err(rtc_err("build peer connection"))?;
        pc.create_data_channel("plenary", None)
            .map_err(rtc_err("data channel"))?;

        let mut tracks = Vec::new();
        for (on, kind) in [(audio, TrackKind::Audio), (video, TrackKind::Video)] {
            if !on {
                continue;
            }
            let (codec_kind, codec, pt) = match kind {
                TrackKind::Audio => (RtpCodecKind::Audio, opus(), PT_OPUS),
                TrackKind::Video => (RtpCodecKind::Video, vp8(), PT_VP8),
            };
            let ssrc = ssrc_base + tracks.len() as u32;
            let track_id = format!("{name}-{}", if pt == PT_OPUS { "mic" } else { "cam" });
            // Simulcast as Chrome offers it: rids q, h, f (a=simulcast:send q;h;f), each layer
            // with its own SSRC and an RTX SSRC.
            let layers: Vec<(&'static str, u32)> = if simulcast && kind == TrackKind::Video {
                crate::synth::LAYERS
                    .iter()
                    .enumerate()
                    .map(|(i, (rid, _, _))| (*rid, ssrc + i as u32))
                    .collect()
            } else {
                Vec::new()
            };
            let encodings = if layers.is_empty() {
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec,
                    ..Default::default()
                }]
            } else {
                // Offered lowest first, as Chrome lists them.
                layers
                    .iter()
                    .rev()
                    .map(|(rid, lssrc)| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            rid: (*rid).to_owned(),
                            ssrc: Some(*lssrc),
                            rtx: Some(RTCRtpRtxParameters { ssrc: lssrc + 3 }),
                            ..Default::default()
                        },
                        codec: codec.clone(),
                        ..Default::default()
                    })
                    .collect()
            };
            let track = MediaStreamTrack::new(
                format!("{name}-stream"),
                track_id.clone(),
                track_id.clone(),
                codec_kind,
                encodings,
            );
            pc.add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .map_err(rtc_err("add track"))?;
            tracks.push(TrackOut {
                kind,
                track_id,
                ssrc,
                pt,
                rtp_seq: (ssrc.wrapping_mul(2_654_435_761) >> 16) as u16,
                layers,
            });
        }

        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local_addr.ip().to_string(),
                port: local_addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(rtc_err("host candidate"))?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(rtc_err("host candidate"))?;
        pc.add_local_candidate(init)
            .map_err(rtc_err("add local candidate"))?;
        Ok(Peer {
            pc,
            socket,
            local_addr,
            tracks,
            keyframe_requests,
            capture,
            simulcast_ext: None,
            video_mid: None,
        })
    }

    /// Creates and applies our offer; returns its SDP and the mid → source list for the
    /// `offer` message.
    pub fn create_offer(&mut self) -> Result<(String, Vec<PublishedTrack>), PeerError> {
        let offer = self
            .pc
            .create_offer(None)
            .map_err(rtc_err("create offer"))?;
        self.pc
            .set_local_description(Instant::now(), offer.clone())
            .map_err(rtc_err("set local offer"))?;
        let sdp = self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .unwrap_or(offer.sdp);
        let mut published = Vec::new();
        let ids: Vec<_> = self.pc.get_transceivers().collect();
        let mut next = self.tracks.iter();
        for id in ids {
            let Some(t) = self.pc.rtp_transceiver(id) else {
                continue;
            };
            if t.sender().is_none() {
                continue;
            }
            let (Some(mid), Some(track)) = (t.mid().clone(), next.next()) else {
                continue;
            };
            if track.kind == TrackKind::Video {
                self.video_mid = Some(mid.clone());
            }
            published.push(PublishedTrack {
                mid,
                source: match track.kind {
                    TrackKind::Audio => TrackSource::Microphone,
                    TrackKind::Video => TrackSource::Camera,
                },
            });
        }
        Ok((sdp, published))
    }

    /// Applies the server's answer to our offer.
    pub fn apply_answer(&mut self, sdp: String) -> Result<(), PeerError> {
        if self.tracks.iter().any(|t| !t.layers.is_empty()) {
            if let ((Some(mid_id), Some(rid_id)), Some(mid)) =
                (extension_ids(&sdp), self.video_mid.clone())
            {
                self.simulcast_ext = Some((mid_id, mid, rid_id));
            }
        }
        let answer = RTCSessionDescription::answer(sdp).map_err(rtc_err("parse answer"))?;
        self.pc
            .set_remote_description(Instant::now(), answer)
            .map_err(rtc_err("set remote answer"))
    }

    /// Applies a server offer and returns our answer's SDP.
    pub fn answer_offer(&mut self, sdp: String) -> Result<String, PeerError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(rtc_err("parse offer"))?;
        self.pc
            .set_remote_description(Instant::now(), offer)
            .map_err(rtc_err("set remote offer"))?;
        let answer = self
            .pc
            .create_answer(None)
            .map_err(rtc_err("create answer"))?;
        self.pc
            .set_local_description(Instant::now(), answer.clone())
            .map_err(rtc_err("set local answer"))?;
        Ok(self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .unwrap_or(answer.sdp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_simulcast_offer_names_three_layers_with_rtx_as_chrome_does() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut p = Peer::new(ip, true, true, 0x4000_0000, "t", true, true).unwrap();
        let (sdp, tracks) = p.create_offer().unwrap();
        assert_eq!(tracks.len(), 2);
        let video = &sdp[sdp.find("m=video").expect("video section")..];
        assert!(video.contains("a=rid:q send"), "{video}");
        assert!(video.contains("a=rid:h send"), "{video}");
        assert!(video.contains("a=rid:f send"), "{video}");
        assert!(video.contains("a=simulcast:send q;h;f"), "{video}");
        assert!(video.contains("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"));
        assert!(video.contains("urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"));
        assert!(video.contains("apt=96"), "RTX offered");
        let layers = &p.tracks[1].layers;
        assert_eq!(
            layers.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec!["f", "h", "q"]
        );
        // Without simulcast: one SSRC, no rid.
        let mut plain = Peer::new(ip, false, true, 0x4000_0100, "u", true, false).unwrap();
        let (sdp, _) = plain.create_offer().unwrap();
        assert!(!sdp.contains("a=simulcast"));
        assert!(plain.tracks[0].layers.is_empty());
    }

    /// An offer as the server writes one for a listener: one speaker's audio, Opus with RED.
    fn server_audio_offer() -> String {
        let fingerprint = (0..32)
            .map(|i| format!("{:02X}", i * 7 % 256))
            .collect::<Vec<_>>()
            .join(":");
        [
            "v=0",
            "o=str0m-1 1 2 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            &format!("a=fingerprint:sha-256 {fingerprint}"),
            "a=ice-ufrag:Srvr",
            "a=ice-pwd:0123456789abcdef01234567",
            "a=ice-options:trickle",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=setup:actpass",
            "a=mid:0",
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "a=sendonly",
            "a=msid:spk spk-mic",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=rtpmap:63 red/48000/2",
            "a=fmtp:63 111/111",
            "a=ssrc:1234 cname:spk",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 18991 typ host",
            "",
        ]
        .join("\r\n")
    }

    #[tokio::test]
    async fn the_answer_to_an_audio_offer_accepts_red_as_chrome_does() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut p = Peer::new(ip, false, false, 0x4000_0200, "l", true, false).unwrap();
        let answer = p.answer_offer(server_audio_offer()).unwrap();
        let audio = &answer[answer.find("m=audio").expect("audio section")..];
        let m_line = audio.lines().next().unwrap();
        assert!(m_line.split_whitespace().any(|pt| pt == "63"), "{answer}");
        assert!(m_line.split_whitespace().any(|pt| pt == "111"), "{answer}");
        assert!(audio.contains("a=rtpmap:63 red/48000/2"), "{answer}");
        assert!(audio.contains("a=fmtp:63 111/111"), "{answer}");
        // Read back as the receive side reads the server's SDP: 63 is audio, around 111.
        let remote = crate::rtprx::RemoteSdp::parse(&server_audio_offer());
        let red = remote.pt(63).unwrap();
        assert_eq!(red.kind, TrackKind::Audio);
        assert_eq!(red.clock_hz, 48_000);
        assert_eq!(red.red_of, Some(111));
        // Our own offers list Opus before RED (the microphone sends plain Opus).
        let mut speaker = Peer::new(ip, true, false, 0x4000_0300, "s", true, false).unwrap();
        let (offer, _) = speaker.create_offer().unwrap();
        let m = offer.lines().find(|l| l.starts_with("m=audio")).unwrap();
        assert!(m.ends_with(" 111 63"), "{m}");
    }

    #[test]
    fn answers_are_read_for_simulcast() {
        let yes = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\na=rid:q recv\r\na=simulcast:recv q;h;f\r\n";
        let a = simulcast_in_answer(yes);
        assert!(a.accepted());
        assert_eq!(a.rids, vec!["q recv"]);
        assert_eq!(extension_ids(yes), (None, Some(4)));
        let no = simulcast_in_answer("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n");
        assert!(!no.accepted());
        assert!(no.simulcast.is_none());
    }
}
