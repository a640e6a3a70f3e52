//! The minutes of a meeting, read from its records: room, date, hosts, attendance with
//! times, the speakers list with durations, every motion opened with its text, type,
//! options, result and the quorum when it closed, and the chat when it was kept. As JSON
//! ([`Minutes`]) and as Markdown ([`markdown`]).
//!
//! A secret ballot's minutes list who voted and the tally; nothing in the store could say
//! more.

use plenary_proto::{MotionResult, QuorumRule};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::civil;
use crate::membership::store::StoreError;

/// Why there are no minutes to give.
#[derive(Debug, thiserror::Error)]
pub enum MinutesError {
    /// The date is not `YYYY-MM-DD`.
    #[error("the date must be YYYY-MM-DD, like 2025-11-27")]
    BadDate,
    /// No meeting in that room (on that day).
    #[error("no meeting of room {room:?}{}", .date.as_ref().map(|d| format!(" on {d}")).unwrap_or_default())]
    NotFound {
        /// The room.
        room: String,
        /// The day asked for.
        date: Option<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for MinutesError {
    fn from(e: rusqlite::Error) -> Self {
        MinutesError::Store(e.into())
    }
}

/// Someone named in the minutes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Named {
    /// Their identity.
    pub identity: String,
    /// Their display name.
    pub name: String,
}

/// One time someone was in the meeting.
#[derive(Debug, Clone, Serialize)]
pub struct Presence {
    /// When they came in (`YYYY-MM-DDTHH:MM:SSZ`).
    pub joined_at: String,
    /// When they left, if they did.
    pub left_at: Option<String>,
    /// Why (`left`, `disconnected`, `server_shutdown`, …).
    pub leave_reason: Option<String>,
}

/// One identity's attendance.
#[derive(Debug, Clone, Serialize)]
pub struct Attendance {
    /// Their identity.
    pub identity: String,
    /// Their name (the last they used).
    pub name: String,
    /// `host`, `member` or `guest`.
    pub role: String,
    /// Guests: who invited them.
    pub invited_by: Option<String>,
    /// Had host powers.
    pub host: bool,
    /// Each time they were in.
    pub sessions: Vec<Presence>,
    /// Minutes present in all.
    pub minutes_present: i64,
}

/// One speaking turn.
#[derive(Debug, Clone, Serialize)]
pub struct Turn {
    /// The speaker.
    pub identity: String,
    /// Their name.
    pub name: String,
    /// When they got the floor.
    pub from: String,
    /// When it ended.
    pub to: Option<String>,
    /// How long, in seconds.
    pub seconds: Option<i64>,
    /// Their time limit.
    pub limit_secs: Option<u32>,
    /// Spoke past the limit.
    pub over_time: bool,
    /// The host who gave the floor.
    pub given_by: String,
}

/// One voter's recorded vote.
#[derive(Debug, Clone, Serialize)]
pub struct Vote {
    /// The voter.
    pub identity: String,
    /// Their name.
    pub name: String,
    /// The options they chose.
    pub choices: Vec<String>,
}

/// A motion in the minutes.
#[derive(Debug, Clone, Serialize)]
pub struct MotionMinutes {
    /// `MO_<n>`.
    pub id: String,
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// `recorded` or `secret`.
    pub kind: String,
    /// The options.
    pub options: Vec<String>,
    /// How many options a voter could choose.
    pub max_choices: u32,
    /// Guests could vote.
    pub allow_guests: bool,
    /// `open` or `closed` (drafts never opened are left out).
    pub state: String,
    /// When it opened.
    pub opened_at: Option<String>,
    /// When it closed.
    pub closed_at: Option<String>,
    /// The host who closed it (none: its deadline).
    pub closed_by: Option<String>,
    /// The result, with the quorum when it closed.
    pub result: Option<MotionResult>,
    /// Present and allowed to vote when it closed.
    pub present_at_close: Vec<Named>,
    /// Recorded votes: who chose what.
    pub votes: Vec<Vote>,
    /// Secret ballots: who voted (in name order), never what.
    pub voters: Vec<Named>,
}

/// A kept chat message.
#[derive(Debug, Clone, Serialize)]
pub struct ChatLine {
    /// When.
    pub at: String,
    /// Who.
    pub name: String,
    /// Their identity.
    pub identity: String,
    /// What.
    pub text: String,
}

/// The minutes of one meeting.
#[derive(Debug, Clone, Serialize)]
pub struct Minutes {
    /// The room.
    pub room: String,
    /// The meeting's id.
    pub meeting_id: String,
    /// The day it started (UTC).
    pub date: String,
    /// When it started.
    pub started_at: String,
    /// When it ended (a host ended it, or it was over), if it did.
    pub ended_at: Option<String>,
    /// The host who ended it.
    pub ended_by: Option<String>,
    /// The quorum rule (the last one set).
    pub quorum_rule: QuorumRule,
    /// Everyone who had host powers.
    pub hosts: Vec<Named>,
    /// Everyone who came, by first arrival.
    pub attendance: Vec<Attendance>,
    /// Speaking turns, in order.
    pub speakers: Vec<Turn>,
    /// Motions opened, in order.
    pub motions: Vec<MotionMinutes>,
    /// The chat, when it was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<Vec<ChatLine>>,
}

type MeetingRow = (
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    String,
    i64,
);

/// The minutes of the meetings of `room` that started on `date` (UTC), or of its latest
/// meeting when no date is given.
pub fn load(c: &Connection, room: &str, date: Option<&str>) -> Result<Vec<Minutes>, MinutesError> {
    let cols = "id, room, started_at, ended_at, ended_by, quorum, last_active";
    let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<MeetingRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    };
    let meetings: Vec<MeetingRow> = match date {
        Some(d) => {
            let (start, end) = civil::day_range(d).ok_or(MinutesError::BadDate)?;
            let mut stmt = c.prepare(&format!(
                "SELECT {cols} FROM meetings WHERE room = ?1 AND started_at >= ?2
                 AND started_at < ?3 ORDER BY started_at"
            ))?;
            let rows = stmt.query_map(params![room, start, end], row)?;
            rows.collect::<Result<_, _>>()?
        }
        None => c
            .query_row(
                &format!(
                    "SELECT {cols} FROM meetings WHERE room = ?1 ORDER BY started_at DESC LIMIT 1"
                ),
                params![room],
                row,
            )
            .optional()?
            .into_iter()
            .collect(),
    };
    if meetings.is_empty() {
        return Err(MinutesError::NotFound {
            room: room.into(),
            date: date.map(str::to_string),
        });
    }
    meetings
        .into_iter()
        .map(|m| one(c, m))
        .collect::<Result<_, _>>()
}

