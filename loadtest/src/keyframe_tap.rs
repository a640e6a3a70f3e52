//! A webrtc-rs interceptor that notices keyframe requests (PLI, FIR) arriving at a
//! publisher. webrtc-rs keeps inbound RTCP inside its interceptor chain, so without this a
//! simulated camera would never hear the SFU ask for a keyframe, and new subscribers would
//! wait for the next periodic one. The tap counts requests in a shared counter, which the
//! group reads after each turn; everything passes through unchanged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Where the tap sits in the chain: it only observes, after the report and NACK
/// interceptors (see `rtc::interceptor::Slot`).
pub const SLOT: usize = 12_500;

/// Counts inbound PLI and FIR packets.
#[derive(Default)]
pub struct KeyframeTap {
    seen: Arc<AtomicU64>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl KeyframeTap {
    /// A tap that adds to `seen`.
    pub fn new(seen: Arc<AtomicU64>) -> KeyframeTap {
        KeyframeTap {
            seen,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let n = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .count();
            if n > 0 {
                self.seen.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeTap {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::shared::TransportContext;

    fn rtcp(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    #[test]
    fn counts_pli_and_fir_and_passes_everything_through() {
        let seen = Arc::new(AtomicU64::new(0));
        let mut tap = KeyframeTap::new(Arc::clone(&seen));
        tap.handle_read(rtcp(vec![
            Box::new(ReceiverReport::default()),
            Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: 2,
            }),
        ]))
        .unwrap();
        tap.handle_read(rtcp(vec![Box::new(FullIntraRequest::default())]))
            .unwrap();
        tap.handle_read(rtcp(vec![Box::new(ReceiverReport::default())]))
            .unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 2);
        assert_eq!(std::iter::from_fn(|| tap.poll_read()).count(), 3);
    }
}
