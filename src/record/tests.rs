//! The record against a real (in-memory) store, fed by a real meeting: what is written,
//! what the minutes say, what a restart rebuilds, and that a secret ballot's rows never
//! link a member to a choice.

use std::sync::Arc;
use std::time::Duration;

use plenary_meeting::governance::Ballots;
use plenary_meeting::{Meeting, MeetingConfig, Output, Pid, Rights, Time};
use plenary_proto::{
    HostAction, LeaveReason, MotionKind, MotionSpec, MotionState, ParticipantInfo, QuorumRule,
    Role, TrackSource,
};

use super::{minutes, restore, write};
use crate::media::{RecordItem, RoomRecord};
use crate::membership::store::Store;

const T0: Time = Time(1_764_252_000_000); // 2025-11-27T14:00:00Z

/// A meeting whose records go straight into a store.
struct Recorded {
    m: Meeting<()>,
    store: Store,
    now: Time,
}

fn rights(host: bool) -> Rights {
    Rights {
        can_publish: vec![TrackSource::Microphone],
        can_subscribe: true,
        can_chat: true,
        is_host: host,
    }
}

impl Recorded {
    fn new() -> Recorded {
        let store = Store::open_in_memory().unwrap();
        let r = Recorded {
            m: Meeting::new(
                "gm",
                MeetingConfig {
                    listener_mode_above: 500,
                    governance: Default::default(),
                },
            ),
            store,
            now: T0,
        };
        r.keep(RecordItem::Started {
            at: T0,
            quorum: QuorumRule::None,
            speaker_limit_secs: None,
        });
        r
    }

    fn keep(&self, item: RecordItem) {
        let rec = RoomRecord {
            room: Arc::from("gm"),
            meeting_id: Arc::from("MT_1"),
            item,
        };
        self.store
            .run_sync(|c| {
                let tx = c.transaction()?;
                write::write(&tx, &rec)?;
                tx.commit()?;
                Ok(())
            })
            .unwrap();
    }

    fn flush(&mut self) {
        while let Some(o) = self.m.poll_output() {
            if let Output::Record(r) = o {
                self.keep(RecordItem::Record(r));
            }
        }
    }

    fn enter(&mut self, pid: u64, identity: &str, role: Role, host: bool) -> Pid {
        let info = ParticipantInfo {
            identity: identity.into(),
            name: identity.to_uppercase(),
            role,
            invited_by: (role == Role::Guest).then(|| "@ann".to_string()),
            ..ParticipantInfo::default()
        };
        self.m.enter(self.now, Pid(pid), info, rights(host), None);
        self.flush();
        Pid(pid)
    }

    fn host(&mut self, actor: Pid, action: HostAction) {
        self.m.host_action(actor, action, self.now);
        self.flush();
    }

    fn vote(&mut self, pid: Pid, motion: &str, choices: &[u32]) {
        self.m.vote(pid, motion, choices, self.now);
        self.flush();
    }

    fn later(&mut self, secs: u64) {
        self.later_ms(secs * 1000);
    }

    fn later_ms(&mut self, ms: u64) {
        self.now = self.now + Duration::from_millis(ms);
        self.m.tick(self.now);
        self.flush();
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.store
            .run_sync(|c| {
                let mut stmt = c.prepare(sql)?;
                let n = stmt.column_count();
                let rows = stmt.query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => "NULL".into(),
                                rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                                rusqlite::types::ValueRef::Text(t) => {
                                    String::from_utf8_lossy(t).into_owned()
                                }
                                other => format!("{other:?}"),
                            })
                        })
                        .collect::<rusqlite::Result<Vec<String>>>()
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap()
    }
}

fn spec(title: &str, kind: MotionKind) -> MotionSpec {
    MotionSpec {
        title: title.into(),
        text: "Resolved: | pipes and\nnew lines.".into(),
        kind,
        ..MotionSpec::default()
    }
}