fn one(c: &Connection, m: MeetingRow) -> Result<Minutes, MinutesError> {
    let (id, room, started, ended, ended_by, quorum, last_active) = m;
    // Someone still present counts until the meeting's last record.
    let attendance = attendance(c, &id, ended.unwrap_or(last_active))?;
    let hosts = attendance
        .iter()
        .filter(|a| a.host)
        .map(|a| Named {
            identity: a.identity.clone(),
            name: a.name.clone(),
        })
        .collect();
    let chat = chat(c, &id)?;
    Ok(Minutes {
        date: civil::date(started),
        started_at: civil::timestamp(started),
        ended_at: ended.map(civil::timestamp),
        ended_by,
        quorum_rule: serde_json::from_str(&quorum).unwrap_or_default(),
        hosts,
        attendance,
        speakers: speakers(c, &id)?,
        motions: motions(c, &id)?,
        chat: (!chat.is_empty()).then_some(chat),
        room,
        meeting_id: id,
    })
}

fn attendance(c: &Connection, meeting: &str, until: i64) -> Result<Vec<Attendance>, MinutesError> {
    let mut stmt = c.prepare(
        "SELECT identity, name, role, invited_by, is_host, joined_at, left_at, leave_reason
         FROM attendance WHERE meeting_id = ?1 ORDER BY joined_at, rowid",
    )?;
    let mut out: Vec<Attendance> = Vec::new();
    let rows = stmt.query_map(params![meeting], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, bool>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, Option<String>>(7)?,
        ))
    })?;
    for row in rows {
        let (identity, name, role, invited_by, host, joined, left, reason) = row?;
        let ms = (left.unwrap_or(until) - joined).max(0);
        let presence = Presence {
            joined_at: civil::timestamp(joined),
            left_at: left.map(civil::timestamp),
            leave_reason: reason,
        };
        match out.iter_mut().find(|a| a.identity == identity) {
            Some(a) => {
                a.name = name;
                a.host |= host;
                a.sessions.push(presence);
                a.minutes_present += ms;
            }
            None => out.push(Attendance {
                identity,
                name,
                role,
                invited_by,
                host,
                sessions: vec![presence],
                minutes_present: ms,
            }),
        }
    }
    for a in &mut out {
        a.minutes_present = (a.minutes_present + 30_000) / 60_000;
    }
    Ok(out)
}

