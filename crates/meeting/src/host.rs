//! Host actions, one small function each. [`Meeting::host_action`] checks that the actor is
//! a host (anyone else gets `permission_denied`), runs the action, and records it for the
//! audit log; each action checks its own target and produces its effects as outputs.
//! Actions the minutes need (the floor, new hosts, motions, settings, the end) produce
//! [`Record`]s, which carry their own audit rows.

use plenary_proto::{ErrorCode, HostAction, LeaveReason, ServerMessage, TrackSource};

use crate::governance::{person, GovernanceError};
use crate::meeting::Meeting;
use crate::output::Output;
use crate::record::Record;
use crate::time::Time;
use crate::{parse_participant_id, participant_id, Pid};

impl<W> Meeting<W> {
    /// A host action by `actor` at `now`.
    pub fn host_action(&mut self, actor: Pid, action: HostAction, now: Time) {
        if !self.member(actor).is_some_and(|m| m.is_host) {
            return self.error(actor, ErrorCode::PermissionDenied, "only hosts may do that");
        }
        let detail = serde_json::to_value(&action).unwrap_or_default();
        let kind = format!(
            "host_{}",
            detail
                .get("action")
                .and_then(|a| a.as_str())
                .unwrap_or("action")
        );
        use HostAction as A;
        // `true`: write the generic audit row. Recorded actions return `false`: their
        // records carry their audit rows.
        let done = match action {
            A::GiveFloor { participant_id } => self.give_floor(actor, &participant_id, now),
            A::TakeFloor { participant_id } => self.take_floor(actor, &participant_id, now),
            A::ReorderQueue { order } => self.reorder_queue(&order),
            A::ClearQueue => self.clear_queue(),
            A::Mute { participant_id } => {
                self.mute_member(actor, &participant_id, TrackSource::Microphone)
            }
            A::MuteAll => self.mute_all(),
            A::AskUnmute { participant_id } => self.ask_unmute(actor, &participant_id),
            A::CameraOff { participant_id } => {
                self.mute_member(actor, &participant_id, TrackSource::Camera)
            }
            A::StopScreenShare { participant_id } => self.stop_screen_share(actor, &participant_id),
            A::Remove {
                participant_id,
                bar,
            } => self.remove_member(actor, &participant_id, bar, now),
            A::Lock { locked } => self.lock(locked),
            A::Lobby { enabled } => self.set_lobby(enabled),
            A::Admit { participant_id } => self.admit(actor, &participant_id),
            A::Deny { participant_id } => self.deny(actor, &participant_id),
            A::MakeHost { participant_id } => self.make_host(actor, &participant_id, now),
            A::EndMeeting => {
                self.end_meeting(actor, now);
                return;
            }
            A::CreateMotion { motion } => {
                let r = self.create_motion(actor, motion, now);
                self.governed(actor, r)
            }
            A::OpenMotion { motion_id } => {
                let r = self.open_motion(actor, &motion_id, now);
                self.governed(actor, r)
            }
            A::CloseMotion { motion_id } => {
                let r = self.close_motion(actor, &motion_id, now);
                self.governed(actor, r)
            }
            A::SetQuorum { rule } => {
                let r = self.set_quorum(actor, rule, now);
                self.governed(actor, r)
            }
            A::SpeakerLimit { seconds } => {
                let r = self.set_speaker_limit(actor, seconds, now);
                self.governed(actor, r)
            }
        };
        if done {
            self.audit(kind, actor, detail);
        }
    }

    /// Tells the actor of a refused governance action; recorded actions never take the
    /// generic audit row.
    fn governed(&mut self, actor: Pid, result: Result<(), GovernanceError>) -> bool {
        if let Err(e) = result {
            self.refuse(actor, e);
        }
        false
    }

    /// The member a protocol id names; else tells the actor and returns `None`.
    fn target(&mut self, actor: Pid, participant: &str) -> Option<Pid> {
        let pid = parse_participant_id(participant).filter(|p| self.member(*p).is_some());
        if pid.is_none() {
            self.error(
                actor,
                ErrorCode::BadMessage,
                format!("no participant {participant:?} in this room"),
            );
        }
        pid
    }

    /// Lets someone speak: raises their publish permission, lowers their hand; their
    /// speaking turn starts.
    fn give_floor(&mut self, actor: Pid, participant: &str, now: Time) -> bool {
        let Some(t) = self.target(actor, participant) else {
            return false;
        };
        self.set_floor(t, true);
        self.start_turn(t, actor, now);
        false
    }

