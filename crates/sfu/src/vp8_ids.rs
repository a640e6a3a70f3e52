//! VP8 picture numbering for one subscriber's view of one video track, continuous across
//! switches of its source (simulcast layers, pauses).
//!
//! Each simulcast layer numbers its pictures on its own (the VP8 payload descriptor's 15-bit
//! PictureID and 8-bit TL0PICIDX, from a random start). A receiver that is switched from one
//! layer to another at a keyframe sees those numbers jump; when they jump *back*, Chrome's
//! VP8 reference finder keeps what it learnt of the higher numbers and drops every
//! base-layer frame of the new layer as old, so the picture freezes for seconds — its
//! keyframe requests do not help — until the new layer's numbers pass the old ones. (Seen
//! in the network browser test: stalls of 3 s repeated up to 9 s after layer switches on
//! links with no loss.) Like other SFUs, we renumber: at each new segment (the munger's
//! keyframe start), the output continues from the last numbers sent, and the rest of the
//! segment keeps the same offset.
//!
//! [`Vp8Ids::rewrite`] takes the packet's numbers and the munger's segment and returns the
//! numbers to write, or `None` when they are unchanged (no patch needed: the common case of
//! a subscriber that never switched). Plain arithmetic: no allocation, no I/O.

/// PictureID is 15 bits (the 7-bit form is left alone).
const PID_MASK: u16 = 0x7fff;
/// How far ahead of the last numbers sent a new segment's may start and keep the offsets
/// in force (a pause of up to a few minutes); further, or behind, they are renumbered.
const NEAR_PID: u16 = 0x1000;
const NEAR_TL0: u8 = 0x40;

/// The numbers a VP8 payload descriptor carries (only those this rewrites).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Numbers {
    /// 15-bit PictureID, when present in that form.
    pub picture_id: Option<u16>,
    /// TL0PICIDX, when present.
    pub tl0_pic_idx: Option<u8>,
}

