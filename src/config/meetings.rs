//! `[meetings]`: the governance defaults of new meetings and what is kept of them.

use std::time::Duration;

use plenary_proto::QuorumRule;
use serde::{Deserialize, Deserializer, Serialize};

/// `[meetings]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeetingsConfig {
    /// Keep the record of meetings (attendance, speakers, motions, votes: the minutes) even
    /// when no sign-in is configured; it lives in `membership.database`. With sign-in
    /// configured it is always kept.
    pub always_record: bool,
    /// The quorum of a new meeting (hosts may change it): `"none"`, a number of members
    /// present (`"20"`), or the share of the members present who must vote (`"50%"`).
    #[serde(deserialize_with = "string_or_number")]
    pub quorum: String,
    /// Speaking time of each person given the floor, in seconds (0: no limit; hosts may
    /// change it).
    pub speaker_limit_secs: u32,
    /// Keep chat messages in the minutes.
    pub record_chat: bool,
    /// A meeting whose room empties (or whose server restarts) goes on when someone comes
    /// back within this many minutes; after that the next one to come starts a new one.
    pub continue_within_mins: u64,
}

impl Default for MeetingsConfig {
    fn default() -> Self {
        MeetingsConfig {
            always_record: false,
            quorum: "none".into(),
            speaker_limit_secs: 0,
            record_chat: false,
            continue_within_mins: 120,
        }
    }
}

impl MeetingsConfig {
    /// The quorum rule `quorum` names.
    pub fn quorum_rule(&self) -> Result<QuorumRule, String> {
        parse_quorum(&self.quorum)
    }

    /// How long an empty room's meeting may go on.
    pub fn continue_within(&self) -> Duration {
        Duration::from_secs(self.continue_within_mins * 60)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        self.quorum_rule()?;
        if self.speaker_limit_secs > 3600 {
            return Err("meetings.speaker_limit_secs is at most 3600".into());
        }
        if self.continue_within_mins == 0 {
            return Err("meetings.continue_within_mins must be at least 1".into());
        }
        Ok(())
    }
}

/// Reads `"none"`, `"20"` (members present) or `"50%"` (share who must vote).
pub fn parse_quorum(s: &str) -> Result<QuorumRule, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "meetings.quorum {s:?}: use \"none\", a number of members (\"20\") or a share \
             of those present who must vote (\"50%\")"
        )
    };
    if s.eq_ignore_ascii_case("none") || s.is_empty() || s == "0" {
        return Ok(QuorumRule::None);
    }
    if let Some(p) = s.strip_suffix('%') {
        let percent: u32 = p.trim().parse().map_err(|_| bad())?;
        if !(1..=100).contains(&percent) {
            return Err(bad());
        }
        return Ok(QuorumRule::Share { percent });
    }
    let count: u32 = s.parse().map_err(|_| bad())?;
    if count > 100_000 {
        return Err(bad());
    }
    Ok(QuorumRule::Members { count })
}

/// A TOML value that may be a string or an integer (`quorum = 20` or `quorum = "50%"`).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(i64),
    }
    Ok(match Either::deserialize(d)? {
        Either::S(s) => s,
        Either::N(n) => n.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_settings_read_as_rules() {
        assert_eq!(parse_quorum("none"), Ok(QuorumRule::None));
        assert_eq!(parse_quorum("20"), Ok(QuorumRule::Members { count: 20 }));
        assert_eq!(parse_quorum(" 50% "), Ok(QuorumRule::Share { percent: 50 }));
        for bad in ["half", "150%", "-3", "0%"] {
            assert!(parse_quorum(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_example_file_reads_and_validates() {
        let path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/plenary.example.toml"));
        let c = crate::config::Config::load(Some(path), Vec::new()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.meetings.quorum_rule(), Ok(QuorumRule::None));
        assert_eq!(c.meetings.continue_within_mins, 120);
    }

    #[test]
    fn the_environment_sets_numbers_and_shares() {
        let load = |v: &str| {
            crate::config::Config::load(
                None,
                vec![("PLENARY_MEETINGS_QUORUM".to_string(), v.to_string())],
            )
            .unwrap()
        };
        assert_eq!(
            load("20").meetings.quorum_rule(),
            Ok(QuorumRule::Members { count: 20 })
        );
        let c = load("25%");
        assert_eq!(
            c.meetings.quorum_rule(),
            Ok(QuorumRule::Share { percent: 25 })
        );
        c.validate().unwrap();
        assert!(load("lots").validate().is_err());
    }
}
