//! The speakers list: a turn starts when a host gives someone the floor and ends when a
//! host takes it back or the speaker leaves. A turn may have a time limit (the room's
//! setting when it started): everyone sees the time left, and when it runs out the hosts
//! and the speaker are told once — the floor stays until a host takes it back.

use plenary_proto::{ServerMessage, Speaking};

use super::error::GovernanceError;
use super::{person, Turn};
use crate::meeting::Meeting;
use crate::record::Record;
use crate::time::Time;
use crate::{participant_id, Pid};

/// Longest speaking-time limit, in seconds.
pub const MAX_SPEAKER_LIMIT_SECS: u32 = 3600;

impl<W> Meeting<W> {
    /// A host gave `pid` the floor: a turn starts (unless one is running).
    pub(crate) fn start_turn(&mut self, pid: Pid, actor: Pid, now: Time) {
        if self.live.turns.iter().any(|t| t.pid == pid) {
            return;
        }
        let Some(speaker) = self.member(pid).map(person) else {
            return;
        };
        let limit_secs = self.gov.speaker_limit_secs;
        let given_by = self.identity_of(actor);
        self.live.turns.push(Turn {
            pid,
            speaker: speaker.clone(),
            given_by: given_by.clone(),
            since: now,
            limit_secs,
            told: false,
        });
        self.record(Record::FloorGiven {
            speaker,
            by: given_by,
            limit_secs,
            at: now,
        });
        self.broadcast_speakers(now);
    }

    /// A speaker whose connection dropped comes back with the floor: a new turn with the
    /// time their dropped turn had left (none left: told at once), given by the same host.
    pub(crate) fn resume_turn(&mut self, pid: Pid, dropped: Turn, now: Time) {
        let Some(speaker) = self.member(pid).map(person) else {
            return;
        };
        let left = dropped
            .deadline()
            .map(|d| now.until(d).as_millis().div_ceil(1000) as u32);
        self.live.turns.push(Turn {
            pid,
            speaker: speaker.clone(),
            given_by: dropped.given_by.clone(),
            since: now,
            limit_secs: left,
            told: dropped.told,
        });
        self.record(Record::FloorGiven {
            speaker,
            by: dropped.given_by,
            limit_secs: left,
            at: now,
        });
        self.broadcast_speakers(now);
    }

    /// `pid`'s turn ends (taken back by `by`, a host, or none: they left); returns it.
    pub(crate) fn end_turn(&mut self, pid: Pid, by: Option<Pid>, now: Time) -> Option<Turn> {
        let pos = self.live.turns.iter().position(|t| t.pid == pid)?;
        let turn = self.live.turns.remove(pos);
        let by = by.map(|h| self.identity_of(h));
        self.record(Record::FloorEnded {
            speaker: turn.speaker.clone(),
            by,
            at: now,
        });
        self.broadcast_speakers(now);
        Some(turn)
    }

    /// A host sets the speaking time of turns that start from now on (0: no limit).
    pub(crate) fn set_speaker_limit(
        &mut self,
        actor: Pid,
        seconds: u32,
        now: Time,
    ) -> Result<(), GovernanceError> {
        if seconds > MAX_SPEAKER_LIMIT_SECS {
            return Err(GovernanceError::InvalidSetting(format!(
                "a speaking-time limit is at most {MAX_SPEAKER_LIMIT_SECS} seconds"
            )));
        }
        let seconds = (seconds > 0).then_some(seconds);
        self.gov.speaker_limit_secs = seconds;
        self.record(Record::SpeakerLimitSet {
            seconds,
            by: self.identity_of(actor),
            at: now,
        });
        self.broadcast_speakers(now);
        Ok(())
    }

    /// Tells hosts and the speaker, once, that a turn's time is up.
    pub(crate) fn tell_time_up(&mut self, now: Time) {
        let mut up = Vec::new();
        for t in &mut self.live.turns {
            if !t.told && t.deadline().is_some_and(|d| d <= now) {
                t.told = true;
                up.push((t.pid, t.speaker.name.clone()));
            }
        }
        for (pid, name) in up {
            let msg = ServerMessage::SpeakerTimeUp {
                participant_id: participant_id(pid),
                name,
            };
            self.send_to_hosts(msg.clone());
            if !self.member(pid).is_some_and(|m| m.is_host) {
                self.send(pid, msg);
            }
        }
    }

    /// Who has the floor now, with their time.
    pub(crate) fn speakers_message(&self, now: Time) -> ServerMessage {
        let speaking = self
            .live
            .turns
            .iter()
            .map(|t| Speaking {
                participant_id: participant_id(t.pid),
                name: t.speaker.name.clone(),
                elapsed_ms: now.since(t.since).as_millis() as u64,
                limit_secs: t.limit_secs,
                remaining_ms: t.deadline().map(|d| now.until(d).as_millis() as u64),
            })
            .collect();
        ServerMessage::Speakers {
            speaking,
            limit_secs: self.gov.speaker_limit_secs,
        }
    }

    fn broadcast_speakers(&mut self, now: Time) {
        let msg = self.speakers_message(now);
        self.push(crate::output::Output::Broadcast { except: None, msg });
    }
}
