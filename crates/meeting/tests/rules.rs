//! The meeting rules (hands, floor, lobby, lock, moderation), driven with fake participants
//! in simulated time: no sockets, no sleeps (harness: `common/mod.rs`).

mod common;

use std::time::Duration;

use common::{host, info, listener, pa, speaker, World};
use plenary_meeting::{Entry, Output, Pid, Refusal, Restore, Rights};
use plenary_proto::{ErrorCode, HostAction, LeaveReason, ServerMessage, TrackKind, TrackSource};

#[test]
fn only_hosts_act_and_others_are_told_why() {
    let mut w = World::new(50);
    let member = w.enter("bob", speaker());
    w.take();
    w.host(member, HostAction::Lock { locked: true });
    let out = w.take();
    assert!(matches!(
        World::sent_to(&out, member).as_slice(),
        [ServerMessage::Error {
            code: ErrorCode::PermissionDenied,
            ..
        }]
    ));
    assert!(!w.m.state().locked, "nothing changed");
    assert!(
        !out.iter().any(|o| matches!(o, Output::Audit(_))),
        "a refusal is not a host action"
    );
}

#[test]
fn a_locked_room_refuses_members_but_not_hosts_and_a_bar_holds() {
    let mut w = World::new(50);
    let chair = w.enter("chair", host());
    let bob = w.enter("bob", speaker());
    w.host(chair, HostAction::Lock { locked: true });
    assert_eq!(w.m.admission("carol", false), Err(Refusal::Locked));
    assert_eq!(w.m.admission("other-host", true), Ok(Entry::Enter));
    w.host(chair, HostAction::Lock { locked: false });
    w.take();
    w.host(
        chair,
        HostAction::Remove {
            participant_id: pa(bob),
            bar: true,
        },
    );
    let out = w.take();
    assert!(out.contains(&Output::Remove {
        pid: bob,
        reason: LeaveReason::Removed
    }));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Audit(a) if a.kind == "host_remove" && a.actor == "chair")));
    assert_eq!(w.m.admission("bob", false), Err(Refusal::Barred));
    assert_eq!(
        w.m.admission("bob", true),
        Err(Refusal::Barred),
        "a bar holds for hosts too"
    );
}

