//! Plenary: a self-hosted WebRTC SFU for the general meetings of co-operatives.
//!
//! # Layout
//! - [`admission`]: per-address limits on signaling sessions, and the live-session count.
//! - [`config`]: the one typed configuration (file, `PLENARY_*` environment, flags).
//! - [`grant`]: room grants (JWT) — minting and the checks made on every join.
//! - [`http`]: the axum router — web client, JSON API, `/rtc` WebSocket, health, metrics.
//! - [`listen`]: the HTTP port's listener — plain or TLS, and ICE-TCP when it shares the port.
//! - [`tls`]: built-in TLS (rustls), certificate files reloaded on SIGHUP.
//! - [`lifecycle`]: serving → draining → stopping, as sessions and handlers see it.
//! - [`signal`]: one signaling session per WebSocket (docs/protocol.md).
//! - [`media`]: the media plane — UDP sockets, ICE-TCP, WebRTC peers (str0m), demux, and
//!   the forwarding core from the `plenary-sfu` crate.
//! - [`membership`]: Mastodon sign-in, member grants (Ed25519), rooms, invitations, the
//!   SQLite store and its audit log.
//! - [`record`]: the record of meetings (attendance, speakers, motions, votes) in the
//!   store, the meetings that go on after a restart, and the minutes.
//! - [`memory`]: memory after sessions end: why jemalloc, and the used-grant purge.
//! - [`metrics`]: Prometheus metrics, fed from plain counters once a second.
//! - [`secret`]: random tokens and the hashing of secrets (the only copy of each).
//! - [`turn`]: time-limited TURN credentials (coturn's shared-secret scheme).
//!
//! [`start`] binds the sockets named in the config (port 0 works, for tests), spawns the
//! media thread and the HTTP server, and returns a [`Server`] handle; the binary only parses
//! flags, sets up logging and waits for Ctrl-C or SIGTERM, then calls [`Server::shutdown`].

pub mod admission;
pub mod config;
pub mod grant;
pub mod http;
pub mod lifecycle;
pub mod listen;
pub mod media;
pub mod membership;
pub mod memory;
pub mod metrics;
pub mod record;
pub mod secret;
pub mod signal;
pub mod tls;
pub mod turn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lifecycle::Phase;

pub use config::Config;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The HTTP address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    BindHttp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The media address could not be bound.
    #[error("cannot bind the media UDP socket on {addr}: {source}")]
    BindMedia {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The ICE-TCP address could not be bound.
    #[error("cannot listen for ICE-TCP on {addr}: {source}")]
    BindTcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error("cannot use the TLS certificate: {0}")]
    Tls(#[from] tls::TlsError),
    /// The media plane could not start.
    #[error("cannot start the media plane: {0}")]
    Media(std::io::Error),
    /// The membership store or keys could not be opened.
    #[error("cannot start membership: {0}")]
    Membership(String),
}

/// A running Plenary.
pub struct Server {
    http_addr: SocketAddr,
    media_addr: SocketAddr,
    dev_mode: bool,
    stopper: lifecycle::Stopper,
    admission: Arc<admission::Admission>,
    metrics: Arc<metrics::Metrics>,
    media: media::MediaHandle,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
    media_threads: media::MediaThreads,
    media_addrs: Vec<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tls: Option<Arc<tls::TlsFiles>>,
    drain: Duration,
    grace: Duration,
    recorder: Option<record::Recorder>,
}

impl Server {
    /// Where HTTP (and the `/rtc` WebSocket) listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The first media shard's UDP address.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Every media shard's UDP address (one port per shard).
    pub fn media_addrs(&self) -> &[SocketAddr] {
        &self.media_addrs
    }

    /// Where ICE-TCP listens, when on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Whether HTTP is served over TLS (`https://`, `wss://`).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads the TLS certificate and key again (what SIGHUP does). On failure the
    /// current certificate stays.
    pub fn reload_tls(&self) -> Result<(), tls::TlsError> {
        match &self.tls {
            Some(t) => t.reload(),
            None => Ok(()),
        }
    }

    /// Whether dev mode is on.
    pub fn dev_mode(&self) -> bool {
        self.dev_mode
    }

