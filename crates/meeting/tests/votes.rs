//! Motions, votes and quorum, driven with fake participants in simulated time (harness:
//! `common/mod.rs`). Every rule of docs/governance.md has a test here.

mod common;

use std::time::Duration;

use common::{host, listener, speaker, World};
use plenary_meeting::governance::Ballots;
use plenary_meeting::{GovernanceConfig, Output, Pid, Record};
use plenary_proto::{
    ClosedBy, ErrorCode, HostAction, LeaveReason, MotionInfo, MotionKind, MotionSpec, MotionState,
    QuorumRule, Role, ServerMessage,
};

fn motion(title: &str, kind: MotionKind) -> MotionSpec {
    MotionSpec {
        title: title.into(),
        text: format!("That the co-op adopts {title}."),
        kind,
        ..MotionSpec::default()
    }
}

/// Creates and opens a motion as `chair`; returns its id.
fn open(w: &mut World, chair: Pid, spec: MotionSpec) -> String {
    w.host(chair, HostAction::CreateMotion { motion: spec });
    let id = format!("MO_{}", w.m.governance().next_motion - 1);
    w.host(
        chair,
        HostAction::OpenMotion {
            motion_id: id.clone(),
        },
    );
    w.take();
    id
}

fn close(w: &mut World, chair: Pid, id: &str) -> MotionInfo {
    w.host(
        chair,
        HostAction::CloseMotion {
            motion_id: id.into(),
        },
    );
    let out = w.take();
    World::broadcasts(&out)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::Motion { motion } if motion.state == MotionState::Closed => Some(motion),
            _ => None,
        })
        .expect("the result goes to everyone")
}

fn error_codes(out: &[Output<u32>], pid: Pid) -> Vec<ErrorCode> {
    World::sent_to(out, pid)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::Error { code, .. } => Some(code),
            _ => None,
        })
        .collect()
}

/// Something a participant does in a test case.
type Act = Box<dyn Fn(&mut World, Pid)>;

fn votes(result: &MotionInfo) -> Vec<u32> {
    let r = result.result.as_ref().expect("a result");
    r.options.iter().map(|o| o.votes).collect()
}

#[test]
fn a_host_writes_opens_and_closes_a_recorded_vote_and_everyone_sees_the_result() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let bob = w.enter("bob", speaker());
    w.take();
    w.host(
        chair,
        HostAction::CreateMotion {
            motion: motion("the budget", MotionKind::Recorded),
        },
    );
    let out = w.take();
    assert!(
        World::sent_to(&out, ann).is_empty() && World::broadcasts(&out).is_empty(),
        "a draft is for hosts only"
    );
    assert!(matches!(World::sent_to(&out, chair).as_slice(),
        [ServerMessage::Motion { motion }] if motion.state == MotionState::Draft
            && motion.spec.options == ["For", "Against", "Abstain"]));
    assert!(
        matches!(World::records(&out).as_slice(), [Record::MotionCreated { by, .. }] if by == "chair")
    );
    w.host(
        chair,
        HostAction::OpenMotion {
            motion_id: "MO_1".into(),
        },
    );
    assert!(World::broadcasts(&w.take()).iter().any(
        |m| matches!(m, ServerMessage::Motion { motion } if motion.state == MotionState::Open)
    ));
    w.vote(ann, "MO_1", &[0]);
    w.vote(bob, "MO_1", &[1]);
    w.vote(chair, "MO_1", &[0]);
    let out = w.take();
    assert!(matches!(World::sent_to(&out, ann).as_slice(),
        [ServerMessage::VoteRecorded { choices: Some(c), .. }] if c == &[0]));
    assert!(
        World::broadcasts(&out).is_empty(),
        "vote counts wait for the tick"
    );
    w.advance(Duration::from_millis(100));
    assert!(
        World::broadcasts(&w.take()).contains(&ServerMessage::VotesCast {
            motion_id: "MO_1".into(),
            votes_cast: 3
        })
    );
    let result = close(&mut w, chair, "MO_1");
    let r = result.result.as_ref().unwrap();
    assert_eq!(votes(&result), vec![2, 1, 0]);
    assert_eq!(r.votes_cast, 3);
    assert_eq!(r.eligible_present, 3);
    assert_eq!(r.options[0].percent_of_cast, 66.7);
    assert_eq!(r.options[0].voters, vec!["ann", "chair"], "names are shown");
    assert_eq!(r.closed_by, ClosedBy::Host);
    assert!(r.quorum.met, "no quorum rule: quorate");
}

