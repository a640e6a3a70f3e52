//! A client for the parts of the Mastodon API that sign-in needs, following Mastodon's
//! documented API and the places GoToSocial and Akkoma differ.
//!
//! - `GET /.well-known/oauth-authorization-server` (Mastodon 4.3+): endpoints, scopes
//!   (`profile` when offered), PKCE methods. Older servers: the classic `/oauth/*` paths
//!   and `read:accounts`.
//! - `POST /api/v1/apps`: register Plenary once per instance.
//! - `POST /oauth/token` (authorization code + PKCE; client credentials), `POST /oauth/revoke`.
//! - `GET /api/v1/accounts/verify_credentials`, `GET /api/v1/accounts/:id`.
//! - `GET /api/v2/instance` (domain), falling back to `GET /api/v1/instance` (`uri`): only
//!   to warn when it differs from the configured domain (handles never use it).
//!
//! Tokens and codes pass through here but are never logged.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// Timeout of every call to an instance.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The scope of the app-level token that looks up an inviting member's account
/// (`GET /api/v1/accounts/:id` accepts `read` or `read:accounts` tokens).
pub const APP_TOKEN_SCOPE: &str = "read:accounts";

/// The scopes Plenary registers its app with: the sign-in scope, plus [`APP_TOKEN_SCOPE`]
/// for the app-level token. A client-credentials token may only ask for scopes the app was
/// registered with, and `profile` alone does not let it read accounts.
pub fn app_scopes(sign_in_scope: &str) -> String {
    if sign_in_scope.split(' ').any(|s| s == APP_TOKEN_SCOPE) {
        sign_in_scope.to_string()
    } else {
        format!("{sign_in_scope} {APP_TOKEN_SCOPE}")
    }
}

/// What went wrong talking to an instance.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The instance answered with this HTTP status.
    #[error("the instance answered HTTP {0}")]
    Status(u16),
    /// The instance did not answer in time.
    #[error("the instance did not answer in time")]
    Timeout,
    /// The instance could not be reached.
    #[error("the instance could not be reached: {0}")]
    Network(String),
    /// The answer was not what the API documents.
    #[error("the instance's answer could not be understood: {0}")]
    Parse(String),
}

impl From<reqwest::Error> for ApiError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            ApiError::Timeout
        } else if let Some(s) = e.status() {
            ApiError::Status(s.as_u16())
        } else if e.is_decode() {
            ApiError::Parse(e.to_string())
        } else {
            ApiError::Network(e.without_url().to_string())
        }
    }
}

/// OAuth endpoints and capabilities of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Authorization endpoint.
    pub authorize: Url,
    /// Token endpoint.
    pub token: Url,
    /// Revocation endpoint.
    pub revoke: Url,
    /// The scope to ask for: `profile` where offered, else `read:accounts`.
    pub scope: String,
}

#[derive(Deserialize)]
struct Metadata {
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
}

/// A registered app's credentials.
#[derive(Debug, Clone, Deserialize)]
pub struct AppCredentials {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
}

/// A role as Mastodon 4 reports it (GoToSocial: name only).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
pub struct AccountRole {
    /// Role id (a number in Mastodon, sent as a string or number).
    #[serde(default, deserialize_with = "string_or_number")]
    pub id: String,
    /// Role name, e.g. `Admin`, `Moderator`, or a custom one.
    #[serde(default)]
    pub name: String,
    /// Permission bit field (a string of digits in Mastodon).
    #[serde(default, deserialize_with = "string_or_number")]
    pub permissions: String,
}

/// Akkoma/Pleroma's extra account fields.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
pub struct PleromaFields {
    /// Instance admin.
    #[serde(default)]
    pub is_admin: bool,
    /// Instance moderator.
    #[serde(default)]
    pub is_moderator: bool,
}

