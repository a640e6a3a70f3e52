//! The fast receive path of one peer: after the real ICE + DTLS-SRTP handshake (done by
//! webrtc-rs), received RTP never enters webrtc-rs. Each packet is accounted from its clear
//! header ([`crate::rtprx`]); a sample is decrypted in place and its payload checked
//! ([`crate::keys`]): the first packets of each SSRC, every 16th packet, every RTX packet,
//! and the first packet of every frame large enough to be a keyframe. Every RED packet (audio
//! redundancy, sent only to listeners on lossy links: ≤ 50 a second per speaker) is decrypted
//! too, so that the losses its redundant blocks repair are counted ([`crate::red`]); the
//! stamp a sample of it is checked by is the primary block's. The RTCP a browser sends
//! for what it receives — receiver reports, TWCC feedback, NACKs, PLIs — is built here and
//! handed to webrtc-rs, which protects it with SRTCP and sends it. Received RTCP still goes to
//! webrtc-rs (publishers answer NACK/PLI through it); sender reports are also read here, for
//! the LSR/DLSR of our receiver reports.
//!
//! Nothing here allocates per packet, except the sampled decryption of a profile other than
//! AES-128-GCM and the handling of received RTCP.

use plenary_proto::TrackKind;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};
use rtc::statistics::StatsSelector;

use crate::config::{Participant, Role};
use rtc::crypto::RTCCryptoProvider;

use crate::keys::{profile_by_stats_name, KeyCapture, SrtcpRx, SrtpRx};
use crate::rtprx::{Arrival, RemoteSdp, RtpView, SsrcRx};
use crate::synth::{self, Stamp};

/// Packets of each SSRC always decrypted at its start.
pub const SAMPLE_FIRST: u64 = 4;
/// Then one packet in this many (by extended sequence number).
pub const SAMPLE_EVERY: u64 = 16;
/// A frame of at least this many times the mean frame's packets (and at least
/// [`KEYFRAME_MIN_PACKETS`]) is checked as a keyframe.
pub const KEYFRAME_FACTOR: f64 = 2.5;
/// See [`KEYFRAME_FACTOR`].
pub const KEYFRAME_MIN_PACKETS: u64 = 3;
/// Receiver reports: every second (browsers: 1 s for video).
pub const RR_EVERY_US: u64 = 1_000_000;
/// TWCC feedback: every 100 ms (browsers: 50–250 ms, by rate).
pub const TWCC_EVERY_US: u64 = 100_000;
/// At most one PLI per stream in this time.
pub const PLI_EVERY_US: u64 = 1_000_000;
/// Largest datagram kept for a later keyframe check.
const FRAME_COPY: usize = 1500;
/// Layer changes whose times an SSRC keeps (beyond, they are only counted).
pub const MAX_LAYER_CHANGES: usize = 16;

/// What the samples showed, and what was counted.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RxChecks {
    /// RTP packets accounted from their header only (all of them, sampled or not).
    pub counted: u64,
    /// Packets decrypted (SRTP tag checked).
    pub decrypted: u64,
    /// ... whose payload carried a valid stamp of a stream of this room.
    pub verified: u64,
    /// Decryption failures (tag did not verify).
    pub auth_failed: u64,
    /// Decrypted, but no stamp in the payload.
    pub no_stamp: u64,
    /// A stamp of a stream not published in this room, or of the wrong kind.
    pub foreign: u64,
    /// First packets of large frames decrypted that were VP8 keyframes.
    pub keyframes_verified: u64,
    /// Large frames whose first packet was not a keyframe.
    pub large_delta_frames: u64,
    /// RED packets decrypted (all of them: audio to listeners on lossy links).
    pub red_packets: u64,
    /// RED payloads that did not parse (a failure).
    pub red_malformed: u64,
    /// RTX packets received.
    pub rtx: u64,
    /// Packets before the keys were known (not accounted).
    pub before_keys: u64,
    /// Packets that are not RTP version 2, or of an unknown SSRC and payload type.
    pub unparsable: u64,
    /// Peers whose SRTP profile is decrypted in place (AES-GCM or AES-128-CM-HMAC-SHA1).
    pub gcm_peers: u64,
    /// Peers with another profile (sampled decryption through webrtc-rs's context).
    pub other_profile_peers: u64,
    /// RTCP sent: receiver reports, TWCC feedback, NACK packets, PLIs.
    pub rr_sent: u64,
    /// TWCC feedback packets sent.
    pub twcc_sent: u64,
    /// NACK packets sent.
    pub nack_packets_sent: u64,
    /// PLIs sent.
    pub plis_sent: u64,
}

