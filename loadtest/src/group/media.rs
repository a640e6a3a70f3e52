//! A publishing peer's simulated microphone and camera: due packets are generated from
//! [`crate::synth`], written into the group's payload arena, and handed to webrtc-rs. Video
//! goes through a pacer, as in a browser, so a large keyframe is spread over time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use plenary_proto::TrackKind;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::sansio::Protocol;

use super::Slot;
use crate::peer::Peer;
use crate::synth::{self, AudioSource, Stamp, VideoFrame, VideoSource};

/// Audio packets are sent at most this late before the schedule is reset (no bursts after
/// a stall).
const MAX_LAG: Duration = Duration::from_millis(200);

pub(super) struct AudioTx {
    pub(super) src: AudioSource,
    /// Speaker `k` of `n` taking turns of this many ms (`None`: its own talk pattern).
    pub(super) turn: Option<(usize, usize, u64)>,
    pub(super) stream: u32,
    pub(super) seq: u32,
    pub(super) due: Instant,
    pub(super) track: usize,
}

/// A simulcast layer's own RTP stream.
pub(super) struct Layer {
    pub(super) rid: &'static str,
    pub(super) ssrc: u32,
    pub(super) rtp_seq: u16,
}

pub(super) struct VideoTx {
    pub(super) src: VideoSource,
    /// With simulcast: this layer's SSRC and rid (else the track's own SSRC).
    pub(super) layer: Option<Layer>,
    pub(super) stream: u32,
    pub(super) seq: u32,
    pub(super) due: Instant,
    pub(super) track: usize,
    /// Packets of generated frames not yet sent (the pacer's queue).
    pub(super) queue: VecDeque<(VideoFrame, usize)>,
    /// When the pacer may send the next packet.
    pub(super) next_send: Instant,
    /// Pacing rate, bits per second (`None`: each frame goes out at once).
    pub(super) pace_bps: Option<f64>,
}

/// Like libwebrtc, cameras pace their packets at this multiple of the target bitrate, so a
/// large keyframe is spread over time rather than sent in one burst.
pub const PACING_FACTOR: f64 = 2.5;
/// Packets the pacer may send back to back after being idle.
const PACING_BURST: Duration = Duration::from_millis(5);
/// Most packets waiting in one camera's pacer; beyond it whole frames are dropped, as an
/// encoder would skip frames.
const PACER_QUEUE_LIMIT: usize = 4096;

/// Time one packet of `bytes` takes at `bps`.
pub fn pacing_interval(bytes: usize, bps: f64) -> Duration {
    Duration::from_secs_f64(bytes as f64 * 8.0 / bps.max(1.0))
}

/// RTP packets and payload bytes sent.
#[derive(Debug, Default)]
pub(super) struct Sent {
    pub(super) packets: u64,
    pub(super) bytes: u64,
}

