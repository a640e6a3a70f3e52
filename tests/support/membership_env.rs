//! The harness of the membership tests: Plenary started in-process with sign-in configured
//! against a [`MastodonDouble`] (a test double of a Mastodon instance), a cookie-keeping
//! "browser" that follows redirects by hand (server → instance → server) so each hop can be
//! inspected, a WebSocket join as docs/protocol.md describes it, direct access to the same
//! SQLite database through `plenary::membership::store`, and a capture of the server's log.
//!
//! Every wait is bounded ([`T`]).

#![allow(dead_code)] // Each test uses a different part.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use plenary::config::{Config, InstanceConfig, MembershipConfig};
use plenary::membership::store::{self, AuditEntry, Store};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::mastodon::MastodonDouble;

/// The bound on any single wait (an HTTP request, a WebSocket answer).
pub const T: Duration = Duration::from_secs(15);

/// The id of the instance the harness configures (`/auth/coop/...`).
pub const INSTANCE: &str = "coop";

// ---- log capture -------------------------------------------------------------------------

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        if std::env::var_os("MEMBERSHIP_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the log of every server in this test process (Plenary at `debug`).
pub fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,plenary=debug"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

/// Everything logged so far (all tests of this process).
pub fn captured_log() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

// ---- the server --------------------------------------------------------------------------

/// A running Plenary with sign-in against a Mastodon double, and its database.
pub struct Env {
    /// The instance.
    pub double: MastodonDouble,
    /// The server (taken by [`Env::stop`]).
    pub server: Option<plenary::Server>,
    /// `http://127.0.0.1:port` (also `membership.public_url`).
    pub base: String,
    /// The temporary folder (database, keys).
    pub dir: PathBuf,
    /// The configuration it runs with.
    pub config: Config,
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("an address")
}

/// The instance configuration the harness uses unless a test changes it.
pub fn instance_config(id: &str, double: &MastodonDouble) -> InstanceConfig {
    InstanceConfig {
        id: id.into(),
        base_url: double.base_url(),
        // Handles read @user@social.example although the double listens on 127.0.0.1.
        domain: double.domain(),
        display_name: "Social Example".into(),
        members: true,
        host_roles: vec!["Moderator".into(), "Admin".into()],
        host_role_ids: Vec::new(),
        host_permissions: 0,
        pleroma_staff_are_hosts: true,
    }
}

impl Env {
    /// Starts Plenary against `double`; `tweak` may change the membership configuration.
    pub async fn start(double: MastodonDouble, tweak: impl FnOnce(&mut MembershipConfig)) -> Env {
        init_logging();
        let dir = std::env::temp_dir().join(format!(
            "plenary-membership-{}-{}",
            std::process::id(),
            plenary::secret::random_id()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let addr = free_port();
        let mut config = Config::for_tests();
        config.http.addr = addr;
        config.limits.shutdown_grace_secs = 1;
        config.membership.public_url = format!("http://{addr}");
        config.membership.database = dir.join("plenary.db").display().to_string();
        config.membership.instances = vec![instance_config(INSTANCE, &double)];
        tweak(&mut config.membership);
        let server = tokio::time::timeout(T, plenary::start(config.clone()))
            .await
            .expect("the server starts in time")
            .expect("the server starts");
        assert_eq!(server.http_addr(), addr);
        assert!(!server.dev_mode(), "sign-in configured: no dev mode");
        Env {
            double,
            server: Some(server),
            base: format!("http://{addr}"),
            dir,
            config,
        }
    }

    /// Starts a double with `switches` and `account`, then Plenary against it.
    pub async fn with(
        switches: crate::mastodon::Switches,
        account: crate::mastodon::Account,
        tweak: impl FnOnce(&mut MembershipConfig),
    ) -> Env {
        let double = MastodonDouble::start(switches, account).await;
        Env::start(double, tweak).await
    }

    /// Restarts the server as an operator would: stops it, lets `tweak` change the
    /// configuration, and starts a new one on the same address with the same database and
    /// keys folder.
    pub async fn restart(&mut self, tweak: impl FnOnce(&mut Config)) {
        if let Some(s) = self.server.take() {
            tokio::time::timeout(T, s.shutdown())
                .await
                .expect("the server stops in time");
        }
        tweak(&mut self.config);
        let server = tokio::time::timeout(T, plenary::start(self.config.clone()))
            .await
            .expect("the server starts again in time")
            .expect("the server starts again");
        assert_eq!(server.http_addr(), self.config.http.addr);
        self.server = Some(server);
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            tokio::time::timeout(T, s.shutdown())
                .await
                .expect("the server stops in time");
        }
    }

    /// A second connection to the server's database.
    pub fn store(&self) -> Store {
        Store::open(std::path::Path::new(&self.config.membership.database))
            .expect("the database opens")
    }

    /// Where the signing keys are.
    pub fn keys_dir(&self) -> PathBuf {
        plenary::membership::keys_dir(&self.config.membership)
    }

    /// The audit log, oldest first.
    pub fn audit(&self) -> Vec<AuditEntry> {
        let mut v = self
            .store()
            .run_sync(|c| store::recent_audit(c, 10_000))
            .expect("the audit reads");
        v.reverse();
        v
    }

    /// Audit entries of one kind.
    pub fn audit_of(&self, kind: &str) -> Vec<AuditEntry> {
        self.audit()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    /// Rows in a table.
    pub fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        self.store()
            .run_sync(|c| Ok(c.query_row(&sql, [], |r| r.get(0))?))
            .expect("the count reads")
    }

    /// A fresh browser (empty cookie jar).
    pub fn browser(&self) -> Browser {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(T)
            .build()
            .expect("an HTTP client");
        Browser {
            http,
            jar,
            base: self.base.clone(),
        }
    }

    /// The signaling WebSocket.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.base.trim_start_matches("http://"))
    }

    /// Joins `room` with `grant` and returns the server's first answer (`welcome` or
    /// `error`), then leaves.
    pub async fn join(&self, grant: &str, room: &str) -> Value {
        join(&self.ws_url(), grant, Some(room)).await
    }

    /// The active signing key (kid and private key), read as an operator could.
    pub fn signing_key(&self) -> (String, EncodingKey) {
        let rows = self
            .store()
            .run_sync(|c| store::signing_keys(c))
            .expect("keys read");
        let row = rows
            .into_iter()
            .find(|r| r.retired_at.is_none())
            .expect("an active key");
        let pem = std::fs::read_to_string(&row.private_key_file).expect("the key file reads");
        (row.kid, encoding_key_from_pem(&pem))
    }

    /// A member signed in at the double as `account_id` (added before), with its browser.
    pub async fn signed_in_as(&self, account_id: &str) -> Browser {
        self.double.approve_as(account_id);
        let b = self.browser();
        b.sign_in(INSTANCE, None).await.expect_success();
        b
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An Ed25519 PKCS#8 PEM private key for jsonwebtoken.
pub fn encoding_key_from_pem(pem: &str) -> EncodingKey {
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).expect("an Ed25519 key");
    EncodingKey::from_ed_der(key.to_pkcs8_der().expect("DER").as_bytes())
}

/// Signs `claims` with EdDSA under `kid`.
pub fn sign_eddsa(kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).expect("a token")
}

/// The header and claims of a JWT, unverified.
pub fn decode_unverified(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || {
        let raw = parts.next().expect("a JWT part");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .expect("base64url");
        serde_json::from_slice::<Value>(&bytes).expect("JSON")
    };
    let header = part();
    let claims = part();
    (header, claims)
}

/// A signaling connection that stays open.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Joins and stays connected; returns the server's first answer and the connection.
pub async fn connect(ws_url: &str, grant: &str, room: &str) -> (Value, Ws) {
    let (mut ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(ws_url))
        .await
        .expect("the WebSocket connects in time")
        .expect("the WebSocket connects");
    let msg = json!({ "type": "join", "protocol": 1, "grant": grant, "room": room });
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("join is sent");
    let first = next_json(&mut ws).await;
    (first, ws)
}

/// Sends one message.
pub async fn send_json(ws: &mut Ws, msg: &Value) {
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("the message is sent");
}

/// The next JSON message from the server.
pub async fn next_json(ws: &mut Ws) -> Value {
    tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str::<Value>(t.as_str()).expect("JSON from server")
                }
                Some(Ok(_)) => continue,
                other => panic!("the server closed the connection: {other:?}"),
            }
        }
    })
    .await
    .expect("the server answers in time")
}

