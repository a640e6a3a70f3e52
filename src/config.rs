//! Plenary's configuration: one typed [`Config`] with defaults, loaded from an optional TOML
//! file, then overridden by `PLENARY_*` environment variables, then by command-line flags,
//! and finally validated.
//!
//! Environment overrides are generic: `PLENARY_<SECTION>_<KEY>` sets `key` in `[section]`
//! (e.g. `PLENARY_HTTP_ADDR=0.0.0.0:8080`, `PLENARY_MEDIA_ANNOUNCE_IPS='["203.0.113.7"]'`).
//! The value is read as a TOML value when it parses as one, else as a string. Secrets in
//! here are never printed: [`Config`]'s `Debug` hides them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use plenary_proto::IceServer;
use serde::{Deserialize, Serialize};

use crate::grant::{Claims, GrantError, KeyRing};

mod meetings;

pub use meetings::{parse_quorum, MeetingsConfig};

/// Everything Plenary can be told. See `plenary.example.toml` for the annotated file.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP side: web client, JSON API, WebSocket signaling, health and metrics.
    pub http: HttpConfig,
    /// The media plane: the one UDP port all peers share.
    pub media: MediaConfig,
    /// Who may mint room grants.
    pub auth: AuthConfig,
    /// STUN/TURN servers handed to clients in `welcome` as they are.
    pub ice_servers: Vec<IceServer>,
    /// A TURN server (coturn) sharing a secret with Plenary: each `welcome` carries
    /// time-limited credentials for it.
    pub turn: TurnConfig,
    /// Built-in TLS for the HTTP side (HTTPS and `wss://`), instead of a reverse proxy.
    pub tls: TlsConfig,
    /// Bounds that protect the server and other meetings.
    pub limits: LimitsConfig,
    /// Sign-in with Mastodon instances, member grants, rooms and invitations.
    pub membership: MembershipConfig,
    /// Governance defaults of new meetings, and what is kept of them.
    pub meetings: MeetingsConfig,
}

/// `[membership]`: who may enter, decided by accounts on Mastodon instances.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// The URL browsers reach Plenary at (e.g. `https://meet.social.coop`). OAuth redirect
    /// URIs and invitation links are built from it, never from the request's Host header.
    /// Required when instances are configured.
    pub public_url: String,
    /// The SQLite database (created with its migrations at start).
    pub database: String,
    /// Where grant-signing private keys are kept, one file each (mode 0600). Empty: a
    /// `keys` folder beside the database.
    pub keys_dir: String,
    /// The Mastodon (or GoToSocial, Akkoma) instances whose accounts may sign in.
    pub instances: Vec<InstanceConfig>,
    /// Who may open a room: `members` or `hosts`.
    pub who_may_open_rooms: OpenRooms,
    /// Handles (`@user@domain`) that are hosts whatever their role.
    pub hosts: Vec<String>,
    /// Handles refused even though their instance makes them members.
    pub deny: Vec<String>,
    /// Silenced (`limited`) accounts: `allow`, `listen_only` or `deny`.
    pub limited_accounts: LimitedPolicy,
    /// Lifetime of a member's grant, in seconds (at most 120: time to start the join).
    pub grant_ttl_secs: u64,
    /// Longest an invitation may stay valid, in days.
    pub invitation_max_days: u64,
    /// Most active invitations one member may have.
    pub max_active_invitations_per_member: usize,
    /// Guest-minutes one member's invitations may use per calendar month (0: unlimited).
    pub guest_minutes_per_month: u64,
    /// Session lifetime (absolute), in seconds.
    pub session_absolute_secs: u64,
    /// Session idle timeout, in seconds.
    pub session_idle_secs: u64,
    /// Membership is checked again with the instance when a grant is minted and the last
    /// check is older than this, in seconds.
    pub recheck_secs: u64,
}

