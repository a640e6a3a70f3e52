//! Per-subscriber video allocation: which simulcast layer of each video track one subscriber
//! receives, and which video it cannot receive at all, given its downlink.
//!
//! One [`Allocator`] per subscriber. It never sees a packet: the media driver feeds it
//!
//! - the subscriber's egress estimate, from str0m's
//!   `Event::EgressBitrateEstimate(BweKind::Twcc { estimate, can_probe })`
//!   ([`Allocator::handle_estimate`]); until the first one arrives the allocator assumes
//!   [`AllocatorConfig::initial_estimate`];
//! - the bits per second its audio needs ([`Allocator::set_audio_reserve`], e.g.
//!   [`AUDIO_TRACK_RESERVE`] per audio track it receives): audio is reserved first and never
//!   gives way to video;
//! - each video track it may receive ([`Allocator::add_track`]): a [`TrackPriority`], the
//!   [`Tile`] the client shows it in (hidden, or its size in device pixels, from the client's
//!   layout messages) and its [`VideoLayer`]s with the bitrates the driver measures on the
//!   publisher's incoming streams ([`Allocator::set_layers`], every second or so);
//! - the time, through [`Allocator::handle_timeout`] at [`Allocator::poll_timeout`].
//!
//! and drains [`AllocatorEvent`]s with [`Allocator::poll_event`] after each call:
//!
//! - [`AllocatorEvent::Track`] with a [`Decision`] when a track's target changes.
//!   `Decision::Layer(i)`: `Room::set_paused(subscriber, track, false)` and, with the stream
//!   (SSRC or RID) the driver knows for layer `i`,
//!   `Room::switch_stream(subscriber, track, <stream of layer i>)`, which takes effect at that
//!   stream's next keyframe (the room asks the publisher for one), so switching never freezes
//!   the picture. `Decision::Paused(_)`: `Room::set_paused(subscriber, track, true)`; for
//!   [`PauseReason::Bandwidth`] ([`Decision::is_paused_for_bandwidth`]) also tell the client
//!   "video paused for your connection", and take the notice back on the next `Layer`.
//! - [`AllocatorEvent::Bitrate`] with a [`BitrateTarget`]: pass it to
//!   `rtc.bwe().set_bitrate(minimum, desired)`. While video is paused or below the layer its
//!   tile deserves and str0m can probe, `desired` is the estimate the next upgrade needs, so
//!   str0m probes for it and the estimate can climb back.
//!
//! # How it decides
//! The video budget is the estimate less [`AllocatorConfig::headroom_percent`], less the audio
//! reserve ([`video_budget`]). Planning spends a budget in priority order (tracks sorted by
//! [`TrackPriority`], then by key): first the lowest available layer of every shown track,
//! so on-stage video is the last to be paused and thumbnails the first; then, in the same
//! order, layer by layer up to the layer that fits the tile ([`preferred_layer`]), never above.
//! A layer measured at 0 bit/s (the publisher stopped sending it) is never chosen.
//!
//! The plan is not applied wholesale each time, or layers would follow every wiggle of the
//! estimate:
//! - Constraints apply at once: a hidden track is paused, a track above what its tile needs
//!   comes down, and a track whose layer stopped arriving falls back to the next lower layer
//!   that still arrives.
//! - A new, newly shown, enlarged or re-prioritised track gets at once what the upgrade
//!   budget (margin included) plans for it; the other tracks keep their layers unless that
//!   plan gives them less.
//! - Downgrades: on a clean link an allocation within the headroom (above the budget,
//!   within the estimate less audio) stays, without upgrades. One that needs more than the
//!   estimate less audio for [`AllocatorConfig::downgrade_hold`], or at once when the
//!   estimate is below [`COLLAPSE_PERCENT`] of what is sent (video plus audio), comes down to
//!   the plan for the lowest estimate seen meanwhile. The hold is there because one overuse
//!   signal sets the estimate just below what is sent (0.85 × the acknowledged rate): a
//!   listener receiving exactly one camera's low layer lost it for seconds on every delay
//!   spike. On a lossy link ([`Allocator::handle_loss`] at [`LOSSY`] or more) the headroom is
//!   for retransmissions: an allocation within it comes down after the hold, and one above
//!   the estimate less audio at once.
//! - Upgrades: only while the estimate carries the upgrade with
//!   [`AllocatorConfig::upgrade_margin_percent`] to spare, continuously for the upgrade hold
//!   ([`AllocatorConfig::upgrade_hold`]), and then one step (one track, one layer) per
//!   [`AllocatorConfig::upgrade_step_interval`]. A downgrade soon after an upgrade (the
//!   upgrade overshot the link) doubles the hold, up to [`AllocatorConfig::max_upgrade_hold`],
//!   and until the backoff resets, about as much video as overshot (¾ of it or more) needs
//!   an estimate a quarter above the one it overshot on (less video, such as a paused
//!   thumbnail coming back, does not).
//!
//! The margin between the downgrade and upgrade thresholds is what keeps a noisy but steady
//! estimate from moving layers at all. No allocation ever exceeds the estimate less audio for
//! longer than the downgrade hold, nor what the collapse threshold allows at the end of a
//! call. Everything is integer arithmetic on the caller's numbers: deterministic,
//! no clock, no I/O, and no allocation once the track list has grown.

use std::time::{Duration, Instant};

use crate::TrackKey;

/// Bits per second to reserve for each audio track a subscriber receives (Opus at up to
/// 32 kbit/s plus RTP, SRTP and UDP overhead).
pub const AUDIO_TRACK_RESERVE: u64 = 40_000;

