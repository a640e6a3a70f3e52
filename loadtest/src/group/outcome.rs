//! What a group measures and hands back: per-participant outcomes, latency histograms,
//! and the live counters behind the progress line.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use plenary_proto::TrackKind;

use crate::stats::Histogram;

/// Counters the progress line reads; groups add to them once a second.
#[derive(Debug, Default)]
pub struct Live {
    /// Peers whose media connected.
    pub joined: AtomicU64,
    /// Joins that failed.
    pub failed: AtomicU64,
    /// Bytes of RTP payload received.
    pub rx_bytes: AtomicU64,
    /// Bytes of RTP payload sent.
    pub tx_bytes: AtomicU64,
    /// Packets received (distinct).
    pub rx_packets: AtomicU64,
    /// Packets lost so far.
    pub lost: AtomicU64,
    /// UDP datagrams received by the peers' sockets.
    pub datagrams: AtomicU64,
}

/// What one stream looked like to one receiver. With `--full-decrypt` a stream is a sending
/// stream (by the payload stamp); on the fast path it is a received SSRC, named by the first
/// stream id its samples carried.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// The sending stream (`u32::MAX`: no sample identified it).
    pub stream: u32,
    /// Stream ids seen on this SSRC (more than one: the SFU switched sources or layers).
    pub streams_seen: u32,
    /// The stream id of the last sample (its top byte is the simulcast layer).
    pub last_stream: u32,
    /// Every stream id seen on it (at most 4; the SFU may switch sources on one SSRC).
    pub seen_ids: Vec<u32>,
    /// Audio or video.
    pub kind: TrackKind,
    /// Distinct packets received.
    pub received: u64,
    /// Packets lost.
    pub lost: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Seconds from first to last packet.
    pub active_secs: f64,
    /// Packets that arrived after a later one.
    pub reordered: u64,
    /// Sequence numbers NACKed (each send counts).
    pub nacked: u64,
    /// Packets that filled a gap after being NACKed (RTX or same-SSRC resend).
    pub recovered: u64,
    /// Video frames complete (all packets up to the marker).
    pub frames_complete: u64,
    /// Video frames never completed.
    pub frames_incomplete: u64,
    /// Gaps of more than 200 ms without a complete frame.
    pub freezes: u64,
    /// Their total, seconds.
    pub frozen_secs: f64,
    /// Padding packets (bandwidth probes).
    pub padding_packets: u64,
    /// Simulcast layer changes in the steady state (from [`STEADY_SETTLE`] after the run
    /// went steady to the end).
    pub layer_changes_steady: u32,
    /// The length of that steady state, seconds (0: none).
    pub steady_secs: f64,
    /// Audio: RED packets received (redundancy for a lossy link; fast path only).
    pub red_packets: u64,
    /// Audio: packets lost on the wire whose payload arrived inside a later RED packet
    /// (counted in `lost`; the loss after repair is `lost - repaired`).
    pub repaired: u64,
    /// Audio in the steady state (as `layer_changes_steady`): packets expected, lost on the
    /// wire, and of those repaired by RED (zeros without a steady state; fast path only).
    pub steady_audio: [u64; 3],
}

/// How long after the run goes steady (everyone joined) layer changes count as oscillation
/// rather than adapting.
pub const STEADY_SETTLE: Duration = Duration::from_secs(10);

impl Default for StreamOutcome {
    fn default() -> Self {
        StreamOutcome {
            stream: u32::MAX,
            streams_seen: 0,
            last_stream: u32::MAX,
            seen_ids: Vec::new(),
            kind: TrackKind::Audio,
            received: 0,
            lost: 0,
            duplicates: 0,
            bytes: 0,
            jitter_ms: 0.0,
            active_secs: 0.0,
            reordered: 0,
            nacked: 0,
            recovered: 0,
            frames_complete: 0,
            frames_incomplete: 0,
            freezes: 0,
            frozen_secs: 0.0,
            padding_packets: 0,
            layer_changes_steady: 0,
            steady_secs: 0.0,
            red_packets: 0,
            repaired: 0,
            steady_audio: [0; 3],
        }
    }
}