/// One instance whose accounts may sign in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Short id used in URLs (`/auth/{id}/login`): letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// Base URL, e.g. `https://social.coop`.
    pub base_url: String,
    /// The domain in its members' handles (`@user@domain`), when it is not the host of
    /// `base_url` (Mastodon's `LOCAL_DOMAIN` differing from `WEB_DOMAIN`). Empty: the host
    /// of `base_url` (with its port, if it has one). Handles never take their domain from
    /// what the instance says about itself, so one instance cannot claim another's members.
    #[serde(default)]
    pub domain: String,
    /// Shown on the sign-in page.
    #[serde(default)]
    pub display_name: String,
    /// Whether an active local account there makes a member.
    #[serde(default = "default_true")]
    pub members: bool,
    /// Role names that make a host (case-insensitive), e.g. `["Admin", "Moderator", "Host"]`.
    #[serde(default)]
    pub host_roles: Vec<String>,
    /// Role ids that make a host.
    #[serde(default)]
    pub host_role_ids: Vec<String>,
    /// Permission bits: a role having any of them makes a host (0: none).
    #[serde(default)]
    pub host_permissions: u64,
    /// For Akkoma/Pleroma: `pleroma.is_admin` / `is_moderator` make a host.
    #[serde(default = "default_true")]
    pub pleroma_staff_are_hosts: bool,
}

fn default_true() -> bool {
    true
}

impl InstanceConfig {
    /// The domain of its members' handles: `domain` if set, else `base_url`'s host (and
    /// port), lower-cased. `None` when neither gives one.
    pub fn handle_domain(&self) -> Option<String> {
        if !self.domain.trim().is_empty() {
            return Some(self.domain.trim().to_ascii_lowercase());
        }
        let url = url::Url::parse(&self.base_url).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        Some(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    }
}

/// Whether `domain` looks like a handle's domain: letters, digits, `-`, `.`, and an optional
/// `:port`.
fn valid_handle_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// Who may open a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenRooms {
    /// Any member.
    Members,
    /// Hosts only.
    Hosts,
}

/// What silenced (`limited`) accounts get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitedPolicy {
    /// Treated as any member.
    Allow,
    /// May join, may not publish.
    ListenOnly,
    /// Refused.
    Deny,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            public_url: String::new(),
            database: "plenary.db".into(),
            keys_dir: String::new(),
            instances: Vec::new(),
            who_may_open_rooms: OpenRooms::Members,
            hosts: Vec::new(),
            deny: Vec::new(),
            limited_accounts: LimitedPolicy::ListenOnly,
            grant_ttl_secs: 120,
            invitation_max_days: 7,
            max_active_invitations_per_member: 20,
            guest_minutes_per_month: 0,
            session_absolute_secs: 12 * 3600,
            session_idle_secs: 2 * 3600,
            recheck_secs: 600,
        }
    }
}

/// `[http]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP server listens on.
    pub addr: SocketAddr,
    /// Reverse proxies whose `X-Forwarded-For` is believed: a connection from one of these
    /// counts as coming from the last address the header names that is not itself a
    /// trusted proxy (for the per-address session limits). Empty: the peer address counts.
    pub trusted_proxies: Vec<IpAddr>,
}

/// `[media]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Address of the UDP media socket (one port for every peer).
    pub addr: SocketAddr,
    /// IP addresses announced in ICE candidates (a public IP behind 1:1 NAT, say). Empty:
    /// the bind address, which must then not be a wildcard.
    pub announce_ips: Vec<IpAddr>,
    /// Media shards: threads, each with its own UDP port (`addr`'s port + its index). 0:
    /// one per CPU core.
    pub shards: usize,
    /// Estimate each attendee's downlink and send each the simulcast layers (and the video)
    /// it can carry, audio first. Off: everyone gets every camera they show at its first
    /// (lowest) simulcast layer, never paused for bandwidth.
    pub allocate_bandwidth: bool,
    /// In a room with more microphones than this, forward to each listener only this many
    /// loudest (plus the floor holder's). 0: every microphone.
    pub loudest_speakers: usize,
    /// Repeat recent audio packets (RFC 2198 RED) to listeners whose links lose packets,
    /// within what their bandwidth affords.
    pub audio_redundancy: bool,
    /// ICE over TCP: where the passive TCP candidate listens (one port for every shard), for
    /// attendees whose network blocks UDP. Unset: no ICE-TCP. It may be `http.addr` itself
    /// (443 with built-in TLS, say): connections are told apart by their first bytes.
    pub tcp_addr: Option<SocketAddr>,
    /// The port announced in the TCP candidate when a stream proxy in front of Plenary
    /// forwards another one (e.g. 443) to `tcp_addr`. Unset: `tcp_addr`'s port.
    pub tcp_announce_port: Option<u16>,
}

/// `[turn]`: a TURN server that trusts Plenary's credentials (coturn with
/// `use-auth-secret` and the same `static-auth-secret`; the TURN REST API scheme).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs handed to clients, e.g. `turn:turn.example.coop:3478`,
    /// `turn:turn.example.coop:3478?transport=tcp`, `turns:turn.example.coop:443?transport=tcp`.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`. Never sent to clients, never logged.
    pub secret: String,
    /// How long the credentials in a `welcome` stay valid, in seconds.
    pub ttl: u64,
}

