//! Command-line flags (clap) and the small value parsers they use: durations (`60s`,
//! `500ms`, `2m`), rates (`20/s`), percentages (`1%`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{RunConfig, Thresholds};
use crate::synth::VideoProfile;

/// Simulated attendees for Plenary: real WebRTC peers that join, publish and listen, and a
/// report of what attendees would experience.
#[derive(Debug, Parser)]
#[command(
    name = "plenary-loadtest",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A subcommand; without one, run a load test.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The load test's flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start Plenary locally and run the standard scenarios; print one table.
    Bench(crate::bench::BenchArgs),
    /// Join and leave many times against one server; check it gives everything back.
    Churn(crate::churn::ChurnArgs),
    /// Combine the JSON reports of processes that shared a run with --shard-of.
    Combine {
        /// The reports (each process's --json).
        files: Vec<PathBuf>,
    },
}

/// Flags of a load test.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Plenary's base URL (http:// or https://; signaling then uses ws:// or wss://).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Accept any certificate of an https:// server (self-signed test certificates only).
    #[arg(long)]
    pub insecure: bool,
    /// API key that signs grants (a key of the server's `auth.api_keys`).
    #[arg(long, env = "PLENARY_LOADTEST_API_KEY", default_value = "")]
    pub api_key: String,
    /// Its secret.
    #[arg(
        long,
        env = "PLENARY_LOADTEST_API_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub api_secret: String,
    /// The grants' audience (the server's `auth.audience`).
    #[arg(long, default_value = "plenary")]
    pub audience: String,
    /// Room name; with --rooms N the rooms are NAME-1 .. NAME-N.
    #[arg(long, default_value = "loadtest")]
    pub room: String,
    /// Rooms at once, each with the counts below.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Speakers with camera and microphone, per room.
    #[arg(long, default_value_t = 0)]
    pub publishers: usize,
    /// Speakers with a microphone only, per room.
    #[arg(long, default_value_t = 0)]
    pub audio_publishers: usize,
    /// Cameras without microphone, per room.
    #[arg(long, default_value_t = 0)]
    pub video_publishers: usize,
    /// Listeners, per room.
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
    /// How long to hold the full load after the ramp (e.g. 60s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Join rate (e.g. 20/s).
    #[arg(long, default_value = "20/s", value_parser = parse_rate)]
    pub ramp: f64,
    /// Camera profile: low (180p 150 kbps), sd (360p 500 kbps), hd (720p 1.5 Mbps), screen
    /// (1080p, 5 fps, large keyframe bursts).
    #[arg(long, default_value = "sd", value_parser = parse_profile)]
    pub video_profile: VideoProfile,
    /// Override the profile's bitrate, kbps.
    #[arg(long)]
    pub video_kbps: Option<u32>,
    /// Override the profile's keyframe interval, seconds.
    #[arg(long)]
    pub keyframe_interval: Option<u32>,
    /// Send each video frame in one burst (default: paced at 2.5× the bitrate, as browsers do).
    #[arg(long)]
    pub no_pacing: bool,
    /// Cameras publish simulcast: three layers (rids q, h, f at ¼, ½ and full resolution, 10 %,
    /// 33 % and 100 % of the bitrate) with RTX, offered as `a=simulcast:send q;h;f`.
    #[arg(long)]
    pub simulcast: bool,
    /// Longest time a join may take.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub join_timeout: Duration,
    /// Local IP for media sockets (default: the one routing to the server).
    #[arg(long)]
    pub local_ip: Option<IpAddr>,
    /// Peers driven by one task.
    #[arg(long, default_value_t = 32)]
    pub peers_per_task: usize,
    /// Worker threads of the load tester.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No status line every second.
    #[arg(long)]
    pub quiet: bool,
    /// Do not read the server's /metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// The server's process id, if it runs on this machine (CPU and memory from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Network classes applied to each attendee's downlink, in userspace: e.g.
    /// `70%:good,20%:cap=1500kbps,loss=1%,10%:cap=400kbps,loss=3%,delay=80ms`
    /// (parameters: good, cap, loss, delay, jitter, buffer).
    #[arg(long, value_parser = crate::netem::NetMix::parse)]
    pub network: Option<crate::netem::NetMix>,
    /// Speakers take turns of this length, one talking at a time (e.g. 4s); default: each
    /// talks about 60 % of the time.
    #[arg(long, value_parser = parse_duration)]
    pub turns: Option<Duration>,
    /// Send every attendee's media through the TURN server the welcome names (Plenary's
    /// `[turn]`, e.g. coturn), with the welcome's credentials: a relayed meeting. Implies
    /// --full-decrypt.
    #[arg(long)]
    pub turn: bool,
    /// Decrypt every received packet with webrtc-rs (the old, costly receive path) instead of
    /// accounting from RTP headers and decrypting a sample.
    #[arg(long)]
    pub full_decrypt: bool,
    /// Simulate only slice I of N of the participants (`0/2`, `1/2`: two processes share one
    /// run); the report says it is partial.
    #[arg(long, value_parser = parse_shard)]
    pub shard_of: Option<(usize, usize)>,
    /// Fail (exit 2) if packet loss exceeds this (e.g. 1%).
    #[arg(long, value_parser = parse_percent)]
    pub max_loss: Option<f64>,
    /// Fail if the 95th percentile time to join exceeds this (e.g. 1s).
    #[arg(long, value_parser = parse_duration)]
    pub max_join_p95: Option<Duration>,
    /// Fail if the 95th percentile end-to-end latency exceeds this (e.g. 150ms).
    #[arg(long, value_parser = parse_duration)]
    pub max_latency_p95: Option<Duration>,
    /// Fail if more joins than this fail.
    #[arg(long)]
    pub max_failed_joins: Option<u64>,
}