#[test]
fn two_tabs_of_one_member_vote_once_and_the_last_recorded_choice_counts() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let tab1 = w.enter("ann", speaker());
    let id = open(&mut w, chair, motion("a", MotionKind::Recorded));
    w.vote(tab1, &id, &[0]);
    // A second tab of ann joins: the first is replaced, and the new one is told her vote.
    let tab2 = w.second_tab("ann", speaker());
    let out = w.take();
    assert!(out.contains(&Output::Remove {
        pid: tab1,
        reason: LeaveReason::Replaced
    }));
    assert!(
        World::sent_to(&out, tab2).contains(&ServerMessage::VoteRecorded {
            motion_id: id.clone(),
            choices: Some(vec![0])
        })
    );
    w.vote(tab2, &id, &[1]);
    let result = close(&mut w, chair, &id);
    assert_eq!(votes(&result), vec![0, 1, 0], "one vote: the last choice");
    assert_eq!(result.result.unwrap().votes_cast, 1);

    // A secret ballot: the second tab cannot vote again.
    let tab3 = w.second_tab("ann", speaker());
    let sid = open(&mut w, chair, motion("b", MotionKind::Secret));
    w.vote(tab3, &sid, &[2]);
    let tab4 = w.second_tab("ann", speaker());
    let out = w.take();
    assert!(
        World::sent_to(&out, tab4).contains(&ServerMessage::VoteRecorded {
            motion_id: sid.clone(),
            choices: None
        }),
        "the new tab knows the ballot is cast, not what it chose"
    );
    w.vote(tab4, &sid, &[0]);
    let out = w.take();
    assert_eq!(error_codes(&out, tab4), vec![ErrorCode::AlreadyVoted]);
    assert!(World::records(&out).is_empty(), "nothing kept");
    let result = close(&mut w, chair, &sid);
    assert_eq!(votes(&result), vec![0, 0, 1]);
}

#[test]
fn a_guest_is_refused_unless_the_motion_allows_guests_and_listeners_vote() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let guest = w.enter_as("gus", speaker(), Role::Guest, Some("@ann@coop"));
    let lou = w.enter("lou", listener());
    let id = open(&mut w, chair, motion("a", MotionKind::Recorded));
    w.vote(guest, &id, &[0]);
    let out = w.take();
    assert_eq!(error_codes(&out, guest), vec![ErrorCode::NotEligible]);
    assert!(World::records(&out).is_empty());
    w.vote(lou, &id, &[0]);
    assert!(World::sent_to(&w.take(), lou)
        .iter()
        .any(|m| matches!(m, ServerMessage::VoteRecorded { .. })));
    let result = close(&mut w, chair, &id);
    assert_eq!(votes(&result), vec![1, 0, 0]);
    assert_eq!(
        result.result.unwrap().eligible_present,
        2,
        "the guest could not vote: not counted"
    );

    let open_to_guests = MotionSpec {
        allow_guests: true,
        ..motion("b", MotionKind::Secret)
    };
    let id = open(&mut w, chair, open_to_guests);
    w.vote(guest, &id, &[1]);
    let result = close(&mut w, chair, &id);
    assert_eq!(votes(&result), vec![0, 1, 0]);
    assert_eq!(result.result.unwrap().eligible_present, 3);
}

#[test]
fn a_member_who_leaves_keeps_their_vote() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let id = open(&mut w, chair, motion("a", MotionKind::Secret));
    w.vote(ann, &id, &[1]);
    w.m.leave(ann, LeaveReason::Left, w.now);
    w.drain();
    let result = close(&mut w, chair, &id);
    let r = result.result.unwrap();
    assert_eq!(r.options[1].votes, 1);
    assert_eq!(r.eligible_present, 2, "present, or voted before leaving");
    assert_eq!(r.quorum.members_present, 1, "the quorum counts who is here");
}

