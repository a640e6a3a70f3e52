//! The end-of-run report: aggregation of every participant's outcome, the text rendering,
//! the JSON form, and the threshold checks that decide the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{Participant, Thresholds};
use crate::group::{GroupResult, PeerOutcome};
use crate::server::Usage;
use crate::stats::{percent, Histogram, Summary};

/// Join outcomes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Joins {
    /// Joins started.
    pub attempted: u64,
    /// Joins whose media connected.
    pub succeeded: u64,
    /// Joins that failed.
    pub failed: u64,
    /// Failure reasons with their counts.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Participants that joined and later dropped out, by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// Packet counts over every received stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Packets {
    /// Distinct packets received.
    pub received: u64,
    /// ... of them audio.
    pub received_audio: u64,
    /// ... of them video.
    pub received_video: u64,
    /// Packets lost.
    pub lost: u64,
    /// Duplicates received.
    pub duplicates: u64,
    /// Loss in percent of expected.
    pub loss_pct: f64,
    /// Loss of the worst stream, percent.
    pub worst_stream_loss_pct: f64,
    /// RTP packets sent by the publishers.
    pub sent: u64,
    /// Packets with no stamp (not ours, or mangled).
    pub unrecognised: u64,
    /// UDP datagrams the peers' sockets received (everything: RTP, RTCP, STUN, DTLS).
    pub datagrams_in: u64,
    /// Audio packets lost on the wire.
    pub audio_lost: u64,
    /// Audio loss on the wire, percent of expected audio.
    pub audio_loss_pct: f64,
    /// RED packets (audio redundancy) received.
    pub red_packets: u64,
    /// Attendees that received any.
    pub red_receivers: u64,
    /// Audio packets lost on the wire whose payload a later RED packet brought.
    pub audio_repaired: u64,
    /// Audio loss after repair by RED (lost − repaired), percent of expected audio.
    pub audio_loss_after_red_pct: f64,
}

/// What the server reported about itself (from `/metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    /// Over the whole run.
    pub whole_run: Option<Usage>,
    /// Over the steady phase (after the ramp, before the stop).
    pub steady: Option<Usage>,
    /// Resident memory before the joins, MB.
    pub rss_start_mb: f64,
    /// Largest resident memory, MB.
    pub rss_peak_mb: f64,
    /// (peak − start) / peak participants, KB.
    pub memory_per_participant_kb: f64,
    /// Most participants the server counted at once.
    pub peak_participants: f64,
    /// Why metrics are missing, if they are.
    pub error: Option<String>,
}

/// A threshold's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What was checked.
    pub name: String,
    /// The limit.
    pub limit: f64,
    /// The measured value.
    pub actual: f64,
    /// Whether it passed.
    pub passed: bool,
}

/// Video frames over every received video stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VideoFrames {
    /// Frames complete.
    pub complete: u64,
    /// Frames never completed.
    pub incomplete: u64,
    /// Gaps of more than 200 ms without a complete frame.
    pub freezes: u64,
    /// Their total, seconds (summed over receivers).
    pub frozen_secs: f64,
    /// Packets recovered after a NACK.
    pub recovered: u64,
}

/// Results of the attendees of one network class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassReport {
    /// The class as written.
    pub name: String,
    /// Attendees of the class that joined.
    pub attendees: u64,
    /// Audio loss on the wire, percent of expected.
    pub audio_loss_pct: f64,
    /// Audio loss after repair by RED: packets lost on the wire whose payload no later RED
    /// packet brought, percent of expected (what the decoder misses; fast path only).
    pub audio_loss_after_red_pct: f64,
    /// Audio loss on the wire in the steady state (from 10 s after everyone joined: the
    /// server has had the time to turn redundancy on), percent of expected.
    pub audio_loss_steady_pct: f64,
    /// Audio loss after repair by RED in the steady state, percent of expected.
    pub audio_loss_after_red_steady_pct: f64,
    /// Attendees of the class that received RED (audio redundancy) at all.
    pub red_attendees: u64,
    /// RED packets they received.
    pub red_packets: u64,
    /// Audio packets lost on the wire and repaired by RED.
    pub audio_repaired: u64,
    /// Video loss, percent of expected (before NACK recovery is counted as arrival).
    pub video_loss_pct: f64,
    /// Incomplete video frames per video stream received.
    pub frames_incomplete_per_stream: f64,
    /// Frozen seconds per video stream received.
    pub frozen_secs_per_stream: f64,
    /// Received kbps per attendee.
    pub kbps: Summary,
    /// Sequence numbers NACKed.
    pub nacked: u64,
    /// Packets recovered after a NACK.
    pub recovered: u64,
    /// Datagrams the shaper dropped: random loss, over the cap (queue full), line overflow.
    pub shaper_drops: (u64, u64, u64),
    /// Seconds after the ramp until the received rate fit the cap with loss settled.
    pub adapt_secs: Summary,
    /// Attendees that never adapted.
    pub never_adapted: u64,
    /// Video streams by the layer their last sample carried (`f` also without simulcast).
    pub layers: String,
    /// Simulcast layer changes per 10 s per attendee (all its videos) in the steady state
    /// (from 10 s after everyone joined): oscillation.
    pub layer_changes_per_10s: Summary,
}

