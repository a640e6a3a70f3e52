//! A **test double of a Mastodon instance**: an axum server on `127.0.0.1:0` that follows
//! Mastodon's documented API closely enough for Plenary's sign-in, and nothing else. It is not
//! Mastodon; it is what Plenary's membership tests talk to instead of one.
//!
//! Endpoints (as documented at docs.joinmastodon.org):
//! - `POST /api/v1/apps` (form `client_name`, `redirect_uris`, `scopes`, `website`) →
//!   `{id, name, website, redirect_uri, redirect_uris, client_id, client_secret, scopes, …}`;
//!   unknown scopes are refused with 422.
//! - `GET /.well-known/oauth-authorization-server` (Mastodon 4.3+): endpoints,
//!   `scopes_supported` (with `profile`), `code_challenge_methods_supported: ["S256"]`.
//! - `GET /oauth/authorize`: the double's "user" approves at once, as the account chosen with
//!   [`MastodonDouble::approve_as`], by redirecting to `redirect_uri?code=…&state=…`. Like
//!   Doorkeeper it refuses an unknown `client_id` or a `redirect_uri` that is not exactly one
//!   registered with an error page (no redirect), and redirects back with `error=…` for a
//!   wrong `response_type`, a scope the app did not register, a missing or non-S256 PKCE
//!   challenge (when PKCE is on), or when the user denies ([`Switches::deny_authorization`]).
//! - `POST /oauth/token`: `authorization_code` (single-use code, same client, same
//!   `redirect_uri`, and with PKCE the `code_verifier` checked against the S256 challenge) and
//!   `client_credentials` (an app token; scopes must be among the app's).
//! - `GET /api/v1/accounts/verify_credentials` (Bearer, scope `profile`, `read` or
//!   `read:accounts`), `GET /api/v1/accounts/:id` (public, or with a `read`/`read:accounts`
//!   token), `GET /api/v2/instance` (`{domain}`), `GET /api/v1/instance` (`{uri}`).
//! - `POST /oauth/revoke` (RFC 7009): the token stops working and is recorded.
//!
//! Switches ([`Switches`], changeable while running through [`MastodonDouble::switches`]):
//! older versions (no discovery, no `profile` scope, no PKCE, no v2 instance), the GoToSocial
//! (`role: {name}` only) and Akkoma (`pleroma.is_admin` / `is_moderator`) shapes, rate limiting
//! (429 on every API call, or on chosen paths), slow answers, the user denying access. Per account ([`Account`]): role, `limited`,
//! suspended (403 on `verify_credentials`), deleted (404 on `accounts/:id`, tokens invalid).
//! [`Counters`], the lists of revoked tokens and handed-out secrets, and the credentials
//! presented to it (client secrets, bearer tokens) let tests assert what Plenary did at the
//! instance.

#![allow(dead_code)] // Not every test uses every switch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Whose API the double imitates where servers differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Mastodon: `role {id, name, permissions, …}` on the credential account.
    Mastodon,
    /// GoToSocial: `role {name}` only (`admin`, `moderator`, `user`).
    GoToSocial,
    /// Akkoma: no `role`; `pleroma {is_admin, is_moderator}`.
    Akkoma,
}

