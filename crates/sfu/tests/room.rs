//! The forwarding core driven packet by packet in simulated time.

use std::time::{Duration, Instant};

use plenary_sfu::{
    Forward, Media, ParticipantKey as P, Room, RoomConfig, RoomEvent, RtpIn, TrackKey as T,
    VideoCodec,
};

const OPUS: Media = Media::Audio { clock_rate: 48_000 };
const VP8: Media = Media::Video(VideoCodec::Vp8);
const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a];
const VP8_DELTA: &[u8] = &[0x10, 0x01, 0x00];

/// Drains events, binding every subscription to a slot numbered by (subscriber, track).
fn bind_all(room: &mut Room) -> Vec<RoomEvent> {
    let mut seen = Vec::new();
    while let Some(e) = room.poll_event() {
        if let RoomEvent::Subscribe {
            subscriber, track, ..
        } = &e
        {
            room.bind(*subscriber, *track, slot(*subscriber, *track))
                .unwrap();
        }
        seen.push(e);
    }
    seen
}

fn slot(s: P, t: T) -> u32 {
    (s.0 * 100 + t.0) as u32
}

fn rtp<'a>(stream: u64, seq: u64, ts: u32, payload: &'a [u8], at: Instant) -> RtpIn<'a> {
    RtpIn {
        stream,
        layer: 0,
        seq,
        ts,
        payload,
        at,
    }
}

fn three_publishers() -> Room {
    let mut room = Room::new(RoomConfig::default());
    for p in 1..=3 {
        room.handle_join(P(p), true).unwrap();
        room.handle_publish(P(p), T(p * 10), OPUS).unwrap();
        room.handle_publish(P(p), T(p * 10 + 1), VP8).unwrap();
    }
    bind_all(&mut room);
    room
}

#[test]
fn every_subscriber_gets_every_other_track() {
    let room = three_publishers();
    assert_eq!(room.participant_count(), 3);
    assert_eq!(room.track_count(), 6);
    // Each of 6 tracks goes to the 2 other participants.
    assert_eq!(room.subscription_count(), 12);
}

#[test]
fn audio_fans_out_to_the_others_only_with_rewritten_sequence() {
    let mut room = three_publishers();
    let t0 = Instant::now();
    let mut out = Vec::new();
    room.handle_rtp(T(10), &rtp(0xAAAA, 40_000, 960, b"opus", t0), &mut out);
    let mut subscribers: Vec<P> = out.iter().map(|f| f.subscriber).collect();
    subscribers.sort();
    assert_eq!(subscribers, vec![P(2), P(3)]);
    for f in &out {
        assert_eq!(f.slot, slot(f.subscriber, T(10)));
        assert!(f.seq < 65_536, "output starts below the 16-bit rollover");
        assert_eq!(f.ts, 960, "first packet keeps its timestamp base");
    }
    let first: Vec<Forward> = out.clone();
    out.clear();
    room.handle_rtp(T(10), &rtp(0xAAAA, 40_001, 1_920, b"opus", t0), &mut out);
    for (a, b) in first.iter().zip(&out) {
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.ts, a.ts + 960);
    }
}

#[test]
fn video_waits_for_keyframe_and_asks_for_one() {
    let mut room = three_publishers();
    let t0 = Instant::now();
    let mut out = Vec::new();
    room.handle_rtp(T(11), &rtp(1, 5, 0, VP8_DELTA, t0), &mut out);
    assert!(out.is_empty(), "no subscriber may start on a delta frame");
    assert_eq!(
        room.poll_event(),
        Some(RoomEvent::RequestKeyframe {
            publisher: P(1),
            track: T(11),
            stream: 1,
        })
    );
    room.handle_rtp(T(11), &rtp(1, 6, 3000, VP8_KEY, t0), &mut out);
    assert_eq!(out.len(), 2);
    out.clear();
    room.handle_rtp(T(11), &rtp(1, 7, 3000, VP8_DELTA, t0), &mut out);
    assert_eq!(out.len(), 2, "after the keyframe, delta frames flow");
    // What the debug log says of a subscriber that asks for a keyframe.
    let state = room.describe_down(P(2), T(11)).unwrap();
    assert!(state.contains("current Some(1) waiting false"), "{state}");
    assert!(
        state.ends_with("forwarded 2 dropped_waiting 1 keyframes 1"),
        "{state}"
    );
    assert_eq!(
        room.describe_down(P(1), T(11)),
        None,
        "no one gets their own"
    );
}