/// `[tls]`: HTTPS on `http.addr` with a certificate chain and key in PEM files, read again
/// on SIGHUP (after a renewal). Both unset: plain HTTP (put a reverse proxy in front).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first.
    pub cert: String,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

impl TlsConfig {
    /// Whether built-in TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }
}

/// The default of `turn.ttl`: a day, so that a long meeting never outlives its credentials
/// (TURN allocations are refreshed with the credentials they were made with).
pub const DEFAULT_TURN_TTL_SECS: u64 = 24 * 3600;

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            urls: Vec::new(),
            secret: String::new(),
            ttl: DEFAULT_TURN_TTL_SECS,
        }
    }
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// `[auth]`
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API key → secret pairs that sign HS256 grants (`plenary token`, backends).
    /// Secrets must be at least 32 characters.
    pub api_keys: BTreeMap<String, String>,
    /// The `aud` claim every grant must carry.
    pub audience: String,
    /// Dev mode: `auto` (on when HTTP listens on loopback only and no identity provider is
    /// configured), `on` (only allowed on loopback) or `off`.
    pub dev_mode: DevMode,
    /// Longest lifetime (`exp - nbf`) an API-key grant may have, in seconds. Every grant
    /// opens one join, so mint one per join, shortly before it.
    pub max_grant_ttl_secs: u64,
}

/// The default of `auth.max_grant_ttl_secs`: 10 minutes.
pub const DEFAULT_MAX_GRANT_TTL_SECS: u64 = 600;

/// Whether the page may mint its own grants (no sign-in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DevMode {
    /// On exactly when HTTP is loopback-only.
    #[default]
    Auto,
    /// On (refused unless HTTP is loopback-only).
    On,
    /// Off.
    Off,
}

/// `[limits]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most participants one room holds.
    pub max_participants_per_room: usize,
    /// Most participants the whole server holds.
    pub max_participants: usize,
    /// Seconds a peer may go without ICE consent before it is removed.
    pub ice_timeout_secs: u64,
    /// Seconds a signaling connection may stay silent before it is closed.
    pub signaling_idle_secs: u64,
    /// Seconds to wait for clients to go at shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds between telling every client the server is going away (`going_away`; joins
    /// are refused meanwhile with `shutting_down`) and closing their sessions.
    pub drain_secs: u64,
    /// Most signaling sessions (WebSockets at `/rtc`) open at once from one address; more
    /// are refused with HTTP 429. 0: no limit. Raise it for a load test from one machine.
    pub sessions_per_address: usize,
    /// New signaling sessions one address may open per second, after a burst of
    /// `sessions_per_address`; more are refused with HTTP 429. 0: no limit.
    pub session_rate_per_address: u32,
    /// Rooms with more participants than this switch to listener mode: only hosts and
    /// those given the floor may publish.
    pub listener_mode_above: usize,
    /// The web client joins with its microphone muted in rooms larger than this.
    pub join_muted_above: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 7882)),
            announce_ips: Vec::new(),
            shards: 0,
            allocate_bandwidth: true,
            loudest_speakers: 3,
            audio_redundancy: true,
            tcp_addr: None,
            tcp_announce_port: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            api_keys: BTreeMap::new(),
            audience: "plenary".into(),
            dev_mode: DevMode::Auto,
            max_grant_ttl_secs: DEFAULT_MAX_GRANT_TTL_SECS,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_participants_per_room: 500,
            max_participants: 2000,
            ice_timeout_secs: 5,
            signaling_idle_secs: 30,
            shutdown_grace_secs: 5,
            drain_secs: 2,
            sessions_per_address: 100,
            session_rate_per_address: 10,
            listener_mode_above: 50,
            join_muted_above: 20,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("api_keys", &self.api_keys.keys().collect::<Vec<_>>())
            .field("audience", &self.audience)
            .field("dev_mode", &self.dev_mode)
            .field("max_grant_ttl_secs", &self.max_grant_ttl_secs)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("http", &self.http)
            .field("media", &self.media)
            .field("auth", &self.auth)
            .field("ice_servers", &self.ice_servers.len())
            .field("turn", &self.turn)
            .field("tls", &self.tls)
            .field("limits", &self.limits)
            .field("membership", &self.membership)
            .field("meetings", &self.meetings)
            .finish()
    }
}

