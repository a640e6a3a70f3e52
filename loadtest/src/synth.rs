//! Synthetic media: Opus-like audio and VP8-like video at realistic rates, with no codec.
//!
//! Every RTP payload carries a [`Stamp`] (stream id, per-stream sequence number, send time)
//! right after its codec header bytes, so a receiver can measure loss, jitter and end-to-end
//! latency per stream even though the SFU rewrites SSRCs, sequence numbers and timestamps.
//!
//! - Audio ([`AudioSource`]): one packet per 20 ms while "talking" (60–100 bytes, about
//!   32 kbps), and DTX-like silences in which one small packet goes out every 400 ms. The
//!   payload starts with an Opus TOC byte (SILK wideband, 20 ms, one frame).
//! - Video ([`VideoSource`]): frames at the profile's rate sized to its bitrate, with a
//!   keyframe every N seconds (several times larger than a delta frame) or when asked (PLI),
//!   split into packets of at most [`MAX_VIDEO_PAYLOAD`] bytes. Each packet starts with a VP8
//!   payload descriptor (X, I, 15-bit PictureID; S on the first packet of a frame, partition
//!   0); the first packet of a frame carries the VP8 frame tag (P bit clear on keyframes) and,
//!   on keyframes, the start code and size. An SFU's keyframe detection therefore works.
//!
//! Generators only decide sizes and flags; [`write_audio`] and [`write_video`] append a
//! payload to a caller's buffer, so the caller can reuse one arena and allocate nothing per
//! packet.

use bytes::BufMut;
use plenary_proto::TrackKind;
use serde::Serialize;

/// Marks a stamp.
pub const MAGIC: [u8; 2] = *b"PL";
/// Bytes a stamp takes in a payload.
pub const STAMP_LEN: usize = 20;
/// Largest video RTP payload (browsers keep packets near 1200 bytes on the wire).
pub const MAX_VIDEO_PAYLOAD: usize = 1100;
/// One audio packet's duration.
pub const AUDIO_FRAME_MS: u64 = 20;
/// RTP timestamp step of one 20 ms Opus frame at 48 kHz.
pub const AUDIO_TS_STEP: u32 = 960;
/// Opus TOC byte: SILK-only wideband, 20 ms (config 9), mono, one frame (code 0).
pub const OPUS_TOC: u8 = 9 << 3;
/// VP8 payload descriptor length we write (X, I with a 15-bit PictureID).
pub const VP8_DESCRIPTOR_LEN: usize = 4;

/// What a receiver learns from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Audio or video.
    pub kind: TrackKind,
    /// The sending stream (unique in a run).
    pub stream: u32,
    /// Per-stream packet counter, from 0.
    pub seq: u32,
    /// Send time, microseconds since the run's epoch.
    pub sent_us: u64,
}

impl Stamp {
    fn put(&self, out: &mut impl BufMut) {
        out.put_slice(&MAGIC);
        out.put_u8(match self.kind {
            TrackKind::Audio => 0,
            TrackKind::Video => 1,
        });
        out.put_u8(0);
        out.put_u32(self.stream);
        out.put_u32(self.seq);
        out.put_u64(self.sent_us);
    }

    fn read(b: &[u8]) -> Option<Stamp> {
        let b = b.get(..STAMP_LEN)?;
        if b[..2] != MAGIC {
            return None;
        }
        let kind = match b[2] {
            0 => TrackKind::Audio,
            1 => TrackKind::Video,
            _ => return None,
        };
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&b[12..20]);
        Some(Stamp {
            kind,
            stream: u32_at(4),
            seq: u32_at(8),
            sent_us: u64::from_be_bytes(sent),
        })
    }
}

/// Finds the stamp in an RTP payload written by [`write_audio`] or [`write_video`].
pub fn parse_stamp(payload: &[u8]) -> Option<Stamp> {
    if payload.first() == Some(&OPUS_TOC) {
        if let Some(s) = Stamp::read(payload.get(1..)?) {
            return Some(s);
        }
    }
    Stamp::read(payload.get(vp8_header_len(payload)?..)?)
}