#[test]
fn the_lobby_admits_denies_and_replaces_a_second_request_of_the_same_identity() {
    let mut w = World::new(50);
    let chair = w.enter("chair", host());
    w.host(chair, HostAction::Lobby { enabled: true });
    assert_eq!(w.m.admission("wes", false), Ok(Entry::Wait));
    w.take();
    let first = w.m.wait(info("wes"), 1);
    let second = w.m.wait(info("wes"), 2);
    let vic = w.m.wait(info("vic"), 3);
    w.drain();
    let out = w.take();
    assert!(out.contains(&Output::TurnAway {
        waiting: 1,
        reason: LeaveReason::Replaced
    }));
    assert_ne!(first, second);
    // The host's last lobby list names the second request of wes and vic.
    let lists: Vec<_> = World::sent_to(&out, chair)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::Lobby { waiting } => {
                Some(waiting.iter().map(|p| p.id.clone()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .collect();
    assert_eq!(lists.last().unwrap(), &vec![second.clone(), vic.clone()]);
    w.host(
        chair,
        HostAction::Admit {
            participant_id: second,
        },
    );
    w.host(
        chair,
        HostAction::Deny {
            participant_id: vic,
        },
    );
    let out = w.take();
    assert!(out.contains(&Output::Admit(2)));
    assert!(out.contains(&Output::TurnAway {
        waiting: 3,
        reason: LeaveReason::Denied
    }));
    // Unknown lobby ids are refused plainly.
    w.host(
        chair,
        HostAction::Admit {
            participant_id: "LB_99".into(),
        },
    );
    assert!(matches!(
        World::sent_to(&w.take(), chair).as_slice(),
        [ServerMessage::Error {
            code: ErrorCode::BadMessage,
            ..
        }]
    ));
}

#[test]
fn turning_the_lobby_off_admits_everyone_waiting() {
    let mut w = World::new(50);
    let chair = w.enter("chair", host());
    w.host(chair, HostAction::Lobby { enabled: true });
    w.m.wait(info("a"), 10);
    w.m.wait(info("b"), 11);
    w.take();
    w.host(chair, HostAction::Lobby { enabled: false });
    let out = w.take();
    assert!(out.contains(&Output::Admit(10)) && out.contains(&Output::Admit(11)));
    assert_eq!(w.m.admission("c", false), Ok(Entry::Enter));
}

#[test]
fn listener_mode_starts_above_the_threshold_and_the_floor_lets_one_speak() {
    let mut w = World::new(2);
    let chair = w.enter("chair", host());
    let bob = w.enter("bob", speaker());
    assert!(!w.m.state().listener_mode);
    w.take();
    let lou = w.enter("lou", speaker());
    assert!(w.m.state().listener_mode, "three members > 2");
    let out = w.take();
    // Bob is told he may no longer publish; the media plane hears it too.
    assert!(World::sent_to(&out, bob).iter().any(|m| matches!(m,
        ServerMessage::PermissionsChanged { permissions } if permissions.can_publish.is_empty())));
    assert!(out.iter().any(
        |o| matches!(o, Output::Permissions { pid, permissions, listener_mode: true }
        if *pid == bob && permissions.can_publish.is_empty())
    ));
    // A publication that slips through is refused and unpublished.
    assert!(!w.publish(lou, 1, TrackSource::Microphone));
    assert!(w.take().contains(&Output::Unpublish {
        pid: lou,
        tracks: vec!["TR_1".into()]
    }));
    // Lou raises a hand; the chair gives the floor; lou publishes; the others are told.
    w.m.raise_hand(lou, true);
    w.drain();
    assert_eq!(w.m.member(lou).map(|m| m.hand_raised), Some(true));
    w.host(
        chair,
        HostAction::GiveFloor {
            participant_id: pa(lou),
        },
    );
    assert_eq!(
        w.m.member(lou).map(|m| m.hand_raised),
        Some(false),
        "giving the floor lowers the hand"
    );
    assert!(w.publish(lou, 2, TrackSource::Microphone));
    assert!(World::broadcasts(&w.take())
        .iter()
        .any(|m| matches!(m, ServerMessage::TrackPublished { .. })));
    // Taking it back: permissions first, then the track goes, with no host_muted.
    w.host(
        chair,
        HostAction::TakeFloor {
            participant_id: pa(lou),
        },
    );
    let out = w.take();
    let perms = out.iter().position(|o| matches!(o, Output::Send { to, msg: ServerMessage::PermissionsChanged { .. } } if *to == lou));
    let gone = out
        .iter()
        .position(|o| matches!(o, Output::Unpublish { pid, .. } if *pid == lou));
    assert!(
        perms.unwrap() < gone.unwrap(),
        "told before the tracks go: {out:?}"
    );
    assert!(!World::sent_to(&out, lou)
        .iter()
        .any(|m| matches!(m, ServerMessage::HostMuted { .. })));
    assert!(w.m.tracks().is_empty());
}

#[test]
fn host_mute_stops_forwarding_tells_the_member_and_spares_hosts_in_mute_all() {
    let mut w = World::new(50);
    let chair = w.enter("chair", host());
    let bob = w.enter("bob", speaker());
    w.publish(chair, 1, TrackSource::Microphone);
    w.publish(bob, 2, TrackSource::Microphone);
    w.take();
    w.host(chair, HostAction::MuteAll);
    let out = w.take();
    assert!(out.contains(&Output::MuteTrack {
        track_id: "TR_2".into(),
        muted: true
    }));
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::MuteTrack { track_id, .. } if track_id == "TR_1")));
    assert!(World::sent_to(&out, bob).iter().any(|m| matches!(
        m,
        ServerMessage::HostMuted {
            source: TrackSource::Microphone,
            ..
        }
    )));
    // The member unmutes himself: allowed, everyone else sees it.
    w.m.mute(bob, "TR_2", false);
    w.drain();
    assert!(w.take().contains(&Output::MuteTrack {
        track_id: "TR_2".into(),
        muted: false
    }));
    // Someone else's track: refused.
    w.m.mute(bob, "TR_1", true);
    w.drain();
    assert!(matches!(
        World::sent_to(&w.take(), bob).as_slice(),
        [ServerMessage::Error { .. }]
    ));
}