impl RxChecks {
    /// Adds `o`'s counts.
    pub fn merge(&mut self, o: &RxChecks) {
        self.counted += o.counted;
        self.decrypted += o.decrypted;
        self.verified += o.verified;
        self.auth_failed += o.auth_failed;
        self.no_stamp += o.no_stamp;
        self.foreign += o.foreign;
        self.keyframes_verified += o.keyframes_verified;
        self.large_delta_frames += o.large_delta_frames;
        self.red_packets += o.red_packets;
        self.red_malformed += o.red_malformed;
        self.rtx += o.rtx;
        self.before_keys += o.before_keys;
        self.unparsable += o.unparsable;
        self.rr_sent += o.rr_sent;
        self.gcm_peers += o.gcm_peers;
        self.other_profile_peers += o.other_profile_peers;
        self.twcc_sent += o.twcc_sent;
        self.nack_packets_sent += o.nack_packets_sent;
        self.plis_sent += o.plis_sent;
    }

    /// Failed checks of any kind.
    pub fn failures(&self) -> u64 {
        self.auth_failed + self.no_stamp + self.foreign + self.red_malformed
    }
}

/// One received SSRC and what the samples said about it.
pub(super) struct RxSsrc {
    pub(super) rx: SsrcRx,
    /// The stamp's stream id of the last sample.
    pub(super) stream: Option<u32>,
    /// Every stream id seen on this SSRC (a few: simulcast layers switch).
    pub(super) streams_seen: [u32; 4],
    pub(super) streams_seen_len: usize,
    /// When the simulcast layer of the samples changed (µs since the run's epoch; the first
    /// [`MAX_LAYER_CHANGES`] changes, and how many in all).
    pub(super) layer_changes_us: [u64; MAX_LAYER_CHANGES],
    pub(super) layer_changes: u32,
    /// Audio: expected, lost and RED-repaired packets when the steady state began (zeros
    /// for a stream that began after it), for the loss after RED in the steady state.
    pub(super) at_settle: Option<[u64; 3]>,
    packets: u64,
    frame_copy: Option<Box<[u8; FRAME_COPY]>>,
    copy_len: usize,
    copy_ext: u64,
    last_ts: Option<u32>,
    last_pli_us: Option<u64>,
    given_up_at_pli: u64,
    /// ROC offset found by the first decryption.
    roc_shift: i64,
}

impl RxSsrc {
    fn new(rx: SsrcRx) -> RxSsrc {
        let video = rx.kind == TrackKind::Video;
        RxSsrc {
            rx,
            stream: None,
            streams_seen: [0; 4],
            streams_seen_len: 0,
            layer_changes_us: [0; MAX_LAYER_CHANGES],
            layer_changes: 0,
            at_settle: None,
            packets: 0,
            frame_copy: video.then(|| Box::new([0u8; FRAME_COPY])),
            copy_len: 0,
            copy_ext: 0,
            last_ts: None,
            last_pli_us: None,
            given_up_at_pli: 0,
            roc_shift: 0,
        }
    }

    fn saw_stream(&mut self, id: u32, at_us: u64) {
        if let Some(prev) = self.stream {
            if synth::stream_layer(prev).1 != synth::stream_layer(id).1 {
                if let Some(t) = self.layer_changes_us.get_mut(self.layer_changes as usize) {
                    *t = at_us;
                }
                self.layer_changes = self.layer_changes.saturating_add(1);
            }
        }
        self.stream = Some(id);
        if !self.streams_seen[..self.streams_seen_len].contains(&id) && self.streams_seen_len < 4 {
            self.streams_seen[self.streams_seen_len] = id;
            self.streams_seen_len += 1;
        }
    }

    /// Layer changes at or after `from_us` (all of them past the first
    /// [`MAX_LAYER_CHANGES`]' times are counted as after).
    pub(super) fn layer_changes_since(&self, from_us: u64) -> u32 {
        let timed = (self.layer_changes as usize).min(MAX_LAYER_CHANGES);
        let after = self.layer_changes_us[..timed]
            .iter()
            .filter(|t| **t >= from_us)
            .count() as u32;
        after + self.layer_changes - timed as u32
    }