/// Length of the VP8 payload descriptor plus, on the first packet of a frame, the frame
/// header bytes we write (3-byte tag, and 7 more on keyframes).
fn vp8_header_len(p: &[u8]) -> Option<usize> {
    let first = *p.first()?;
    let mut i = 1;
    if first & 0x80 != 0 {
        let x = *p.get(1)?;
        i += 1;
        if x & 0x80 != 0 {
            i += if p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    if first & 0x10 != 0 && first & 0x07 == 0 {
        let tag = *p.get(i)?;
        i += if tag & 0x01 == 0 { 10 } else { 3 };
    }
    Some(i)
}

/// A small deterministic PRNG (xorshift64*), so runs are reproducible and allocation-free.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }
}

/// One audio packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioPacket {
    /// Payload size in bytes.
    pub size: usize,
    /// RTP marker: first packet of a talk spurt.
    pub marker: bool,
    /// RTP timestamp (48 kHz).
    pub rtp_ts: u32,
}

/// Opus-like speech with talk spurts and DTX silences. Call [`AudioSource::tick`] every 20 ms.
#[derive(Debug, Clone)]
pub struct AudioSource {
    rng: Rng,
    talking: bool,
    slots_left: u32,
    slot: u64,
    rtp_ts: u32,
}

/// DTX: during silence one packet goes out every this many 20 ms slots (400 ms).
pub const DTX_EVERY: u64 = 20;
/// Size of a DTX packet (a real one is 1–3 bytes; ours also carries the stamp).
pub const DTX_SIZE: usize = 1 + STAMP_LEN + 3;

impl AudioSource {
    /// A speaker whose talk pattern is drawn from `seed`. It starts talking.
    pub fn new(seed: u64) -> AudioSource {
        let mut rng = Rng::new(seed);
        let slots_left = rng.range(50, 300);
        let rtp_ts = rng.next_u64() as u32;
        AudioSource {
            rng,
            talking: true,
            slots_left,
            slot: 0,
            rtp_ts,
        }
    }

    /// Advances one 20 ms slot; returns the packet to send in it, if any.
    pub fn tick(&mut self) -> Option<AudioPacket> {
        self.tick_with(None)
    }

    /// As [`AudioSource::tick`], but `Some(talking)` decides whether this slot is speech
    /// (a speaker who holds the floor) instead of the speaker's own talk pattern.
    pub fn tick_with(&mut self, floor: Option<bool>) -> Option<AudioPacket> {
        let mut marker = false;
        if let Some(talking) = floor {
            marker = talking && !self.talking;
            self.talking = talking;
            self.slots_left = u32::MAX;
        } else if self.slots_left == 0 {
            self.talking = !self.talking;
            // Talk spurts of 1–6 s, silences of 0.5–3 s.
            self.slots_left = if self.talking {
                self.rng.range(50, 300)
            } else {
                self.rng.range(25, 150)
            };
            marker = self.talking;
        }
        self.slots_left = self.slots_left.saturating_sub(1);
        let rtp_ts = self.rtp_ts;
        self.rtp_ts = self.rtp_ts.wrapping_add(AUDIO_TS_STEP);
        self.slot += 1;
        if self.talking {
            let size = self.rng.range(60, 100) as usize;
            Some(AudioPacket {
                size,
                marker: marker || self.slot == 1,
                rtp_ts,
            })
        } else if self.slot.is_multiple_of(DTX_EVERY) {
            Some(AudioPacket {
                size: DTX_SIZE,
                marker: false,
                rtp_ts,
            })
        } else {
            None
        }
    }
}

/// Whether speaker `k` of `n` holds the floor at `unix_ms` with turns of `turn_ms`: turns go
/// round in order. Wall-clock time, so that processes sharing a run (`--shard-of`) agree.
pub fn holds_floor(k: usize, n: usize, unix_ms: u64, turn_ms: u64) -> bool {
    n > 0 && turn_ms > 0 && (unix_ms / turn_ms) % n as u64 == k as u64
}

/// Appends an audio payload of `size` bytes (at least TOC + stamp) carrying `stamp`.
pub fn write_audio(out: &mut impl BufMut, stamp: &Stamp, size: usize, rng: &mut Rng) {
    out.put_u8(OPUS_TOC);
    stamp.put(out);
    fill(out, size.saturating_sub(1 + STAMP_LEN), rng);
}

/// Random-looking filler (8 bytes at a time), like compressed media.
fn fill(out: &mut impl BufMut, mut n: usize, rng: &mut Rng) {
    while n >= 8 {
        out.put_u64(rng.next_u64());
        n -= 8;
    }
    let last = rng.next_u64().to_be_bytes();
    out.put_slice(&last[..n]);
}

