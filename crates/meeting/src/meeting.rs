//! One room's meeting: its members in join order, the tracks they publish, raised hands,
//! the lobby, the lock, listener mode, the governance state, and the participant changes
//! waiting to be sent.
//!
//! Participant changes are not sent one by one: joins, updates and departures collect in a
//! diff and go out as one `participants_changed` per room on each [`Meeting::tick`] (the
//! driver ticks every 100 ms), so a crowd arriving at once costs each client a few
//! messages, and the driver serialises each batch once for everyone.

use std::collections::{HashSet, VecDeque};

use plenary_proto::{
    ErrorCode, LeaveReason, LeftParticipant, ParticipantInfo, Permissions, RoomState,
    ServerMessage, TrackInfo,
};

use crate::governance::{Governance, GovernanceConfig, Live};
use crate::output::{AuditEvent, Output};
use crate::record::Record;
use crate::rights::{effective, Rights};
use crate::time::Time;
use crate::{participant_id, Pid};

/// Most characters in a chat message.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Most bytes in a data message.
pub const MAX_DATA_BYTES: usize = 4096;
/// Most participants waiting in one lobby.
pub const MAX_LOBBY: usize = 1000;

/// Room settings from the operator's configuration.
#[derive(Debug, Clone)]
pub struct MeetingConfig {
    /// Rooms with more members than this switch to listener mode.
    pub listener_mode_above: usize,
    /// Quorum, speaking time and chat keeping of a new meeting.
    pub governance: GovernanceConfig,
}

/// Why someone may not come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A host locked the room.
    Locked,
    /// A host removed this identity for the rest of the meeting.
    Barred,
    /// The lobby is full.
    LobbyFull,
}

/// How someone may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Straight in: call [`Meeting::enter`].
    Enter,
    /// Into the lobby: call [`Meeting::wait`].
    Wait,
}

/// What a session that dropped and comes back keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restore {
    /// Host powers (by grant, or made host by a host).
    pub is_host: bool,
    /// The floor.
    pub has_floor: bool,
}

/// A member of the meeting.
#[derive(Debug, Clone)]
pub struct Member {
    /// The driver's id.
    pub pid: Pid,
    /// How the others see them (`id` filled in).
    pub info: ParticipantInfo,
    /// What their grant allows.
    pub rights: Rights,
    /// Host powers in this meeting.
    pub is_host: bool,
    /// Given the floor by a host.
    pub has_floor: bool,
    /// Hand raised.
    pub hand_raised: bool,
    /// When they came in.
    pub joined_at: Time,
}

impl Member {
    /// What they may do now.
    pub fn permissions(&self, listener_mode: bool) -> Permissions {
        effective(&self.rights, self.is_host, self.has_floor, listener_mode)
    }

    /// Their public record with the meeting state filled in.
    pub fn public_info(&self, listener_mode: bool) -> ParticipantInfo {
        let mut info = self.info.clone();
        info.is_host = self.is_host;
        info.hand_raised = self.hand_raised;
        info.can_publish = self
            .permissions(listener_mode)
            .can_publish
            .contains(&plenary_proto::TrackSource::Microphone);
        info
    }
}

/// Someone in the lobby, with the driver's handle `W` to their session.
#[derive(Debug)]
pub(crate) struct Waiting<W> {
    pub(crate) lobby_id: String,
    pub(crate) info: ParticipantInfo,
    pub(crate) waiting: W,
}

/// What a newcomer is told in `welcome` (the driver adds protocol, ICE servers, resume token).
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    /// Their own record.
    pub me: ParticipantInfo,
    /// Everyone else.
    pub participants: Vec<ParticipantInfo>,
    /// Every published track.
    pub tracks: Vec<TrackInfo>,
    /// What they may do.
    pub permissions: Permissions,
    /// The room's switches.
    pub room_state: RoomState,
    /// Raised hands, in order.
    pub hand_queue: Vec<String>,
}

#[derive(Debug, Default)]
struct Diff {
    joined: Vec<Pid>,
    updated: Vec<Pid>,
    left: Vec<LeftParticipant>,
}

