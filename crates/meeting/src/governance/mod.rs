//! Governance: motions and votes, quorum, the speakers list — the part of a meeting a
//! co-op's general meeting exists for. Part of [`Meeting`](crate::Meeting), like the host
//! actions: the rules check who may do what, change the state, and produce outputs
//! (messages, and [`Record`](crate::Record)s the driver keeps).
//!
//! - [`motion`]: one motion, its checks, ballots and result.
//! - [`quorum`]: quorum rules.
//! - `votes.rs`: writing, opening and closing motions, voting, settings.
//! - `speakers.rs`: speaking turns and their time limits.
//!
//! [`Governance`] is the part of the state that outlives a room's members: the driver may
//! take it when a room empties and give it back to the next `Meeting` of that room (or
//! rebuild it from its records after a restart), so the meeting goes on.

pub mod error;
pub mod motion;
pub mod quorum;
mod speakers;
mod votes;

use std::time::Duration;

use plenary_proto::{MotionState, QuorumRule, QuorumStatus, Role, ServerMessage};

pub use error::GovernanceError;
pub use motion::{Ballots, Motion, RecordedVote};

use crate::meeting::{Meeting, Member};
use crate::output::Output;
use crate::record::{Attendee, Person, Record};
use crate::time::Time;
use crate::Pid;

/// Governance settings from the operator's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GovernanceConfig {
    /// The quorum rule of a new meeting (hosts may change it).
    pub quorum: QuorumRule,
    /// Speaking time of each turn in a new meeting (hosts may change it).
    pub speaker_limit_secs: Option<u32>,
    /// Keep chat messages for the minutes.
    pub record_chat: bool,
}

/// The lasting state of a meeting's governance: rules and motions. Plain data, so the
/// driver can keep it across an empty room or rebuild it from its records.
#[derive(Debug, Clone, PartialEq)]
pub struct Governance {
    /// The room's quorum rule.
    pub quorum: QuorumRule,
    /// Speaking time of each new turn.
    pub speaker_limit_secs: Option<u32>,
    /// Every motion, in the order written.
    pub motions: Vec<Motion>,
    /// The number of the next motion (`MO_<n>`).
    pub next_motion: u32,
    /// A host ended the meeting.
    pub ended: bool,
}

impl Governance {
    /// A new meeting's governance.
    pub fn new(quorum: QuorumRule, speaker_limit_secs: Option<u32>) -> Governance {
        Governance {
            quorum,
            speaker_limit_secs,
            motions: Vec::new(),
            next_motion: 1,
            ended: false,
        }
    }

    /// The open motion, if any.
    pub fn open_motion(&self) -> Option<&Motion> {
        self.motions.iter().find(|m| m.state == MotionState::Open)
    }
}

/// Someone who has the floor now.
#[derive(Debug, Clone)]
pub(crate) struct Turn {
    pub(crate) pid: Pid,
    pub(crate) speaker: Person,
    /// The host who gave the floor.
    pub(crate) given_by: String,
    pub(crate) since: Time,
    pub(crate) limit_secs: Option<u32>,
    /// Hosts were told the time is up.
    pub(crate) told: bool,
}

impl Turn {
    fn deadline(&self) -> Option<Time> {
        self.limit_secs
            .map(|s| self.since + Duration::from_secs(s as u64))
    }
}

/// Governance state that lives only while the room does.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Floor holders, in the order they got it.
    pub(crate) turns: Vec<Turn>,
    /// What hosts were last told about the quorum.
    pub(crate) quorum_sent: Option<QuorumStatus>,
    /// Motions whose vote count changed since the last tick.
    pub(crate) votes_changed: Vec<String>,
    /// Attendance was closed for a shutdown.
    pub(crate) suspended: bool,
    /// Turns of speakers whose connection dropped, by identity: a resume with the floor
    /// goes on with the time that was left.
    pub(crate) dropped_turns: Vec<(String, Turn)>,
}

/// Whether a member counts as a member (not a guest) for quorum and votes.
pub(crate) fn is_member(m: &Member) -> bool {
    m.info.role != Role::Guest || m.is_host
}

pub(crate) fn person(m: &Member) -> Person {
    Person {
        identity: m.info.identity.clone(),
        name: m.info.name.clone(),
    }
}

impl<W> Meeting<W> {
    /// The governance state (to keep it while the room is empty).
    pub fn governance(&self) -> &Governance {
        &self.gov
    }

    /// Continues a meeting: its rules and motions come back (a room that emptied and
    /// filled again, or a restart). Call before anyone enters.
    pub fn restore_governance(&mut self, gov: Governance) {
        self.gov = gov;
    }

    /// Whether a host ended the meeting.
    pub fn has_ended(&self) -> bool {
        self.gov.ended
    }

    /// The server is stopping: every attendance interval and speaking turn ends now (the
    /// members' sessions are closed by the driver). Nothing is sent.
    pub fn suspend(&mut self, now: Time) {
        if self.live.suspended {
            return;
        }
        self.live.suspended = true;
        for t in std::mem::take(&mut self.live.turns) {
            self.record(Record::FloorEnded {
                speaker: t.speaker,
                by: None,
                at: now,
            });
        }
        let identities: Vec<String> = self
            .members
            .iter()
            .map(|m| m.info.identity.clone())
            .collect();
        for identity in identities {
            self.record(Record::Left {
                identity,
                reason: plenary_proto::LeaveReason::ServerShutdown,
                at: now,
            });
        }
    }