fn speakers(c: &Connection, meeting: &str) -> Result<Vec<Turn>, MinutesError> {
    let mut stmt = c.prepare(
        "SELECT identity, name, given_by, limit_secs, started_at, ended_at FROM speakers
         WHERE meeting_id = ?1 ORDER BY started_at, rowid",
    )?;
    let rows = stmt.query_map(params![meeting], |r| {
        let started: i64 = r.get(4)?;
        let ended: Option<i64> = r.get(5)?;
        let limit: Option<u32> = r.get(3)?;
        let millis = ended.map(|e| e - started);
        let seconds = millis.map(|ms| ms / 1000);
        Ok(Turn {
            identity: r.get(0)?,
            name: r.get(1)?,
            given_by: r.get(2)?,
            limit_secs: limit,
            from: civil::timestamp(started),
            to: ended.map(civil::timestamp),
            seconds,
            // Reaching the limit is "time is up", whatever fraction of a second followed
            // before the host took the floor back (whole seconds would hide it).
            over_time: matches!((millis, limit), (Some(ms), Some(l)) if ms >= i64::from(l) * 1000),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

type MotionRow = (
    String,
    String,
    String,
    String,
    String,
    u32,
    bool,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn motions(c: &Connection, meeting: &str) -> Result<Vec<MotionMinutes>, MinutesError> {
    let mut stmt = c.prepare(
        "SELECT id, title, text, kind, options, max_choices, allow_guests, state, opened_at,
         closed_at, closed_by, result, present FROM motions
         WHERE meeting_id = ?1 AND state != 'draft' ORDER BY opened_at, rowid",
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
                r.get(12)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (id, title, text, kind, options, max, guests, state, opened, closed, by, result, present) in
        rows
    {
        let options: Vec<String> = serde_json::from_str(&options).unwrap_or_default();
        let votes = if kind == "recorded" {
            recorded_votes(c, meeting, &id, &options)?
        } else {
            Vec::new()
        };
        let voters = if kind == "secret" {
            secret_voters(c, meeting, &id)?
        } else {
            Vec::new()
        };
        let present: Vec<serde_json::Value> = present
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default();
        out.push(MotionMinutes {
            title,
            text,
            kind,
            options,
            max_choices: max,
            allow_guests: guests,
            state,
            opened_at: opened.map(civil::timestamp),
            closed_at: closed.map(civil::timestamp),
            closed_by: by,
            result: result.and_then(|r| serde_json::from_str(&r).ok()),
            present_at_close: present
                .iter()
                .map(|p| Named {
                    identity: p["identity"].as_str().unwrap_or_default().into(),
                    name: p["name"].as_str().unwrap_or_default().into(),
                })
                .collect(),
            votes,
            voters,
            id,
        });
    }
    Ok(out)
}

fn recorded_votes(
    c: &Connection,
    meeting: &str,
    motion: &str,
    options: &[String],
) -> Result<Vec<Vote>, MinutesError> {
    let mut stmt = c.prepare(
        "SELECT identity, name, choices FROM votes WHERE meeting_id = ?1 AND motion_id = ?2
         ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![meeting, motion], |r| {
        let choices: String = r.get(2)?;
        let choices: Vec<u32> = serde_json::from_str(&choices).unwrap_or_default();
        Ok(Vote {
            identity: r.get(0)?,
            name: r.get(1)?,
            choices: choices
                .iter()
                .filter_map(|i| options.get(*i as usize).cloned())
                .collect(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn secret_voters(c: &Connection, meeting: &str, motion: &str) -> Result<Vec<Named>, MinutesError> {
    let mut stmt = c.prepare(
        "SELECT identity, name FROM ballot_voters WHERE meeting_id = ?1 AND motion_id = ?2
         ORDER BY name, identity",
    )?;
    let rows = stmt.query_map(params![meeting, motion], |r| {
        Ok(Named {
            identity: r.get(0)?,
            name: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn chat(c: &Connection, meeting: &str) -> Result<Vec<ChatLine>, MinutesError> {
    let mut stmt = c.prepare(
        "SELECT at, name, identity, text FROM chat WHERE meeting_id = ?1 ORDER BY at, rowid",
    )?;
    let rows = stmt.query_map(params![meeting], |r| {
        Ok(ChatLine {
            at: civil::timestamp(r.get(0)?),
            name: r.get(1)?,
            identity: r.get(2)?,
            text: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub use super::markdown::markdown;