    /// Takes the floor back: they are told first (their client stops its tracks), then
    /// their tracks leave the registry; their speaking turn ends.
    fn take_floor(&mut self, actor: Pid, participant: &str, now: Time) -> bool {
        let Some(t) = self.target(actor, participant) else {
            return false;
        };
        self.set_floor(t, false);
        self.end_turn(t, Some(actor), now);
        let mine = participant_id(t);
        let revoked: Vec<String> = {
            let lm = self.listener_mode;
            let allowed = self
                .member(t)
                .map(|m| m.permissions(lm).can_publish)
                .unwrap_or_default();
            self.tracks
                .iter()
                .filter(|tr| tr.participant_id == mine && !allowed.contains(&tr.source))
                .map(|tr| tr.id.clone())
                .collect()
        };
        self.unpublish_tracks(t, revoked);
        false
    }

    fn set_floor(&mut self, t: Pid, give: bool) {
        if let Some(m) = self.member_mut(t) {
            m.has_floor = give;
            m.hand_raised = false;
        }
        self.hands.retain(|h| *h != t);
        self.permissions_changed(t);
        self.send_hand_queue();
    }

    /// Removes these tracks of `pid` from the registry (everyone is told) and has the media
    /// plane stop them.
    fn unpublish_tracks(&mut self, pid: Pid, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        for id in &ids {
            if let Some(pos) = self.tracks.iter().position(|t| t.id == *id) {
                self.tracks.remove(pos);
                self.push(Output::Broadcast {
                    except: None,
                    msg: ServerMessage::TrackUnpublished {
                        track_id: id.clone(),
                    },
                });
                self.push(Output::TrackRemoved {
                    track_id: id.clone(),
                });
            }
        }
        self.push(Output::Unpublish { pid, tracks: ids });
    }

    fn reorder_queue(&mut self, order: &[String]) -> bool {
        let mut queue: Vec<Pid> = order
            .iter()
            .filter_map(|s| parse_participant_id(s))
            .filter(|p| self.hands.contains(p))
            .collect();
        queue.dedup();
        for h in &self.hands {
            if !queue.contains(h) {
                queue.push(*h);
            }
        }
        self.hands = queue;
        self.send_hand_queue();
        true
    }

    fn clear_queue(&mut self) -> bool {
        let hands = std::mem::take(&mut self.hands);
        for h in hands {
            if let Some(m) = self.member_mut(h) {
                m.hand_raised = false;
            }
            self.mark_updated(h);
        }
        self.send_hand_queue();
        true
    }

    /// Mutes one source of a member: forwarding stops at once, everyone sees it muted, and
    /// the member is told (they may unmute themselves if they may publish).
    fn mute_member(&mut self, actor: Pid, participant: &str, source: TrackSource) -> bool {
        let Some(t) = self.target(actor, participant) else {
            return false;
        };
        self.mute_source(t, source);
        true
    }

    fn mute_source(&mut self, t: Pid, source: TrackSource) {
        let mine = participant_id(t);
        let ids: Vec<(String, bool)> = self
            .tracks
            .iter_mut()
            .filter(|tr| tr.participant_id == mine && tr.source == source)
            .map(|tr| (tr.id.clone(), std::mem::replace(&mut tr.muted, true)))
            .collect();
        for (track_id, already) in ids {
            self.push(Output::MuteTrack {
                track_id: track_id.clone(),
                muted: true,
            });
            if !already {
                self.push(Output::Broadcast {
                    except: Some(t),
                    msg: ServerMessage::TrackMuted {
                        track_id: track_id.clone(),
                        muted: true,
                    },
                });
            }
            self.send(t, ServerMessage::HostMuted { track_id, source });
        }
    }

    fn mute_all(&mut self) -> bool {
        let others: Vec<Pid> = self
            .members
            .iter()
            .filter(|m| !m.is_host)
            .map(|m| m.pid)
            .collect();
        for t in others {
            self.mute_source(t, TrackSource::Microphone);
        }
        true
    }

    fn ask_unmute(&mut self, actor: Pid, participant: &str) -> bool {
        let Some(t) = self.target(actor, participant) else {
            return false;
        };
        self.send(
            t,
            ServerMessage::AskedToUnmute {
                by: participant_id(actor),
            },
        );
        true
    }