/// One room's meeting rules. `W` is the driver's handle to a session waiting in the lobby.
#[derive(Debug)]
pub struct Meeting<W> {
    name: String,
    config: MeetingConfig,
    pub(crate) members: Vec<Member>,
    pub(crate) tracks: Vec<TrackInfo>,
    pub(crate) locked: bool,
    pub(crate) lobby_on: bool,
    pub(crate) listener_mode: bool,
    pub(crate) lobby: Vec<Waiting<W>>,
    pub(crate) barred: HashSet<String>,
    pub(crate) hands: Vec<Pid>,
    pub(crate) gov: Governance,
    pub(crate) live: Live,
    next_lobby: u64,
    diff: Diff,
    out: VecDeque<Output<W>>,
}

impl<W> Meeting<W> {
    /// An empty meeting for room `name`.
    pub fn new(name: impl Into<String>, config: MeetingConfig) -> Meeting<W> {
        let gov = Governance::new(
            config.governance.quorum,
            config.governance.speaker_limit_secs,
        );
        Meeting {
            gov,
            live: Live::default(),
            name: name.into(),
            config,
            members: Vec::new(),
            tracks: Vec::new(),
            locked: false,
            lobby_on: false,
            listener_mode: false,
            lobby: Vec::new(),
            barred: HashSet::new(),
            hands: Vec::new(),
            next_lobby: 1,
            diff: Diff::default(),
            out: VecDeque::new(),
        }
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Members in join order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// One member.
    pub fn member(&self, pid: Pid) -> Option<&Member> {
        self.members.iter().find(|m| m.pid == pid)
    }

    pub(crate) fn member_mut(&mut self, pid: Pid) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.pid == pid)
    }

    /// Every published track.
    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// Nobody is in the room or waiting for it.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.lobby.is_empty()
    }

    /// The room's switches.
    pub fn state(&self) -> RoomState {
        RoomState {
            locked: self.locked,
            lobby: self.lobby_on,
            listener_mode: self.listener_mode,
            size: self.members.len(),
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output<W>> {
        self.out.pop_front()
    }

    // ---- coming in ------------------------------------------------------------------------

    /// Whether `identity` may come in, and how.
    pub fn admission(&self, identity: &str, is_host: bool) -> Result<Entry, Refusal> {
        if self.barred.contains(identity) {
            return Err(Refusal::Barred);
        }
        if is_host {
            return Ok(Entry::Enter);
        }
        if self.locked {
            return Err(Refusal::Locked);
        }
        if self.lobby_on {
            if self.lobby.len() >= MAX_LOBBY {
                return Err(Refusal::LobbyFull);
            }
            return Ok(Entry::Wait);
        }
        Ok(Entry::Enter)
    }

    /// Puts someone in the lobby; the hosts see them. The same identity waiting twice: the
    /// newer request replaces the older, which is turned away. Returns their lobby id.
    pub fn wait(&mut self, info: ParticipantInfo, waiting: W) -> String {
        let mut kept = Vec::with_capacity(self.lobby.len());
        for w in self.lobby.drain(..) {
            if w.info.identity == info.identity {
                self.out.push_back(Output::TurnAway {
                    waiting: w.waiting,
                    reason: LeaveReason::Replaced,
                });
            } else {
                kept.push(w);
            }
        }
        self.lobby = kept;
        let lobby_id = format!("LB_{}", self.next_lobby);
        self.next_lobby += 1;
        self.lobby.push(Waiting {
            lobby_id: lobby_id.clone(),
            info,
            waiting,
        });
        self.send_lobby_to_hosts();
        lobby_id
    }

    /// Drops lobby entries the driver no longer wants (their session went away); the hosts
    /// see the new list.
    pub fn retain_lobby(&mut self, mut keep: impl FnMut(&W) -> bool) {
        let before = self.lobby.len();
        self.lobby.retain(|w| keep(&w.waiting));
        if self.lobby.len() != before {
            self.send_lobby_to_hosts();
        }
    }

    /// Puts a participant in the room (after [`Meeting::admission`], the lobby, or a
    /// resume, whose [`Restore`] keeps host powers and the floor). A member with the same
    /// identity is replaced (removed with reason `replaced`).
    pub fn enter(
        &mut self,
        now: Time,
        pid: Pid,
        mut info: ParticipantInfo,
        rights: Rights,
        restore: Option<Restore>,
    ) -> Welcome {
        let same: Vec<Pid> = self
            .members
            .iter()
            .filter(|m| m.info.identity == info.identity)
            .map(|m| m.pid)
            .collect();
        for old in same {
            self.remove(old, LeaveReason::Replaced, now);
        }
        info.id = participant_id(pid);
        let restore = restore.unwrap_or_default();
        let member = Member {
            pid,
            is_host: rights.is_host || restore.is_host,
            has_floor: restore.has_floor,
            hand_raised: false,
            joined_at: now,
            info,
            rights,
        };
        self.members.push(member);
        self.diff.joined.push(pid);
        if !self.listener_mode && self.members.len() > self.config.listener_mode_above {
            self.listener_mode = true;
            self.room_state_changed();
        }
        let lm = self.listener_mode;
        let me = self.members.last().expect("just pushed");
        let welcome = Welcome {
            me: me.public_info(lm),
            participants: self
                .members
                .iter()
                .filter(|m| m.pid != pid)
                .map(|m| m.public_info(lm))
                .collect(),
            tracks: self.tracks.clone(),
            permissions: me.permissions(lm),
            room_state: self.state(),
            hand_queue: self.hands.iter().map(|h| participant_id(*h)).collect(),
        };
        self.out.push_back(Output::Permissions {
            pid,
            permissions: welcome.permissions.clone(),
            listener_mode: lm,
        });
        if welcome.permissions.is_host {
            if let Some(msg) = self.lobby_message() {
                self.out.push_back(Output::Send { to: pid, msg });
            }
        }
        self.governance_enter(pid, now);
        welcome
    }

    // ---- going -----------------------------------------------------------------------------

    /// A member left (or was removed): the others learn it in the next batch; their tracks
    /// leave the registry; their hand goes down; their attendance interval and speaking
    /// turn end (their votes stay). Returns whether they were a member.
    pub fn leave(&mut self, pid: Pid, reason: LeaveReason, now: Time) -> bool {
        let Some(pos) = self.members.iter().position(|m| m.pid == pid) else {
            return false;
        };
        let member = self.members.remove(pos);
        self.diff.left.push(LeftParticipant {
            id: member.info.id.clone(),
            reason,
        });
        let gone: Vec<String> = self
            .tracks
            .iter()
            .filter(|t| t.participant_id == member.info.id)
            .map(|t| t.id.clone())
            .collect();
        for id in gone {
            self.drop_track(&id);
        }
        if self.hands.contains(&pid) {
            self.hands.retain(|h| *h != pid);
            self.send_hand_queue();
        }
        self.governance_leave(pid, member.info.identity, reason, now);
        true
    }

    /// Lets a member go and asks the driver to disconnect them.
    pub(crate) fn remove(&mut self, pid: Pid, reason: LeaveReason, now: Time) {
        if self.leave(pid, reason, now) {
            self.out.push_back(Output::Remove { pid, reason });
        }
    }

    // ---- tracks ------------------------------------------------------------------------------

    /// A member's new track reached the media plane. Refused (and unpublished) when their
    /// permissions no longer allow its source (the floor was taken back meanwhile).
    pub fn publish(&mut self, pid: Pid, track: TrackInfo) -> bool {
        let lm = self.listener_mode;
        let Some(m) = self.member(pid) else {
            return false;
        };
        if !m.permissions(lm).can_publish.contains(&track.source) {
            self.out.push_back(Output::Unpublish {
                pid,
                tracks: vec![track.id],
            });
            return false;
        }
        if self.tracks.iter().any(|t| t.id == track.id) {
            return true;
        }
        self.tracks.push(track.clone());
        self.out.push_back(Output::Broadcast {
            except: Some(pid),
            msg: ServerMessage::TrackPublished { track },
        });
        true
    }

    /// A publisher stopped a track.
    pub fn unpublished(&mut self, track_id: &str) {
        self.drop_track(track_id);
    }

    /// Removes a track from the registry and tells everyone.
    fn drop_track(&mut self, track_id: &str) {
        let Some(pos) = self.tracks.iter().position(|t| t.id == track_id) else {
            return;
        };
        let track = self.tracks.remove(pos);
        self.out.push_back(Output::Broadcast {
            except: None,
            msg: ServerMessage::TrackUnpublished {
                track_id: track.id.clone(),
            },
        });
        self.out
            .push_back(Output::TrackRemoved { track_id: track.id });
    }

    /// A member (un)mutes one of their own tracks.
    pub fn mute(&mut self, pid: Pid, track_id: &str, muted: bool) {
        let Some(me) = self.member(pid).map(|m| m.info.id.clone()) else {
            return;
        };
        let Some(track) = self
            .tracks
            .iter_mut()
            .find(|t| t.id == track_id && t.participant_id == me)
        else {
            self.error(
                pid,
                ErrorCode::BadMessage,
                format!("you publish no track {track_id:?}"),
            );
            return;
        };
        track.muted = muted;
        self.out.push_back(Output::MuteTrack {
            track_id: track_id.to_string(),
            muted,
        });
        self.out.push_back(Output::Broadcast {
            except: Some(pid),
            msg: ServerMessage::TrackMuted {
                track_id: track_id.to_string(),
                muted,
            },
        });
    }

    // ---- talking ----------------------------------------------------------------------------

    /// A chat message to everyone (needs `can_chat`; 1 to 2000 characters). Kept for the
    /// minutes when the operator asks for it.
    pub fn chat(&mut self, pid: Pid, text: &str, now: Time) {
        let Some(m) = self.member(pid) else { return };
        if !m.rights.can_chat {
            return self.error(
                pid,
                ErrorCode::PermissionDenied,
                "your grant does not allow chat messages",
            );
        }
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
            return self.error(
                pid,
                ErrorCode::BadMessage,
                format!("a chat message is 1 to {MAX_CHAT_CHARS} characters"),
            );
        }
        let msg = ServerMessage::Chat {
            participant_id: m.info.id.clone(),
            name: m.info.name.clone(),
            from_host: m.is_host,
            text: text.to_string(),
        };
        let author = crate::governance::person(m);
        self.out.push_back(Output::Broadcast { except: None, msg });
        if self.config.governance.record_chat {
            self.record(Record::Chat {
                author,
                text: text.to_string(),
                at: now,
            });
        }
    }

    /// A small application message to the others (needs `can_chat`; at most 4 KiB).
    pub fn data(&mut self, pid: Pid, text: String) {
        let Some(m) = self.member(pid) else { return };
        if !m.rights.can_chat {
            return self.error(
                pid,
                ErrorCode::PermissionDenied,
                "your grant does not allow sending data messages",
            );
        }
        if text.len() > MAX_DATA_BYTES {
            return self.error(
                pid,
                ErrorCode::BadMessage,
                format!("data messages hold at most {MAX_DATA_BYTES} bytes"),
            );
        }
        let msg = ServerMessage::Data {
            participant_id: m.info.id.clone(),
            text,
        };
        self.out.push_back(Output::Broadcast {
            except: Some(pid),
            msg,
        });
    }

    /// Raises or lowers a hand (the queue keeps the order hands went up).
    pub fn raise_hand(&mut self, pid: Pid, raised: bool) {
        let present = self.hands.contains(&pid);
        if raised == present {
            return;
        }
        let Some(m) = self.member_mut(pid) else {
            return;
        };
        m.hand_raised = raised;
        if raised {
            self.hands.push(pid);
        } else {
            self.hands.retain(|h| *h != pid);
        }
        self.mark_updated(pid);
        self.send_hand_queue();
    }

    // ---- time ------------------------------------------------------------------------------

    /// Sends the participant changes collected since the last tick, as one message; closes
    /// motions whose deadline passed; tells hosts of speaking time that ran out and of the
    /// quorum; sends vote counts.
    pub fn tick(&mut self, now: Time) {
        self.governance_tick(now);
        if self.diff.joined.is_empty() && self.diff.updated.is_empty() && self.diff.left.is_empty()
        {
            return;
        }
        let diff = std::mem::take(&mut self.diff);
        let lm = self.listener_mode;
        let info = |pid: &Pid| self.member(*pid).map(|m| m.public_info(lm));
        let joined: Vec<ParticipantInfo> = diff.joined.iter().filter_map(info).collect();
        let updated: Vec<ParticipantInfo> = diff
            .updated
            .iter()
            .filter(|pid| !diff.joined.contains(pid))
            .filter_map(info)
            .collect();
        self.out.push_back(Output::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantsChanged {
                joined,
                updated,
                left: diff.left,
            },
        });
    }

    // ---- helpers for the rules --------------------------------------------------------------

    pub(crate) fn error(&mut self, to: Pid, code: ErrorCode, message: impl Into<String>) {
        self.out.push_back(Output::Send {
            to,
            msg: ServerMessage::error(code, message),
        });
    }

    pub(crate) fn send(&mut self, to: Pid, msg: ServerMessage) {
        self.out.push_back(Output::Send { to, msg });
    }

    pub(crate) fn push(&mut self, output: Output<W>) {
        self.out.push_back(output);
    }

    pub(crate) fn audit(&mut self, kind: String, actor: Pid, detail: serde_json::Value) {
        let actor = self
            .member(actor)
            .map(|m| m.info.identity.clone())
            .unwrap_or_default();
        self.out.push_back(Output::Audit(AuditEvent {
            kind,
            actor,
            detail,
        }));
    }

    pub(crate) fn mark_updated(&mut self, pid: Pid) {
        if !self.diff.updated.contains(&pid) {
            self.diff.updated.push(pid);
        }
    }

    pub(crate) fn send_hand_queue(&mut self) {
        let queue = self.hands.iter().map(|h| participant_id(*h)).collect();
        self.out.push_back(Output::Broadcast {
            except: None,
            msg: ServerMessage::HandQueue { queue },
        });
    }

    /// Tells a member (and the media plane) what they may do now.
    pub(crate) fn permissions_changed(&mut self, pid: Pid) {
        let lm = self.listener_mode;
        let Some(m) = self.member(pid) else { return };
        let permissions = m.permissions(lm);
        self.out.push_back(Output::Send {
            to: pid,
            msg: ServerMessage::PermissionsChanged {
                permissions: permissions.clone(),
            },
        });
        self.out.push_back(Output::Permissions {
            pid,
            permissions,
            listener_mode: lm,
        });
        self.mark_updated(pid);
    }

    pub(crate) fn room_state_changed(&mut self) {
        self.out.push_back(Output::Broadcast {
            except: None,
            msg: ServerMessage::RoomStateChanged {
                room_state: self.state(),
            },
        });
        // Everyone's effective permissions may have changed with listener mode.
        let pids: Vec<Pid> = self.members.iter().map(|m| m.pid).collect();
        for pid in pids {
            self.permissions_changed(pid);
        }
    }

    pub(crate) fn lobby_message(&self) -> Option<ServerMessage> {
        let waiting = self
            .lobby
            .iter()
            .map(|w| {
                let mut info = w.info.clone();
                info.id = w.lobby_id.clone();
                info
            })
            .collect();
        Some(ServerMessage::Lobby { waiting })
    }

    pub(crate) fn send_lobby_to_hosts(&mut self) {
        let Some(msg) = self.lobby_message() else {
            return;
        };
        let hosts: Vec<Pid> = self
            .members
            .iter()
            .filter(|m| m.is_host)
            .map(|m| m.pid)
            .collect();
        for h in hosts {
            self.out.push_back(Output::Send {
                to: h,
                msg: msg.clone(),
            });
        }
    }
}
