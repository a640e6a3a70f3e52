//! Plenary's meeting rules: who is in a room and with which powers, raised hands and the
//! floor, the lobby, locking, listener mode, chat, the published-track registry, every
//! host action, and governance (motions, votes, quorum, the speakers list, attendance) —
//! each checked here, so a client that ignores its UI cannot get round a rule.
//!
//! # Layout
//! - [`meeting`]: one room's [`Meeting`] state machine (members, tracks, hands, lobby).
//! - [`host`]: the host actions, one small function each (part of [`Meeting`]).
//! - [`governance`]: motions and votes, quorum, speaking turns (part of [`Meeting`]).
//! - [`rights`]: what a grant allows ([`Rights`]) and what a member may do now.
//! - [`output`]: what the driver must carry out ([`Output`]).
//! - [`record`]: what the driver must keep ([`Record`]), each with its audit row.
//! - [`time`]: the clock the driver passes in ([`Time`]).
//!
//! # Contract
//! Sans-IO, like `plenary-sfu`: no sockets, no threads, no async runtime, no clock. The
//! driver (the server's control loop) feeds events in with `handle_*`/method calls, passing
//! the time where it matters, and drains [`Output`]s with [`Meeting::poll_output`]: messages
//! to send to one member or to everyone, permissions and unpublications for the media plane,
//! removals, lobby decisions, audit events and records to keep. Members are named by
//! [`Pid`]s the driver assigns. Tests drive a meeting with fake participants in simulated
//! time (`tests/rules.rs`, `tests/votes.rs`, `tests/attendance.rs`).

pub mod governance;
pub mod host;
pub mod meeting;
pub mod output;
pub mod record;
pub mod rights;
pub mod time;

pub use governance::{Governance, GovernanceConfig, GovernanceError};
pub use meeting::{Entry, Meeting, MeetingConfig, Member, Refusal, Restore, Welcome};
pub use output::{AuditEvent, Output};
pub use record::{Attendee, Person, Record};
pub use rights::Rights;
pub use time::Time;

/// A participant session, as the driver names it (unique on the server while it lasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub u64);

/// The protocol id of a participant (`PA_<hex>`).
pub fn participant_id(pid: Pid) -> String {
    format!("PA_{:x}", pid.0)
}

/// The participant a protocol id names, if it parses.
pub fn parse_participant_id(s: &str) -> Option<Pid> {
    u64::from_str_radix(s.strip_prefix("PA_")?, 16)
        .ok()
        .map(Pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_round_trip() {
        let id = Pid((3u64 << 32) | 17);
        assert_eq!(parse_participant_id(&participant_id(id)), Some(id));
        assert_eq!(parse_participant_id("PA_zz"), None);
        assert_eq!(parse_participant_id("XX_1"), None);
    }
}