/// Most spatial layers a video track may have (simulcast: low, medium, high).
pub const MAX_LAYERS: usize = 3;

/// A downgrade this soon after an upgrade means the upgrade overshot the link.
const OVERSHOOT_WINDOW: Duration = Duration::from_secs(10);

/// After this long without a downgrade the upgrade hold returns to its configured value.
const BACKOFF_RESET: Duration = Duration::from_secs(30);

/// After an upgrade overshot the link, an upgrade to as much video again needs an estimate
/// this much (percent) above the one the failed upgrade was made on, until the backoff
/// resets. A link whose estimate collapses each time it is used (a keyframe burst into a
/// small queue on a short round trip: the load tester's 1.5 Mbit/s class) is otherwise
/// tried again and again, two layer changes each time.
const OVERSHOT_MARGIN_PERCENT: u64 = 25;

/// An estimate below this share (per cent) of what the subscriber is sent (its video
/// allocation plus audio) is a collapse: video comes down at once. Above it, a shortfall may
/// be one decrease of the estimator — libwebrtc's rule, which str0m follows, sets the estimate
/// to 0.85 × the acknowledged rate on a single overuse signal, so a subscriber sent exactly
/// what it needs finds itself just short after any delay spike — and it is waited out for the
/// downgrade hold. A real shortage keeps the estimator decreasing (0.85² is below this) or
/// shows as loss (which caps the estimate) within that time.
pub const COLLAPSE_PERCENT: u64 = 80;

/// Reported loss (a fraction) from which the link counts as lossy: an allocation within the
/// headroom then comes down after the hold, and one above the estimate less audio at once.
/// (A policer drops without delaying, so the delay-based estimate floats above what gets
/// through; keyframe bursts over it are lost, and the headroom is what retransmissions use.)
pub const LOSSY: f64 = 0.01;

/// How much a subscriber cares about a video track, most important first: a class is given
/// bandwidth before, and paused after, every class below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackPriority {
    /// On stage: the floor holder's camera (or the floor holder's screen share).
    Stage,
    /// The dominant speaker (see [`crate::speakers`]).
    Speaker,
    /// Pinned by the subscriber.
    Pinned,
    /// A screen share that is not on stage.
    ScreenShare,
    /// A gallery tile.
    Thumbnail,
}

/// One spatial layer of a video track, as the driver measures it on the publisher's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VideoLayer {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Measured incoming bitrate in bits per second, smoothed over a second or two; 0 when
    /// the layer is not arriving (the publisher's uplink dropped it).
    pub bitrate: u64,
}

impl VideoLayer {
    /// A layer of this size arriving at this bitrate.
    pub fn new(width: u32, height: u32, bitrate: u64) -> VideoLayer {
        VideoLayer {
            width,
            height,
            bitrate,
        }
    }

    /// Whether the layer is arriving, so that it may be forwarded.
    pub fn is_available(&self) -> bool {
        self.bitrate > 0
    }

    fn area(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// How the subscriber shows a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Whether it is on screen at all; hidden tracks get no video.
    pub visible: bool,
    /// Rendered width in device pixels.
    pub width: u32,
    /// Rendered height in device pixels.
    pub height: u32,
}

impl Tile {
    /// Shown at this size (device pixels).
    pub fn shown(width: u32, height: u32) -> Tile {
        Tile {
            visible: true,
            width,
            height,
        }
    }

    /// Not shown.
    pub fn hidden() -> Tile {
        Tile {
            visible: false,
            width: 0,
            height: 0,
        }
    }

    fn area(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// Why a track gets no video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseReason {
    /// The subscriber does not show it.
    NotShown,
    /// The subscriber's connection cannot carry it: tell the client "video paused for your
    /// connection".
    Bandwidth,
    /// No layer of it is arriving from the publisher.
    NoMedia,
}

/// What one subscriber should receive of one video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// This layer (an index into the track's layers, 0 = lowest), from its next keyframe.
    Layer(u8),
    /// Nothing, for this reason.
    Paused(PauseReason),
}

impl Decision {
    /// Whether the track is paused because the subscriber's connection cannot carry it.
    pub fn is_paused_for_bandwidth(&self) -> bool {
        *self == Decision::Paused(PauseReason::Bandwidth)
    }
}

/// What to tell the subscriber's bandwidth estimator (str0m's `Bwe::set_bitrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BitrateTarget {
    /// Bits per second the current allocation sends (audio reserve plus chosen layers)
    /// while a track is below its tile's layer: as str0m's `minimum`, padding keeps the
    /// estimate up when cameras send less than measured. 0 when nothing is left to climb to
    /// (no padding).
    pub minimum: u64,
    /// The estimate the subscriber would like: what the next upgrade needs (margin included)
    /// while something is paused or below its tile's layer and the estimator can probe; else
    /// what the current allocation needs.
    pub desired: u64,
}

/// Something the driver must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorEvent {
    /// The target for `track` changed (also sent once for each new track).
    Track {
        /// The track.
        track: TrackKey,
        /// Its new target.
        decision: Decision,
    },
    /// The bitrate target changed.
    Bitrate(BitrateTarget),
}

/// Misuse of the allocator's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorError {
    /// A configuration value is out of range (see [`AllocatorConfig::validate`]).
    InvalidConfig,
    /// The track is already known.
    DuplicateTrack,
    /// No such track.
    UnknownTrack,
    /// A track needs between 1 and [`MAX_LAYERS`] layers.
    LayerCount,
}