impl Vp8Numbers {
    /// Reads the numbers from a VP8 RTP payload (RFC 7741 payload descriptor); empty for a
    /// payload too short or without them.
    pub fn parse(payload: &[u8]) -> Vp8Numbers {
        let mut out = Vp8Numbers::default();
        let Some(&first) = payload.first() else {
            return out;
        };
        if first & 0x80 == 0 {
            return out;
        }
        let Some(&x) = payload.get(1) else {
            return out;
        };
        let mut i = 2;
        if x & 0x80 != 0 {
            let Some(&hi) = payload.get(i) else {
                return out;
            };
            if hi & 0x80 != 0 {
                let Some(&lo) = payload.get(i + 1) else {
                    return out;
                };
                out.picture_id = Some((u16::from(hi & 0x7f) << 8) | u16::from(lo));
                i += 2;
            } else {
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            out.tl0_pic_idx = payload.get(i).copied();
        }
        out
    }
}

/// Whether 15-bit PictureID `a` comes after `b` (by less than half the number space).
fn pid_ahead(a: u16, b: u16) -> bool {
    (1..0x4000).contains(&(a.wrapping_sub(b) & PID_MASK))
}

/// Whether TL0PICIDX `a` comes after `b`.
fn tl0_ahead(a: u8, b: u8) -> bool {
    (1..0x80).contains(&a.wrapping_sub(b))
}

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vp8Ids {
    /// The munger segment the offsets were set for.
    segment: u32,
    pid_offset: u16,
    tl0_offset: u8,
    /// The most recent (furthest ahead) numbers sent.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8Ids {
    /// The numbers to write for a forwarded packet whose descriptor carries `input`, sent in
    /// the munger's `segment` (see [`crate::munger::Munger::segment`]); `None` when they
    /// are the input's own.
    pub fn rewrite(&mut self, segment: u32, input: Vp8Numbers) -> Option<Vp8Numbers> {
        let pid = input.picture_id?;
        if segment != self.segment {
            // The first packet of a new segment (a keyframe). Where the offsets in force
            // already carry its numbers a little ahead of what was sent (a pause and resume of the
            // same layer, whose numbers went on meanwhile), they stay — for most
            // subscribers that is no rewrite at all; where the numbers would go back (or
            // not move), they continue from the last sent.
            self.segment = segment;
            if let Some(last) = self.last_pid {
                let out = pid.wrapping_add(self.pid_offset) & PID_MASK;
                if !(1..NEAR_PID).contains(&(out.wrapping_sub(last) & PID_MASK)) {
                    self.pid_offset = last.wrapping_add(1).wrapping_sub(pid) & PID_MASK;
                }
            }
            if let (Some(last), Some(t)) = (self.last_tl0, input.tl0_pic_idx) {
                if !(1..NEAR_TL0).contains(&t.wrapping_add(self.tl0_offset).wrapping_sub(last)) {
                    self.tl0_offset = last.wrapping_add(1).wrapping_sub(t);
                }
            }
        }
        let out_pid = pid.wrapping_add(self.pid_offset) & PID_MASK;
        let out = Vp8Numbers {
            picture_id: Some(out_pid),
            tl0_pic_idx: input.tl0_pic_idx.map(|t| t.wrapping_add(self.tl0_offset)),
        };
        if self.last_pid.is_none_or(|last| pid_ahead(out_pid, last)) {
            self.last_pid = Some(out_pid);
        }
        if let Some(t) = out.tl0_pic_idx {
            if self.last_tl0.is_none_or(|last| tl0_ahead(t, last)) {
                self.last_tl0 = Some(t);
            }
        }
        (self.pid_offset != 0 || self.tl0_offset != 0).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nums(pid: u16, tl0: u8) -> Vp8Numbers {
        Vp8Numbers {
            picture_id: Some(pid),
            tl0_pic_idx: Some(tl0),
        }
    }

    #[test]
    fn parses_the_15_bit_picture_id_and_tl0picidx() {
        // X=1, S=1; I=1 L=1 T=1; PictureID 0x1234 (M=1); TL0PICIDX 7; TID byte.
        let p = [0x90, 0xe0, 0x80 | 0x12, 0x34, 7, 0x20, 0x9d];
        assert_eq!(Vp8Numbers::parse(&p), nums(0x1234, 7));
        // 7-bit PictureID: not rewritten, TL0PICIDX still read.
        let p = [0x90, 0xc0, 0x12, 9];
        assert_eq!(
            Vp8Numbers::parse(&p),
            Vp8Numbers {
                picture_id: None,
                tl0_pic_idx: Some(9)
            }
        );
        assert_eq!(Vp8Numbers::parse(&[0x10, 0x00]), Vp8Numbers::default());
        assert_eq!(
            Vp8Numbers::parse(&[0x90, 0x80, 0x80]),
            Vp8Numbers::default()
        );
    }

    #[test]
    fn the_first_segment_is_left_as_it_is() {
        let mut ids = Vp8Ids::default();
        assert_eq!(ids.rewrite(1, nums(500, 3)), None);
        assert_eq!(ids.rewrite(1, nums(501, 4)), None);
    }

    #[test]
    fn a_switch_to_a_layer_numbered_lower_continues_the_numbering() {
        let mut ids = Vp8Ids::default();
        for pid in 20_000..20_010 {
            ids.rewrite(1, nums(pid, (pid % 256) as u8));
        }
        // Layer switch at a keyframe numbered far lower.
        let out = ids.rewrite(2, nums(3_000, 40)).unwrap();
        assert_eq!(out.picture_id, Some(20_010));
        assert_eq!(out.tl0_pic_idx, Some((20_009 % 256) as u8 + 1));
        let out = ids.rewrite(2, nums(3_001, 41)).unwrap();
        assert_eq!(out.picture_id, Some(20_011));
        // A packet of the same picture (or a late one) keeps the segment's offset.
        let out = ids.rewrite(2, nums(3_000, 40)).unwrap();
        assert_eq!(out.picture_id, Some(20_010));
        // And the next switch continues from the furthest sent.
        let out = ids.rewrite(3, nums(32_760, 0)).unwrap();
        assert_eq!(out.picture_id, Some(20_012));
    }

    #[test]
    fn a_resume_of_the_same_layer_needs_no_rewrite() {
        let mut ids = Vp8Ids::default();
        ids.rewrite(1, nums(700, 10));
        ids.rewrite(1, nums(701, 10));
        // Paused, then resumed at a keyframe of the same layer: its numbers went on.
        assert_eq!(ids.rewrite(2, nums(760, 25)), None);
        // A switch that does need an offset keeps it through a later resume.
        let out = ids.rewrite(3, nums(100, 3)).unwrap();
        assert_eq!(out, nums(761, 26));
        let out = ids.rewrite(4, nums(150, 9)).unwrap();
        assert_eq!(
            out,
            nums(811, 32),
            "the offset in force still moves it ahead"
        );
    }

    #[test]
    fn numbers_wrap() {
        let mut ids = Vp8Ids::default();
        ids.rewrite(1, nums(PID_MASK, 255));
        let out = ids.rewrite(2, nums(20_000, 200)).unwrap();
        assert_eq!(out, nums(0, 0));
        let out = ids.rewrite(2, nums(20_001, 201)).unwrap();
        assert_eq!(out, nums(1, 1));
    }
}
