//! Prometheus metrics, served at `/metrics`.
//!
//! The media plane counts in plain integer fields on its hot path and adds the deltas to
//! these metrics once a second ([`MediaCounters::publish`]); nothing here is touched per
//! packet, and no metric has a label looked up per packet.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric Plenary exports.
pub struct Metrics {
    registry: Registry,
    /// Open rooms.
    pub rooms: IntGauge,
    /// Participants in the media plane.
    pub participants: IntGauge,
    /// Published tracks.
    pub published_tracks: IntGauge,
    /// Subscriptions (down-tracks).
    pub subscriptions: IntGauge,
    /// Open signaling WebSockets.
    pub signaling_sessions: IntGauge,
    /// UDP datagrams received.
    pub packets_in: IntCounter,
    /// UDP datagrams sent.
    pub packets_out: IntCounter,
    /// UDP bytes received.
    pub bytes_in: IntCounter,
    /// UDP bytes sent.
    pub bytes_out: IntCounter,
    /// RTP packets forwarded to subscribers (one per subscriber).
    pub rtp_forwarded: IntCounter,
    /// NACKs received from subscribers.
    pub nacks_received: IntCounter,
    /// NACKs sent to publishers.
    pub nacks_sent: IntCounter,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests_received: IntCounter,
    /// PLIs sent to publishers.
    pub keyframe_requests_sent: IntCounter,
    /// Datagrams from no known peer.
    pub datagrams_unknown: IntCounter,
    /// Datagrams a known peer refused (malformed, failed decryption, ...).
    pub datagrams_rejected: IntCounter,
    /// Datagrams that could not be sent.
    pub send_errors: IntCounter,
    /// Send system calls (datagrams / calls = batching factor).
    pub send_calls: IntCounter,
    /// Media shards (threads with their own UDP port).
    pub shards: IntGauge,
    /// Media shards shedding load (overload level 1 or more).
    pub shards_overloaded: IntGauge,
    /// The highest overload level of any shard (0 normal, 1 thumbnails shed, 2 video shed,
    /// 3 refusing joins).
    pub overload_level: IntGauge,
    /// RTP packets handed from one shard to another.
    pub relayed: IntCounter,
    /// Relayed packets dropped because the receiving shard's ring was full.
    pub relay_drops: IntCounter,
    /// Datagrams the kernel dropped because the media socket's receive buffer was full.
    pub kernel_drops: IntGauge,
    /// Seconds from `join` to ICE+DTLS connected.
    pub join_latency: Histogram,
    /// Joins refused, by reason.
    pub joins_refused: IntCounterVec,
    /// ICE-TCP frames received.
    pub tcp_frames_in: IntCounter,
    /// ICE-TCP frames sent.
    pub tcp_frames_out: IntCounter,
    /// Open ICE-TCP connections.
    pub ice_tcp_connections: IntGauge,
    /// ICE-TCP connections refused or cut off (bad framing, not ours, too many).
    pub ice_tcp_refused: IntCounter,
    /// ICE restarts clients made (a path that broke and was mended on the same session).
    pub ice_restarts: IntCounter,
    /// Datagrams the media plane dropped, by reason (handles resolved once, at start).
    pub dropped: DroppedDatagrams,
    /// WebSocket upgrades refused with 429, by reason.
    signaling_refused: Labelled,
    /// Sessions the server cut off for their behaviour, by reason.
    sessions_cut: Labelled,
    /// 1 while the server drains before a stop (joins refused, clients told).
    pub draining: IntGauge,
    /// RTP packets received from publishers.
    pub rtp_received: IntCounter,
    /// RTP packets publishers sent that never reached the server (estimated from the
    /// streams' sequence numbers).
    pub rtp_lost_in: IntCounter,
    /// RTP packets forwarded that subscribers reported lost (from their receiver reports).
    pub rtp_lost_out: IntCounter,
}

/// Why the media plane dropped a datagram: the `reason` label of
/// `plenary_media_dropped_datagrams_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN, from an address no peer on the shard is known by.
    UnknownSource,
    /// STUN naming an ICE username fragment no peer on the shard has.
    UnknownUfrag,
    /// The peer it was routed to did not take it (STUN whose integrity check failed, or
    /// from an address that is none of its candidate pairs).
    NotAccepted,
    /// Not a datagram WebRTC knows (neither STUN, DTLS, RTP nor RTCP).
    Malformed,
    /// The peer's WebRTC stack refused it while processing it.
    Refused,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 5] = [
        DropReason::UnknownSource,
        DropReason::UnknownUfrag,
        DropReason::NotAccepted,
        DropReason::Malformed,
        DropReason::Refused,
    ];

    /// The label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::UnknownUfrag => "unknown_ufrag",
            DropReason::NotAccepted => "not_accepted",
            DropReason::Malformed => "malformed",
            DropReason::Refused => "refused",
        }
    }
}

