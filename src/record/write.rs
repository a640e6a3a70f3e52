//! Writing one record: its rows and its audit row, on the caller's transaction.
//!
//! A secret ballot becomes two rows that share nothing: `ballot_voters` (the voter, no
//! choice, no time) and `secret_ballots` (the choices, no voter, no time, a random id).

use plenary_meeting::{Record, Time};
use rusqlite::{params, Connection};

use crate::media::{RecordItem, RoomRecord};
use crate::membership::store::{audit, StoreError};

fn ms(t: Time) -> i64 {
    t.as_millis() as i64
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A role or leave reason as its wire name (`"member"`, `"left"`).
fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Writes one record with its audit row.
pub fn write(c: &Connection, r: &RoomRecord) -> Result<(), StoreError> {
    let (room, meeting) = (&*r.room, &*r.meeting_id);
    match &r.item {
        RecordItem::Started {
            at,
            quorum,
            speaker_limit_secs,
        } => {
            // A room holds one meeting at a time: an older one there is over.
            c.execute(
                "UPDATE meetings SET ended_at = last_active
                 WHERE room = ?1 AND ended_at IS NULL AND id != ?2",
                params![room, meeting],
            )?;
            c.execute(
                "INSERT OR IGNORE INTO meetings
                 (id, room, started_at, last_active, quorum, speaker_limit_secs)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
                params![meeting, room, ms(*at), json(quorum), speaker_limit_secs],
            )?;
            audit(
                c,
                ms(*at) / 1000,
                "meeting_started",
                "",
                room,
                serde_json::json!({ "meeting_id": meeting }),
            )
        }
        RecordItem::Over => {
            c.execute(
                "UPDATE meetings SET ended_at = last_active WHERE id = ?1 AND ended_at IS NULL",
                params![meeting],
            )?;
            Ok(())
        }
        RecordItem::Audit(a) => audit(
            c,
            crate::grant::unix_now() as i64,
            &a.kind,
            &a.actor,
            room,
            a.detail.clone(),
        ),
        RecordItem::Record(rec) => {
            write_record(c, meeting, rec)?;
            let a = rec.audit();
            let mut detail = a.detail;
            if let Some(d) = detail.as_object_mut() {
                d.insert("meeting_id".into(), meeting.into());
            }
            audit(c, ms(rec.at()) / 1000, &a.kind, &a.actor, room, detail)?;
            c.execute(
                "UPDATE meetings SET last_active = MAX(last_active, ?2) WHERE id = ?1",
                params![meeting, ms(rec.at())],
            )?;
            Ok(())
        }
    }
}

fn write_record(c: &Connection, meeting: &str, rec: &Record) -> Result<(), StoreError> {
    match rec {
        Record::Joined { attendee, at } => {
            c.execute(
                "INSERT INTO attendance (meeting_id, identity, name, role, invited_by, is_host,
                 joined_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    meeting,
                    attendee.person.identity,
                    attendee.person.name,
                    name(&attendee.role),
                    attendee.invited_by,
                    attendee.is_host,
                    ms(*at)
                ],
            )?;
        }
        Record::Left {
            identity,
            reason,
            at,
        } => {
            c.execute(
                "UPDATE attendance SET left_at = ?3, leave_reason = ?4
                 WHERE meeting_id = ?1 AND identity = ?2 AND left_at IS NULL",
                params![meeting, identity, ms(*at), name(reason)],
            )?;
        }
        Record::MadeHost { person, .. } => {
            c.execute(
                "UPDATE attendance SET is_host = 1
                 WHERE meeting_id = ?1 AND identity = ?2 AND left_at IS NULL",
                params![meeting, person.identity],
            )?;
        }
        Record::FloorGiven {
            speaker,
            by,
            limit_secs,
            at,
        } => {
            c.execute(
                "INSERT INTO speakers (meeting_id, identity, name, given_by, limit_secs,
                 started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    meeting,
                    speaker.identity,
                    speaker.name,
                    by,
                    limit_secs,
                    ms(*at)
                ],
            )?;
        }
        Record::FloorEnded { speaker, by, at } => {
            c.execute(
                "UPDATE speakers SET ended_at = ?3, ended_by = ?4
                 WHERE meeting_id = ?1 AND identity = ?2 AND ended_at IS NULL",
                params![meeting, speaker.identity, ms(*at), by],
            )?;
        }
        Record::MotionCreated { motion, by, at } => {
            let s = &motion.spec;
            c.execute(
                "INSERT INTO motions (meeting_id, id, title, text, kind, options, max_choices,
                 allow_guests, duration_secs, state, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'draft', ?10, ?11)",
                params![
                    meeting,
                    motion.id,
                    s.title,
                    s.text,
                    name(&s.kind),
                    json(&s.options),
                    s.max_choices,
                    s.allow_guests,
                    s.duration_secs,
                    by,
                    ms(*at)
                ],
            )?;
        }
        Record::MotionOpened {
            motion_id,
            deadline,
            by,
            at,
        } => {
            c.execute(
                "UPDATE motions SET state = 'open', opened_by = ?3, opened_at = ?4, deadline = ?5
                 WHERE meeting_id = ?1 AND id = ?2",
                params![meeting, motion_id, by, ms(*at), deadline.map(ms)],
            )?;
        }
        Record::RecordedVote {
            motion_id,
            voter,
            choices,
            at,
        } => {
            c.execute(
                "INSERT INTO votes (meeting_id, motion_id, identity, name, choices, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (meeting_id, motion_id, identity)
                 DO UPDATE SET choices = excluded.choices, at = excluded.at",
                params![
                    meeting,
                    motion_id,
                    voter.identity,
                    voter.name,
                    json(choices),
                    ms(*at)
                ],
            )?;
        }
        Record::SecretBallot {
            motion_id,
            voter,
            choices,
            ..
        } => {
            c.execute(
                "INSERT INTO ballot_voters (meeting_id, motion_id, identity, name)
                 VALUES (?1, ?2, ?3, ?4)",
                params![meeting, motion_id, voter.identity, voter.name],
            )?;
            // A random id: the table's order says nothing about the order of voting.
            c.execute(
                "INSERT INTO secret_ballots (id, meeting_id, motion_id, choices)
                 VALUES (?1, ?2, ?3, ?4)",
                params![rand::random::<i64>(), meeting, motion_id, json(choices)],
            )?;
        }
        Record::MotionClosed {
            motion_id,
            result,
            present,
            by,
            at,
        } => {
            let present: Vec<serde_json::Value> = present
                .iter()
                .map(|p| serde_json::json!({ "identity": p.identity, "name": p.name }))
                .collect();
            c.execute(
                "UPDATE motions SET state = 'closed', closed_by = ?3, closed_at = ?4,
                 result = ?5, present = ?6 WHERE meeting_id = ?1 AND id = ?2",
                params![
                    meeting,
                    motion_id,
                    by,
                    ms(*at),
                    json(result),
                    json(&present)
                ],
            )?;
        }
        Record::QuorumSet { rule, .. } => {
            c.execute(
                "UPDATE meetings SET quorum = ?2 WHERE id = ?1",
                params![meeting, json(rule)],
            )?;
        }
        Record::SpeakerLimitSet { seconds, .. } => {
            c.execute(
                "UPDATE meetings SET speaker_limit_secs = ?2 WHERE id = ?1",
                params![meeting, seconds],
            )?;
        }
        Record::Chat { author, text, at } => {
            c.execute(
                "INSERT INTO chat (meeting_id, at, identity, name, text)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![meeting, ms(*at), author.identity, author.name, text],
            )?;
        }
        Record::MeetingEnded { by, at } => {
            c.execute(
                "UPDATE meetings SET ended_at = ?2, ended_by = ?3 WHERE id = ?1",
                params![meeting, ms(*at), by],
            )?;
        }
    }
    Ok(())
}