/// Instance-wide behaviour. Change it while running with [`MastodonDouble::switches`].
#[derive(Clone, Debug)]
pub struct Switches {
    /// `/.well-known/oauth-authorization-server` exists (Mastodon 4.3+); else 404.
    pub discovery: bool,
    /// The `profile` scope exists (Mastodon 4.3+); else asking for it is `invalid_scope`.
    pub profile_scope: bool,
    /// PKCE: the authorization request must carry an S256 challenge and the token request
    /// the matching verifier (Mastodon 4.3+). Off: the parameters are ignored.
    pub pkce: bool,
    /// `/api/v2/instance` exists (Mastodon 4.0+); else 404 and only v1 answers.
    pub v2_instance: bool,
    /// `/api/v1/instance`'s `uri` is a URL (`https://domain`, GoToSocial/Akkoma) instead of
    /// a bare domain (Mastodon).
    pub v1_uri_is_url: bool,
    /// The account JSON's shape.
    pub shape: Shape,
    /// Every API call (not the browser's authorize page) answers 429...
    pub rate_limited: bool,
    /// ...or, when not empty, only calls to these paths (Mastodon limits by endpoint class).
    pub rate_limited_paths: Vec<String>,
    /// Every answer waits this long first.
    pub delay: Duration,
    /// The user clicks "Deny" on the authorize page.
    pub deny_authorization: bool,
    /// `accounts/:id` needs a token (some servers' "authorized fetch" style settings).
    pub private_api: bool,
    /// The instance's domain (`@user@domain`), not its address.
    pub domain: String,
}

impl Switches {
    /// Mastodon 4.3+: discovery, `profile`, PKCE, v2 instance.
    pub fn mastodon_4_3() -> Switches {
        Switches {
            discovery: true,
            profile_scope: true,
            pkce: true,
            v2_instance: true,
            v1_uri_is_url: false,
            shape: Shape::Mastodon,
            rate_limited: false,
            rate_limited_paths: Vec::new(),
            delay: Duration::ZERO,
            deny_authorization: false,
            private_api: false,
            domain: "social.example".into(),
        }
    }

    /// Mastodon 4.0 to 4.2: no discovery, no `profile` scope, no PKCE; v2 instance exists.
    pub fn mastodon_4_0() -> Switches {
        Switches {
            discovery: false,
            profile_scope: false,
            pkce: false,
            ..Switches::mastodon_4_3()
        }
    }

    /// An older Mastodon (3.x): as 4.0, and no `/api/v2/instance` either.
    pub fn mastodon_3() -> Switches {
        Switches {
            v2_instance: false,
            ..Switches::mastodon_4_0()
        }
    }

    /// GoToSocial's Mastodon-compatible API as the double models it: no discovery, no
    /// `profile`, no PKCE check, `role {name}` only, `uri` a URL.
    pub fn gotosocial() -> Switches {
        Switches {
            shape: Shape::GoToSocial,
            v1_uri_is_url: true,
            domain: "gts.example".into(),
            ..Switches::mastodon_4_0()
        }
    }

    /// Akkoma's Mastodon-compatible API as the double models it: no discovery, no
    /// `profile`, no PKCE check, no v2 instance (v1 `uri` a URL), `pleroma` staff flags.
    pub fn akkoma() -> Switches {
        Switches {
            shape: Shape::Akkoma,
            v2_instance: false,
            v1_uri_is_url: true,
            domain: "akkoma.example".into(),
            ..Switches::mastodon_4_0()
        }
    }
}

/// A Mastodon role (`UserRole`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Id (Mastodon sends it as a string of digits; `-99` is the "everyone" role).
    pub id: String,
    /// Name (`""` for everyone, `Moderator`, `Admin`, `Owner`, or custom).
    pub name: String,
    /// Permission bits (Mastodon sends them as a string of digits).
    pub permissions: u64,
}

impl Role {
    /// Mastodon's base role every account has (`UserRole.everyone`: invite_users).
    pub fn everyone() -> Role {
        Role::new("-99", "", 0x10000)
    }

    /// A role.
    pub fn new(id: &str, name: &str, permissions: u64) -> Role {
        Role {
            id: id.into(),
            name: name.into(),
            permissions,
        }
    }
}

/// One account on the double.
#[derive(Clone, Debug)]
pub struct Account {
    /// Account id.
    pub id: String,
    /// Local username.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Its role (Mastodon shape); GoToSocial's `role.name` is taken from it as well
    /// (lower-cased, `user` when it has no name).
    pub role: Role,
    /// Silenced by moderators (`limited: true`).
    pub limited: bool,
    /// Suspended or disabled: `verify_credentials` answers 403; `accounts/:id` shows
    /// `suspended: true`.
    pub suspended: bool,
    /// Deleted: `accounts/:id` answers 404 and its tokens stop working (401).
    pub deleted: bool,
    /// Akkoma `pleroma.is_admin`.
    pub pleroma_admin: bool,
    /// Akkoma `pleroma.is_moderator`.
    pub pleroma_moderator: bool,
}

