//! Attendance and the speakers list, in simulated time (harness: `common/mod.rs`).

mod common;

use std::time::Duration;

use common::{host, listener, pa, speaker, World};
use plenary_meeting::{GovernanceConfig, Pid, Record};
use plenary_proto::{HostAction, LeaveReason, Role, ServerMessage, Speaking};

#[test]
fn attendance_is_kept_per_session_with_role_inviter_and_reason() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let gus = w.enter_as("gus", speaker(), Role::Guest, Some("@ann@coop"));
    let joined = World::records(&w.take());
    assert!(joined.iter().any(|r| matches!(r,
        Record::Joined { attendee, at } if attendee.person.identity == "gus"
            && attendee.role == Role::Guest
            && attendee.invited_by.as_deref() == Some("@ann@coop")
            && *at == w.now)));
    assert!(joined.iter().any(|r| matches!(r,
        Record::Joined { attendee, .. } if attendee.person.identity == "chair" && attendee.is_host)));
    w.advance(Duration::from_secs(600));
    w.m.leave(gus, LeaveReason::Left, w.now);
    w.drain();
    assert!(World::records(&w.take()).contains(&Record::Left {
        identity: "gus".into(),
        reason: LeaveReason::Left,
        at: w.now,
    }));
    // A host made host is kept as such; a removed member's attendance ends.
    let ann = w.enter("ann", speaker());
    w.host(
        chair,
        HostAction::MakeHost {
            participant_id: pa(ann),
        },
    );
    assert!(World::records(&w.take())
        .iter()
        .any(|r| matches!(r, Record::MadeHost { person, by, .. } if person.identity == "ann" && by == "chair")));
    w.host(
        chair,
        HostAction::Remove {
            participant_id: pa(ann),
            bar: false,
        },
    );
    assert!(World::records(&w.take()).iter().any(|r| matches!(r,
        Record::Left { identity, reason: LeaveReason::Removed, .. } if identity == "ann")));
}

#[test]
fn a_speaking_turn_counts_down_and_the_host_is_told_once_when_time_is_up() {
    let mut w = World::governed(GovernanceConfig {
        speaker_limit_secs: Some(60),
        ..GovernanceConfig::default()
    });
    let chair = w.enter("chair", host());
    let lou = w.enter("lou", listener());
    let bob = w.enter("bob", speaker());
    w.take();
    w.host(
        chair,
        HostAction::GiveFloor {
            participant_id: pa(lou),
        },
    );
    let out = w.take();
    assert!(World::broadcasts(&out).contains(&ServerMessage::Speakers {
        speaking: vec![Speaking {
            participant_id: pa(lou),
            name: "lou".into(),
            elapsed_ms: 0,
            limit_secs: Some(60),
            remaining_ms: Some(60_000),
        }],
        limit_secs: Some(60),
    }));
    assert!(World::records(&out).iter().any(|r| matches!(r,
        Record::FloorGiven { speaker, by, limit_secs: Some(60), .. }
            if speaker.identity == "lou" && by == "chair")));
    // A newcomer sees the countdown where it is.
    w.advance(Duration::from_secs(20));
    let late = w.enter("late", speaker());
    let seen = World::sent_to(&w.take(), late);
    assert!(seen.iter().any(|m| matches!(m,
        ServerMessage::Speakers { speaking, .. } if speaking[0].remaining_ms == Some(40_000))));
    w.advance(Duration::from_secs(39));
    assert!(!World::sent_to(&w.take(), chair)
        .iter()
        .any(|m| matches!(m, ServerMessage::SpeakerTimeUp { .. })));
    w.advance(Duration::from_secs(2));
    let out = w.take();
    let up = ServerMessage::SpeakerTimeUp {
        participant_id: pa(lou),
        name: "lou".into(),
    };
    assert!(
        World::sent_to(&out, chair).contains(&up),
        "the host is told"
    );
    assert!(World::sent_to(&out, lou).contains(&up), "and the speaker");
    assert!(!World::sent_to(&out, bob).contains(&up), "not the others");
    assert!(
        w.m.member(lou).unwrap().has_floor,
        "the floor stays until a host takes it"
    );
    w.advance(Duration::from_secs(30));
    assert!(!World::sent_to(&w.take(), chair).contains(&up), "told once");
    w.host(
        chair,
        HostAction::TakeFloor {
            participant_id: pa(lou),
        },
    );
    let out = w.take();
    assert!(World::records(&out).iter().any(|r| matches!(r,
        Record::FloorEnded { speaker, by: Some(by), .. } if speaker.identity == "lou" && by == "chair")));
    assert!(World::broadcasts(&out).contains(&ServerMessage::Speakers {
        speaking: vec![],
        limit_secs: Some(60)
    }));
}

