//! What the meeting asks its driver to keep: attendance, the speakers list, motions and
//! votes, settings — each a [`Record`] that the driver stores together with its audit row
//! ([`Record::audit`]) in one transaction, so that a restart loses neither.
//!
//! A secret ballot is one record ([`Record::SecretBallot`]) naming the voter and the
//! choices, because both must be stored or neither; the driver stores them in two rows that
//! share nothing (the voter in one, the choices in another, with no time and no order), and
//! its audit row says only that the voter voted.

use plenary_proto::{LeaveReason, MotionInfo, MotionResult, QuorumRule, Role};
use serde_json::json;

use crate::output::AuditEvent;
use crate::time::Time;

/// Someone a record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Their identity (from the grant).
    pub identity: String,
    /// Their display name.
    pub name: String,
}

/// Someone who came in, as the attendance list keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    /// Identity and name.
    pub person: Person,
    /// Their grant's role.
    pub role: Role,
    /// For guests: the member who invited them.
    pub invited_by: Option<String>,
    /// Host powers when they came in.
    pub is_host: bool,
}

/// One thing to keep. Every variant has its time; `by` names the acting host's identity.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A session came in: an attendance interval starts.
    Joined {
        /// Who.
        attendee: Attendee,
        /// When.
        at: Time,
    },
    /// A session went: the identity's open attendance interval ends.
    Left {
        /// Who.
        identity: String,
        /// Why.
        reason: LeaveReason,
        /// When.
        at: Time,
    },
    /// A host made someone a host.
    MadeHost {
        /// The new host.
        person: Person,
        /// The host who did it.
        by: String,
        /// When.
        at: Time,
    },
    /// A speaking turn starts: a host gave someone the floor.
    FloorGiven {
        /// The speaker.
        speaker: Person,
        /// The host.
        by: String,
        /// Their time limit.
        limit_secs: Option<u32>,
        /// When.
        at: Time,
    },
    /// A speaking turn ends.
    FloorEnded {
        /// The speaker.
        speaker: Person,
        /// The host who took the floor back (none: the speaker left).
        by: Option<String>,
        /// When.
        at: Time,
    },
    /// A host wrote a motion (a draft).
    MotionCreated {
        /// The motion as written.
        motion: MotionInfo,
        /// The host.
        by: String,
        /// When.
        at: Time,
    },
    /// A motion opened for votes.
    MotionOpened {
        /// The motion.
        motion_id: String,
        /// When it closes by itself, if it does.
        deadline: Option<Time>,
        /// The host.
        by: String,
        /// When.
        at: Time,
    },
    /// A recorded vote (names shown): replaces the voter's earlier choice on the motion.
    RecordedVote {
        /// The motion.
        motion_id: String,
        /// The voter.
        voter: Person,
        /// Option indexes.
        choices: Vec<u32>,
        /// When.
        at: Time,
    },
    /// A secret ballot: store the voter and the choices apart, never linked (see the
    /// module docs).
    SecretBallot {
        /// The motion.
        motion_id: String,
        /// Who voted (stored without the choices).
        voter: Person,
        /// What was chosen (stored without the voter, the time or an order).
        choices: Vec<u32>,
        /// When (for the audit row only).
        at: Time,
    },
    /// A motion closed.
    MotionClosed {
        /// The motion.
        motion_id: String,
        /// Its result.
        result: MotionResult,
        /// Who was present and allowed to vote when it closed.
        present: Vec<Person>,
        /// The host who closed it (none: its deadline passed).
        by: Option<String>,
        /// When.
        at: Time,
    },
    /// A host set the quorum rule.
    QuorumSet {
        /// The rule.
        rule: QuorumRule,
        /// The host.
        by: String,
        /// When.
        at: Time,
    },
    /// A host set the speaking-time limit for new turns.
    SpeakerLimitSet {
        /// Seconds (none: no limit).
        seconds: Option<u32>,
        /// The host.
        by: String,
        /// When.
        at: Time,
    },
    /// A chat message, kept for the minutes (only when the operator asks for it).
    Chat {
        /// Who wrote it.
        author: Person,
        /// The text.
        text: String,
        /// When.
        at: Time,
    },
    /// A host ended the meeting.
    MeetingEnded {
        /// The host.
        by: String,
        /// When.
        at: Time,
    },
}