#[test]
fn keyframe_requests_are_rate_limited_and_folded() {
    let mut room = three_publishers();
    let t0 = Instant::now();
    room.handle_keyframe_request(t0, P(2), T(11)).unwrap();
    room.handle_keyframe_request(t0 + Duration::from_millis(10), P(3), T(11))
        .unwrap();
    room.handle_keyframe_request(t0 + Duration::from_millis(20), P(2), T(11))
        .unwrap();
    let requests = |room: &mut Room| {
        let mut n = 0;
        while let Some(e) = room.poll_event() {
            assert!(matches!(
                e,
                RoomEvent::RequestKeyframe {
                    publisher: P(1),
                    track: T(11),
                    ..
                }
            ));
            n += 1;
        }
        n
    };
    assert_eq!(
        requests(&mut room),
        1,
        "one request reaches the publisher at once"
    );
    let due = room
        .poll_timeout()
        .expect("the folded request is scheduled");
    assert_eq!(due, t0 + Duration::from_millis(500));
    room.handle_timeout(due - Duration::from_millis(1));
    assert_eq!(requests(&mut room), 0);
    room.handle_timeout(due);
    assert_eq!(requests(&mut room), 1, "the folded requests go out as one");
    assert_eq!(room.poll_timeout(), None);
    let stats = room.stats();
    assert_eq!(stats.keyframe_requests, 2);
    assert_eq!(stats.keyframe_requests_limited, 1);
    assert_eq!(
        stats.subscriber_keyframe_requests_ignored, 1,
        "P(2) asked again within its own interval: ignored"
    );
    // Audio never asks for keyframes; unknown subscriptions are refused.
    assert!(room.handle_keyframe_request(t0, P(1), T(11)).is_err());
}

#[test]
fn a_new_subscriber_joins_mid_stream_and_gets_a_keyframe_request() {
    let mut room = three_publishers();
    let t0 = Instant::now();
    let mut out = Vec::new();
    room.handle_rtp(T(11), &rtp(1, 6, 3000, VP8_KEY, t0), &mut out);
    while room.poll_event().is_some() {}
    room.handle_join(P(4), true).unwrap();
    let events = bind_all(&mut room);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(
                e,
                RoomEvent::Subscribe {
                    subscriber: P(4),
                    ..
                }
            ))
            .count(),
        6
    );
    out.clear();
    let later = t0 + Duration::from_secs(1);
    room.handle_rtp(T(11), &rtp(1, 7, 6000, VP8_DELTA, later), &mut out);
    assert_eq!(out.len(), 2, "the old subscribers go on");
    assert!(out.iter().all(|f| f.subscriber != P(4)));
    assert!(matches!(
        room.poll_event(),
        Some(RoomEvent::RequestKeyframe { track: T(11), .. })
    ));
}

#[test]
fn leaving_unpublishes_and_stops_forwarding() {
    let mut room = three_publishers();
    room.handle_leave(P(1)).unwrap();
    let events = bind_all(&mut room);
    let unsubs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RoomEvent::Unsubscribe {
                subscriber,
                track,
                slot,
            } => Some((*subscriber, *track, *slot)),
            _ => None,
        })
        .collect();
    assert_eq!(unsubs.len(), 4, "two tracks × two subscribers");
    assert!(unsubs
        .iter()
        .all(|(s, t, slot)| *s != P(1) && (t.0 == 10 || t.0 == 11) && slot.is_some()));
    assert_eq!(room.track_count(), 4);
    assert_eq!(
        room.subscription_count(),
        4,
        "4 tracks × 1 other subscriber"
    );
    let mut out = Vec::new();
    room.handle_rtp(T(10), &rtp(1, 1, 0, b"x", Instant::now()), &mut out);
    assert!(out.is_empty());
    room.handle_rtp(T(20), &rtp(1, 1, 0, b"x", Instant::now()), &mut out);
    assert_eq!(
        out.iter().map(|f| f.subscriber).collect::<Vec<_>>(),
        vec![P(3)]
    );
    room.handle_leave(P(2)).unwrap();
    room.handle_leave(P(3)).unwrap();
    assert!(room.is_empty());
    assert_eq!(room.track_count(), 0);
}

