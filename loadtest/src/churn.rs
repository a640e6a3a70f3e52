//! `plenary-loadtest churn`: many join/leave cycles against one server, at a bounded rate and
//! a bounded number at once, to find leaks. Each cycle mints a fresh grant (grants are
//! single-use), joins with a real WebRTC peer (ICE, DTLS), holds, leaves and closes its socket.
//! The server's resident memory, open file descriptors and threads are read from `/proc`
//! before, at their peak, and after; its `/metrics` must show no participants and no
//! signaling sessions once everyone has left.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::cli::{parse_duration, parse_rate};
use crate::config::{plan, RunConfig};
use crate::grant::Minter;
use crate::group::{Group, GroupCmd, GroupShared, Live};
use crate::run::{route_ip, RunError};
use crate::server::{parse_metrics, ServerUrl};
use crate::stats::Summary;

/// Flags of `churn`.
#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Plenary's base URL (ignored with --plenary).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Start this Plenary binary locally (loopback) instead of using --url.
    #[arg(long)]
    pub plenary: Option<PathBuf>,
    /// API key that signs grants.
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
    /// The grants' audience.
    #[arg(long, default_value = "plenary")]
    pub audience: String,
    /// Accept any certificate of an https:// server (self-signed test servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Room joined and left.
    #[arg(long, default_value = "churn")]
    pub room: String,
    /// Join/leave cycles.
    #[arg(long, default_value_t = 10_000)]
    pub cycles: usize,
    /// Cycles started per second at most.
    #[arg(long, default_value = "20/s", value_parser = parse_rate)]
    pub rate: f64,
    /// Cycles in flight at most.
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// Time each participant stays (it must have connected by then).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Cycles run before the baseline is taken (the first joins warm up allocator caches and
    /// lazily built state; a leak shows as growth after that).
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// The server's process id, for /proc readings (implied by --plenary).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Take the last reading two seconds after everyone left, without waiting (~100 s) for
    /// the grants to expire (the server remembers used grants until then).
    #[arg(long)]
    pub no_grant_wait: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// How much longer than the hold the churn's grants live.
const GRANT_SLACK: Duration = Duration::from_secs(60);
/// How long after a grant's expiry the server has surely forgotten it: its clock leeway
/// (30 s), its purge period (10 s), a trim tick, and a margin.
const SERVER_FORGETS_AFTER: Duration = Duration::from_secs(45);

/// The server's process, read from `/proc`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    /// Resident memory, MB.
    pub rss_mb: f64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

/// Reads `/proc/<pid>` (None if it is not there).
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let (_, rss) = crate::cpu::pid_usage(pid)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcSample {
        rss_mb: rss as f64 / 1_048_576.0,
        fds,
        threads,
    })
}

/// What churn found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnReport {
    /// Cycles started.
    pub cycles: u64,
    /// Joins whose media connected.
    pub joined: u64,
    /// Joins that failed, by reason.
    pub failures: BTreeMap<String, u64>,
    /// Time to join, ms.
    pub join_ms: Summary,
    /// Wall seconds.
    pub wall_secs: f64,
    /// The server before the first join.
    pub before: Option<ProcSample>,
    /// The server after the warm-up cycles: the baseline the checks use.
    pub baseline: Option<ProcSample>,
    /// Largest values seen during the run.
    pub peak: Option<ProcSample>,
    /// Two seconds after everyone left.
    pub after_sessions: Option<ProcSample>,
    /// After everyone left and the last grant expired (the server remembers used grants until
    /// then): what the checks compare with the baseline.
    pub after: Option<ProcSample>,
    /// `/metrics` participants and signaling sessions at the end.
    pub participants_after: Option<f64>,
    /// Signaling sessions at the end.
    pub sessions_after: Option<f64>,
    /// The checks, each with whether it passed.
    pub verdicts: Vec<(String, bool)>,
}

