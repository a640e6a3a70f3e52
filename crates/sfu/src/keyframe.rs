//! Codec-aware peeks into RTP payloads: does this packet start a keyframe?
//!
//! The forwarding core never decodes media; it only needs to know where a subscriber may
//! start (or switch) watching a video stream. These functions read a few header bytes and
//! never allocate.

/// Video codecs whose keyframes the core can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9 (draft-ietf-payload-vp9).
    Vp9,
    /// H.264 (RFC 6184).
    H264,
    /// AV1 (the AV1 RTP spec).
    Av1,
}

/// Whether `payload` (an RTP payload, header stripped) starts a keyframe.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_is_keyframe(payload),
        VideoCodec::Vp9 => vp9_is_keyframe(payload),
        VideoCodec::H264 => h264_is_keyframe(payload),
        VideoCodec::Av1 => av1_is_keyframe(payload),
    }
}

/// VP8: the offset of the VP8 frame header after the payload descriptor, when `payload`
/// starts partition 0 of a frame.
fn vp8_header_offset(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return None;
    }
    let mut i = 1;
    if extended {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let pid = *payload.get(i)?;
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    Some(i)
}

/// VP8: the picture size a keyframe announces (its frame header: 3-byte tag, start code
/// `9d 01 2a`, then 14-bit width and height), for telling simulcast layers apart.
pub fn vp8_dimensions(payload: &[u8]) -> Option<(u16, u16)> {
    let i = vp8_header_offset(payload)?;
    let h = payload.get(i..i + 10)?;
    if h[0] & 0x01 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let height = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

/// VP8: start of partition 0 and the frame header's P bit clear.
pub fn vp8_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = payload.get(i) else {
            return false;
        };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pid) = payload.get(i) else {
                return false;
            };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(i).is_some_and(|b| b & 0x01 == 0)
}

/// VP9: first packet of a frame (B) that is not inter-picture predicted (P clear).
pub fn vp9_is_keyframe(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0)
}

/// H.264: an IDR slice or SPS, alone, in a STAP-A, or starting an FU-A.
pub fn h264_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let is_key = |nal: u8| matches!(nal & 0x1f, 5 | 7);
    match first & 0x1f {
        24 => {
            // STAP-A: 16-bit sizes followed by NAL units.
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[i], payload[i + 1]]) as usize;
                if is_key(payload[i + 2]) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(*fu)),
        _ => is_key(first),
    }
}

/// AV1: the aggregation header's N bit (first packet of a coded video sequence).
pub fn av1_is_keyframe(payload: &[u8]) -> bool {
    payload.first().is_some_and(|b| b & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_tell_their_size() {
        // Descriptor (S, partition 0), tag with P clear, start code, 640 x 360.
        let key = [
            0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
        ];
        assert_eq!(vp8_dimensions(&key), Some((640, 360)));
        let delta = [
            0x10, 0x51, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
        ];
        assert_eq!(vp8_dimensions(&delta), None);
        assert_eq!(vp8_dimensions(&key[..6]), None, "too short");
        assert_eq!(vp8_dimensions(&[]), None);
    }

    #[test]
    fn vp8_plain_and_extended_descriptors() {
        // S=1, PID=0, then frame header with P=0.
        assert!(vp8_is_keyframe(&[0x10, 0x00]));
        assert!(!vp8_is_keyframe(&[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!vp8_is_keyframe(&[0x00, 0x00]));
        // X=1 with I=1 and a 15-bit picture id, then a keyframe header.
        assert!(vp8_is_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(!vp8_is_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x01]));
        // Truncated.
        assert!(!vp8_is_keyframe(&[0x90, 0x80]));
        assert!(!vp8_is_keyframe(&[]));
    }

    #[test]
    fn h264_single_stap_and_fu() {
        assert!(h264_is_keyframe(&[0x65]));
        assert!(!h264_is_keyframe(&[0x41]));
        // STAP-A carrying SPS.
        assert!(h264_is_keyframe(&[0x78, 0x00, 0x02, 0x67, 0x42]));
        // FU-A start of an IDR.
        assert!(h264_is_keyframe(&[0x7c, 0x85]));
        // FU-A continuation of an IDR is not a start.
        assert!(!h264_is_keyframe(&[0x7c, 0x05]));
    }

    #[test]
    fn vp9_and_av1() {
        assert!(vp9_is_keyframe(&[0x08]));
        assert!(!vp9_is_keyframe(&[0x48]));
        assert!(av1_is_keyframe(&[0x08]));
        assert!(!av1_is_keyframe(&[0x00]));
    }
}