/// Allocator tuning. The defaults suit a meeting: quick to step down, slow to step up.
#[derive(Debug, Clone)]
pub struct AllocatorConfig {
    /// Estimate assumed until the estimator reports one (bits/s): conservative, so that a
    /// new subscriber starts with the stage's lowest layer rather than a burst of everything.
    pub initial_estimate: u64,
    /// Share of the estimate kept free for retransmissions, probes and estimate error
    /// (per cent, below 100).
    pub headroom_percent: u64,
    /// How much more than it needs the estimate must carry before an upgrade (per cent).
    pub upgrade_margin_percent: u64,
    /// How long the estimate must carry an upgrade (with margin) before the first step up.
    pub upgrade_hold: Duration,
    /// Least time between two further steps up while the estimate keeps carrying them.
    pub upgrade_step_interval: Duration,
    /// The upgrade hold doubles after each upgrade that overshot, up to this.
    pub max_upgrade_hold: Duration,
    /// How long the allocation may need more than the estimate less audio (without a
    /// collapse, see [`COLLAPSE_PERCENT`]) before it comes down.
    pub downgrade_hold: Duration,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            initial_estimate: 500_000,
            headroom_percent: 10,
            upgrade_margin_percent: 20,
            upgrade_hold: Duration::from_secs(2),
            upgrade_step_interval: Duration::from_secs(1),
            max_upgrade_hold: Duration::from_secs(16),
            downgrade_hold: Duration::from_secs(1),
        }
    }
}

impl AllocatorConfig {
    /// Checks that the headroom is below 100 %, the margin at most 1000 % and the maximum
    /// upgrade hold at least the upgrade hold.
    pub fn validate(&self) -> Result<(), AllocatorError> {
        if self.headroom_percent >= 100
            || self.upgrade_margin_percent > 1000
            || self.max_upgrade_hold < self.upgrade_hold
        {
            return Err(AllocatorError::InvalidConfig);
        }
        Ok(())
    }
}

/// The video budget an estimate leaves: the estimate less the headroom, less the audio
/// reserve (bits/s).
pub fn video_budget(estimate: u64, audio: u64, headroom_percent: u64) -> u64 {
    let after_headroom = estimate as u128 * (100 - headroom_percent.min(99)) as u128 / 100;
    (after_headroom as u64).saturating_sub(audio)
}

/// The video budget an upgrade may use: the budget of the estimate less the upgrade margin.
pub fn upgrade_budget(
    estimate: u64,
    audio: u64,
    headroom_percent: u64,
    margin_percent: u64,
) -> u64 {
    let without_margin = estimate as u128 * 100 / (100 + margin_percent) as u128;
    video_budget(without_margin as u64, audio, headroom_percent)
}

/// The least estimate whose [`video_budget`] carries `video` bits/s.
pub fn estimate_for(video: u64, audio: u64, headroom_percent: u64) -> u64 {
    let total = video.saturating_add(audio) as u128 * 100;
    total.div_ceil((100 - headroom_percent.min(99)) as u128) as u64
}

/// The least estimate whose [`upgrade_budget`] carries `video` bits/s.
pub fn estimate_for_upgrade(
    video: u64,
    audio: u64,
    headroom_percent: u64,
    margin_percent: u64,
) -> u64 {
    let plain = estimate_for(video, audio, headroom_percent) as u128;
    (plain * (100 + margin_percent) as u128).div_ceil(100) as u64
}

/// The lowest layer that is arriving.
pub fn lowest_available(layers: &[VideoLayer]) -> Option<u8> {
    layers
        .iter()
        .position(|l| l.is_available())
        .map(|i| i as u8)
}

/// The next arriving layer above `layer`.
pub fn next_available_above(layers: &[VideoLayer], layer: u8) -> Option<u8> {
    (layer as usize + 1..layers.len())
        .find(|&i| layers[i].is_available())
        .map(|i| i as u8)
}

/// The next arriving layer below `layer`.
pub fn next_available_below(layers: &[VideoLayer], layer: u8) -> Option<u8> {
    (0..(layer as usize).min(layers.len()))
        .rev()
        .find(|&i| layers[i].is_available())
        .map(|i| i as u8)
}

/// The layer a tile deserves: the smallest arriving layer with at least three quarters of
/// the tile's pixels, else the largest arriving one. Never more: a 320×180 tile does not get
/// the 1280×720 layer while a smaller one arrives. `None` when hidden or nothing arrives.
/// Layers are ordered from the lowest resolution to the highest.
pub fn preferred_layer(layers: &[VideoLayer], tile: Tile) -> Option<u8> {
    if !tile.visible {
        return None;
    }
    let wanted = tile.area() * 3;
    let mut best = None;
    for (i, l) in layers.iter().enumerate() {
        if !l.is_available() {
            continue;
        }
        best = Some(i as u8);
        if l.area() * 4 >= wanted {
            break;
        }
    }
    best
}

/// Writes into each track's `plan` the layer that `budget` buys it, spending in the order of
/// `tracks` (most important first): every shown track's lowest layer first, then each track
/// up towards its [`preferred_layer`] while the budget lasts. A track whose next step does not
/// fit stops there; later tracks may still use what is left.
fn plan(tracks: &mut [Track], budget: u64) {
    let mut left = budget;
    for t in tracks.iter_mut() {
        t.plan = None;
        if t.preferred().is_none() {
            continue;
        }
        if let Some(l) = t.lowest() {
            let rate = t.rate(Some(l));
            if rate <= left {
                left -= rate;
                t.plan = Some(l);
            }
        }
    }
    for t in tracks.iter_mut() {
        let (Some(mut l), Some(preferred)) = (t.plan, t.preferred()) else {
            continue;
        };
        while l < preferred {
            let Some(next) = next_available_above(t.layers(), l) else {
                break;
            };
            let extra = t.rate(Some(next)).saturating_sub(t.rate(Some(l)));
            if extra > left {
                break;
            }
            left -= extra;
            l = next;
        }
        t.plan = Some(l);
    }
}