/// A video bitrate/resolution profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VideoProfile {
    /// Profile name.
    pub name: &'static str,
    /// Frame width (written in keyframe headers).
    pub width: u16,
    /// Frame height.
    pub height: u16,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate, bits per second.
    pub bitrate: u32,
    /// Seconds between periodic keyframes.
    pub keyframe_secs: u32,
    /// A keyframe's size as a multiple of a delta frame's.
    pub keyframe_ratio: u32,
}

impl VideoProfile {
    /// The built-in profiles.
    pub const ALL: [VideoProfile; 4] = [
        VideoProfile {
            name: "low",
            width: 320,
            height: 180,
            fps: 15,
            bitrate: 150_000,
            keyframe_secs: 3,
            keyframe_ratio: 6,
        },
        VideoProfile {
            name: "sd",
            width: 640,
            height: 360,
            fps: 30,
            bitrate: 500_000,
            keyframe_secs: 3,
            keyframe_ratio: 8,
        },
        VideoProfile {
            name: "hd",
            width: 1280,
            height: 720,
            fps: 30,
            bitrate: 1_500_000,
            keyframe_secs: 3,
            keyframe_ratio: 8,
        },
        // Screen share: few frames, tiny deltas, and huge keyframes that arrive in bursts.
        VideoProfile {
            name: "screen",
            width: 1920,
            height: 1080,
            fps: 5,
            bitrate: 800_000,
            keyframe_secs: 4,
            keyframe_ratio: 40,
        },
    ];

    /// The profile called `name`.
    pub fn by_name(name: &str) -> Option<VideoProfile> {
        VideoProfile::ALL.iter().copied().find(|p| p.name == name)
    }

    /// Mean delta-frame size in bytes, so that the average over a keyframe interval meets
    /// the bitrate.
    pub fn delta_frame_bytes(&self) -> u32 {
        let frames = (self.fps * self.keyframe_secs.max(1)).max(1);
        let interval_bytes = u64::from(self.bitrate) / 8 * u64::from(self.keyframe_secs.max(1));
        let units = u64::from(frames - 1 + self.keyframe_ratio.max(1));
        (interval_bytes / units).max(STAMP_LEN as u64 + 16) as u32
    }

    /// Microseconds between frames.
    pub fn frame_interval_us(&self) -> u64 {
        1_000_000 / u64::from(self.fps.max(1))
    }
}

/// Simulcast layers as browsers send them: rid, resolution divisor, share of the profile's
/// bitrate (for hd: 150 / 500 / 1500 kbit/s). The layer index is also the top byte of the
/// layer's stream id, so receivers know which layer they got (0: full, as without simulcast).
pub const LAYERS: [(&str, u16, f64); 3] = [("f", 1, 1.0), ("h", 2, 1.0 / 3.0), ("q", 4, 0.1)];

/// Stream id of `layer` of video stream `stream`.
pub fn layer_stream(stream: u32, layer: usize) -> u32 {
    stream | ((layer as u32) << 24)
}

/// The video stream and layer a stream id names.
pub fn stream_layer(id: u32) -> (u32, usize) {
    (id & 0x00ff_ffff, (id >> 24) as usize)
}

impl VideoProfile {
    /// The profile of simulcast layer `layer` (see [`LAYERS`]).
    pub fn layer(&self, layer: usize) -> VideoProfile {
        let (_, div, share) = LAYERS[layer.min(LAYERS.len() - 1)];
        VideoProfile {
            width: (self.width / div).max(16),
            height: (self.height / div).max(16),
            bitrate: ((f64::from(self.bitrate) * share) as u32).max(30_000),
            ..*self
        }
    }
}

/// One video frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFrame {
    /// Total payload bytes of the frame.
    pub bytes: usize,
    /// Whether it is a keyframe.
    pub keyframe: bool,
    /// RTP timestamp (90 kHz).
    pub rtp_ts: u32,
    /// VP8 PictureID (15 bits).
    pub picture_id: u16,
    /// Number of packets it is split into.
    pub packets: usize,
}

impl VideoFrame {
    /// Payload size of packet `i` (the bytes spread evenly, as libwebrtc does).
    pub fn packet_size(&self, i: usize) -> usize {
        let base = self.bytes / self.packets;
        let extra = self.bytes % self.packets;
        base + usize::from(i < extra)
    }
}

