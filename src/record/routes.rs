//! `GET /api/minutes/{room}?date=YYYY-MM-DD&format=json|markdown`: the minutes, for hosts.
//!
//! Authenticated by a host's grant for the room in `Authorization: Bearer <grant>`: its
//! signature, audience, issuer and lifetime are checked as on a join, but it is not used up
//! (the grant a host joined with opens the minutes until it expires; a fresh one does
//! after the meeting). Without `date`: the room's latest meeting.
//!
//! The router takes only what it needs from the application's state ([`MinutesState`],
//! through axum's `FromRef`).

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::minutes::{self, MinutesError};
use crate::grant::KeyRing;
use crate::membership::store::Store;

/// What the minutes route needs: the store (none: no record is kept) and the grant keys.
#[derive(Clone)]
pub struct MinutesState {
    /// The store, when the server keeps the record of meetings.
    pub store: Option<Store>,
    /// The keys that verify grants.
    pub keys: KeyRing,
}

/// The minutes route, for any application state that can provide a [`MinutesState`].
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    MinutesState: FromRef<S>,
{
    Router::new().route("/api/minutes/{room}", get(minutes))
}

/// Why the minutes are not given; one status code each.
#[derive(Debug, thiserror::Error)]
pub enum MinutesApiError {
    /// No grant, or a grant that does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// A grant that is not a host's, or not for this room.
    #[error("{0}")]
    Forbidden(String),
    /// The room name or a parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No record is kept, or no such meeting.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error("the minutes cannot be read now")]
    Internal,
}

impl IntoResponse for MinutesApiError {
    fn into_response(self) -> Response {
        let status = match self {
            MinutesApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            MinutesApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            MinutesApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MinutesApiError::NotFound(_) => StatusCode::NOT_FOUND,
            MinutesApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl From<MinutesError> for MinutesApiError {
    fn from(e: MinutesError) -> Self {
        match e {
            MinutesError::BadDate => MinutesApiError::BadRequest(e.to_string()),
            MinutesError::NotFound { .. } => MinutesApiError::NotFound(e.to_string()),
            MinutesError::Store(e) => {
                tracing::error!("minutes: {e}");
                MinutesApiError::Internal
            }
        }
    }
}

#[derive(Deserialize)]
struct MinutesQuery {
    date: Option<String>,
    format: Option<String>,
}

async fn minutes(
    State(state): State<MinutesState>,
    Path(room): Path<String>,
    Query(q): Query<MinutesQuery>,
    headers: HeaderMap,
) -> Result<Response, MinutesApiError> {
    if !plenary_proto::valid_room_name(&room) {
        return Err(MinutesApiError::BadRequest(
            "room must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let markdown = match q.format.as_deref() {
        None | Some("json") => false,
        Some("markdown" | "md") => true,
        Some(other) => {
            return Err(MinutesApiError::BadRequest(format!(
                "format {other:?}: use json or markdown"
            )))
        }
    };
    let grant = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            MinutesApiError::Unauthorized(
                "send a host's grant for this room as `Authorization: Bearer <grant>`".into(),
            )
        })?;
    let claims = state
        .keys
        .verify(grant.trim())
        .map_err(|e| MinutesApiError::Unauthorized(format!("the grant is not valid: {e}")))?;
    if claims.room != room {
        return Err(MinutesApiError::Forbidden(format!(
            "this grant is for room {:?}, not {room:?}",
            claims.room
        )));
    }
    if !claims.permissions.is_host {
        return Err(MinutesApiError::Forbidden(
            "only a host's grant opens the minutes".into(),
        ));
    }
    let store = state.store.ok_or_else(|| {
        MinutesApiError::NotFound(
            "this server keeps no record of meetings (set meetings.always_record, or \
             configure sign-in)"
                .into(),
        )
    })?;
    let date = q.date.clone();
    let (room2, date2) = (room.clone(), date.clone());
    let all = store
        .run(move |c| Ok(minutes::load(c, &room2, date2.as_deref())))
        .await
        .map_err(MinutesError::Store)??;
    tracing::info!(room = %room, host = %claims.sub, "minutes downloaded");
    let day = date.unwrap_or_else(|| all[0].date.clone());
    if markdown {
        let disposition = format!("attachment; filename=\"minutes-{room}-{day}.md\"");
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    "text/markdown; charset=utf-8".to_string(),
                ),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            minutes::markdown(&all),
        )
            .into_response());
    }
    Ok(Json(serde_json::json!({ "room": room, "date": day, "meetings": all })).into_response())
}