impl Account {
    /// An ordinary active account.
    pub fn new(id: &str, username: &str) -> Account {
        Account {
            id: id.into(),
            username: username.into(),
            display_name: format!("{username} display"),
            role: Role::everyone(),
            limited: false,
            suspended: false,
            deleted: false,
            pleroma_admin: false,
            pleroma_moderator: false,
        }
    }

    /// The same account with a role.
    pub fn with_role(mut self, role: Role) -> Account {
        self.role = role;
        self
    }
}

/// What Plenary did at the instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful `POST /api/v1/apps`.
    pub apps_registered: u32,
    /// Discovery document requests (answered or 404).
    pub discovery_requests: u32,
    /// Authorizations approved (codes handed out).
    pub authorizations: u32,
    /// Authorization requests refused (error page or `error=` redirect).
    pub authorizations_refused: u32,
    /// Codes exchanged for tokens.
    pub codes_exchanged: u32,
    /// Token requests refused.
    pub token_refusals: u32,
    /// App tokens (client credentials) handed out.
    pub app_tokens: u32,
    /// `verify_credentials` calls.
    pub verify_credentials: u32,
    /// `accounts/:id` calls.
    pub account_lookups: u32,
    /// Successful revocations.
    pub revocations: u32,
    /// Calls answered 429.
    pub rate_limited: u32,
}

struct App {
    client_id: String,
    client_secret: String,
    redirect_uris: Vec<String>,
    scopes: Vec<String>,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    account: String,
    /// S256 challenge, when PKCE is on.
    challenge: Option<String>,
}

struct Token {
    client_id: String,
    /// `None`: an app token (client credentials).
    account: Option<String>,
    scopes: Vec<String>,
}

struct Inner {
    switches: Switches,
    accounts: Vec<Account>,
    approve_as: String,
    apps: Vec<App>,
    codes: HashMap<String, Code>,
    tokens: HashMap<String, Token>,
    revoked: Vec<String>,
    secrets: Vec<String>,
    /// Client secrets and bearer tokens presented to this double, valid or not.
    received: Vec<String>,
    counters: Counters,
    base: String,
}

type Shared = Arc<Mutex<Inner>>;

/// A running test double of a Mastodon instance. Cheap to clone; every clone is the same
/// instance.
#[derive(Clone)]
pub struct MastodonDouble {
    addr: SocketAddr,
    inner: Shared,
}

impl MastodonDouble {
    /// Starts a double on `127.0.0.1:0` with these switches and one account, which the
    /// authorize page approves as.
    pub async fn start(switches: Switches, account: Account) -> MastodonDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the Mastodon double binds a port");
        let addr = listener.local_addr().expect("a local address");
        let inner = Arc::new(Mutex::new(Inner {
            switches,
            approve_as: account.id.clone(),
            accounts: vec![account],
            apps: Vec::new(),
            codes: HashMap::new(),
            tokens: HashMap::new(),
            revoked: Vec::new(),
            secrets: Vec::new(),
            received: Vec::new(),
            counters: Counters::default(),
            base: format!("http://{addr}"),
        }));
        let router = Router::new()
            .route("/api/v1/apps", post(register_app))
            .route("/.well-known/oauth-authorization-server", get(discovery))
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .route("/oauth/revoke", post(revoke))
            .route(
                "/api/v1/accounts/verify_credentials",
                get(verify_credentials),
            )
            .route("/api/v1/accounts/{id}", get(account_by_id))
            .route("/api/v2/instance", get(instance_v2))
            .route("/api/v1/instance", get(instance_v1))
            .layer(axum::middleware::from_fn_with_state(
                inner.clone(),
                delay_and_rate_limit,
            ))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        MastodonDouble { addr, inner }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The instance's domain (for handles).
    pub fn domain(&self) -> String {
        self.lock().switches.domain.clone()
    }

