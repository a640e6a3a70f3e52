//! The HTTP side: the embedded web client, the JSON API, the signaling WebSocket, health and
//! metrics. [`app`] builds the router from an [`AppState`]; it opens no sockets itself, so
//! tests can drive it directly.
//!
//! Routes:
//! - `GET /` and `GET /{file}`: the web client in `web/`, embedded in the binary (`x.html`
//!   is also served as `/x`).
//! - `GET /healthz`: `ok` while the server takes joins, 503 while it drains or stops.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /api/info`: `{"dev_mode":bool,"version":"…","join_muted_above":n,"sign_in":bool}`.
//! - `POST /api/dev/grant`: dev mode only; `{"room","name","publish","host"}` →
//!   `{"grant","ws_url","identity"}`.
//! - `GET /rtc`: the signaling WebSocket (docs/protocol.md).
//! - `GET /api/minutes/{room}`: a meeting's minutes, for hosts (`crate::record::routes`).
//! - `GET /rtc`: the signaling WebSocket (docs/protocol.md); 429 past the per-address
//!   session limits ([`crate::admission`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, Path, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plenary_proto::Role;
use serde::{Deserialize, Serialize};

use crate::admission::Admission;
use crate::grant::{Claims, KeyRing, Permissions};
use crate::lifecycle::{Lifecycle, Phase};
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
    /// The database (sign-in and the record of meetings), if the server keeps one.
    store: Option<crate::membership::store::Store>,
    media: MediaHandle,
    metrics: Arc<Metrics>,
    dev_mode: bool,
    idle_timeout: Duration,
    lifecycle: Lifecycle,
    admission: Arc<Admission>,
}

impl AppState {
    /// State for the router.
    #[allow(clippy::too_many_arguments)] // each is one of the state's parts, named
    pub fn new(
        keys: KeyRing,
        membership: Option<Arc<crate::membership::Membership>>,
        store: Option<crate::membership::store::Store>,
        media: MediaHandle,
        metrics: Arc<Metrics>,
        settings: HttpSettings,
        lifecycle: Lifecycle,
        admission: Arc<Admission>,
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
            store,
            media,
            metrics,
            dev_mode,
            idle_timeout,
            lifecycle,
            admission,
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

    /// Where the server is in its stop sequence.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.0.lifecycle
    }

    /// Per-address session limits and the live-session count.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.0.admission
    }
}

impl FromRef<AppState> for crate::membership::routes::MembershipState {
    fn from_ref(state: &AppState) -> Self {
        crate::membership::routes::MembershipState(state.0.membership.clone())
    }
}

impl FromRef<AppState> for crate::record::routes::MinutesState {
    fn from_ref(state: &AppState) -> Self {
        crate::record::routes::MinutesState {
            store: state.0.store.clone(),
            keys: state.0.keys.clone(),
        }
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
        .merge(crate::record::routes::routes())
        .with_state(state)
}

/// The web client, embedded at build time (the list is generated by `build.rs` from `web/`).
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

/// An embedded file by its URL name: `app.js`, or `invite` for `invite.html`.
fn web_file(name: &str) -> Option<(&'static str, &'static [u8])> {
    let html = format!("{name}.html");
    embedded::WEB_FILES
        .iter()
        .find(|(file, _, _)| *file == name || (!name.contains('.') && *file == html))
        .map(|(_, mime, body)| (*mime, *body))
}

async fn static_file(Path(file): Path<String>) -> Response {
    match web_file(&file) {
        Some((mime, body)) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.lifecycle().refuses_joins() {
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
    /// Members sign in with an instance (`/login`, `/api/me`); false: grants come otherwise.
    sign_in: bool,
}

async fn info(State(state): State<AppState>) -> Json<Info> {
    Json(Info {
        dev_mode: state.0.dev_mode,
        version: env!("CARGO_PKG_VERSION"),
        join_muted_above: state.0.join_muted_above,
        sign_in: state.0.membership.is_some(),
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
    if !plenary_proto::valid_room_name(&req.room) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "room must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let identity = format!("dev:{}", crate::secret::random_token(10));
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

async fn rtc(
    State(state): State<AppState>,
    ConnectInfo(crate::listen::ClientAddr(peer)): ConnectInfo<crate::listen::ClientAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // While draining, sessions still open so that a join gets the typed `shutting_down`.
    if state.lifecycle().phase() == Phase::Stopping {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let ip = state.admission().client_ip(peer.ip(), &headers);
    let permit = match state.admission().admit(ip, std::time::Instant::now()) {
        Ok(p) => p,
        Err(refusal) => {
            state
                .metrics()
                .signaling_refused(refusal.metric_label())
                .inc();
            tracing::debug!(%ip, "signaling session refused: {refusal}");
            let mut response =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, refusal.to_string()).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, refusal.retry_after_secs().into());
            return response;
        }
    };
    // Frames a little over the protocol limit reach the session, which answers `too_large`
    // with a reason instead of a bare protocol error.
    // tungstenite zero-fills its whole read buffer on every read, so its size is resident
    // memory per attendee: 8 KiB (not the default 128 KiB); bigger messages grow it.
    ws.max_message_size(2 * plenary_proto::MAX_SDP_MESSAGE_BYTES)
        .read_buffer_size(8 * 1024)
        .on_upgrade(move |socket| async move {
            crate::signal::run(socket, state).await;
            drop(permit);
        })
}
