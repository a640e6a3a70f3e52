//! Plenary: a self-hosted WebRTC SFU for the general meetings of co-operatives.
//!
//! # Layout
//! - [`admission`]: per-address limits on signaling sessions, and the live-session count.
//! - [`config`]: the one typed configuration (file, `PLENARY_*` environment, flags).
//! - [`grant`]: room grants (JWT) — minting and the checks made on every join.
//! - [`http`]: the axum router — web client, JSON API, `/rtc` WebSocket, health, metrics.
//! - [`lifecycle`]: serving → draining → stopping, as sessions and handlers see it.
//! - [`signal`]: one signaling session per WebSocket (docs/protocol.md).
//! - [`media`]: the media plane — UDP socket, WebRTC peers (str0m), demux, and the
//!   forwarding core from the `plenary-sfu` crate.
//! - [`membership`]: Mastodon sign-in, member grants (Ed25519), rooms, invitations, the
//!   SQLite store and its audit log.
//! - [`metrics`]: Prometheus metrics, fed from plain counters once a second.
//!
//! [`start`] binds the sockets named in the config (port 0 works, for tests), spawns the
//! media thread and the HTTP server, and returns a [`Server`] handle; the binary only parses
//! flags, sets up logging and waits for Ctrl-C or SIGTERM, then calls [`Server::shutdown`].

pub mod admission;
pub mod config;
pub mod grant;
pub mod http;
pub mod lifecycle;
pub mod media;
pub mod membership;
pub mod metrics;
pub mod signal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lifecycle::Phase;

pub use config::Config;

/// Kernel send buffer of each HTTP connection: bounds what a client that stops reading
/// holds in the kernel (signaling messages are small; an SDP of a few hundred KiB still
/// goes out in a few writes).
const HTTP_SEND_BUFFER: usize = 256 * 1024;
/// Longest wait for the audit log's last rows at shutdown.
const AUDIT_FLUSH: Duration = Duration::from_secs(2);

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
    audit_task: Option<tokio::task::JoinHandle<()>>,
    drain: Duration,
    grace: Duration,
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
        // The control loop held the audit log's sender: the writer now drains and ends.
        if let Some(task) = self.audit_task {
            if tokio::time::timeout(AUDIT_FLUSH, task).await.is_err() {
                tracing::warn!("the audit log's last rows were not written in time");
            }
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
    let dev_mode = config.dev_mode();
    let mut keys = config.key_ring();
    if dev_mode && config.auth.api_keys.is_empty() {
        // Dev mode signs its grants with a key that lives only in this process.
        keys.insert(
            format!("dev-{}", media::peer::random_token(8)),
            media::peer::random_token(48),
        );
    }
    let membership = if config.membership.instances.is_empty() {
        None
    } else {
        let store =
            membership::store::Store::open(std::path::Path::new(&config.membership.database))
                .map_err(|e| {
                    StartError::Membership(format!("{}: {e}", config.membership.database))
                })?;
        let service = membership::Membership::new(config.membership.clone(), store, keys.clone())
            .map_err(StartError::Membership)?;
        Some(Arc::new(service))
    };
    // Host actions from the media plane go to the audit log (with sign-in configured) or
    // to the server log.
    let (audit, audit_task) = match &membership {
        Some(m) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<media::AuditRecord>(1024);
            let task = tokio::spawn(write_audit(m.store().clone(), rx));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let settings = media::MediaSettings {
        ice_servers: config.ice_servers.clone(),
        max_participants_per_room: config.limits.max_participants_per_room,
        max_participants: config.limits.max_participants,
        ice_timeout: Duration::from_secs(config.limits.ice_timeout_secs),
        listener_mode_above: config.limits.listener_mode_above,
        audit,
        allocate: config.media.allocate_bandwidth,
        loudest_speakers: config.media.loudest_speakers,
    };
    let (media, media_threads) =
        media::spawn(sockets, settings, metrics.clone()).map_err(StartError::Media)?;

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
    let state = http::AppState::new(
        keys,
        membership,
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
    let router = http::app(state).into_make_service_with_connect_info::<SocketAddr>();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = nix::sys::socket::setsockopt(
            &*tcp,
            nix::sys::socket::sockopt::SndBuf,
            &HTTP_SEND_BUFFER,
        );
    });
    let http_task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { life.reached(Phase::Stopping).await })
            .await
    });
    tracing::info!(%http_addr, ?media_addrs, shards, "Plenary is listening");
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
        audit_task,
        drain: Duration::from_secs(config.limits.drain_secs),
        grace: Duration::from_secs(config.limits.shutdown_grace_secs),
    })
}

/// Writes host actions to the audit log until the media plane drops its sender, then a
/// last row saying the server stopped.
async fn write_audit(
    store: membership::store::Store,
    mut rx: tokio::sync::mpsc::Receiver<media::AuditRecord>,
) {
    while let Some(r) = rx.recv().await {
        let now = grant::unix_now() as i64;
        let res = store
            .run(move |c| membership::store::audit(c, now, &r.kind, &r.actor, &r.room, r.detail))
            .await;
        if let Err(e) = res {
            tracing::warn!("cannot write the audit log: {e}");
        }
    }
    let now = grant::unix_now() as i64;
    let res = store
        .run(move |c| {
            membership::store::audit(
                c,
                now,
                "server_shutdown",
                "operator",
                "",
                serde_json::json!({}),
            )
        })
        .await;
    if let Err(e) = res {
        tracing::warn!("cannot write the audit log: {e}");
    }
}