/// The report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Per network class (with `--network`).
    pub classes: Vec<ClassReport>,
    /// With `--simulcast`: publishers whose offer the server's answer accepted / did not, and
    /// the first answer's simulcast attributes.
    pub simulcast: Option<(u64, u64, Option<crate::peer::SimulcastAnswer>)>,
    /// Received video streams by the layer they carried at the end (f, h, q).
    pub layers_received: [u64; 3],
    /// `(i, n)` when this process simulated only slice i of n of the participants.
    pub shard: Option<(usize, usize)>,
    /// Whether every packet was decrypted by webrtc-rs (else: headers counted, a sample
    /// decrypted and verified).
    pub full_decrypt: bool,
    /// Whether every attendee's media went through the TURN server (`--turn`).
    #[serde(default)]
    pub relayed: bool,
    /// What the fast receive path verified and counted.
    pub checks: crate::group::RxChecks,
    /// Video frames (fast path only).
    pub frames: VideoFrames,
    /// Seconds from first join to the end.
    pub wall_secs: f64,
    /// Joins.
    pub joins: Joins,
    /// Time to join (WebSocket open to media connected), ms.
    pub join_ms: Summary,
    /// Time from join start to the first audio packet, ms.
    pub first_audio_ms: Summary,
    /// ... to the first video packet, ms.
    pub first_video_ms: Summary,
    /// Received bitrate per subscriber (kbps over the time it received).
    pub subscriber_kbps: Summary,
    /// Subscribers that joined but received nothing.
    pub subscribers_without_media: u64,
    /// Streams published in the room that a subscriber never received (a server that forwards
    /// only the active speakers' audio leaves silent speakers out legitimately).
    pub missing_streams: u64,
    /// Packet counts.
    pub packets: Packets,
    /// Per-stream interarrival jitter, ms.
    pub jitter_ms: Summary,
    /// End-to-end latency of audio packets, ms.
    pub latency_audio_ms: Summary,
    /// ... of video packets, ms.
    pub latency_video_ms: Summary,
    /// ... of all packets, ms (these three: steady phase, after the ramp).
    pub latency_ms: Summary,
    /// ... of all packets during the ramp, ms.
    pub latency_ramp_ms: Summary,
    /// NACKs the simulated receivers sent.
    pub nacks_sent: u64,
    /// PLIs the simulated receivers sent.
    pub plis_sent: u64,
    /// Keyframe requests (PLI/FIR) the simulated publishers received.
    pub keyframe_requests_received: u64,
    /// Non-fatal server errors.
    pub server_errors: u64,
    /// The server's own numbers.
    pub server: ServerReport,
    /// The load tester's CPU seconds.
    pub loadtest_cpu_secs: f64,
    /// The load tester's CPU use, percent of one core.
    pub loadtest_cpu_pct: f64,
    /// Seconds the load tester's threads waited for a CPU (a busy, shared machine).
    pub loadtest_cpu_wait_secs: f64,
    /// The load tester's CPU microseconds per datagram received.
    pub loadtest_us_per_datagram: f64,
    /// CPU seconds of the load tester in the steady phase (no joins, no handshakes).
    pub loadtest_steady_cpu_secs: f64,
    /// Datagrams its peers received in the steady phase.
    pub loadtest_steady_datagrams: u64,
    /// Its CPU microseconds per received datagram in the steady phase: everything it does
    /// (receiving, sending the publishers' media and everyone's RTCP) over what it receives.
    pub loadtest_steady_us_per_datagram: f64,
    /// The longest one group took to handle one wake-up, ms.
    pub loadtest_longest_turn_ms: f64,
    /// Threshold verdicts.
    pub thresholds: Vec<Verdict>,
}

