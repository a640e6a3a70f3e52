//! Plenary's forwarding core: rooms, tracks, subscriptions, and the per-packet decision of
//! who gets which RTP packet with which sequence number and timestamp.
//!
//! # Layout
//! - [`room`]: one room's state machine — joins, publications, subscriptions, fan-out,
//!   keyframe-request rate limiting, pause/resume and stream switching.
//! - [`munger`]: rewriting of sequence numbers and timestamps so that each subscriber sees
//!   one continuous stream across pauses, simulcast-layer and source switches.
//! - [`loss_cap`]: a cap on a subscriber's estimate from reported loss (policed links).
//! - [`overload`]: a shard's load level and what it sheds (thumbnails, then video, then joins).
//! - [`red`]: audio redundancy (RFC 2198) for listeners on lossy links.
//! - [`keyframe`]: codec peeks (VP8, VP9, H.264, AV1) that find where a decoder may start.
//! - [`allocator`]: one subscriber's video allocation — which simulcast layer of each track
//!   its downlink estimate carries, in priority order, with hysteresis and probe targets.
//! - [`speakers`]: one room's loudest-K audio selection and dominant speaker, from the
//!   RFC 6464 audio levels of the packets.
//!
//! # Contract
//! Sans-IO: no sockets, no threads, no async runtime, no clock. Callers feed events in with
//! `handle_*` (passing the time as an `Instant`), and drain decisions with `poll_*` or from
//! the `Forward` buffer they pass in. Tests drive it packet by packet in simulated time.
//! Nothing here allocates per forwarded packet once buffers have grown.

pub mod allocator;
pub mod keyframe;
pub mod loss_cap;
pub mod munger;
pub mod overload;
pub mod red;
pub mod room;
pub mod speakers;
pub mod vp8_ids;

pub use allocator::{
    Allocator, AllocatorConfig, AllocatorError, AllocatorEvent, BitrateTarget, Decision,
    PauseReason, Tile, TrackPriority, VideoLayer,
};
pub use keyframe::VideoCodec;
pub use loss_cap::LossCap;
pub use overload::{Level as OverloadLevel, Overload, OverloadConfig};
pub use red::{RedEncoder, RedPolicy};
pub use room::{
    Forward, Media, ParticipantKey, Room, RoomConfig, RoomError, RoomEvent, RoomStats, RtpIn,
    TrackKey, MAX_LAYERS,
};
pub use speakers::{SpeakerEvent, Speakers, SpeakersConfig, SpeakersError};
pub use vp8_ids::{Vp8Ids, Vp8Numbers};