    /// Changes instance-wide switches.
    pub fn switches(&self, f: impl FnOnce(&mut Switches)) {
        f(&mut self.lock().switches);
    }

    /// Adds an account.
    pub fn add_account(&self, account: Account) {
        self.lock().accounts.push(account);
    }

    /// The account the authorize page approves as from now on.
    pub fn approve_as(&self, id: &str) {
        let mut inner = self.lock();
        assert!(inner.accounts.iter().any(|a| a.id == id), "no account {id}");
        inner.approve_as = id.into();
    }

    /// Changes an account (suspend it, delete it, change its role...).
    pub fn account(&self, id: &str, f: impl FnOnce(&mut Account)) {
        let mut inner = self.lock();
        let a = inner
            .accounts
            .iter_mut()
            .find(|a| a.id == id)
            .unwrap_or_else(|| panic!("no account {id}"));
        f(a);
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Tokens revoked through `/oauth/revoke`.
    pub fn revoked(&self) -> Vec<String> {
        self.lock().revoked.clone()
    }

    /// User tokens that still work.
    pub fn live_user_tokens(&self) -> Vec<String> {
        self.lock()
            .tokens
            .iter()
            .filter(|(_, t)| t.account.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every secret the double handed out: client secrets, codes, access tokens. None of
    /// them may appear in Plenary's logs, audit or answers to browsers (except codes, which
    /// travel through the browser by design).
    pub fn secrets(&self) -> Vec<String> {
        self.lock().secrets.clone()
    }

    /// Every client secret and bearer token presented to this double (token, revoke and API
    /// calls), whether it knew them or not: what another host's credentials would show up in.
    pub fn received_credentials(&self) -> Vec<String> {
        self.lock().received.clone()
    }

    /// The redirect URIs of every registered app.
    pub fn registered_redirect_uris(&self) -> Vec<String> {
        self.lock()
            .apps
            .iter()
            .flat_map(|a| a.redirect_uris.clone())
            .collect()
    }

    /// Scopes of the registered apps.
    pub fn registered_scopes(&self) -> Vec<Vec<String>> {
        self.lock().apps.iter().map(|a| a.scopes.clone()).collect()
    }
}

fn random(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::fill(bytes.as_mut_slice());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": code, "error_description": description })),
    )
        .into_response()
}

fn split_scopes(s: &str) -> Vec<String> {
    s.split([' ', '+'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn scope_exists(switches: &Switches, scope: &str) -> bool {
    match scope {
        "read" | "write" | "follow" | "push" => true,
        "profile" => switches.profile_scope,
        s => ["read:", "write:", "admin:read", "admin:write"]
            .iter()
            .any(|p| s.starts_with(p)),
    }
}

/// Every answer waits `delay`; every API call answers 429 while rate-limited (the browser's
/// authorize page is not an API call).
async fn delay_and_rate_limit(State(inner): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let (delay, limited) = {
        let i = inner.lock().unwrap_or_else(|p| p.into_inner());
        let s = &i.switches;
        let limited = if s.rate_limited_paths.is_empty() {
            s.rate_limited && path != "/oauth/authorize"
        } else {
            s.rate_limited_paths.contains(&path)
        };
        (s.delay, limited)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if limited {
        inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counters
            .rate_limited += 1;
        let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        let h = resp.headers_mut();
        h.insert("X-RateLimit-Limit", HeaderValue::from_static("300"));
        h.insert("X-RateLimit-Remaining", HeaderValue::from_static("0"));
        h.insert(
            "X-RateLimit-Reset",
            HeaderValue::from_static("2099-01-01T00:00:00.000Z"),
        );
        return resp;
    }
    next.run(req).await
}

#[derive(Deserialize)]
struct AppForm {
    client_name: Option<String>,
    redirect_uris: Option<String>,
    scopes: Option<String>,
    website: Option<String>,
}

async fn register_app(State(inner): State<Shared>, Form(f): Form<AppForm>) -> Response {
    let mut i = inner.lock().unwrap_or_else(|p| p.into_inner());
    let (Some(name), Some(redirect_uris)) = (f.client_name, f.redirect_uris) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation failed: Application name can't be blank, Redirect URI can't be blank",
        );
    };
    let scopes = split_scopes(f.scopes.as_deref().unwrap_or("read"));
    if let Some(bad) = scopes.iter().find(|s| !scope_exists(&i.switches, s)) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Validation failed: Scopes {bad} is not a valid scope"),
        );
    }
    let redirect_uris: Vec<String> = redirect_uris
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for uri in &redirect_uris {
        let ok = uri == "urn:ietf:wg:oauth:2.0:oob"
            || url::Url::parse(uri).is_ok_and(|u| u.fragment().is_none() && u.has_host());
        if !ok {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation failed: Redirect URI must be an absolute URI.",
            );
        }
    }
    let client_id = random(32);
    let client_secret = random(32);
    i.secrets.push(client_secret.clone());
    i.counters.apps_registered += 1;
    let id = (i.apps.len() + 1).to_string();
    i.apps.push(App {
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        redirect_uris: redirect_uris.clone(),
        scopes: scopes.clone(),
    });
    Json(json!({
        "id": id,
        "name": name,
        "website": f.website,
        "scopes": scopes,
        "redirect_uri": redirect_uris.join("\n"),
        "redirect_uris": redirect_uris,
        "client_id": client_id,
        "client_secret": client_secret,
        "client_secret_expires_at": 0,
        "vapid_key": "BCk-QqERU0q-CfYZjcuB6lnyyOYfJ2AifKqfeGIm7Z-HiTU5T9eTG5GxVA0_OH5mMlI4UkkDTpaZwozy0TzdZ2M=",
    }))
    .into_response()
}

async fn discovery(State(inner): State<Shared>) -> Response {
    let mut i = inner.lock().unwrap_or_else(|p| p.into_inner());
    i.counters.discovery_requests += 1;
    if !i.switches.discovery {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>The page you are looking for isn't here.</h1>"),
        )
            .into_response();
    }
    let b = &i.base;
    Json(json!({
        "issuer": format!("{b}/"),
        "service_documentation": "https://docs.joinmastodon.org/",
        "authorization_endpoint": format!("{b}/oauth/authorize"),
        "token_endpoint": format!("{b}/oauth/token"),
        "app_registration_endpoint": format!("{b}/api/v1/apps"),
        "revocation_endpoint": format!("{b}/oauth/revoke"),
        "userinfo_endpoint": format!("{b}/oauth/userinfo"),
        "scopes_supported": [
            "read", "write", "write:accounts", "write:blocks", "write:bookmarks",
            "write:conversations", "write:favourites", "write:filters", "write:follows",
            "write:lists", "write:media", "write:mutes", "write:notifications",
            "write:reports", "write:statuses", "read:accounts", "read:blocks",
            "read:bookmarks", "read:favourites", "read:filters", "read:follows",
            "read:lists", "read:mutes", "read:notifications", "read:search",
            "read:statuses", "follow", "push", "profile", "admin:read", "admin:write"
        ],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
    .into_response()
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn redirect_back(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = url::Url::parse(redirect_uri).expect("a registered redirect URI parses");
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, url.to_string())],
        Html("<p>Redirecting…</p>"),
    )
        .into_response()
}

fn error_page(status: StatusCode, what: &str) -> Response {
    (
        status,
        Html(format!("<h1>An error has occurred</h1><p>{what}</p>")),
    )
        .into_response()
}

async fn authorize(State(inner): State<Shared>, Query(q): Query<AuthorizeQuery>) -> Response {
    let mut i = inner.lock().unwrap_or_else(|p| p.into_inner());
    let i = &mut *i;
    let Some((client_id, app_redirects, app_scopes)) = q
        .client_id
        .as_deref()
        .and_then(|id| i.apps.iter().find(|a| a.client_id == id))
        .map(|a| {
            (
                a.client_id.clone(),
                a.redirect_uris.clone(),
                a.scopes.clone(),
            )
        })
    else {
        i.counters.authorizations_refused += 1;
        return error_page(
            StatusCode::UNAUTHORIZED,
            "invalid_client: Client authentication failed due to unknown client.",
        );
    };
    let Some(redirect_uri) = q
        .redirect_uri
        .as_deref()
        .filter(|r| app_redirects.iter().any(|u| u == r))
    else {
        i.counters.authorizations_refused += 1;
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri: The requested redirect uri is malformed or doesn't match \
             client redirect URI.",
        );
    };
    let state = q.state.clone().unwrap_or_default();
    let refuse = |i: &mut Inner, code: &str, desc: &str| {
        i.counters.authorizations_refused += 1;
        let mut params = vec![("error", code), ("error_description", desc)];
        if !state.is_empty() {
            params.push(("state", &state));
        }
        redirect_back(redirect_uri, &params)
    };
    if q.response_type.as_deref() != Some("code") {
        return refuse(
            i,
            "unsupported_response_type",
            "The authorization server does not support this response type.",
        );
    }
    let scopes = split_scopes(q.scope.as_deref().unwrap_or("read"));
    if scopes.is_empty()
        || scopes
            .iter()
            .any(|s| !scope_exists(&i.switches, s) || !app_scopes.contains(s))
    {
        return refuse(
            i,
            "invalid_scope",
            "The requested scope is invalid, unknown, or malformed.",
        );
    }
    let challenge = if i.switches.pkce {
        match (
            q.code_challenge.as_deref(),
            q.code_challenge_method.as_deref(),
        ) {
            (Some(c), Some("S256")) if c.len() == 43 => Some(c.to_string()),
            _ => {
                return refuse(
                    i,
                    "invalid_request",
                    "Code challenge is required and must use the S256 method.",
                )
            }
        }
    } else {
        None
    };
    if i.switches.deny_authorization {
        return refuse(
            i,
            "access_denied",
            "The resource owner or authorization server denied the request.",
        );
    }
    let code = random(32);
    let redirect_uri = redirect_uri.to_string();
    i.secrets.push(code.clone());
    i.counters.authorizations += 1;
    i.codes.insert(
        code.clone(),
        Code {
            client_id,
            redirect_uri: redirect_uri.clone(),
            scopes,
            account: i.approve_as.clone(),
            challenge,
        },
    );
    let mut params = vec![("code", code.as_str())];
    if !state.is_empty() {
        params.push(("state", state.as_str()));
    }
    redirect_back(&redirect_uri, &params)
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code_verifier: Option<String>,
    scope: Option<String>,
}

