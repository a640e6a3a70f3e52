//! Audio redundancy as a browser receives it (RFC 2198 RED, `red/48000/2`, fmtp `111/111`).
//!
//! A RED payload is a chain of 4-byte block headers `F=1 | block PT (7) | timestamp offset
//! (14) | block length (10)`, one per redundant block, then a 1-byte header `F=0 | PT (7)`
//! for the primary; then the redundant blocks' payloads in order, then the primary's. A
//! redundant block with timestamp offset `o` repeats the packet whose RTP timestamp is
//! `ts - o`: the server repeats only the one or two packets just before (consecutive
//! sequence numbers of one source), so a block tells which earlier sequence number it
//! repairs ([`block_distance`]).
//!
//! No allocation: [`parse`] returns the block positions in a fixed array.

use std::ops::Range;

use crate::synth::AUDIO_TS_STEP;

/// Most redundant blocks a RED payload may carry (more: rejected). The server sends two at
/// most; browsers one.
pub const MAX_BLOCKS: usize = 4;
/// Most packets back a redundant block is taken to repeat (the server's limit is 2).
pub const MAX_DISTANCE: u64 = 3;

/// One redundant block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedBlock {
    /// Its payload type (the codec's, e.g. Opus 111).
    pub pt: u8,
    /// How much earlier its RTP timestamp is than the packet's (14 bits).
    pub ts_offset: u32,
    /// Where its payload starts in the RED payload.
    pub start: usize,
    /// Its length (10 bits).
    pub len: usize,
}

impl RedBlock {
    /// Its bytes in `payload`.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }
}

/// A parsed RED payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedPayload {
    blocks: [RedBlock; MAX_BLOCKS],
    count: usize,
    /// The primary's payload type.
    pub primary_pt: u8,
    /// Where the primary's payload starts (it runs to the end).
    pub primary_start: usize,
}

impl RedPayload {
    /// The redundant blocks, oldest first.
    pub fn blocks(&self) -> &[RedBlock] {
        &self.blocks[..self.count]
    }

    /// The primary's bytes in `payload` (the RED payload it was parsed from).
    pub fn primary<'a>(&self, payload: &'a [u8]) -> &'a [u8] {
        payload.get(self.primary_start..).unwrap_or(&[])
    }
}

/// Parses a RED payload (padding already removed). `None` if it is not well-formed: a
/// truncated header, blocks longer than the payload, or more than [`MAX_BLOCKS`] blocks.
pub fn parse(payload: &[u8]) -> Option<RedPayload> {
    let mut r = RedPayload::default();
    let mut at = 0usize;
    let mut data = 0usize;
    loop {
        let first = *payload.get(at)?;
        if first & 0x80 == 0 {
            r.primary_pt = first & 0x7f;
            at += 1;
            break;
        }
        let h = payload.get(at..at + 4)?;
        if r.count == MAX_BLOCKS {
            return None;
        }
        let word = u32::from_be_bytes([0, h[1], h[2], h[3]]);
        r.blocks[r.count] = RedBlock {
            pt: first & 0x7f,
            ts_offset: word >> 10,
            start: 0,
            len: (word & 0x3ff) as usize,
        };
        data += r.blocks[r.count].len;
        r.count += 1;
        at += 4;
    }
    if at + data > payload.len() {
        return None;
    }
    for b in &mut r.blocks[..r.count] {
        b.start = at;
        at += b.len;
    }
    r.primary_start = at;
    Some(r)
}