/// A short meeting: a host, three members, a guest; a recorded vote and a secret ballot.
fn meeting() -> Recorded {
    let mut r = Recorded::new();
    let chair = r.enter(1, "@chair", Role::Host, true);
    let ann = r.enter(2, "@ann", Role::Member, false);
    let bob = r.enter(3, "@bob", Role::Member, false);
    let cat = r.enter(4, "@cat", Role::Member, false);
    let _gus = r.enter(5, "guest:gus", Role::Guest, false);
    r.host(chair, HostAction::SpeakerLimit { seconds: 60 });
    r.host(
        chair,
        HostAction::GiveFloor {
            participant_id: plenary_meeting::participant_id(ann),
        },
    );
    r.later(90);
    r.host(
        chair,
        HostAction::TakeFloor {
            participant_id: plenary_meeting::participant_id(ann),
        },
    );
    r.host(
        chair,
        HostAction::CreateMotion {
            motion: spec("Budget", MotionKind::Recorded),
        },
    );
    r.host(
        chair,
        HostAction::OpenMotion {
            motion_id: "MO_1".into(),
        },
    );
    r.vote(ann, "MO_1", &[0]);
    r.vote(bob, "MO_1", &[1]);
    r.vote(bob, "MO_1", &[0]);
    r.later(30);
    r.host(
        chair,
        HostAction::CloseMotion {
            motion_id: "MO_1".into(),
        },
    );
    r.host(
        chair,
        HostAction::CreateMotion {
            motion: spec("Board", MotionKind::Secret),
        },
    );
    r.host(
        chair,
        HostAction::OpenMotion {
            motion_id: "MO_2".into(),
        },
    );
    r.vote(ann, "MO_2", &[1]);
    r.vote(bob, "MO_2", &[0]);
    r.vote(cat, "MO_2", &[1]);
    r.later(60);
    r.m.leave(cat, LeaveReason::Left, r.now);
    r.flush();
    r
}

#[test]
fn the_minutes_hold_attendance_speakers_motions_and_results() {
    let mut r = meeting();
    let chair = Pid(1);
    r.host(
        chair,
        HostAction::CloseMotion {
            motion_id: "MO_2".into(),
        },
    );
    let all = r
        .store
        .run_sync(|c| Ok(minutes::load(c, "gm", Some("2025-11-27"))))
        .unwrap()
        .unwrap();
    let m = &all[0];
    assert_eq!(m.date, "2025-11-27");
    assert_eq!(m.hosts.len(), 1);
    assert_eq!(m.attendance.len(), 5);
    let gus = m.attendance.iter().find(|a| a.role == "guest").unwrap();
    assert_eq!(gus.invited_by.as_deref(), Some("@ann"));
    let cat = m.attendance.iter().find(|a| a.identity == "@cat").unwrap();
    assert_eq!(cat.sessions[0].leave_reason.as_deref(), Some("left"));
    assert_eq!(cat.minutes_present, 3);
    assert_eq!(m.speakers.len(), 1);
    assert_eq!(m.speakers[0].seconds, Some(90));
    assert!(m.speakers[0].over_time, "90 s of 60");
    assert_eq!(m.motions.len(), 2);
    let budget = &m.motions[0];
    assert_eq!(
        budget.votes.len(),
        2,
        "bob's second choice replaced his first"
    );
    assert!(budget.votes.iter().all(|v| v.choices == ["For"]));
    let board = &m.motions[1];
    let result = board.result.as_ref().unwrap();
    assert_eq!(result.options[0].votes, 1);
    assert_eq!(result.options[1].votes, 2, "cat left and kept her vote");
    assert_eq!(board.voters.len(), 3);
    assert!(board.votes.is_empty());
    let md = minutes::markdown(&all);
    for needle in [
        "# Minutes of gm — 2025-11-27",
        "| GUEST:GUS | guest:gus | guest (invited by @ann) | 14:00– | 3 |",
        "| @CAT | @cat | member | 14:00–14:03 | 3 |",
        "### MO_1: Budget (recorded vote)",
        "- @ANN (@ann): For",
        "### MO_2: Board (secret ballot)",
        "Voted (secret ballot; who chose what is not recorded): @ANN, @BOB, @CAT.",
        "| @ANN | 14:00 | 14:01 | 1 min 30 s | 1 min (over) |",
        "> Resolved: | pipes and\n> new lines.",
        "| Against | 2 | 66.7 | 50.0 |",
        "3 voted of 4 present who could vote; no quorum rule.",
    ] {
        assert!(md.contains(needle), "{needle:?} not in:\n{md}");
    }
    let bad = r
        .store
        .run_sync(|c| Ok(minutes::load(c, "gm", Some("2025-02-30"))))
        .unwrap();
    assert!(matches!(bad, Err(minutes::MinutesError::BadDate)));
}