/// VP8-like video. Call [`VideoSource::next_frame`] once per frame interval.
#[derive(Debug, Clone)]
pub struct VideoSource {
    profile: VideoProfile,
    rng: Rng,
    frame: u64,
    rtp_ts: u32,
    picture_id: u16,
    force_keyframe: bool,
    delta: u32,
}

impl VideoSource {
    /// A camera with `profile`; the first frame is a keyframe.
    pub fn new(profile: VideoProfile, seed: u64) -> VideoSource {
        let mut rng = Rng::new(seed ^ 0x5644_5038);
        let rtp_ts = rng.next_u64() as u32;
        let picture_id = (rng.next_u64() & 0x7fff) as u16;
        VideoSource {
            delta: profile.delta_frame_bytes(),
            profile,
            rng,
            frame: 0,
            rtp_ts,
            picture_id,
            force_keyframe: true,
        }
    }

    /// The profile.
    pub fn profile(&self) -> &VideoProfile {
        &self.profile
    }

    /// Makes the next frame a keyframe (a PLI or FIR arrived).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// The next frame's shape.
    pub fn next_frame(&mut self) -> VideoFrame {
        let period = u64::from(self.profile.fps * self.profile.keyframe_secs.max(1)).max(1);
        let keyframe = self.force_keyframe || self.frame.is_multiple_of(period);
        self.force_keyframe = false;
        let mean = if keyframe {
            self.delta * self.profile.keyframe_ratio.max(1)
        } else {
            self.delta
        };
        // ±20 % around the mean.
        let bytes = self.rng.range(mean * 8 / 10, mean * 12 / 10).max(64) as usize;
        let per_packet = MAX_VIDEO_PAYLOAD - VP8_DESCRIPTOR_LEN - STAMP_LEN - 10;
        let packets = bytes.div_ceil(per_packet).max(1);
        let bytes = bytes.max(packets * (VP8_DESCRIPTOR_LEN + 10 + STAMP_LEN));
        let frame = VideoFrame {
            bytes,
            keyframe,
            rtp_ts: self.rtp_ts,
            picture_id: self.picture_id,
            packets,
        };
        self.frame += 1;
        self.rtp_ts = self.rtp_ts.wrapping_add(90_000 / self.profile.fps.max(1));
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        frame
    }
}

