//! HTTP routes of membership: sign-in pages and callbacks, the member API (grants, rooms,
//! invitations) and the guest API. JSON errors carry `{"error": "..."}` with one status code
//! per [`MembershipError`]; the browser-facing sign-in routes answer with a short HTML page
//! that says why instead.
//!
//! Routes (all 404 `sign-in is not configured` when no instance is):
//! - `GET /login`: the sign-in page listing the instances.
//! - `GET /auth/{instance}/login?return_to=/path`: redirect to the instance.
//! - `GET /auth/{instance}/callback?code&state`: finish sign-in, set the session cookie.
//! - `POST /auth/logout`.
//! - `GET /api/me`; `POST /api/grant {room}`; `PUT /api/rooms/{room}/mode {mode}`.
//! - `GET /api/invitations[?all=1]`, `POST /api/invitations`, `DELETE /api/invitations/{id}`.
//! - `POST /api/invitations/preview {token}`, `POST /api/invitations/redeem {token, name}`.
//!
//! The router takes only what it needs from the application's state ([`MembershipState`],
//! through axum's `FromRef`), so this module does not depend on the HTTP side.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use super::invitations::NewInvitation;
use super::store::{RoomMode, Session};
use super::{Membership, MembershipError};

/// The session cookie.
pub const SESSION_COOKIE: &str = "plenary_session";
/// The cookie that binds a pending sign-in (the OAuth `state`) to the browser.
pub const STATE_COOKIE: &str = "plenary_oauth_state";

/// The membership service as the routes see it: `None` when no instance is configured
/// (every route then answers 404). The application's state provides it with `FromRef`.
#[derive(Clone, Default)]
pub struct MembershipState(pub Option<Arc<Membership>>);

/// The membership routes, for any application state that can provide a [`MembershipState`].
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    MembershipState: FromRef<S>,
{
    Router::new()
        .route("/login", get(login_page))
        .route("/auth/{instance}/login", get(login))
        .route("/auth/{instance}/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/grant", post(grant))
        .route("/api/rooms/{room}/mode", put(room_mode))
        .route(
            "/api/invitations",
            get(list_invitations).post(create_invitation),
        )
        .route("/api/invitations/{id}", delete(revoke_invitation))
        .route("/api/invitations/preview", post(preview_invitation))
        .route("/api/invitations/redeem", post(redeem_invitation))
}

