//! A group: one task that drives many peers. It owns their peer connections and sockets,
//! waits on all sockets, its command channel and one timer at once, feeds datagrams and
//! timeouts to webrtc-rs, sends synthetic media on time, measures what arrives, and at the
//! end hands back one [`PeerOutcome`] per participant.
//!
//! Hot path: datagrams are read into one growing arena (`BytesMut`), payloads are written
//! into another, and the per-stream maths is in place, so the group itself allocates nothing
//! per packet (webrtc-rs does, inside SRTP and its interceptors).
//!
//! - [`outcome`]: what a group measures and hands back.
//! - `media`: the simulated microphone and camera of a publishing peer (with the pacer).
//! - `io`: reading sockets and draining peer connections.

mod batch;
mod fast;
mod io;
mod media;
pub mod outcome;

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use plenary_proto::{ClientMessage, ServerMessage, TrackKind};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;
use rtc::statistics::StatsSelector;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Participant, Role};
use crate::peer::Peer;
use crate::stats::StreamRx;
use crate::synth::{AudioSource, Rng, VideoProfile, VideoSource};

pub(crate) use batch::enable_timestamps;
pub use fast::{vp8_keyframe_start, RxChecks};
use io::{drain, read_inputs};
pub use media::{pacing_interval, PACING_FACTOR};
use media::{send_media, AudioTx, Sent, VideoTx};
pub use outcome::{GroupResult, Latencies, Live, PeerOutcome, StreamOutcome};

/// A message to a group.
#[derive(Debug)]
pub enum GroupCmd {
    /// The participant's join was welcomed: build its peer and offer.
    Welcome {
        /// Participant.
        pid: usize,
        /// When its join started.
        t0: Instant,
        /// Messages to send on its WebSocket.
        to_ws: mpsc::UnboundedSender<ClientMessage>,
        /// The welcome's STUN/TURN servers (with `--turn`, media goes through its TURN).
        ice_servers: Vec<plenary_proto::IceServer>,
    },
    /// A server message for the participant.
    Signal {
        /// Participant.
        pid: usize,
        /// The message (boxed: some are large).
        msg: Box<ServerMessage>,
    },
    /// The participant's signaling failed or closed.
    Failed {
        /// Participant.
        pid: usize,
        /// When its join started.
        t0: Instant,
        /// Why.
        reason: String,
    },
    /// The participant left (churn): close its connection, free its socket, keep its outcome.
    Leave {
        /// Participant.
        pid: usize,
    },
    /// The ramp is over: latency from now on is the steady phase's.
    Steady,
    /// Stop sending media now.
    StopMedia,
    /// Report and end.
    Finish(oneshot::Sender<GroupResult>),
}

/// What every group shares.
#[derive(Debug)]
pub struct GroupShared {
    /// Everyone in the run.
    pub plan: Vec<Participant>,
    /// Time zero of stamps.
    pub epoch: Instant,
    /// The same instant as µs since the Unix epoch (to place kernel receive timestamps).
    pub epoch_unix_us: u64,
    /// Local IP for media sockets.
    pub local_ip: IpAddr,
    /// Camera profile.
    pub video: VideoProfile,
    /// Pace video packets (else each frame goes out in one burst).
    pub pacing: bool,
    /// Join deadline.
    pub join_timeout: Duration,
    /// Give every received packet to webrtc-rs (decrypt all) instead of the fast path.
    pub full_decrypt: bool,
    /// `(i, n)`: this process simulates participants with `pid % n == i`.
    pub shard: (usize, usize),
    /// Cameras publish three simulcast layers.
    pub simulcast: bool,
    /// Network classes of the attendees' downlinks (`None`: as the machine's network is).
    pub network: Option<crate::netem::NetMix>,
    /// Speakers take turns of this length, one talking at a time (`None`: each talks on its
    /// own pattern).
    pub turn: Option<Duration>,
    /// Every attendee's media goes through the TURN server its welcome names.
    pub relay: bool,
    /// Progress counters.
    pub live: Live,
}

struct RxStream {
    rx: StreamRx,
    ssrc: u32,
    receiver: Option<RTCRtpReceiverId>,
    lost_at_pli: u64,
    last_pli: Option<Instant>,
}