    /// Stops, in order: drains for `limits.drain_secs` if any session is open (joins refused
    /// with `shutting_down`, every client told `going_away`, `/healthz` 503), then closes
    /// every session (`closing`
    /// `server_shutdown`), waits up to `limits.shutdown_grace_secs` for sessions and the
    /// HTTP server to end, stops the media plane, and writes the audit log's last rows.
    pub async fn shutdown(self) {
        let sessions = self.admission.live();
        self.stopper.enter(Phase::Draining);
        self.metrics.draining.set(1);
        tracing::info!(
            sessions,
            "draining: joins refused, clients told; closing in {:?}",
            self.drain
        );
        // Nobody to tell: no reason to wait.
        if sessions > 0 {
            tokio::time::sleep(self.drain).await;
        }
        self.stopper.enter(Phase::Stopping);
        let deadline = tokio::time::Instant::now() + self.grace;
        self.media.shutdown().await;
        if !self.admission.wait_idle(self.grace).await {
            tracing::warn!(
                left = self.admission.live(),
                "sessions did not end within the grace time"
            );
        }
        match tokio::time::timeout_at(deadline, self.http_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("HTTP server ended with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("HTTP server task failed: {e}"),
            Err(_) => tracing::warn!("HTTP connections did not close within the grace time"),
        }
        self.media_threads.join().await;
        // The media plane has handed over its last records; wait until they are written.
        if let Some(r) = self.recorder {
            r.finish().await;
        }
        tracing::info!(sessions, "stopped");
    }
}

/// Validates `config`, binds its sockets and starts serving.
pub async fn start(config: Config) -> Result<Server, StartError> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.http.addr)
        .await
        .map_err(|source| StartError::BindHttp {
            addr: config.http.addr,
            source,
        })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| StartError::BindHttp {
            addr: config.http.addr,
            source,
        })?;
    // One UDP socket per media shard: shard i on the configured port + i (or each on an
    // ephemeral port when the configured port is 0), announced in its own candidates.
    let shards = config.media_shards();
    let mut sockets = Vec::with_capacity(shards);
    let mut media_addrs = Vec::with_capacity(shards);
    for i in 0..shards {
        let mut addr = config.media.addr;
        if addr.port() != 0 {
            addr.set_port(addr.port() + i as u16);
        }
        let udp = std::net::UdpSocket::bind(addr)
            .map_err(|source| StartError::BindMedia { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| StartError::BindMedia { addr, source })?;
        let announce: Vec<SocketAddr> = config
            .announce_ips(bound)
            .into_iter()
            .map(|ip| SocketAddr::new(ip, bound.port()))
            .collect();
        media_addrs.push(bound);
        sockets.push((udp, announce));
    }
    let media_addr = media_addrs[0];
    let tls = match config.tls.enabled() {
        true => Some(Arc::new(tls::TlsFiles::load(
            std::path::Path::new(&config.tls.cert),
            std::path::Path::new(&config.tls.key),
        )?)),
        false => None,
    };
    // ICE-TCP: its own listener, or the HTTP one when they share the address.
    let (tcp_listener, tcp_addr) = match config.media.tcp_addr {
        None => (None, None),
        Some(_) if config.tcp_shares_http() => (None, Some(http_addr)),
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::BindTcp { addr, source })?;
            let bound = l
                .local_addr()
                .map_err(|source| StartError::BindTcp { addr, source })?;
            (Some(l), Some(bound))
        }
    };
    let tcp_announce: Vec<SocketAddr> = match tcp_addr {
        None => Vec::new(),
        Some(bound) => {
            let port = config.media.tcp_announce_port.unwrap_or(bound.port());
            config
                .announce_ips(bound)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()
        }
    };
    let dev_mode = config.dev_mode();
    let mut keys = config.key_ring();
    if dev_mode && config.auth.api_keys.is_empty() {
        // Dev mode signs its grants with a key that lives only in this process.
        keys.insert(
            format!("dev-{}", secret::random_token(8)),
            secret::random_token(48),
        );
    }
    // One database for sign-in and the record of meetings, when either needs it.
    let store =
        if config.has_store() {
            let path = std::path::Path::new(&config.membership.database);
            Some(membership::store::Store::open(path).map_err(|e| {
                StartError::Membership(format!("{}: {e}", config.membership.database))
            })?)
        } else {
            None
        };
    let membership = match (&store, config.membership.instances.is_empty()) {
        (Some(store), false) => {
            let service =
                membership::Membership::new(config.membership.clone(), store.clone(), keys.clone())
                    .map_err(StartError::Membership)?;
            Some(Arc::new(service))
        }
        _ => None,
    };
    // What the meetings keep goes to the store (else only to the server log); meetings
    // that were going on before a restart go on.
    let within = config.meetings.continue_within();
    let (recorder, continued) = match &store {
        Some(store) => {
            let now = media::control::clock();
            let continued = store
                .run(move |c| record::restore::continuing(c, now, within))
                .await
                .map_err(|e| StartError::Membership(format!("reading the meetings: {e}")))?;
            let (tx, recorder) = record::spawn(store.clone());
            (Some((tx, recorder)), continued)
        }
        None => (None, Vec::new()),
    };
    let (record_tx, recorder) = match recorder {
        Some((tx, r)) => (Some(tx), Some(r)),
        None => (None, None),
    };
    let governance = plenary_meeting::GovernanceConfig {
        quorum: config
            .meetings
            .quorum_rule()
            .map_err(|e| StartError::Config(config::ConfigError::Invalid(e)))?,
        speaker_limit_secs: (config.meetings.speaker_limit_secs > 0)
            .then_some(config.meetings.speaker_limit_secs),
        record_chat: config.meetings.record_chat,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let settings = media::MediaSettings {
        ice_servers: config.ice_servers.clone(),
        turn: config.turn.clone(),
        max_participants_per_room: config.limits.max_participants_per_room,
        max_participants: config.limits.max_participants,
        ice_timeout: Duration::from_secs(config.limits.ice_timeout_secs),
        listener_mode_above: config.limits.listener_mode_above,
        recorder: record_tx,
        governance,
        continue_within: within,
        continued,
        allocate: config.media.allocate_bandwidth,
        loudest_speakers: config.media.loudest_speakers,
        audio_redundancy: config.media.audio_redundancy,
    };
    let (media, media_threads) = media::spawn(sockets, tcp_announce, settings, metrics.clone())
        .map_err(StartError::Media)?;

    if dev_mode {
        tracing::warn!(
            "DEV MODE: anyone who can reach http://{http_addr} may mint grants from the page"
        );
    }
    let (stopper, life) = lifecycle::lifecycle(Duration::from_secs(config.limits.drain_secs));
    let admission = admission::Admission::new(
        admission::AddressLimits {
            sessions: config.limits.sessions_per_address,
            per_sec: config.limits.session_rate_per_address,
        },
        config.http.trusted_proxies.clone(),
    );
    memory::spawn_grant_purge(keys.clone());
    let state = http::AppState::new(
        keys,
        membership,
        store,
        media.clone(),
        metrics.clone(),
        http::HttpSettings {
            dev_mode,
            idle_timeout: Duration::from_secs(config.limits.signaling_idle_secs),
            join_muted_above: config.limits.join_muted_above,
        },
        life.clone(),
        Arc::clone(&admission),
    );
    let router = http::app(state).into_make_service_with_connect_info::<listen::ClientAddr>();
    // The listener and the ICE-TCP intake stop when the stop sequence reaches `Stopping`.
    let (stop_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    {
        let life = life.clone();
        tokio::spawn(async move {
            life.reached(Phase::Stopping).await;
            let _ = stop_tx.send(true);
        });
    }
    let intake = tcp_addr.map(|_| media.tcp_intake());
    if let (Some(l), Some(intake)) = (tcp_listener, intake.clone()) {
        intake.spawn_accept_loop(l, shutdown_rx.clone());
    }
    let sharing = listen::PortSharing {
        tls: tls.clone(),
        ice_tcp: if config.tcp_shares_http() {
            intake
        } else {
            None
        },
    };
    let incoming =
        listen::spawn(listener, sharing, shutdown_rx).map_err(|source| StartError::BindHttp {
            addr: http_addr,
            source,
        })?;
    let http_task = tokio::spawn(async move {
        axum::serve(incoming, router)
            .with_graceful_shutdown(async move { life.reached(Phase::Stopping).await })
            .await
    });
    if let Some(files) = &tls {
        reload_on_sighup(Arc::clone(files));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%http_addr, scheme, ?media_addrs, ?tcp_addr, shards, "Plenary is listening");
    Ok(Server {
        http_addr,
        media_addr,
        dev_mode,
        stopper,
        admission,
        metrics,
        media,
        http_task,
        media_threads,
        media_addrs,
        tcp_addr,
        tls,
        drain: Duration::from_secs(config.limits.drain_secs),
        grace: Duration::from_secs(config.limits.shutdown_grace_secs),
        recorder,
    })
}

/// Reads the TLS files again on every SIGHUP (after `certbot renew`, say).
fn reload_on_sighup(files: Arc<tls::TlsFiles>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP (TLS reloads): {e}");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match files.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::warn!("SIGHUP: keeping the current TLS certificate: {e}"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = files;
}