    /// Audio counters now: expected, lost on the wire, repaired by RED.
    fn audio_counts(&self) -> [u64; 3] {
        let r = &self.rx;
        [r.seq.expected(), r.seq.lost(), r.repaired()]
    }

    /// The steady state began at `settled_us` (now or a moment ago): remembers where the
    /// audio counters stood (once).
    pub(super) fn mark_settled(&mut self, settled_us: u64) {
        if self.rx.kind != TrackKind::Audio || self.at_settle.is_some() {
            return;
        }
        self.at_settle = Some(if self.rx.first_at_us >= settled_us {
            [0; 3]
        } else {
            self.audio_counts()
        });
    }

    /// Expected, lost and RED-repaired audio packets since the steady state began (zeros
    /// if it never did).
    pub(super) fn audio_since_settle(&self) -> [u64; 3] {
        let Some(m) = self.at_settle else {
            return [0; 3];
        };
        let now = self.audio_counts();
        [
            now[0].saturating_sub(m[0]),
            now[1].saturating_sub(m[1]),
            now[2].saturating_sub(m[2]),
        ]
    }

    /// Stream ids seen.
    pub(super) fn streams(&self) -> &[u32] {
        &self.streams_seen[..self.streams_seen_len]
    }

    fn roc(&self, ext: u64) -> u32 {
        ((ext >> 16) as i64 - 1 + self.roc_shift).max(0) as u32
    }
}

struct Keys {
    srtp: SrtpRx,
    srtcp: SrtcpRx,
}

/// What a decrypted packet is checked for.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// A sample: its stamp.
    Plain,
    /// A RED packet: the losses it repairs and, if a sample, the stamp of its primary.
    Red { sample: bool },
}

/// A decrypted payload without its padding (RFC 3550: the last byte counts it).
fn without_padding(payload: &[u8], padding: bool) -> Option<&[u8]> {
    if !padding {
        return Some(payload);
    }
    let n = usize::from(*payload.last()?);
    (n >= 1 && n <= payload.len()).then(|| &payload[..payload.len() - n])
}

/// A decrypted RED payload of the packet `ext` of stream `rx`: each redundant block that
/// repeats one of the few packets before repairs it if it was lost. Returns the primary
/// block, or `None` if the payload is not RED.
fn on_red<'a>(rx: &mut SsrcRx, payload: &'a [u8], ext: u64) -> Option<&'a [u8]> {
    let r = crate::red::parse(payload)?;
    let primary = r.primary(payload);
    rx.red.red_packets += 1;
    let primary_seq = synth::parse_stamp(primary).map(|st| (st.stream, st.seq));
    for b in r.blocks() {
        if b.pt != r.primary_pt {
            continue;
        }
        let block_seq = payload
            .get(b.range())
            .and_then(synth::parse_stamp)
            .map(|st| (st.stream, st.seq));
        let stamps = match (primary_seq, block_seq) {
            (Some((ps, p)), Some((bs, b))) if ps == bs => Some((p, b)),
            // Blocks of another source than the primary's: not a repeat of this stream.
            (Some(_), Some(_)) => continue,
            _ => None,
        };
        if let Some(k) = crate::red::block_distance(b.ts_offset, stamps) {
            rx.red_block(ext, k);
        }
    }
    Some(primary)
}

/// What the caller learns from one RTP packet.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The first packet of a new SSRC of this kind.
    pub(super) first_of: Option<TrackKind>,
    /// A verified stamp (for end-to-end latency).
    pub(super) stamp: Option<Stamp>,
}

/// The fast receive state of one peer.
pub(super) struct FastRx {
    keys: Option<Keys>,
    pub(super) key_error: Option<String>,
    pub(super) sdp: RemoteSdp,
    pub(super) ssrcs: Vec<RxSsrc>,
    rtx_ext: Vec<(u32, crate::rtprx::Extender)>,
    twcc: crate::rtprx::TwccRecorder,
    next_rr_us: u64,
    next_twcc_us: u64,
    sender_ssrc: u32,
    pub(super) checks: RxChecks,
    scratch: Vec<u8>,
    retry: Vec<u8>,
    nack_buf: [u16; 64],
}

/// Whether `stamp` is a stream published in `room` (stream ids are participant index × 2, +1
/// for video).
pub(super) fn stream_in_room(plan: &[Participant], room: usize, stamp: &Stamp) -> bool {
    let (stream, _layer) = synth::stream_layer(stamp.stream);
    let Some(p) = plan.get((stream / 2) as usize) else {
        return false;
    };
    let (audio, video) = match p.role {
        Role::Publisher { audio, video } => (audio, video),
        Role::Subscriber => return false,
    };
    p.room == room
        && match (stamp.kind, stream % 2) {
            (TrackKind::Audio, 0) => audio,
            (TrackKind::Video, 1) => video,
            _ => false,
        }
}

