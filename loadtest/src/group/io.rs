//! The group's I/O: reading every ready datagram into the arena and feeding it to its
//! peer, and draining a peer connection (events, received RTP, datagrams to send).

use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use plenary_proto::TrackKind;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot};

use super::batch::{recv_batch, Batch};
use super::{GroupCmd, GroupShared, Latencies, Live, RxStream, Slot};
use crate::netem::Verdict;
use crate::stats::StreamRx;
use crate::synth;

/// Datagrams read from one socket before the others get a turn.
const READ_BUDGET: usize = 64;

/// Takes every ready command and datagram. Returns whether anything arrived.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_inputs(
    cx: &mut std::task::Context<'_>,
    cmd_rx: &mut mpsc::Receiver<GroupCmd>,
    slots: &mut [Option<Slot>],
    arena: &mut BytesMut,
    cmds: &mut Vec<GroupCmd>,
    shared: &GroupShared,
    latency: &mut Latencies,
    batch: &mut Batch,
    read: &mut u64,
) -> bool {
    let mut progressed = false;
    while cmds.len() < 256 {
        match cmd_rx.poll_recv(cx) {
            Poll::Ready(Some(cmd)) => {
                cmds.push(cmd);
                progressed = true;
            }
            // All senders gone: finish with nobody to tell.
            Poll::Ready(None) => {
                let (tx, _rx) = oneshot::channel();
                cmds.push(GroupCmd::Finish(tx));
                progressed = true;
                break;
            }
            Poll::Pending => break,
        }
    }
    for slot in slots.iter_mut().flatten() {
        if slot.fast.is_some() {
            if read_batches(cx, slot, shared, latency, batch, read) {
                progressed = true;
            }
            continue;
        }
        let mut budget = READ_BUDGET;
        while let Poll::Ready(Ok(())) = slot.peer.socket.poll_recv_ready(cx) {
            if arena.capacity() - arena.len() < 2048 {
                arena.reserve(64 * 1024);
            }
            match slot.peer.socket.try_recv_buf_from(arena) {
                Ok((_, from)) => {
                    let now = Instant::now();
                    slot.datagrams_in += 1;
                    slot.remote = Some(from);
                    progressed = true;
                    budget -= 1;
                    if budget == 0 {
                        cx.waker().wake_by_ref();
                    }
                    if let Some(shaper) = slot.shaper.as_mut() {
                        let now_us = now.saturating_duration_since(shared.epoch).as_micros() as u64;
                        match shaper.admit(arena.len(), now_us) {
                            Verdict::Now => {}
                            Verdict::Later(due) => {
                                shaper.push(due, arena);
                                arena.clear();
                            }
                            Verdict::Lost | Verdict::QueueFull => arena.clear(),
                        }
                    }
                    if let Some(t) = slot.tunnel.as_mut().filter(|t| t.server() == from) {
                        // Through the TURN relay: what it carries comes from the server.
                        let mut relayed = std::mem::take(&mut slot.relayed);
                        t.handle_read(now, arena.split(), |peer, payload| {
                            relayed.push((peer, payload))
                        });
                        flush_tunnel(&slot.peer.socket, t);
                        for (peer, payload) in relayed.drain(..) {
                            slot.remote = Some(peer);
                            to_rtc(slot, payload, peer, now);
                        }
                        slot.relayed = relayed;
                    } else if !arena.is_empty() {
                        if fast_path(slot, arena, now, shared, latency) {
                            arena.clear();
                        } else {
                            to_rtc(slot, arena.split(), from, now);
                        }
                    }
                    if budget == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            }
        }
    }
    progressed
}

/// The fast path's reading: whole batches per system call, kernel arrival times.
fn read_batches(
    cx: &mut std::task::Context<'_>,
    slot: &mut Slot,
    shared: &GroupShared,
    latency: &mut Latencies,
    batch: &mut Batch,
    read: &mut u64,
) -> bool {
    let mut progressed = false;
    let mut budget = READ_BUDGET;
    while let Poll::Ready(Ok(())) = slot.peer.socket.poll_recv_ready(cx) {
        let n = match recv_batch(&slot.peer.socket, batch) {
            Ok(n) => n,
            Err(_) => break,
        };
        let now = Instant::now();
        for i in 0..n {
            let len = batch.lens[i];
            let Some(from) = batch.from[i] else {
                continue;
            };
            // The kernel's receive time (it may be earlier than now: the group woke late).
            let at = batch.at_ns[i]
                .and_then(|ns| (ns / 1000).checked_sub(shared.epoch_unix_us))
                .map_or(now, |us| {
                    (shared.epoch + std::time::Duration::from_micros(us)).min(now)
                });
            slot.datagrams_in += 1;
            slot.remote = Some(from);
            *read += 1;
            progressed = true;
            let datagram = &mut batch.bufs[i][..len];
            if let Some(shaper) = slot.shaper.as_mut() {
                let at_us = at.saturating_duration_since(shared.epoch).as_micros() as u64;
                match shaper.admit(len, at_us) {
                    Verdict::Now => {}
                    Verdict::Later(due) => {
                        shaper.push(due, datagram);
                        continue;
                    }
                    Verdict::Lost | Verdict::QueueFull => continue,
                }
            }
            if !fast_path(slot, datagram, at, shared, latency) {
                to_rtc(slot, BytesMut::from(&datagram[..]), from, at);
            }
        }
        budget = budget.saturating_sub(n.max(1));
        if budget == 0 {
            cx.waker().wake_by_ref();
            break;
        }
    }
    progressed
}

/// Hands a datagram to webrtc-rs.
pub(super) fn to_rtc(slot: &mut Slot, message: BytesMut, from: std::net::SocketAddr, now: Instant) {
    let msg = TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: slot.peer.local_addr,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message,
    };
    let _ = slot.peer.pc.handle_read(msg);
    slot.dirty = true;
}