    pub(crate) fn record(&mut self, r: Record) {
        self.push(Output::Record(r));
    }

    /// Members (not guests) present now.
    pub(crate) fn members_present(&self) -> u32 {
        self.members.iter().filter(|m| is_member(m)).count() as u32
    }

    pub(crate) fn quorum_status(&self) -> QuorumStatus {
        let members = self.members_present();
        let guests = self.members.len() as u32 - members;
        let votes = self.gov.open_motion().map(Motion::votes_cast);
        quorum::status(self.gov.quorum, members, guests, votes)
    }

    /// Someone came in: attendance, and what they need to see of the governance.
    pub(crate) fn governance_enter(&mut self, pid: Pid, now: Time) {
        let Some(m) = self.member(pid) else { return };
        let attendee = Attendee {
            person: person(m),
            role: m.info.role,
            invited_by: m.info.invited_by.clone(),
            is_host: m.is_host,
        };
        let is_host = m.is_host;
        let has_floor = m.has_floor;
        let identity = attendee.person.identity.clone();
        self.record(Record::Joined { attendee, at: now });
        let dropped = self
            .live
            .dropped_turns
            .iter()
            .position(|(i, _)| *i == identity);
        if let Some(pos) = dropped {
            let (_, turn) = self.live.dropped_turns.remove(pos);
            if has_floor {
                self.resume_turn(pid, turn, now);
            }
        }
        self.send_governance_to(pid, is_host, now);
        self.send(pid, self.speakers_message(now));
    }

    /// Sends one member every motion they may see, their votes, and (to hosts) the quorum.
    pub(crate) fn send_governance_to(&mut self, pid: Pid, is_host: bool, now: Time) {
        let Some(identity) = self.member(pid).map(|m| m.info.identity.clone()) else {
            return;
        };
        let mut msgs = Vec::new();
        for motion in &self.gov.motions {
            if motion.state == MotionState::Draft && !is_host {
                continue;
            }
            msgs.push(ServerMessage::Motion {
                motion: motion.info(now),
            });
            if let Some(choices) = my_vote(motion, &identity) {
                msgs.push(ServerMessage::VoteRecorded {
                    motion_id: motion.id.clone(),
                    choices,
                });
            }
        }
        if is_host {
            msgs.push(ServerMessage::Quorum {
                status: self.quorum_status(),
            });
        }
        for msg in msgs {
            self.send(pid, msg);
        }
    }

    /// Someone went: their attendance interval and speaking turn end; their votes stay.
    pub(crate) fn governance_leave(
        &mut self,
        pid: Pid,
        identity: String,
        reason: plenary_proto::LeaveReason,
        now: Time,
    ) {
        if self.live.suspended {
            return;
        }
        let turn = self.end_turn(pid, None, now);
        if let (Some(turn), plenary_proto::LeaveReason::Disconnected) = (turn, reason) {
            self.live.dropped_turns.retain(|(i, _)| *i != identity);
            self.live.dropped_turns.push((identity.clone(), turn));
        }
        self.record(Record::Left {
            identity,
            reason,
            at: now,
        });
    }

    /// Deadlines, speaking time, vote counts and the quorum indicator.
    pub(crate) fn governance_tick(&mut self, now: Time) {
        self.close_due_motions(now);
        self.tell_time_up(now);
        for motion_id in std::mem::take(&mut self.live.votes_changed) {
            let Some(votes_cast) = self
                .gov
                .motions
                .iter()
                .find(|m| m.id == motion_id && m.state == MotionState::Open)
                .map(Motion::votes_cast)
            else {
                continue;
            };
            self.push(Output::Broadcast {
                except: None,
                msg: ServerMessage::VotesCast {
                    motion_id,
                    votes_cast,
                },
            });
        }
        let status = self.quorum_status();
        if self.live.quorum_sent != Some(status) {
            self.live.quorum_sent = Some(status);
            self.send_to_hosts(ServerMessage::Quorum { status });
        }
    }

    pub(crate) fn send_to_hosts(&mut self, msg: ServerMessage) {
        let hosts: Vec<Pid> = self
            .members
            .iter()
            .filter(|m| m.is_host)
            .map(|m| m.pid)
            .collect();
        for h in hosts {
            self.send(h, msg.clone());
        }
    }

    /// Tells someone why a governance request was refused (nothing changed).
    pub(crate) fn refuse(&mut self, to: Pid, e: GovernanceError) {
        self.error(to, e.code(), e.to_string());
    }

    pub(crate) fn identity_of(&self, pid: Pid) -> String {
        self.member(pid)
            .map(|m| m.info.identity.clone())
            .unwrap_or_default()
    }
}

/// What a member is told about their own vote on a motion: `Some(Some(choices))` for a
/// recorded vote, `Some(None)` for a cast secret ballot, `None` if they have not voted.
fn my_vote(motion: &Motion, identity: &str) -> Option<Option<Vec<u32>>> {
    match &motion.ballots {
        Ballots::Recorded(votes) => votes
            .iter()
            .find(|v| v.voter.identity == identity)
            .map(|v| Some(v.choices.clone())),
        Ballots::Secret { voters, .. } => voters.contains(identity).then_some(None),
    }
}
