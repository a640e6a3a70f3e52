//! One load test from start to report: mint grants, start the groups, ramp the joins up,
//! hold the load, print progress each second, sample the server's `/metrics`, stop, and
//! aggregate.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{plan, ConfigError, RunConfig};
use crate::cpu::CpuMeter;
use crate::grant::{GrantError, Minter};
use crate::group::{Group, GroupCmd, GroupShared, Live};
use crate::report::{Report, ServerReport};
use crate::server::{parse_metrics, Samples, ServerError, ServerUrl};
use crate::signal;
use crate::stats::percent;

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server's URL or HTTP side.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Grants.
    #[error(transparent)]
    Grant(#[from] GrantError),
}

/// Time given to packets in flight after the media stops.
const DRAIN: Duration = Duration::from_secs(1);
/// Longest wait for a group to take a command or report.
const GROUP_REPLY: Duration = Duration::from_secs(10);

/// The local address that routes to `server` (no packet is sent).
pub fn route_ip(server: SocketAddr) -> IpAddr {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid address")
    } else {
        "[::]:0".parse().expect("valid address")
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(server).map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(server.ip())
}

/// Runs one load test and returns its report (thresholds already checked).
pub async fn run(cfg: &RunConfig) -> Result<Report, RunError> {
    cfg.validate()?;
    let url = ServerUrl::parse_with(&cfg.url, cfg.insecure)?;
    let server_addr = url.resolve().await?;
    let local_ip = cfg.local_ip.unwrap_or_else(|| route_ip(server_addr));
    // Grants are minted at each join and used at once: they need to live only as long as
    // a join may take (servers refuse grants that live longer than 10 minutes by default).
    let ttl = (cfg.join_timeout + Duration::from_secs(120)).min(Duration::from_secs(540));
    let minter = Minter::new(&cfg.api_key, &cfg.api_secret, &cfg.audience, ttl)?;
    let plan = plan(cfg);
    let total = cfg.local_total();
    let shard_n = cfg.shard.1.max(1);
    let epoch = Instant::now();
    let epoch_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
        - epoch.elapsed().as_micros() as u64;
    let shared = Arc::new(GroupShared {
        plan,
        epoch,
        epoch_unix_us,
        local_ip,
        video: cfg.video,
        pacing: !cfg.no_pacing,
        join_timeout: cfg.join_timeout,
        full_decrypt: cfg.full_decrypt,
        shard: cfg.shard,
        turn: cfg.turn,
        relay: cfg.relay,
        simulcast: cfg.simulcast,
        network: cfg.network.clone(),
        live: Live::default(),
    });

    // Groups.
    let n_groups = total.div_ceil(cfg.peers_per_task).max(1);
    let mut group_tx = Vec::with_capacity(n_groups);
    let mut group_tasks = Vec::with_capacity(n_groups);
    for i in 0..n_groups {
        let (tx, rx) = mpsc::channel(4096);
        group_tx.push(tx);
        group_tasks.push(tokio::spawn(
            Group::new(i, n_groups, Arc::clone(&shared), rx).run(),
        ));
    }

    // Server metrics, once a second (the first sample before any join).
    let samples = Arc::new(Mutex::new(Samples::default()));
    let (sampler_stop, sampler) = if cfg.scrape_metrics {
        sample_once(server_addr, &url, cfg.server_pid, &samples).await;
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(sample_loop(
            server_addr,
            url.clone(),
            cfg.server_pid,
            Arc::clone(&samples),
            rx,
        ));
        (Some(tx), Some(task))
    } else {
        (None, None)
    };

    let cpu = CpuMeter::start();
    let (progress_stop, progress) = if cfg.progress {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(progress_loop(Arc::clone(&shared), total, cpu, rx));
        (Some(tx), Some(task))
    } else {
        (None, None)
    };

    // Ramp.
    let (stop_tx, stop_rx) = watch::channel(false);
    let ws_url = url.ws_url();
    let start = Instant::now();
    let mut sessions = Vec::with_capacity(total);
    for p in shared.plan.iter().filter(|p| cfg.simulates(p.pid)) {
        // The global schedule: processes sharing a run by --shard-of interleave their joins.
        let at = start + Duration::from_secs_f64(p.pid as f64 / cfg.ramp_per_sec);
        tokio::time::sleep_until(at.into()).await;
        let room = cfg.room_name(p.room);
        let grant = minter.mint(&room, &p.identity, !p.is_subscriber())?;
        sessions.push(tokio::spawn(signal::session(
            p.pid,
            ws_url.clone(),
            grant,
            room,
            group_tx[(p.pid / shard_n) % n_groups].clone(),
            cfg.join_timeout,
            url.tls.clone(),
            stop_rx.clone(),
        )));
    }
    // Let the last joins finish (bounded by the join timeout).
    let settle_until = Instant::now() + cfg.join_timeout + Duration::from_secs(1);
    while Instant::now() < settle_until {
        let live = &shared.live;
        let resolved = live.joined.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed);
        if resolved >= total as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Hold.
    for tx in &group_tx {
        let _ = tx.send(GroupCmd::Steady).await;
    }
    // Let the groups' counters catch up (they publish every 250 ms), then read CPU and
    // datagrams at both ends of the steady phase.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let steady_start = Instant::now();
    let steady_cpu = crate::cpu::process_cpu();
    let steady_dgrams = shared.live.datagrams.load(Ordering::Relaxed);
    tokio::time::sleep(cfg.duration).await;
    let steady_end = Instant::now();
    let steady_cpu_used = crate::cpu::process_cpu()
        .zip(steady_cpu)
        .and_then(|(b, a)| b.checked_sub(a));
    let steady_dgrams = shared
        .live
        .datagrams
        .load(Ordering::Relaxed)
        .saturating_sub(steady_dgrams);

    // Stop: media first, then let packets in flight arrive, then collect.
    // Every step is bounded: a group that does not answer is left out of the report.
    for tx in &group_tx {
        let _ = tx.send_timeout(GroupCmd::StopMedia, GROUP_REPLY).await;
    }
    tokio::time::sleep(DRAIN).await;
    let mut replies = Vec::with_capacity(n_groups);
    for tx in &group_tx {
        let (reply, rx) = oneshot::channel();
        let _ = tx.send_timeout(GroupCmd::Finish(reply), GROUP_REPLY).await;
        replies.push(rx);
    }
    let mut results = Vec::with_capacity(n_groups);
    let mut unanswered = 0;
    for rx in replies {
        match tokio::time::timeout(GROUP_REPLY, rx).await {
            Ok(Ok(r)) => results.push(r),
            _ => unanswered += 1,
        }
    }
    if unanswered > 0 {
        eprintln!("warning: {unanswered} of {n_groups} peer groups did not report in time");
    }
    let _ = stop_tx.send(true);
    drop(group_tx);
    let leave = async {
        for s in sessions {
            let _ = s.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), leave).await;
    for t in group_tasks {
        t.abort();
    }
    let cpu_used = cpu.read();
    let cpu_waited = cpu.waited();
    if let Some(tx) = progress_stop {
        let _ = tx.send(true);
    }
    if let Some(t) = progress {
        let _ = t.await;
    }
    if let Some(tx) = sampler_stop {
        let _ = tx.send(true);
    }
    if let Some(t) = sampler {
        let _ = t.await;
    }
    if cfg.scrape_metrics {
        sample_once(server_addr, &url, cfg.server_pid, &samples).await;
    }

    let mut report = Report::build(&shared.plan, results);
    if cfg.shard.1 > 1 {
        report.shard = Some(cfg.shard);
    }
    report.full_decrypt = cfg.full_decrypt || cfg.relay;
    report.relayed = cfg.relay;
    if let Some(mix) = &cfg.network {
        for (k, c) in report.classes.iter_mut().enumerate() {
            if let Some(m) = mix.classes.get(k) {
                c.name = m.name.clone();
            }
        }
    }
    report.wall_secs = start.elapsed().as_secs_f64();
    if let Some((secs, pct)) = cpu_used {
        report.loadtest_cpu_secs = secs;
        report.loadtest_cpu_pct = pct;
    }
    report.loadtest_cpu_wait_secs = cpu_waited.unwrap_or(0.0);
    if let Some(used) = steady_cpu_used {
        report.loadtest_steady_cpu_secs = used.as_secs_f64();
        if steady_dgrams > 0 {
            report.loadtest_steady_us_per_datagram =
                used.as_secs_f64() * 1e6 / steady_dgrams as f64;
        }
        report.loadtest_steady_datagrams = steady_dgrams;
    }
    if report.packets.datagrams_in > 0 {
        report.loadtest_us_per_datagram =
            report.loadtest_cpu_secs * 1e6 / report.packets.datagrams_in as f64;
    }
    if cfg.scrape_metrics {
        let s = samples.lock().map(|s| s.clone()).unwrap_or_default();
        report.server = server_report(&s, start, steady_start, steady_end);
    }
    report.check(&cfg.thresholds);
    Ok(report)
}