impl ChurnReport {
    /// Fills `verdicts`.
    pub fn judge(&mut self) {
        let mut v = Vec::new();
        let failed: u64 = self.failures.values().sum();
        v.push((
            format!("every join succeeded ({failed} failed)"),
            failed == 0,
        ));
        if let (Some(b), Some(a)) = (self.baseline, self.after) {
            let growth = (a.rss_mb - b.rss_mb) / b.rss_mb.max(1e-9) * 100.0;
            v.push((
                format!(
                    "RSS after within 5 % of baseline ({:.1} → {:.1} MB, {growth:+.1} %)",
                    b.rss_mb, a.rss_mb
                ),
                growth <= 5.0,
            ));
            v.push((
                format!("file descriptors back ({} → {})", b.fds, a.fds),
                a.fds <= b.fds,
            ));
            v.push((
                format!("threads back ({} → {})", b.threads, a.threads),
                a.threads <= b.threads,
            ));
        }
        if let Some(p) = self.participants_after {
            v.push((format!("/metrics participants at 0 ({p})"), p == 0.0));
        }
        if let Some(s) = self.sessions_after {
            v.push((format!("/metrics signaling sessions at 0 ({s})"), s == 0.0));
        }
        self.verdicts = v;
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|(_, ok)| *ok)
    }

    /// The text form.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "== churn: {} cycles in {:.0} s ==",
            self.cycles, self.wall_secs
        );
        let _ = writeln!(
            o,
            "joins            connected {}  failed {}",
            self.joined,
            self.failures.values().sum::<u64>()
        );
        for (r, n) in &self.failures {
            let _ = writeln!(o, "  failed  {n:>5} × {r}");
        }
        let j = &self.join_ms;
        let _ = writeln!(
            o,
            "time to join ms  p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
            j.p50, j.p95, j.p99, j.max
        );
        let show = |s: &Option<ProcSample>| {
            s.map_or("n/a".to_owned(), |s| {
                format!(
                    "RSS {:.1} MB, {} fds, {} threads",
                    s.rss_mb, s.fds, s.threads
                )
            })
        };
        let _ = writeln!(o, "server at start  {}", show(&self.before));
        let _ = writeln!(
            o,
            "server baseline  {} (after the warm-up cycles)",
            show(&self.baseline)
        );
        let _ = writeln!(o, "server peak      {}", show(&self.peak));
        let _ = writeln!(
            o,
            "server after     {} (everyone left)",
            show(&self.after_sessions)
        );
        let _ = writeln!(
            o,
            "server after     {} (and their grants expired)",
            show(&self.after)
        );
        for (what, ok) in &self.verdicts {
            let _ = writeln!(
                o,
                "check            {:<6} {what}",
                if *ok { "ok" } else { "FAILED" }
            );
        }
        o
    }
}

async fn metrics(addr: SocketAddr, url: &ServerUrl) -> Option<crate::server::Sample> {
    url.get(addr, "/metrics")
        .await
        .ok()
        .map(|t| parse_metrics(&t))
}