#[test]
fn a_secret_ballot_never_links_a_member_to_a_choice() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let bob = w.enter("bob", speaker());
    let id = open(&mut w, chair, motion("s", MotionKind::Secret));
    w.vote(ann, &id, &[0]);
    w.vote(bob, &id, &[1]);
    w.advance(Duration::from_millis(100));
    let during = w.take();
    let result = close(&mut w, chair, &id);
    // What anyone is told: that a ballot is cast, counts, and the tally at the end.
    for m in World::sent_to(&during, ann) {
        if let ServerMessage::VoteRecorded { choices, .. } = m {
            assert_eq!(choices, None, "not even the voter is told back");
        }
    }
    for m in World::broadcasts(&during) {
        assert!(
            matches!(
                m,
                ServerMessage::VotesCast { .. } | ServerMessage::ParticipantsChanged { .. }
            ),
            "{m:?}"
        );
    }
    let r = result.result.unwrap();
    assert!(r.options.iter().all(|o| o.voters.is_empty()));
    assert_eq!(votes_of(&r), vec![1, 1, 0]);
    // What the meeting keeps: the voters and a tally, apart.
    match &w.m.governance().motions[0].ballots {
        Ballots::Secret { voters, tally } => {
            assert_eq!(voters.iter().collect::<Vec<_>>(), ["ann", "bob"]);
            assert_eq!(tally, &vec![1, 1, 0]);
        }
        other => panic!("not a secret ballot: {other:?}"),
    }
    // What the driver is asked to keep: one record per ballot, whose audit row has no
    // choice in it.
    let ballots: Vec<_> = World::records(&during)
        .into_iter()
        .filter(|r| matches!(r, Record::SecretBallot { .. }))
        .collect();
    assert_eq!(ballots.len(), 2);
    for b in &ballots {
        let audit = b.audit();
        assert_eq!(audit.kind, "ballot_cast");
        assert!(audit.detail.get("choices").is_none(), "{:?}", audit.detail);
    }
}

fn votes_of(r: &plenary_proto::MotionResult) -> Vec<u32> {
    r.options.iter().map(|o| o.votes).collect()
}

#[test]
fn quorum_lost_mid_vote_is_what_the_result_records() {
    let mut w = World::governed(GovernanceConfig {
        quorum: QuorumRule::Members { count: 3 },
        ..GovernanceConfig::default()
    });
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let bob = w.enter("bob", speaker());
    let _guest = w.enter_as("gus", speaker(), Role::Guest, Some("ann"));
    w.advance(Duration::from_millis(100));
    let status = |out: &[Output<u32>]| {
        World::sent_to(out, chair)
            .into_iter()
            .rev()
            .find_map(|m| match m {
                ServerMessage::Quorum { status } => Some(status),
                _ => None,
            })
    };
    let s = status(&w.take()).expect("hosts see the quorum");
    assert_eq!(
        (s.members_present, s.guests_present, s.met),
        (3, 1, Some(true))
    );
    let id = open(&mut w, chair, motion("a", MotionKind::Recorded));
    w.vote(ann, &id, &[0]);
    w.vote(bob, &id, &[0]);
    w.m.leave(bob, LeaveReason::Disconnected, w.now);
    w.advance(Duration::from_millis(100));
    let s = status(&w.take()).expect("the indicator changes");
    assert_eq!((s.members_present, s.met), (2, Some(false)));
    let result = close(&mut w, chair, &id).result.unwrap();
    assert!(!result.quorum.met, "{result:?}");
    assert_eq!(result.quorum.members_present, 2);
    assert_eq!(result.quorum.required, 3);
    assert_eq!(result.options[0].votes, 2, "bob's vote stays");
}

