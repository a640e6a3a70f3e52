//! One motion: what a host wrote (checked by [`validate`]), its state, its ballots and its
//! result. Pure values and functions; the rules that change them are in `votes.rs`.
//!
//! A secret ballot keeps two things that share nothing: the set of identities that voted
//! (to refuse a second ballot) and the tally (counts per option). Nothing here, or anywhere
//! in the meeting, maps a member to what they chose in a secret ballot.

use std::collections::BTreeSet;

use plenary_proto::{
    ClosedBy, MotionInfo, MotionKind, MotionResult, MotionSpec, MotionState, OptionResult,
    QuorumCheck,
};

use super::error::GovernanceError;
use crate::record::Person;
use crate::time::Time;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest motion text, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Fewest options.
pub const MIN_OPTIONS: usize = 2;
/// Most options.
pub const MAX_OPTIONS: usize = 20;
/// Longest option, in characters.
pub const MAX_OPTION_CHARS: usize = 100;
/// Most motions (drafts included) in one meeting.
pub const MAX_MOTIONS: usize = 100;
/// Shortest deadline, in seconds.
pub const MIN_DURATION_SECS: u32 = 10;
/// Longest deadline, in seconds.
pub const MAX_DURATION_SECS: u32 = 24 * 3600;
/// The options of a motion written without any.
pub const DEFAULT_OPTIONS: [&str; 3] = ["For", "Against", "Abstain"];

/// One voter's current choice in a recorded vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedVote {
    /// The voter.
    pub voter: Person,
    /// Their choices (option indexes, ascending).
    pub choices: Vec<u32>,
}

/// The ballots of one motion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ballots {
    /// Names shown: each voter's current choice, in the order they first voted.
    Recorded(Vec<RecordedVote>),
    /// Secret: who voted, and the counts; never which voter chose what.
    Secret {
        /// Identities that cast a ballot.
        voters: BTreeSet<String>,
        /// Ballots per option.
        tally: Vec<u32>,
    },
}

/// A motion in a meeting.
#[derive(Debug, Clone, PartialEq)]
pub struct Motion {
    /// `MO_<n>`.
    pub id: String,
    /// What the host wrote, checked, default options filled in.
    pub spec: MotionSpec,
    /// Draft, open or closed.
    pub state: MotionState,
    /// When it opened.
    pub opened_at: Option<Time>,
    /// When it closes by itself.
    pub deadline: Option<Time>,
    /// The ballots so far.
    pub ballots: Ballots,
    /// Once closed.
    pub result: Option<MotionResult>,
}

impl Motion {
    /// A new draft.
    pub fn draft(id: String, spec: MotionSpec) -> Motion {
        let ballots = match spec.kind {
            MotionKind::Recorded => Ballots::Recorded(Vec::new()),
            MotionKind::Secret => Ballots::Secret {
                voters: BTreeSet::new(),
                tally: vec![0; spec.options.len()],
            },
        };
        Motion {
            id,
            spec,
            state: MotionState::Draft,
            opened_at: None,
            deadline: None,
            ballots,
            result: None,
        }
    }

    /// How many have voted.
    pub fn votes_cast(&self) -> u32 {
        match &self.ballots {
            Ballots::Recorded(v) => v.len() as u32,
            Ballots::Secret { voters, .. } => voters.len() as u32,
        }
    }

    /// Whether `identity` has voted.
    pub fn has_voted(&self, identity: &str) -> bool {
        match &self.ballots {
            Ballots::Recorded(v) => v.iter().any(|r| r.voter.identity == identity),
            Ballots::Secret { voters, .. } => voters.contains(identity),
        }
    }

    /// Ballots per option.
    pub fn tally(&self) -> Vec<u32> {
        match &self.ballots {
            Ballots::Recorded(votes) => {
                let mut t = vec![0; self.spec.options.len()];
                for v in votes {
                    for c in &v.choices {
                        if let Some(n) = t.get_mut(*c as usize) {
                            *n += 1;
                        }
                    }
                }
                t
            }
            Ballots::Secret { tally, .. } => tally.clone(),
        }
    }

    /// The motion as participants see it at `now`.
    pub fn info(&self, now: Time) -> MotionInfo {
        let remaining_ms = match (self.state, self.deadline) {
            (MotionState::Open, Some(d)) => Some(now.until(d).as_millis() as u64),
            _ => None,
        };
        MotionInfo {
            id: self.id.clone(),
            spec: self.spec.clone(),
            state: self.state,
            remaining_ms,
            votes_cast: self.votes_cast(),
            result: self.result.clone(),
        }
    }

    /// Checks a voter's choices: one to `max_choices` distinct options of this motion.
    /// Returns them sorted.
    pub fn check_choices(&self, choices: &[u32]) -> Result<Vec<u32>, GovernanceError> {
        let n = self.spec.options.len() as u32;
        let max = self.spec.max_choices;
        if choices.is_empty() {
            return Err(GovernanceError::InvalidChoice("choose an option".into()));
        }
        if let Some(bad) = choices.iter().find(|c| **c >= n) {
            return Err(GovernanceError::InvalidChoice(format!(
                "option {bad} does not exist: motion {} has options 0 to {}",
                self.id,
                n - 1
            )));
        }
        let mut sorted = choices.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != choices.len() {
            return Err(GovernanceError::InvalidChoice(
                "an option is chosen twice".into(),
            ));
        }
        if sorted.len() > max as usize {
            return Err(GovernanceError::InvalidChoice(if max == 1 {
                "choose one option only".into()
            } else {
                format!("choose at most {max} options")
            }));
        }
        Ok(sorted)
    }

