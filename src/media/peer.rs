//! One participant's WebRTC connection (a str0m `Rtc` in RTP mode) and the bookkeeping
//! around it: which of its m-lines carry the tracks it publishes, which carry the tracks it
//! receives (its *slots*), and where SDP negotiation stands.
//!
//! Negotiation rules (see docs/protocol.md §2): the client offers first; after that the
//! server offers whenever the set of received tracks changes, one offer at a time. A client
//! offer that crosses ours wins: our pending offer is dropped and its changes are offered
//! again after the answer.
//!
//! M-lines are reused: when a received track goes, its m-line turns `inactive` and waits
//! for the next track of the same kind, which gets it back (`sendonly`, with a fresh SSRC).
//! So the SDP grows with the most tracks received at once, not with every track that ever
//! came and went in a long meeting.

use std::time::{Duration, Instant};

use plenary_proto::{ParticipantInfo, ServerMessage, TrackKind, TrackMapping, TrackSource};
use plenary_sfu::{Media, TrackKey, VideoCodec};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::rtp::Ssrc;
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};
use tokio::sync::mpsc;

use super::{PeerId, SessionEvent};

/// A track this peer publishes.
#[derive(Debug)]
pub struct InTrack {
    /// Its m-line.
    pub mid: Mid,
    /// Its key in the room.
    pub key: TrackKey,
    /// Its id in the protocol.
    pub id: String,
    /// Where it comes from.
    pub source: TrackSource,
    /// Codec of the last payload type seen, cached so that each packet costs no lookup.
    pub last_pt: Option<(Pt, PayloadParams, bool)>,
}

/// Bytes of headers per audio packet on the wire (IPv4, UDP, RTP with extensions, SRTP
/// tag), for what audio costs a listener's link.
const AUDIO_HEADER_BYTES: f64 = 60.0;
/// Audio packets each outgoing audio stream keeps for resends (16 × 20 ms).
const AUDIO_RESEND_PACKETS: usize = 16;

/// A publisher's payload type as the forwarding path needs it.
#[derive(Debug, Clone, Copy)]
pub struct InParams {
    /// The codec (for RED, the codec inside it).
    pub params: PayloadParams,
    /// The payload type differs from the track's last one.
    pub changed: bool,
    /// The packets are RED (RFC 2198): only their primary block is forwarded.
    pub red: bool,
}

/// Where one received track's m-line stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// Needs a new m-line in the next offer.
    ToOpen,
    /// Gets this free (inactive) m-line back in the next offer.
    ToReuse(Mid),
    /// Offered, answer pending.
    Negotiating(Mid),
    /// Negotiated: packets flow.
    Open(Mid),
    /// To be made inactive in the next offer.
    ToStop(Mid),
    /// Made inactive in an offer, answer pending; then the m-line is free.
    Stopping(Mid),
}

/// A track this peer receives (one slot).
#[derive(Debug)]
pub struct OutTrack {
    /// The remote track.
    pub track: TrackKey,
    /// Its protocol id.
    pub track_id: String,
    /// Its publisher's participant id.
    pub publisher_id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Negotiation state.
    pub state: OutState,
    /// Payload-type translation cached from the last packet: (publisher's, ours).
    pub pt_map: Option<(Pt, Pt)>,
    /// The SSRC of its outgoing stream once looked up (a map lookup per packet instead of
    /// a scan of the peer's streams by mid).
    pub ssrc: Option<Ssrc>,
}