impl Record {
    /// When it happened.
    pub fn at(&self) -> Time {
        use Record::*;
        match self {
            Joined { at, .. }
            | Left { at, .. }
            | MadeHost { at, .. }
            | FloorGiven { at, .. }
            | FloorEnded { at, .. }
            | MotionCreated { at, .. }
            | MotionOpened { at, .. }
            | RecordedVote { at, .. }
            | SecretBallot { at, .. }
            | MotionClosed { at, .. }
            | QuorumSet { at, .. }
            | SpeakerLimitSet { at, .. }
            | Chat { at, .. }
            | MeetingEnded { at, .. } => *at,
        }
    }

    /// The audit row that goes with it (in the same transaction). A secret ballot's row
    /// names the voter and the motion, never the choices; a chat row holds no text.
    pub fn audit(&self) -> AuditEvent {
        let nobody = String::new();
        let (kind, actor, detail) = match self {
            Record::Joined { attendee, .. } => (
                "attendance_join",
                &attendee.person.identity,
                json!({ "name": attendee.person.name, "role": attendee.role,
                        "invited_by": attendee.invited_by, "is_host": attendee.is_host }),
            ),
            Record::Left {
                identity, reason, ..
            } => ("attendance_leave", identity, json!({ "reason": reason })),
            Record::MadeHost { person, by, .. } => (
                "host_make_host",
                by,
                json!({ "identity": person.identity, "name": person.name }),
            ),
            Record::FloorGiven {
                speaker,
                by,
                limit_secs,
                ..
            } => (
                "host_give_floor",
                by,
                json!({ "identity": speaker.identity, "limit_secs": limit_secs }),
            ),
            Record::FloorEnded {
                speaker,
                by: Some(by),
                ..
            } => (
                "host_take_floor",
                by,
                json!({ "identity": speaker.identity }),
            ),
            Record::FloorEnded {
                speaker, by: None, ..
            } => ("floor_ended", &speaker.identity, json!({})),
            Record::MotionCreated { motion, by, .. } => (
                "motion_created",
                by,
                json!({ "motion_id": motion.id, "title": motion.spec.title,
                        "kind": motion.spec.kind }),
            ),
            Record::MotionOpened {
                motion_id,
                deadline,
                by,
                ..
            } => (
                "motion_opened",
                by,
                json!({ "motion_id": motion_id, "deadline": deadline.map(Time::as_millis) }),
            ),
            Record::RecordedVote {
                motion_id,
                voter,
                choices,
                ..
            } => (
                "vote_cast",
                &voter.identity,
                json!({ "motion_id": motion_id, "choices": choices }),
            ),
            Record::SecretBallot {
                motion_id, voter, ..
            } => (
                "ballot_cast",
                &voter.identity,
                json!({ "motion_id": motion_id }),
            ),
            Record::MotionClosed {
                motion_id,
                result,
                by,
                ..
            } => (
                "motion_closed",
                by.as_ref().unwrap_or(&nobody),
                json!({ "motion_id": motion_id, "closed_by": result.closed_by,
                        "votes_cast": result.votes_cast, "quorum_met": result.quorum.met }),
            ),
            Record::QuorumSet { rule, by, .. } => ("quorum_set", by, json!({ "rule": rule })),
            Record::SpeakerLimitSet { seconds, by, .. } => {
                ("speaker_limit_set", by, json!({ "seconds": seconds }))
            }
            Record::Chat { author, .. } => ("chat_kept", &author.identity, json!({})),
            Record::MeetingEnded { by, .. } => ("host_end_meeting", by, json!({})),
        };
        AuditEvent {
            kind: kind.to_string(),
            actor: actor.clone(),
            detail,
        }
    }
}
