//! Motions and votes, one small function per request. Each checks first (who asks, the
//! motion's state, the input) and changes nothing when it refuses; then it changes the
//! state, records it, and tells who needs to know.

use std::time::Duration;

use plenary_proto::{ClosedBy, MotionSpec, MotionState, QuorumRule, Role, ServerMessage};

use super::error::GovernanceError;
use super::motion::{self, Ballots, Motion, RecordedVote, MAX_MOTIONS};
use super::{is_member, person, quorum};
use crate::meeting::Meeting;
use crate::output::Output;
use crate::record::{Person, Record};
use crate::time::Time;
use crate::Pid;

impl<W> Meeting<W> {
    /// A host writes a motion: a draft, shown to hosts only.
    pub(crate) fn create_motion(
        &mut self,
        actor: Pid,
        spec: MotionSpec,
        now: Time,
    ) -> Result<(), GovernanceError> {
        let spec = motion::validate(spec)?;
        if self.gov.motions.len() >= MAX_MOTIONS {
            return Err(GovernanceError::TooManyMotions(MAX_MOTIONS));
        }
        let id = format!("MO_{}", self.gov.next_motion);
        self.gov.next_motion += 1;
        let m = Motion::draft(id, spec);
        let info = m.info(now);
        self.gov.motions.push(m);
        self.record(Record::MotionCreated {
            motion: info.clone(),
            by: self.identity_of(actor),
            at: now,
        });
        self.send_to_hosts(ServerMessage::Motion { motion: info });
        Ok(())
    }

    /// A host opens a draft for votes; everyone sees it. One motion is open at a time.
    pub(crate) fn open_motion(
        &mut self,
        actor: Pid,
        motion_id: &str,
        now: Time,
    ) -> Result<(), GovernanceError> {
        let pos = self.motion_pos(motion_id)?;
        if let Some(open) = self.gov.open_motion() {
            return Err(if open.id == motion_id {
                GovernanceError::NotOpen {
                    motion_id: motion_id.into(),
                    state: MotionState::Open,
                }
            } else {
                GovernanceError::AnotherOpen(open.id.clone())
            });
        }
        let m = &mut self.gov.motions[pos];
        if m.state != MotionState::Draft {
            return Err(GovernanceError::NotOpen {
                motion_id: motion_id.into(),
                state: m.state,
            });
        }
        m.state = MotionState::Open;
        m.opened_at = Some(now);
        m.deadline = m
            .spec
            .duration_secs
            .map(|s| now + Duration::from_secs(s as u64));
        let (deadline, info) = (m.deadline, m.info(now));
        self.record(Record::MotionOpened {
            motion_id: motion_id.into(),
            deadline,
            by: self.identity_of(actor),
            at: now,
        });
        self.push(Output::Broadcast {
            except: None,
            msg: ServerMessage::Motion { motion: info },
        });
        Ok(())
    }

    /// A host closes the open motion: its result (with the quorum at this moment) goes to
    /// everyone.
    pub(crate) fn close_motion(
        &mut self,
        actor: Pid,
        motion_id: &str,
        now: Time,
    ) -> Result<(), GovernanceError> {
        let pos = self.motion_pos(motion_id)?;
        let state = self.gov.motions[pos].state;
        if state != MotionState::Open {
            return Err(GovernanceError::NotOpen {
                motion_id: motion_id.into(),
                state,
            });
        }
        let by = self.identity_of(actor);
        self.close_at(pos, Some(by), now);
        Ok(())
    }

    /// Closes the motion at `pos` now (by a host, or by its deadline when `by` is none).
    pub(crate) fn close_at(&mut self, pos: usize, by: Option<String>, now: Time) {
        let present = self.eligible_present(&self.gov.motions[pos]);
        let m = &self.gov.motions[pos];
        // Those who voted and left count as present for the percentages: they were.
        let mut counted: Vec<&str> = present.iter().map(|p| p.identity.as_str()).collect();
        for v in voters(m) {
            if !counted.contains(&v) {
                counted.push(v);
            }
        }
        let check = quorum::check(self.gov.quorum, self.members_present(), m.votes_cast());
        let closed_by = if by.is_some() {
            ClosedBy::Host
        } else {
            ClosedBy::Deadline
        };
        let result = m.result(counted.len() as u32, check, closed_by);
        let m = &mut self.gov.motions[pos];
        m.state = MotionState::Closed;
        m.result = Some(result.clone());
        let (motion_id, info) = (m.id.clone(), m.info(now));
        self.record(Record::MotionClosed {
            motion_id,
            result,
            present,
            by,
            at: now,
        });
        self.push(Output::Broadcast {
            except: None,
            msg: ServerMessage::Motion { motion: info },
        });
    }

    /// Closes every open motion whose deadline has passed.
    pub(crate) fn close_due_motions(&mut self, now: Time) {
        let due: Vec<usize> = (0..self.gov.motions.len())
            .filter(|i| {
                let m = &self.gov.motions[*i];
                m.state == MotionState::Open && m.deadline.is_some_and(|d| d <= now)
            })
            .collect();
        for pos in due {
            self.close_at(pos, None, now);
        }
    }