/// Whether a VP8 payload starts a keyframe (S bit, partition 0, P bit of the frame tag clear).
pub fn vp8_keyframe_start(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return false;
    }
    let mut i = 1;
    if first & 0x80 != 0 {
        let Some(&x) = p.get(1) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            i += if p.get(i).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    p.get(i).is_some_and(|t| t & 0x01 == 0)
}

impl FastRx {
    /// A peer whose own RTCP goes out as `sender_ssrc`; `phase_us` staggers its reports.
    pub(super) fn new(sender_ssrc: u32, phase_us: u64) -> FastRx {
        FastRx {
            keys: None,
            key_error: None,
            sdp: RemoteSdp::default(),
            ssrcs: Vec::with_capacity(8),
            rtx_ext: Vec::new(),
            twcc: crate::rtprx::TwccRecorder::default(),
            next_rr_us: phase_us % RR_EVERY_US,
            next_twcc_us: phase_us % TWCC_EVERY_US,
            sender_ssrc,
            checks: RxChecks::default(),
            scratch: Vec::new(),
            retry: Vec::new(),
            nack_buf: [0; 64],
        }
    }

    /// Derives the SRTP keys once the handshake has completed; returns whether they exist.
    pub(super) fn ensure_keys(&mut self, pc: &mut RTCPeerConnection, capture: &KeyCapture) -> bool {
        if self.keys.is_some() {
            return true;
        }
        if self.key_error.is_some() {
            return false;
        }
        let Some(exporter) = capture.exporter() else {
            return false;
        };
        let stats = pc.get_stats(std::time::Instant::now(), StatsSelector::None);
        let Some(t) = stats.transport() else {
            return false;
        };
        if t.srtp_cipher.is_empty() {
            return false;
        }
        let is_client = match t.dtls_role {
            RTCDtlsRole::Client => true,
            RTCDtlsRole::Server => false,
            _ => return false,
        };
        let crypto: &dyn RTCCryptoProvider = capture;
        let made = profile_by_stats_name(&t.srtp_cipher)
            .and_then(|profile| exporter.keys(crypto.crypto(), profile, is_client))
            .and_then(|keys| {
                Ok(Keys {
                    srtp: SrtpRx::new(crypto.crypto(), &keys)?,
                    srtcp: SrtcpRx::new(crypto.crypto(), &keys)?,
                })
            });
        match made {
            Ok(k) => {
                if t.srtp_cipher.starts_with("SRTP_AEAD_AES")
                    || t.srtp_cipher.starts_with("SRTP_AES128_CM")
                {
                    self.checks.gcm_peers += 1;
                } else {
                    self.checks.other_profile_peers += 1;
                }
                self.keys = Some(k);
                true
            }
            Err(e) => {
                self.key_error = Some(e.to_string());
                false
            }
        }
    }

