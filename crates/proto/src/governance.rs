//! The governance part of the protocol: motions and votes, quorum, the speakers list.
//! `docs/protocol.md` §6 describes the flow; `docs/governance.md` what each side may learn.

use serde::{Deserialize, Serialize};

/// How a motion's votes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MotionKind {
    /// Names are shown: the result lists who chose what. A member may change their vote
    /// until the motion closes; the last choice counts.
    #[default]
    Recorded,
    /// The server records that a member voted and the tally, never who chose what. A cast
    /// ballot is final.
    Secret,
}

/// Where a motion is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MotionState {
    /// Written by a host, seen only by hosts, not yet open for votes.
    Draft,
    /// Taking votes.
    Open,
    /// Closed; the result is final.
    Closed,
}

/// A motion as a host writes it (`create_motion`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MotionSpec {
    /// A short title (1 to 200 characters).
    pub title: String,
    /// The motion's text (at most 10,000 characters).
    #[serde(default)]
    pub text: String,
    /// Recorded vote or secret ballot.
    #[serde(default)]
    pub kind: MotionKind,
    /// The choices (2 to 20, each 1 to 100 characters). Empty: For, Against, Abstain.
    #[serde(default)]
    pub options: Vec<String>,
    /// How many options a voter may choose: 1 (single choice, the default) up to the
    /// number of options (multiple choice).
    #[serde(default = "one")]
    pub max_choices: u32,
    /// Guests may vote on this motion (they may not by default).
    #[serde(default)]
    pub allow_guests: bool,
    /// Once opened, the motion closes by itself after this many seconds (10 s to 24 h);
    /// none: a host closes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
}

fn one() -> u32 {
    1
}

impl Default for MotionSpec {
    fn default() -> Self {
        MotionSpec {
            title: String::new(),
            text: String::new(),
            kind: MotionKind::Recorded,
            options: Vec::new(),
            max_choices: 1,
            allow_guests: false,
            duration_secs: None,
        }
    }
}

/// How a motion was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// A host closed it.
    Host,
    /// Its deadline passed.
    Deadline,
}

/// A quorum rule for a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuorumRule {
    /// No quorum: every vote counts as quorate.
    #[default]
    None,
    /// At least this many members (hosts and members, not guests) present.
    Members {
        /// How many.
        count: u32,
    },
    /// At least this share of the members present must cast a vote (participation).
    Share {
        /// Percent, 1 to 100.
        percent: u32,
    },
}

/// Whether a quorum rule held, with the numbers it was judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumCheck {
    /// The rule.
    pub rule: QuorumRule,
    /// Members present.
    pub members_present: u32,
    /// What the rule asks for: members present (`members`) or votes cast (`share`).
    pub required: u32,
    /// Whether it held.
    pub met: bool,
}

/// What hosts see live: who is present and whether the quorum holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// The room's rule.
    pub rule: QuorumRule,
    /// Members present now (hosts and members; guests are not counted).
    pub members_present: u32,
    /// Guests present now.
    pub guests_present: u32,
    /// What the rule asks for (members present, or votes cast on the open motion).
    pub required: u32,
    /// Votes cast on the open motion, if one is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub votes_cast: Option<u32>,
    /// Whether the quorum holds now; none while a share rule waits for a motion's votes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

/// One option's share of a closed motion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionResult {
    /// The option.
    pub option: String,
    /// Votes for it.
    pub votes: u32,
    /// Percent of the votes cast (one decimal).
    pub percent_of_cast: f64,
    /// Percent of those present who could vote (one decimal).
    pub percent_of_present: f64,
    /// Recorded votes only: the voters' names, in the order they voted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<String>,
}

/// A closed motion's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MotionResult {
    /// Per option, in the motion's order.
    pub options: Vec<OptionResult>,
    /// Voters (ballots) counted.
    pub votes_cast: u32,
    /// Present when it closed and allowed to vote on it.
    pub eligible_present: u32,
    /// The quorum at the moment it closed.
    pub quorum: QuorumCheck,
    /// Closed by a host or by its deadline.
    pub closed_by: ClosedBy,
}

/// A motion as participants see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MotionInfo {
    /// Server-assigned id (`MO_<n>`), unique in the meeting.
    pub id: String,
    /// What was proposed (with the default options filled in).
    #[serde(flatten)]
    pub spec: MotionSpec,
    /// Draft, open or closed.
    pub state: MotionState,
    /// Open with a deadline: milliseconds left when this message was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
    /// Voters so far (never who chose what while it is open).
    pub votes_cast: u32,
    /// Closed: the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<MotionResult>,
}

/// Someone who has the floor now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speaking {
    /// Their participant id.
    pub participant_id: String,
    /// Their name.
    pub name: String,
    /// Milliseconds since the floor was given.
    pub elapsed_ms: u64,
    /// Their time limit, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_secs: Option<u32>,
    /// With a limit: milliseconds left when this message was sent (0: time is up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_motion_spec_needs_only_a_title() {
        let spec: MotionSpec = serde_json::from_str(r#"{"title":"Budget"}"#).unwrap();
        assert_eq!(spec.kind, MotionKind::Recorded);
        assert_eq!(spec.max_choices, 1);
        assert!(spec.options.is_empty() && !spec.allow_guests);
    }

    #[test]
    fn quorum_rules_are_tagged() {
        let r: QuorumRule = serde_json::from_str(r#"{"kind":"members","count":20}"#).unwrap();
        assert_eq!(r, QuorumRule::Members { count: 20 });
        assert_eq!(
            serde_json::to_string(&QuorumRule::Share { percent: 50 }).unwrap(),
            r#"{"kind":"share","percent":50}"#
        );
    }

    #[test]
    fn motion_info_is_flat() {
        let info = MotionInfo {
            id: "MO_1".into(),
            spec: MotionSpec {
                title: "T".into(),
                ..MotionSpec::default()
            },
            state: MotionState::Open,
            remaining_ms: None,
            votes_cast: 0,
            result: None,
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["title"], "T");
        assert_eq!(json["state"], "open");
        assert_eq!(json["kind"], "recorded");
    }
}