/// Everything measured for one participant.
#[derive(Debug, Clone)]
pub struct PeerOutcome {
    /// Participant.
    pub pid: usize,
    /// Time from the start of the join to media connected, or why it failed.
    pub join: Result<Duration, String>,
    /// Time from the start of the join to the first audio packet.
    pub first_audio: Option<Duration>,
    /// ... to the first video packet.
    pub first_video: Option<Duration>,
    /// Why it dropped out after joining, if it did.
    pub dropped: Option<String>,
    /// Streams received.
    pub streams: Vec<StreamOutcome>,
    /// What the fast path verified and counted (`None` with `--full-decrypt`).
    pub checks: Option<super::RxChecks>,
    /// Packets recovered after a NACK.
    pub recovered: u64,
    /// Network class (index into the mix).
    pub class: Option<usize>,
    /// With simulcast: what the server's answer said about it.
    pub simulcast_answer: Option<crate::peer::SimulcastAnswer>,
    /// What its shaped downlink did.
    pub shaper: Option<crate::netem::ShaperStats>,
    /// Time after the ramp until its received rate fit its cap with loss settled.
    pub adapted: Option<Duration>,
    /// Packets whose payload had no stamp.
    pub unknown_packets: u64,
    /// NACKs this peer's receivers sent (webrtc-rs stats).
    pub nacks_sent: u64,
    /// PLIs sent.
    pub plis_sent: u64,
    /// PLI/FIR received by this publisher.
    pub keyframe_requests_received: u64,
    /// UDP datagrams the peer's socket received (media, RTCP, STUN, DTLS, SCTP).
    pub datagrams_in: u64,
    /// RTP packets sent.
    pub sent_packets: u64,
    /// RTP payload bytes sent.
    pub sent_bytes: u64,
    /// Server errors received.
    pub errors: Vec<String>,
}

impl PeerOutcome {
    pub(super) fn failed(pid: usize, reason: String) -> PeerOutcome {
        PeerOutcome {
            pid,
            join: Err(reason),
            first_audio: None,
            first_video: None,
            dropped: None,
            streams: Vec::new(),
            checks: None,
            recovered: 0,
            class: None,
            simulcast_answer: None,
            shaper: None,
            adapted: None,
            unknown_packets: 0,
            nacks_sent: 0,
            plis_sent: 0,
            keyframe_requests_received: 0,
            datagrams_in: 0,
            sent_packets: 0,
            sent_bytes: 0,
            errors: Vec::new(),
        }
    }
}

/// A group's result.
#[derive(Debug, Default)]
pub struct GroupResult {
    /// One per participant the group heard of.
    pub peers: Vec<PeerOutcome>,
    /// End-to-end latency, µs.
    pub latency: Latencies,
    /// The longest the group spent handling one wake-up (commands, timers, media, draining
    /// peers): if this is large, the load tester itself delayed packets.
    pub longest_turn: Duration,
}

/// End-to-end latency histograms (µs): audio and video once the load is steady, and every
/// packet during the ramp (joins make both sides busier).
#[derive(Debug, Default)]
pub struct Latencies {
    /// Audio, steady phase.
    pub audio: Histogram,
    /// Video, steady phase.
    pub video: Histogram,
    /// Everything before the steady phase.
    pub ramp: Histogram,
    pub(crate) steady: bool,
}

impl Latencies {
    pub(super) fn record(&mut self, kind: TrackKind, us: u64) {
        match (self.steady, kind) {
            (false, _) => self.ramp.record(us),
            (true, TrackKind::Audio) => self.audio.record(us),
            (true, TrackKind::Video) => self.video.record(us),
        }
    }
}
