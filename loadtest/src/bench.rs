//! `plenary-loadtest bench`: starts a local Plenary (one fresh process per scenario, on
//! loopback, with a bench API key), runs the standard scenarios, measures this machine's
//! floor, and prints one table.
//!
//! Scenarios: (a) large audio room — S speakers (microphone only) and N listeners;
//! (b) general meeting — 3 speakers with camera and microphone, N listeners; (c) fan-out —
//! one 1.5 Mbps camera to N viewers; (d) the big general meeting — 5 microphone speakers
//! taking turns (one talking at a time), one camera on the floor (low profile), N listeners
//! (default 1,000) joining at 100/s, held 60 s; `--scale 100,300,1000` runs (d) at each
//! size, and `--compare-shards` runs it with 1 and 2 media shards. For each: the SFU's CPU time per forwarded packet,
//! forwarded packets per second per core, memory per participant, loss, latency and join
//! p95 — and the CPU per packet as a multiple of the floor (see [`crate::floor`]).

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::cli::{parse_duration, parse_rate};
use crate::config::RunConfig;
use crate::floor::{self, Floor, FloorError};
use crate::report::Report;
use crate::run::{run, RunError};
use crate::server::http_get;
use crate::synth::VideoProfile;

/// Flags of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The Plenary binary (build it with `cargo build --release -p plenary`).
    #[arg(long, default_value = "target/release/plenary")]
    pub plenary: PathBuf,
    /// Speakers in (a).
    #[arg(long, default_value_t = 10)]
    pub speakers: usize,
    /// Listeners in (a) and (b).
    #[arg(long, default_value_t = 50)]
    pub listeners: usize,
    /// Viewers in (c).
    #[arg(long, default_value_t = 50)]
    pub viewers: usize,
    /// How long each scenario holds its load.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Join rate.
    #[arg(long, default_value = "25/s", value_parser = parse_rate)]
    pub ramp: f64,
    /// Only these scenarios (e.g. `ac`; `d` is the big general meeting, not run by default).
    #[arg(long, default_value = "abc")]
    pub only: String,
    /// Listeners in (d), the big general meeting.
    #[arg(long, default_value_t = 1000)]
    pub gm_listeners: usize,
    /// Speakers in (d), taking turns.
    #[arg(long, default_value_t = 5)]
    pub gm_speakers: usize,
    /// Length of a speaker's turn in (d).
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    pub gm_turn: Duration,
    /// How long (d) holds its load.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub gm_duration: Duration,
    /// Join rate of (d).
    #[arg(long, default_value = "100/s", value_parser = parse_rate)]
    pub gm_ramp: f64,
    /// Run (d) at each of these listener counts (e.g. 100,300,1000): the scaling table.
    #[arg(long, value_delimiter = ',')]
    pub scale: Vec<usize>,
    /// Media shards of the server (passed as PLENARY_MEDIA_SHARDS; only set when given —
    /// a server without shards refuses the variable).
    #[arg(long)]
    pub server_shards: Option<usize>,
    /// Also run (d) with 1 and with 2 media shards (needs a server that has them).
    #[arg(long)]
    pub compare_shards: bool,
    /// Decrypt every received packet with webrtc-rs (the old receive path), for comparison.
    #[arg(long)]
    pub full_decrypt: bool,
    /// Network classes of the attendees' downlinks, as for a load test's `--network`.
    #[arg(long, value_parser = crate::netem::NetMix::parse)]
    pub network: Option<crate::netem::NetMix>,
    /// Worker threads of the load tester.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Send each video frame in one burst instead of pacing it.
    #[arg(long)]
    pub no_pacing: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Why the bench failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Plenary could not be started.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The binary.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Plenary did not become healthy.
    #[error("Plenary did not answer /healthz within 15 s (see {0})")]
    NotHealthy(String),
    /// Plenary exited at start.
    #[error("Plenary exited at start ({status}); its log {log} ends with:\n{tail}")]
    Exited {
        /// Exit status.
        status: String,
        /// Log file.
        log: String,
        /// Its last lines.
        tail: String,
    },
    /// A port could not be found.
    #[error("cannot find a free port: {0}")]
    Port(std::io::Error),
    /// A scenario could not run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The floor could not be measured.
    #[error(transparent)]
    Floor(#[from] FloorError),
}

/// One table row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario.
    pub scenario: String,
    /// Listeners (subscribers) in it.
    pub listeners: usize,
    /// PLENARY_MEDIA_SHARDS given to the server, if any.
    pub server_shards: Option<usize>,
    /// Simulated participants.
    pub participants: usize,
    /// The floor for this scenario's packet mix, µs/packet.
    pub floor_us: f64,
    /// The full report.
    pub report: Report,
}

