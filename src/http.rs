//! The HTTP side: the embedded web client, the JSON API, the signaling WebSocket, health and
//! metrics. [`app`] builds the router from an [`AppState`]; it opens no sockets itself, so
//! tests can drive it directly.
//!
//! Routes:
//! - `GET /` and `GET /{file}`: the web client in `web/`, embedded in the binary.
//! - `GET /healthz`: `ok` while the server takes joins, 503 while it shuts down.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /api/info`: `{"dev_mode":bool,"version":"…","join_muted_above":n}`.
//! - `POST /api/dev/grant`: dev mode only; `{"room","name","publish","host"}` →
//!   `{"grant","ws_url","identity"}`.
//! - `GET /rtc`: the signaling WebSocket (docs/protocol.md).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plenary_proto::Role;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::grant::{Claims, KeyRing, Permissions};
use crate::media::MediaHandle;
use crate::metrics::Metrics;

/// Lifetime of a dev-mode grant.
const DEV_GRANT_TTL: Duration = Duration::from_secs(600);

/// Plain settings of the HTTP side.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// The page may mint its own grants.
    pub dev_mode: bool,
    /// How long a joined signaling session may stay silent.
    pub idle_timeout: Duration,
    /// The web client joins muted in rooms larger than this.
    pub join_muted_above: usize,
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    join_muted_above: usize,
    keys: KeyRing,
    membership: Option<Arc<crate::membership::Membership>>,
    media: MediaHandle,
    metrics: Arc<Metrics>,
    dev_mode: bool,
    idle_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// State for the router.
    pub fn new(
        keys: KeyRing,
        membership: Option<Arc<crate::membership::Membership>>,
        media: MediaHandle,
        metrics: Arc<Metrics>,
        settings: HttpSettings,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        let HttpSettings {
            dev_mode,
            idle_timeout,
            join_muted_above,
        } = settings;
        AppState(Arc::new(Inner {
            join_muted_above,
            keys,
            membership,
            media,
            metrics,
            dev_mode,
            idle_timeout,
            shutdown,
        }))
    }

    /// The grant keys.
    pub fn keys(&self) -> &KeyRing {
        &self.0.keys
    }

    /// Sign-in, member grants and invitations, when instances are configured.
    pub fn membership(&self) -> Option<&Arc<crate::membership::Membership>> {
        self.0.membership.as_ref()
    }

    /// The media plane.
    pub fn media(&self) -> &MediaHandle {
        &self.0.media
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// How long a joined session may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        self.0.idle_timeout
    }

    /// Becomes `true` when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.0.shutdown.clone()
    }

    fn shutting_down(&self) -> bool {
        *self.0.shutdown.borrow()
    }
}

/// The router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { static_file(Path("index.html".into())).await }),
        )
        .route("/{file}", get(static_file))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/info", get(info))
        .route("/api/dev/grant", post(dev_grant))
        .route("/rtc", get(rtc))
        .merge(crate::membership::routes::routes())
        .with_state(state)
}

/// The web client, embedded at build time.
const WEB_FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "client.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/client.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
    (
        "invite",
        "text/html; charset=utf-8",
        include_str!("../web/invite.html"),
    ),
    (
        "invite.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/invite.js"),
    ),
    (
        "invitations",
        "text/html; charset=utf-8",
        include_str!("../web/invitations.html"),
    ),
    (
        "invitations.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/invitations.js"),
    ),
];

async fn static_file(Path(file): Path<String>) -> Response {
    match WEB_FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        "ok".into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
        .into_response()
}

#[derive(Serialize)]
struct Info {
    dev_mode: bool,
    version: &'static str,
    /// The web client joins muted in rooms larger than this.
    join_muted_above: usize,
}

async fn info(State(state): State<AppState>) -> Json<Info> {
    Json(Info {
        dev_mode: state.0.dev_mode,
        version: env!("CARGO_PKG_VERSION"),
        join_muted_above: state.0.join_muted_above,
    })
}

/// A JSON error body with its status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevGrantRequest {
    room: String,
    name: String,
    #[serde(default = "yes")]
    publish: bool,
    /// Dev mode only: a host grant (to try the host controls).
    #[serde(default)]
    host: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize)]
struct DevGrantResponse {
    grant: String,
    ws_url: &'static str,
    identity: String,
}

/// Room names: 1–64 of letters, digits, `-`, `_`, `.`.
pub fn valid_room_name(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 64
        && room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

async fn dev_grant(
    State(state): State<AppState>,
    body: Result<Json<DevGrantRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DevGrantResponse>, ApiError> {
    if !state.0.dev_mode {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "dev mode is off: grants come from sign-in or `plenary token`",
        ));
    }
    let Json(req) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "name must be 1 to 64 characters",
        ));
    }
    if !valid_room_name(&req.room) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "room must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let identity = format!("dev:{}", crate::media::peer::random_token(10));
    let permissions = if req.publish {
        Permissions::speaker()
    } else {
        Permissions {
            can_publish_data: true,
            ..Permissions::listener()
        }
    };
    let mut permissions = permissions;
    permissions.is_host = req.host;
    let role = if req.host { Role::Host } else { Role::Member };
    let claims =
        Claims::new(&req.room, &identity, name, role, DEV_GRANT_TTL).with_permissions(permissions);
    let grant = state
        .keys()
        .mint(&claims)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(DevGrantResponse {
        grant,
        ws_url: "/rtc",
        identity,
    }))
}

async fn rtc(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    if state.shutting_down() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    // Frames a little over the protocol limit reach the session, which answers `too_large`
    // with a reason instead of a bare protocol error.
    ws.max_message_size(2 * plenary_proto::MAX_SDP_MESSAGE_BYTES)
        .on_upgrade(move |socket| crate::signal::run(socket, state))
}