/// The first step from the tracks' current layers towards `target`, in the order [`plan`]
/// spends: unpause the most important paused track at its lowest layer, else raise the most
/// important track below its target by one layer.
fn next_step(tracks: &[Track], target: impl Fn(&Track) -> Option<u8>) -> Option<(usize, u8)> {
    for (i, t) in tracks.iter().enumerate() {
        if t.cur.is_none() && target(t).is_some() {
            return t.lowest().map(|l| (i, l));
        }
    }
    for (i, t) in tracks.iter().enumerate() {
        if let (Some(cur), Some(goal)) = (t.cur, target(t)) {
            if cur < goal {
                if let Some(next) = next_available_above(t.layers(), cur) {
                    return Some((i, next.min(goal)));
                }
            }
        }
    }
    None
}

/// The lower of two layers, a pause being the lowest.
fn min_level(a: Option<u8>, b: Option<u8>) -> Option<u8> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => None,
    }
}

/// Bits per second of the tracks' current layers.
fn cost(tracks: &[Track]) -> u64 {
    tracks.iter().map(|t| t.rate(t.cur)).sum()
}

#[derive(Debug, Clone)]
struct Track {
    key: TrackKey,
    priority: TrackPriority,
    tile: Tile,
    layers: [VideoLayer; MAX_LAYERS],
    layer_count: usize,
    /// The current target (`None`: paused).
    cur: Option<u8>,
    /// Scratch: what the last [`plan`] gave it.
    plan: Option<u8>,
    /// New, newly shown, enlarged or re-prioritised: gets its planned layer at once.
    fresh: bool,
    /// The decision last handed to the driver.
    emitted: Option<Decision>,
}

impl Track {
    fn layers(&self) -> &[VideoLayer] {
        &self.layers[..self.layer_count]
    }

    fn rate(&self, layer: Option<u8>) -> u64 {
        layer.map_or(0, |l| self.layers()[l as usize].bitrate)
    }

    fn lowest(&self) -> Option<u8> {
        lowest_available(self.layers())
    }

    fn preferred(&self) -> Option<u8> {
        preferred_layer(self.layers(), self.tile)
    }

    fn decision(&self) -> Decision {
        match self.cur {
            Some(l) => Decision::Layer(l),
            None if !self.tile.visible => Decision::Paused(PauseReason::NotShown),
            None if self.lowest().is_none() => Decision::Paused(PauseReason::NoMedia),
            None => Decision::Paused(PauseReason::Bandwidth),
        }
    }

    fn set_layers(&mut self, layers: &[VideoLayer]) -> Result<(), AllocatorError> {
        if layers.is_empty() || layers.len() > MAX_LAYERS {
            return Err(AllocatorError::LayerCount);
        }
        self.layers = [VideoLayer::default(); MAX_LAYERS];
        self.layers[..layers.len()].copy_from_slice(layers);
        self.layer_count = layers.len();
        // Fewer layers than before (the publisher stopped simulcast): nothing may point past
        // the last one.
        let last = (layers.len() - 1) as u8;
        self.cur = self.cur.map(|l| l.min(last));
        self.plan = self.plan.map(|l| l.min(last));
        Ok(())
    }
}

/// One subscriber's video allocation state machine (see the [module](self) documentation).
#[derive(Debug)]
pub struct Allocator {
    config: AllocatorConfig,
    /// Sorted by (priority, key): the order in which bandwidth is given.
    tracks: Vec<Track>,
    estimate: u64,
    can_probe: bool,
    audio: u64,
    /// Some track is fresh: re-plan before anything else.
    replan: bool,
    /// Since when the allocation has needed more than it may keep (the estimate less audio;
    /// with loss, the budget), and the lowest estimate seen since.
    over_since: Option<(Instant, u64)>,
    /// The last loss report said at least [`LOSSY`].
    lossy: bool,
    /// Since when an upgrade has been possible (with margin) without a break.
    upgrade_since: Option<Instant>,
    /// No further step up before this.
    next_step_at: Option<Instant>,
    /// The current upgrade hold (grows after upgrades that overshot).
    hold: Duration,
    last_upgrade: Option<Instant>,
    last_downgrade: Option<Instant>,
    /// The estimate the last upgrade step was made on, and the video it then used.
    upgraded_on: (u64, u64),
    /// After an upgrade overshot: as much video as it used needs this estimate.
    upgrade_floor: Option<(u64, u64)>,
    target: BitrateTarget,
    emitted_target: Option<BitrateTarget>,
}

impl Allocator {
    /// An allocator with no tracks, assuming [`AllocatorConfig::initial_estimate`].
    pub fn new(config: AllocatorConfig) -> Result<Allocator, AllocatorError> {
        config.validate()?;
        Ok(Allocator {
            estimate: config.initial_estimate,
            hold: config.upgrade_hold,
            config,
            tracks: Vec::new(),
            can_probe: false,
            audio: 0,
            replan: false,
            over_since: None,
            lossy: false,
            upgrade_since: None,
            next_step_at: None,
            last_upgrade: None,
            last_downgrade: None,
            upgraded_on: (0, 0),
            upgrade_floor: None,
            target: BitrateTarget::default(),
            emitted_target: None,
        })
    }