/// Sends the slot's audio and video that are due.
pub(super) fn send_media(slot: &mut Slot, now: Instant, epoch: Instant, arena: &mut BytesMut) {
    let sent_us = now.saturating_duration_since(epoch).as_micros() as u64;
    if let Some(a) = slot.audio.as_mut() {
        if now.saturating_duration_since(a.due) > MAX_LAG {
            a.due = now;
        }
        while a.due <= now {
            a.due += Duration::from_millis(synth::AUDIO_FRAME_MS);
            let floor = a.turn.map(|(k, n, turn_ms)| {
                let unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                synth::holds_floor(k, n, unix_ms, turn_ms)
            });
            let Some(p) = a.src.tick_with(floor) else {
                continue;
            };
            let stamp = Stamp {
                kind: TrackKind::Audio,
                stream: a.stream,
                seq: a.seq,
                sent_us,
            };
            a.seq += 1;
            reserve(arena, p.size);
            synth::write_audio(arena, &stamp, p.size, &mut slot.rng);
            let payload = arena.split().freeze();
            write_rtp(
                &mut slot.peer,
                &mut slot.sent,
                a.track,
                None,
                now,
                p.marker,
                p.rtp_ts,
                payload,
            );
            slot.dirty = true;
        }
    }
    for v in slot.video.iter_mut() {
        let profile = *v.src.profile();
        let interval = Duration::from_micros(profile.frame_interval_us());
        if now.saturating_duration_since(v.due) > MAX_LAG {
            v.due = now;
        }
        while v.due <= now {
            v.due += interval;
            let frame = v.src.next_frame();
            if v.queue.len() + frame.packets > PACER_QUEUE_LIMIT {
                continue;
            }
            v.queue.extend((0..frame.packets).map(|i| (frame, i)));
        }
        v.next_send = v
            .next_send
            .max(now.checked_sub(PACING_BURST).unwrap_or(now));
        while let Some(&(frame, i)) = v.queue.front() {
            if v.pace_bps.is_some() && v.next_send > now {
                break;
            }
            v.queue.pop_front();
            let size = frame.packet_size(i);
            if let Some(bps) = v.pace_bps {
                v.next_send += pacing_interval(size, bps);
            }
            let stamp = Stamp {
                kind: TrackKind::Video,
                stream: v.stream,
                seq: v.seq,
                sent_us,
            };
            v.seq += 1;
            reserve(arena, size);
            synth::write_video(arena, &frame, i, &profile, &stamp, &mut slot.rng);
            let payload = arena.split().freeze();
            let last = i + 1 == frame.packets;
            write_rtp(
                &mut slot.peer,
                &mut slot.sent,
                v.track,
                v.layer.as_mut(),
                now,
                last,
                frame.rtp_ts,
                payload,
            );
            slot.dirty = true;
        }
    }
}

fn reserve(arena: &mut BytesMut, n: usize) {
    if arena.capacity() - arena.len() < n {
        arena.reserve(64 * 1024);
    }
}

#[allow(clippy::too_many_arguments)]
fn write_rtp(
    peer: &mut Peer,
    sent: &mut Sent,
    track: usize,
    layer: Option<&mut Layer>,
    now: Instant,
    marker: bool,
    ts: u32,
    payload: bytes::Bytes,
) {
    let t = &mut peer.tracks[track];
    let len = payload.len() as u64;
    let (ssrc, seq) = match &layer {
        Some(l) => (l.ssrc, l.rtp_seq),
        None => (t.ssrc, t.rtp_seq),
    };
    let mut header = rtc::rtp::header::Header {
        version: 2,
        marker,
        payload_type: t.pt,
        sequence_number: seq,
        timestamp: ts,
        ssrc,
        ..Default::default()
    };
    match layer {
        Some(l) => {
            // As Chrome: every simulcast packet names its mid and rid (RFC 8852), with the
            // ids the answer kept (none: the server did not take the extensions).
            if let Some((mid_id, mid, rid_id)) = &peer.simulcast_ext {
                let _ = header.set_extension(*mid_id, bytes::Bytes::from(mid.clone()));
                let _ = header.set_extension(*rid_id, bytes::Bytes::from_static(l.rid.as_bytes()));
            }
            l.rtp_seq = l.rtp_seq.wrapping_add(1);
        }
        None => t.rtp_seq = t.rtp_seq.wrapping_add(1),
    }
    let packet = rtc::rtp::Packet { header, payload };
    let msg = TaggedRTCMessage {
        now,
        message: RTCMessage::RtpPacket(t.track_id.clone(), packet),
    };
    if peer.pc.handle_write(msg).is_ok() {
        sent.packets += 1;
        sent.bytes += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spreads_a_keyframe_at_two_and_a_half_times_the_bitrate() {
        // 1100-byte packets at 2.5 × 800 kbps: 4.4 ms each.
        let bps = 800_000.0 * PACING_FACTOR;
        assert_eq!(pacing_interval(1100, bps), Duration::from_micros(4400));
        // A 270 KB screen-share keyframe takes ~1.1 s instead of one burst.
        let frame: Duration = (0..246).map(|_| pacing_interval(1100, bps)).sum();
        assert!((1.0..1.2).contains(&frame.as_secs_f64()), "{frame:?}");
    }
}
