//! What a [`Meeting`](crate::Meeting) asks its driver to do.

use plenary_proto::{LeaveReason, Permissions, ServerMessage};

use crate::record::Record;
use crate::Pid;

/// One thing for the driver to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<W> {
    /// Send `msg` to one member.
    Send {
        /// The member.
        to: Pid,
        /// The message.
        msg: ServerMessage,
    },
    /// Send `msg` to every member but `except` (serialise it once).
    Broadcast {
        /// Left out (the sender, usually).
        except: Option<Pid>,
        /// The message.
        msg: ServerMessage,
    },
    /// The media plane must check this member's offers against these permissions from now
    /// on (the member is told separately, with `permissions_changed`).
    Permissions {
        /// The member.
        pid: Pid,
        /// What they may do now.
        permissions: Permissions,
        /// The room is in listener mode (for the refusal's wording).
        listener_mode: bool,
    },
    /// The media plane must stop receiving these tracks of `pid` (they left the registry;
    /// everyone was told).
    Unpublish {
        /// The publisher.
        pid: Pid,
        /// Track ids.
        tracks: Vec<String>,
    },
    /// A published track left the registry (its publisher stopped it, left, or a host
    /// unpublished it): the media plane drops it everywhere.
    TrackRemoved {
        /// The track id.
        track_id: String,
    },
    /// Forwarding of a track stops (muted) or resumes.
    MuteTrack {
        /// The track id.
        track_id: String,
        /// New state.
        muted: bool,
    },
    /// Disconnect this member for `reason` (the meeting has already let them go).
    Remove {
        /// The member.
        pid: Pid,
        /// Why.
        reason: LeaveReason,
    },
    /// Let this waiting participant in (call [`Meeting::enter`](crate::Meeting::enter)).
    Admit(W),
    /// Turn this waiting participant away.
    TurnAway {
        /// Who.
        waiting: W,
        /// Why (`denied`, `replaced`, `meeting_ended`).
        reason: LeaveReason,
    },
    /// Record this in the audit log.
    Audit(AuditEvent),
    /// Keep this (attendance, speakers, motions, votes) with its audit row
    /// ([`Record::audit`]) in one transaction.
    Record(Record),
}

/// A host action (or another meeting event) for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// What happened (`host_mute`, `host_remove`, …).
    pub kind: String,
    /// Who did it (their identity).
    pub actor: String,
    /// The details, as JSON.
    pub detail: serde_json::Value,
}