    /// The result if the motion closed now, with `eligible_present` who could vote present.
    pub fn result(
        &self,
        eligible_present: u32,
        quorum: QuorumCheck,
        closed_by: ClosedBy,
    ) -> MotionResult {
        let cast = self.votes_cast();
        let tally = self.tally();
        let options = self
            .spec
            .options
            .iter()
            .enumerate()
            .map(|(i, option)| {
                let votes = tally.get(i).copied().unwrap_or(0);
                let voters = match &self.ballots {
                    Ballots::Recorded(v) => v
                        .iter()
                        .filter(|r| r.choices.contains(&(i as u32)))
                        .map(|r| r.voter.name.clone())
                        .collect(),
                    Ballots::Secret { .. } => Vec::new(),
                };
                OptionResult {
                    option: option.clone(),
                    votes,
                    percent_of_cast: percent(votes, cast),
                    percent_of_present: percent(votes, eligible_present),
                    voters,
                }
            })
            .collect();
        MotionResult {
            options,
            votes_cast: cast,
            eligible_present,
            quorum,
            closed_by,
        }
    }
}

/// `part` of `whole` in percent, to one decimal (0 when `whole` is 0).
pub fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// Checks what a host wrote and fills in the default options. Text is trimmed.
pub fn validate(mut spec: MotionSpec) -> Result<MotionSpec, GovernanceError> {
    let bad = |why: String| Err(GovernanceError::InvalidMotion(why));
    spec.title = spec.title.trim().to_string();
    spec.text = spec.text.trim().to_string();
    let title = spec.title.chars().count();
    if title == 0 || title > MAX_TITLE_CHARS {
        return bad(format!(
            "the title must be 1 to {MAX_TITLE_CHARS} characters"
        ));
    }
    let text = spec.text.chars().count();
    if text > MAX_TEXT_CHARS {
        return bad(format!(
            "the text is {text} characters long; at most {MAX_TEXT_CHARS} are allowed"
        ));
    }
    if spec.options.is_empty() {
        spec.options = DEFAULT_OPTIONS.iter().map(|s| s.to_string()).collect();
    }
    spec.options = spec.options.iter().map(|o| o.trim().to_string()).collect();
    if spec.options.len() < MIN_OPTIONS || spec.options.len() > MAX_OPTIONS {
        return bad(format!(
            "a motion has {MIN_OPTIONS} to {MAX_OPTIONS} options, not {}",
            spec.options.len()
        ));
    }
    for o in &spec.options {
        let n = o.chars().count();
        if n == 0 || n > MAX_OPTION_CHARS {
            return bad(format!(
                "each option must be 1 to {MAX_OPTION_CHARS} characters"
            ));
        }
    }
    let mut seen: Vec<String> = spec.options.iter().map(|o| o.to_lowercase()).collect();
    seen.sort();
    seen.dedup();
    if seen.len() != spec.options.len() {
        return bad("two options are the same".into());
    }
    if spec.max_choices == 0 || spec.max_choices as usize > spec.options.len() {
        return bad(format!(
            "max_choices must be 1 to {} (the number of options)",
            spec.options.len()
        ));
    }
    if let Some(d) = spec.duration_secs {
        if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&d) {
            return bad(format!(
                "a deadline is {MIN_DURATION_SECS} seconds to {} hours",
                MAX_DURATION_SECS / 3600
            ));
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(title: &str) -> MotionSpec {
        MotionSpec {
            title: title.into(),
            ..MotionSpec::default()
        }
    }

    #[test]
    fn a_plain_motion_gets_for_against_abstain() {
        let s = validate(spec("  Budget  ")).unwrap();
        assert_eq!(s.title, "Budget");
        assert_eq!(s.options, vec!["For", "Against", "Abstain"]);
    }

    #[test]
    fn bad_motions_say_what_is_wrong() {
        let cases = [
            (spec(""), "title"),
            (
                MotionSpec {
                    text: "x".repeat(MAX_TEXT_CHARS + 1),
                    ..spec("t")
                },
                "text",
            ),
            (
                MotionSpec {
                    options: vec!["Only".into()],
                    ..spec("t")
                },
                "options",
            ),
            (
                MotionSpec {
                    options: vec!["A".into(), "a".into()],
                    ..spec("t")
                },
                "same",
            ),
            (
                MotionSpec {
                    max_choices: 4,
                    ..spec("t")
                },
                "max_choices",
            ),
            (
                MotionSpec {
                    duration_secs: Some(3),
                    ..spec("t")
                },
                "deadline",
            ),
        ];
        for (s, word) in cases {
            let e = validate(s).unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
    }

    #[test]
    fn choices_must_fit_the_motion() {
        let m = Motion::draft("MO_1".into(), validate(spec("t")).unwrap());
        assert_eq!(m.check_choices(&[2]).unwrap(), vec![2]);
        assert!(m.check_choices(&[]).is_err());
        assert!(m
            .check_choices(&[3])
            .unwrap_err()
            .to_string()
            .contains("0 to 2"));
        assert!(m.check_choices(&[0, 1]).is_err(), "single choice");
        let multi = Motion::draft(
            "MO_2".into(),
            validate(MotionSpec {
                max_choices: 2,
                ..spec("t")
            })
            .unwrap(),
        );
        assert_eq!(multi.check_choices(&[1, 0]).unwrap(), vec![0, 1]);
        assert!(multi.check_choices(&[1, 1]).is_err());
    }

    #[test]
    fn percentages_have_one_decimal() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(2, 3), 66.7);
        assert_eq!(percent(5, 0), 0.0);
    }
}
