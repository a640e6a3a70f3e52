//! Why a governance request is refused. Each refusal reaches the participant as one
//! `error` message with its own code; a refused request changes nothing.

use std::fmt;

use plenary_proto::{ErrorCode, MotionState};

/// A refused motion, vote or setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovernanceError {
    /// The motion as written is not acceptable; the text says what to fix.
    InvalidMotion(String),
    /// The meeting holds as many motions as it may.
    TooManyMotions(usize),
    /// No motion with this id.
    UnknownMotion(String),
    /// The motion is in a state where this cannot happen (voting on a draft or a closed
    /// motion, opening one twice, closing one that is not open).
    NotOpen {
        /// The motion.
        motion_id: String,
        /// Its state.
        state: MotionState,
    },
    /// Another motion is open.
    AnotherOpen(String),
    /// The quorum rule cannot change while a motion is open.
    QuorumDuringVote(String),
    /// The choices do not fit the motion; the text says why.
    InvalidChoice(String),
    /// A secret ballot is final.
    AlreadyVoted(String),
    /// Guests do not vote on this motion.
    NotEligible(String),
    /// A setting is out of range; the text says which.
    InvalidSetting(String),
}

impl GovernanceError {
    /// The protocol's error code for it.
    pub fn code(&self) -> ErrorCode {
        use GovernanceError as E;
        match self {
            E::InvalidMotion(_) | E::TooManyMotions(_) => ErrorCode::InvalidMotion,
            E::UnknownMotion(_) => ErrorCode::UnknownMotion,
            E::NotOpen { .. } => ErrorCode::MotionNotOpen,
            E::AnotherOpen(_) | E::QuorumDuringVote(_) => ErrorCode::MotionInProgress,
            E::InvalidChoice(_) => ErrorCode::InvalidChoice,
            E::AlreadyVoted(_) => ErrorCode::AlreadyVoted,
            E::NotEligible(_) => ErrorCode::NotEligible,
            E::InvalidSetting(_) => ErrorCode::BadMessage,
        }
    }
}

impl fmt::Display for GovernanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GovernanceError as E;
        match self {
            E::InvalidMotion(why) => write!(f, "this motion cannot be created: {why}"),
            E::TooManyMotions(n) => write!(f, "a meeting holds at most {n} motions"),
            E::UnknownMotion(id) => write!(f, "there is no motion {id:?} in this meeting"),
            E::NotOpen {
                motion_id,
                state: MotionState::Draft,
            } => write!(f, "motion {motion_id} is not open for votes yet"),
            E::NotOpen {
                motion_id,
                state: MotionState::Closed,
            } => write!(f, "motion {motion_id} is closed: it takes no more votes"),
            E::NotOpen { motion_id, .. } => write!(f, "motion {motion_id} is open already"),
            E::AnotherOpen(id) => write!(f, "motion {id} is open: close it first"),
            E::QuorumDuringVote(id) => {
                write!(f, "the quorum cannot change while motion {id} is open")
            }
            E::InvalidChoice(why) => write!(f, "this vote cannot be counted: {why}"),
            E::AlreadyVoted(id) => write!(
                f,
                "your ballot on motion {id} is cast: a secret ballot cannot be changed"
            ),
            E::NotEligible(id) => write!(f, "guests do not vote on motion {id}"),
            E::InvalidSetting(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for GovernanceError {}