/// `plenary_media_dropped_datagrams_total`, one handle per reason.
pub struct DroppedDatagrams {
    handles: [IntCounter; 5],
}

impl DroppedDatagrams {
    /// The counter of `reason`.
    pub fn get(&self, reason: DropReason) -> &IntCounter {
        &self.handles[reason as usize]
    }
}

/// A counter vector whose every label value is created (so it shows at 0) and resolved at
/// start.
struct Labelled {
    handles: Vec<(&'static str, IntCounter)>,
    other: IntCounter,
}

impl Labelled {
    fn new(registry: &Registry, name: &str, help: &str, labels: &[&'static str]) -> Labelled {
        let vec = IntCounterVec::new(Opts::new(name, help), &["reason"]).expect("valid metric");
        registry
            .register(Box::new(vec.clone()))
            .expect("metric names are unique");
        Labelled {
            handles: labels
                .iter()
                .map(|l| (*l, vec.with_label_values(&[*l])))
                .collect(),
            other: vec.with_label_values(&["other"]),
        }
    }

    fn get(&self, label: &str) -> &IntCounter {
        self.handles
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(&self.other, |(_, c)| c)
    }
}

/// The `reason` labels of `plenary_sessions_cut_total`.
pub const CUT_REASONS: [&str; 4] = ["slow_consumer", "rate_limited", "too_large", "idle"];

/// The `reason` labels of `plenary_joins_refused_total` (created at start, so they show at 0).
pub const JOIN_REFUSAL_REASONS: [&str; 9] = [
    "invalid_grant",
    "wrong_room",
    "room_full",
    "server_full",
    "shutting_down",
    "locked",
    "barred",
    "lobby_full",
    "resume_failed",
];

impl Metrics {
    /// All metrics, registered, plus the process collector (CPU, memory, file descriptors).
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("plenary".into()), None).expect("a valid registry prefix");
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let gauge = |n: &str, h: &str| reg(&registry, IntGauge::new(n, h).expect("valid metric"));
        let counter =
            |n: &str, h: &str| reg(&registry, IntCounter::new(n, h).expect("valid metric"));
        let m = Metrics {
            rooms: gauge("rooms", "Open rooms"),
            participants: gauge("participants", "Participants in the media plane"),
            published_tracks: gauge("published_tracks", "Published tracks"),
            subscriptions: gauge("subscriptions", "Subscriptions (down-tracks)"),
            signaling_sessions: gauge("signaling_sessions", "Open signaling WebSockets"),
            packets_in: counter("udp_packets_in_total", "UDP datagrams received"),
            packets_out: counter("udp_packets_out_total", "UDP datagrams sent"),
            bytes_in: counter("udp_bytes_in_total", "UDP bytes received"),
            bytes_out: counter("udp_bytes_out_total", "UDP bytes sent"),
            rtp_forwarded: counter(
                "rtp_forwarded_total",
                "RTP packets forwarded to subscribers",
            ),
            nacks_received: counter("nacks_received_total", "NACKs received from subscribers"),
            nacks_sent: counter("nacks_sent_total", "NACKs sent to publishers"),
            keyframe_requests_received: counter(
                "keyframe_requests_received_total",
                "PLI/FIR received from subscribers",
            ),
            keyframe_requests_sent: counter(
                "keyframe_requests_sent_total",
                "Keyframe requests (PLI) sent to publishers",
            ),
            datagrams_unknown: counter("datagrams_unknown_total", "Datagrams from no known peer"),
            datagrams_rejected: counter(
                "datagrams_rejected_total",
                "Datagrams a known peer refused",
            ),
            send_errors: counter("udp_send_errors_total", "Datagrams that could not be sent"),
            send_calls: counter(
                "udp_send_calls_total",
                "Send system calls (sendmmsg batches)",
            ),
            shards: gauge("media_shards", "Media shards (threads, one UDP port each)"),
            shards_overloaded: gauge(
                "media_shards_overloaded",
                "Media shards shedding load (overload level 1 or more)",
            ),
            overload_level: gauge(
                "media_overload_level",
                "Highest shard overload level: 0 normal, 1 thumbnails shed, 2 video shed, 3 joins refused",
            ),
            relayed: counter(
                "relayed_packets_total",
                "RTP packets handed from a publisher's shard to another shard's subscribers",
            ),
            relay_drops: counter(
                "relay_drops_total",
                "Relayed packets dropped because the receiving shard had fallen behind",
            ),
            kernel_drops: gauge(
                "udp_receive_buffer_drops",
                "Datagrams the kernel dropped for the media socket (receive buffer full), since it was opened",
            ),
            join_latency: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("join_latency_seconds", "Time from join to media connected")
                        .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0]),
                )
                .expect("valid metric"),
            ),
            joins_refused: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("joins_refused_total", "Joins refused, by reason"),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            tcp_frames_in: counter("ice_tcp_frames_in_total", "ICE-TCP frames received"),
            tcp_frames_out: counter("ice_tcp_frames_out_total", "ICE-TCP frames sent"),
            ice_tcp_connections: gauge("ice_tcp_connections", "Open ICE-TCP connections"),
            ice_tcp_refused: counter(
                "ice_tcp_refused_total",
                "ICE-TCP connections refused or cut off (bad framing, not ours, too many)",
            ),
            ice_restarts: counter(
                "ice_restarts_total",
                "ICE restarts by clients (media path mended on the same session)",
            ),
            dropped: {
                let vec = reg(
                    &registry,
                    IntCounterVec::new(
                        Opts::new(
                            "media_dropped_datagrams_total",
                            "Datagrams the media plane dropped, by reason",
                        ),
                        &["reason"],
                    )
                    .expect("valid metric"),
                );
                DroppedDatagrams {
                    handles: DropReason::ALL.map(|r| vec.with_label_values(&[r.label()])),
                }
            },
            signaling_refused: Labelled::new(
                &registry,
                "signaling_refused_total",
                "Signaling WebSockets refused (HTTP 429) by the per-address limits, by reason",
                &crate::admission::REFUSAL_LABELS,
            ),
            sessions_cut: Labelled::new(
                &registry,
                "sessions_cut_total",
                "Signaling sessions the server cut off for their behaviour, by reason",
                &CUT_REASONS,
            ),
            draining: gauge(
                "draining",
                "1 while the server drains before stopping (joins refused, clients told)",
            ),
            rtp_received: counter("rtp_received_total", "RTP packets received from publishers"),
            rtp_lost_in: counter(
                "rtp_lost_in_total",
                "RTP packets publishers sent that never reached the server (estimated)",
            ),
            rtp_lost_out: counter(
                "rtp_lost_out_total",
                "RTP packets forwarded that subscribers reported lost (receiver reports)",
            ),
            registry,
        };
        for reason in JOIN_REFUSAL_REASONS {
            m.joins_refused.with_label_values(&[reason]);
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = m.registry.register(Box::new(pc));
        }
        m
    }

    /// `plenary_signaling_refused_total{reason}`.
    pub fn signaling_refused(&self, reason: &str) -> &IntCounter {
        self.signaling_refused.get(reason)
    }

    /// `plenary_sessions_cut_total{reason}` (one of [`CUT_REASONS`]).
    pub fn sessions_cut(&self, reason: &str) -> &IntCounter {
        self.sessions_cut.get(reason)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The media plane's plain counters (hot path: `+= 1` on a field).
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaCounters {
    /// Datagrams received.
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// RTP packets forwarded.
    pub rtp_forwarded: u64,
    /// NACKs from subscribers.
    pub nacks_received: u64,
    /// NACKs to publishers.
    pub nacks_sent: u64,
    /// PLI/FIR from subscribers.
    pub keyframe_requests_received: u64,
    /// PLIs to publishers.
    pub keyframe_requests_sent: u64,
    /// Datagrams from nobody we know.
    pub datagrams_unknown: u64,
    /// Datagrams refused.
    pub datagrams_rejected: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// `sendmmsg` (or `send_to`) calls made.
    pub send_calls: u64,
    /// Packets relayed to other shards.
    pub relayed: u64,
    /// Relays dropped (a full ring).
    pub relay_drops: u64,
    /// ICE-TCP frames received.
    pub tcp_frames_in: u64,
    /// ICE-TCP frames sent.
    pub tcp_frames_out: u64,
    /// Datagrams dropped, by [`DropReason`] (its index).
    pub dropped: [u64; 5],
    /// RTP packets received from publishers.
    pub rtp_received: u64,
    /// RTP packets lost on the way from publishers (estimated).
    pub rtp_lost_in: u64,
    /// RTP packets subscribers reported lost.
    pub rtp_lost_out: u64,
}

impl MediaCounters {
    /// Counts a dropped datagram.
    pub fn drop_datagram(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }
}

impl MediaCounters {
    /// Adds what changed since `last` to the metrics and remembers the new values.
    pub fn publish(&self, last: &mut MediaCounters, m: &Metrics) {
        let pairs: [(&IntCounter, u64, u64); 20] = [
            (&m.packets_in, self.packets_in, last.packets_in),
            (&m.packets_out, self.packets_out, last.packets_out),
            (&m.bytes_in, self.bytes_in, last.bytes_in),
            (&m.bytes_out, self.bytes_out, last.bytes_out),
            (&m.rtp_forwarded, self.rtp_forwarded, last.rtp_forwarded),
            (&m.nacks_received, self.nacks_received, last.nacks_received),
            (&m.nacks_sent, self.nacks_sent, last.nacks_sent),
            (
                &m.keyframe_requests_received,
                self.keyframe_requests_received,
                last.keyframe_requests_received,
            ),
            (
                &m.keyframe_requests_sent,
                self.keyframe_requests_sent,
                last.keyframe_requests_sent,
            ),
            (
                &m.datagrams_unknown,
                self.datagrams_unknown,
                last.datagrams_unknown,
            ),
            (
                &m.datagrams_rejected,
                self.datagrams_rejected,
                last.datagrams_rejected,
            ),
            (&m.send_errors, self.send_errors, last.send_errors),
            (&m.send_calls, self.send_calls, last.send_calls),
            (&m.relayed, self.relayed, last.relayed),
            (&m.relay_drops, self.relay_drops, last.relay_drops),
            (&m.tcp_frames_in, self.tcp_frames_in, last.tcp_frames_in),
            (&m.tcp_frames_out, self.tcp_frames_out, last.tcp_frames_out),
            (&m.rtp_received, self.rtp_received, last.rtp_received),
            (&m.rtp_lost_in, self.rtp_lost_in, last.rtp_lost_in),
            (&m.rtp_lost_out, self.rtp_lost_out, last.rtp_lost_out),
        ];
        for (metric, now, before) in pairs {
            metric.inc_by(now.saturating_sub(before));
        }
        for reason in DropReason::ALL {
            let i = reason as usize;
            m.dropped
                .get(reason)
                .inc_by(self.dropped[i].saturating_sub(last.dropped[i]));
        }
        *last = *self;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_publish_deltas() {
        let m = Metrics::new();
        let mut last = MediaCounters::default();
        let mut c = MediaCounters {
            packets_in: 10,
            rtp_forwarded: 4,
            ..MediaCounters::default()
        };
        c.publish(&mut last, &m);
        c.packets_in = 15;
        c.publish(&mut last, &m);
        assert_eq!(m.packets_in.get(), 15);
        assert_eq!(m.rtp_forwarded.get(), 4);
        let text = m.render();
        assert!(text.contains("plenary_udp_packets_in_total 15"), "{text}");
        assert!(text.contains("plenary_join_latency_seconds_bucket"));
        assert!(
            text.contains(r#"plenary_joins_refused_total{reason="shutting_down"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"plenary_signaling_refused_total{reason="too_many_sessions"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn dropped_datagrams_publish_by_reason() {
        let m = Metrics::new();
        let mut last = MediaCounters::default();
        let mut c = MediaCounters::default();
        c.drop_datagram(DropReason::UnknownSource);
        c.drop_datagram(DropReason::UnknownSource);
        c.drop_datagram(DropReason::NotAccepted);
        c.publish(&mut last, &m);
        c.drop_datagram(DropReason::UnknownSource);
        c.publish(&mut last, &m);
        let text = m.render();
        assert!(
            text.contains(r#"plenary_media_dropped_datagrams_total{reason="unknown_source"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"plenary_media_dropped_datagrams_total{reason="not_accepted"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"plenary_media_dropped_datagrams_total{reason="malformed"} 0"#),
            "{text}"
        );
        m.sessions_cut("rate_limited").inc();
        m.sessions_cut("nonsense").inc();
        let text = m.render();
        assert!(text.contains(r#"plenary_sessions_cut_total{reason="rate_limited"} 1"#));
        assert!(text.contains(r#"plenary_sessions_cut_total{reason="other"} 1"#));
    }
}