fn server_report(
    s: &Samples,
    start: Instant,
    steady_start: Instant,
    steady_end: Instant,
) -> ServerReport {
    let mb = |b: f64| b / 1_048_576.0;
    let peak_participants = s.peak_participants();
    let rss_start = s.first_rss();
    let rss_peak = s.peak_rss();
    ServerReport {
        whole_run: s.usage(start - Duration::from_secs(2), Instant::now()),
        steady: s.usage(steady_start, steady_end),
        rss_start_mb: mb(rss_start),
        rss_peak_mb: mb(rss_peak),
        memory_per_participant_kb: if peak_participants > 0.0 {
            (rss_peak - rss_start).max(0.0) / peak_participants / 1024.0
        } else {
            0.0
        },
        peak_participants,
        error: s.error.clone(),
    }
}

async fn sample_once(
    addr: SocketAddr,
    url: &ServerUrl,
    pid: Option<u32>,
    samples: &Mutex<Samples>,
) {
    let got = url.get(addr, "/metrics").await;
    let now = Instant::now();
    let local = pid.and_then(|p| Some((crate::cpu::pid_usage(p)?, crate::cpu::runqueue_wait(p)?)));
    if let Ok(mut s) = samples.lock() {
        match got {
            Ok(text) => {
                let mut sample = parse_metrics(&text);
                if let Some(((cpu, rss), wait)) = local {
                    sample.cpu_seconds = cpu.as_secs_f64();
                    sample.rss_bytes = rss as f64;
                    sample.cpu_wait_seconds = wait.as_secs_f64();
                }
                s.points.push((now, sample));
            }
            Err(e) => s.error = Some(e.to_string()),
        }
    }
}