#[test]
fn a_secret_ballot_is_stored_in_rows_that_share_nothing() {
    let r = meeting();
    let voters = r.rows("SELECT * FROM ballot_voters WHERE motion_id = 'MO_2'");
    let ballots = r.rows("SELECT * FROM secret_ballots WHERE motion_id = 'MO_2'");
    assert_eq!(voters.len(), 3);
    assert_eq!(ballots.len(), 3);
    // The voters' rows: meeting, motion, identity, name; no choice, no time.
    for v in &voters {
        assert_eq!(v.len(), 4);
        assert!(!v.iter().any(|c| c.starts_with('[')), "{v:?}");
    }
    // The ballots' rows: a random id, meeting, motion, choices; no identity, no time.
    for b in &ballots {
        assert_eq!(b.len(), 4);
        assert!(!b.iter().any(|c| c.contains('@')), "{b:?}");
    }
    let ids: Vec<i64> = ballots.iter().map(|b| b[0].parse().unwrap()).collect();
    assert_ne!(ids, vec![1, 2, 3], "ids are not the order of voting");
    // No recorded-vote row and no audit row names a choice of the secret ballot.
    assert!(r
        .rows("SELECT * FROM votes WHERE motion_id = 'MO_2'")
        .is_empty());
    let audit = r.rows("SELECT kind, actor, detail FROM audit WHERE kind = 'ballot_cast'");
    assert_eq!(audit.len(), 3);
    for a in &audit {
        assert!(!a[2].contains("choices"), "{a:?}");
    }
    // Recorded votes do name their choices (names are shown).
    assert!(r
        .rows("SELECT detail FROM audit WHERE kind = 'vote_cast'")
        .iter()
        .all(|a| a[0].contains("choices")));
}

#[test]
fn a_restart_rebuilds_open_motions_voters_and_tallies() {
    let r = meeting();
    let continued = r
        .store
        .run_sync(|c| restore::continuing(c, r.now, Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(continued.len(), 1);
    let g = &continued[0].governance;
    assert_eq!(continued[0].meeting_id, "MT_1");
    assert_eq!(g.next_motion, 3);
    assert_eq!(g.speaker_limit_secs, Some(60));
    assert_eq!(g.motions[0].state, MotionState::Closed);
    assert!(g.motions[0].result.is_some());
    let open = &g.motions[1];
    assert_eq!(open.state, MotionState::Open);
    assert_eq!(
        r.m.governance().motions[1].ballots,
        open.ballots,
        "as it was"
    );
    match &open.ballots {
        Ballots::Secret { voters, tally } => {
            assert_eq!(voters.len(), 3);
            assert_eq!(tally, &vec![1, 2, 0]);
        }
        other => panic!("{other:?}"),
    }
    // Everyone still present when the server stopped is closed at the last record.
    let open_rows = r.rows("SELECT identity FROM attendance WHERE left_at IS NULL");
    assert!(open_rows.is_empty(), "{open_rows:?}");
    // Too long ago: the meeting is over, nothing goes on.
    let later = r.now + Duration::from_secs(7200);
    let none = r
        .store
        .run_sync(|c| restore::continuing(c, later, Duration::from_secs(3600)))
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(
        r.rows("SELECT ended_at IS NOT NULL FROM meetings")[0][0],
        "1"
    );
}

#[test]
fn a_turn_taken_back_a_moment_after_its_limit_is_over_time() {
    let mut r = Recorded::new();
    let chair = r.enter(1, "@chair", Role::Host, true);
    let ann = r.enter(2, "@ann", Role::Member, false);
    r.host(chair, HostAction::SpeakerLimit { seconds: 6 });
    let ann_id = plenary_meeting::participant_id(ann);
    r.host(
        chair,
        HostAction::GiveFloor {
            participant_id: ann_id.clone(),
        },
    );
    // The host is told at 6 s and takes the floor back 0.4 s later: 6 whole seconds.
    r.later_ms(6_400);
    r.host(
        chair,
        HostAction::TakeFloor {
            participant_id: ann_id,
        },
    );
    r.flush();
    let all = r
        .store
        .run_sync(|c| Ok(minutes::load(c, "gm", Some("2025-11-27"))))
        .unwrap()
        .unwrap();
    let turn = &all[0].speakers[0];
    assert_eq!(turn.seconds, Some(6));
    assert!(turn.over_time, "6.4 s of 6 is over time");
}
