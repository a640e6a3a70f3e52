//! `plenary-loadtest combine a.json b.json …`: one summary of the partial reports written by
//! processes that shared a run with `--shard-of i/n`. Counts add up (joins, packets, losses,
//! checks, frames, feedback, load-tester CPU); percentiles cannot be merged from summaries, so
//! the combined p50/p95/p99 are the largest of the shards' (an upper bound, said so); the
//! server's figures are the whole server's in every shard, so the first report's are shown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

/// Why reports could not be combined.
#[derive(Debug, thiserror::Error)]
pub enum CombineError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Nothing to combine.
    #[error("give the JSON reports of every shard (--json of each process)")]
    Empty,
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        match v.get(p) {
            Some(x) => v = x,
            None => return 0.0,
        }
    }
    v.as_f64().unwrap_or(0.0)
}

/// Reads the reports.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Value>, CombineError> {
    if paths.is_empty() {
        return Err(CombineError::Empty);
    }
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| CombineError::File {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?;
            serde_json::from_str(&text).map_err(|e| CombineError::File {
                path: p.display().to_string(),
                reason: format!("not a load-test report: {e}"),
            })
        })
        .collect()
}

/// The combined summary of `reports`.
pub fn combine(reports: &[Value]) -> String {
    let sum = |path: &[&str]| reports.iter().map(|r| num(r, path)).sum::<f64>();
    let max = |path: &[&str]| reports.iter().map(|r| num(r, path)).fold(0.0, f64::max);
    let mut o = String::new();
    let shards: Vec<String> = reports
        .iter()
        .map(|r| match r.get("shard").and_then(Value::as_array) {
            Some(a) if a.len() == 2 => format!("{}/{}", a[0], a[1]),
            _ => "whole".into(),
        })
        .collect();
    let _ = writeln!(
        o,
        "== combined report of {} shards ({}) ==",
        reports.len(),
        shards.join(", ")
    );
    let n_of = reports
        .iter()
        .filter_map(|r| r.get("shard")?.as_array()?.get(1)?.as_u64())
        .max()
        .unwrap_or(1);
    if (reports.len() as u64) < n_of {
        let _ = writeln!(
            o,
            "WARNING: {} of {n_of} shards given: the figures below are still partial",
            reports.len()
        );
    }
    let _ = writeln!(
        o,
        "joins            attempted {:.0}  succeeded {:.0}  failed {:.0}",
        sum(&["joins", "attempted"]),
        sum(&["joins", "succeeded"]),
        sum(&["joins", "failed"])
    );
    let mut reasons: BTreeMap<String, f64> = BTreeMap::new();
    for r in reports {
        if let Some(m) = r
            .pointer("/joins/failure_reasons")
            .and_then(Value::as_object)
        {
            for (k, v) in m {
                *reasons.entry(k.clone()).or_default() += v.as_f64().unwrap_or(0.0);
            }
        }
    }
    for (k, v) in reasons {
        let _ = writeln!(o, "  failed  {v:>5.0} × {k}");
    }
    let received = sum(&["packets", "received"]);
    let lost = sum(&["packets", "lost"]);
    let _ = writeln!(
        o,
        "packets          received {:.0}  lost {:.0} ({:.3} %, worst stream {:.2} %)  datagrams in {:.0}",
        received,
        lost,
        if received + lost > 0.0 {
            lost * 100.0 / (received + lost)
        } else {
            0.0
        },
        max(&["packets", "worst_stream_loss_pct"]),
        sum(&["packets", "datagrams_in"])
    );
    let _ = writeln!(
        o,
        "no media         {:.0} subscribers, {:.0} missing streams",
        sum(&["subscribers_without_media"]),
        sum(&["missing_streams"])
    );
    let _ = writeln!(
        o,
        "receive path     {:.0} counted, {:.0} decrypted, {:.0} verified, {:.0} keyframe starts verified, {:.0} failed checks",
        sum(&["checks", "counted"]),
        sum(&["checks", "decrypted"]),
        sum(&["checks", "verified"]),
        sum(&["checks", "keyframes_verified"]),
        sum(&["checks", "auth_failed"]) + sum(&["checks", "no_stamp"]) + sum(&["checks", "foreign"])
    );
    let _ = writeln!(
        o,
        "video frames     complete {:.0}  incomplete {:.0}  freezes {:.0} ({:.1} s)  recovered after NACK {:.0}",
        sum(&["frames", "complete"]),
        sum(&["frames", "incomplete"]),
        sum(&["frames", "freezes"]),
        sum(&["frames", "frozen_secs"]),
        sum(&["frames", "recovered"])
    );
    for (name, key) in [
        ("time to join ms", "join_ms"),
        ("first audio ms", "first_audio_ms"),
        ("first video ms", "first_video_ms"),
        ("latency ms", "latency_ms"),
    ] {
        let _ = writeln!(
            o,
            "{name:<16} at most: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  (largest of the shards')",
            max(&[key, "p50"]),
            max(&[key, "p95"]),
            max(&[key, "p99"]),
            max(&[key, "max"])
        );
    }
    let _ = writeln!(
        o,
        "feedback         NACKs sent {:.0}  PLIs sent {:.0}",
        sum(&["nacks_sent"]),
        sum(&["plis_sent"])
    );
    let cpu = sum(&["loadtest_steady_cpu_secs"]);
    let dgrams = sum(&["loadtest_steady_datagrams"]);
    let _ = writeln!(
        o,
        "load testers     CPU {:.1} s in all ({:.2} µs per datagram in the steady phase)",
        sum(&["loadtest_cpu_secs"]),
        if dgrams > 0.0 {
            cpu * 1e6 / dgrams
        } else {
            0.0
        }
    );
    if let Some(first) = reports.first() {
        let _ = writeln!(
            o,
            "server (steady)  {:.0} fwd pkt/s, {:.2} µs CPU/fwd pkt, RSS peak {:.1} MB (from the first report: every shard sees the whole server)",
            num(first, &["server", "steady", "forwarded_per_sec"]),
            num(first, &["server", "steady", "cpu_us_per_forwarded"]),
            num(first, &["server", "rss_peak_mb"])
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_add_and_percentiles_take_the_largest() {
        let a = json!({"shard": [0, 2], "joins": {"attempted": 10, "succeeded": 9, "failed": 1,
            "failure_reasons": {"timed out": 1}}, "packets": {"received": 990, "lost": 10,
            "worst_stream_loss_pct": 2.0}, "latency_ms": {"p50": 3.0, "p95": 9.0},
            "checks": {"verified": 5}});
        let b = json!({"shard": [1, 2], "joins": {"attempted": 10, "succeeded": 10, "failed": 0},
            "packets": {"received": 1000, "lost": 0, "worst_stream_loss_pct": 0.5},
            "latency_ms": {"p50": 4.0, "p95": 7.0}, "checks": {"verified": 6}});
        let text = combine(&[a.clone(), b]);
        assert!(
            text.contains("attempted 20  succeeded 19  failed 1"),
            "{text}"
        );
        assert!(text.contains("1 × timed out"), "{text}");
        assert!(
            text.contains("lost 10 (0.500 %, worst stream 2.00 %)"),
            "{text}"
        );
        assert!(text.contains("11 verified"), "{text}");
        assert!(text.contains("p50 4.0  p95 9.0"), "{text}");
        assert!(!text.contains("WARNING"));
        assert!(combine(&[a]).contains("WARNING: 1 of 2 shards"));
        assert!(matches!(load(&[]), Err(CombineError::Empty)));
    }
}