#[test]
fn paused_and_muted_tracks_are_not_forwarded_and_resume_without_gaps() {
    let mut room = three_publishers();
    let t0 = Instant::now();
    let mut out = Vec::new();
    room.handle_rtp(T(10), &rtp(9, 1, 0, b"a", t0), &mut out);
    let before = out.iter().find(|f| f.subscriber == P(2)).unwrap().seq;
    room.set_paused(P(2), T(10), true).unwrap();
    out.clear();
    room.handle_rtp(T(10), &rtp(9, 2, 960, b"a", t0), &mut out);
    assert_eq!(
        out.iter().map(|f| f.subscriber).collect::<Vec<_>>(),
        vec![P(3)]
    );
    room.set_paused(P(2), T(10), false).unwrap();
    out.clear();
    room.handle_rtp(
        T(10),
        &rtp(9, 50, 48_000, b"a", t0 + Duration::from_secs(1)),
        &mut out,
    );
    let after = out.iter().find(|f| f.subscriber == P(2)).unwrap().seq;
    assert_eq!(after, before + 1, "the subscriber sees no sequence gap");
    room.handle_mute(T(10), true).unwrap();
    out.clear();
    room.handle_rtp(T(10), &rtp(9, 51, 48_960, b"a", t0), &mut out);
    assert!(out.is_empty());
}

fn layered<'a>(
    stream: u64,
    layer: u8,
    seq: u64,
    ts: u32,
    payload: &'a [u8],
    at: Instant,
) -> RtpIn<'a> {
    RtpIn {
        layer,
        ..rtp(stream, seq, ts, payload, at)
    }
}

#[test]
fn simulcast_layer_switch_happens_at_a_keyframe() {
    let mut room = three_publishers();
    let t0 = Instant::now();
    let mut out = Vec::new();
    // Layer 0 is stream 100, layer 1 stream 200. Everyone starts on layer 0; subscriber 3
    // is moved to layer 1.
    room.handle_rtp(T(11), &layered(100, 0, 1, 0, VP8_KEY, t0), &mut out);
    assert_eq!(out.len(), 2, "both subscribers start on the lowest layer");
    room.set_layer(t0, P(3), T(11), 1).unwrap();
    out.clear();
    room.handle_rtp(T(11), &layered(200, 1, 1, 0, VP8_KEY, t0), &mut out);
    room.handle_rtp(T(11), &layered(100, 0, 2, 3000, VP8_DELTA, t0), &mut out);
    let subs = |out: &[Forward]| {
        out.iter()
            .map(|f| (f.subscriber, f.seq))
            .collect::<Vec<_>>()
    };
    let got = subs(&out);
    assert_eq!(got.len(), 2, "each subscriber gets only its layer: {got:?}");
    let seq2 = out.iter().find(|f| f.subscriber == P(2)).unwrap().seq;
    room.set_layer(t0, P(2), T(11), 1).unwrap();
    out.clear();
    room.handle_rtp(T(11), &layered(200, 1, 2, 3000, VP8_DELTA, t0), &mut out);
    room.handle_rtp(T(11), &layered(100, 0, 3, 6000, VP8_DELTA, t0), &mut out);
    assert_eq!(
        out.iter().map(|f| f.subscriber).collect::<Vec<_>>(),
        vec![P(3), P(2)],
        "until the new layer's keyframe, subscriber 2 keeps its old layer"
    );
    out.clear();
    room.handle_rtp(T(11), &layered(200, 1, 3, 6000, VP8_KEY, t0), &mut out);
    room.handle_rtp(T(11), &layered(100, 0, 4, 9000, VP8_DELTA, t0), &mut out);
    let f2: Vec<_> = out.iter().filter(|f| f.subscriber == P(2)).collect();
    assert_eq!(
        f2.len(),
        1,
        "after the switch only the new layer reaches subscriber 2"
    );
    assert_eq!(f2[0].seq, seq2 + 2, "switched without a sequence gap");
    // The layers' bitrates are measured for the allocator.
    let rates = room
        .layer_bitrates(t0 + Duration::from_secs(1), T(11))
        .unwrap();
    assert!(rates[0] > 0 && rates[1] > 0 && rates[2] == 0, "{rates:?}");
}

/// A VP8 payload with a descriptor carrying a 15-bit PictureID and a TL0PICIDX.
fn vp8_numbered(key: bool, pid: u16, tl0: u8) -> Vec<u8> {
    let header = if key { 0x00 } else { 0x01 };
    vec![
        0x90,
        0xc0,
        0x80 | (pid >> 8) as u8,
        pid as u8,
        tl0,
        header,
        0x9d,
        0x01,
        0x2a,
    ]
}