/// Where `plenary` reads its configuration when neither `--config` nor `PLENARY_CONFIG`
/// names a file (and only if it exists), for `serve` and the tools alike.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/plenary/plenary.toml";

/// Which configuration file is read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// Named with `--config` or `PLENARY_CONFIG`.
    Given(PathBuf),
    /// Found at the default location.
    Default(PathBuf),
    /// No file: defaults and `PLENARY_*` variables only.
    NoFile(PathBuf),
}

impl ConfigSource {
    /// The file named by `given`, else `default` if it exists, else none.
    pub fn locate(given: Option<&Path>, default: &Path) -> ConfigSource {
        match given {
            Some(p) => ConfigSource::Given(p.to_path_buf()),
            None if default.is_file() => ConfigSource::Default(default.to_path_buf()),
            None => ConfigSource::NoFile(default.to_path_buf()),
        }
    }

    /// The file to read, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Given(p) | ConfigSource::Default(p) => Some(p),
            ConfigSource::NoFile(_) => None,
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Given(p) => write!(f, "config file {}", p.display()),
            ConfigSource::Default(p) => {
                write!(f, "config file {} (the default location)", p.display())
            }
            ConfigSource::NoFile(default) => write!(
                f,
                "no config file (none given with --config or PLENARY_CONFIG, none at {})",
                default.display()
            ),
        }
    }
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML (file or environment) does not fit the schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// The values do not make sense together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the file (if any), applies `PLENARY_*` variables from `env`, and returns the
    /// result unvalidated (flags come next; call [`Config::validate`] last). What is odd but
    /// harmless (an unknown `PLENARY_*` variable) is logged as a warning.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (config, warnings) = Config::load_with_warnings(path, env)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(config)
    }

    /// [`Config::load`], returning the warnings instead of logging them.
    pub fn load_with_warnings(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let warnings = apply_env(&mut table, env)?;
        let config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        Ok((config, warnings))
    }

    /// A configuration for tests: HTTP and media on ephemeral loopback ports, one API key.
    pub fn for_tests() -> Config {
        let mut config = Config::default();
        config.http.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.media.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.auth.api_keys.insert(
            "test-key".into(),
            "test-secret-that-is-at-least-32-characters".into(),
        );
        config.limits.ice_timeout_secs = 3;
        // Tests stop many servers: no pause between `going_away` and the close.
        config.limits.drain_secs = 0;
        // Tests exercise the split media plane even on a one-core machine; PLENARY_TEST_SHARDS
        // picks another count (1 runs everything on one shard).
        config.media.shards = std::env::var("PLENARY_TEST_SHARDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        config.media.allocate_bandwidth =
            std::env::var("PLENARY_TEST_ALLOCATE").map_or(true, |v| v != "0");
        config
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (key, secret) in &self.auth.api_keys {
            if key.is_empty() {
                return invalid("auth.api_keys: an API key is empty".into());
            }
            if secret.len() < 32 {
                return invalid(format!(
                    "auth.api_keys: the secret of key {key:?} is shorter than 32 characters"
                ));
            }
        }
        if self.auth.audience.is_empty() {
            return invalid("auth.audience is empty".into());
        }
        if self.auth.max_grant_ttl_secs == 0 {
            return invalid("auth.max_grant_ttl_secs must be at least 1".into());
        }
        let loopback = self.http.addr.ip().is_loopback();
        if self.auth.dev_mode == DevMode::On && !loopback {
            return invalid(format!(
                "auth.dev_mode = \"on\" lets anyone mint grants, so it is only allowed when \
                 http.addr is a loopback address (it is {})",
                self.http.addr
            ));
        }
        if !loopback && self.auth.api_keys.is_empty() && self.membership.instances.is_empty() {
            return invalid(format!(
                "http.addr {} is reachable from other machines but no authentication is \
                 configured: add [auth] api_keys (or bind 127.0.0.1 for dev mode)",
                self.http.addr
            ));
        }
        if self.media.addr.ip().is_unspecified() && self.media.announce_ips.is_empty() {
            return invalid(format!(
                "media.addr {} is a wildcard address: set media.announce_ips to the address(es) \
                 clients should send media to",
                self.media.addr
            ));
        }
        if self.media.shards > crate::media::MAX_SHARDS {
            return invalid(format!(
                "media.shards is {}: at most {} (0 means one per CPU core)",
                self.media.shards,
                crate::media::MAX_SHARDS
            ));
        }
        let ports = self.media_shards() as u32;
        let first = u32::from(self.media.addr.port());
        if first != 0 && first + ports - 1 > u32::from(u16::MAX) {
            return invalid(format!(
                "media.addr port {first} + {ports} shards runs past port 65535: pick a lower port"
            ));
        }
        if self.limits.max_participants_per_room == 0 || self.limits.max_participants == 0 {
            return invalid("limits: participant limits must be at least 1".into());
        }
        if self.limits.ice_timeout_secs == 0 || self.limits.signaling_idle_secs == 0 {
            return invalid("limits: timeouts must be at least 1 second".into());
        }
        self.meetings.validate().map_err(ConfigError::Invalid)?;
        self.validate_reachability()?;
        if self.limits.drain_secs > 60 || self.limits.shutdown_grace_secs > 60 {
            return invalid(
                "limits.drain_secs and limits.shutdown_grace_secs are at most 60 seconds each \
                 (their sum plus a second or two is how long a stop takes)"
                    .into(),
            );
        }
        self.validate_membership()
    }

    /// `[turn]`, `[tls]` and ICE-TCP.
    fn validate_reachability(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let turn = &self.turn;
        if turn.urls.is_empty() != turn.secret.is_empty() {
            return invalid(
                "turn: set both urls and secret (coturn's static-auth-secret), or neither".into(),
            );
        }
        for url in &turn.urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                return invalid(format!(
                    "turn.urls: {url:?} is not a turn: or turns: URL (plain STUN servers go in \
                     [[ice_servers]])"
                ));
            }
        }
        if !turn.secret.is_empty() && turn.secret.len() < 16 {
            return invalid("turn.secret is shorter than 16 characters".into());
        }
        if !turn.urls.is_empty() && !(60..=7 * 24 * 3600).contains(&turn.ttl) {
            return invalid("turn.ttl must be 60 seconds to 7 days".into());
        }
        if self.tls.enabled() && (self.tls.cert.is_empty() || self.tls.key.is_empty()) {
            return invalid("tls: set both cert and key (PEM files), or neither".into());
        }
        if let Some(tcp) = self.media.tcp_addr {
            if tcp.ip().is_unspecified() && self.media.announce_ips.is_empty() {
                return invalid(format!(
                    "media.tcp_addr {tcp} is a wildcard address: set media.announce_ips to the \
                     address(es) clients should connect to"
                ));
            }
        }
        if self.media.tcp_announce_port == Some(0) {
            return invalid("media.tcp_announce_port must not be 0".into());
        }
        Ok(())
    }

    /// Whether ICE-TCP shares the HTTP listener (`media.tcp_addr` = `http.addr`, with a
    /// fixed port: two ephemeral ports are two listeners).
    pub fn tcp_shares_http(&self) -> bool {
        self.media.tcp_addr == Some(self.http.addr) && self.http.addr.port() != 0
    }

    fn validate_membership(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let m = &self.membership;
        if m.grant_ttl_secs == 0 || m.grant_ttl_secs > 120 {
            return invalid("membership.grant_ttl_secs must be 1 to 120".into());
        }
        if m.invitation_max_days == 0 {
            return invalid("membership.invitation_max_days must be at least 1".into());
        }
        if m.session_idle_secs == 0 || m.session_absolute_secs < m.session_idle_secs {
            return invalid(
                "membership: session_absolute_secs must be at least session_idle_secs (> 0)".into(),
            );
        }
        if m.instances.is_empty() {
            return Ok(());
        }
        let public = url::Url::parse(&m.public_url).map_err(|e| {
            ConfigError::Invalid(format!(
                "membership.public_url {:?} is not a URL ({e}); it is required when \
                 instances are configured",
                m.public_url
            ))
        })?;
        if !matches!(public.scheme(), "http" | "https") {
            return invalid("membership.public_url must be http(s)".into());
        }
        let mut ids = std::collections::HashSet::new();
        let mut domains: BTreeMap<String, &str> = BTreeMap::new();
        for i in &m.instances {
            if i.id.is_empty()
                || !i
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return invalid(format!(
                    "membership.instances: id {:?} must be letters, digits, '-', '_' or '.'",
                    i.id
                ));
            }
            if !ids.insert(i.id.clone()) {
                return invalid(format!("membership.instances: id {:?} appears twice", i.id));
            }
            match url::Url::parse(&i.base_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return invalid(format!(
                        "membership.instances: base_url {:?} of {:?} is not an http(s) URL",
                        i.base_url, i.id
                    ))
                }
            }
            let domain = i.handle_domain().unwrap_or_default();
            if !valid_handle_domain(&domain) {
                return invalid(format!(
                    "membership.instances: domain {:?} of {:?} is not a domain (like \
                     social.coop)",
                    i.domain, i.id
                ));
            }
            if let Some(first) = domains.insert(domain.clone(), &i.id) {
                return invalid(format!(
                    "membership.instances: {first:?} and {:?} would both give handles \
                     @user@{domain}; each instance needs its own domain (set `domain` to the \
                     one its members' handles end with)",
                    i.id
                ));
            }
        }
        Ok(())
    }

    /// Whether the server keeps a database: with sign-in configured, or when asked to keep
    /// the record of meetings without it (`meetings.always_record`).
    pub fn has_store(&self) -> bool {
        !self.membership.instances.is_empty() || self.meetings.always_record
    }

    /// Whether dev mode (grants from the page, no sign-in) is on.
    pub fn dev_mode(&self) -> bool {
        match self.auth.dev_mode {
            DevMode::On => true,
            DevMode::Off => false,
            DevMode::Auto => {
                self.http.addr.ip().is_loopback() && self.membership.instances.is_empty()
            }
        }
    }

    /// How many media shards to run: `media.shards`, or one per core (at most
    /// [`crate::media::MAX_SHARDS`]).
    pub fn media_shards(&self) -> usize {
        let n = match self.media.shards {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        n.clamp(1, crate::media::MAX_SHARDS)
    }

    /// The IPs put in ICE candidates, given the media socket's actual address.
    pub fn announce_ips(&self, bound: SocketAddr) -> Vec<IpAddr> {
        if self.media.announce_ips.is_empty() {
            vec![bound.ip()]
        } else {
            self.media.announce_ips.clone()
        }
    }

    /// The keys that sign and verify HS256 grants.
    pub fn key_ring(&self) -> KeyRing {
        KeyRing::new(
            self.auth.api_keys.clone(),
            self.auth.audience.clone(),
            Duration::from_secs(self.auth.max_grant_ttl_secs),
        )
    }

    /// Mints a grant with the first configured API key (for `plenary token` and tests).
    pub fn mint_grant(&self, claims: &Claims) -> Result<String, GrantError> {
        self.key_ring().mint(claims)
    }
}