    /// A received SRTCP packet: reads sender reports (the packet itself goes to webrtc-rs).
    pub(super) fn on_rtcp(&mut self, datagram: &[u8], at_us: u64) {
        let Some(keys) = self.keys.as_mut() else {
            return;
        };
        let Ok(plain) = keys.srtcp.decrypt(datagram) else {
            return;
        };
        let mut buf = plain.freeze();
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut buf) else {
            return;
        };
        for p in packets {
            if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                let lsr = (sr.ntp_time >> 16) as u32;
                if let Some(s) = self.ssrcs.iter_mut().find(|s| s.rx.ssrc == sr.ssrc) {
                    s.rx.last_sr = Some((lsr, at_us));
                }
            }
        }
    }

    /// A received SRTP packet (decrypted in place when sampled).
    pub(super) fn on_rtp(
        &mut self,
        datagram: &mut [u8],
        at_us: u64,
        plan: &[Participant],
        room: usize,
    ) -> Seen {
        let mut seen = Seen::default();
        if self.keys.is_none() {
            self.checks.before_keys += 1;
            return seen;
        }
        let Some(h) = RtpView::parse(datagram, self.sdp.twcc_id) else {
            self.checks.unparsable += 1;
            return seen;
        };
        if let Some(tw) = h.twcc {
            self.twcc.record(tw, at_us);
        }
        let pt = self.sdp.pt(h.pt).copied();
        if let Some(apt) = pt.and_then(|p| p.rtx_of) {
            self.on_rtx(datagram, &h, apt, at_us, plan, room, &mut seen);
            return seen;
        }
        self.checks.counted += 1;
        let idx = match self.ssrcs.iter().position(|s| s.rx.ssrc == h.ssrc) {
            Some(i) => i,
            None => {
                let (kind, clock) = match pt {
                    Some(p) => (p.kind, p.clock_hz),
                    None => {
                        self.checks.unparsable += 1;
                        return seen;
                    }
                };
                self.ssrcs
                    .push(RxSsrc::new(SsrcRx::new(h.ssrc, kind, clock, at_us)));
                seen.first_of = Some(kind);
                self.ssrcs.len() - 1
            }
        };
        let tag = self.keys.as_ref().map_or(16, |k| k.srtp.tag_len());
        let payload_len = datagram.len().saturating_sub(h.header_len + tag);
        let s = &mut self.ssrcs[idx];
        let video = s.rx.kind == TrackKind::Video;
        let frame_start = video && s.last_ts != Some(h.ts);
        s.last_ts = Some(h.ts);
        let (ext, arrival, _recovered, frame) = s.rx.on_packet(&h, payload_len, at_us, video);
        if arrival == Arrival::Duplicate {
            return seen;
        }
        s.packets += 1;
        if frame_start && !h.padding {
            if let Some(copy) = s.frame_copy.as_mut() {
                if datagram.len() <= FRAME_COPY {
                    copy[..datagram.len()].copy_from_slice(datagram);
                    s.copy_len = datagram.len();
                    s.copy_ext = ext;
                }
            }
        }
        // A large frame just completed: is its first packet a keyframe start?
        if let Some((start, packets)) = frame {
            let mean = s.rx.frames.mean_packets();
            let large = packets >= KEYFRAME_MIN_PACKETS && packets as f64 >= KEYFRAME_FACTOR * mean;
            if large && s.copy_ext == start && s.copy_len > 0 {
                self.check_keyframe(idx, at_us, plan, room);
            }
        }
        let s = &mut self.ssrcs[idx];
        let sample = s.packets <= SAMPLE_FIRST || ext % SAMPLE_EVERY == 0;
        let red = !video && pt.is_some_and(|p| p.red_of.is_some());
        if red {
            let check = Check::Red { sample };
            seen.stamp = self.decrypt_and_check(idx, datagram, &h, ext, at_us, plan, room, check);
        } else if sample && !h.padding {
            seen.stamp =
                self.decrypt_and_check(idx, datagram, &h, ext, at_us, plan, room, Check::Plain);
        }
        seen
    }

    /// Decrypts one packet in place and checks its stamp; for RED, also counts the losses
    /// its redundant blocks repair, and checks the primary's stamp (if a sample).
    #[allow(clippy::too_many_arguments)]
    fn decrypt_and_check(
        &mut self,
        idx: usize,
        datagram: &mut [u8],
        h: &RtpView,
        ext: u64,
        at_us: u64,
        plan: &[Participant],
        room: usize,
        check: Check,
    ) -> Option<Stamp> {
        let keys = self.keys.as_mut()?;
        let s = &mut self.ssrcs[idx];
        self.checks.decrypted += 1;
        let roc = s.roc(ext);
        let payload = if s.packets <= 1 {
            // The first packet finds the rollover counter (the server's stream may have
            // wrapped before we saw it); each try decrypts a fresh copy.
            let mut found = None;
            for t in 0..3i64 {
                self.retry.clear();
                self.retry.extend_from_slice(datagram);
                let r = (i64::from(roc) + t) as u32;
                if keys
                    .srtp
                    .decrypt(&mut self.retry, h.header_len, r, &mut self.scratch)
                    .is_ok()
                {
                    found = Some(t);
                    break;
                }
            }
            match found {
                Some(t) => {
                    s.roc_shift += t;
                    let r = (i64::from(roc) + t) as u32;
                    keys.srtp
                        .decrypt(datagram, h.header_len, r, &mut self.scratch)
                        .ok()
                }
                None => None,
            }
        } else {
            keys.srtp
                .decrypt(datagram, h.header_len, roc, &mut self.scratch)
                .ok()
        };
        let Some(payload) = payload else {
            self.checks.auth_failed += 1;
            return None;
        };
        let payload = match check {
            Check::Plain => payload,
            Check::Red { sample } => {
                let primary =
                    without_padding(payload, h.padding).and_then(|p| on_red(&mut s.rx, p, ext));
                let Some(primary) = primary else {
                    self.checks.red_malformed += 1;
                    return None;
                };
                self.checks.red_packets += 1;
                if !sample {
                    return None;
                }
                primary
            }
        };
        let Some(stamp) = synth::parse_stamp(payload) else {
            self.checks.no_stamp += 1;
            return None;
        };
        if stamp.kind != s.rx.kind || !stream_in_room(plan, room, &stamp) {
            self.checks.foreign += 1;
            return None;
        }
        s.saw_stream(stamp.stream, at_us);
        self.checks.verified += 1;
        Some(stamp)
    }

    fn check_keyframe(&mut self, idx: usize, at_us: u64, plan: &[Participant], room: usize) {
        let Some(keys) = self.keys.as_mut() else {
            return;
        };
        let s = &mut self.ssrcs[idx];
        let Some(copy) = s.frame_copy.as_mut() else {
            return;
        };
        let len = s.copy_len;
        s.copy_len = 0;
        let Some(h) = RtpView::parse(&copy[..len], self.sdp.twcc_id) else {
            return;
        };
        self.checks.decrypted += 1;
        let roc = ((s.copy_ext >> 16) as i64 - 1 + s.roc_shift).max(0) as u32;
        let Ok(payload) = keys
            .srtp
            .decrypt(&mut copy[..len], h.header_len, roc, &mut self.scratch)
        else {
            self.checks.auth_failed += 1;
            return;
        };
        if !vp8_keyframe_start(payload) {
            self.checks.large_delta_frames += 1;
            return;
        }
        match synth::parse_stamp(payload) {
            Some(st) if stream_in_room(plan, room, &st) => {
                self.checks.keyframes_verified += 1;
                self.checks.verified += 1;
                s.saw_stream(st.stream, at_us);
            }
            Some(_) => self.checks.foreign += 1,
            None => self.checks.no_stamp += 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_rtx(
        &mut self,
        datagram: &mut [u8],
        h: &RtpView,
        _apt: u8,
        at_us: u64,
        plan: &[Participant],
        room: usize,
        seen: &mut Seen,
    ) {
        self.checks.rtx += 1;
        if h.padding && datagram.len() <= h.header_len + 16 + 255 {
            // Padding-only probe on the RTX stream.
            return;
        }
        let ext = match self.rtx_ext.iter_mut().find(|(s, _)| *s == h.ssrc) {
            Some((_, e)) => e.extend(h.seq),
            None => {
                let mut e = crate::rtprx::Extender::default();
                let x = e.extend(h.seq);
                self.rtx_ext.push((h.ssrc, e));
                x
            }
        };
        let Some(keys) = self.keys.as_mut() else {
            return;
        };
        self.checks.decrypted += 1;
        let roc = ((ext >> 16) - 1) as u32;
        let Ok(payload) = keys
            .srtp
            .decrypt(datagram, h.header_len, roc, &mut self.scratch)
        else {
            self.checks.auth_failed += 1;
            return;
        };
        if payload.len() < 2 {
            return;
        }
        let osn = u16::from_be_bytes([payload[0], payload[1]]);
        let stamp = synth::parse_stamp(&payload[2..]);
        // The media SSRC: from the SDP's FID group, else the SSRC whose stream the stamp names.
        let media = self
            .sdp
            .rtx_ssrcs
            .iter()
            .find(|(rtx, _)| *rtx == h.ssrc)
            .map(|(_, m)| *m);
        let idx = match media {
            Some(m) => self.ssrcs.iter().position(|s| s.rx.ssrc == m),
            None => {
                stamp.and_then(|st| self.ssrcs.iter().position(|s| s.stream == Some(st.stream)))
            }
        };
        let Some(idx) = idx else {
            return;
        };
        let payload_len = payload.len() - 2;
        if let Some(st) = stamp {
            if stream_in_room(plan, room, &st) {
                self.checks.verified += 1;
                seen.stamp = Some(st);
            } else {
                self.checks.foreign += 1;
            }
        } else {
            self.checks.no_stamp += 1;
        }
        let original = RtpView { seq: osn, ..*h };
        self.checks.counted += 1;
        let s = &mut self.ssrcs[idx];
        s.rx.on_packet(&original, payload_len, at_us, true);
    }

    /// The RTCP due at `now_us`, appended to `out`.
    pub(super) fn feedback(&mut self, now_us: u64, out: &mut Vec<Box<dyn rtc::rtcp::Packet>>) {
        if self.keys.is_none() {
            return;
        }
        for s in &mut self.ssrcs {
            if s.rx.kind != TrackKind::Video {
                continue;
            }
            let n = s.rx.nack.due(now_us, &mut self.nack_buf);
            if n > 0 {
                out.push(Box::new(TransportLayerNack {
                    sender_ssrc: self.sender_ssrc,
                    media_ssrc: s.rx.ssrc,
                    nacks: nack_pairs_from_sequence_numbers(&self.nack_buf[..n]),
                }));
                self.checks.nack_packets_sent += 1;
            }
            // A packet given up on means a frame that cannot be decoded: ask for a keyframe.
            let quiet = s
                .last_pli_us
                .is_none_or(|t| now_us.saturating_sub(t) >= PLI_EVERY_US);
            if s.rx.nack.given_up > s.given_up_at_pli && quiet {
                out.push(Box::new(PictureLossIndication {
                    sender_ssrc: self.sender_ssrc,
                    media_ssrc: s.rx.ssrc,
                }));
                s.given_up_at_pli = s.rx.nack.given_up;
                s.last_pli_us = Some(now_us);
                self.checks.plis_sent += 1;
            }
        }
        if now_us >= self.next_twcc_us {
            self.next_twcc_us = now_us + TWCC_EVERY_US;
            let media = self.ssrcs.first().map_or(0, |s| s.rx.ssrc);
            if let Some(fb) = self.twcc.feedback(self.sender_ssrc, media) {
                out.push(Box::new(fb));
                self.checks.twcc_sent += 1;
            }
        }
        if now_us >= self.next_rr_us && !self.ssrcs.is_empty() {
            self.next_rr_us = now_us + RR_EVERY_US;
            // One RR carries at most 31 report blocks.
            for chunk in self.ssrcs.chunks_mut(31) {
                out.push(Box::new(ReceiverReport {
                    ssrc: self.sender_ssrc,
                    reports: chunk
                        .iter_mut()
                        .map(|s| s.rx.report_block(now_us))
                        .collect(),
                    profile_extensions: bytes::Bytes::new(),
                }));
                self.checks.rr_sent += 1;
            }
        }
    }

    /// NACKed sequence numbers, packets recovered after a NACK, PLIs sent.
    pub(super) fn totals(&self) -> (u64, u64, u64) {
        let nacked = self.ssrcs.iter().map(|s| s.rx.nack.nacked).sum();
        let recovered = self.ssrcs.iter().map(|s| s.rx.nack.recovered).sum();
        (nacked, recovered, self.checks.plis_sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{plan, RunConfig};

    #[test]
    fn stamps_are_checked_against_the_room_and_kind() {
        let mut c = RunConfig::new("http://127.0.0.1:1", "k", "s");
        c.rooms = 2;
        c.publishers = 1;
        c.audio_publishers = 1;
        c.subscribers = 1;
        let p = plan(&c);
        // pid 0: room 0 camera+mic; pid 2: room 0 mic only; pid 4: room 0 listener.
        let st = |stream, kind| Stamp {
            kind,
            stream,
            seq: 0,
            sent_us: 0,
        };
        assert!(stream_in_room(&p, 0, &st(0, TrackKind::Audio)));
        assert!(stream_in_room(&p, 0, &st(1, TrackKind::Video)));
        assert!(
            !stream_in_room(&p, 1, &st(1, TrackKind::Video)),
            "other room"
        );
        assert!(
            !stream_in_room(&p, 0, &st(1, TrackKind::Audio)),
            "wrong kind"
        );
        assert!(stream_in_room(&p, 0, &st(4, TrackKind::Audio)));
        assert!(
            !stream_in_room(&p, 0, &st(5, TrackKind::Video)),
            "no camera"
        );
        assert!(
            !stream_in_room(&p, 0, &st(8, TrackKind::Audio)),
            "a listener"
        );
        assert!(!stream_in_room(&p, 0, &st(999, TrackKind::Audio)));
    }

    /// A RED payload around stamped Opus: blocks for the packets `back` before `seq`.
    fn red_payload(seq: u32, back: &[u32]) -> Vec<u8> {
        let mut rng = crate::synth::Rng::new(7);
        let opus = |n: u32, rng: &mut crate::synth::Rng| {
            let mut b = Vec::new();
            let st = Stamp {
                kind: TrackKind::Audio,
                stream: 4,
                seq: n,
                sent_us: 0,
            };
            crate::synth::write_audio(&mut b, &st, 60, rng);
            b
        };
        let blocks: Vec<(u32, Vec<u8>)> = back
            .iter()
            .map(|k| (k * synth::AUDIO_TS_STEP, opus(seq - k, &mut rng)))
            .collect();
        let mut out = Vec::new();
        for (offset, data) in &blocks {
            out.push(0x80 | 111);
            out.extend_from_slice(&((offset << 10) | data.len() as u32).to_be_bytes()[1..]);
        }
        out.push(111);
        for (_, data) in &blocks {
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&opus(seq, &mut rng));
        out
    }

    #[test]
    fn red_packets_repair_losses_and_the_steady_state_is_counted_apart() {
        let mut s = RxSsrc::new(SsrcRx::new(9, TrackKind::Audio, 48_000, 0));
        let packet = |s: &mut RxSsrc, seq: u16| {
            let mut p = vec![0x80, 63];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
            p.extend_from_slice(&9u32.to_be_bytes());
            let h = RtpView::parse(&p, None).unwrap();
            s.rx.on_packet(&h, 80, u64::from(seq) * 20_000, false).0
        };
        for seq in 100..110 {
            packet(&mut s, seq);
        }
        // 110 and 111 lost before the steady state; 112 repeats both.
        let ext = packet(&mut s, 112);
        let payload = red_payload(1112, &[2, 1]);
        let primary = on_red(&mut s.rx, &payload, ext).unwrap();
        assert_eq!(synth::parse_stamp(primary).unwrap().seq, 1112);
        assert_eq!(s.rx.red.repaired, 2);
        assert_eq!(s.rx.red.red_packets, 1);
        s.mark_settled(1);
        s.mark_settled(2_000_000_000);
        assert_eq!(s.at_settle, Some([13, 2, 2]), "marked once");
        // In the steady state: 114 lost and repaired by 115; 117 lost for good.
        packet(&mut s, 113);
        let ext = packet(&mut s, 115);
        on_red(&mut s.rx, &red_payload(1115, &[2, 1]), ext).unwrap();
        packet(&mut s, 116);
        let ext = packet(&mut s, 118);
        // A block whose stamp (two packets back: 116) does not fit its offset (one frame):
        // ignored, so it cannot pass for 117.
        let mut wrong = red_payload(1118, &[2]);
        assert_eq!(wrong[1], 0x1e, "offset 1920");
        wrong[1] = 0x0f;
        on_red(&mut s.rx, &wrong, ext).unwrap();
        assert_eq!(s.rx.red.repaired, 3, "117 was not in any block");
        assert_eq!(s.audio_since_settle(), [6, 2, 1]);
        assert!(on_red(&mut s.rx, &[0xff, 0xff], ext).is_none());
        // A stream first seen after the steady state began counts from its start.
        let mut late = RxSsrc::new(SsrcRx::new(10, TrackKind::Audio, 48_000, 5_000_000));
        late.mark_settled(1_000_000);
        assert_eq!(late.at_settle, Some([0; 3]));
    }

    #[test]
    fn vp8_keyframe_starts_are_recognised() {
        let profile = crate::synth::VideoProfile::by_name("sd").unwrap();
        let mut src = crate::synth::VideoSource::new(profile, 1);
        let mut rng = crate::synth::Rng::new(1);
        let stamp = Stamp {
            kind: TrackKind::Video,
            stream: 1,
            seq: 0,
            sent_us: 0,
        };
        let key = src.next_frame();
        let delta = src.next_frame();
        let mut buf = Vec::new();
        crate::synth::write_video(&mut buf, &key, 0, &profile, &stamp, &mut rng);
        assert!(vp8_keyframe_start(&buf));
        buf.clear();
        crate::synth::write_video(&mut buf, &key, 1, &profile, &stamp, &mut rng);
        assert!(!vp8_keyframe_start(&buf), "not the first packet");
        buf.clear();
        crate::synth::write_video(&mut buf, &delta, 0, &profile, &stamp, &mut rng);
        assert!(!vp8_keyframe_start(&buf), "a delta frame");
        assert!(!vp8_keyframe_start(&[]));
    }
}