/// Delivers the datagrams a shaped downlink has due (see `netem`).
pub(super) fn release_shaped(
    slot: &mut Slot,
    now: Instant,
    buf: &mut Vec<u8>,
    shared: &GroupShared,
    latency: &mut Latencies,
) {
    let now_us = now.saturating_duration_since(shared.epoch).as_micros() as u64;
    let Some(from) = slot.remote else {
        return;
    };
    loop {
        let Some(shaper) = slot.shaper.as_mut() else {
            return;
        };
        if !shaper.pop_due(now_us, buf) {
            return;
        }
        if !fast_path(slot, buf, now, shared, latency) {
            to_rtc(slot, BytesMut::from(&buf[..]), from, now);
        }
    }
}

/// The fast receive path (see `fast`): RTP is accounted here and never reaches webrtc-rs;
/// RTCP is read for sender reports and then given to webrtc-rs like everything else. Returns
/// whether the datagram was consumed.
pub(super) fn fast_path(
    slot: &mut Slot,
    datagram: &mut [u8],
    now: Instant,
    shared: &GroupShared,
    latency: &mut Latencies,
) -> bool {
    let Some(fast) = slot.fast.as_mut() else {
        return false;
    };
    if !crate::rtprx::is_rtp_or_rtcp(datagram) {
        return false;
    }
    let at_us = now.saturating_duration_since(shared.epoch).as_micros() as u64;
    if let Some(capture) = slot.peer.capture.as_deref() {
        fast.ensure_keys(&mut slot.peer.pc, capture);
    }
    if crate::rtprx::is_rtcp(datagram) {
        fast.on_rtcp(datagram, at_us);
        return false;
    }
    let room = shared.plan[slot.pid].room;
    let seen = fast.on_rtp(datagram, at_us, &shared.plan, room);
    match seen.first_of {
        Some(TrackKind::Audio) => {
            slot.first_audio.get_or_insert(now);
        }
        Some(TrackKind::Video) => {
            slot.first_video.get_or_insert(now);
        }
        None => {}
    }
    if let Some(stamp) = seen.stamp {
        latency.record(stamp.kind, at_us.saturating_sub(stamp.sent_us));
    }
    true
}