#[test]
fn a_share_quorum_asks_for_votes_from_those_present() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let _bob = w.enter("bob", speaker());
    let _cat = w.enter("cat", speaker());
    w.host(
        chair,
        HostAction::SetQuorum {
            rule: QuorumRule::Share { percent: 50 },
        },
    );
    let out = w.take();
    assert!(World::records(&out)
        .iter()
        .any(|r| matches!(r, Record::QuorumSet { by, .. } if by == "chair")));
    let id = open(&mut w, chair, motion("a", MotionKind::Secret));
    w.vote(ann, &id, &[0]);
    let r = close(&mut w, chair, &id).result.unwrap();
    assert_eq!((r.quorum.required, r.quorum.met), (2, false));
    let id = open(&mut w, chair, motion("b", MotionKind::Secret));
    w.vote(ann, &id, &[0]);
    w.vote(chair, &id, &[0]);
    assert!(close(&mut w, chair, &id).result.unwrap().quorum.met);
}

#[test]
fn a_deadline_closes_the_motion_and_later_votes_are_refused() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let id = open(
        &mut w,
        chair,
        MotionSpec {
            duration_secs: Some(60),
            ..motion("a", MotionKind::Recorded)
        },
    );
    w.vote(ann, &id, &[2]);
    w.advance(Duration::from_secs(59));
    assert_eq!(
        w.m.governance().motions[0].state,
        MotionState::Open,
        "not yet"
    );
    w.take();
    w.advance(Duration::from_secs(2));
    let out = w.take();
    let closed = World::broadcasts(&out).into_iter().find_map(|m| match m {
        ServerMessage::Motion { motion } if motion.state == MotionState::Closed => Some(motion),
        _ => None,
    });
    let r = closed.expect("closed by its deadline").result.unwrap();
    assert_eq!(r.closed_by, ClosedBy::Deadline);
    assert_eq!(r.options[2].votes, 1);
    assert!(World::records(&out)
        .iter()
        .any(|r| matches!(r, Record::MotionClosed { by: None, .. })));
    w.vote(ann, &id, &[0]);
    assert_eq!(error_codes(&w.take(), ann), vec![ErrorCode::MotionNotOpen]);
}

#[test]
fn multiple_choice_counts_each_chosen_option() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let spec = MotionSpec {
        options: vec!["Alma".into(), "Bea".into(), "Cyd".into(), "Dee".into()],
        max_choices: 2,
        ..motion("the board", MotionKind::Secret)
    };
    let id = open(&mut w, chair, spec);
    w.vote(ann, &id, &[3, 0]);
    w.vote(chair, &id, &[0]);
    let result = close(&mut w, chair, &id);
    assert_eq!(votes(&result), vec![2, 0, 0, 1]);
    assert_eq!(result.result.unwrap().options[0].percent_of_cast, 100.0);
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let id = open(&mut w, chair, motion("a", MotionKind::Recorded));
    w.host(
        chair,
        HostAction::CreateMotion {
            motion: motion("b", MotionKind::Secret),
        },
    );
    w.take();
    let before = w.m.governance().clone();
    let huge = MotionSpec {
        text: "x".repeat(20_000),
        ..motion("huge", MotionKind::Recorded)
    };
    let cases: Vec<(Pid, Act, ErrorCode)> = vec![
        (
            ann,
            Box::new(|w: &mut World, p| {
                w.host(
                    p,
                    HostAction::CreateMotion {
                        motion: motion("x", MotionKind::Recorded),
                    },
                )
            }),
            ErrorCode::PermissionDenied,
        ),
        (
            ann,
            Box::new(|w: &mut World, p| {
                w.host(
                    p,
                    HostAction::OpenMotion {
                        motion_id: "MO_2".into(),
                    },
                )
            }),
            ErrorCode::PermissionDenied,
        ),
        (
            chair,
            Box::new(move |w: &mut World, p| {
                w.host(
                    p,
                    HostAction::CreateMotion {
                        motion: huge.clone(),
                    },
                )
            }),
            ErrorCode::InvalidMotion,
        ),
        (
            chair,
            Box::new(|w: &mut World, p| {
                w.host(
                    p,
                    HostAction::OpenMotion {
                        motion_id: "MO_2".into(),
                    },
                )
            }),
            ErrorCode::MotionInProgress,
        ),
        (
            chair,
            Box::new(|w: &mut World, p| {
                w.host(
                    p,
                    HostAction::SetQuorum {
                        rule: QuorumRule::Members { count: 5 },
                    },
                )
            }),
            ErrorCode::MotionInProgress,
        ),
        (
            chair,
            Box::new(|w: &mut World, p| {
                w.host(
                    p,
                    HostAction::CloseMotion {
                        motion_id: "MO_2".into(),
                    },
                )
            }),
            ErrorCode::MotionNotOpen,
        ),
        (
            ann,
            Box::new(|w: &mut World, p| w.vote(p, "MO_1", &[7])),
            ErrorCode::InvalidChoice,
        ),
        (
            ann,
            Box::new(|w: &mut World, p| w.vote(p, "MO_1", &[0, 1])),
            ErrorCode::InvalidChoice,
        ),
        (
            ann,
            Box::new(|w: &mut World, p| w.vote(p, "MO_9", &[0])),
            ErrorCode::UnknownMotion,
        ),
        (
            ann,
            Box::new(|w: &mut World, p| w.vote(p, "MO_2", &[0])),
            ErrorCode::MotionNotOpen,
        ),
        (
            chair,
            Box::new(|w: &mut World, p| w.host(p, HostAction::SpeakerLimit { seconds: 99_999 })),
            ErrorCode::BadMessage,
        ),
    ];
    for (i, (who, act, code)) in cases.into_iter().enumerate() {
        act(&mut w, who);
        let out = w.take();
        assert_eq!(error_codes(&out, who), vec![code], "case {i}");
        assert!(World::records(&out).is_empty(), "case {i}: nothing kept");
        assert!(World::broadcasts(&out).is_empty(), "case {i}: nobody told");
        assert_eq!(w.m.governance(), &before, "case {i}: nothing changed");
    }
    // And a vote on a closed motion.
    close(&mut w, chair, &id);
    w.vote(ann, &id, &[0]);
    let out = w.take();
    let msg = World::sent_to(&out, ann);
    assert!(
        matches!(msg.as_slice(), [ServerMessage::Error { code: ErrorCode::MotionNotOpen, message }]
            if message.contains("closed")),
        "{msg:?}"
    );
}