/// Appends packet `index` of `frame` (payload size `frame.packet_size(index)`), carrying
/// `stamp`.
pub fn write_video(
    out: &mut impl BufMut,
    frame: &VideoFrame,
    index: usize,
    profile: &VideoProfile,
    stamp: &Stamp,
    rng: &mut Rng,
) {
    let size = frame.packet_size(index);
    let start = index == 0;
    // Descriptor: X=1, S on the first packet, PID=0; I=1; M=1 + 15-bit PictureID.
    out.put_u8(0x80 | if start { 0x10 } else { 0 });
    out.put_u8(0x80);
    out.put_u16(0x8000 | frame.picture_id);
    let mut used = VP8_DESCRIPTOR_LEN;
    if start {
        // Frame tag: P (bit 0) clear on keyframes, version 0, show_frame, first partition
        // size (19 bits) — we claim the whole first packet.
        let part = (size as u32) & 0x7_ffff;
        let tag = u32::from(!frame.keyframe) | (1 << 4) | (part << 5);
        out.put_slice(&tag.to_le_bytes()[..3]);
        used += 3;
        if frame.keyframe {
            out.put_slice(&[0x9d, 0x01, 0x2a]);
            out.put_u16_le(profile.width & 0x3fff);
            out.put_u16_le(profile.height & 0x3fff);
            used += 7;
        }
    }
    stamp.put(out);
    used += STAMP_LEN;
    fill(out, size.saturating_sub(used), rng);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(kind: TrackKind) -> Stamp {
        Stamp {
            kind,
            stream: 7,
            seq: 1234,
            sent_us: 9_876_543,
        }
    }

    #[test]
    fn audio_payload_round_trips_and_has_the_asked_size() {
        let mut rng = Rng::new(1);
        let mut buf = Vec::new();
        write_audio(&mut buf, &stamp(TrackKind::Audio), 83, &mut rng);
        assert_eq!(buf.len(), 83);
        assert_eq!(buf[0], OPUS_TOC);
        assert_eq!(parse_stamp(&buf), Some(stamp(TrackKind::Audio)));
        let mut small = Vec::new();
        write_audio(&mut small, &stamp(TrackKind::Audio), DTX_SIZE, &mut rng);
        assert_eq!(small.len(), DTX_SIZE);
        assert_eq!(parse_stamp(&small), Some(stamp(TrackKind::Audio)));
    }

    #[test]
    fn audio_is_about_32_kbps_while_talking_with_dtx_silences() {
        let mut src = AudioSource::new(42);
        let (mut bytes, mut packets, mut slots) = (0usize, 0u64, 0u64);
        let mut talk_bytes = 0usize;
        let mut talk_packets = 0usize;
        let mut silent_gaps = 0;
        let mut since_last = 0;
        for _ in 0..50 * 600 {
            slots += 1;
            since_last += 1;
            if let Some(p) = src.tick() {
                bytes += p.size;
                packets += 1;
                if p.size > DTX_SIZE {
                    talk_bytes += p.size;
                    talk_packets += 1;
                }
                if since_last > 1 {
                    silent_gaps += 1;
                }
                since_last = 0;
            }
        }
        let talk_kbps = talk_bytes as f64 * 8.0 / (talk_packets as f64 * 0.02) / 1000.0;
        assert!((28.0..36.0).contains(&talk_kbps), "{talk_kbps}");
        assert!(
            silent_gaps > 100,
            "DTX silences expected, saw {silent_gaps}"
        );
        assert!(packets < slots, "silence sends fewer packets");
        let avg_kbps = bytes as f64 * 8.0 / (slots as f64 * 0.02) / 1000.0;
        assert!((10.0..32.0).contains(&avg_kbps), "{avg_kbps}");
    }

    #[test]
    fn speakers_take_turns_and_only_the_floor_holder_talks() {
        let n = 5;
        for t in (0..60_000u64).step_by(250) {
            let holders = (0..n).filter(|k| holds_floor(*k, n, t, 4000)).count();
            assert_eq!(holders, 1, "exactly one speaker at {t} ms");
        }
        assert!(holds_floor(0, 5, 0, 4000) && holds_floor(1, 5, 4000, 4000));
        assert!(holds_floor(0, 5, 20_000, 4000), "round again");
        let mut src = AudioSource::new(1);
        let (mut talk, mut quiet) = (0, 0);
        for slot in 0..500 {
            let on = slot < 250;
            match src.tick_with(Some(on)) {
                Some(p) if p.size > DTX_SIZE => {
                    assert!(on);
                    talk += 1;
                }
                Some(_) => {
                    assert!(!on);
                    quiet += 1;
                }
                None => assert!(!on),
            }
        }
        assert_eq!(talk, 250, "one packet per 20 ms while holding the floor");
        assert!((10..=15).contains(&quiet), "DTX only while silent: {quiet}");
    }

    #[test]
    fn audio_timestamps_advance_960_per_slot_even_in_silence() {
        let mut src = AudioSource::new(3);
        let mut last: Option<(u64, u32)> = None;
        for slot in 0..2000u64 {
            if let Some(p) = src.tick() {
                if let Some((s, ts)) = last {
                    let steps = (slot - s) as u32;
                    assert_eq!(p.rtp_ts.wrapping_sub(ts), steps * AUDIO_TS_STEP);
                }
                last = Some((slot, p.rtp_ts));
            }
        }
    }

    /// The server's check (crates/sfu/src/keyframe.rs), restated: S bit, partition 0, and the
    /// frame tag's P bit clear after the descriptor.
    fn sfu_says_keyframe(p: &[u8]) -> bool {
        let first = p[0];
        if first & 0x10 == 0 || first & 0x07 != 0 {
            return false;
        }
        let mut i = 1;
        if first & 0x80 != 0 {
            let x = p[1];
            i += 1;
            if x & 0x80 != 0 {
                i += if p[i] & 0x80 != 0 { 2 } else { 1 };
            }
            if x & 0x40 != 0 {
                i += 1;
            }
            if x & 0x30 != 0 {
                i += 1;
            }
        }
        p[i] & 0x01 == 0
    }

    #[test]
    fn video_packets_have_valid_vp8_descriptors_and_keyframes_are_detectable() {
        let profile = VideoProfile::by_name("sd").unwrap();
        let mut src = VideoSource::new(profile, 9);
        let mut rng = Rng::new(2);
        let mut seq = 0;
        for n in 0..200 {
            let frame = src.next_frame();
            assert_eq!(frame.keyframe, n % 90 == 0, "frame {n}");
            let total: usize = (0..frame.packets).map(|i| frame.packet_size(i)).sum();
            assert_eq!(total, frame.bytes);
            for i in 0..frame.packets {
                let mut buf = Vec::new();
                let st = Stamp {
                    kind: TrackKind::Video,
                    stream: 3,
                    seq,
                    sent_us: 5,
                };
                write_video(&mut buf, &frame, i, &profile, &st, &mut rng);
                assert_eq!(buf.len(), frame.packet_size(i));
                assert!(buf.len() <= MAX_VIDEO_PAYLOAD);
                assert_eq!(buf[0] & 0x80, 0x80, "X bit");
                assert_eq!(buf[0] & 0x10 != 0, i == 0, "S bit only on the first packet");
                assert_eq!(buf[0] & 0x07, 0, "partition 0");
                let pid = u16::from_be_bytes([buf[2], buf[3]]) & 0x7fff;
                assert_eq!(pid, frame.picture_id);
                assert_eq!(sfu_says_keyframe(&buf), frame.keyframe && i == 0);
                if i == 0 && frame.keyframe {
                    assert_eq!(&buf[7..10], &[0x9d, 0x01, 0x2a], "start code");
                    assert_eq!(u16::from_le_bytes([buf[10], buf[11]]), 640);
                }
                assert_eq!(parse_stamp(&buf), Some(st));
                seq += 1;
            }
        }
    }

    #[test]
    fn video_meets_its_bitrate_and_keyframes_are_larger() {
        for profile in VideoProfile::ALL {
            let mut src = VideoSource::new(profile, 5);
            let seconds = 30;
            let frames: Vec<VideoFrame> = (0..profile.fps * seconds)
                .map(|_| src.next_frame())
                .collect();
            let bytes: usize = frames.iter().map(|f| f.bytes).sum();
            let kbps = bytes as f64 * 8.0 / f64::from(seconds) / 1000.0;
            let target = f64::from(profile.bitrate) / 1000.0;
            assert!(
                (kbps - target).abs() / target < 0.1,
                "{}: {kbps} kbps vs {target}",
                profile.name
            );
            let key: Vec<_> = frames.iter().filter(|f| f.keyframe).collect();
            assert_eq!(key.len() as u32, seconds.div_ceil(profile.keyframe_secs));
            let delta_mean = frames
                .iter()
                .filter(|f| !f.keyframe)
                .map(|f| f.bytes)
                .sum::<usize>()
                / frames.iter().filter(|f| !f.keyframe).count();
            assert!(
                key.iter().all(|f| f.bytes > 3 * delta_mean),
                "{}",
                profile.name
            );
        }
    }

    #[test]
    fn a_keyframe_request_makes_the_next_frame_a_keyframe() {
        let mut src = VideoSource::new(VideoProfile::by_name("hd").unwrap(), 1);
        assert!(src.next_frame().keyframe);
        assert!(!src.next_frame().keyframe);
        src.request_keyframe();
        assert!(src.next_frame().keyframe);
        assert!(!src.next_frame().keyframe);
    }

    #[test]
    fn simulcast_layers_scale_the_profile_and_name_their_stream() {
        let hd = VideoProfile::by_name("hd").unwrap();
        let kbps: Vec<u32> = (0..3).map(|l| hd.layer(l).bitrate / 1000).collect();
        assert_eq!(kbps, vec![1500, 500, 150]);
        assert_eq!((hd.layer(2).width, hd.layer(2).height), (320, 180));
        assert_eq!(hd.layer(0), hd);
        let id = layer_stream(41, 2);
        assert_ne!(id, 41);
        assert_eq!(stream_layer(id), (41, 2));
        assert_eq!(stream_layer(41), (41, 0));
    }

    #[test]
    fn garbage_has_no_stamp() {
        assert_eq!(parse_stamp(&[]), None);
        assert_eq!(parse_stamp(&[0x10, 0x00, 1, 2, 3]), None);
        assert_eq!(parse_stamp(&[OPUS_TOC; 40]), None);
    }
}
