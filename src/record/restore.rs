//! After a restart: the meetings that go on, rebuilt from their records — rules, motions,
//! recorded votes, and for secret ballots the set of voters and the tally (counted from
//! the ballots, which name no voter).
//!
//! Attendance or speaking turns a crash left open are closed at the meeting's last record
//! (reason `server_restart`); meetings idle longer than the window are over.

use std::collections::BTreeSet;
use std::time::Duration;

use plenary_meeting::governance::{Ballots, Motion, RecordedVote};
use plenary_meeting::{Governance, Person, Time};
use plenary_proto::{MotionKind, MotionResult, MotionSpec, MotionState, QuorumRule};
use rusqlite::{params, Connection};

use crate::media::ContinuedMeeting;
use crate::membership::store::StoreError;

/// The meetings that may go on at `now` (last active within `within`), and tidies the rest.
pub fn continuing(
    c: &Connection,
    now: Time,
    within: Duration,
) -> Result<Vec<ContinuedMeeting>, StoreError> {
    c.execute(
        "UPDATE attendance SET left_at = (SELECT last_active FROM meetings m WHERE m.id = meeting_id),
         leave_reason = 'server_restart' WHERE left_at IS NULL",
        [],
    )?;
    c.execute(
        "UPDATE speakers SET ended_at = (SELECT last_active FROM meetings m WHERE m.id = meeting_id)
         WHERE ended_at IS NULL",
        [],
    )?;
    let since = now.as_millis().saturating_sub(within.as_millis() as u64) as i64;
    c.execute(
        "UPDATE meetings SET ended_at = last_active WHERE ended_at IS NULL AND last_active < ?1",
        params![since],
    )?;
    let mut stmt = c.prepare(
        "SELECT id, room, last_active, quorum, speaker_limit_secs FROM meetings
         WHERE ended_at IS NULL ORDER BY last_active",
    )?;
    let rows: Vec<(String, String, i64, String, Option<u32>)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (id, room, last_active, quorum, limit) in rows {
        let motions = motions(c, &id)?;
        let next_motion = motions
            .iter()
            .filter_map(|m| m.id.strip_prefix("MO_")?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let governance = Governance {
            quorum: serde_json::from_str::<QuorumRule>(&quorum).unwrap_or_default(),
            speaker_limit_secs: limit,
            motions,
            next_motion,
            ended: false,
        };
        out.push(ContinuedMeeting {
            room,
            meeting_id: id,
            governance,
            last_active: Time(last_active as u64),
        });
    }
    Ok(out)
}

type MotionRow = (
    String,
    String,
    String,
    String,
    String,
    u32,
    bool,
    Option<u32>,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// A meeting's motions, in the order written.
fn motions(c: &Connection, meeting: &str) -> Result<Vec<Motion>, StoreError> {
    let mut stmt = c.prepare(
        "SELECT id, title, text, kind, options, max_choices, allow_guests, duration_secs, state,
         opened_at, deadline, result FROM motions WHERE meeting_id = ?1 ORDER BY rowid",
    )?;
    let rows: Vec<MotionRow> = stmt
        .query_map(params![meeting], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (
        id,
        title,
        text,
        kind,
        options,
        max_choices,
        allow_guests,
        duration,
        state,
        opened,
        deadline,
        result,
    ) in rows
    {
        let kind = if kind == "secret" {
            MotionKind::Secret
        } else {
            MotionKind::Recorded
        };
        let spec = MotionSpec {
            title,
            text,
            kind,
            options: serde_json::from_str(&options).unwrap_or_default(),
            max_choices,
            allow_guests,
            duration_secs: duration,
        };
        let mut motion = Motion::draft(id, spec);
        motion.state = match state.as_str() {
            "open" => MotionState::Open,
            "closed" => MotionState::Closed,
            _ => MotionState::Draft,
        };
        motion.opened_at = opened.map(|t| Time(t as u64));
        motion.deadline = deadline.map(|t| Time(t as u64));
        motion.result = result.and_then(|r| serde_json::from_str::<MotionResult>(&r).ok());
        motion.ballots = ballots(c, meeting, &motion)?;
        out.push(motion);
    }
    Ok(out)
}

fn ballots(c: &Connection, meeting: &str, m: &Motion) -> Result<Ballots, StoreError> {
    match m.spec.kind {
        MotionKind::Recorded => {
            let mut stmt = c.prepare(
                "SELECT identity, name, choices FROM votes
                 WHERE meeting_id = ?1 AND motion_id = ?2 ORDER BY rowid",
            )?;
            let votes = stmt
                .query_map(params![meeting, m.id], |r| {
                    let choices: String = r.get(2)?;
                    Ok(RecordedVote {
                        voter: Person {
                            identity: r.get(0)?,
                            name: r.get(1)?,
                        },
                        choices: serde_json::from_str(&choices).unwrap_or_default(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(Ballots::Recorded(votes))
        }
        MotionKind::Secret => {
            let mut stmt = c.prepare(
                "SELECT identity FROM ballot_voters WHERE meeting_id = ?1 AND motion_id = ?2",
            )?;
            let voters: BTreeSet<String> = stmt
                .query_map(params![meeting, m.id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut stmt = c.prepare(
                "SELECT choices FROM secret_ballots WHERE meeting_id = ?1 AND motion_id = ?2",
            )?;
            let mut tally = vec![0u32; m.spec.options.len()];
            for choices in stmt.query_map(params![meeting, m.id], |r| r.get::<_, String>(0))? {
                let choices: Vec<u32> = serde_json::from_str(&choices?).unwrap_or_default();
                for c in choices {
                    if let Some(n) = tally.get_mut(c as usize) {
                        *n += 1;
                    }
                }
            }
            Ok(Ballots::Secret { voters, tally })
        }
    }
}