    /// Closes the open motion (the meeting is ending).
    pub(crate) fn close_open_motions(&mut self, by: String, now: Time) {
        let open: Vec<usize> = (0..self.gov.motions.len())
            .filter(|i| self.gov.motions[*i].state == MotionState::Open)
            .collect();
        for pos in open {
            self.close_at(pos, Some(by.clone()), now);
        }
    }

    /// A vote. One per member identity: a second tab (or device) of the same identity is
    /// the same voter. A recorded vote may change until the motion closes; a secret ballot
    /// is final.
    pub fn vote(&mut self, pid: Pid, motion_id: &str, choices: &[u32], now: Time) {
        if let Err(e) = self.try_vote(pid, motion_id, choices, now) {
            self.refuse(pid, e);
        }
    }

    fn try_vote(
        &mut self,
        pid: Pid,
        motion_id: &str,
        choices: &[u32],
        now: Time,
    ) -> Result<(), GovernanceError> {
        let Some(member) = self.member(pid) else {
            return Ok(());
        };
        let voter = person(member);
        let guest = member.info.role == Role::Guest && !member.is_host;
        let pos = self.motion_pos(motion_id)?;
        let m = &self.gov.motions[pos];
        if m.state != MotionState::Open {
            return Err(GovernanceError::NotOpen {
                motion_id: motion_id.into(),
                state: m.state,
            });
        }
        if guest && !m.spec.allow_guests {
            return Err(GovernanceError::NotEligible(motion_id.into()));
        }
        let choices = m.check_choices(choices)?;
        let record = match &self.gov.motions[pos].ballots {
            Ballots::Secret { voters, .. } if voters.contains(&voter.identity) => {
                return Err(GovernanceError::AlreadyVoted(motion_id.into()));
            }
            Ballots::Secret { .. } => Record::SecretBallot {
                motion_id: motion_id.into(),
                voter: voter.clone(),
                choices: choices.clone(),
                at: now,
            },
            Ballots::Recorded(_) => Record::RecordedVote {
                motion_id: motion_id.into(),
                voter: voter.clone(),
                choices: choices.clone(),
                at: now,
            },
        };
        let secret = matches!(record, Record::SecretBallot { .. });
        count(&mut self.gov.motions[pos].ballots, voter, &choices);
        self.record(record);
        if !self.live.votes_changed.iter().any(|id| id == motion_id) {
            self.live.votes_changed.push(motion_id.into());
        }
        self.send(
            pid,
            ServerMessage::VoteRecorded {
                motion_id: motion_id.into(),
                choices: (!secret).then_some(choices),
            },
        );
        Ok(())
    }

    /// A host sets the room's quorum rule (not while a motion is open).
    pub(crate) fn set_quorum(
        &mut self,
        actor: Pid,
        rule: QuorumRule,
        now: Time,
    ) -> Result<(), GovernanceError> {
        let rule = quorum::validate(rule)?;
        if let Some(open) = self.gov.open_motion() {
            return Err(GovernanceError::QuorumDuringVote(open.id.clone()));
        }
        self.gov.quorum = rule;
        self.record(Record::QuorumSet {
            rule,
            by: self.identity_of(actor),
            at: now,
        });
        // Hosts see the change at once (the tick would send it too).
        let status = self.quorum_status();
        self.live.quorum_sent = Some(status);
        self.send_to_hosts(ServerMessage::Quorum { status });
        Ok(())
    }

    fn motion_pos(&self, motion_id: &str) -> Result<usize, GovernanceError> {
        self.gov
            .motions
            .iter()
            .position(|m| m.id == motion_id)
            .ok_or_else(|| GovernanceError::UnknownMotion(motion_id.into()))
    }

    /// Present now and allowed to vote on `m`.
    fn eligible_present(&self, m: &Motion) -> Vec<Person> {
        self.members
            .iter()
            .filter(|x| is_member(x) || m.spec.allow_guests)
            .map(person)
            .collect()
    }
}

/// Adds a checked vote to the ballots (a recorded voter's earlier choice is replaced).
fn count(ballots: &mut Ballots, voter: Person, choices: &[u32]) {
    match ballots {
        Ballots::Recorded(votes) => match votes
            .iter_mut()
            .find(|v| v.voter.identity == voter.identity)
        {
            Some(v) => v.choices = choices.to_vec(),
            None => votes.push(RecordedVote {
                voter,
                choices: choices.to_vec(),
            }),
        },
        Ballots::Secret { voters, tally } => {
            voters.insert(voter.identity);
            for c in choices {
                if let Some(n) = tally.get_mut(*c as usize) {
                    *n += 1;
                }
            }
        }
    }
}

/// Identities that voted on `m`.
fn voters(m: &Motion) -> Vec<&str> {
    match &m.ballots {
        Ballots::Recorded(v) => v.iter().map(|r| r.voter.identity.as_str()).collect(),
        Ballots::Secret { voters, .. } => voters.iter().map(String::as_str).collect(),
    }
}