async fn token(State(inner): State<Shared>, Form(f): Form<TokenForm>) -> Response {
    let mut i = inner.lock().unwrap_or_else(|p| p.into_inner());
    let i = &mut *i;
    i.received.extend(f.client_secret.clone());
    let Some(app) = i.apps.iter().find(|a| {
        Some(a.client_id.as_str()) == f.client_id.as_deref()
            && Some(a.client_secret.as_str()) == f.client_secret.as_deref()
    }) else {
        i.counters.token_refusals += 1;
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed due to unknown client, no client authentication \
             included, or unsupported authentication method.",
        );
    };
    let client_id = app.client_id.clone();
    let app_scopes = app.scopes.clone();
    let invalid_grant = |i: &mut Inner| {
        i.counters.token_refusals += 1;
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The provided authorization grant is invalid, expired, revoked, does not match \
             the redirection URI used in the authorization request, or was issued to another \
             client.",
        )
    };
    let (account, scopes) = match f.grant_type.as_deref() {
        Some("authorization_code") => {
            // A code is single-use: taken out whether the exchange then succeeds or not.
            let Some(code) = f.code.as_deref().and_then(|c| i.codes.remove(c)) else {
                return invalid_grant(i);
            };
            if code.client_id != client_id || f.redirect_uri.as_deref() != Some(&code.redirect_uri)
            {
                return invalid_grant(i);
            }
            if let Some(challenge) = &code.challenge {
                let Some(verifier) = f.code_verifier.as_deref() else {
                    return invalid_grant(i);
                };
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(verifier.as_bytes()));
                if &computed != challenge {
                    return invalid_grant(i);
                }
            }
            i.counters.codes_exchanged += 1;
            (Some(code.account), code.scopes)
        }
        Some("client_credentials") => {
            let scopes = split_scopes(f.scope.as_deref().unwrap_or("read"));
            if scopes.iter().any(|s| !app_scopes.contains(s)) {
                i.counters.token_refusals += 1;
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "The requested scope is invalid, unknown, or malformed.",
                );
            }
            i.counters.app_tokens += 1;
            (None, scopes)
        }
        _ => {
            i.counters.token_refusals += 1;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            );
        }
    };
    let access_token = random(32);
    i.secrets.push(access_token.clone());
    i.tokens.insert(
        access_token.clone(),
        Token {
            client_id,
            account,
            scopes: scopes.clone(),
        },
    );
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "scope": scopes.join(" "),
        "created_at": 1_700_000_000,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct RevokeForm {
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn revoke(State(inner): State<Shared>, Form(f): Form<RevokeForm>) -> Response {
    let mut i = inner.lock().unwrap_or_else(|p| p.into_inner());
    i.received.extend(f.client_secret.clone());
    i.received.extend(f.token.clone());
    let client_ok = i.apps.iter().any(|a| {
        Some(a.client_id.as_str()) == f.client_id.as_deref()
            && Some(a.client_secret.as_str()) == f.client_secret.as_deref()
    });
    if !client_ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        );
    }
    // RFC 7009: an unknown token is not an error.
    if let Some(t) = f.token {
        let owned = i
            .tokens
            .get(&t)
            .is_some_and(|tok| Some(tok.client_id.as_str()) == f.client_id.as_deref());
        if owned {
            i.tokens.remove(&t);
            i.revoked.push(t);
            i.counters.revocations += 1;
        }
    }
    Json(json!({})).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