/// Everything the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Floor for audio-sized packets.
    pub floor_audio: Floor,
    /// Floor for video-sized packets.
    pub floor_video: Floor,
    /// One per scenario.
    pub rows: Vec<Row>,
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_ports() -> Result<(u16, u16), BenchError> {
    let tcp = TcpListener::bind("127.0.0.1:0").map_err(BenchError::Port)?;
    let udp = UdpSocket::bind("127.0.0.1:0").map_err(BenchError::Port)?;
    let ports = (
        tcp.local_addr().map_err(BenchError::Port)?.port(),
        udp.local_addr().map_err(BenchError::Port)?.port(),
    );
    Ok(ports)
}

pub(crate) async fn start_server(
    binary: &PathBuf,
    secret: &str,
    tag: &str,
    shards: Option<usize>,
) -> Result<Server, BenchError> {
    let (http, media) = free_ports()?;
    let log = std::env::temp_dir().join(format!("plenary-bench-{}-{tag}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).map_err(|source| BenchError::Spawn {
        path: log.display().to_string(),
        source,
    })?;
    let log_err = log_file.try_clone().map_err(|source| BenchError::Spawn {
        path: log.display().to_string(),
        source,
    })?;
    let mut cmd = Command::new(binary);
    if let Some(n) = shards {
        cmd.env("PLENARY_MEDIA_SHARDS", n.to_string());
    }
    let child = cmd
        .arg("serve")
        .env(
            "PLENARY_AUTH_API_KEYS",
            format!("{{ bench = \"{secret}\" }}"),
        )
        .env("PLENARY_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("PLENARY_MEDIA_ADDR", format!("127.0.0.1:{media}"))
        .env("PLENARY_LOG", "warn")
        // Every simulated attendee comes from this one machine: no per-address limits.
        .env("PLENARY_LIMITS_SESSIONS_PER_ADDRESS", "0")
        .env("PLENARY_LIMITS_SESSION_RATE_PER_ADDRESS", "0")
        // (d) puts 1,000 listeners in one room: above the default of 500 per room.
        .env("PLENARY_LIMITS_MAX_PARTICIPANTS_PER_ROOM", "2000")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|source| BenchError::Spawn {
            path: binary.display().to_string(),
            source,
        })?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{http}"),
        log,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if http_get(addr, "127.0.0.1", "/healthz").await.is_ok() {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            return Err(BenchError::Exited {
                status: status.to_string(),
                log: server.log.display().to_string(),
                tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BenchError::NotHealthy(server.log.display().to_string()))
}

/// Runs the bench; prints progress lines to stderr.
pub async fn bench(args: &BenchArgs) -> Result<BenchResult, BenchError> {
    let secret = format!(
        "bench-secret-{:x}-{:x}-0123456789abcdef",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    eprintln!("measuring the floor (SRTP AES-128-GCM encrypt + one UDP send per packet)...");
    let floor_audio = tokio::task::spawn_blocking(|| floor::measure(100, 200_000, 3))
        .await
        .map_err(|e| FloorError::Srtp(e.to_string()))??;
    let floor_video = tokio::task::spawn_blocking(|| floor::measure(1100, 100_000, 3))
        .await
        .map_err(|e| FloorError::Srtp(e.to_string()))??;
    let mut rows = Vec::new();
    // (tag, label, listeners, shards)
    let mut plan: Vec<(char, String, usize, Option<usize>)> = Vec::new();
    for (tag, name) in [
        ('a', "a) audio room"),
        ('b', "b) general meeting"),
        ('c', "c) 1.5 Mbps fan-out"),
    ] {
        if args.only.contains(tag) {
            let n = if tag == 'c' {
                args.viewers
            } else {
                args.listeners
            };
            plan.push((tag, name.to_owned(), n, args.server_shards));
        }
    }
    let mut sizes = args.scale.clone();
    if sizes.is_empty() && args.only.contains('d') {
        sizes.push(args.gm_listeners);
    }
    for n in &sizes {
        plan.push((
            'd',
            format!("d) big GM, {n} listeners"),
            *n,
            args.server_shards,
        ));
    }
    if args.compare_shards {
        let n = sizes.first().copied().unwrap_or(args.gm_listeners);
        for shards in [1, 2] {
            plan.push((
                'd',
                format!("d) big GM, {n} listeners, {shards} shard(s)"),
                n,
                Some(shards),
            ));
        }
    }
    for (tag, name, listeners, shards) in plan {
        let server = start_server(&args.plenary, &secret, &tag.to_string(), shards).await?;
        let mut c = RunConfig::new(&server.url, "bench", &secret);
        c.room = format!("bench-{tag}");
        c.duration = args.duration;
        c.ramp_per_sec = args.ramp;
        c.progress = true;
        c.no_pacing = args.no_pacing;
        c.full_decrypt = args.full_decrypt;
        c.network = args.network.clone();
        c.server_pid = Some(server.child.id());
        c.subscribers = listeners;
        match tag {
            'a' => {
                c.audio_publishers = args.speakers;
            }
            'b' => {
                c.publishers = 3;
                c.video = VideoProfile::by_name("sd").unwrap_or(c.video);
            }
            'c' => {
                c.video_publishers = 1;
                c.video = VideoProfile::by_name("hd").unwrap_or(c.video);
            }
            _ => {
                c.audio_publishers = args.gm_speakers;
                c.video_publishers = 1;
                c.video = VideoProfile::by_name("low").unwrap_or(c.video);
                c.turn = Some(args.gm_turn);
                c.duration = args.gm_duration;
                c.ramp_per_sec = args.gm_ramp;
                // 1,000 joins: a longer join timeout, so a slow ramp shows as slow joins.
                c.join_timeout = Duration::from_secs(30);
            }
        }
        eprintln!("scenario {name}: {} participants", c.total());
        let report = run(&c).await?;
        drop(server);
        eprintln!("{}", report.render());
        let (a, v) = (report.packets.received_audio, report.packets.received_video);
        let floor_us = if a + v == 0 {
            0.0
        } else {
            (a as f64 * floor_audio.us_per_packet + v as f64 * floor_video.us_per_packet)
                / (a + v) as f64
        };
        rows.push(Row {
            scenario: name,
            listeners,
            server_shards: shards,
            participants: c.total(),
            floor_us,
            report,
        });
    }
    Ok(BenchResult {
        floor_audio,
        floor_video,
        rows,
    })
}

/// The table.
pub fn render(b: &BenchResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "floor (SRTP AES-128-GCM + 1 UDP send): {:.2} µs/packet at {} B, {:.2} µs/packet at {} B",
        b.floor_audio.us_per_packet,
        b.floor_audio.payload_bytes,
        b.floor_video.us_per_packet,
        b.floor_video.payload_bytes
    );
    let _ = writeln!(
        o,
        "| scenario | peers | fwd pkt/s | SFU CPU | µs/fwd pkt | × floor | fwd pkt/s per core | dgrams/send call | KB/participant | loss % | latency p50/p95 ms | join p95 ms | loadtest CPU | loadtest µs/dgram (steady) |"
    );
    let _ = writeln!(
        o,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &b.rows {
        let rep = &r.report;
        let st = rep.server.steady.unwrap_or_default();
        let ratio = if r.floor_us > 0.0 {
            st.cpu_us_per_forwarded / r.floor_us
        } else {
            0.0
        };
        let _ = writeln!(
            o,
            "| {} | {} | {:.0} | {:.0} % | {:.2} | {:.1}× | {:.0} | {:.1} | {:.0} | {:.3} | {:.1} / {:.1} | {:.0} | {:.0} % | {:.2} |",
            r.scenario,
            r.participants,
            st.forwarded_per_sec,
            st.cpu_percent,
            st.cpu_us_per_forwarded,
            ratio,
            st.forwarded_per_core_sec,
            st.datagrams_per_send_call,
            rep.server.memory_per_participant_kb,
            rep.packets.loss_pct,
            rep.latency_ms.p50,
            rep.latency_ms.p95,
            rep.join_ms.p95,
            rep.loadtest_cpu_pct,
            rep.loadtest_steady_us_per_datagram,
        );
    }
    let d: Vec<&Row> = b
        .rows
        .iter()
        .filter(|r| r.scenario.starts_with("d)"))
        .collect();
    if !d.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "Scaling of (d): | listeners | shards | fwd pkt/s | µs SFU CPU/fwd pkt | KB/listener | loss % | frozen s per viewer | join p95 ms |"
        );
        let _ = writeln!(o, "|---:|---|---:|---:|---:|---:|---:|---:|");
        for r in d {
            let rep = &r.report;
            let st = rep.server.steady.unwrap_or_default();
            let sv = &rep.server;
            let kb = if r.listeners > 0 {
                (sv.rss_peak_mb - sv.rss_start_mb).max(0.0) * 1024.0 / r.listeners as f64
            } else {
                0.0
            };
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {:.2} | {:.0} | {:.3} | {:.2} | {:.0} |",
                r.listeners,
                r.server_shards
                    .map_or_else(|| "default".to_owned(), |n| n.to_string()),
                st.forwarded_per_sec,
                st.cpu_us_per_forwarded,
                kb,
                rep.packets.loss_pct,
                rep.frames.frozen_secs / rep.joins.succeeded.max(1) as f64,
                rep.join_ms.p95,
            );
        }
    }
    o
}