/// Handles everything the peer connection has for us and sends what it wants sent.
/// Returns a failure reason if the join failed.
pub(super) fn drain(
    slot: &mut Slot,
    epoch: Instant,
    latency: &mut Latencies,
    live: &Live,
) -> Option<String> {
    let mut failed = None;
    let pc = &mut slot.peer.pc;
    while let Some(ev) = pc.poll_event() {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                RTCPeerConnectionState::Connected if slot.connected.is_none() => {
                    let now = Instant::now();
                    slot.connected = Some(now);
                    live.joined.fetch_add(1, Ordering::Relaxed);
                    if let Some(a) = slot.audio.as_mut() {
                        a.due = now;
                    }
                    for v in slot.video.iter_mut() {
                        v.due = now;
                    }
                }
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    let reason = format!("media connection {state}");
                    if slot.connected.is_some() {
                        slot.dropped.get_or_insert(reason);
                    } else {
                        failed = Some(reason);
                    }
                }
                _ => {}
            },
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                slot.receivers.push((init.track_id, init.receiver_id));
            }
            _ => {}
        }
    }
    while let Some(TaggedRTCMessage { now, message }) = pc.poll_read() {
        // RTCP stays in the interceptor chain; data-channel messages are not measured.
        let RTCMessage::RtpPacket(track_id, packet) = message else {
            continue;
        };
        // A RED packet (audio redundancy) is checked by its primary block. (Loss here is
        // counted from the stamps of primaries: what RED repairs is counted on the fast path.)
        let stamp = synth::parse_stamp(&packet.payload).or_else(|| {
            let r = crate::red::parse(&packet.payload)?;
            synth::parse_stamp(r.primary(&packet.payload))
        });
        let Some(stamp) = stamp else {
            slot.unknown_packets += 1;
            continue;
        };
        let at_us = now.saturating_duration_since(epoch).as_micros() as u64;
        let idx = match slot
            .streams
            .iter()
            .position(|s| s.rx.stream == stamp.stream)
        {
            Some(i) => i,
            None => {
                let receiver = slot
                    .receivers
                    .iter()
                    .find(|(t, _)| *t == track_id)
                    .map(|(_, r)| *r);
                slot.streams.push(RxStream {
                    rx: StreamRx::new(stamp.stream, stamp.kind, stamp.seq, at_us),
                    ssrc: packet.header.ssrc,
                    receiver,
                    lost_at_pli: 0,
                    last_pli: None,
                });
                slot.streams.len() - 1
            }
        };
        let s = &mut slot.streams[idx];
        s.ssrc = packet.header.ssrc;
        if s.receiver.is_none() {
            s.receiver = slot
                .receivers
                .iter()
                .find(|(t, _)| *t == track_id)
                .map(|(_, r)| *r);
        }
        if s.rx
            .on_packet(stamp.seq, stamp.sent_us, at_us, packet.payload.len())
        {
            latency.record(stamp.kind, at_us.saturating_sub(stamp.sent_us));
            match stamp.kind {
                TrackKind::Audio => slot.first_audio.get_or_insert(now),
                TrackKind::Video => slot.first_video.get_or_insert(now),
            };
        }
    }
    // Keyframe requests seen by the interceptor chain (see `keyframe_tap`).
    let requests = slot.peer.keyframe_requests.load(Ordering::Relaxed);
    if requests > slot.keyframe_requests {
        slot.keyframe_requests = requests;
        for v in slot.video.iter_mut() {
            v.src.request_keyframe();
        }
    }
    while let Some(out) = slot.peer.pc.poll_write() {
        send_out(slot, out.now, &out.message, out.transport.peer_addr);
    }
    failed
}

/// Sends what the peer connection wrote: straight to its destination, or through the TURN
/// relay with `--turn`.
pub(super) fn send_out(slot: &mut Slot, now: Instant, data: &[u8], dest: std::net::SocketAddr) {
    match slot.tunnel.as_mut() {
        Some(t) => {
            t.send(now, data, dest);
            flush_tunnel(&slot.peer.socket, t);
        }
        None => {
            let _ = slot.peer.socket.try_send_to(data, dest);
        }
    }
}

/// Sends what the TURN client has queued (allocation, permissions, relayed data).
pub(super) fn flush_tunnel(socket: &tokio::net::UdpSocket, t: &mut crate::turn::TurnTunnel) {
    while let Some((dest, bytes)) = t.poll_transmit() {
        let _ = socket.try_send_to(&bytes, dest);
    }
}