fn account_json(s: &Switches, a: &Account, credential: bool) -> Value {
    let mut v = json!({
        "id": a.id,
        "username": a.username,
        "acct": a.username,
        "display_name": a.display_name,
        "locked": false,
        "bot": false,
        "discoverable": true,
        "group": false,
        "created_at": "2023-01-01T00:00:00.000Z",
        "note": "",
        "url": format!("https://{}/@{}", s.domain, a.username),
        "avatar": format!("https://{}/avatars/original/missing.png", s.domain),
        "header": format!("https://{}/headers/original/missing.png", s.domain),
        "followers_count": 3,
        "following_count": 5,
        "statuses_count": 8,
        "last_status_at": "2025-01-01",
        "emojis": [],
        "fields": [],
    });
    let o = v.as_object_mut().expect("an object");
    if a.limited {
        o.insert("limited".into(), json!(true));
    }
    if a.suspended {
        o.insert("suspended".into(), json!(true));
    }
    match s.shape {
        Shape::Mastodon => {
            if credential {
                o.insert(
                    "source".into(),
                    json!({ "privacy": "public", "sensitive": false, "language": "", "note": "", "fields": [] }),
                );
                o.insert(
                    "role".into(),
                    json!({
                        "id": a.role.id,
                        "name": a.role.name,
                        "color": "",
                        "permissions": a.role.permissions.to_string(),
                        "highlighted": !a.role.name.is_empty(),
                    }),
                );
            } else if !a.role.name.is_empty() {
                o.insert(
                    "roles".into(),
                    json!([{ "id": a.role.id, "name": a.role.name, "color": "" }]),
                );
            }
        }
        Shape::GoToSocial => {
            if credential {
                let name = if a.role.name.is_empty() {
                    "user".to_string()
                } else {
                    a.role.name.to_ascii_lowercase()
                };
                o.insert("role".into(), json!({ "name": name }));
            }
        }
        Shape::Akkoma => {
            o.insert(
                "pleroma".into(),
                json!({
                    "is_admin": a.pleroma_admin,
                    "is_moderator": a.pleroma_moderator,
                    "is_confirmed": true,
                    "tags": [],
                }),
            );
        }
    }
    v
}