/// Reads messages until one has `"type": kind`.
pub async fn wait_for_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Joins over the WebSocket and returns the first JSON message the server sends.
pub async fn join(ws_url: &str, grant: &str, room: Option<&str>) -> Value {
    let (mut ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(ws_url))
        .await
        .expect("the WebSocket connects in time")
        .expect("the WebSocket connects");
    let mut msg = json!({ "type": "join", "protocol": 1, "grant": grant });
    if let Some(room) = room {
        msg["room"] = json!(room);
    }
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("join is sent");
    let first = tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str::<Value>(t.as_str()).expect("JSON from server")
                }
                Some(Ok(_)) => continue,
                other => panic!("the server closed without answering the join: {other:?}"),
            }
        }
    })
    .await
    .expect("the server answers the join in time");
    if first["type"] == "welcome" {
        let _ = ws
            .send(Message::Text(json!({ "type": "leave" }).to_string().into()))
            .await;
    }
    let _ = ws.close(None).await;
    first
}

// ---- the browser -------------------------------------------------------------------------

/// One HTTP answer, as a browser saw it.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The URL asked for.
    pub url: String,
    /// Its status.
    pub status: StatusCode,
    /// `Location`, resolved against the URL.
    pub location: Option<String>,
    /// Every `Set-Cookie` line.
    pub set_cookies: Vec<String>,
    /// The body.
    pub body: String,
}

impl Hop {
    /// Whether this is a redirect.
    pub fn is_redirect(&self) -> bool {
        self.status.is_redirection()
    }

