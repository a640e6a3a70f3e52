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
}

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
            registry,
        };
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = m.registry.register(Box::new(pc));
        }
        m
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
}

impl MediaCounters {
    /// Adds what changed since `last` to the metrics and remembers the new values.
    pub fn publish(&self, last: &mut MediaCounters, m: &Metrics) {
        let pairs: [(&IntCounter, u64, u64); 17] = [
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
        ];
        for (metric, now, before) in pairs {
            metric.inc_by(now.saturating_sub(before));
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
    }
}
