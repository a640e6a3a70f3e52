//! What a load test does ([`RunConfig`]), the participants it simulates ([`plan`]), and
//! the thresholds that make it fail ([`Thresholds`]).

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::synth::VideoProfile;

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Nothing to simulate.
    #[error(
        "nothing to do: give --publishers, --audio-publishers, --video-publishers or --subscribers"
    )]
    Empty,
    /// A count or rate is out of bounds.
    #[error("{0}")]
    Bounds(String),
    /// A feature the server does not support yet.
    #[error("{0}")]
    Unsupported(String),
}

/// Most simulated participants in one run.
pub const MAX_PARTICIPANTS: usize = 5000;
/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(6 * 3600);

/// Everything one load test needs.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Plenary's base URL (`http://host:port`).
    pub url: String,
    /// The API key that signs grants.
    pub api_key: String,
    /// Its secret (never printed).
    #[serde(skip)]
    pub api_secret: String,
    /// The grants' audience.
    pub audience: String,
    /// Accept any certificate of an `https://` server (self-signed test certificates).
    pub insecure: bool,
    /// Room name (with several rooms, `NAME-1`, `NAME-2`, ...).
    pub room: String,
    /// Rooms run at once, each with the counts below.
    pub rooms: usize,
    /// Speakers with camera and microphone, per room.
    pub publishers: usize,
    /// Speakers with a microphone only, per room.
    pub audio_publishers: usize,
    /// Cameras without a microphone (fan-out tests), per room.
    pub video_publishers: usize,
    /// Listeners, per room.
    pub subscribers: usize,
    /// How long to hold the full load, after the ramp.
    pub duration: Duration,
    /// Joins per second.
    pub ramp_per_sec: f64,
    /// Video profile of the cameras.
    pub video: VideoProfile,
    /// Send each video frame in one burst instead of pacing it (a harsher test).
    pub no_pacing: bool,
    /// Cameras publish three simulcast layers (q, h, f) with RTX.
    pub simulcast: bool,
    /// How long a join may take (WebSocket to media connected).
    pub join_timeout: Duration,
    /// Local address for media sockets; `None`: the one that routes to the server.
    pub local_ip: Option<IpAddr>,
    /// Peers driven by one task.
    pub peers_per_task: usize,
    /// Print a status line every second.
    pub progress: bool,
    /// Read the server's `/metrics`.
    pub scrape_metrics: bool,
    /// The server's process id, when it runs on this machine: its CPU and memory are then
    /// read from `/proc` (finer than its metrics).
    pub server_pid: Option<u32>,
    /// Give every received packet to webrtc-rs (full SRTP decryption and its interceptors)
    /// instead of accounting from RTP headers and decrypting a sample.
    pub full_decrypt: bool,
    /// Network classes of the attendees' downlinks.
    pub network: Option<crate::netem::NetMix>,
    /// Microphone speakers take turns of this length, one at a time (`None`: each talks
    /// ~60 % of the time on its own pattern).
    pub turn: Option<Duration>,
    /// `--turn`: every attendee's media goes through the TURN server its welcome names
    /// (every received packet is then decrypted by webrtc-rs).
    pub relay: bool,
    /// This process simulates participant `pid` only if `pid % n == i` (`(i, n)`); several
    /// processes with `0/n` … `n-1/n` share one run.
    pub shard: (usize, usize),
    /// Pass/fail limits.
    pub thresholds: Thresholds,
}

impl RunConfig {
    /// A configuration with defaults: one room, nothing simulated, 30 s, 20 joins/s.
    pub fn new(url: &str, api_key: &str, api_secret: &str) -> RunConfig {
        RunConfig {
            url: url.to_owned(),
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            audience: "plenary".into(),
            insecure: false,
            room: "loadtest".into(),
            rooms: 1,
            publishers: 0,
            audio_publishers: 0,
            video_publishers: 0,
            subscribers: 0,
            duration: Duration::from_secs(30),
            ramp_per_sec: 20.0,
            video: VideoProfile::ALL[1],
            no_pacing: false,
            simulcast: false,
            join_timeout: Duration::from_secs(20),
            local_ip: None,
            peers_per_task: 32,
            progress: false,
            scrape_metrics: true,
            server_pid: None,
            full_decrypt: false,
            turn: None,
            relay: false,
            network: None,
            shard: (0, 1),
            thresholds: Thresholds::default(),
        }
    }

    /// Participants per room.
    pub fn per_room(&self) -> usize {
        self.publishers + self.audio_publishers + self.video_publishers + self.subscribers
    }

    /// Participants in all (every shard).
    pub fn total(&self) -> usize {
        self.per_room() * self.rooms
    }

    /// Whether this process simulates participant `pid`.
    pub fn simulates(&self, pid: usize) -> bool {
        pid % self.shard.1.max(1) == self.shard.0
    }