async fn sample_loop(
    addr: SocketAddr,
    url: ServerUrl,
    pid: Option<u32>,
    samples: Arc<Mutex<Samples>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => sample_once(addr, &url, pid, &samples).await,
            _ = stop.changed() => return,
        }
    }
}

async fn progress_loop(
    shared: Arc<GroupShared>,
    total: usize,
    cpu: CpuMeter,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    let start = Instant::now();
    let (mut last_rx, mut last_tx, mut last_cpu) = (0u64, 0u64, 0.0f64);
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let live = &shared.live;
        let rx = live.rx_bytes.load(Ordering::Relaxed);
        let tx = live.tx_bytes.load(Ordering::Relaxed);
        let packets = live.rx_packets.load(Ordering::Relaxed);
        let lost = live.lost.load(Ordering::Relaxed);
        let secs = last_at.elapsed().as_secs_f64().max(1e-3);
        let cpu_now = cpu.read().map(|(s, _)| s).unwrap_or(0.0);
        eprintln!(
            "[{:>4.0}s] joined {}/{} failed {} | in {:.2} Mb/s out {:.2} Mb/s | loss {:.2} % | loadtest CPU {:.0} %",
            start.elapsed().as_secs_f64(),
            live.joined.load(Ordering::Relaxed),
            total,
            live.failed.load(Ordering::Relaxed),
            (rx - last_rx) as f64 * 8.0 / secs / 1e6,
            (tx - last_tx) as f64 * 8.0 / secs / 1e6,
            percent(lost, packets + lost),
            (cpu_now - last_cpu) * 100.0 / secs,
        );
        last_rx = rx;
        last_tx = tx;
        last_cpu = cpu_now;
        last_at = Instant::now();
    }
}
