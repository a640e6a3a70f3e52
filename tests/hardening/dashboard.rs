//! The Grafana dashboard (`docs/grafana-dashboard.json`) queries only metrics that a running
//! server exports: every `plenary_*` name in every panel's expression is on `/metrics`.

use std::collections::BTreeSet;

use crate::support::bounded;
use crate::{Harness, TEST_LIMIT};

/// The `plenary_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("plenary_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists() {
    bounded(TEST_LIMIT, async {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard"))
                .expect("the dashboard is JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        let mut queried = BTreeSet::new();
        let mut titles = BTreeSet::new();
        for p in panels {
            let title = p["title"].as_str().expect("a title");
            assert!(
                titles.insert(title.to_string()),
                "two panels titled {title:?}"
            );
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title} queries nothing");
            for t in targets {
                let expr = t["expr"].as_str().expect("an expression");
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{title}: {expr}");
                queried.extend(names);
            }
        }
        // What the issue asks operators to see.
        for wanted in [
            "plenary_rooms",
            "plenary_participants",
            "plenary_rtp_forwarded_total",
            "plenary_rtp_lost_in_total",
            "plenary_rtp_lost_out_total",
            "plenary_nacks_received_total",
            "plenary_keyframe_requests_received_total",
            "plenary_join_latency_seconds_bucket",
            "plenary_joins_refused_total",
            "plenary_process_cpu_seconds_total",
            "plenary_process_resident_memory_bytes",
        ] {
            assert!(
                queried.contains(wanted),
                "the dashboard does not show {wanted}"
            );
        }

        // A fresh server, nothing happened yet: every queried metric must be there already.
        let h = Harness::start_with(|_| {}).await;
        let text = h.metrics().await;
        let exported: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let missing: Vec<&String> = queried
            .iter()
            .filter(|n| !exported.contains(n.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "the dashboard queries metrics /metrics lacks: {missing:?}\n{text}"
        );
        println!("{} metrics queried, all exported", queried.len());
        h.stop().await;
    })
    .await;
}