#[test]
fn vp8_numbering_stays_continuous_across_a_layer_switch() {
    let mut room = three_publishers();
    let t0 = Instant::now();
    let mut out = Vec::new();
    // Layer 0 numbers its pictures from 20 000, layer 1 from 3 000 (each layer picks its
    // own start): a switch up must not make the numbers jump back for the receiver.
    room.handle_rtp(
        T(11),
        &layered(100, 0, 1, 0, &vp8_numbered(true, 20_000, 50), t0),
        &mut out,
    );
    room.handle_rtp(
        T(11),
        &layered(100, 0, 2, 3000, &vp8_numbered(false, 20_001, 51), t0),
        &mut out,
    );
    assert!(
        out.iter().all(|f| f.vp8.is_none()),
        "no switch, nothing rewritten"
    );
    room.set_layer(t0, P(2), T(11), 1).unwrap();
    out.clear();
    room.handle_rtp(
        T(11),
        &layered(200, 1, 1, 6000, &vp8_numbered(true, 3_000, 7), t0),
        &mut out,
    );
    let f = out.iter().find(|f| f.subscriber == P(2)).unwrap();
    assert_eq!(f.vp8.and_then(|n| n.picture_id), Some(20_002));
    assert_eq!(f.vp8.and_then(|n| n.tl0_pic_idx), Some(52));
    out.clear();
    room.handle_rtp(
        T(11),
        &layered(200, 1, 2, 9000, &vp8_numbered(false, 3_001, 8), t0),
        &mut out,
    );
    room.handle_rtp(
        T(11),
        &layered(100, 0, 3, 9000, &vp8_numbered(false, 20_002, 52), t0),
        &mut out,
    );
    let two = out.iter().find(|f| f.subscriber == P(2)).unwrap();
    assert_eq!(two.vp8.and_then(|n| n.picture_id), Some(20_003));
    let three = out.iter().find(|f| f.subscriber == P(3)).unwrap();
    assert_eq!(three.vp8, None, "subscriber 3 never switched");
}

#[test]
fn a_weak_subscriber_cannot_cause_a_keyframe_storm() {
    let mut room = three_publishers();
    let t0 = Instant::now();
    let mut out = Vec::new();
    room.handle_rtp(T(11), &rtp(1, 1, 0, VP8_KEY, t0), &mut out);
    while room.poll_event().is_some() {}
    // P(2) loses packets and asks for a keyframe 10 times a second for 10 s: at most one
    // request a second reaches the publisher.
    let mut reached = 0;
    for i in 0..100u64 {
        let now = t0 + Duration::from_millis(100 * i);
        room.handle_keyframe_request(now, P(2), T(11)).unwrap();
        room.handle_timeout(now);
        while let Some(e) = room.poll_event() {
            if matches!(e, RoomEvent::RequestKeyframe { .. }) {
                reached += 1;
            }
        }
    }
    assert!(
        reached <= 10,
        "at most one keyframe request a second reaches the publisher (got {reached})"
    );
}

#[test]
fn listeners_receive_but_are_not_subscribed_to_by_anyone() {
    let mut room = Room::new(RoomConfig::default());
    room.handle_join(P(1), true).unwrap();
    room.handle_join(P(2), false).unwrap();
    room.handle_publish(P(1), T(1), OPUS).unwrap();
    let events = bind_all(&mut room);
    assert!(
        events.is_empty(),
        "P2 may not subscribe, P1 does not get its own track"
    );
    assert!(room.handle_publish(P(9), T(2), OPUS).is_err());
    assert!(room.handle_publish(P(1), T(1), OPUS).is_err());
    assert!(room.handle_join(P(1), true).is_err());
}

#[test]
fn only_unmuted_selected_microphones_are_audible() {
    let mut room = three_publishers();
    assert_eq!(
        room.audible_tracks(),
        3,
        "three microphones, no cameras counted"
    );
    room.handle_mute(T(10), true).unwrap();
    assert_eq!(room.audible_tracks(), 2);
    room.set_selected(T(20), false).unwrap();
    assert_eq!(
        room.audible_tracks(),
        1,
        "a deselected microphone sends nothing either"
    );
    room.handle_mute(T(10), false).unwrap();
    room.set_selected(T(20), true).unwrap();
    assert_eq!(room.audible_tracks(), 3);
    // Muted and deselected at once, then only one of them undone: still silent.
    room.handle_mute(T(30), true).unwrap();
    room.set_selected(T(30), false).unwrap();
    room.handle_mute(T(30), false).unwrap();
    assert_eq!(room.audible_tracks(), 2);
    room.set_selected(T(30), true).unwrap();
    assert_eq!(room.audible_tracks(), 3);
    // Tracks that go or come from another shard count too.
    room.handle_unpublish(T(10)).unwrap();
    assert_eq!(room.audible_tracks(), 2);
    room.handle_publish_remote(P(7), T(70), OPUS).unwrap();
    assert_eq!(room.audible_tracks(), 3);
}