#[test]
fn a_speaker_who_leaves_ends_their_turn_and_a_host_sets_the_limit() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let lou = w.enter("lou", listener());
    w.host(chair, HostAction::SpeakerLimit { seconds: 90 });
    assert!(World::records(&w.take()).iter().any(|r| matches!(r,
        Record::SpeakerLimitSet { seconds: Some(90), by, .. } if by == "chair")));
    w.host(
        chair,
        HostAction::GiveFloor {
            participant_id: pa(lou),
        },
    );
    w.advance(Duration::from_secs(10));
    w.take();
    w.m.leave(lou, LeaveReason::Disconnected, w.now);
    w.drain();
    let records = World::records(&w.take());
    assert!(records.iter().any(|r| matches!(r,
        Record::FloorEnded { speaker, by: None, .. } if speaker.identity == "lou")));
    w.host(chair, HostAction::SpeakerLimit { seconds: 0 });
    assert!(World::records(&w.take())
        .iter()
        .any(|r| matches!(r, Record::SpeakerLimitSet { seconds: None, .. })));
}

#[test]
fn a_shutdown_ends_every_attendance_and_turn_once() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let lou = w.enter("lou", listener());
    w.host(
        chair,
        HostAction::GiveFloor {
            participant_id: pa(lou),
        },
    );
    w.take();
    w.m.suspend(w.now);
    w.m.suspend(w.now);
    w.drain();
    let records = World::records(&w.take());
    let left = records
        .iter()
        .filter(|r| {
            matches!(
                r,
                Record::Left {
                    reason: LeaveReason::ServerShutdown,
                    ..
                }
            )
        })
        .count();
    assert_eq!(left, 2);
    assert_eq!(
        records
            .iter()
            .filter(|r| matches!(r, Record::FloorEnded { .. }))
            .count(),
        1
    );
}

#[test]
fn chat_is_kept_only_when_the_operator_asks() {
    let mut w = World::new(500);
    let ann = w.enter("ann", speaker());
    w.take();
    w.m.chat(ann, "hello", w.now);
    w.drain();
    assert!(World::records(&w.take()).is_empty());
    let mut w = World::governed(GovernanceConfig {
        record_chat: true,
        ..GovernanceConfig::default()
    });
    let ann = w.enter("ann", speaker());
    w.take();
    w.m.chat(ann, "hello", w.now);
    w.drain();
    let records = World::records(&w.take());
    assert!(matches!(records.as_slice(),
        [Record::Chat { author, text, .. }] if author.identity == "ann" && text == "hello"));
    assert!(
        records[0].audit().detail.get("text").is_none(),
        "no text in the audit"
    );
}

#[test]
fn a_speaker_whose_connection_drops_comes_back_with_the_time_left() {
    let mut w = World::governed(GovernanceConfig {
        speaker_limit_secs: Some(60),
        ..GovernanceConfig::default()
    });
    let chair = w.enter("chair", host());
    let lou = w.enter("lou", listener());
    w.host(
        chair,
        HostAction::GiveFloor {
            participant_id: pa(lou),
        },
    );
    w.advance(Duration::from_secs(20));
    w.m.leave(lou, LeaveReason::Disconnected, w.now);
    w.advance(Duration::from_secs(5));
    w.take();
    // The resume keeps the floor (plenary_meeting::Restore) and the time left: the clock
    // ran while lou was away (60 - 20 - 5 = 35 s).
    let back = Pid(77);
    let mut who = plenary_proto::ParticipantInfo {
        identity: "lou".into(),
        name: "lou".into(),
        ..Default::default()
    };
    who.role = Role::Member;
    w.m.enter(
        w.now,
        back,
        who,
        listener(),
        Some(plenary_meeting::Restore {
            is_host: false,
            has_floor: true,
        }),
    );
    w.drain();
    let out = w.take();
    assert!(World::records(&out).iter().any(|r| matches!(r,
        Record::FloorGiven { speaker, by, limit_secs: Some(35), .. }
            if speaker.identity == "lou" && by == "chair")));
    assert!(World::broadcasts(&out).iter().any(|m| matches!(m,
        ServerMessage::Speakers { speaking, .. } if speaking.len() == 1
            && speaking[0].participant_id == pa(back)
            && speaking[0].remaining_ms == Some(35_000))));
}