impl RunArgs {
    /// The run configuration these flags describe.
    pub fn to_config(&self) -> RunConfig {
        let mut c = RunConfig::new(&self.url, &self.api_key, &self.api_secret);
        c.audience = self.audience.clone();
        c.insecure = self.insecure;
        c.room = self.room.clone();
        c.rooms = self.rooms;
        c.publishers = self.publishers;
        c.audio_publishers = self.audio_publishers;
        c.video_publishers = self.video_publishers;
        c.subscribers = self.subscribers;
        c.duration = self.duration;
        c.ramp_per_sec = self.ramp;
        c.video = self.video_profile;
        if let Some(kbps) = self.video_kbps {
            c.video.bitrate = kbps.saturating_mul(1000).max(10_000);
        }
        if let Some(k) = self.keyframe_interval {
            c.video.keyframe_secs = k.max(1);
        }
        c.no_pacing = self.no_pacing;
        c.simulcast = self.simulcast;
        c.join_timeout = self.join_timeout;
        c.local_ip = self.local_ip;
        c.peers_per_task = self.peers_per_task;
        c.progress = !self.quiet;
        c.scrape_metrics = !self.no_metrics;
        c.server_pid = self.server_pid;
        c.full_decrypt = self.full_decrypt;
        c.turn = self.turns.filter(|t| !t.is_zero());
        c.relay = self.turn;
        c.network = self.network.clone();
        c.shard = self.shard_of.unwrap_or((0, 1));
        c.thresholds = Thresholds {
            max_loss_pct: self.max_loss,
            max_join_p95: self.max_join_p95,
            max_latency_p95: self.max_latency_p95,
            max_failed_joins: self.max_failed_joins,
        };
        c
    }
}

/// `60s`, `500ms`, `2m`, `1h`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 60s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s, m, h)")),
    };
    if !secs.is_finite() || !(0.0..=1e7).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `20/s`, `5/m`, or a bare number per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, per) = s.split_once('/').unwrap_or((s, "s"));
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (try 20/s)"))?;
    let per_sec = match per.trim() {
        "s" => n,
        "m" | "min" => n / 60.0,
        other => return Err(format!("unknown rate unit {other:?} (use /s or /m)")),
    };
    if !(per_sec > 0.0 && per_sec.is_finite()) {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(per_sec)
}

/// `1%`, `0.5 %`, or a bare number (percent).
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (try 1%)"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("{s:?} is not between 0 and 100 %"));
    }
    Ok(n)
}

/// `I/N` with `0 <= I < N <= 64`.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?} is not a shard: use I/N with 0 <= I < N, e.g. 0/2");
    let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || i >= n || n > 64 {
        return Err(bad());
    }
    Ok((i, n))
}

fn parse_profile(s: &str) -> Result<VideoProfile, String> {
    VideoProfile::by_name(s).ok_or_else(|| {
        let names: Vec<_> = VideoProfile::ALL.iter().map(|p| p.name).collect();
        format!("unknown profile {s:?}; one of {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 days").is_err());
    }

    #[test]
    fn rates_and_percentages() {
        assert_eq!(parse_rate("20/s"), Ok(20.0));
        assert_eq!(parse_rate("120/m"), Ok(2.0));
        assert_eq!(parse_rate("5"), Ok(5.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("x/s").is_err());
        assert_eq!(parse_percent("1%"), Ok(1.0));
        assert_eq!(parse_percent("0.5 %"), Ok(0.5));
        assert!(parse_percent("150%").is_err());
        assert_eq!(parse_shard("1/3"), Ok((1, 3)));
        assert!(parse_shard("3/3").is_err());
        assert!(parse_shard("0/0").is_err());
        assert!(parse_shard("1").is_err());
        assert!(parse_shard("a/2").is_err());
    }

    #[test]
    fn the_issue_example_parses() {
        let cli = Cli::try_parse_from([
            "plenary-loadtest",
            "--url",
            "http://127.0.0.1:8080",
            "--api-key",
            "K",
            "--api-secret",
            "S",
            "--room",
            "gm",
            "--publishers",
            "5",
            "--subscribers",
            "300",
            "--duration",
            "60s",
            "--ramp",
            "20/s",
            "--max-loss",
            "1%",
            "--max-join-p95",
            "1s",
        ])
        .unwrap();
        let c = cli.run.to_config();
        assert_eq!(c.publishers, 5);
        assert_eq!(c.subscribers, 300);
        assert_eq!(c.duration, Duration::from_secs(60));
        assert_eq!(c.ramp_per_sec, 20.0);
        assert_eq!(c.thresholds.max_loss_pct, Some(1.0));
        assert_eq!(c.thresholds.max_join_p95, Some(Duration::from_secs(1)));
        assert!(cli.command.is_none());
    }
}