/// Runs the churn.
pub async fn churn(args: &ChurnArgs) -> Result<ChurnReport, crate::bench::BenchError> {
    let mut a = args.clone();
    if a.cycles == 0 || a.cycles > 1_000_000 {
        return Err(RunError::Config(crate::config::ConfigError::Bounds(
            "--cycles must be 1 to 1,000,000".into(),
        ))
        .into());
    }
    if !((1..=500).contains(&a.concurrency) && a.rate > 0.0 && a.rate <= 200.0) {
        return Err(RunError::Config(crate::config::ConfigError::Bounds(
            "--concurrency must be 1 to 500 and --rate at most 200/s".into(),
        ))
        .into());
    }
    let _server = match &a.plenary {
        Some(bin) => {
            let secret = format!(
                "churn-secret-{:x}-0123456789abcdef0123456789",
                std::process::id()
            );
            let s = crate::bench::start_server(bin, &secret, "churn", None).await?;
            a.url = s.url.clone();
            a.api_key = "bench".into();
            a.api_secret = secret;
            a.server_pid = Some(s.child.id());
            Some(s)
        }
        None => None,
    };
    let url = ServerUrl::parse_with(&a.url, a.insecure).map_err(RunError::from)?;
    let addr = url.resolve().await.map_err(RunError::from)?;
    let mut cfg = RunConfig::new(&a.url, &a.api_key, &a.api_secret);
    cfg.audience = a.audience.clone();
    cfg.room = a.room.clone();
    cfg.subscribers = a.cycles;
    cfg.join_timeout = a.hold;
    if a.api_key.is_empty() {
        return Err(RunError::Config(crate::config::ConfigError::Bounds(
            "--api-key is required (or --plenary)".into(),
        ))
        .into());
    }
    // Short-lived grants: the server remembers each used grant until it expires (replay
    // protection), so the memory check waits for them to expire.
    let ttl = (a.hold + GRANT_SLACK).min(Duration::from_secs(540));
    let minter =
        Minter::new(&a.api_key, &a.api_secret, &a.audience, ttl).map_err(RunError::from)?;
    let mut report = ChurnReport::default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.before = a.server_pid.and_then(proc_sample);
    report.baseline = report.before;

    let epoch = Instant::now();
    let epoch_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    let shared = Arc::new(GroupShared {
        plan: plan(&cfg),
        epoch,
        epoch_unix_us,
        local_ip: route_ip(addr),
        video: cfg.video,
        pacing: true,
        join_timeout: a.hold,
        full_decrypt: false,
        shard: (0, 1),
        network: None,
        turn: None,
        relay: false,
        simulcast: false,
        live: Live::default(),
    });
    let n_groups = a.concurrency.div_ceil(8).max(1);
    let mut txs = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n_groups {
        let (tx, rx) = mpsc::channel(4096);
        txs.push(tx);
        tasks.push(tokio::spawn(
            Group::new(i, n_groups, Arc::clone(&shared), rx).run(),
        ));
    }
    // Peak sampler.
    let peak = Arc::new(std::sync::Mutex::new(report.baseline));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let sampler = {
        let peak = Arc::clone(&peak);
        let pid = a.server_pid;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop_rx.changed() => return,
                }
                if let (Some(s), Ok(mut p)) = (pid.and_then(proc_sample), peak.lock()) {
                    *p = Some(p.map_or(s, |p| ProcSample {
                        rss_mb: p.rss_mb.max(s.rss_mb),
                        fds: p.fds.max(s.fds),
                        threads: p.threads.max(s.threads),
                    }));
                }
            }
        })
    };
    let ws_url = url.ws_url();
    let permits = Arc::new(Semaphore::new(a.concurrency));
    let started = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut cycles = Vec::with_capacity(a.cycles);
    let mut pause = Duration::ZERO;
    for pid in 0..a.cycles {
        if pid == a.warmup && pid > 0 {
            // Baseline after the warm-up: let those cycles end and the server settle.
            let w = Instant::now();
            for c in cycles.drain(..) {
                let _ = c.await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            report.baseline = a.server_pid.and_then(proc_sample);
            pause += w.elapsed();
        }
        let at = t0 + pause + Duration::from_secs_f64(pid as f64 / a.rate);
        tokio::time::sleep_until(at.into()).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let grant = minter
            .mint(&a.room, &shared.plan[pid].identity, false)
            .map_err(RunError::from)?;
        let group = txs[pid % n_groups].clone();
        let ws = ws_url.clone();
        let room = a.room.clone();
        let hold = a.hold;
        let tls = url.tls.clone();
        started.fetch_add(1, Ordering::Relaxed);
        cycles.push(tokio::spawn(async move {
            let (stop, stop_rx) = watch::channel(false);
            let session = tokio::spawn(crate::signal::session(
                pid,
                ws,
                grant,
                room,
                group.clone(),
                hold,
                tls,
                stop_rx,
            ));
            tokio::time::sleep(hold).await;
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), session).await;
            let _ = group.send(GroupCmd::Leave { pid }).await;
            drop(permit);
        }));
        if pid % 500 == 499 {
            eprintln!(
                "[{:>5.0}s] {} cycles started, {} connected, {} failed",
                t0.elapsed().as_secs_f64(),
                pid + 1,
                shared.live.joined.load(Ordering::Relaxed),
                shared.live.failed.load(Ordering::Relaxed)
            );
        }
    }
    let last_mint = Instant::now();
    for c in cycles {
        let _ = c.await;
    }
    let mut results = Vec::new();
    for tx in &txs {
        let (reply, rx) = oneshot::channel();
        let _ = tx.send(GroupCmd::Finish(reply)).await;
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), rx).await {
            results.push(r);
        }
    }
    for t in tasks {
        t.abort();
    }
    report.wall_secs = t0.elapsed().as_secs_f64();
    report.cycles = started.load(Ordering::Relaxed);
    let mut join = Vec::new();
    for g in results {
        for p in g.peers {
            match p.join {
                Ok(d) => {
                    report.joined += 1;
                    join.push(d.as_secs_f64() * 1000.0);
                }
                Err(r) => *report.failures.entry(r).or_default() += 1,
            }
        }
    }
    report.join_ms = Summary::of(&join);
    // Let the server notice the last leaves (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = metrics(addr, &url).await;
        report.participants_after = m.map(|m| m.participants);
        report.sessions_after = m.map(|m| m.signaling_sessions);
        let clean = m.is_some_and(|m| m.participants == 0.0 && m.signaling_sessions == 0.0);
        if clean || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.after_sessions = a.server_pid.and_then(proc_sample);
    // Then until the last grant expired and the server forgot it (its leeway and purge).
    let forgotten = last_mint + ttl + SERVER_FORGETS_AFTER;
    if a.server_pid.is_some() && !a.no_grant_wait {
        eprintln!(
            "waiting {:.0} s for the last grants to expire",
            forgotten
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
        );
        tokio::time::sleep_until(forgotten.into()).await;
    }
    report.after = if a.no_grant_wait {
        report.after_sessions
    } else {
        a.server_pid.and_then(proc_sample)
    };
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    report.peak = peak.lock().ok().and_then(|p| *p);
    report.judge();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_readings() {
        let mut r = ChurnReport {
            baseline: Some(ProcSample {
                rss_mb: 100.0,
                fds: 20,
                threads: 8,
            }),
            after: Some(ProcSample {
                rss_mb: 104.0,
                fds: 20,
                threads: 8,
            }),
            participants_after: Some(0.0),
            sessions_after: Some(0.0),
            ..ChurnReport::default()
        };
        r.judge();
        assert!(r.passed(), "{:?}", r.verdicts);
        r.after = Some(ProcSample {
            rss_mb: 106.0,
            fds: 25,
            threads: 8,
        });
        r.failures.insert("timed out".into(), 1);
        r.sessions_after = Some(2.0);
        r.judge();
        let failed: Vec<_> = r.verdicts.iter().filter(|(_, ok)| !ok).collect();
        assert_eq!(failed.len(), 4, "{:?}", r.verdicts);
        assert!(r.render().contains("FAILED"));
    }

    #[test]
    fn this_process_can_be_read() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let s = proc_sample(std::process::id()).unwrap();
        assert!(s.fds >= 3 && s.threads >= 1 && s.rss_mb > 1.0, "{s:?}");
    }
}