struct Slot {
    pid: usize,
    peer: Peer,
    to_ws: mpsc::UnboundedSender<ClientMessage>,
    t0: Instant,
    connected: Option<Instant>,
    first_audio: Option<Instant>,
    first_video: Option<Instant>,
    dropped: Option<String>,
    /// Its connection was closed after it dropped out; only its measurements remain.
    closed: bool,
    offer_outstanding: bool,
    streams: Vec<RxStream>,
    receivers: Vec<(String, RTCRtpReceiverId)>,
    audio: Option<AudioTx>,
    /// One camera stream, or one per simulcast layer.
    video: Vec<VideoTx>,
    /// The fast receive path (`None` with `--full-decrypt` or `--turn`).
    fast: Option<Box<fast::FastRx>>,
    /// With `--turn`: the relay everything goes through.
    tunnel: Option<Box<crate::turn::TurnTunnel>>,
    /// Payloads the relay unwrapped this turn (reused).
    relayed: Vec<(std::net::SocketAddr, BytesMut)>,
    /// With simulcast: what the server's answer said about it.
    simulcast_answer: Option<crate::peer::SimulcastAnswer>,
    /// Network class (index into the mix) and its downlink shaper (`None` for a good link).
    class: Option<usize>,
    shaper: Option<Box<crate::netem::Shaper>>,
    /// The server's media address, once a datagram came from it.
    remote: Option<std::net::SocketAddr>,
    /// Adaptation: bytes, received and lost at the last one-second window, the window's
    /// start, and when the received rate first fit the cap with loss settled.
    window: (u64, u64, u64, Option<Instant>),
    adapted: Option<Duration>,
    rng: Rng,
    timeout: Option<Instant>,
    dirty: bool,
    unknown_packets: u64,
    plis_sent: u64,
    keyframe_requests: u64,
    sent: Sent,
    datagrams_in: u64,
    errors: Vec<String>,
    // Progress deltas already added to `Live`.
    live_rx_bytes: u64,
    live_rx_packets: u64,
    live_lost: u64,
    live_tx_bytes: u64,
    live_datagrams: u64,
}

/// Shortest wait the group accepts from a peer connection's timer.
const MIN_TIMER: Duration = Duration::from_millis(1);
/// How often a group checks join deadlines, sends PLIs and updates the progress counters.
const TICK: Duration = Duration::from_millis(250);
/// How long the fast path lets datagrams gather after a busy turn.
const COALESCE: Duration = Duration::from_millis(3);
/// How often the fast path's RTCP (NACK, PLI, TWCC, RR) is considered.
const FEEDBACK_TICK: Duration = Duration::from_millis(20);

/// One task's worth of peers.
pub struct Group {
    index: usize,
    groups: usize,
    shared: Arc<GroupShared>,
    cmd_rx: mpsc::Receiver<GroupCmd>,
    slots: Vec<Option<Slot>>,
    done: Vec<PeerOutcome>,
    rx_arena: BytesMut,
    tx_arena: BytesMut,
    latency: Latencies,
    sending: bool,
    cmds: Vec<GroupCmd>,
    longest_turn: Duration,
    rtcp_out: Vec<Box<dyn rtc::rtcp::Packet>>,
    media_stopped_us: Option<u64>,
    steady_at: Option<Instant>,
    release_buf: Vec<u8>,
    batch: batch::Batch,
    /// Datagrams read so far (to tell a busy turn from an idle one).
    read: u64,
}

/// A participant's first SSRC: audio, then video (or three simulcast layers and their RTX).
fn ssrc_base(pid: usize) -> u32 {
    0x4000_0000 | (pid as u32 * 8)
}

/// One-second windows after the ramp: the first in which the attendee's received rate fits
/// its class's cap and its loss is no more than the class's random loss + 1 point marks the
/// time it adapted.
#[allow(clippy::too_many_arguments)]
fn adapt_window(
    slot: &mut Slot,
    bytes: u64,
    packets: u64,
    lost: u64,
    now: Instant,
    steady: Instant,
    class: usize,
    shared: &GroupShared,
) {
    let Some(c) = shared.network.as_ref().map(|m| &m.classes[class]) else {
        return;
    };
    let (b0, p0, l0, start) = slot.window;
    let Some(start) = start else {
        slot.window = (bytes, packets, lost, Some(now.max(steady)));
        return;
    };
    let secs = now.saturating_duration_since(start).as_secs_f64();
    if secs < 1.0 {
        return;
    }
    let kbps = bytes.saturating_sub(b0) as f64 * 8.0 / secs / 1000.0;
    let (got, lost_w) = (packets.saturating_sub(p0), lost.saturating_sub(l0));
    let loss_pct = crate::stats::percent(lost_w, got + lost_w);
    let fits = c.cap_bps.is_none_or(|cap| kbps * 1000.0 <= cap as f64);
    if fits && got > 0 && loss_pct <= c.loss * 100.0 + 1.0 {
        slot.adapted = Some(now.saturating_duration_since(steady));
    }
    slot.window = (bytes, packets, lost, Some(now));
}