fn has_scope(token: &Token, allowed: &[&str]) -> bool {
    token.scopes.iter().any(|s| allowed.contains(&s.as_str()))
}

async fn verify_credentials(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    let mut i = inner.lock().unwrap_or_else(|p| p.into_inner());
    i.counters.verify_credentials += 1;
    i.received.extend(bearer(&headers));
    let Some(token) = bearer(&headers).and_then(|t| i.tokens.get(&t)) else {
        return error(StatusCode::UNAUTHORIZED, "The access token is invalid");
    };
    let Some(account_id) = token.account.clone() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This method requires an authenticated user",
        );
    };
    let mut allowed = vec!["read", "read:accounts"];
    if i.switches.profile_scope {
        allowed.push("profile");
    }
    if !has_scope(token, &allowed) {
        return error(
            StatusCode::FORBIDDEN,
            "This action is outside the authorized scopes",
        );
    }
    let Some(a) = i.accounts.iter().find(|a| a.id == account_id && !a.deleted) else {
        return error(StatusCode::UNAUTHORIZED, "The access token is invalid");
    };
    if a.suspended {
        return error(StatusCode::FORBIDDEN, "Your login is currently disabled");
    }
    Json(account_json(&i.switches, a, true)).into_response()
}

async fn account_by_id(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut i = inner.lock().unwrap_or_else(|p| p.into_inner());
    i.counters.account_lookups += 1;
    i.received.extend(bearer(&headers));
    match bearer(&headers) {
        Some(t) => {
            let Some(token) = i.tokens.get(&t) else {
                return error(StatusCode::UNAUTHORIZED, "The access token is invalid");
            };
            if !has_scope(token, &["read", "read:accounts"]) {
                return error(
                    StatusCode::FORBIDDEN,
                    "This action is outside the authorized scopes",
                );
            }
        }
        None if i.switches.private_api => {
            return error(
                StatusCode::UNAUTHORIZED,
                "This API requires an authenticated user",
            )
        }
        None => {}
    }
    match i.accounts.iter().find(|a| a.id == id && !a.deleted) {
        Some(a) => Json(account_json(&i.switches, a, false)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Record not found"),
    }
}

async fn instance_v2(State(inner): State<Shared>) -> Response {
    let i = inner.lock().unwrap_or_else(|p| p.into_inner());
    if !i.switches.v2_instance {
        return error(StatusCode::NOT_FOUND, "Record not found");
    }
    Json(json!({
        "domain": i.switches.domain,
        "title": "Test double of a Mastodon instance",
        "version": "4.3.0",
        "source_url": "https://github.com/mastodon/mastodon",
        "description": "Not Mastodon: a test double.",
        "registrations": { "enabled": false, "approval_required": true, "message": null },
    }))
    .into_response()
}

async fn instance_v1(State(inner): State<Shared>) -> Response {
    let i = inner.lock().unwrap_or_else(|p| p.into_inner());
    let uri = if i.switches.v1_uri_is_url {
        format!("https://{}", i.switches.domain)
    } else {
        i.switches.domain.clone()
    };
    Json(json!({
        "uri": uri,
        "title": "Test double of a Mastodon instance",
        "version": "4.0.0",
        "registrations": false,
    }))
    .into_response()
}