impl MembershipError {
    fn status(&self) -> StatusCode {
        use MembershipError as E;
        match self {
            E::UnknownInstance(_) | E::NotFound(_) => StatusCode::NOT_FOUND,
            E::BadReturnPath
            | E::StateMismatch
            | E::StateInvalid
            | E::StateExpired
            | E::WrongInstance
            | E::BadRequest(_) => StatusCode::BAD_REQUEST,
            E::NotAuthorized(_) | E::Refused(_) | E::Forbidden(_) => StatusCode::FORBIDDEN,
            E::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            E::Instance(_) => StatusCode::BAD_GATEWAY,
            E::NotSignedIn => StatusCode::UNAUTHORIZED,
            E::Store(_) | E::Sign(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for MembershipError {
    fn into_response(self) -> Response {
        if matches!(self, MembershipError::Store(_) | MembershipError::Sign(_)) {
            tracing::error!("membership: {self}");
        }
        (
            self.status(),
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// An error shown as a page (sign-in happens by navigation, not by fetch).
struct Page(MembershipError);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = page(
            "Sign-in did not work",
            &format!(
                "<p>{}</p><p><a href=\"/login\">Back to sign-in</a></p>",
                escape(&self.0.to_string())
            ),
        );
        (status, Html(body)).into_response()
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · Plenary</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body><header class=\"bar\"><h1>Plenary</h1></header><main><h2>{t}</h2>{body}</main>\
         </body></html>",
        t = escape(title)
    )
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn service(state: &MembershipState) -> Result<Arc<Membership>, MembershipError> {
    state
        .0
        .clone()
        .ok_or_else(|| MembershipError::NotFound("sign-in is not configured on this server".into()))
}

/// A cookie's value from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A plain explanation of a standard OAuth error code (RFC 6749 §4.1.2.1).
fn oauth_error_text(code: &str) -> String {
    match code {
        "access_denied" => "you (or the instance) declined to let Plenary see your account".into(),
        "invalid_scope" => "the instance did not grant the permission Plenary asks for".into(),
        "server_error" | "temporarily_unavailable" => {
            "the instance had a problem; please try again".into()
        }
        _ => "the instance refused the request".into(),
    }
}

/// A signed-in member (extractor). Rejects with 401 when there is no valid session.
pub struct Member(pub Session, pub Arc<Membership>);

impl<S> FromRequestParts<S> for Member
where
    S: Send + Sync,
    MembershipState: FromRef<S>,
{
    type Rejection = MembershipError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let svc = service(&MembershipState::from_ref(state))?;
        let value = cookie(&parts.headers, SESSION_COOKIE).ok_or(MembershipError::NotSignedIn)?;
        let session = svc
            .session(&value)
            .await?
            .ok_or(MembershipError::NotSignedIn)?;
        Ok(Member(session, svc))
    }
}

async fn login_page(State(state): State<MembershipState>) -> Response {
    let Ok(svc) = service(&state) else {
        return Page(MembershipError::NotFound(
            "sign-in is not configured on this server".into(),
        ))
        .into_response();
    };
    let mut items = String::new();
    for i in svc.instances() {
        let name = if i.config.display_name.is_empty() {
            i.base.host_str().unwrap_or(&i.config.id).to_string()
        } else {
            i.config.display_name.clone()
        };
        items.push_str(&format!(
            "<li><a class=\"button\" href=\"/auth/{id}/login\">Sign in with {name}</a> \
             <span class=\"hint\">{host}</span></li>",
            id = escape(&i.config.id),
            name = escape(&name),
            host = escape(i.base.host_str().unwrap_or("")),
        ));
    }
    Html(page(
        "Sign in",
        &format!(
            "<p>Sign in with your account on your co-op's instance. Plenary never sees your \
             password.</p><ul class=\"instances\">{items}</ul>\
             <p><a href=\"/invitations\">My invitations</a></p>"
        ),
    ))
    .into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

async fn login(
    State(state): State<MembershipState>,
    Path(instance): Path<String>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, Page> {
    let svc = service(&state).map_err(Page)?;
    let (url, binding) = svc
        .begin_login(&instance, q.return_to.as_deref())
        .await
        .map_err(Page)?;
    let mut resp = Redirect::to(&url).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            STATE_COOKIE,
            &binding,
            "/auth",
            super::STATE_TTL_SECS as u64,
            svc.secure_cookies(),
        ),
    );
    Ok(resp)
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(state): State<MembershipState>,
    Path(instance): Path<String>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, Page> {
    let svc = service(&state).map_err(Page)?;
    if let Some(error) = q.error {
        // The sign-in ends here: its cookie is cleared (without it, its state is useless).
        // Only the standard error code is shown (the description is the other side's free
        // text).
        let mut resp =
            Page(MembershipError::NotAuthorized(oauth_error_text(&error))).into_response();
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(STATE_COOKIE, "", "/auth", 0, svc.secure_cookies()),
        );
        let _ = q.error_description;
        return Ok(resp);
    }
    let (Some(code), Some(oauth_state)) = (q.code, q.state) else {
        return Err(Page(MembershipError::StateMismatch));
    };
    let from_cookie = cookie(&headers, STATE_COOKIE);
    let result = svc
        .complete_login(&instance, &code, &oauth_state, from_cookie.as_deref())
        .await;
    let secure = svc.secure_cookies();
    let clear_state = set_cookie(STATE_COOKIE, "", "/auth", 0, secure);
    match result {
        Ok((session, return_to)) => {
            let mut resp = Redirect::to(&return_to).into_response();
            let h = resp.headers_mut();
            h.append(header::SET_COOKIE, clear_state);
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &session, "/", svc.session_max_age(), secure),
            );
            Ok(resp)
        }
        Err(e) => {
            let mut resp = Page(e).into_response();
            resp.headers_mut().append(header::SET_COOKIE, clear_state);
            Ok(resp)
        }
    }
}

async fn logout(
    State(state): State<MembershipState>,
    headers: HeaderMap,
) -> Result<Response, MembershipError> {
    let svc = service(&state)?;
    if let Some(value) = cookie(&headers, SESSION_COOKIE) {
        svc.logout(&value).await?;
    }
    let mut resp = Json(serde_json::json!({ "signed_out": true })).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/", 0, svc.secure_cookies()),
    );
    Ok(resp)
}

async fn me(Member(s, _): Member) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "handle": s.handle,
        "display_name": s.display_name,
        "instance": s.instance,
        "is_host": s.is_host,
        "listen_only": s.listen_only,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    room: String,
}

async fn grant(
    Member(s, svc): Member,
    Json(req): Json<GrantRequest>,
) -> Result<Json<super::IssuedGrant>, MembershipError> {
    Ok(Json(svc.member_grant(&s, &req.room).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeRequest {
    mode: RoomMode,
}

async fn room_mode(
    Member(s, svc): Member,
    Path(room): Path<String>,
    Json(req): Json<ModeRequest>,
) -> Result<Json<serde_json::Value>, MembershipError> {
    svc.set_room_mode(&s, &room, req.mode).await?;
    Ok(Json(serde_json::json!({ "room": room, "mode": req.mode })))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: Option<String>,
}

async fn list_invitations(
    Member(s, svc): Member,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, MembershipError> {
    let all = matches!(q.all.as_deref(), Some("1" | "true"));
    let list = svc.list_invitations(&s, all).await?;
    Ok(Json(serde_json::json!({ "invitations": list })))
}

async fn create_invitation(
    Member(s, svc): Member,
    Json(req): Json<NewInvitation>,
) -> Result<(StatusCode, Json<super::invitations::CreatedInvitation>), MembershipError> {
    Ok((
        StatusCode::CREATED,
        Json(svc.create_invitation(&s, req).await?),
    ))
}

async fn revoke_invitation(
    Member(s, svc): Member,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, MembershipError> {
    svc.revoke_invitation(&s, &id).await?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    token: String,
}

async fn preview_invitation(
    State(state): State<MembershipState>,
    Json(req): Json<TokenRequest>,
) -> Result<Json<super::invitations::InvitationPreview>, MembershipError> {
    let svc = service(&state)?;
    Ok(Json(svc.preview_invitation(&req.token).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemRequest {
    token: String,
    name: String,
}

async fn redeem_invitation(
    State(state): State<MembershipState>,
    Json(req): Json<RedeemRequest>,
) -> Result<Json<super::IssuedGrant>, MembershipError> {
    let svc = service(&state)?;
    Ok(Json(svc.redeem_invitation(&req.token, &req.name).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cookies_from_any_header_line() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; plenary_session=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn cookies_are_http_only_and_lax() {
        let v = set_cookie("n", "v", "/", 10, true);
        let s = v.to_str().unwrap();
        assert!(s.contains("HttpOnly") && s.contains("SameSite=Lax") && s.contains("Secure"));
        assert!(!set_cookie("n", "v", "/", 10, false)
            .to_str()
            .unwrap()
            .contains("Secure"));
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
