//! CPU time of this process and of the calling thread, read from `/proc` (Linux; elsewhere
//! the readings are `None`). No `unsafe`, no libc.

use std::time::Duration;

/// Kernel clock ticks per second for `/proc/*/stat` (`CLK_TCK`; 100 on every mainstream
/// Linux build).
const TICKS_PER_SEC: u64 = 100;

/// User + system CPU time of this process (all threads), at 10 ms resolution.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_cpu(&stat)
}

/// utime + stime from a `/proc/<pid>/stat` line.
pub fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SEC,
    ))
}

/// CPU time (10 ms resolution) and resident memory (bytes) of process `pid`, for a server
/// on this machine: Plenary's `process_cpu_seconds_total` counts whole seconds only.
pub fn pid_usage(pid: u32) -> Option<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((parse_stat_cpu(&stat)?, rss_kb * 1024))
}

/// Time the threads of process `pid` spent runnable but waiting for a CPU (the second field
/// of `/proc/<pid>/task/*/schedstat`): on a shared machine, how much the other tenants
/// delayed it. Threads that have ended are not counted.
pub fn runqueue_wait(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += s
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

/// CPU time of the calling thread, in nanoseconds (`/proc/thread-self/schedstat`).
pub fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Measures this process's CPU use between two points in time.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    cpu: Option<Duration>,
    wait: Option<Duration>,
    at: std::time::Instant,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start() -> CpuMeter {
        CpuMeter {
            cpu: process_cpu(),
            wait: runqueue_wait(std::process::id()),
            at: std::time::Instant::now(),
        }
    }

    /// CPU seconds used since the start, and that as a percentage of one core.
    pub fn read(&self) -> Option<(f64, f64)> {
        let used = process_cpu()?.checked_sub(self.cpu?)?.as_secs_f64();
        let wall = self.at.elapsed().as_secs_f64();
        Some((used, if wall > 0.0 { used * 100.0 / wall } else { 0.0 }))
    }

    /// Seconds this process's threads waited for a CPU since the start.
    pub fn waited(&self) -> Option<f64> {
        let now = runqueue_wait(std::process::id())?;
        Some(now.checked_sub(self.wait?)?.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_even_with_odd_names() {
        let line = "1234 (my (weird) prog) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 99 1 2";
        assert_eq!(parse_stat_cpu(line), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn readings_exist_and_grow_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let t0 = thread_cpu().unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(thread_cpu().unwrap() > t0);
        assert!(process_cpu().is_some());
        assert!(runqueue_wait(std::process::id()).is_some());
        let (_, rss) = pid_usage(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024);
    }
}