/// Something odd about the configuration that does not stop Plenary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A `PLENARY_*` variable names no configuration key. Not an error: Kubernetes gives
    /// every pod `PLENARY_SERVICE_HOST`, `PLENARY_PORT`, … for a Service named `plenary`.
    UnknownEnv(String),
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::UnknownEnv(name) => write!(
                f,
                "ignoring environment variable {name}: no such configuration key (a typo? \
                 keys are PLENARY_<SECTION>_<KEY>, e.g. PLENARY_HTTP_ADDR)"
            ),
        }
    }
}

/// Every configuration key, as a TOML table of sections (options set, so that keys that
/// default to nothing are known too).
fn schema() -> Result<toml::Table, ConfigError> {
    let mut full = Config::default();
    full.media.tcp_addr = Some(full.media.addr);
    full.media.tcp_announce_port = Some(443);
    toml::Table::try_from(full).map_err(|e| ConfigError::Parse(e.to_string()))
}

/// Applies `PLENARY_SECTION_KEY=value` variables onto the TOML table. A variable naming no
/// key is returned as a warning; a known key with a value of the wrong shape fails later,
/// when the table is read into [`Config`].
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<ConfigWarning>, ConfigError> {
    let schema = schema()?;
    let mut warnings = Vec::new();
    // Config keys that are not sections (top-level values).
    let top_level = ["ice_servers"];
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("PLENARY_") else {
            continue;
        };
        // Variables of the CLI itself, not configuration keys.
        if matches!(rest, "CONFIG" | "LOG") {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let parsed = parse_env_value(&value);
        if let Some(key) = top_level.iter().find(|k| **k == lower) {
            table.insert((*key).to_string(), parsed);
            continue;
        }
        let found = schema
            .iter()
            .filter_map(|(section, v)| {
                let keys = v.as_table()?;
                let key = lower.strip_prefix(&format!("{section}_"))?;
                keys.contains_key(key)
                    .then(|| (section.clone(), key.to_string()))
            })
            .next();
        let Some((section, key)) = found else {
            warnings.push(ConfigWarning::UnknownEnv(name.clone()));
            continue;
        };
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            return Err(ConfigError::Parse(format!(
                "{name}: section is not a table"
            )));
        };
        section_table.insert(key, parsed);
    }
    Ok(warnings)
}