/// One participant's connection.
pub struct Peer {
    /// Its id.
    pub id: PeerId,
    /// Its room (index in the shard's room table).
    pub room: usize,
    /// Its public record (for logs and the track mappings).
    pub info: ParticipantInfo,
    /// Sources it may publish now (set by the meeting rules).
    pub can_publish: Vec<TrackSource>,
    /// Its room is in listener mode (for the wording of a refusal).
    pub listener_mode: bool,
    /// Its session's queue.
    pub events: mpsc::Sender<SessionEvent>,
    /// The WebRTC state machine.
    pub rtc: Rtc,
    /// Our ICE username fragment for it (a new one after each ICE restart).
    pub ufrag: String,
    /// ICE restarts the client made.
    pub ice_restarts: u32,
    /// When the client asked to join.
    pub started: Instant,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// ICE went away at this time (removed after the ICE timeout).
    pub disconnected_since: Option<Instant>,
    /// The client closed the connection (DTLS close): removed shortly after, unless its
    /// session's `leave` (with the real reason) comes first.
    pub closed_at: Option<Instant>,
    /// The timeout registered in the shard's timer heap.
    pub scheduled: Option<Instant>,
    /// Queued in the shard's list of peers to poll.
    pub dirty: bool,
    /// Slots changed state and the next poll must look at negotiation.
    pub renegotiate: bool,
    /// The client's first offer has been accepted.
    pub offered: bool,
    /// Our outstanding offer.
    pub pending: Option<SdpPendingOffer>,
    /// Tracks it publishes.
    pub in_tracks: Vec<InTrack>,
    /// SSRC → (index in `in_tracks`, simulcast layer), learned from the first packet of
    /// each SSRC.
    pub ssrc_index: Vec<(Ssrc, usize, u8)>,
    /// Tracks it receives; the index is the slot bound in the room.
    pub out: Vec<Option<OutTrack>>,
    /// Inactive m-lines waiting for a track of their kind.
    pub free_mlines: Vec<(Mid, MediaKind)>,
    /// Last cumulative (NACKs received, PLIs received) per m-line, for counter deltas.
    pub egress_seen: Vec<(Mid, u64, u64)>,
    /// Last cumulative (NACKs sent, packets received) per m-line and RID.
    pub ingress_seen: Vec<((Mid, Option<str0m::media::Rid>), u64, u64)>,
    /// Last cumulative packets sent per m-line (to weigh reported loss).
    pub egress_packets: Vec<(Mid, u64)>,
    /// Reported loss this second: (loss × packets, packets, since).
    pub loss_window: (f64, u64, Instant),
    /// Its bandwidth allocator (when it subscribes and allocation is on).
    pub alloc: Option<plenary_sfu::Allocator>,
    /// Video tracks paused because its connection cannot carry them (it was told).
    pub bw_paused: Vec<TrackKey>,
    /// Audio tracks it receives (for the allocator's audio reserve).
    pub audio_in: u32,
    /// Whether it gets an allocator has been decided (from its first SDP with media).
    pub allocation_decided: bool,
    /// The estimator's last estimate (bits/s) and whether it could probe.
    pub last_estimate: u64,
    /// See `last_estimate`.
    pub can_probe: bool,
    /// A cap on its estimate from heavy receiver-reported loss.
    pub loss_cap: plenary_sfu::LossCap,
    /// How many past audio packets each audio packet repeats (RED), from its reported loss.
    pub red: plenary_sfu::RedPolicy,
    /// Its Opus and RED payload types, once its answer accepted RED.
    pub red_pts: Option<(Pt, Pt)>,
    /// Audio sent to it since the last loss report: payload bytes and packets (without
    /// repeats), for what repeats would cost.
    pub audio_sent: (u64, u64),
    /// The audio payload rate of the last report's window, bits/s.
    pub audio_payload_bps: u64,
    /// When that window started.
    pub audio_window: Instant,
    /// How the client shows each video track it receives (for its allocator).
    pub tiles: Vec<(
        TrackKey,
        plenary_sfu::Tile,
        Option<plenary_proto::TilePriority>,
    )>,
}

/// Most SSRCs remembered per peer (simulcast layers and RTX of a few tracks).
const MAX_SSRCS: usize = 32;