    /// Stops a screen share: the sharer is told (`host_muted`) and the tracks leave.
    fn stop_screen_share(&mut self, actor: Pid, participant: &str) -> bool {
        let Some(t) = self.target(actor, participant) else {
            return false;
        };
        let mine = participant_id(t);
        let shares: Vec<(String, TrackSource)> = self
            .tracks
            .iter()
            .filter(|tr| {
                tr.participant_id == mine
                    && matches!(tr.source, TrackSource::Screen | TrackSource::ScreenAudio)
            })
            .map(|tr| (tr.id.clone(), tr.source))
            .collect();
        for (track_id, source) in &shares {
            self.send(
                t,
                ServerMessage::HostMuted {
                    track_id: track_id.clone(),
                    source: *source,
                },
            );
        }
        self.unpublish_tracks(t, shares.into_iter().map(|(id, _)| id).collect());
        true
    }

    fn remove_member(&mut self, actor: Pid, participant: &str, bar: bool, now: Time) -> bool {
        let Some(t) = self.target(actor, participant) else {
            return false;
        };
        if bar {
            if let Some(identity) = self.member(t).map(|m| m.info.identity.clone()) {
                self.barred.insert(identity);
            }
        }
        self.remove(t, LeaveReason::Removed, now);
        true
    }

    fn lock(&mut self, locked: bool) -> bool {
        self.locked = locked;
        self.room_state_changed();
        true
    }

    /// Turns the lobby on or off; off admits everyone waiting.
    fn set_lobby(&mut self, enabled: bool) -> bool {
        self.lobby_on = enabled;
        if !enabled {
            for w in std::mem::take(&mut self.lobby) {
                self.push(Output::Admit(w.waiting));
            }
        }
        self.room_state_changed();
        self.send_lobby_to_hosts();
        true
    }

    /// Takes someone out of the lobby by their lobby id; else tells the actor.
    fn take_from_lobby(&mut self, actor: Pid, lobby_id: &str) -> Option<W> {
        let Some(pos) = self.lobby.iter().position(|w| w.lobby_id == lobby_id) else {
            self.error(
                actor,
                ErrorCode::BadMessage,
                format!("no participant {lobby_id:?} in this room"),
            );
            return None;
        };
        let w = self.lobby.remove(pos);
        self.send_lobby_to_hosts();
        Some(w.waiting)
    }

    fn admit(&mut self, actor: Pid, lobby_id: &str) -> bool {
        let Some(w) = self.take_from_lobby(actor, lobby_id) else {
            return false;
        };
        self.push(Output::Admit(w));
        true
    }

    fn deny(&mut self, actor: Pid, lobby_id: &str) -> bool {
        let Some(waiting) = self.take_from_lobby(actor, lobby_id) else {
            return false;
        };
        self.push(Output::TurnAway {
            waiting,
            reason: LeaveReason::Denied,
        });
        true
    }

    /// Gives someone host powers: they see the lobby, the drafts and the quorum.
    fn make_host(&mut self, actor: Pid, participant: &str, now: Time) -> bool {
        let Some(t) = self.target(actor, participant) else {
            return false;
        };
        let Some(m) = self.member_mut(t) else {
            return false;
        };
        m.is_host = true;
        let person = person(m);
        self.record(Record::MadeHost {
            person,
            by: self.identity_of(actor),
            at: now,
        });
        self.permissions_changed(t);
        if let Some(msg) = self.lobby_message() {
            self.send(t, msg);
        }
        self.send_governance_to(t, true, now);
        false
    }

    /// Ends the meeting: an open motion closes (its result kept), the room locks, the
    /// lobby is turned away, everyone is removed.
    fn end_meeting(&mut self, actor: Pid, now: Time) {
        let by = self.identity_of(actor);
        self.close_open_motions(by.clone(), now);
        // Recorded first: the actor is gone afterwards.
        self.record(Record::MeetingEnded { by, at: now });
        self.gov.ended = true;
        self.locked = true;
        for w in std::mem::take(&mut self.lobby) {
            self.push(Output::TurnAway {
                waiting: w.waiting,
                reason: LeaveReason::MeetingEnded,
            });
        }
        let members: Vec<Pid> = self.members.iter().map(|m| m.pid).collect();
        for m in members {
            self.remove(m, LeaveReason::MeetingEnded, now);
        }
    }
}