#[test]
fn the_meeting_goes_on_when_its_governance_moves_to_a_new_meeting() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let id = open(&mut w, chair, motion("s", MotionKind::Secret));
    w.vote(ann, &id, &[0]);
    let kept = w.m.governance().clone();
    // The room empties; later a new Meeting of the room gets the governance back.
    let mut w2 = World::new(500);
    w2.m.restore_governance(kept);
    w2.next = 50;
    let chair2 = w2.enter("chair", host());
    let ann2 = w2.enter("ann", speaker());
    let out = w2.take();
    assert!(
        World::sent_to(&out, ann2).contains(&ServerMessage::VoteRecorded {
            motion_id: id.clone(),
            choices: None
        })
    );
    w2.vote(ann2, &id, &[1]);
    assert_eq!(error_codes(&w2.take(), ann2), vec![ErrorCode::AlreadyVoted]);
    w2.vote(chair2, &id, &[1]);
    assert_eq!(votes(&close(&mut w2, chair2, &id)), vec![1, 1, 0]);
    w2.host(
        chair2,
        HostAction::CreateMotion {
            motion: motion("next", MotionKind::Recorded),
        },
    );
    assert_eq!(w2.m.governance().motions[1].id, "MO_2", "numbers go on");
}

#[test]
fn ending_the_meeting_closes_the_open_motion_first() {
    let mut w = World::new(500);
    let chair = w.enter("chair", host());
    let ann = w.enter("ann", speaker());
    let id = open(&mut w, chair, motion("a", MotionKind::Recorded));
    w.vote(ann, &id, &[0]);
    w.host(chair, HostAction::EndMeeting);
    let records = World::records(&w.take());
    let closed = records
        .iter()
        .position(|r| matches!(r, Record::MotionClosed { present, .. } if present.len() == 2));
    let ended = records
        .iter()
        .position(|r| matches!(r, Record::MeetingEnded { .. }));
    assert!(closed.unwrap() < ended.unwrap(), "{records:?}");
    assert!(w.m.has_ended());
}
