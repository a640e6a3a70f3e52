//! The minutes as Markdown: what a secretary pastes into the co-op's records.

use std::fmt::Write;

use plenary_proto::{ClosedBy, QuorumCheck, QuorumRule};

use super::civil;
use super::minutes::{Minutes, MotionMinutes};

/// `HH:MM` of a `YYYY-MM-DDTHH:MM:SSZ` timestamp.
fn hm(ts: &str) -> &str {
    ts.get(11..16).unwrap_or(ts)
}

/// Text for a table cell or a list item: one line, no table breaks.
fn cell(s: &str) -> String {
    s.replace(['\n', '\r'], " ").replace('|', "\\|")
}

/// A quorum rule in words.
pub fn rule_text(rule: &QuorumRule) -> String {
    match rule {
        QuorumRule::None => "none".into(),
        QuorumRule::Members { count } => format!("at least {count} members present"),
        QuorumRule::Share { percent } => {
            format!("at least {percent}% of the members present vote")
        }
    }
}

fn quorum_text(q: &QuorumCheck) -> String {
    let held = if q.met { "held" } else { "NOT held" };
    match q.rule {
        QuorumRule::None => "no quorum rule".into(),
        QuorumRule::Members { .. } => format!(
            "quorum {held}: {} members present, {} required",
            q.members_present, q.required
        ),
        QuorumRule::Share { .. } => format!(
            "quorum {held}: {} votes required of {} members present",
            q.required, q.members_present
        ),
    }
}

/// The minutes of each meeting, one after the other.
pub fn markdown(all: &[Minutes]) -> String {
    let mut out = String::new();
    for m in all {
        one(&mut out, m);
    }
    out
}

fn one(out: &mut String, m: &Minutes) {
    let _ = writeln!(out, "# Minutes of {} — {}\n", cell(&m.room), m.date);
    let end = match (&m.ended_at, &m.ended_by) {
        (Some(t), Some(by)) => format!("–{} UTC, ended by {}", hm(t), cell(by)),
        (Some(t), None) => format!("–{} UTC", hm(t)),
        (None, _) => " UTC (not ended)".into(),
    };
    let _ = writeln!(
        out,
        "Meeting `{}`, {}{}. Quorum rule: {}.\n",
        m.meeting_id,
        hm(&m.started_at),
        end,
        rule_text(&m.quorum_rule)
    );
    let hosts: Vec<String> = m
        .hosts
        .iter()
        .map(|h| format!("{} ({})", cell(&h.name), cell(&h.identity)))
        .collect();
    let _ = writeln!(out, "Hosts: {}.\n", hosts.join(", "));

    let _ = writeln!(out, "## Attendance ({})\n", m.attendance.len());
    let _ = writeln!(out, "| Name | Identity | Role | Present (UTC) | Minutes |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for a in &m.attendance {
        let role = match (&a.invited_by, a.host) {
            (Some(by), _) => format!("{} (invited by {})", a.role, cell(by)),
            (None, true) if a.role != "host" => format!("{}, host", a.role),
            _ => a.role.clone(),
        };
        let times: Vec<String> = a
            .sessions
            .iter()
            .map(|s| {
                format!(
                    "{}–{}",
                    hm(&s.joined_at),
                    s.left_at.as_deref().map(hm).unwrap_or("")
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&a.name),
            cell(&a.identity),
            role,
            times.join(", "),
            a.minutes_present
        );
    }

    let _ = writeln!(out, "\n## Speakers ({})\n", m.speakers.len());
    if m.speakers.is_empty() {
        let _ = writeln!(out, "Nobody was given the floor.");
    } else {
        let _ = writeln!(out, "| Speaker | From | To | Duration | Limit |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for t in &m.speakers {
            let limit = match t.limit_secs {
                Some(l) if t.over_time => format!("{} (over)", civil::duration(l as i64 * 1000)),
                Some(l) => civil::duration(l as i64 * 1000),
                None => "none".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&t.name),
                hm(&t.from),
                t.to.as_deref().map(hm).unwrap_or(""),
                t.seconds
                    .map(|s| civil::duration(s * 1000))
                    .unwrap_or_default(),
                limit
            );
        }
    }

    let _ = writeln!(out, "\n## Motions ({})\n", m.motions.len());
    if m.motions.is_empty() {
        let _ = writeln!(out, "No motion was put to a vote.");
    }
    for mo in &m.motions {
        motion(out, mo);
    }

    if let Some(chat) = &m.chat {
        let _ = writeln!(out, "\n## Chat\n");
        for c in chat {
            let _ = writeln!(out, "- {} {}: {}", hm(&c.at), cell(&c.name), cell(&c.text));
        }
    }
    out.push('\n');
}

fn motion(out: &mut String, mo: &MotionMinutes) {
    let kind = if mo.kind == "secret" {
        "secret ballot"
    } else {
        "recorded vote"
    };
    let choice = if mo.max_choices > 1 {
        format!(", up to {} choices", mo.max_choices)
    } else {
        String::new()
    };
    let guests = if mo.allow_guests { ", guests vote" } else { "" };
    let _ = writeln!(
        out,
        "### {}: {} ({kind}{choice}{guests})\n",
        mo.id,
        cell(&mo.title)
    );
    if !mo.text.is_empty() {
        for line in mo.text.lines() {
            let _ = writeln!(out, "> {line}");
        }
        out.push('\n');
    }
    let opened = mo.opened_at.as_deref().map(hm).unwrap_or("?");
    let Some(r) = &mo.result else {
        let _ = writeln!(out, "Opened {opened} UTC; still open.\n");
        return;
    };
    let closed = mo.closed_at.as_deref().map(hm).unwrap_or("?");
    let by = match (r.closed_by, &mo.closed_by) {
        (ClosedBy::Deadline, _) => "at its deadline".to_string(),
        (ClosedBy::Host, Some(h)) => format!("by {}", cell(h)),
        (ClosedBy::Host, None) => "by a host".to_string(),
    };
    let _ = writeln!(out, "Opened {opened}, closed {closed} UTC {by}.\n");
    let _ = writeln!(
        out,
        "| Option | Votes | % of votes cast | % of those present |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for o in &r.options {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} |",
            cell(&o.option),
            o.votes,
            o.percent_of_cast,
            o.percent_of_present
        );
    }
    let _ = writeln!(
        out,
        "\n{} voted of {} present who could vote; {}.\n",
        r.votes_cast,
        r.eligible_present,
        quorum_text(&r.quorum)
    );
    if !mo.votes.is_empty() {
        let _ = writeln!(out, "Votes:\n");
        for v in &mo.votes {
            let _ = writeln!(
                out,
                "- {} ({}): {}",
                cell(&v.name),
                cell(&v.identity),
                cell(&v.choices.join(", "))
            );
        }
        out.push('\n');
    }
    if !mo.voters.is_empty() {
        let names: Vec<String> = mo.voters.iter().map(|v| cell(&v.name)).collect();
        let _ = writeln!(
            out,
            "Voted (secret ballot; who chose what is not recorded): {}.\n",
            names.join(", ")
        );
    }
}