    /// The `Set-Cookie` line for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(String::as_str)
    }

    /// A query parameter of the `Location`.
    pub fn location_param(&self, name: &str) -> Option<String> {
        let loc = url::Url::parse(self.location.as_deref()?).ok()?;
        loc.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The three hops of a sign-in.
#[derive(Debug, Clone)]
pub struct SignIn {
    /// `GET /auth/{instance}/login` at Plenary.
    pub login: Hop,
    /// `GET /oauth/authorize` at the instance (absent when the login hop did not redirect).
    pub authorize: Option<Hop>,
    /// `GET /auth/{instance}/callback` at Plenary (absent when the instance did not redirect).
    pub callback: Option<Hop>,
}

impl SignIn {
    /// Asserts the sign-in ended with a redirect back into Plenary and a session cookie.
    pub fn expect_success(&self) -> &Hop {
        let cb = self
            .callback
            .as_ref()
            .unwrap_or_else(|| panic!("the sign-in never reached the callback: {self:#?}"));
        assert!(
            cb.is_redirect() && cb.set_cookie("plenary_session").is_some(),
            "the sign-in did not succeed: {cb:#?}"
        );
        cb
    }

    /// Asserts the sign-in was refused at the callback with `status`; returns the page.
    pub fn expect_refused(&self, status: StatusCode) -> &Hop {
        let cb = self
            .callback
            .as_ref()
            .unwrap_or_else(|| panic!("the sign-in never reached the callback: {self:#?}"));
        assert_eq!(cb.status, status, "{cb:#?}");
        assert!(
            cb.set_cookie("plenary_session").is_none(),
            "no session on a refusal: {cb:#?}"
        );
        cb
    }
}

/// A browser: keeps cookies, follows no redirect by itself.
pub struct Browser {
    /// The client.
    pub http: reqwest::Client,
    /// Its cookies.
    pub jar: Arc<Jar>,
    /// Plenary's base URL.
    pub base: String,
}

impl Browser {
    fn abs(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        }
    }

    /// Sends a request and records the answer.
    pub async fn request(&self, req: reqwest::RequestBuilder, url: String) -> Hop {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let set_cookies = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| {
                url::Url::parse(&url)
                    .and_then(|u| u.join(l))
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| l.to_string())
            });
        let body = resp.text().await.unwrap_or_default();
        Hop {
            url,
            status,
            location,
            set_cookies,
            body,
        }
    }

    /// `GET` (a path on Plenary, or an absolute URL).
    pub async fn get(&self, url: &str) -> Hop {
        let url = self.abs(url);
        self.request(self.http.get(&url), url).await
    }

    /// `GET` with extra headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Hop {
        let url = self.abs(url);
        let mut req = self.http.get(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.request(req, url).await
    }

    /// Starts a sign-in: `GET /auth/{instance}/login[?return_to=...]`.
    pub async fn begin(&self, instance: &str, return_to: Option<&str>) -> Hop {
        let mut url =
            url::Url::parse(&format!("{}/auth/{instance}/login", self.base)).expect("a URL");
        if let Some(r) = return_to {
            url.query_pairs_mut().append_pair("return_to", r);
        }
        self.get(url.as_str()).await
    }

    /// The whole sign-in, hop by hop: Plenary → instance → Plenary.
    pub async fn sign_in(&self, instance: &str, return_to: Option<&str>) -> SignIn {
        let login = self.begin(instance, return_to).await;
        let Some(to_instance) = login.location.clone().filter(|_| login.is_redirect()) else {
            return SignIn {
                login,
                authorize: None,
                callback: None,
            };
        };
        let authorize = self.get(&to_instance).await;
        let Some(back) = authorize
            .location
            .clone()
            .filter(|_| authorize.is_redirect())
        else {
            return SignIn {
                login,
                authorize: Some(authorize),
                callback: None,
            };
        };
        let callback = self.get(&back).await;
        SignIn {
            login,
            authorize: Some(authorize),
            callback: Some(callback),
        }
    }

    /// A JSON API call on Plenary; returns the status and the JSON body (`null` if none).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = self.abs(path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let hop = self.request(req, url).await;
        let v = serde_json::from_str(&hop.body).unwrap_or(Value::Null);
        (hop.status, v)
    }

    /// `POST /api/grant {room}`.
    pub async fn grant(&self, room: &str) -> (StatusCode, Value) {
        self.api(Method::POST, "/api/grant", Some(json!({ "room": room })))
            .await
    }

    /// `POST /api/grant` that must succeed; returns the JWT.
    pub async fn must_grant(&self, room: &str) -> String {
        let (status, v) = self.grant(room).await;
        assert_eq!(status, StatusCode::OK, "grant for {room}: {v}");
        v["grant"].as_str().expect("a grant").to_string()
    }

    /// `PUT /api/rooms/{room}/mode {mode}`.
    pub async fn set_mode(&self, room: &str, mode: &str) -> (StatusCode, Value) {
        self.api(
            Method::PUT,
            &format!("/api/rooms/{room}/mode"),
            Some(json!({ "mode": mode })),
        )
        .await
    }

    /// The value of a cookie this browser would send to `path` on Plenary.
    pub fn cookie(&self, path: &str, name: &str) -> Option<String> {
        let url = url::Url::parse(&format!("{}{path}", self.base)).expect("a URL");
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}
