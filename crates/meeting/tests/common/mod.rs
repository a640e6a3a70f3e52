//! The harness of the meeting-rule tests: fake participants and a simulated clock, no
//! sockets and no sleeps. [`World`] holds one meeting and the outputs it produced, the way
//! quinn-proto's test `Pair` holds two endpoints and a shared clock.

#![allow(dead_code)] // Each test file uses a different part.

use std::time::Duration;

use plenary_meeting::{
    participant_id, Entry, GovernanceConfig, Meeting, MeetingConfig, Output, Pid, Record, Rights,
    Time,
};
use plenary_proto::{HostAction, ParticipantInfo, Role, ServerMessage, TrackInfo, TrackSource};

/// A meeting, a clock, and everything it asked its driver to do so far.
pub struct World {
    pub now: Time,
    pub m: Meeting<u32>,
    pub out: Vec<Output<u32>>,
    pub next: u64,
}

pub fn info(identity: &str) -> ParticipantInfo {
    ParticipantInfo {
        identity: identity.into(),
        name: identity.into(),
        role: Role::Member,
        ..ParticipantInfo::default()
    }
}

pub fn speaker() -> Rights {
    Rights {
        can_publish: vec![
            TrackSource::Microphone,
            TrackSource::Camera,
            TrackSource::Screen,
        ],
        can_subscribe: true,
        can_chat: true,
        is_host: false,
    }
}

pub fn listener() -> Rights {
    Rights {
        can_publish: vec![],
        ..speaker()
    }
}

pub fn host() -> Rights {
    Rights {
        is_host: true,
        ..speaker()
    }
}

impl World {
    pub fn new(listener_mode_above: usize) -> World {
        World {
            now: Time(1_764_000_000_000),
            m: Meeting::new(
                "gm",
                MeetingConfig {
                    listener_mode_above,
                    governance: Default::default(),
                },
            ),
            out: Vec::new(),
            next: 1,
        }
    }

    /// A meeting with these governance settings (listener mode above 500).
    pub fn governed(governance: GovernanceConfig) -> World {
        World {
            m: Meeting::new(
                "gm",
                MeetingConfig {
                    listener_mode_above: 500,
                    governance,
                },
            ),
            ..World::new(500)
        }
    }

    pub fn drain(&mut self) {
        while let Some(o) = self.m.poll_output() {
            self.out.push(o);
        }
    }

    pub fn enter(&mut self, identity: &str, rights: Rights) -> Pid {
        let pid = Pid(self.next);
        self.next += 1;
        assert_eq!(self.m.admission(identity, rights.is_host), Ok(Entry::Enter));
        self.m.enter(self.now, pid, info(identity), rights, None);
        self.drain();
        pid
    }

    pub fn host(&mut self, actor: Pid, action: HostAction) {
        self.m.host_action(actor, action, self.now);
        self.drain();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.m.tick(self.now);
        self.drain();
    }

    /// Someone with a role (and an inviter, for guests) comes in.
    pub fn enter_as(
        &mut self,
        identity: &str,
        rights: Rights,
        role: Role,
        invited_by: Option<&str>,
    ) -> Pid {
        let pid = Pid(self.next);
        self.next += 1;
        let mut who = info(identity);
        who.role = role;
        who.invited_by = invited_by.map(str::to_string);
        self.m.enter(self.now, pid, who, rights, None);
        self.drain();
        pid
    }

    /// A second tab (or device) of an identity already here: the same identity joins again.
    pub fn second_tab(&mut self, identity: &str, rights: Rights) -> Pid {
        let pid = Pid(self.next);
        self.next += 1;
        self.m.enter(self.now, pid, info(identity), rights, None);
        self.drain();
        pid
    }

    pub fn vote(&mut self, pid: Pid, motion: &str, choices: &[u32]) {
        self.m.vote(pid, motion, choices, self.now);
        self.drain();
    }

    /// The records among `out`.
    pub fn records(out: &[Output<u32>]) -> Vec<Record> {
        out.iter()
            .filter_map(|o| match o {
                Output::Record(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn take(&mut self) -> Vec<Output<u32>> {
        std::mem::take(&mut self.out)
    }

    /// Messages sent to `pid` alone.
    pub fn sent_to(out: &[Output<u32>], pid: Pid) -> Vec<ServerMessage> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, msg } if *to == pid => Some(msg.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn broadcasts(out: &[Output<u32>]) -> Vec<ServerMessage> {
        out.iter()
            .filter_map(|o| match o {
                Output::Broadcast { msg, .. } => Some(msg.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn publish(&mut self, pid: Pid, n: u64, source: TrackSource) -> bool {
        let ok = self.m.publish(
            pid,
            TrackInfo {
                id: format!("TR_{n}"),
                participant_id: participant_id(pid),
                kind: source.kind(),
                source,
                muted: false,
            },
        );
        self.drain();
        ok
    }
}

/// The protocol id of `pid`.
pub fn pa(pid: Pid) -> String {
    participant_id(pid)
}