    /// The subscriber's receiver reports say it lost `fraction` (0.0–1.0) of what it was
    /// sent in the last second or so. From [`LOSSY`] on, the headroom is kept for
    /// retransmissions (see the [module](self) documentation on downgrades).
    pub fn handle_loss(&mut self, now: Instant, fraction: f64) {
        self.lossy = fraction >= LOSSY;
        self.evaluate(now);
    }

    /// The estimator reported `estimate` bits/s; `can_probe` says whether it can probe for
    /// more (str0m's `BweKind::Twcc { estimate, can_probe }`).
    pub fn handle_estimate(&mut self, now: Instant, estimate: u64, can_probe: bool) {
        self.estimate = estimate;
        self.can_probe = can_probe;
        self.evaluate(now);
    }

    /// The subscriber's audio needs `bits_per_second` (e.g. [`AUDIO_TRACK_RESERVE`] times the
    /// audio tracks it receives); video gets only what is left.
    pub fn set_audio_reserve(&mut self, now: Instant, bits_per_second: u64) {
        self.audio = bits_per_second;
        self.evaluate(now);
    }

    /// A video track the subscriber may receive, with its layers ordered from the lowest
    /// resolution to the highest (one layer without simulcast). It gets a [`Decision`] at
    /// once.
    pub fn add_track(
        &mut self,
        now: Instant,
        track: TrackKey,
        priority: TrackPriority,
        tile: Tile,
        layers: &[VideoLayer],
    ) -> Result<(), AllocatorError> {
        if self.index(track).is_some() {
            return Err(AllocatorError::DuplicateTrack);
        }
        let mut t = Track {
            key: track,
            priority,
            tile,
            layers: [VideoLayer::default(); MAX_LAYERS],
            layer_count: 0,
            cur: None,
            plan: None,
            fresh: true,
            emitted: None,
        };
        t.set_layers(layers)?;
        self.tracks.push(t);
        self.sort();
        self.replan = true;
        self.evaluate(now);
        Ok(())
    }

    /// The track is gone; its bandwidth goes to the others through the usual upgrade steps.
    pub fn remove_track(&mut self, now: Instant, track: TrackKey) -> Result<(), AllocatorError> {
        let i = self.index(track).ok_or(AllocatorError::UnknownTrack)?;
        self.tracks.remove(i);
        self.evaluate(now);
        Ok(())
    }

    /// The subscriber shows the track differently. Hiding or shrinking it applies at once;
    /// showing or enlarging it gives it what the budget allows at once.
    pub fn set_tile(
        &mut self,
        now: Instant,
        track: TrackKey,
        tile: Tile,
    ) -> Result<(), AllocatorError> {
        let i = self.index(track).ok_or(AllocatorError::UnknownTrack)?;
        let t = &mut self.tracks[i];
        let before = t.preferred();
        t.tile = tile;
        if t.preferred().is_some() && (before.is_none() || t.preferred() > before) {
            t.fresh = true;
            self.replan = true;
        }
        self.evaluate(now);
        Ok(())
    }

    /// The track's importance changed (it took the floor, became the dominant speaker, was
    /// pinned or unpinned); bandwidth is re-planned at once.
    pub fn set_priority(
        &mut self,
        now: Instant,
        track: TrackKey,
        priority: TrackPriority,
    ) -> Result<(), AllocatorError> {
        let i = self.index(track).ok_or(AllocatorError::UnknownTrack)?;
        let t = &mut self.tracks[i];
        if t.priority != priority {
            t.priority = priority;
            t.fresh = true;
            self.replan = true;
            self.sort();
        }
        self.evaluate(now);
        Ok(())
    }

    /// New measurements of the track's layers (same order as before; a layer not arriving
    /// has bitrate 0). A target layer that stopped arriving falls back at once.
    pub fn set_layers(
        &mut self,
        now: Instant,
        track: TrackKey,
        layers: &[VideoLayer],
    ) -> Result<(), AllocatorError> {
        let i = self.index(track).ok_or(AllocatorError::UnknownTrack)?;
        let t = &mut self.tracks[i];
        let had_media = t.lowest().is_some();
        t.set_layers(layers)?;
        if !had_media && t.lowest().is_some() {
            t.fresh = true;
            self.replan = true;
        }
        self.evaluate(now);
        Ok(())
    }

