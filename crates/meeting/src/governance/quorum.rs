//! Quorum rules: whether a rule holds for a number of members present and votes cast.
//! Members present are hosts and members (and guests a host made host); guests are not
//! counted.

use plenary_proto::{QuorumCheck, QuorumRule, QuorumStatus};

use super::error::GovernanceError;

/// Largest member count a `members` rule may ask for.
pub const MAX_QUORUM_MEMBERS: u32 = 100_000;

/// Checks a rule a host (or the configuration) sets.
pub fn validate(rule: QuorumRule) -> Result<QuorumRule, GovernanceError> {
    match rule {
        QuorumRule::Members { count } if count == 0 || count > MAX_QUORUM_MEMBERS => {
            Err(GovernanceError::InvalidSetting(format!(
                "a quorum of members is 1 to {MAX_QUORUM_MEMBERS}"
            )))
        }
        QuorumRule::Share { percent } if percent == 0 || percent > 100 => Err(
            GovernanceError::InvalidSetting("a quorum share is 1 to 100 percent".into()),
        ),
        rule => Ok(rule),
    }
}

/// What the rule asks for: members present (`members`), votes cast (`share`, at least one
/// when anyone is present), nothing (`none`).
pub fn required(rule: QuorumRule, members_present: u32) -> u32 {
    match rule {
        QuorumRule::None => 0,
        QuorumRule::Members { count } => count,
        QuorumRule::Share { percent } => {
            let need = (members_present as u64 * percent as u64).div_ceil(100) as u32;
            need.max(1)
        }
    }
}

/// Whether the rule holds with these numbers (the check a motion's result keeps).
pub fn check(rule: QuorumRule, members_present: u32, votes_cast: u32) -> QuorumCheck {
    let required = required(rule, members_present);
    let met = match rule {
        QuorumRule::None => true,
        QuorumRule::Members { .. } => members_present >= required,
        QuorumRule::Share { .. } => votes_cast >= required,
    };
    QuorumCheck {
        rule,
        members_present,
        required,
        met,
    }
}

/// What hosts see live. `votes_cast` is the open motion's, if one is open.
pub fn status(
    rule: QuorumRule,
    members_present: u32,
    guests_present: u32,
    votes_cast: Option<u32>,
) -> QuorumStatus {
    let required = required(rule, members_present);
    let met = match (rule, votes_cast) {
        (QuorumRule::Share { .. }, None) => None,
        (_, votes) => Some(check(rule, members_present, votes.unwrap_or(0)).met),
    };
    QuorumStatus {
        rule,
        members_present,
        guests_present,
        required,
        votes_cast,
        met,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_count_looks_at_who_is_present() {
        let rule = QuorumRule::Members { count: 3 };
        assert!(check(rule, 3, 0).met);
        assert!(!check(rule, 2, 2).met);
        assert_eq!(status(rule, 2, 5, None).met, Some(false));
    }

    #[test]
    fn a_share_looks_at_the_votes_cast() {
        let rule = QuorumRule::Share { percent: 50 };
        assert_eq!(required(rule, 5), 3, "half of 5, rounded up");
        assert!(!check(rule, 5, 2).met);
        assert!(check(rule, 5, 3).met);
        assert_eq!(required(rule, 0), 1, "never zero");
        assert_eq!(status(rule, 5, 0, None).met, None, "no motion open");
        assert_eq!(status(rule, 5, 0, Some(3)).met, Some(true));
    }

    #[test]
    fn rules_out_of_range_are_refused() {
        assert!(validate(QuorumRule::Members { count: 0 }).is_err());
        assert!(validate(QuorumRule::Share { percent: 101 }).is_err());
        assert!(validate(QuorumRule::Share { percent: 100 }).is_ok());
        assert!(check(QuorumRule::None, 0, 0).met);
    }
}