impl Peer {
    /// A new peer with its own ICE credentials, sharing the server's DTLS certificate.
    pub fn new(
        id: PeerId,
        room: usize,
        add: &super::shard::AddPeer,
        cert: &DtlsCert,
        candidates: &[Candidate],
        initial_estimate: Option<u64>,
    ) -> Peer {
        let ufrag = crate::secret::random_token(8);
        let creds = IceCreds {
            ufrag: ufrag.clone(),
            pass: crate::secret::random_token(24),
        };
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds)
            .set_dtls_cert(cert.clone())
            .clear_codecs()
            .enable_opus(true, true)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            // Audio is repaired by redundancy and concealment, rarely by a resend (browsers do
            // not NACK Opus): keep 320 ms of each audio stream for one, not str0m's 50
            // packets (~12 KB per stream, times every speaker every listener hears).
            .set_send_buffer_audio(AUDIO_RESEND_PACKETS)
            .enable_bwe(initial_estimate.map(str0m::bwe::Bitrate::bps))
            .build(add.started);
        for c in candidates {
            rtc.add_local_candidate(c.clone());
        }
        Peer {
            id,
            room,
            info: add.info.clone(),
            can_publish: add.can_publish.clone(),
            listener_mode: add.listener_mode,
            events: add.events.clone(),
            rtc,
            ufrag,
            ice_restarts: 0,
            started: add.started,
            connected: false,
            disconnected_since: None,
            closed_at: None,
            scheduled: None,
            dirty: false,
            renegotiate: false,
            offered: false,
            pending: None,
            in_tracks: Vec::new(),
            ssrc_index: Vec::new(),
            out: Vec::new(),
            free_mlines: Vec::new(),
            egress_seen: Vec::new(),
            ingress_seen: Vec::new(),
            egress_packets: Vec::new(),
            loss_window: (0.0, 0, add.started),
            alloc: None,
            bw_paused: Vec::new(),
            audio_in: 0,
            allocation_decided: false,
            last_estimate: initial_estimate.unwrap_or(u64::MAX),
            can_probe: false,
            loss_cap: plenary_sfu::LossCap::default(),
            red: plenary_sfu::RedPolicy::default(),
            red_pts: None,
            audio_sent: (0, 0),
            audio_payload_bps: 0,
            audio_window: Instant::now(),
            tiles: Vec::new(),
        }
    }

    /// Queues a message for the client; false when its queue is full (a client that cannot
    /// keep up, which the caller removes). A closed queue counts as sent: the session has
    /// ended and its `Leave`, with the real reason, is already on its way.
    pub fn send(&self, msg: ServerMessage) -> bool {
        !matches!(
            self.events.try_send(SessionEvent::Send(Box::new(msg))),
            Err(mpsc::error::TrySendError::Full(_))
        )
    }

    /// Accepts the client's offer and returns our answer. A pending offer of ours is dropped
    /// (its changes will be offered again).
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("unreadable SDP: {e}"))?;
        if self.pending.take().is_some() {
            self.renegotiate = true;
            // Our offer is void; its changes are offered again. (Direction changes were
            // applied to the session already, so a re-offer of those may need no change.)
            for t in self.out.iter_mut().flatten() {
                t.state = match t.state {
                    OutState::Negotiating(m) if self.rtc.media(m).is_some() => OutState::ToReuse(m),
                    OutState::Negotiating(_) => OutState::ToOpen,
                    OutState::Stopping(m) => OutState::ToStop(m),
                    s => s,
                };
            }
        }
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("the offer cannot be applied: {e}"))?;
        self.offered = true;
        Ok(super::sdp::candidates_in_every_section(
            &answer.to_sdp_string(),
        ))
    }

    /// After an offer: when it restarted ICE (new client credentials), str0m answered with
    /// new credentials of ours too. Records the new ufrag and returns the old one, so the
    /// shard can route STUN by the new one.
    pub fn take_ice_restart(&mut self) -> Option<String> {
        let ufrag = self.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag == self.ufrag {
            return None;
        }
        self.ice_restarts += 1;
        Some(std::mem::replace(&mut self.ufrag, ufrag))
    }

    /// Whether `mid` is an m-line the client sends on.
    pub fn client_sends_on(&self, mid: Mid) -> Option<MediaKind> {
        let media = self.rtc.media(mid)?;
        // Directions are ours: the client sending means we receive.
        matches!(media.direction(), Direction::RecvOnly | Direction::SendRecv).then(|| media.kind())
    }

    /// Builds our next offer, if anything changed and none is outstanding. Slots whose
    /// change needed no negotiation after all (see the glare rule) open at once and are
    /// returned for binding.
    pub fn negotiate(&mut self) -> (Option<ServerMessage>, Vec<(u32, TrackKey)>) {
        if !self.offered || self.pending.is_some() || !self.renegotiate {
            return (None, Vec::new());
        }
        self.renegotiate = false;
        let needed = self.out.iter().flatten().any(|t| {
            matches!(
                t.state,
                OutState::ToOpen | OutState::ToReuse(_) | OutState::ToStop(_)
            )
        });
        if !needed {
            return (None, Vec::new());
        }
        // Fresh SSRCs for reused m-lines, so receivers see a new stream.
        for t in self.out.iter_mut().flatten() {
            if let OutState::ToReuse(mid) = t.state {
                t.ssrc = None;
                let mut api = self.rtc.direct_api();
                let ssrc = api.new_ssrc();
                // Only streams that have a repair (RTX) SSRC get a new one.
                let rtx = api
                    .stream_tx_by_mid(mid, None)
                    .and_then(|s| s.rtx())
                    .map(|_| api.new_ssrc());
                api.reset_stream_tx(mid, None, ssrc, rtx);
            }
        }
        let mut api = self.rtc.sdp_api();
        for t in self.out.iter_mut().flatten() {
            match t.state {
                OutState::ToOpen => {
                    let mid = api.add_media(
                        t.kind,
                        Direction::SendOnly,
                        Some(t.publisher_id.clone()),
                        Some(t.track_id.clone()),
                        None,
                    );
                    t.state = OutState::Negotiating(mid);
                }
                OutState::ToReuse(mid) => {
                    api.set_direction(mid, Direction::SendOnly);
                    t.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(mid) => {
                    api.set_direction(mid, Direction::Inactive);
                    t.state = OutState::Stopping(mid);
                }
                _ => {}
            }
        }
        match api.apply() {
            Some((offer, pending)) => {
                self.pending = Some(pending);
                let msg = ServerMessage::Offer {
                    sdp: super::sdp::candidates_in_every_section(&offer.to_sdp_string()),
                    tracks: self.mappings(),
                };
                (Some(msg), Vec::new())
            }
            None => (None, self.settle()),
        }
    }

    /// Every sending m-line and the track it carries.
    pub fn mappings(&self) -> Vec<TrackMapping> {
        self.out
            .iter()
            .flatten()
            .filter_map(|t| match t.state {
                OutState::Negotiating(mid) | OutState::Open(mid) => Some(TrackMapping {
                    mid: mid.to_string(),
                    track_id: t.track_id.clone(),
                    participant_id: t.publisher_id.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Applies the client's answer to our offer. Returns the slots that just opened.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<Vec<(u32, TrackKey)>, String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("unreadable SDP: {e}"))?;
        let Some(pending) = self.pending.take() else {
            return Err("there is no offer outstanding to answer".into());
        };
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("the answer cannot be applied: {e}"))?;
        // Changes queued while the offer was out go in the next one.
        self.renegotiate = true;
        self.refresh_red_pts();
        Ok(self.settle())
    }

    /// Negotiated slots open; stopped m-lines become free. Returns the opened slots.
    fn settle(&mut self) -> Vec<(u32, TrackKey)> {
        let mut opened = Vec::new();
        for (slot, entry) in self.out.iter_mut().enumerate() {
            let Some(t) = entry else { continue };
            match t.state {
                OutState::Negotiating(mid) => {
                    t.state = OutState::Open(mid);
                    opened.push((slot as u32, t.track));
                }
                OutState::Stopping(mid) => {
                    self.free_mlines.push((mid, t.kind));
                    *entry = None;
                }
                _ => {}
            }
        }
        opened
    }

    /// Adds a slot for a remote track, on a free m-line of its kind if there is one;
    /// negotiated with the next offer.
    pub fn add_out(&mut self, mut out: OutTrack) {
        if let Some(i) = self.free_mlines.iter().position(|(_, k)| *k == out.kind) {
            let (mid, _) = self.free_mlines.swap_remove(i);
            out.state = OutState::ToReuse(mid);
        }
        match self.out.iter_mut().find(|s| s.is_none()) {
            Some(free) => *free = Some(out),
            None => self.out.push(Some(out)),
        }
        self.renegotiate = true;
    }

    /// Removes the slot carrying `track` (stopping its m-line if it had one).
    pub fn remove_out(&mut self, track: TrackKey) {
        self.renegotiate = true;
        for entry in self.out.iter_mut() {
            let Some(t) = entry else { continue };
            if t.track != track {
                continue;
            }
            match t.state {
                OutState::ToOpen => *entry = None,
                OutState::ToReuse(mid) => {
                    self.free_mlines.push((mid, t.kind));
                    *entry = None;
                }
                OutState::Negotiating(mid) | OutState::Open(mid) => t.state = OutState::ToStop(mid),
                OutState::ToStop(_) | OutState::Stopping(_) => {}
            }
        }
    }

    /// The slot whose m-line is `mid`.
    pub fn slot_by_mid(&self, mid: Mid) -> Option<&OutTrack> {
        self.out
            .iter()
            .flatten()
            .find(|t| matches!(t.state, OutState::Open(m) | OutState::Negotiating(m) if m == mid))
    }

    /// The published track an incoming SSRC belongs to, and the simulcast layer it carries
    /// (cached after the first packet).
    pub fn in_track_for(&mut self, ssrc: Ssrc) -> Option<(usize, u8)> {
        if let Some((_, i, layer)) = self.ssrc_index.iter().find(|(s, _, _)| *s == ssrc) {
            return Some((*i, *layer));
        }
        let mut api = self.rtc.direct_api();
        let rx = api.stream_rx(&ssrc)?;
        let mid = rx.mid();
        let rid = rx.rid();
        let index = self.in_tracks.iter().position(|t| t.mid == mid)?;
        let layer = match rid {
            Some(rid) => {
                let offered = match self.rtc.media(mid).map(|m| m.rids_rx()) {
                    Some(str0m::media::Rids::Specific(list)) => list.clone(),
                    _ => Vec::new(),
                };
                simulcast_layer(&rid, &offered)
            }
            None => 0,
        };
        if self.ssrc_index.len() >= MAX_SSRCS {
            self.ssrc_index.clear();
        }
        self.ssrc_index.push((ssrc, index, layer));
        Some((index, layer))
    }

    /// The codec parameters of payload type `pt` on published track `index`, and whether
    /// they changed since the last packet (the codec is then told to the room).
    pub fn in_params(&mut self, index: usize, pt: Pt) -> Option<InParams> {
        let t = self.in_tracks.get(index)?;
        if let Some((cached, params, red)) = t.last_pt {
            if cached == pt {
                return Some(InParams {
                    params,
                    changed: false,
                    red,
                });
            }
        }
        let all = self.rtc.codec_config().params();
        let (params, red) = match all.iter().find(|p| p.pt() == pt) {
            Some(p) => (*p, false),
            // RED (RFC 2198) around the codec whose RED payload type this is.
            None => (*all.iter().find(|p| p.red() == Some(pt))?, true),
        };
        self.in_tracks[index].last_pt = Some((pt, params, red));
        Some(InParams {
            params,
            changed: true,
            red,
        })
    }

    /// Repeats for audio packets to this peer (RED): `(distance, its Opus payload type,
    /// its RED payload type)`, when its link is lossy and its answer accepted RED.
    pub fn red_choice(&self) -> Option<(usize, Pt, Pt)> {
        let distance = self.red.distance();
        let (opus, red) = self.red_pts?;
        (distance > 0).then_some((distance, opus, red))
    }

    /// A second's loss report from its receiver: updates its audio redundancy, within what
    /// its link affords (its estimate, capped by loss; unbounded without an allocator).
    pub fn handle_loss_report(&mut self, now: Instant, loss: f64) {
        let before = self.red.distance();
        self.red.handle_loss(now, loss);
        let (estimate, cap) = match self.alloc {
            Some(_) => (self.last_estimate, self.loss_cap.cap(now)),
            None => (u64::MAX, u64::MAX),
        };
        let secs = now
            .saturating_duration_since(self.audio_window)
            .as_secs_f64()
            .max(0.1);
        let (bytes, packets) = std::mem::take(&mut self.audio_sent);
        self.audio_window = now;
        self.audio_payload_bps = (bytes as f64 * 8.0 / secs) as u64;
        let overhead_bps = (packets as f64 * AUDIO_HEADER_BYTES * 8.0 / secs) as u64;
        self.red
            .afford(now, estimate, cap, self.audio_payload_bps, overhead_bps);
        self.refresh_red_pts();
        if self.red.distance() != before {
            tracing::debug!(
                peer = self.id.0,
                repeats = self.red.distance(),
                loss = format!("{:.1} %", loss * 100.0),
                estimate_bps = estimate,
                cap_bps = cap,
                audio_payload_bps = self.audio_payload_bps,
                red_agreed = self.red_pts.is_some(),
                "audio redundancy"
            );
        }
    }

    /// What its audio needs, repeats included, reserved before any video: its audio
    /// subscriptions, but no more than the `audible` tracks of its room (muted and
    /// deselected microphones send it nothing), and at least one while it has any (a
    /// microphone may open at any moment).
    pub fn audio_reserve(&self, audible: usize) -> u64 {
        let repeats = match self.red_pts {
            Some(_) => self.red.distance() as u64,
            None => 0,
        };
        let tracks = u64::from(self.audio_in)
            .min(audible as u64)
            .max(u64::from(self.audio_in.min(1)));
        tracks * plenary_sfu::allocator::AUDIO_TRACK_RESERVE + repeats * self.audio_payload_bps
    }

    /// Reads its Opus and RED payload types again: the first answer with audio settles them
    /// (RED stays only if the answer accepted it).
    fn refresh_red_pts(&mut self) {
        self.red_pts = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::Opus)
            .and_then(|p| Some((p.pt(), p.red()?)));
    }

    /// Our payload type for the publisher's `(pt, params)` on `slot`.
    pub fn out_pt(&mut self, slot: u32, in_pt: Pt, params: PayloadParams) -> Option<Pt> {
        let t = self.out.get(slot as usize)?.as_ref()?;
        if let Some((i, o)) = t.pt_map {
            if i == in_pt {
                return Some(o);
            }
        }
        let ours = self.rtc.codec_config().match_params(params)?.pt();
        if let Some(Some(t)) = self.out.get_mut(slot as usize) {
            t.pt_map = Some((in_pt, ours));
        }
        Some(ours)
    }
}

/// The simulcast layer (0 = lowest) a RID names: `q`/`h`/`f` (quarter, half, full, as
/// browsers and Plenary's client name them), `l`/`m` likewise, else its position among the
/// RIDs the offer listed (low to high).
pub fn simulcast_layer(rid: &str, offered: &[str0m::media::Rid]) -> u8 {
    match rid {
        "q" | "l" | "0" | "low" => 0,
        "h" | "m" | "1" | "mid" => 1,
        "f" | "2" | "high" | "full" => 2,
        _ => offered
            .iter()
            .position(|r| &**r == rid)
            .map(|p| p.min(plenary_sfu::MAX_LAYERS - 1) as u8)
            .unwrap_or(0),
    }
}

/// The forwarding core's view of a track's media.
pub fn core_media(kind: TrackKind, codec: Option<Codec>) -> Media {
    match kind {
        TrackKind::Audio => Media::Audio { clock_rate: 48_000 },
        TrackKind::Video => Media::Video(match codec {
            Some(Codec::H264) => VideoCodec::H264,
            Some(Codec::Vp9) => VideoCodec::Vp9,
            Some(Codec::Av1) => VideoCodec::Av1,
            _ => VideoCodec::Vp8,
        }),
    }
}

/// The codec a video m-line will most likely carry: the first video codec we accepted.
pub fn first_codec(rtc: &Rtc, mid: Mid) -> Option<Codec> {
    let media = rtc.media(mid)?;
    let pts = media.remote_pts();
    let config = rtc.codec_config();
    pts.iter().find_map(|pt| {
        config
            .params()
            .iter()
            .find(|p| p.pt() == *pt)
            .map(|p| p.spec().codec)
            .filter(|c| !matches!(c, Codec::Rtx | Codec::Null))
    })
}