    /// Time passed: pending downgrades and upgrades whose hold ended are applied.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.evaluate(now);
    }

    /// When [`Allocator::handle_timeout`] next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let down = self
            .over_since
            .map(|(since, _)| since + self.config.downgrade_hold);
        let up = self.upgrade_since.map(|since| {
            let at = since + self.hold;
            self.next_step_at.map_or(at, |n| n.max(at))
        });
        let reset = if self.hold > self.config.upgrade_hold {
            self.last_downgrade.map(|d| d + BACKOFF_RESET)
        } else {
            None
        };
        [down, up, reset].into_iter().flatten().min()
    }

    /// The next event for the driver: changed track decisions (most important track first),
    /// then a changed bitrate target.
    pub fn poll_event(&mut self) -> Option<AllocatorEvent> {
        for t in &mut self.tracks {
            let decision = t.decision();
            if t.emitted != Some(decision) {
                t.emitted = Some(decision);
                return Some(AllocatorEvent::Track {
                    track: t.key,
                    decision,
                });
            }
        }
        if self.emitted_target != Some(self.target) {
            self.emitted_target = Some(self.target);
            return Some(AllocatorEvent::Bitrate(self.target));
        }
        None
    }

    /// The current target for `track`.
    pub fn decision(&self, track: TrackKey) -> Option<Decision> {
        self.index(track).map(|i| self.tracks[i].decision())
    }

    /// Bits per second of the video layers currently targeted.
    pub fn video_rate(&self) -> u64 {
        cost(&self.tracks)
    }

    /// The estimate in use (the initial one until the estimator reports).
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    /// The current bitrate target.
    pub fn bitrate_target(&self) -> BitrateTarget {
        self.target
    }

    /// Number of video tracks.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    fn index(&self, track: TrackKey) -> Option<usize> {
        self.tracks.iter().position(|t| t.key == track)
    }

    fn sort(&mut self) {
        self.tracks.sort_unstable_by_key(|t| (t.priority, t.key));
    }

    fn video_budget(&self, estimate: u64) -> u64 {
        video_budget(estimate, self.audio, self.config.headroom_percent)
    }

    fn upgrade_budget(&self) -> u64 {
        upgrade_budget(
            self.estimate,
            self.audio,
            self.config.headroom_percent,
            self.config.upgrade_margin_percent,
        )
    }

    /// Re-decides everything after an input: constraints, fresh tracks, then at most one
    /// downgrade or one upgrade step, then the bitrate target.
    fn evaluate(&mut self, now: Instant) {
        self.apply_constraints();
        if self.replan {
            self.plan_fresh_tracks();
        }
        if self.hold > self.config.upgrade_hold
            && self
                .last_downgrade
                .is_none_or(|d| now.saturating_duration_since(d) >= BACKOFF_RESET)
        {
            self.hold = self.config.upgrade_hold;
            self.upgrade_floor = None;
        }
        let used = cost(&self.tracks);
        let over = used > self.video_budget(self.estimate);
        let short = used > self.estimate.saturating_sub(self.audio);
        if over {
            self.upgrade_since = None;
        }
        // Within the headroom on a clean link: no upgrade, and no downgrade either (one
        // decrease of the estimator lands there). With loss, the headroom is for
        // retransmissions: the allocation comes down after the hold.
        if over && (short || self.lossy) {
            let (since, lowest) = self.over_since.get_or_insert((now, self.estimate));
            *lowest = (*lowest).min(self.estimate);
            let (since, lowest) = (*since, *lowest);
            let sent = used.saturating_add(self.audio) as u128;
            let collapsed = (self.estimate as u128) * 100 < sent * COLLAPSE_PERCENT as u128
                || (short && self.lossy);
            if collapsed || now >= since + self.config.downgrade_hold {
                self.downgrade(self.video_budget(lowest));
                self.over_since = None;
                if self
                    .last_upgrade
                    .is_some_and(|u| now.saturating_duration_since(u) < OVERSHOOT_WINDOW)
                {
                    self.hold = (self.hold * 2).min(self.config.max_upgrade_hold);
                    let (estimate, video) = self.upgraded_on;
                    let floor = (video, estimate + estimate * OVERSHOT_MARGIN_PERCENT / 100);
                    self.upgrade_floor = Some(match self.upgrade_floor {
                        Some((v, e)) => (v.min(floor.0), e.max(floor.1)),
                        None => floor,
                    });
                    self.last_upgrade = None;
                }
                self.last_downgrade = Some(now);
            }
        } else {
            self.over_since = None;
            if !over {
                self.maybe_upgrade(now);
            }
        }
        self.update_target();
    }

    /// What needs no hold: hidden tracks pause, tracks above their tile's layer come down,
    /// and a track whose layer stopped arriving falls back to the next lower one (or, with
    /// none lower, is re-planned as fresh).
    fn apply_constraints(&mut self) {
        let mut replan = false;
        for t in &mut self.tracks {
            let Some(preferred) = t.preferred() else {
                t.cur = None;
                continue;
            };
            let Some(cur) = t.cur else { continue };
            // The layer list may have shrunk (the publisher stopped simulcast).
            let arriving = if t
                .layers()
                .get(cur as usize)
                .is_some_and(|l| l.is_available())
            {
                Some(cur)
            } else {
                next_available_below(t.layers(), cur)
            };
            match arriving {
                Some(l) => t.cur = Some(l.min(preferred)),
                None => {
                    t.cur = None;
                    t.fresh = true;
                    replan = true;
                }
            }
        }
        self.replan |= replan;
    }

    /// Fresh tracks get what the upgrade budget plans for them; the others keep their layer
    /// unless the plan needs it lower.
    fn plan_fresh_tracks(&mut self) {
        self.replan = false;
        let budget = self.upgrade_budget();
        plan(&mut self.tracks, budget);
        for t in &mut self.tracks {
            t.cur = if t.fresh {
                t.plan
            } else {
                min_level(t.cur, t.plan)
            };
            t.fresh = false;
        }
    }

    /// Brings every track down to at most what `budget` plans for it. That fits, since [`plan`]
    /// charges each track the most any layer on its way up costs; the loop after it is a
    /// guard that steps the least important tracks down should it ever not.
    fn downgrade(&mut self, budget: u64) {
        plan(&mut self.tracks, budget);
        for t in &mut self.tracks {
            t.cur = min_level(t.cur, t.plan);
        }
        while cost(&self.tracks) > budget {
            let Some(t) = self.tracks.iter_mut().rev().find(|t| t.cur.is_some()) else {
                break;
            };
            t.cur = t.cur.and_then(|l| next_available_below(t.layers(), l));
        }
        self.upgrade_since = None;
    }

    /// One step up, if the estimate has carried an upgrade with margin for the hold and the
    /// last step is far enough back.
    fn maybe_upgrade(&mut self, now: Instant) {
        let budget = self.upgrade_budget();
        plan(&mut self.tracks, budget);
        let Some((i, layer)) = next_step(&self.tracks, |t| t.plan) else {
            self.upgrade_since = None;
            return;
        };
        let next = self.cost_with(i, layer);
        if self.floor_for(next).is_some_and(|e| self.estimate < e) {
            // About as much video as last overshot the link (layer rates are measured, and
            // wobble with keyframes), on no better an estimate.
            self.upgrade_since = None;
            return;
        }
        let since = *self.upgrade_since.get_or_insert(now);
        if now < since + self.hold || self.next_step_at.is_some_and(|at| now < at) {
            return;
        }
        // Spaced even if the step were refused, so that poll_timeout never lies in the past.
        self.next_step_at = Some(now + self.config.upgrade_step_interval);
        if self.step_up(i, layer, next, budget) {
            self.last_upgrade = Some(now);
            self.upgraded_on = (self.estimate, cost(&self.tracks));
        }
    }

    /// Moves track `i` to `layer` if that fits `budget`; if layers held above the plan by
    /// less important tracks (those after `i`) leave no room, brings them down to the plan in
    /// the same change. A more important track is never lowered for it: with room for one
    /// thumbnail, the plan may pick whichever thumbnail's measured rate fits this second, and
    /// swapping them on each wobble stalled both (a keyframe to wait for each time).
    /// `alone` is [`Allocator::cost_with`] for the step.
    fn step_up(&mut self, i: usize, layer: u8, alone: u64, budget: u64) -> bool {
        if alone <= budget {
            self.tracks[i].cur = Some(layer);
            return true;
        }
        let after = |j: usize, t: &Track| match j.cmp(&i) {
            std::cmp::Ordering::Less => t.cur,
            std::cmp::Ordering::Equal => Some(layer),
            std::cmp::Ordering::Greater => min_level(t.cur, t.plan),
        };
        let rebalanced: u64 = self
            .tracks
            .iter()
            .enumerate()
            .map(|(j, t)| t.rate(after(j, t)))
            .sum();
        if rebalanced > budget {
            return false;
        }
        for (j, t) in self.tracks.iter_mut().enumerate() {
            t.cur = after(j, t);
        }
        true
    }

    /// What the current layers would cost with track `i` at `layer` instead.
    fn cost_with(&self, i: usize, layer: u8) -> u64 {
        let t = &self.tracks[i];
        cost(&self.tracks) - t.rate(t.cur) + t.rate(Some(layer))
    }

    /// The estimate an allocation of `video` bits/s needs after an upgrade overshot: about
    /// as much video as overshot (¾ of it or more) needs the floor; less needs none.
    fn floor_for(&self, video: u64) -> Option<u64> {
        self.upgrade_floor
            .filter(|(overshot, _)| video >= overshot / 4 * 3)
            .map(|(_, estimate)| estimate)
    }

    fn update_target(&mut self) {
        let (h, m) = (
            self.config.headroom_percent,
            self.config.upgrade_margin_percent,
        );
        let used = cost(&self.tracks);
        let current_need = estimate_for(used, self.audio, h);
        let mut desired = current_need;
        let step = next_step(&self.tracks, Track::preferred);
        if let (true, Some((i, layer))) = (self.can_probe, step) {
            let t = &self.tracks[i];
            let next = used - t.rate(t.cur) + t.rate(Some(layer));
            desired = estimate_for_upgrade(next, self.audio, h, m).max(current_need);
            // A step the overshoot floor holds back needs that estimate: probe for it, or
            // the estimate never gets there and the step waits for the backoff to reset (a
            // screen share paused after an estimate collapse stayed paused for 45 s).
            if let Some(floor) = self.floor_for(next) {
                desired = desired.max(floor);
            }
        }
        // Padding up to what the allocation uses keeps the estimate from sagging to what
        // the cameras happen to send between keyframes, which matters while something is
        // left to climb to. A subscriber that has everything its tiles want (every
        // listener of a general meeting) gets none: it cost one padding packet per two of
        // media, a third of the server's CPU in bench (d). That the estimate then hovers
        // near what is sent is safe since one decrease below it is waited out (see
        // COLLAPSE_PERCENT): without that rule, no padding froze the camera 6.4 s per
        // viewer in 30 s at 100 listeners; with it, 0.5-0.6 s.
        self.target = BitrateTarget {
            minimum: if step.is_some() {
                used.saturating_add(self.audio)
            } else {
                0
            },
            desired,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(low: u64, mid: u64, high: u64) -> [VideoLayer; 3] {
        [
            VideoLayer::new(320, 180, low),
            VideoLayer::new(640, 360, mid),
            VideoLayer::new(1280, 720, high),
        ]
    }

    #[test]
    fn budget_is_estimate_less_headroom_less_audio() {
        assert_eq!(video_budget(1_000_000, 120_000, 10), 780_000);
        assert_eq!(video_budget(100_000, 120_000, 10), 0, "audio first");
        assert_eq!(upgrade_budget(1_200_000, 120_000, 10, 20), 780_000);
    }

    #[test]
    fn needed_estimates_round_trip() {
        for video in [0, 1, 149_999, 150_000, 777_777, 1_800_000, 9_999_999] {
            for audio in [0, 40_000, 120_000] {
                let e = estimate_for(video, audio, 10);
                assert!(video_budget(e, audio, 10) >= video);
                assert!(
                    video == 0 || video_budget(e - 1, audio, 10) < video,
                    "the least"
                );
                let u = estimate_for_upgrade(video, audio, 10, 20);
                assert!(upgrade_budget(u, audio, 10, 20) >= video);
            }
        }
    }

    #[test]
    fn preferred_layer_fits_the_tile_and_never_more() {
        let layers = camera(150_000, 500_000, 1_500_000);
        assert_eq!(preferred_layer(&layers, Tile::shown(320, 180)), Some(0));
        assert_eq!(preferred_layer(&layers, Tile::shown(200, 120)), Some(0));
        assert_eq!(preferred_layer(&layers, Tile::shown(640, 360)), Some(1));
        assert_eq!(preferred_layer(&layers, Tile::shown(1280, 720)), Some(2));
        assert_eq!(preferred_layer(&layers, Tile::shown(3840, 2160)), Some(2));
        assert_eq!(preferred_layer(&layers, Tile::hidden()), None);
        // Slightly larger than a layer still counts as that layer.
        assert_eq!(preferred_layer(&layers, Tile::shown(360, 200)), Some(0));
    }

    #[test]
    fn preferred_layer_skips_layers_not_arriving() {
        let top_gone = camera(150_000, 500_000, 0);
        assert_eq!(preferred_layer(&top_gone, Tile::shown(1280, 720)), Some(1));
        let low_gone = camera(0, 500_000, 1_500_000);
        assert_eq!(preferred_layer(&low_gone, Tile::shown(320, 180)), Some(1));
        assert_eq!(
            preferred_layer(&camera(0, 0, 0), Tile::shown(320, 180)),
            None
        );
    }

    #[test]
    fn available_layer_navigation() {
        let layers = camera(150_000, 0, 1_500_000);
        assert_eq!(lowest_available(&layers), Some(0));
        assert_eq!(next_available_above(&layers, 0), Some(2));
        assert_eq!(next_available_above(&layers, 2), None);
        assert_eq!(next_available_below(&layers, 2), Some(0));
        assert_eq!(next_available_below(&layers, 0), None);
        assert_eq!(lowest_available(&camera(0, 0, 9)), Some(2));
    }

    fn track(key: u64, priority: TrackPriority, tile: Tile) -> Track {
        let mut t = Track {
            key: TrackKey(key),
            priority,
            tile,
            layers: [VideoLayer::default(); MAX_LAYERS],
            layer_count: 0,
            cur: None,
            plan: None,
            fresh: false,
            emitted: None,
        };
        t.set_layers(&camera(150_000, 500_000, 1_500_000)).unwrap();
        t
    }

    #[test]
    fn a_target_above_fewer_layers_comes_down_to_them() {
        let mut t = track(1, TrackPriority::Stage, Tile::shown(1280, 720));
        t.cur = Some(2);
        t.plan = Some(2);
        // The top layer stopped and is no longer counted: two layers, not three.
        let two = &camera(150_000, 500_000, 0)[..2];
        t.set_layers(two).unwrap();
        assert_eq!(t.layers().len(), 2);
        assert_eq!((t.cur, t.plan), (Some(1), Some(1)));
        assert_eq!(t.rate(t.cur), 500_000, "no index past the layers");
    }

    #[test]
    fn plan_gives_lowest_layers_first_then_upgrades_in_priority_order() {
        let mut tracks = vec![
            track(1, TrackPriority::Stage, Tile::shown(1280, 720)),
            track(2, TrackPriority::Pinned, Tile::shown(1280, 720)),
            track(3, TrackPriority::Thumbnail, Tile::shown(320, 180)),
        ];
        plan(&mut tracks, 400_000);
        let plans: Vec<_> = tracks.iter().map(|t| t.plan).collect();
        assert_eq!(plans, [Some(0), Some(0), None], "thumbnail paused first");
        plan(&mut tracks, 1_000_000);
        let plans: Vec<_> = tracks.iter().map(|t| t.plan).collect();
        assert_eq!(plans, [Some(1), Some(0), Some(0)], "stage upgraded first");
        plan(&mut tracks, 3_500_000);
        let plans: Vec<_> = tracks.iter().map(|t| t.plan).collect();
        assert_eq!(
            plans,
            [Some(2), Some(2), Some(0)],
            "tile caps the thumbnail"
        );
        plan(&mut tracks, 100_000);
        assert!(tracks.iter().all(|t| t.plan.is_none()));
    }

    #[test]
    fn next_step_unpauses_before_upgrading() {
        let mut tracks = vec![
            track(1, TrackPriority::Stage, Tile::shown(1280, 720)),
            track(2, TrackPriority::Thumbnail, Tile::shown(320, 180)),
        ];
        tracks[0].cur = Some(0);
        let ideal = |t: &Track| t.preferred();
        assert_eq!(next_step(&tracks, ideal), Some((1, 0)));
        tracks[1].cur = Some(0);
        assert_eq!(next_step(&tracks, ideal), Some((0, 1)));
        tracks[0].cur = Some(2);
        assert_eq!(next_step(&tracks, ideal), None);
    }

    #[test]
    fn config_is_validated() {
        let bad = AllocatorConfig {
            headroom_percent: 100,
            ..AllocatorConfig::default()
        };
        assert_eq!(bad.validate(), Err(AllocatorError::InvalidConfig));
        assert!(AllocatorConfig::default().validate().is_ok());
    }
}