#[test]
fn joining_again_replaces_the_older_session_and_a_resume_keeps_the_floor() {
    let mut w = World::new(50);
    let chair = w.enter("chair", host());
    let lou = w.enter("lou", listener());
    w.host(
        chair,
        HostAction::GiveFloor {
            participant_id: pa(lou),
        },
    );
    w.take();
    // The session drops and comes back with its resume state.
    w.m.leave(lou, LeaveReason::Disconnected, w.now);
    let lou2 = Pid(99);
    let welcome = w.m.enter(
        w.now,
        lou2,
        info("lou"),
        listener(),
        Some(Restore {
            is_host: false,
            has_floor: true,
        }),
    );
    assert!(
        welcome.permissions.has_floor
            && welcome
                .permissions
                .can_publish
                .contains(&TrackSource::Microphone)
    );
    // The same identity joins from another tab: the older one is replaced.
    w.take();
    let lou3 = Pid(100);
    w.m.enter(w.now, lou3, info("lou"), listener(), None);
    w.drain();
    assert!(w.take().contains(&Output::Remove {
        pid: lou2,
        reason: LeaveReason::Replaced
    }));
    assert_eq!(
        w.m.members()
            .iter()
            .filter(|m| m.info.identity == "lou")
            .count(),
        1
    );
}

#[test]
fn participant_changes_go_out_in_one_batch_per_tick() {
    let mut w = World::new(1000);
    let first = w.enter("first", speaker());
    w.advance(Duration::from_millis(100));
    w.take();
    for i in 0..40 {
        w.enter(&format!("p{i}"), listener());
    }
    w.m.leave(first, LeaveReason::Left, w.now);
    w.drain();
    assert!(
        World::broadcasts(&w.take())
            .iter()
            .all(|m| !matches!(m, ServerMessage::ParticipantsChanged { .. })),
        "nothing is sent before the tick"
    );
    w.advance(Duration::from_millis(100));
    let batches: Vec<_> = World::broadcasts(&w.take())
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::ParticipantsChanged { joined, left, .. } => {
                Some((joined.len(), left.len()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(batches, vec![(40, 1)]);
    w.advance(Duration::from_millis(100));
    assert!(
        World::broadcasts(&w.take()).is_empty(),
        "an idle tick sends nothing"
    );
}

#[test]
fn chat_and_data_are_checked() {
    let mut w = World::new(50);
    let bob = w.enter("bob", speaker());
    let mute = w.enter(
        "quiet",
        Rights {
            can_chat: false,
            ..speaker()
        },
    );
    w.take();
    w.m.chat(bob, "  hello  ", w.now);
    w.m.chat(bob, "", w.now);
    w.m.chat(bob, &"x".repeat(2001), w.now);
    w.m.chat(mute, "hi", w.now);
    w.m.data(bob, "y".repeat(5000));
    w.drain();
    let out = w.take();
    let chats: Vec<_> = World::broadcasts(&out)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::Chat { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(chats, vec!["hello".to_string()]);
    assert_eq!(
        World::sent_to(&out, bob).len(),
        3,
        "empty, too long, too large: three errors"
    );
    assert!(matches!(
        World::sent_to(&out, mute).as_slice(),
        [ServerMessage::Error {
            code: ErrorCode::PermissionDenied,
            ..
        }]
    ));
}

#[test]
fn ending_the_meeting_removes_everyone_and_turns_the_lobby_away() {
    let mut w = World::new(50);
    let chair = w.enter("chair", host());
    let bob = w.enter("bob", speaker());
    w.host(chair, HostAction::Lobby { enabled: true });
    w.m.wait(info("late"), 7);
    w.take();
    w.host(chair, HostAction::EndMeeting);
    let out = w.take();
    assert!(out.contains(&Output::Remove {
        pid: bob,
        reason: LeaveReason::MeetingEnded
    }));
    assert!(out.contains(&Output::Remove {
        pid: chair,
        reason: LeaveReason::MeetingEnded
    }));
    assert!(out.contains(&Output::TurnAway {
        waiting: 7,
        reason: LeaveReason::MeetingEnded
    }));
    assert!(out.iter().any(
        |o| matches!(o, Output::Record(r) if r.audit().kind == "host_end_meeting"
            && r.audit().actor == "chair")
    ));
    assert!(w.m.is_empty());
}

#[test]
fn a_leaver_takes_their_tracks_and_hand_along() {
    let mut w = World::new(50);
    let bob = w.enter("bob", speaker());
    w.publish(bob, 5, TrackSource::Camera);
    w.m.raise_hand(bob, true);
    w.drain();
    w.take();
    assert!(w.m.leave(bob, LeaveReason::Disconnected, w.now));
    w.drain();
    let out = w.take();
    assert!(out.contains(&Output::TrackRemoved {
        track_id: "TR_5".into()
    }));
    assert!(World::broadcasts(&out)
        .iter()
        .any(|m| matches!(m, ServerMessage::HandQueue { queue } if queue.is_empty())));
    assert!(
        !w.m.leave(bob, LeaveReason::Disconnected, w.now),
        "a second leave is a no-op"
    );
    let _ = TrackKind::Audio;
}