/// The account fields sign-in uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// Account id on the instance.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Local username.
    pub username: String,
    /// Display name (may be empty).
    #[serde(default)]
    pub display_name: String,
    /// Silenced by moderators.
    #[serde(default)]
    pub limited: bool,
    /// Suspended (some servers still answer 200 with this set).
    #[serde(default)]
    pub suspended: bool,
    /// The account's role (`verify_credentials` only).
    #[serde(default)]
    pub role: Option<AccountRole>,
    /// Akkoma/Pleroma staff flags.
    #[serde(default)]
    pub pleroma: Option<PleromaFields>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// Talks to instances.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client with timeouts, following no redirects off the instance's API.
    pub fn new() -> Client {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Plenary/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a valid HTTP client configuration");
        Client { http }
    }

    /// The instance's OAuth endpoints: discovered where supported, else Mastodon's defaults.
    /// The flag says whether the answer is definitive (worth keeping): a discovery document,
    /// or a 404 from a server without one. A network error, a timeout or a 429/5xx is not,
    /// so a passing failure does not make Plenary ask for `read:accounts` forever.
    pub async fn discover(&self, base: &Url) -> (Discovery, bool) {
        let defaults = Discovery {
            authorize: join(base, "/oauth/authorize"),
            token: join(base, "/oauth/token"),
            revoke: join(base, "/oauth/revoke"),
            scope: "read:accounts".into(),
        };
        let url = join(base, "/.well-known/oauth-authorization-server");
        let Ok(resp) = self.http.get(url).send().await else {
            return (defaults, false);
        };
        if !resp.status().is_success() {
            let definitive = matches!(resp.status().as_u16(), 404 | 410);
            return (defaults, definitive);
        }
        let Ok(meta) = resp.json::<Metadata>().await else {
            return (defaults, true);
        };
        let pick = |v: Option<String>, d: Url| v.and_then(|s| Url::parse(&s).ok()).unwrap_or(d);
        let found = Discovery {
            authorize: pick(meta.authorization_endpoint, defaults.authorize),
            token: pick(meta.token_endpoint, defaults.token),
            revoke: pick(meta.revocation_endpoint, defaults.revoke),
            scope: if meta.scopes_supported.iter().any(|s| s == "profile") {
                "profile".into()
            } else {
                "read:accounts".into()
            },
        };
        (found, true)
    }

    /// Registers Plenary as an app (`POST /api/v1/apps`).
    pub async fn register_app(
        &self,
        base: &Url,
        redirect_uri: &str,
        scopes: &str,
        website: &str,
    ) -> Result<AppCredentials, ApiError> {
        let resp = self
            .http
            .post(join(base, "/api/v1/apps"))
            .form(&[
                ("client_name", "Plenary"),
                ("redirect_uris", redirect_uri),
                ("scopes", scopes),
                ("website", website),
            ])
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for an access token.
    pub async fn exchange_code(
        &self,
        disc: &Discovery,
        app: &AppCredentials,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, ApiError> {
        self.token(
            disc,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect_uri),
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secret),
                ("scope", &disc.scope),
            ],
        )
        .await
    }

    /// An app-level token (client credentials, scope `read:accounts`: see
    /// [`app_scopes`]), for looking up accounts without a user.
    pub async fn app_token(
        &self,
        disc: &Discovery,
        app: &AppCredentials,
    ) -> Result<String, ApiError> {
        self.token(
            disc,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secret),
                ("scope", APP_TOKEN_SCOPE),
            ],
        )
        .await
    }

    async fn token(&self, disc: &Discovery, form: &[(&str, &str)]) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
        }
        let resp = self
            .http
            .post(disc.token.clone())
            .form(form)
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.json::<Token>().await?.access_token)
    }

    /// The signed-in account (`GET /api/v1/accounts/verify_credentials`).
    pub async fn verify_credentials(&self, base: &Url, token: &str) -> Result<Account, ApiError> {
        let resp = self
            .http
            .get(join(base, "/api/v1/accounts/verify_credentials"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// One account by id (`GET /api/v1/accounts/:id`).
    pub async fn account(&self, base: &Url, token: &str, id: &str) -> Result<Account, ApiError> {
        let mut url = base.clone();
        url.set_path("/api/v1/accounts/");
        let url = url
            .join(&urlencode(id))
            .map_err(|e| ApiError::Parse(e.to_string()))?;
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// The domain the instance reports for itself. Not trusted for handles: any configured
    /// instance could claim any domain.
    pub async fn domain(&self, base: &Url) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct V2 {
            domain: String,
        }
        #[derive(Deserialize)]
        struct V1 {
            uri: String,
        }
        let v2 = self.http.get(join(base, "/api/v2/instance")).send().await?;
        if v2.status().is_success() {
            if let Ok(v) = v2.json::<V2>().await {
                return Ok(v.domain.to_ascii_lowercase());
            }
        }
        let v1: V1 = self
            .http
            .get(join(base, "/api/v1/instance"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        // `uri` is a bare domain in Mastodon, a URL in some other servers.
        let domain = Url::parse(&v1.uri)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or(v1.uri);
        Ok(domain.to_ascii_lowercase())
    }

    /// Revokes a token (`POST /oauth/revoke`). Failures are reported, not retried.
    pub async fn revoke(
        &self,
        disc: &Discovery,
        app: &AppCredentials,
        token: &str,
    ) -> Result<(), ApiError> {
        self.http
            .post(disc.revoke.clone())
            .form(&[
                ("client_id", app.client_id.as_str()),
                ("client_secret", app.client_secret.as_str()),
                ("token", token),
            ])
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    u.set_path(path);
    u.set_query(None);
    u
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mastodon_gotosocial_and_akkoma_accounts() {
        let mastodon: Account = serde_json::from_str(
            r#"{"id":"109","username":"alice","acct":"alice","display_name":"Alice",
                "role":{"id":3,"name":"Moderator","permissions":"1024","color":""}}"#,
        )
        .unwrap();
        assert_eq!(mastodon.id, "109");
        let role = mastodon.role.unwrap();
        assert_eq!((role.id.as_str(), role.permissions.as_str()), ("3", "1024"));
        let gts: Account = serde_json::from_str(
            r#"{"id":"01F8","username":"bob","display_name":"","role":{"name":"admin"}}"#,
        )
        .unwrap();
        assert_eq!(gts.role.unwrap().name, "admin");
        let akkoma: Account = serde_json::from_str(
            r#"{"id":"A1","username":"carol","pleroma":{"is_admin":false,"is_moderator":true}}"#,
        )
        .unwrap();
        assert!(akkoma.pleroma.unwrap().is_moderator);
        assert!(serde_json::from_str::<Account>(r#"{"username":"x"}"#).is_err());
    }

    #[test]
    fn the_app_may_mint_an_app_token_that_reads_accounts() {
        assert_eq!(app_scopes("profile"), "profile read:accounts");
        assert_eq!(app_scopes("read:accounts"), "read:accounts");
    }

    #[test]
    fn paths_replace_the_base_path() {
        let base = Url::parse("https://social.coop/some/path?x=1").unwrap();
        assert_eq!(
            join(&base, "/oauth/token").as_str(),
            "https://social.coop/oauth/token"
        );
        assert_eq!(urlencode("a/b"), "a%2Fb");
    }
}