/// Reads an environment value as a TOML value (number, bool, array, inline table) when it
/// parses as one, else as a plain string.
fn parse_env_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.into())),
        Err(_) => toml::Value::String(value.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_in_dev_mode() {
        let c = Config::load(None, Vec::new()).unwrap();
        c.validate().unwrap();
        assert!(c.dev_mode());
        assert_eq!(
            c.auth.max_grant_ttl_secs, 600,
            "API-key grants live 10 minutes at most"
        );
        assert_eq!(c.http.addr.port(), 8080);
        assert_eq!(c.media.addr.port(), 7882);
    }

    #[test]
    fn env_overrides_file_and_types_values() {
        let dir = std::env::temp_dir().join(format!("plenary-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[http]\naddr = \"127.0.0.1:9000\"\n[limits]\nmax_participants = 7\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("PLENARY_HTTP_ADDR", "127.0.0.1:9100"),
                ("PLENARY_MEDIA_ANNOUNCE_IPS", "[\"203.0.113.7\"]"),
                ("PLENARY_LIMITS_ICE_TIMEOUT_SECS", "9"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.addr.port(), 9100);
        assert_eq!(c.limits.max_participants, 7);
        assert_eq!(c.limits.ice_timeout_secs, 9);
        assert_eq!(
            c.media.announce_ips,
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn unknown_variables_warn_and_malformed_known_ones_refuse() {
        // What Kubernetes sets for a Service named `plenary`, and a typo: warnings only.
        let (c, warnings) = Config::load_with_warnings(
            None,
            env(&[
                ("PLENARY_SERVICE_HOST", "10.0.0.7"),
                ("PLENARY_PORT", "tcp://10.0.0.7:8080"),
                ("PLENARY_PORT_8080_TCP_PROTO", "tcp"),
                ("PLENARY_HTTP_PORTT", "1"),
                ("PLENARY_MEDIA_SHARDS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(c.media.shards, 3, "known variables still apply");
        let names: Vec<String> = warnings
            .iter()
            .map(|ConfigWarning::UnknownEnv(n)| n.clone())
            .collect();
        assert_eq!(
            names,
            [
                "PLENARY_SERVICE_HOST",
                "PLENARY_PORT",
                "PLENARY_PORT_8080_TCP_PROTO",
                "PLENARY_HTTP_PORTT"
            ]
        );
        assert!(
            warnings[0].to_string().contains("ignoring"),
            "{}",
            warnings[0]
        );
        // A known key with a malformed value is refused.
        let err = Config::load(None, env(&[("PLENARY_HTTP_ADDR", "not-an-address")])).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)), "{err}");
        let err = Config::load(None, env(&[("PLENARY_MEDIA_SHARDS", "many")])).unwrap_err();
        assert!(err.to_string().contains("shards"), "{err}");
        // Keys that default to nothing are known too.
        let c = Config::load(
            None,
            env(&[
                ("PLENARY_MEDIA_TCP_ADDR", "127.0.0.1:7881"),
                ("PLENARY_TURN_URLS", "[\"turn:127.0.0.1:3478\"]"),
                ("PLENARY_TURN_SECRET", "a-turn-secret-long-enough"),
                ("PLENARY_TLS_CERT", "/etc/plenary/cert.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(c.media.tcp_addr, Some("127.0.0.1:7881".parse().unwrap()));
        assert_eq!(c.turn.urls, ["turn:127.0.0.1:3478"]);
        assert_eq!(c.tls.cert, "/etc/plenary/cert.pem");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("plenary-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[http]\nadress = \"x\"\n").unwrap();
        let err = Config::load(Some(&path), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn public_bind_without_auth_is_refused() {
        let mut c = Config::default();
        c.http.addr = "0.0.0.0:8080".parse().unwrap();
        c.media.announce_ips = vec!["203.0.113.7".parse().unwrap()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("no authentication"), "{err}");
        assert!(!c.dev_mode());
        c.auth
            .api_keys
            .insert("k".into(), "0123456789abcdef0123456789abcdef".into());
        c.validate().unwrap();
    }

    #[test]
    fn short_secrets_and_wildcard_media_without_announce_are_refused() {
        let mut c = Config::default();
        c.auth.api_keys.insert("k".into(), "short".into());
        assert!(c.validate().unwrap_err().to_string().contains("32"));
        let mut c = Config::default();
        c.media.addr = "0.0.0.0:7882".parse().unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("announce_ips"));
    }

    fn instance(id: &str, base_url: &str, domain: &str) -> InstanceConfig {
        InstanceConfig {
            id: id.into(),
            base_url: base_url.into(),
            domain: domain.into(),
            display_name: String::new(),
            members: true,
            host_roles: Vec::new(),
            host_role_ids: Vec::new(),
            host_permissions: 0,
            pleroma_staff_are_hosts: true,
        }
    }

    #[test]
    fn handle_domains_come_from_the_configuration_and_must_differ() {
        assert_eq!(
            instance("a", "https://Social.Coop/", "").handle_domain(),
            Some("social.coop".into())
        );
        assert_eq!(
            instance("a", "http://127.0.0.1:3000", "").handle_domain(),
            Some("127.0.0.1:3000".into())
        );
        assert_eq!(
            instance("a", "https://web.example.org", "Example.org").handle_domain(),
            Some("example.org".into())
        );
        let mut c = Config::default();
        c.membership.public_url = "https://meet.example".into();
        c.membership.instances = vec![
            instance("coop", "https://social.coop", ""),
            instance("partner", "https://partner.example", ""),
        ];
        c.validate().unwrap();
        // A second instance whose handles would read @user@social.coop is refused.
        c.membership.instances[1].domain = "SOCIAL.coop".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("\"coop\" and \"partner\""), "{err}");
        assert!(err.contains("@user@social.coop"), "{err}");
        c.membership.instances[1].domain = "not a domain/".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("is not a domain"), "{err}");
    }

    #[test]
    fn the_config_file_is_the_given_one_else_the_default_if_it_exists() {
        let dir = std::env::temp_dir().join(format!("plenary-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let default = dir.join("plenary.toml");
        let _ = std::fs::remove_file(&default);
        let given = dir.join("given.toml");
        assert_eq!(
            ConfigSource::locate(Some(&given), &default),
            ConfigSource::Given(given.clone())
        );
        let none = ConfigSource::locate(None, &default);
        assert_eq!(none.path(), None);
        assert!(none.to_string().contains("--config"), "{none}");
        std::fs::write(&default, "").unwrap();
        let found = ConfigSource::locate(None, &default);
        assert_eq!(found.path(), Some(default.as_path()));
        assert!(found.to_string().contains("default location"), "{found}");
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = Config::for_tests();
        c.turn.urls = vec!["turn:127.0.0.1:3478".into()];
        c.turn.secret = "the-turn-secret-123".into();
        let shown = format!("{c:?}");
        assert!(shown.contains("test-key"));
        assert!(!shown.contains("test-secret"));
        assert!(shown.contains("turn:127.0.0.1:3478"));
        assert!(!shown.contains("the-turn-secret"), "{shown}");
    }

    #[test]
    fn the_annotated_example_file_is_valid_and_says_the_defaults() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/plenary.example.toml"));
        let c = Config::load(Some(path), Vec::new()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.turn.ttl, DEFAULT_TURN_TTL_SECS);
        assert!(!c.tls.enabled());
        assert_eq!(c.media.tcp_addr, None);
    }

    #[test]
    fn turn_tls_and_tcp_settings_are_checked() {
        let mut c = Config::default();
        c.turn.urls = vec!["turn:127.0.0.1:3478".into()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("both urls and secret"), "{err}");
        c.turn.secret = "0123456789abcdef".into();
        c.validate().unwrap();
        c.turn.urls.push("stun:127.0.0.1:3478".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not a turn:"));
        c.turn.urls.pop();
        c.turn.ttl = 5;
        assert!(c.validate().unwrap_err().to_string().contains("turn.ttl"));

        let mut c = Config::default();
        c.tls.cert = "cert.pem".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("both cert and key"));
        c.tls.key = "key.pem".into();
        c.validate().unwrap();

        let mut c = Config::default();
        c.media.tcp_addr = Some("0.0.0.0:443".parse().unwrap());
        assert!(c.validate().unwrap_err().to_string().contains("wildcard"));
        c.media.announce_ips = vec!["203.0.113.7".parse().unwrap()];
        c.media.addr = "0.0.0.0:7882".parse().unwrap();
        c.validate().unwrap();
        assert!(!c.tcp_shares_http());
        c.http.addr = "127.0.0.1:443".parse().unwrap();
        c.media.tcp_addr = Some(c.http.addr);
        assert!(c.tcp_shares_http());
    }
}