impl Group {
    /// Group `index` of `groups`: it drives participants `index`, `index + groups`, ...
    pub fn new(
        index: usize,
        groups: usize,
        shared: Arc<GroupShared>,
        cmd_rx: mpsc::Receiver<GroupCmd>,
    ) -> Group {
        let n = shared
            .plan
            .len()
            .div_ceil(shared.shard.1.max(1))
            .div_ceil(groups)
            + 1;
        Group {
            index,
            groups,
            shared,
            cmd_rx,
            slots: (0..n).map(|_| None).collect(),
            done: Vec::new(),
            rx_arena: BytesMut::with_capacity(64 * 1024),
            tx_arena: BytesMut::with_capacity(64 * 1024),
            latency: Latencies::default(),
            sending: true,
            cmds: Vec::with_capacity(64),
            longest_turn: Duration::ZERO,
            rtcp_out: Vec::with_capacity(16),
            media_stopped_us: None,
            steady_at: None,
            release_buf: Vec::with_capacity(2048),
            batch: batch::Batch::new(),
            read: 0,
        }
    }

    /// Runs until [`GroupCmd::Finish`] (or every sender is gone).
    pub async fn run(mut self) {
        let mut next_tick = Instant::now() + TICK;
        let mut next_feedback = Instant::now() + FEEDBACK_TICK;
        let mut read_before = 0u64;
        loop {
            let deadline = self.next_deadline().min(next_tick).min(next_feedback);
            // The fast path reads in batches with kernel timestamps: after a busy turn, let
            // datagrams gather for a moment instead of waking for each one.
            if !self.shared.full_decrypt && self.read > read_before {
                let gather = (Instant::now() + COALESCE).min(deadline);
                tokio::time::sleep_until(gather.into()).await;
            }
            read_before = self.read;
            self.wait(deadline).await;
            let turn = Instant::now();
            let mut cmds = std::mem::take(&mut self.cmds);
            for cmd in cmds.drain(..) {
                match cmd {
                    GroupCmd::Finish(reply) => {
                        let result = self.finish();
                        let _ = reply.send(result);
                        return;
                    }
                    cmd => self.on_cmd(cmd),
                }
            }
            self.cmds = cmds;
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            if now >= next_feedback {
                self.feedback(now);
                next_feedback = now + FEEDBACK_TICK;
            }
            self.service(now);
            self.longest_turn = self.longest_turn.max(turn.elapsed());
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut d = Instant::now() + Duration::from_secs(1);
        for s in self.slots.iter().flatten().filter(|s| !s.closed) {
            if let Some(t) = s.timeout {
                d = d.min(t);
            }
            if let Some(due) = s.shaper.as_ref().and_then(|sh| sh.next_due()) {
                d = d.min(self.shared.epoch + Duration::from_micros(due));
            }
            // The same condition as `service` uses to send, or a stale due time would spin.
            if self.sending && s.connected.is_some() && s.dropped.is_none() {
                if let Some(a) = &s.audio {
                    d = d.min(a.due);
                }
                for v in &s.video {
                    d = d.min(v.due);
                    if !v.queue.is_empty() {
                        d = d.min(v.next_send);
                    }
                }
            }
        }
        d
    }

    /// Waits for a datagram, a command or the deadline; feeds datagrams to their peers.
    async fn wait(&mut self, deadline: Instant) {
        if deadline <= Instant::now() {
            // Give the runtime a turn (this also renews the task's cooperative budget, without
            // which channels and sockets would report nothing forever), then take what is ready
            // without sleeping.
            tokio::task::yield_now().await;
            self.poll_inputs_once().await;
            return;
        }
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::pin!(sleep);
        let Group {
            cmd_rx,
            slots,
            rx_arena,
            cmds,
            shared,
            latency,
            batch,
            read,
            ..
        } = self;
        poll_fn(|cx| {
            let mut progressed = read_inputs(
                cx, cmd_rx, slots, rx_arena, cmds, shared, latency, batch, read,
            );
            if sleep.as_mut().poll(cx).is_ready() {
                progressed = true;
            }
            if progressed {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    async fn poll_inputs_once(&mut self) {
        let Group {
            cmd_rx,
            slots,
            rx_arena,
            cmds,
            shared,
            latency,
            batch,
            read,
            ..
        } = self;
        poll_fn(|cx| {
            read_inputs(
                cx, cmd_rx, slots, rx_arena, cmds, shared, latency, batch, read,
            );
            Poll::Ready(())
        })
        .await;
    }

    fn slot_index(&self, pid: usize) -> Option<usize> {
        let (i, n) = self.shared.shard;
        if pid % n.max(1) != i {
            return None;
        }
        let local = pid / n.max(1);
        (local % self.groups == self.index).then_some(local / self.groups)
    }

    fn on_cmd(&mut self, cmd: GroupCmd) {
        match cmd {
            GroupCmd::Welcome {
                pid,
                t0,
                to_ws,
                ice_servers,
            } => self.on_welcome(pid, t0, to_ws, &ice_servers),
            GroupCmd::Signal { pid, msg } => self.on_signal(pid, *msg),
            GroupCmd::Failed { pid, t0, reason } => {
                let Some(i) = self.slot_index(pid) else {
                    return;
                };
                match self.slots[i].as_mut() {
                    Some(slot) if slot.connected.is_some() => {
                        slot.dropped.get_or_insert(reason);
                    }
                    Some(_) => self.fail(i, reason),
                    None => {
                        let _ = t0;
                        if !self.done.iter().any(|o| o.pid == pid) {
                            self.shared.live.failed.fetch_add(1, Ordering::Relaxed);
                            self.done.push(PeerOutcome::failed(pid, reason));
                        }
                    }
                }
            }
            GroupCmd::Leave { pid } => {
                if let Some(i) = self.slot_index(pid) {
                    if let Some(slot) = self.slots[i].take() {
                        let now = Instant::now();
                        let outcome = self.outcome(slot, now);
                        self.done.push(outcome);
                    }
                }
            }
            GroupCmd::Steady => {
                self.latency.steady = true;
                self.steady_at = Some(Instant::now());
            }
            GroupCmd::StopMedia => {
                self.sending = false;
                self.media_stopped_us = Some(self.shared.epoch.elapsed().as_micros() as u64);
            }
            GroupCmd::Finish(_) => {}
        }
    }

    fn on_welcome(
        &mut self,
        pid: usize,
        t0: Instant,
        to_ws: mpsc::UnboundedSender<ClientMessage>,
        ice_servers: &[plenary_proto::IceServer],
    ) {
        let Some(i) = self.slot_index(pid) else {
            return;
        };
        let participant = &self.shared.plan[pid];
        let (audio, video) = match participant.role {
            Role::Publisher { audio, video } => (audio, video),
            Role::Subscriber => (false, false),
        };
        let name = participant.identity.clone();
        let built = Peer::new(
            self.shared.local_ip,
            audio,
            video,
            ssrc_base(pid),
            &name,
            !self.shared.full_decrypt && !self.shared.relay,
            self.shared.simulcast,
        )
        .and_then(|mut peer| peer.create_offer().map(|offer| (peer, offer)));
        let (peer, (sdp, tracks)) = match built {
            Ok(x) => x,
            Err(e) => {
                self.shared.live.failed.fetch_add(1, Ordering::Relaxed);
                self.done
                    .push(PeerOutcome::failed(pid, format!("peer: {e}")));
                return;
            }
        };
        // --turn: a relay on the welcome's TURN server, allocated now (the offer's ICE
        // checks are retried until it and its permission are there).
        let tunnel = if self.shared.relay {
            let made = crate::turn::turn_server(ice_servers).and_then(|(server, user, pass)| {
                crate::turn::TurnTunnel::new(server, peer.local_addr, user, pass, Instant::now())
            });
            match made {
                Ok(mut t) => {
                    io::flush_tunnel(&peer.socket, &mut t);
                    Some(Box::new(t))
                }
                Err(e) => {
                    self.shared.live.failed.fetch_add(1, Ordering::Relaxed);
                    self.done.push(PeerOutcome::failed(pid, e.to_string()));
                    return;
                }
            }
        } else {
            None
        };
        let _ = to_ws.send(ClientMessage::Offer { sdp, tracks });
        let stream = participant.audio_stream();
        let now = Instant::now();
        let track_of = |kind: TrackKind| peer.tracks.iter().position(|t| t.kind == kind);
        let class = self.shared.network.as_ref().map(|m| m.class_of(pid));
        let shaper = class.and_then(|k| {
            let c = &self.shared.network.as_ref()?.classes[k];
            (!c.is_good()).then(|| {
                Box::new(crate::netem::Shaper::new(
                    c.clone(),
                    (pid as u64) ^ 0x6e65_7465,
                ))
            })
        });
        let turn = self.shared.turn.map(|turn| {
            let speaker = |p: &Participant| {
                p.room == participant.room && matches!(p.role, Role::Publisher { audio: true, .. })
            };
            let n = self.shared.plan.iter().filter(|p| speaker(p)).count();
            let k = self.shared.plan[..pid]
                .iter()
                .filter(|p| speaker(p))
                .count();
            (k, n, turn.as_millis() as u64)
        });
        let audio_tx = track_of(TrackKind::Audio).map(|track| AudioTx {
            turn,
            src: AudioSource::new(pid as u64),
            stream,
            seq: 0,
            due: now,
            track,
        });
        let mut video_tx = Vec::new();
        if let Some(track) = track_of(TrackKind::Video) {
            let layers = peer.tracks[track].layers.clone();
            let n = layers.len().max(1);
            for l in 0..n {
                let profile = if layers.is_empty() {
                    self.shared.video
                } else {
                    self.shared.video.layer(l)
                };
                video_tx.push(VideoTx {
                    src: VideoSource::new(profile, pid as u64 * 3 + l as u64),
                    layer: layers.get(l).map(|(rid, ssrc)| media::Layer {
                        rid,
                        ssrc: *ssrc,
                        rtp_seq: (ssrc.wrapping_mul(2_654_435_761) >> 16) as u16,
                    }),
                    stream: crate::synth::layer_stream(stream + 1, l),
                    seq: 0,
                    due: now,
                    track,
                    queue: VecDeque::with_capacity(256),
                    next_send: now,
                    pace_bps: self
                        .shared
                        .pacing
                        .then(|| f64::from(profile.bitrate) * PACING_FACTOR),
                });
            }
        }
        self.slots[i] = Some(Slot {
            pid,
            peer,
            to_ws,
            t0,
            connected: None,
            first_audio: None,
            first_video: None,
            dropped: None,
            closed: false,
            offer_outstanding: true,
            streams: Vec::new(),
            receivers: Vec::new(),
            audio: audio_tx,
            video: video_tx,
            tunnel,
            relayed: Vec::new(),
            fast: (!self.shared.full_decrypt && !self.shared.relay).then(|| {
                // Listeners' RTCP goes out as an SSRC of their own, like a browser's.
                Box::new(fast::FastRx::new(
                    ssrc_base(pid),
                    (pid as u64).wrapping_mul(7_919_000),
                ))
            }),
            simulcast_answer: None,
            class,
            shaper,
            remote: None,
            window: (0, 0, 0, None),
            adapted: None,
            rng: Rng::new(pid as u64 + 17),
            timeout: Some(now),
            dirty: true,
            unknown_packets: 0,
            plis_sent: 0,
            keyframe_requests: 0,
            sent: Sent::default(),
            datagrams_in: 0,
            errors: Vec::new(),
            live_rx_bytes: 0,
            live_rx_packets: 0,
            live_lost: 0,
            live_tx_bytes: 0,
            live_datagrams: 0,
        });
    }

    fn on_signal(&mut self, pid: usize, msg: ServerMessage) {
        let Some(i) = self.slot_index(pid) else {
            return;
        };
        let Some(slot) = self.slots[i].as_mut() else {
            return;
        };
        let result = match msg {
            ServerMessage::Answer { sdp, .. } => {
                slot.offer_outstanding = false;
                if !slot.video.is_empty() && slot.video[0].layer.is_some() {
                    slot.simulcast_answer = Some(crate::peer::simulcast_in_answer(&sdp));
                }
                slot.peer.apply_answer(sdp).map_err(|e| e.to_string())
            }
            // Glare (protocol §2.4): ignore a server offer while ours is outstanding; the
            // server offers again after answering us.
            ServerMessage::Offer { .. } if slot.offer_outstanding => Ok(()),
            ServerMessage::Offer { sdp, .. } => match slot.peer.answer_offer(sdp) {
                Ok(sdp) => {
                    let _ = slot.to_ws.send(ClientMessage::Answer { sdp });
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            ServerMessage::Error { code, message } => {
                let text = format!("{code:?}: {message}");
                if code.is_fatal() || slot.connected.is_none() {
                    Err(format!("refused: {text}"))
                } else {
                    slot.errors.push(text);
                    Ok(())
                }
            }
            ServerMessage::Closing { reason } => Err(format!("server closing: {reason:?}")),
            _ => Ok(()),
        };
        slot.dirty = true;
        if let Some(f) = slot.fast.as_mut() {
            if let Some(d) = slot.peer.pc.remote_description() {
                f.sdp = crate::rtprx::RemoteSdp::parse(&d.sdp);
            }
        }
        if let Err(reason) = result {
            if slot.connected.is_some() {
                slot.dropped.get_or_insert(reason);
            } else {
                self.fail(i, reason);
            }
        }
    }

    /// The participant's join failed: record it and drop its peer.
    fn fail(&mut self, i: usize, reason: String) {
        if let Some(mut slot) = self.slots[i].take() {
            let _ = slot.peer.pc.close();
            self.shared.live.failed.fetch_add(1, Ordering::Relaxed);
            self.done.push(PeerOutcome::failed(slot.pid, reason));
        }
    }

    /// Every [`TICK`]: join deadlines, browser-like PLIs, progress counters.
    fn tick(&mut self, now: Instant) {
        let timeout = self.shared.join_timeout;
        for i in 0..self.slots.len() {
            // The relay's retransmissions and refreshes; a relay refused before media
            // connected fails the join.
            let relay_failed = self.slots[i].as_mut().and_then(|s| {
                let t = s.tunnel.as_mut()?;
                t.handle_timeout(now);
                io::flush_tunnel(&s.peer.socket, t);
                match &t.state {
                    crate::turn::TunnelState::Failed(why) if s.connected.is_none() => {
                        Some(why.clone())
                    }
                    _ => None,
                }
            });
            if let Some(why) = relay_failed {
                self.fail(i, format!("TURN allocation refused: {why}"));
                continue;
            }
            let expired = self.slots[i]
                .as_ref()
                .is_some_and(|s| s.connected.is_none() && now.duration_since(s.t0) > timeout);
            if expired {
                self.fail(i, "timed out: media did not connect".into());
            }
        }
        let live = &self.shared.live;
        // The steady state (as for layer changes): audio loss after RED is also counted from
        // there, after the server had time to turn redundancy on.
        let now_us = now.saturating_duration_since(self.shared.epoch).as_micros() as u64;
        let settled_us = self.settled_us().filter(|t| *t <= now_us);
        for slot in self.slots.iter_mut().flatten() {
            let (mut bytes, mut packets, mut lost) = (0, 0, 0);
            if let (Some(f), Some(t)) = (slot.fast.as_mut(), settled_us) {
                for s in &mut f.ssrcs {
                    s.mark_settled(t);
                }
            }
            if let Some(f) = &slot.fast {
                for s in &f.ssrcs {
                    bytes += s.rx.bytes;
                    packets += s.rx.seq.received;
                    lost += s.rx.seq.lost();
                }
            }
            for s in &mut slot.streams {
                bytes += s.rx.bytes;
                packets += s.rx.received;
                lost += s.rx.lost();
                // A receiver that lost video asks for a keyframe, at most once a second.
                let new_loss = s.rx.lost() > s.lost_at_pli;
                let quiet = s
                    .last_pli
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
                if s.rx.kind == TrackKind::Video && new_loss && quiet {
                    if let Some(receiver) = s.receiver {
                        if let Some(mut r) = slot.peer.pc.rtp_receiver(receiver) {
                            let pli = PictureLossIndication {
                                sender_ssrc: 0,
                                media_ssrc: s.ssrc,
                            };
                            if r.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                                slot.plis_sent += 1;
                                slot.dirty = true;
                            }
                        }
                    }
                    s.lost_at_pli = s.rx.lost();
                    s.last_pli = Some(now);
                }
            }
            live.rx_bytes
                .fetch_add(bytes - slot.live_rx_bytes, Ordering::Relaxed);
            live.rx_packets
                .fetch_add(packets - slot.live_rx_packets, Ordering::Relaxed);
            live.tx_bytes
                .fetch_add(slot.sent.bytes - slot.live_tx_bytes, Ordering::Relaxed);
            if lost >= slot.live_lost {
                live.lost
                    .fetch_add(lost - slot.live_lost, Ordering::Relaxed);
            } else {
                live.lost
                    .fetch_sub(slot.live_lost - lost, Ordering::Relaxed);
            }
            if let (Some(steady), Some(k), None) = (self.steady_at, slot.class, slot.adapted) {
                adapt_window(slot, bytes, packets, lost, now, steady, k, &self.shared);
            }
            live.datagrams
                .fetch_add(slot.datagrams_in - slot.live_datagrams, Ordering::Relaxed);
            slot.live_datagrams = slot.datagrams_in;
            slot.live_rx_bytes = bytes;
            slot.live_rx_packets = packets;
            slot.live_tx_bytes = slot.sent.bytes;
            slot.live_lost = lost;
        }
    }

    /// When the steady state begins ([`outcome::STEADY_SETTLE`] after everyone joined), in µs
    /// since the run's epoch: layer changes and audio loss after RED count from there.
    fn settled_us(&self) -> Option<u64> {
        self.steady_at.map(|t| {
            (t + outcome::STEADY_SETTLE)
                .saturating_duration_since(self.shared.epoch)
                .as_micros() as u64
        })
    }

    /// The fast path's RTCP: NACKs, PLIs, TWCC feedback and receiver reports, handed to
    /// webrtc-rs (which protects them with SRTCP and sends them when the peer is drained).
    fn feedback(&mut self, now: Instant) {
        let now_us = now.saturating_duration_since(self.shared.epoch).as_micros() as u64;
        for slot in self.slots.iter_mut().flatten() {
            if slot.closed || slot.connected.is_none() {
                continue;
            }
            let Some(f) = slot.fast.as_mut() else {
                continue;
            };
            f.feedback(now_us, &mut self.rtcp_out);
            if self.rtcp_out.is_empty() {
                continue;
            }
            let packets = std::mem::replace(&mut self.rtcp_out, Vec::with_capacity(16));
            let msg = rtc::peer_connection::message::TaggedRTCMessage {
                now,
                message: rtc::peer_connection::message::RTCMessage::RtcpPacket(
                    String::new(),
                    packets,
                ),
            };
            let _ = slot.peer.pc.handle_write(msg);
            slot.dirty = true;
        }
    }

    /// Timeouts, due media, and draining of every peer that has something to do.
    fn service(&mut self, now: Instant) {
        let epoch = self.shared.epoch;
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            if slot.closed {
                continue;
            }
            if slot.dropped.is_some() {
                // Dropped out after joining (the server closed it, or its media failed): keep
                // what it measured, stop driving a connection nobody answers.
                let _ = slot.peer.pc.close();
                while let Some(out) = slot.peer.pc.poll_write() {
                    io::send_out(slot, now, &out.message, out.transport.peer_addr);
                }
                slot.closed = true;
                slot.timeout = None;
                continue;
            }
            if slot.shaper.is_some() {
                io::release_shaped(
                    slot,
                    now,
                    &mut self.release_buf,
                    &self.shared,
                    &mut self.latency,
                );
            }
            if slot.timeout.is_some_and(|t| t <= now) {
                let _ = slot.peer.pc.handle_timeout(now);
                slot.dirty = true;
            }
            if self.sending && slot.connected.is_some() && slot.dropped.is_none() {
                send_media(slot, now, epoch, &mut self.tx_arena);
            }
            if slot.dirty {
                let failed = drain(slot, epoch, &mut self.latency, &self.shared.live);
                slot.dirty = false;
                // Never a deadline in the past: a connection that keeps asking for `now` (one
                // whose remote has gone, say) must not spin the group.
                slot.timeout = slot.peer.pc.poll_timeout().map(|t| t.max(now + MIN_TIMER));
                if let Some(reason) = failed {
                    self.fail(i, reason);
                }
            }
        }
    }

    /// Closes a participant's connection (its socket goes with it) and returns what it
    /// measured.
    fn outcome(&mut self, mut slot: Slot, now: Instant) -> PeerOutcome {
        let mut nacks = 0u64;
        let report = slot.peer.pc.get_stats(now, StatsSelector::None);
        for s in report.inbound_rtp_streams() {
            nacks += u64::from(s.nack_count);
        }
        let _ = slot.peer.pc.close();
        while let Some(out) = slot.peer.pc.poll_write() {
            io::send_out(&mut slot, now, &out.message, out.transport.peer_addr);
        }
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(slot.t0));
        let end_us = self
            .media_stopped_us
            .unwrap_or_else(|| now.saturating_duration_since(self.shared.epoch).as_micros() as u64);
        // Steady state for the oscillation count: from a settle time after the run went
        // steady (everyone joined) to the end.
        let settled_us = self.settled_us();
        let mut streams: Vec<StreamOutcome> = slot
            .streams
            .iter()
            .map(|s| StreamOutcome {
                stream: s.rx.stream,
                kind: s.rx.kind,
                received: s.rx.received,
                lost: s.rx.lost(),
                duplicates: s.rx.duplicates,
                bytes: s.rx.bytes,
                jitter_ms: s.rx.jitter_ms(),
                active_secs: (s.rx.last_at_us.saturating_sub(s.rx.first_at_us)) as f64 / 1e6,
                ..StreamOutcome::default()
            })
            .collect();
        let mut checks = None;
        let mut recovered = 0;
        if let Some(f) = slot.fast.as_mut() {
            let (nacked, rec, plis) = f.totals();
            nacks = nacked;
            recovered = rec;
            slot.plis_sent += plis;
            for s in &mut f.ssrcs {
                s.rx.frames.finish(end_us);
                let r = &s.rx;
                streams.push(StreamOutcome {
                    stream: s.streams().first().copied().unwrap_or(u32::MAX),
                    streams_seen: s.streams().len() as u32,
                    last_stream: s.stream.unwrap_or(u32::MAX),
                    seen_ids: s.streams().to_vec(),
                    kind: r.kind,
                    received: r.seq.received,
                    lost: r.seq.lost(),
                    duplicates: r.seq.duplicates,
                    reordered: r.seq.reordered,
                    bytes: r.bytes,
                    jitter_ms: r.jitter.ms(r.clock_hz),
                    active_secs: r.last_at_us.saturating_sub(r.first_at_us) as f64 / 1e6,
                    nacked: r.nack.nacked,
                    recovered: r.nack.recovered,
                    frames_complete: r.frames.complete,
                    frames_incomplete: r.frames.incomplete,
                    freezes: r.frames.freezes,
                    frozen_secs: r.frames.frozen_us as f64 / 1e6,
                    padding_packets: r.padding_packets,
                    layer_changes_steady: settled_us.map_or(0, |t| s.layer_changes_since(t)),
                    steady_secs: settled_us.map_or(0.0, |t| end_us.saturating_sub(t) as f64 / 1e6),
                    red_packets: r.red.red_packets,
                    repaired: r.repaired(),
                    steady_audio: s.audio_since_settle(),
                });
            }
            let mut c = f.checks;
            if let Some(e) = &f.key_error {
                slot.errors.push(format!("SRTP keys: {e}"));
                c.before_keys += 1;
            }
            checks = Some(c);
        }
        PeerOutcome {
            pid: slot.pid,
            join: match slot.connected {
                Some(t) => Ok(t.saturating_duration_since(slot.t0)),
                None => Err("still connecting at the end".into()),
            },
            first_audio: since(slot.first_audio),
            first_video: since(slot.first_video),
            dropped: slot.dropped.take(),
            streams,
            checks,
            recovered,
            class: slot.class,
            simulcast_answer: slot.simulcast_answer.take(),
            shaper: slot.shaper.as_ref().map(|s| s.stats),
            adapted: slot.adapted,
            unknown_packets: slot.unknown_packets,
            nacks_sent: nacks,
            plis_sent: slot.plis_sent,
            keyframe_requests_received: slot.keyframe_requests,
            datagrams_in: slot.datagrams_in,
            sent_packets: slot.sent.packets,
            sent_bytes: slot.sent.bytes,
            errors: std::mem::take(&mut slot.errors),
        }
    }

    fn finish(&mut self) -> GroupResult {
        let now = Instant::now();
        let mut peers = std::mem::take(&mut self.done);
        let slots: Vec<Slot> = self.slots.iter_mut().filter_map(Option::take).collect();
        for slot in slots {
            let outcome = self.outcome(slot, now);
            peers.push(outcome);
        }
        GroupResult {
            peers,
            latency: std::mem::take(&mut self.latency),
            longest_turn: self.longest_turn,
        }
    }
}