impl Report {
    /// Aggregates group results; `plan` tells subscribers from publishers and which streams
    /// each participant should have received.
    pub fn build(plan: &[Participant], groups: Vec<GroupResult>) -> Report {
        let mut r = Report::default();
        let mut latency_audio = Histogram::new();
        let mut latency_video = Histogram::new();
        let mut latency_ramp = Histogram::new();
        let mut peers: Vec<PeerOutcome> = Vec::new();
        for g in groups {
            r.loadtest_longest_turn_ms = r
                .loadtest_longest_turn_ms
                .max(g.longest_turn.as_secs_f64() * 1000.0);
            latency_audio.merge(&g.latency.audio);
            latency_video.merge(&g.latency.video);
            latency_ramp.merge(&g.latency.ramp);
            peers.extend(g.peers);
        }
        peers.sort_by_key(|p| p.pid);
        // Streams published per room: (room, stream id).
        let mut published: Vec<(usize, u32)> = Vec::new();
        for p in plan {
            if let crate::config::Role::Publisher { audio, video } = p.role {
                if audio {
                    published.push((p.room, p.audio_stream()));
                }
                if video {
                    published.push((p.room, p.audio_stream() + 1));
                }
            }
        }
        let (mut join, mut first_a, mut first_v, mut kbps, mut jitter) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut expected_total = 0u64;
        let mut audio_expected = 0u64;
        let mut worst = 0.0f64;
        r.joins.attempted = peers.len() as u64;
        for p in &peers {
            let Some(who) = plan.get(p.pid) else {
                continue;
            };
            match &p.join {
                Ok(d) => {
                    r.joins.succeeded += 1;
                    join.push(d.as_secs_f64() * 1000.0);
                }
                Err(reason) => {
                    r.joins.failed += 1;
                    *r.joins.failure_reasons.entry(reason.clone()).or_default() += 1;
                    continue;
                }
            }
            if let Some(reason) = &p.dropped {
                *r.joins.dropped.entry(reason.clone()).or_default() += 1;
            }
            if let Some(d) = p.first_audio {
                first_a.push(d.as_secs_f64() * 1000.0);
            }
            if let Some(d) = p.first_video {
                first_v.push(d.as_secs_f64() * 1000.0);
            }
            let mut bytes = 0u64;
            let mut active = 0.0f64;
            let mut red = 0u64;
            for s in &p.streams {
                r.packets.received += s.received;
                match s.kind {
                    plenary_proto::TrackKind::Audio => {
                        r.packets.received_audio += s.received;
                        r.packets.audio_lost += s.lost;
                        r.packets.audio_repaired += s.repaired.min(s.lost);
                        audio_expected += s.received + s.lost;
                        red += s.red_packets;
                    }
                    plenary_proto::TrackKind::Video => r.packets.received_video += s.received,
                }
                r.packets.lost += s.lost;
                r.packets.duplicates += s.duplicates;
                expected_total += s.received + s.lost;
                worst = worst.max(percent(s.lost, s.received + s.lost));
                jitter.push(s.jitter_ms);
                bytes += s.bytes;
                active = active.max(s.active_secs);
            }
            r.packets.red_packets += red;
            r.packets.red_receivers += u64::from(red > 0);
            r.packets.unrecognised += p.unknown_packets;
            if let Some(c) = &p.checks {
                r.checks.merge(c);
            }
            r.frames.recovered += p.recovered;
            if let Some(a) = &p.simulcast_answer {
                let e = r.simulcast.get_or_insert((0, 0, Some(a.clone())));
                if a.accepted() {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
            for s in p
                .streams
                .iter()
                .filter(|s| s.kind == plenary_proto::TrackKind::Video)
            {
                if s.stream != u32::MAX {
                    let (_, layer) = crate::synth::stream_layer(s.last_stream);
                    if let Some(n) = r.layers_received.get_mut(layer) {
                        *n += 1;
                    }
                }
            }
            for s in p
                .streams
                .iter()
                .filter(|s| s.kind == plenary_proto::TrackKind::Video)
            {
                r.frames.complete += s.frames_complete;
                r.frames.incomplete += s.frames_incomplete;
                r.frames.freezes += s.freezes;
                r.frames.frozen_secs += s.frozen_secs;
            }
            r.packets.datagrams_in += p.datagrams_in;
            r.packets.sent += p.sent_packets;
            r.nacks_sent += p.nacks_sent;
            r.plis_sent += p.plis_sent;
            r.keyframe_requests_received += p.keyframe_requests_received;
            r.server_errors += p.errors.len() as u64;
            if who.is_subscriber() {
                if p.streams.is_empty() {
                    r.subscribers_without_media += 1;
                }
                let should = published.iter().filter(|(room, _)| *room == who.room);
                let missing = should
                    .filter(|(_, id)| {
                        !p.streams.iter().any(|s| {
                            crate::synth::stream_layer(s.stream).0 == *id
                                || s.seen_ids
                                    .iter()
                                    .any(|x| crate::synth::stream_layer(*x).0 == *id)
                        })
                    })
                    .count();
                r.missing_streams += missing as u64;
                if active > 0.0 {
                    kbps.push(bytes as f64 * 8.0 / active / 1000.0);
                }
            }
        }
        r.classes = class_reports(&peers);
        r.packets.loss_pct = percent(r.packets.lost, expected_total);
        r.packets.audio_loss_pct = percent(r.packets.audio_lost, audio_expected);
        r.packets.audio_loss_after_red_pct = percent(
            r.packets.audio_lost - r.packets.audio_repaired,
            audio_expected,
        );
        r.packets.worst_stream_loss_pct = worst;
        r.join_ms = Summary::of(&join);
        r.first_audio_ms = Summary::of(&first_a);
        r.first_video_ms = Summary::of(&first_v);
        r.subscriber_kbps = Summary::of(&kbps);
        r.jitter_ms = Summary::of(&jitter);
        r.latency_audio_ms = latency_audio.summary_ms();
        r.latency_video_ms = latency_video.summary_ms();
        let mut all = latency_audio;
        all.merge(&latency_video);
        r.latency_ms = all.summary_ms();
        r.latency_ramp_ms = latency_ramp.summary_ms();
        r
    }

    /// Checks the thresholds; returns whether all passed.
    pub fn check(&mut self, t: &Thresholds) -> bool {
        let mut v = Vec::new();
        if let Some(max) = t.max_loss_pct {
            v.push(verdict("loss %", max, self.packets.loss_pct));
        }
        if let Some(max) = t.max_join_p95 {
            let limit = max.as_secs_f64() * 1000.0;
            // Failed joins count as infinitely slow when they push the p95 past the limit.
            let failed_share = percent(self.joins.failed, self.joins.attempted);
            let actual = if failed_share > 5.0 {
                f64::INFINITY
            } else {
                self.join_ms.p95
            };
            v.push(verdict("join p95 ms", limit, actual));
        }
        if let Some(max) = t.max_latency_p95 {
            v.push(verdict(
                "latency p95 ms",
                max.as_secs_f64() * 1000.0,
                self.latency_ms.p95,
            ));
        }
        if let Some(max) = t.max_failed_joins {
            v.push(verdict(
                "failed joins",
                max as f64,
                self.joins.failed as f64,
            ));
        }
        let ok = v.iter().all(|x| x.passed);
        self.thresholds = v;
        ok
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let s = |x: &Summary| {
            format!(
                "p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  (n={})",
                x.p50, x.p95, x.p99, x.max, x.count
            )
        };
        let j = &self.joins;
        let _ = writeln!(
            o,
            "== Plenary load test report ({:.0} s) ==",
            self.wall_secs
        );
        if let Some((i, n)) = self.shard {
            let _ = writeln!(
                o,
                "PARTIAL REPORT: shard {i}/{n} (participants with index % {n} == {i}); server figures are the whole server's"
            );
        }
        let _ = writeln!(
            o,
            "joins            attempted {}  succeeded {}  failed {}",
            j.attempted, j.succeeded, j.failed
        );
        for (reason, n) in &j.failure_reasons {
            let _ = writeln!(o, "  failed  {n:>5} × {reason}");
        }
        for (reason, n) in &j.dropped {
            let _ = writeln!(o, "  dropped {n:>5} × {reason}");
        }
        let _ = writeln!(o, "time to join ms  {}", s(&self.join_ms));
        let _ = writeln!(o, "first audio ms   {}", s(&self.first_audio_ms));
        let _ = writeln!(o, "first video ms   {}", s(&self.first_video_ms));
        let _ = writeln!(o, "kbps/subscriber  {}", s(&self.subscriber_kbps));
        let _ = writeln!(
            o,
            "no media         {} subscribers, {} missing streams",
            self.subscribers_without_media, self.missing_streams
        );
        let p = &self.packets;
        let _ = writeln!(
            o,
            "packets          sent {}  received {}  lost {} ({:.3} %, worst stream {:.2} %)  dup {}  unrecognised {}  datagrams in {}",
            p.sent, p.received, p.lost, p.loss_pct, p.worst_stream_loss_pct, p.duplicates, p.unrecognised, p.datagrams_in
        );
        if !self.full_decrypt {
            let _ = writeln!(
                o,
                "audio loss       {:.3} % on the wire, {:.3} % after RED ({} of {} lost packets repaired; {} RED packets to {} attendees)",
                p.audio_loss_pct,
                p.audio_loss_after_red_pct,
                p.audio_repaired,
                p.audio_lost,
                p.red_packets,
                p.red_receivers
            );
        }
        let c = &self.checks;
        if self.relayed {
            let _ = writeln!(
                o,
                "network path     every attendee through the TURN server named in the welcome (--turn)"
            );
        }
        if self.full_decrypt {
            let _ = writeln!(
                o,
                "receive path     full decrypt: every packet decrypted by webrtc-rs, loss from payload stamps"
            );
        } else {
            let _ = writeln!(
                o,
                "receive path     {} RTP packets counted from clear headers (loss, jitter, bitrate, frames); {} decrypted ({:.1} %), {} verified (SRTP tag + payload stamp of a stream of the room), {} keyframe starts verified; failures: {} tag, {} no stamp, {} foreign, {} malformed RED; {} RED (all decrypted), {} RTX, {} before keys, {} unparsable",
                c.counted,
                c.decrypted,
                percent(c.decrypted, c.counted),
                c.verified,
                c.keyframes_verified,
                c.auth_failed,
                c.no_stamp,
                c.foreign,
                c.red_malformed,
                c.red_packets,
                c.rtx,
                c.before_keys,
                c.unparsable
            );
            let f = &self.frames;
            let _ = writeln!(
                o,
                "video frames     complete {}  incomplete {}  freezes {} ({:.1} s frozen in all)  recovered after NACK {}",
                f.complete, f.incomplete, f.freezes, f.frozen_secs, f.recovered
            );
            let _ = writeln!(
                o,
                "RTCP sent        RR {}  TWCC {}  NACK {}  PLI {}  (SRTP: {} peers decrypted in place, {} through webrtc-rs)",
                c.rr_sent, c.twcc_sent, c.nack_packets_sent, c.plis_sent, c.gcm_peers, c.other_profile_peers
            );
        }
        if let Some((yes, no, first)) = &self.simulcast {
            let _ = writeln!(
                o,
                "simulcast        offered q;h;f by {} publishers: answer accepted {yes}, did not {no} (first answer: a=simulcast:{} rids {:?} rid extension {})",
                yes + no,
                first.as_ref().and_then(|a| a.simulcast.clone()).unwrap_or_else(|| "(none)".into()),
                first.as_ref().map(|a| a.rids.clone()).unwrap_or_default(),
                first.as_ref().is_some_and(|a| a.rid_extension)
            );
            let _ = writeln!(
                o,
                "layers received  video streams ending on f {}  h {}  q {}",
                self.layers_received[0], self.layers_received[1], self.layers_received[2]
            );
        }
        for c in &self.classes {
            let _ = writeln!(
                o,
                "network class    {} ({} attendees): audio loss {:.2} % ({:.2} % after RED; in steady state {:.2} % → {:.2} % after RED; RED to {} attendees, {} of their lost packets repaired), video loss {:.2} %, incomplete frames {:.1} and frozen {:.1} s per video stream, kbps p50 {:.0}, NACKed {} recovered {}, shaper drops {} random / {} over cap / {} overflow, adapted after p50 {:.1} s ({} never), video ended on layers {}, layer changes per 10 s in steady state p50 {:.2} max {:.2}",
                c.name,
                c.attendees,
                c.audio_loss_pct,
                c.audio_loss_after_red_pct,
                c.audio_loss_steady_pct,
                c.audio_loss_after_red_steady_pct,
                c.red_attendees,
                c.audio_repaired,
                c.video_loss_pct,
                c.frames_incomplete_per_stream,
                c.frozen_secs_per_stream,
                c.kbps.p50,
                c.nacked,
                c.recovered,
                c.shaper_drops.0,
                c.shaper_drops.1,
                c.shaper_drops.2,
                c.adapt_secs.p50,
                c.never_adapted,
                c.layers,
                c.layer_changes_per_10s.p50,
                c.layer_changes_per_10s.max
            );
        }
        let _ = writeln!(o, "jitter ms        {}", s(&self.jitter_ms));
        let _ = writeln!(o, "latency ms audio {}", s(&self.latency_audio_ms));
        let _ = writeln!(o, "latency ms video {}", s(&self.latency_video_ms));
        let _ = writeln!(o, "latency ms ramp  {}", s(&self.latency_ramp_ms));
        let _ = writeln!(
            o,
            "feedback         NACKs sent {}  PLIs sent {}  keyframe requests at publishers {}  server errors {}",
            self.nacks_sent, self.plis_sent, self.keyframe_requests_received, self.server_errors
        );
        let sv = &self.server;
        match (&sv.whole_run, &sv.error) {
            (Some(u), _) => {
                let _ = writeln!(
                    o,
                    "server           CPU {:.0} % avg, RSS {:.1} → {:.1} MB peak ({:.0} KB/participant), {:.0} fwd pkt/s",
                    u.cpu_percent, sv.rss_start_mb, sv.rss_peak_mb, sv.memory_per_participant_kb, u.forwarded_per_sec
                );
                if let Some(st) = &sv.steady {
                    let _ = writeln!(
                        o,
                        "server (steady)  CPU {:.0} %, {:.0} fwd pkt/s, {:.2} µs CPU/fwd pkt, {:.0} fwd pkt/s per core, {:.1} datagrams per send call, waited {:.1} s for a CPU",
                        st.cpu_percent, st.forwarded_per_sec, st.cpu_us_per_forwarded, st.forwarded_per_core_sec, st.datagrams_per_send_call, st.cpu_wait_seconds
                    );
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(o, "server           metrics unavailable: {e}");
            }
            (None, None) => {
                let _ = writeln!(o, "server           metrics unavailable");
            }
        }
        let _ = writeln!(
            o,
            "load tester      CPU {:.1} s ({:.0} % of one core, {:.1} µs per datagram received), waited {:.1} s for a CPU, longest turn {:.1} ms",
            self.loadtest_cpu_secs,
            self.loadtest_cpu_pct,
            self.loadtest_us_per_datagram,
            self.loadtest_cpu_wait_secs,
            self.loadtest_longest_turn_ms
        );
        let _ = writeln!(
            o,
            "load tester (steady) CPU {:.2} s for {} datagrams received: {:.2} µs per datagram",
            self.loadtest_steady_cpu_secs,
            self.loadtest_steady_datagrams,
            self.loadtest_steady_us_per_datagram
        );
        for v in &self.thresholds {
            let _ = writeln!(
                o,
                "threshold        {:<16} limit {:>9.2}  actual {:>9.2}  {}",
                v.name,
                v.limit,
                v.actual,
                if v.passed { "ok" } else { "MISSED" }
            );
        }
        o
    }
}

fn class_reports(peers: &[PeerOutcome]) -> Vec<ClassReport> {
    let n = peers
        .iter()
        .filter_map(|p| p.class)
        .max()
        .map_or(0, |m| m + 1);
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let mut c = ClassReport::default();
        let mut layers = [0u64; 3];
        let (mut al, mut ae, mut vl, mut ve) = (0u64, 0u64, 0u64, 0u64);
        let mut repaired = 0u64;
        let mut steady_audio = [0u64; 3];
        let (mut incomplete, mut frozen, mut vstreams) = (0u64, 0.0f64, 0u64);
        let mut kbps = Vec::new();
        let mut adapt = Vec::new();
        let mut changes = Vec::new();
        for p in peers
            .iter()
            .filter(|p| p.class == Some(k) && p.join.is_ok())
        {
            c.attendees += 1;
            let mut bytes = 0;
            let mut active = 0.0f64;
            let (mut changed, mut steady) = (0u32, 0.0f64);
            let mut red = 0u64;
            for s in &p.streams {
                changed += s.layer_changes_steady;
                steady = steady.max(s.steady_secs);
                match s.kind {
                    plenary_proto::TrackKind::Audio => {
                        al += s.lost;
                        ae += s.lost + s.received;
                        repaired += s.repaired.min(s.lost);
                        red += s.red_packets;
                        for (sum, x) in steady_audio.iter_mut().zip(s.steady_audio) {
                            *sum += x;
                        }
                    }
                    plenary_proto::TrackKind::Video => {
                        vl += s.lost;
                        ve += s.lost + s.received;
                        incomplete += s.frames_incomplete;
                        frozen += s.frozen_secs;
                        vstreams += 1;
                        if s.last_stream != u32::MAX {
                            let (_, l) = crate::synth::stream_layer(s.last_stream);
                            if let Some(n) = layers.get_mut(l) {
                                *n += 1;
                            }
                        }
                    }
                }
                c.nacked += s.nacked;
                c.recovered += s.recovered;
                bytes += s.bytes;
                active = active.max(s.active_secs);
            }
            if active > 0.0 {
                kbps.push(bytes as f64 * 8.0 / active / 1000.0);
            }
            c.red_packets += red;
            c.red_attendees += u64::from(red > 0);
            if steady >= 5.0 {
                changes.push(f64::from(changed) * 10.0 / steady);
            }
            if let Some(sh) = p.shaper {
                c.shaper_drops.0 += sh.lost;
                c.shaper_drops.1 += sh.queue_drops;
                c.shaper_drops.2 += sh.overflow;
            }
            match p.adapted {
                Some(d) => adapt.push(d.as_secs_f64()),
                None => c.never_adapted += 1,
            }
        }
        c.layers = format!("f {} h {} q {}", layers[0], layers[1], layers[2]);
        c.audio_loss_pct = percent(al, ae);
        c.audio_loss_after_red_pct = percent(al - repaired, ae);
        c.audio_repaired = repaired;
        let [se, sl, sr] = steady_audio;
        c.audio_loss_steady_pct = percent(sl, se);
        c.audio_loss_after_red_steady_pct = percent(sl.saturating_sub(sr), se);
        c.video_loss_pct = percent(vl, ve);
        c.frames_incomplete_per_stream = incomplete as f64 / vstreams.max(1) as f64;
        c.frozen_secs_per_stream = frozen / vstreams.max(1) as f64;
        c.kbps = Summary::of(&kbps);
        c.adapt_secs = Summary::of(&adapt);
        c.layer_changes_per_10s = Summary::of(&changes);
        out.push(c);
    }
    out
}

fn verdict(name: &str, limit: f64, actual: f64) -> Verdict {
    Verdict {
        name: name.to_owned(),
        limit,
        actual,
        passed: actual <= limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{plan, RunConfig};
    use crate::group::StreamOutcome;
    use plenary_proto::TrackKind;
    use std::time::Duration;

    fn outcome(pid: usize, join_ms: Option<u64>, streams: Vec<StreamOutcome>) -> PeerOutcome {
        PeerOutcome {
            pid,
            join: join_ms
                .map(Duration::from_millis)
                .ok_or_else(|| "timed out: welcome".to_owned()),
            first_audio: Some(Duration::from_millis(300)),
            first_video: None,
            dropped: None,
            streams,
            checks: None,
            recovered: 0,
            class: None,
            simulcast_answer: None,
            shaper: None,
            adapted: None,
            unknown_packets: 0,
            nacks_sent: 1,
            plis_sent: 0,
            keyframe_requests_received: 0,
            datagrams_in: 0,
            sent_packets: 0,
            sent_bytes: 0,
            errors: Vec::new(),
        }
    }

    fn stream(id: u32, received: u64, lost: u64) -> StreamOutcome {
        StreamOutcome {
            stream: id,
            kind: TrackKind::Audio,
            received,
            lost,
            duplicates: 0,
            bytes: received * 100,
            jitter_ms: 1.0,
            active_secs: 10.0,
            ..StreamOutcome::default()
        }
    }

    fn scenario() -> (Vec<Participant>, Vec<GroupResult>) {
        let mut c = RunConfig::new("http://127.0.0.1:1", "k", "s");
        c.audio_publishers = 1;
        c.subscribers = 3;
        let plan = plan(&c);
        let mut lat = Histogram::new();
        for v in [10_000, 20_000, 30_000] {
            lat.record(v);
        }
        let g = GroupResult {
            peers: vec![
                outcome(0, Some(100), vec![]),
                outcome(1, Some(200), vec![stream(0, 990, 10)]),
                outcome(2, Some(400), vec![stream(0, 1000, 0)]),
                outcome(3, None, vec![]),
            ],
            latency: crate::group::Latencies {
                audio: lat,
                ..Default::default()
            },
            longest_turn: Duration::from_millis(3),
        };
        (plan, vec![g])
    }

    #[test]
    fn aggregates_joins_loss_bitrate_and_latency() {
        let (plan, groups) = scenario();
        let r = Report::build(&plan, groups);
        assert_eq!(r.joins.attempted, 4);
        assert_eq!(r.joins.succeeded, 3);
        assert_eq!(r.joins.failed, 1);
        assert_eq!(r.joins.failure_reasons["timed out: welcome"], 1);
        assert_eq!(r.join_ms.p50, 200.0);
        assert_eq!(r.join_ms.max, 400.0);
        assert_eq!(r.packets.received, 1990);
        assert_eq!(r.packets.lost, 10);
        assert!((r.packets.loss_pct - 0.5).abs() < 1e-9);
        assert!((r.packets.worst_stream_loss_pct - 1.0).abs() < 1e-9);
        // 99 000 bytes in 10 s = 79.2 kbps; 100 000 bytes = 80 kbps.
        assert_eq!(r.subscriber_kbps.count, 2);
        assert!((r.subscriber_kbps.p50 - 79.2).abs() < 1e-9);
        assert_eq!(r.subscribers_without_media, 0);
        assert_eq!(r.missing_streams, 0);
        // Histogram buckets are about 1.6 % wide.
        assert!(
            (r.latency_ms.p50 - 20.0).abs() < 0.4,
            "{}",
            r.latency_ms.p50
        );
        assert_eq!(r.nacks_sent, 3);
        assert!(r.render().contains("failed      1 × timed out: welcome"));
    }

    #[test]
    fn classes_report_audio_loss_after_red() {
        let (plan, mut groups) = scenario();
        let audio = |received, lost, red_packets, repaired, steady_audio| StreamOutcome {
            red_packets,
            repaired,
            steady_audio,
            ..stream(0, received, lost)
        };
        let peers = &mut groups[0].peers;
        peers[1].class = Some(0);
        peers[1].streams = vec![audio(960, 40, 500, 35, [600, 30, 29])];
        peers[2].class = Some(0);
        peers[2].streams = vec![audio(1000, 0, 0, 0, [600, 0, 0])];
        let r = Report::build(&plan, groups);
        let c = &r.classes[0];
        assert_eq!(c.attendees, 2);
        assert!((c.audio_loss_pct - 2.0).abs() < 1e-9);
        assert!((c.audio_loss_after_red_pct - 0.25).abs() < 1e-9);
        assert_eq!(c.red_attendees, 1);
        assert_eq!(c.red_packets, 500);
        assert_eq!(c.audio_repaired, 35);
        assert!((c.audio_loss_steady_pct - 2.5).abs() < 1e-9);
        assert!((c.audio_loss_after_red_steady_pct - 1.0 / 12.0).abs() < 1e-9);
        assert_eq!(r.packets.red_receivers, 1);
        assert_eq!(r.packets.audio_repaired, 35);
        assert!((r.packets.audio_loss_after_red_pct - 0.25).abs() < 1e-9);
        let text = r.render();
        assert!(
            text.contains("audio loss 2.00 % (0.25 % after RED; in steady state 2.50 % → 0.08 %"),
            "{text}"
        );
        assert!(text.contains("0.250 % after RED"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["classes"][0]["audio_loss_after_red_pct"], 0.25);
    }

    #[test]
    fn subscribers_without_streams_are_counted() {
        let (plan, mut groups) = scenario();
        groups[0].peers[2].streams.clear();
        let r = Report::build(&plan, groups);
        assert_eq!(r.subscribers_without_media, 1);
        assert_eq!(r.missing_streams, 1);
    }

    #[test]
    fn thresholds_pass_and_fail() {
        let (plan, groups) = scenario();
        let mut r = Report::build(&plan, groups);
        let t = Thresholds {
            max_loss_pct: Some(1.0),
            max_join_p95: None,
            max_latency_p95: Some(Duration::from_millis(50)),
            max_failed_joins: Some(1),
        };
        assert!(r.check(&t));
        assert_eq!(r.thresholds.len(), 3);
        let strict = Thresholds {
            max_loss_pct: Some(0.1),
            ..t.clone()
        };
        assert!(!r.check(&strict));
        assert!(r.render().contains("MISSED"));
        // One failed join out of four is more than 5 %: the join p95 fails whatever it is.
        let join = Thresholds {
            max_join_p95: Some(Duration::from_secs(10)),
            ..Thresholds::default()
        };
        assert!(!r.check(&join));
        r.joins.failed = 0;
        assert!(r.check(&join));
    }
}
