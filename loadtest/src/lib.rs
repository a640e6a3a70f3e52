//! `plenary-loadtest`: simulated attendees for Plenary that are real WebRTC peers
//! (webrtc-rs's sans-IO `rtc`: ICE, DTLS, SRTP, RTCP), and a report of what attendees
//! would experience.
//!
//! # Layout
//! - [`cli`]: flags and their value parsers.
//! - [`config`]: a run's configuration, the participants it simulates, thresholds.
//! - [`grant`]: room grants minted with the operator's API key.
//! - [`signal`]: one participant's signaling WebSocket.
//! - [`peer`]: one participant's peer connection and socket.
//! - [`group`]: one task driving many peers: I/O, timers, media, measurement.
//! - [`keyframe_tap`]: lets simulated cameras hear keyframe requests.
//! - [`synth`]: synthetic Opus and VP8 payloads carrying send time and sequence number.
//! - [`stats`]: loss, jitter, latency histogram, percentiles.
//! - [`report`]: aggregation, rendering, thresholds.
//! - [`server`]: the server's URL and `/metrics`; [`tls`]: `https://` / `wss://`.
//! - [`turn`]: `--turn`, every attendee's media through the welcome's TURN server.
//! - [`cpu`]: this process's CPU time.
//! - [`run`]: one load test, start to report.
//! - [`floor`] and [`bench`]: the `bench` subcommand.
//! - [`keys`]: SRTP keys captured from webrtc-rs, in-place SRTP decryption of samples.
//! - [`rtprx`]: receive accounting from clear RTP headers; RR, TWCC, NACK state.
//! - [`red`]: RED (RFC 2198) audio redundancy payloads, as listeners on lossy links get them.
//! - [`netem`]: per-attendee network classes (cap, loss, delay) shaped in userspace.
//! - [`churn`]: the `churn` subcommand (join/leave cycles, leak checks).
//! - [`combine`]: one summary of the partial reports of `--shard-of` processes.

pub mod bench;
pub mod churn;
pub mod cli;
pub mod combine;
pub mod config;
pub mod cpu;
pub mod floor;
pub mod grant;
pub mod group;
pub mod keyframe_tap;
pub mod keys;
pub mod netem;
pub mod peer;
pub mod red;
pub mod report;
pub mod rtprx;
pub mod run;
pub mod server;
pub mod signal;
pub mod stats;
pub mod synth;
pub mod tls;
pub mod turn;

pub use config::RunConfig;
pub use report::Report;
pub use run::{run, RunError};