    /// Participants this process simulates.
    pub fn local_total(&self) -> usize {
        (0..self.total()).filter(|p| self.simulates(*p)).count()
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.per_room() == 0 {
            return Err(ConfigError::Empty);
        }
        if self.api_key.is_empty() {
            return Err(ConfigError::Bounds(
                "--api-key is required (a key of the server's auth.api_keys)".into(),
            ));
        }
        let bound = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Bounds(msg.to_owned()))
            }
        };
        bound(self.rooms >= 1, "--rooms must be at least 1")?;
        bound(
            self.shard.1 >= 1 && self.shard.0 < self.shard.1,
            "--shard-of i/n needs 0 <= i < n",
        )?;
        bound(
            self.total() <= MAX_PARTICIPANTS,
            &format!("at most {MAX_PARTICIPANTS} participants in one run"),
        )?;
        bound(
            self.duration <= MAX_DURATION,
            "--duration is at most 6 hours",
        )?;
        bound(
            self.ramp_per_sec > 0.0 && self.ramp_per_sec <= 1000.0,
            "--ramp must be between 0 and 1000 joins per second",
        )?;
        bound(
            (1..=1000).contains(&self.peers_per_task),
            "--peers-per-task must be 1 to 1000",
        )?;
        bound(
            self.join_timeout >= Duration::from_secs(1),
            "--join-timeout must be at least 1 s",
        )?;
        Ok(())
    }

    /// The name of room `i` (0-based).
    pub fn room_name(&self, i: usize) -> String {
        if self.rooms == 1 {
            self.room.clone()
        } else {
            format!("{}-{}", self.room, i + 1)
        }
    }
}

/// What a simulated participant does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes (and receives everyone else).
    Publisher {
        /// Sends a microphone track.
        audio: bool,
        /// Sends a camera track.
        video: bool,
    },
    /// Only receives.
    Subscriber,
}

/// One simulated participant.
#[derive(Debug, Clone)]
pub struct Participant {
    /// Index in the run (0-based), also the order of joining.
    pub pid: usize,
    /// Room index.
    pub room: usize,
    /// Identity (grant subject).
    pub identity: String,
    /// What it does.
    pub role: Role,
}

impl Participant {
    /// Stream id of this participant's audio (video is one more).
    pub fn audio_stream(&self) -> u32 {
        self.pid as u32 * 2
    }

    /// Whether it only listens.
    pub fn is_subscriber(&self) -> bool {
        self.role == Role::Subscriber
    }
}

/// Every participant in join order: per room publishers first, rooms interleaved, so all
/// rooms fill at the same pace.
pub fn plan(c: &RunConfig) -> Vec<Participant> {
    let mut roles = Vec::with_capacity(c.per_room());
    roles.extend(std::iter::repeat_n(
        Role::Publisher {
            audio: true,
            video: true,
        },
        c.publishers,
    ));
    roles.extend(std::iter::repeat_n(
        Role::Publisher {
            audio: true,
            video: false,
        },
        c.audio_publishers,
    ));
    roles.extend(std::iter::repeat_n(
        Role::Publisher {
            audio: false,
            video: true,
        },
        c.video_publishers,
    ));
    roles.extend(std::iter::repeat_n(Role::Subscriber, c.subscribers));
    let run = std::process::id();
    let mut out = Vec::with_capacity(c.total());
    for (i, role) in roles.iter().enumerate() {
        for room in 0..c.rooms {
            let pid = out.len();
            let tag = if *role == Role::Subscriber {
                "sub"
            } else {
                "pub"
            };
            out.push(Participant {
                pid,
                room,
                identity: format!("lt{run}-r{}-{tag}{i}", room + 1),
                role: *role,
            });
        }
    }
    out
}

/// Limits that fail the run (exit code 2) when missed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Thresholds {
    /// Largest packet loss, percent.
    pub max_loss_pct: Option<f64>,
    /// Largest 95th percentile time to join.
    pub max_join_p95: Option<Duration>,
    /// Largest 95th percentile end-to-end latency.
    pub max_latency_p95: Option<Duration>,
    /// Most failed joins.
    pub max_failed_joins: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_interleaves_rooms_and_puts_publishers_first() {
        let mut c = RunConfig::new("http://127.0.0.1:1", "k", "s");
        c.rooms = 2;
        c.publishers = 1;
        c.audio_publishers = 1;
        c.subscribers = 2;
        let p = plan(&c);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0].room, 0);
        assert_eq!(p[1].room, 1);
        assert_eq!(
            p[0].role,
            Role::Publisher {
                audio: true,
                video: true
            }
        );
        assert_eq!(
            p[2].role,
            Role::Publisher {
                audio: true,
                video: false
            }
        );
        assert!(p[4..].iter().all(|x| x.is_subscriber()));
        assert!(p.iter().enumerate().all(|(i, x)| x.pid == i));
        let ids: std::collections::HashSet<_> = p.iter().map(|x| &x.identity).collect();
        assert_eq!(ids.len(), 8, "identities are unique");
        assert_eq!(c.room_name(1), "loadtest-2");
    }

    #[test]
    fn validation_bounds_runs() {
        let mut c = RunConfig::new("http://127.0.0.1:1", "k", "s");
        assert!(matches!(c.validate(), Err(ConfigError::Empty)));
        c.subscribers = 10;
        c.validate().unwrap();
        c.api_key.clear();
        assert!(matches!(c.validate(), Err(ConfigError::Bounds(_))));
        c.api_key = "k".into();
        c.ramp_per_sec = 0.0;
        assert!(c.validate().is_err());
        c.ramp_per_sec = 5.0;
        c.subscribers = MAX_PARTICIPANTS + 1;
        assert!(c.validate().is_err());
        c.subscribers = 1;
        c.simulcast = true;
        c.validate().unwrap();
    }
}