/// How many packets before the RED packet a redundant block repeats, or `None` if it does
/// not look like one of the few packets just before (then it is ignored).
///
/// From the timestamp offset: 20 ms Opus frames are 960 apart, so an offset of 960·k is the
/// packet k sequence numbers earlier (k ≤ [`MAX_DISTANCE`]). With DTX the packet before may
/// be more than 20 ms earlier; when both payloads carry the load tester's stamp, `stamps`
/// (the primary's and the block's per-stream packet counters) give the distance instead,
/// and the offset must only be at least that many frames.
pub fn block_distance(ts_offset: u32, stamps: Option<(u32, u32)>) -> Option<u64> {
    if ts_offset == 0 || !ts_offset.is_multiple_of(AUDIO_TS_STEP) {
        return None;
    }
    let frames = u64::from(ts_offset / AUDIO_TS_STEP);
    let k = match stamps {
        Some((primary, block)) => {
            let d = u64::from(primary.wrapping_sub(block));
            (d <= frames).then_some(d)?
        }
        None => frames,
    };
    (1..=MAX_DISTANCE).contains(&k).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RED payload as the server writes it: blocks `(offset, bytes)`, oldest first.
    fn red(blocks: &[(u32, &[u8])], primary: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (offset, data) in blocks {
            out.push(0x80 | 111);
            let word = (offset << 10) | data.len() as u32;
            out.extend_from_slice(&word.to_be_bytes()[1..]);
        }
        out.push(111);
        for (_, data) in blocks {
            out.extend_from_slice(data);
        }
        out.extend_from_slice(primary);
        out
    }

    #[test]
    fn red_payloads_with_zero_one_and_two_blocks_parse() {
        let p = red(&[], b"primary");
        let r = parse(&p).unwrap();
        assert!(r.blocks().is_empty());
        assert_eq!(r.primary_pt, 111);
        assert_eq!(r.primary(&p), b"primary");

        let p = red(&[(960, b"one")], b"now");
        let r = parse(&p).unwrap();
        assert_eq!(r.blocks().len(), 1);
        let b = r.blocks()[0];
        assert_eq!((b.pt, b.ts_offset, b.len), (111, 960, 3));
        assert_eq!(&p[b.range()], b"one");
        assert_eq!(r.primary(&p), b"now");

        let p = red(&[(1920, b"older"), (960, b"old")], b"new!");
        let r = parse(&p).unwrap();
        let offsets: Vec<u32> = r.blocks().iter().map(|b| b.ts_offset).collect();
        assert_eq!(offsets, vec![1920, 960]);
        assert_eq!(&p[r.blocks()[0].range()], b"older");
        assert_eq!(&p[r.blocks()[1].range()], b"old");
        assert_eq!(r.primary(&p), b"new!");

        // The largest offset and length the header can hold.
        let big = vec![7u8; 1023];
        let p = red(&[(16_383, &big)], b"");
        let r = parse(&p).unwrap();
        assert_eq!(r.blocks()[0].ts_offset, 16_383);
        assert_eq!(r.blocks()[0].len, 1023);
        assert!(r.primary(&p).is_empty());
    }

    #[test]
    fn truncated_or_garbage_red_payloads_are_rejected() {
        assert!(parse(&[]).is_none());
        let p = red(&[(1920, b"older"), (960, b"old")], b"new!");
        // Cut anywhere inside the headers or the redundant blocks.
        for cut in 0..9 + 8 {
            assert!(parse(&p[..cut]).is_none(), "cut at {cut}");
        }
        // Cut into the primary only: still well-formed, a shorter primary.
        assert_eq!(
            parse(&p[..p.len() - 1]).unwrap().primary(&p[..p.len() - 1]),
            b"new"
        );
        // Block lengths longer than the payload.
        assert!(parse(&[0x80 | 111, 0x00, 0x0f, 0xff, 111, 1, 2, 3]).is_none());
        // Only F=1 headers, never a primary header.
        assert!(parse(&[0xff; 64]).is_none());
        // Too many blocks.
        let five: Vec<(u32, &[u8])> = (0..5).map(|_| (960, &b"x"[..])).collect();
        assert!(parse(&red(&five, b"p")).is_none());
        // Random bytes: no panic, whatever the answer.
        let mut x = 0x1234_5678u32;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Some(r) = parse(&buf) {
                for b in r.blocks() {
                    assert!(b.range().end <= buf.len());
                }
                let _ = r.primary(&buf);
            }
        }
    }

    #[test]
    fn block_distances_come_from_offsets_or_stamps() {
        assert_eq!(block_distance(960, None), Some(1));
        assert_eq!(block_distance(1920, None), Some(2));
        assert_eq!(block_distance(2880, None), Some(3));
        assert_eq!(block_distance(3840, None), None, "too far back");
        assert_eq!(block_distance(0, None), None);
        assert_eq!(block_distance(961, None), None, "not whole frames");
        assert_eq!(block_distance(480, None), None);
        // Stamps: after a DTX gap the packet just before is 3 frames earlier.
        assert_eq!(block_distance(2880, Some((41, 40))), Some(1));
        assert_eq!(block_distance(960, Some((41, 40))), Some(1));
        assert_eq!(block_distance(1920, Some((42, 40))), Some(2));
        assert_eq!(
            block_distance(960, Some((42, 40))),
            None,
            "two packets cannot be one frame apart"
        );
        assert_eq!(block_distance(960, Some((40, 40))), None);
        assert_eq!(block_distance(960, Some((39, 40))), None, "from the future");
        assert_eq!(block_distance(16_320, Some((45, 40))), None, "too far back");
    }
}
