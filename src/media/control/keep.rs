//! What the control loop keeps of each meeting: which meeting a room holds (a new one, or
//! one that goes on after the room emptied or the server restarted), and the records the
//! meetings produce, handed to the recorder in order.
//!
//! The recorder's channel is bounded; when it is full (the store is slow), records wait in
//! an outbox here, in order, and are handed over on the next tick — the loop never blocks
//! on the store, and nothing a meeting asked to keep is dropped unless the outbox itself
//! overflows (then each dropped record is logged as an error).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use plenary_meeting::{Governance, Meeting, MeetingConfig, Time};
use tokio::sync::mpsc::error::TrySendError;

use super::{Control, RoomCtl};
use crate::media::{ContinuedMeeting, JoinRequest, RecordItem, RoomRecord};

/// Most records waiting for a full recorder channel.
const MAX_OUTBOX: usize = 100_000;

/// The wall clock, as the meetings read it.
pub fn clock() -> Time {
    Time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// A meeting whose room is empty, kept until someone comes back or its time runs out.
#[derive(Debug)]
pub(super) struct Parked {
    pub(super) meeting_id: Arc<str>,
    pub(super) governance: Governance,
    /// It goes on only if someone comes back before this.
    pub(super) until: Time,
}

/// Records waiting for the recorder.
#[derive(Debug, Default)]
pub(super) struct Outbox(VecDeque<RoomRecord>);

impl Control {
    /// The meetings that go on from before a restart, parked until someone comes back.
    pub(super) fn park_continued(&mut self, continued: Vec<ContinuedMeeting>) {
        for c in continued {
            self.parked.insert(
                Arc::from(c.room.as_str()),
                Parked {
                    meeting_id: Arc::from(c.meeting_id.as_str()),
                    governance: c.governance,
                    until: c.last_active + self.settings.continue_within,
                },
            );
        }
    }

    /// The room's rules: the parked meeting of the room if it may go on, else a new one.
    pub(super) fn new_meeting(&mut self, name: &Arc<str>) -> (Meeting<JoinRequest>, Arc<str>) {
        let mut meeting = Meeting::new(
            name.to_string(),
            MeetingConfig {
                listener_mode_above: self.settings.listener_mode_above,
                governance: self.settings.governance.clone(),
            },
        );
        let now = clock();
        if let Some(p) = self.parked.remove(name).filter(|p| p.until > now) {
            tracing::info!(room = %name, meeting = %p.meeting_id, "the meeting goes on");
            meeting.restore_governance(p.governance);
            return (meeting, p.meeting_id);
        }
        let meeting_id: Arc<str> = Arc::from(format!("MT_{}", &crate::secret::random_id()[..16]));
        let g = &self.settings.governance;
        let item = RecordItem::Started {
            at: now,
            quorum: g.quorum,
            speaker_limit_secs: g.speaker_limit_secs,
        };
        self.keep(name, &meeting_id, item);
        (meeting, meeting_id)
    }

    /// A room empties: its meeting waits for someone to come back, unless a host ended it.
    pub(super) fn park(&mut self, room: RoomCtl) {
        if room.meeting.has_ended() {
            return;
        }
        self.parked.insert(
            Arc::clone(&room.name),
            Parked {
                meeting_id: room.meeting_id,
                governance: room.meeting.governance().clone(),
                until: clock() + self.settings.continue_within,
            },
        );
    }

    /// Forgets parked meetings whose time ran out: they are over.
    pub(super) fn expire_parked(&mut self, now: Time) {
        let over: Vec<(Arc<str>, Arc<str>)> = self
            .parked
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(room, p)| (Arc::clone(room), Arc::clone(&p.meeting_id)))
            .collect();
        for (room, meeting_id) in over {
            self.parked.remove(&room);
            self.keep(&room, &meeting_id, RecordItem::Over);
        }
    }

    /// Hands a record to the recorder (in order, behind any that wait).
    pub(super) fn keep(&mut self, room: &Arc<str>, meeting_id: &Arc<str>, item: RecordItem) {
        if self.settings.recorder.is_none() {
            return;
        }
        let record = RoomRecord {
            room: Arc::clone(room),
            meeting_id: Arc::clone(meeting_id),
            item,
        };
        if self.outbox.0.len() >= MAX_OUTBOX {
            tracing::error!(room = %room, "the record store is too slow: a record is lost");
            return;
        }
        self.outbox.0.push_back(record);
        self.flush_outbox();
    }

    /// Hands waiting records to the recorder while its channel takes them.
    pub(super) fn flush_outbox(&mut self) {
        let Some(tx) = &self.settings.recorder else {
            return;
        };
        while let Some(r) = self.outbox.0.pop_front() {
            match tx.try_send(r) {
                Ok(()) => {}
                Err(TrySendError::Full(r)) => {
                    self.outbox.0.push_front(r);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    tracing::error!("the recorder has stopped: records are lost");
                    self.outbox.0.clear();
                    return;
                }
            }
        }
    }

    /// At shutdown: waits until the recorder has taken every waiting record.
    pub(super) async fn drain_outbox(&mut self) {
        let Some(tx) = self.settings.recorder.clone() else {
            return;
        };
        while let Some(r) = self.outbox.0.pop_front() {
            if tx.send(r).await.is_err() {
                tracing::error!("the recorder has stopped: records are lost");
                return;
            }
        }
    }
}
