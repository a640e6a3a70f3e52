//! Membership: who may enter, decided by accounts on the co-op's Mastodon instance(s).
//!
//! # Flow
//! 1. Sign-in ([`Membership::begin_login`] → instance → [`Membership::complete_login`]):
//!    OAuth 2 authorization code with PKCE S256, redirect URIs built from
//!    `membership.public_url`. Starting a sign-in stores nothing: the `state` carries it,
//!    sealed and bound to a cookie ([`pending`]), and is single-use once the instance
//!    accepted its code. `verify_credentials` decides:
//!    a 200 is an active local account, so a member (unless denied); 401/403 is refused
//!    with the reason. Hosts by role rule or host list. A server-side session (opaque
//!    cookie, 12 h absolute, 2 h idle) keeps the instance token away from the browser; the
//!    store keeps it sealed ([`sealing`]), bound to its instance, base URL and account.
//! 2. Grants ([`Membership::member_grant`]): short-lived, single-use `jti`, one room,
//!    permissions from the role, signed with the server's Ed25519 key ([`keys`]).
//!    Membership (and host status) is checked again with the instance when the last
//!    check is old.
//! 3. Rooms: members (or only hosts) open them; hosts set members-only, members and
//!    guests, or locked.
//! 4. Invitations ([`invitations`]): a member invites a partner co-op's people to one
//!    room for a limited time; guests redeem the link for a guest grant.
//!
//! Everything that changes state is written with an audit entry in the same transaction
//! ([`store`]). Codes, tokens and secrets never reach the log or the audit.

pub mod invitations;
pub mod keys;
pub mod mastodon;
pub mod pending;
pub mod routes;
pub mod sealing;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use plenary_proto::Role;
use serde::Serialize;
use url::Url;

use crate::config::{InstanceConfig, LimitedPolicy, MembershipConfig, OpenRooms};
use crate::grant::{unix_now, Claims, KeyRing, Permissions};
use mastodon::{Account, ApiError, AppCredentials, Discovery};
use pending::PendingSignIn;
use store::{RoomMode, Session, Store, StoreError};

/// How long an OAuth `state` stays valid.
pub const STATE_TTL_SECS: i64 = 600;
/// Most sign-in refusals written to the audit log per minute.
pub const MAX_REFUSALS_PER_MINUTE: u64 = 120;
/// Marks an instance access token stored sealed (older versions stored it in clear).
pub const SEALED_TOKEN_PREFIX: &str = "sealed1:";
/// When the instance cannot be reached, a membership checked this recently still counts.
pub const OFFLINE_GRACE_SECS: i64 = 12 * 3600;

/// Why a membership operation failed. Each maps to one HTTP status in [`routes`].
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// No instance with that id is configured.
    #[error("no instance {0:?} is configured for sign-in")]
    UnknownInstance(String),
    /// The return path is not a relative path on this site.
    #[error("the return path must be a path on this site, like /room/gm")]
    BadReturnPath,
    /// The OAuth state cookie is missing or differs from the callback's state.
    #[error(
        "this sign-in was not started from this browser (state mismatch); please sign in again"
    )]
    StateMismatch,
    /// The state was not sealed by this server (forged, altered, or from before its sealing
    /// secret changed).
    #[error(
        "this sign-in link was not issued by this server (or was altered); please sign in again"
    )]
    StateInvalid,
    /// The state is used or expired.
    #[error("this sign-in link has expired or was already used; please sign in again")]
    StateExpired,
    /// The state was issued for another instance.
    #[error("this sign-in was started for another instance; please sign in again")]
    WrongInstance,
    /// The instance refused the authorization (the user cancelled, or the code is invalid).
    #[error("the instance did not authorize the sign-in: {0}")]
    NotAuthorized(String),
    /// The account may not sign in.
    #[error("{0}")]
    Refused(String),
    /// The instance answered 429 (it is rate-limiting Plenary).
    #[error("the instance is busy (rate-limited); please try again in a minute")]
    RateLimited,
    /// The instance could not be reached or answered oddly.
    #[error("the instance could not be reached: {0}")]
    Instance(ApiError),
    /// Not signed in (or the session expired).
    #[error("please sign in")]
    NotSignedIn,
    /// The signed-in member may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing found.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A grant could not be signed.
    #[error("could not sign the grant: {0}")]
    Sign(String),
}

/// One configured instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its configuration.
    pub config: InstanceConfig,
    /// Its base URL.
    pub base: Url,
    /// The domain of its members' handles, from the configuration
    /// ([`InstanceConfig::handle_domain`]), never from the instance.
    pub domain: String,
}

/// A grant handed to a browser.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedGrant {
    /// The JWT.
    pub grant: String,
    /// The room it opens.
    pub room: String,
    /// Where the signaling WebSocket is (relative).
    pub ws_url: &'static str,
}

/// The membership service. Shared by the HTTP handlers.
pub struct Membership {
    config: MembershipConfig,
    public: Url,
    instances: Vec<Instance>,
    store: Store,
    client: mastodon::Client,
    keys: KeyRing,
    keys_dir: PathBuf,
    /// Keys for pending sign-ins and tokens at rest, from the secret in the keys folder.
    sealing: sealing::Sealing,
    // std mutexes: held for a map access only, never across an await.
    active_key: Mutex<keys::ActiveKey>,
    discovery: Mutex<HashMap<String, Discovery>>,
    /// App credentials by instance id, once read or registered (the configuration, and so
    /// each id's base URL and redirect URI, is fixed for the life of the process).
    apps: Mutex<HashMap<String, AppCredentials>>,
    /// Instances whose reported domain was compared with the configured one.
    domains_checked: Mutex<HashSet<String>>,
    /// (minute, refusals audited in it), to bound unauthenticated audit writes.
    refusals: Mutex<(u64, u64)>,
    /// Held while looking up or registering an app, so concurrent first sign-ins register one
    /// app (the second registration would replace the first's credentials mid-flight).
    registering: tokio::sync::Mutex<()>,
}

impl Membership {
    /// Opens the store and keys and shares the verifying keys with `keys`.
    pub fn new(
        config: MembershipConfig,
        store: Store,
        keys: KeyRing,
    ) -> Result<Membership, String> {
        let public =
            Url::parse(&config.public_url).map_err(|e| format!("membership.public_url: {e}"))?;
        let instances = config
            .instances
            .iter()
            .map(|c| {
                let base =
                    Url::parse(&c.base_url).map_err(|e| format!("instance {}: {e}", c.id))?;
                let domain = c
                    .handle_domain()
                    .ok_or_else(|| format!("instance {}: no domain for handles", c.id))?;
                Ok::<_, String>(Instance {
                    config: c.clone(),
                    base,
                    domain,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys_dir = keys_dir(&config);
        let sealing = sealing::load_or_create(&keys_dir).map_err(|e| e.to_string())?;
        let now = unix_now() as i64;
        let active = keys::active(&store, &keys_dir, now).map_err(|e| e.to_string())?;
        let verifying = keys::verifying(&store, now, config.grant_ttl_secs as i64)
            .map_err(|e| e.to_string())?;
        keys.set_server_keys(verifying);
        let membership = Membership {
            config,
            public,
            instances,
            store,
            client: mastodon::Client::new(),
            keys,
            keys_dir,
            sealing,
            active_key: Mutex::new(active),
            discovery: Mutex::new(HashMap::new()),
            apps: Mutex::new(HashMap::new()),
            domains_checked: Mutex::new(HashSet::new()),
            refusals: Mutex::new((0, 0)),
            registering: tokio::sync::Mutex::new(()),
        };
        membership
            .seal_clear_tokens()
            .map_err(|e| format!("sealing stored instance tokens: {e}"))?;
        Ok(membership)
    }

    /// The configured instances.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether cookies must be `Secure` (served over HTTPS).
    pub fn secure_cookies(&self) -> bool {
        self.public.scheme() == "https"
    }

    /// Session lifetime, for the cookie's Max-Age.
    pub fn session_max_age(&self) -> u64 {
        self.config.session_absolute_secs
    }

    fn instance(&self, id: &str) -> Result<&Instance, MembershipError> {
        self.instances
            .iter()
            .find(|i| i.config.id == id)
            .ok_or_else(|| MembershipError::UnknownInstance(id.into()))
    }

    /// The callback URL registered with an instance.
    pub fn redirect_uri(&self, instance: &str) -> String {
        let mut u = self.public.clone();
        let base = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base}/auth/{instance}/callback"));
        u.set_query(None);
        u.to_string()
    }

    /// An absolute URL on this site for `path` (e.g. invitation links).
    pub fn public_link(&self, path_and_fragment: &str) -> String {
        let base = self.public.as_str().trim_end_matches('/');
        format!("{base}{path_and_fragment}")
    }

    async fn discovery(&self, inst: &Instance) -> Discovery {
        if let Some(d) = self.lock_discovery().get(&inst.config.id).cloned() {
            return d;
        }
        let (d, definitive) = self.client.discover(&inst.base).await;
        if definitive {
            self.lock_discovery()
                .insert(inst.config.id.clone(), d.clone());
        }
        d
    }

    fn lock_apps(&self) -> std::sync::MutexGuard<'_, HashMap<String, AppCredentials>> {
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_discovery(&self) -> std::sync::MutexGuard<'_, HashMap<String, Discovery>> {
        self.discovery.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn app(
        &self,
        inst: &Instance,
        disc: &Discovery,
    ) -> Result<AppCredentials, MembershipError> {
        if let Some(app) = self.lock_apps().get(&inst.config.id).cloned() {
            return Ok(app);
        }
        let redirect = self.redirect_uri(&inst.config.id);
        let (id, base) = (inst.config.id.clone(), inst.base.to_string());
        let r = redirect.clone();
        let _registering = self.registering.lock().await;
        if let Some(app) = self
            .store
            .run(move |c| store::app(c, &id, &base, &r))
            .await?
        {
            let creds = AppCredentials {
                client_id: app.client_id,
                client_secret: app.client_secret,
            };
            self.lock_apps()
                .insert(inst.config.id.clone(), creds.clone());
            return Ok(creds);
        }
        let creds = self
            .client
            .register_app(
                &inst.base,
                &redirect,
                &mastodon::app_scopes(&disc.scope),
                self.public.as_str(),
            )
            .await
            .map_err(api_error)?;
        let reg = store::AppRegistration {
            client_id: creds.client_id.clone(),
            client_secret: creds.client_secret.clone(),
            redirect_uri: redirect,
        };
        let (id, base) = (inst.config.id.clone(), inst.base.to_string());
        self.store
            .run(move |c| store::save_app(c, &id, &base, &reg, unix_now() as i64))
            .await?;
        tracing::info!(instance = %inst.config.id, base = %inst.base, "registered Plenary as an app");
        self.lock_apps()
            .insert(inst.config.id.clone(), creds.clone());
        Ok(creds)
    }

    /// Starts a sign-in: returns the instance's authorization URL (whose `state` carries the
    /// sealed [`PendingSignIn`]) and the value of the cookie that binds it to this browser.
    /// Stores nothing.
    pub async fn begin_login(
        &self,
        instance: &str,
        return_to: Option<&str>,
    ) -> Result<(String, String), MembershipError> {
        let return_to = return_to.unwrap_or("/");
        if !is_local_path(return_to) {
            return Err(MembershipError::BadReturnPath);
        }
        let inst = self.instance(instance)?.clone();
        let disc = self.discovery(&inst).await;
        let app = self.app(&inst, &disc).await?;
        let (pending, binding) = PendingSignIn::start(
            &inst.config.id,
            return_to,
            unix_now() as i64,
            STATE_TTL_SECS,
        );
        let mut url = disc.authorize.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &app.client_id)
            .append_pair("redirect_uri", &self.redirect_uri(&inst.config.id))
            .append_pair("scope", &disc.scope)
            .append_pair("state", &pending.seal(&self.sealing))
            .append_pair("code_challenge", &pending.challenge())
            .append_pair("code_challenge_method", "S256");
        Ok((url.to_string(), binding))
    }

    /// The pending sign-in a callback's `state` carries, once it is checked: sealed by this
    /// server, bound to this browser's cookie, not expired, for this instance, not used.
    async fn pending_sign_in(
        &self,
        inst: &Instance,
        state: &str,
        cookie: Option<&str>,
    ) -> Result<PendingSignIn, MembershipError> {
        let instance = inst.config.id.as_str();
        let Some(cookie) = cookie else {
            self.audit_refusal(instance, "state_mismatch").await;
            return Err(MembershipError::StateMismatch);
        };
        let Some(pending) = PendingSignIn::open(&self.sealing, state) else {
            self.audit_refusal(instance, "state_invalid").await;
            return Err(MembershipError::StateInvalid);
        };
        if !pending.bound_to(cookie) {
            self.audit_refusal(instance, "state_mismatch").await;
            return Err(MembershipError::StateMismatch);
        }
        if pending.expires_at < unix_now() as i64 {
            self.audit_refusal(instance, "state_expired").await;
            return Err(MembershipError::StateExpired);
        }
        if pending.instance != inst.config.id {
            self.audit_refusal(instance, "state_for_other_instance")
                .await;
            return Err(MembershipError::WrongInstance);
        }
        let s = state.to_string();
        let used = self
            .store
            .run(move |c| store::oauth_state_used(c, &s, unix_now() as i64))
            .await?;
        if used {
            self.audit_refusal(instance, "state_unknown_or_used").await;
            return Err(MembershipError::StateExpired);
        }
        Ok(pending)
    }

    /// Completes a sign-in from the instance's callback. Returns the new session's cookie
    /// value and where to send the browser.
    pub async fn complete_login(
        &self,
        instance: &str,
        code: &str,
        state: &str,
        cookie: Option<&str>,
    ) -> Result<(String, String), MembershipError> {
        let inst = self.instance(instance)?.clone();
        let pending = self.pending_sign_in(&inst, state, cookie).await?;
        let disc = self.discovery(&inst).await;
        let app = self.app(&inst, &disc).await?;
        let token = match self
            .client
            .exchange_code(
                &disc,
                &app,
                code,
                &pending.verifier,
                &self.redirect_uri(instance),
            )
            .await
        {
            Ok(t) => t,
            Err(ApiError::Status(s)) if (400..500).contains(&s) && s != 429 => {
                self.audit_refusal(instance, "code_rejected").await;
                return Err(MembershipError::NotAuthorized(
                    "the authorization code was not accepted".into(),
                ));
            }
            Err(e) => return Err(api_error(e)),
        };
        // The instance accepted the code: from now on the state is used up.
        let (s, until) = (state.to_string(), pending.expires_at);
        let first = self
            .store
            .run(move |c| store::use_oauth_state(c, &s, until, unix_now() as i64))
            .await;
        let result = match first {
            Ok(true) => self.sign_in_account(&inst, &token, pending.return_to).await,
            Ok(false) => {
                self.audit_refusal(instance, "state_unknown_or_used").await;
                Err(MembershipError::StateExpired)
            }
            Err(e) => Err(e.into()),
        };
        if result.is_err() {
            // The instance gave us a token we will not keep: give it back (in the background,
            // so a slow instance does not hold up the page that says what went wrong).
            let (client, disc, app) = (self.client.clone(), disc.clone(), app.clone());
            tokio::spawn(async move {
                if let Err(e) = client.revoke(&disc, &app, &token).await {
                    tracing::warn!("could not revoke the token of a failed sign-in: {e}");
                }
            });
        }
        result
    }

    /// The part of a sign-in after the code exchange: who the account is, and whether it
    /// makes a member (and host). On `Err` the caller revokes `token`.
    async fn sign_in_account(
        &self,
        inst: &Instance,
        token: &str,
        return_to: String,
    ) -> Result<(String, String), MembershipError> {
        let instance = inst.config.id.as_str();
        let account = match self.client.verify_credentials(&inst.base, token).await {
            Ok(a) => a,
            Err(ApiError::Status(401 | 403)) => {
                self.audit_refusal(instance, "account_not_active").await;
                return Err(MembershipError::Refused(format!(
                    "{} says this account is not active (suspended, disabled or not yet \
                     approved), so it cannot sign in to Plenary",
                    display_name(inst)
                )));
            }
            Err(e) => return Err(api_error(e)),
        };
        let handle = format!("@{}@{}", account.username.to_ascii_lowercase(), inst.domain);
        self.check_domain_once(inst);
        let decision = self.decide(inst, &account, &handle);
        let (is_host, listen_only) = match decision {
            Ok(v) => v,
            Err(reason) => {
                let detail = serde_json::json!({ "instance": instance, "reason": reason });
                let h = handle.clone();
                let _ = self
                    .store
                    .run(move |c| {
                        store::audit(c, unix_now() as i64, "sign_in_refused", &h, "", detail)
                    })
                    .await;
                return Err(MembershipError::Refused(reason));
            }
        };
        let now = unix_now() as i64;
        let cookie = crate::secret::random_b64(32);
        let session = Session {
            id_hash: String::new(),
            instance: inst.config.id.clone(),
            account_id: account.id.clone(),
            handle: handle.clone(),
            display_name: if account.display_name.trim().is_empty() {
                account.username.clone()
            } else {
                account.display_name.clone()
            },
            is_host,
            listen_only,
            access_token: self.seal_token(inst, &account.id, token),
            created_at: now,
            last_seen: now,
            checked_at: now,
        };
        let c2 = cookie.clone();
        self.store
            .run(move |c| {
                let tx = c.transaction()?;
                store::create_session(&tx, &c2, &session)?;
                store::audit(
                    &tx,
                    now,
                    "sign_in",
                    &session.handle,
                    "",
                    serde_json::json!({
                        "instance": session.instance,
                        "is_host": session.is_host,
                        "listen_only": session.listen_only,
                    }),
                )?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        tracing::info!(%handle, is_host, "signed in");
        Ok((cookie, return_to))
    }

    /// Once per instance (in the background), compares the domain the instance reports with
    /// the configured one and warns the operator when they differ: handles (and so the
    /// `hosts` and `deny` lists) use the configured one.
    fn check_domain_once(&self, inst: &Instance) {
        let first = self
            .domains_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(inst.config.id.clone());
        if !first {
            return;
        }
        let (client, inst) = (self.client.clone(), inst.clone());
        tokio::spawn(async move {
            match client.domain(&inst.base).await {
                Ok(reported) if reported != inst.domain => tracing::warn!(
                    instance = %inst.config.id,
                    %reported,
                    configured = %inst.domain,
                    "the instance calls itself by another domain than the one its members' \
                     handles use here; set `domain` in its [[membership.instances]] entry if \
                     its handles end with @{reported}"
                ),
                Ok(_) => {}
                Err(e) => tracing::debug!(instance = %inst.config.id, "domain check: {e}"),
            }
        });
    }

    /// Member or not, host or not, from the account and the rules. `Err` is the reason.
    fn decide(
        &self,
        inst: &Instance,
        account: &Account,
        handle: &str,
    ) -> Result<(bool, bool), String> {
        if account.suspended {
            return Err(format!(
                "{} reports this account as suspended",
                display_name(inst)
            ));
        }
        if !inst.config.members {
            return Err(format!(
                "accounts on {} do not make members of this co-op",
                display_name(inst)
            ));
        }
        if contains_handle(&self.config.deny, handle) {
            return Err("this account may not use Plenary (operator's deny list)".into());
        }
        let listen_only = match (account.limited, self.config.limited_accounts) {
            (false, _) | (true, LimitedPolicy::Allow) => false,
            (true, LimitedPolicy::ListenOnly) => true,
            (true, LimitedPolicy::Deny) => {
                return Err("this account is limited by its instance's moderators".into())
            }
        };
        let is_host =
            contains_handle(&self.config.hosts, handle) || role_is_host(&inst.config, account);
        Ok((is_host, listen_only))
    }

    async fn audit_refusal(&self, instance: &str, reason: &str) {
        // Anyone can make refusals happen (a bogus callback needs no account): bound the
        // rows they write, so the append-only log cannot be flooded. The rest are counted
        // in the server log.
        {
            let now = unix_now() / 60;
            let mut window = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if window.0 != now {
                if window.1 > MAX_REFUSALS_PER_MINUTE {
                    tracing::warn!(
                        dropped = window.1 - MAX_REFUSALS_PER_MINUTE,
                        "sign-in refusals over the audit limit were not recorded"
                    );
                }
                *window = (now, 0);
            }
            window.1 += 1;
            if window.1 > MAX_REFUSALS_PER_MINUTE {
                return;
            }
        }
        let detail = serde_json::json!({ "instance": instance, "reason": reason });
        let _ = self
            .store
            .run(move |c| store::audit(c, unix_now() as i64, "sign_in_refused", "", "", detail))
            .await;
    }

    /// The session a cookie opens, if it is still valid (and marks it used).
    pub async fn session(&self, cookie: &str) -> Result<Option<Session>, MembershipError> {
        let cookie = cookie.to_string();
        let absolute = self.config.session_absolute_secs as i64;
        let idle = self.config.session_idle_secs as i64;
        Ok(self
            .store
            .run(move |c| {
                let Some(s) = store::session(c, &cookie)? else {
                    return Ok(None);
                };
                let now = unix_now() as i64;
                if now - s.created_at > absolute || now - s.last_seen > idle {
                    store::delete_session(c, &s.id_hash)?;
                    return Ok(None);
                }
                store::touch_session(c, &s.id_hash, now, false)?;
                Ok(Some(s))
            })
            .await?)
    }

    /// Checks with the instance that the session's account is still a member, if the last
    /// check is older than `recheck_secs`. Loses the session when it is not. Runs before a
    /// grant is minted, a room's mode is set and an invitation is created. Returns the session
    /// as it stands after the check: host status and listen-only follow the account's current
    /// role and `limited` flag (on every session of the account).
    async fn recheck(&self, s: &Session) -> Result<Session, MembershipError> {
        let now = unix_now() as i64;
        if now - s.checked_at < self.config.recheck_secs as i64 {
            return Ok(s.clone());
        }
        let inst = self.instance(&s.instance)?.clone();
        let token = self.session_token(&inst, s).await?;
        match self.client.verify_credentials(&inst.base, &token).await {
            Ok(account) => {
                let (is_host, listen_only) = match self.decide(&inst, &account, &s.handle) {
                    Ok(v) => v,
                    Err(reason) => {
                        self.lose_membership(s, &reason).await?;
                        return Err(MembershipError::Refused(reason));
                    }
                };
                let id = s.id_hash.clone();
                let (i, a, h) = (s.instance.clone(), s.account_id.clone(), s.handle.clone());
                self.store
                    .run(move |c| {
                        let tx = c.transaction()?;
                        store::touch_session(&tx, &id, now, true)?;
                        store::set_account_sessions_roles(&tx, &i, &a, is_host, listen_only)?;
                        store::set_member(&tx, &i, &a, &h, true, now)?;
                        tx.commit()?;
                        Ok(())
                    })
                    .await?;
                Ok(Session {
                    is_host,
                    listen_only,
                    last_seen: now,
                    checked_at: now,
                    ..s.clone()
                })
            }
            Err(ApiError::Status(401 | 403)) => {
                let reason = "your instance says your account is no longer active";
                self.lose_membership(s, reason).await?;
                Err(MembershipError::Refused(reason.into()))
            }
            Err(e) if now - s.checked_at < OFFLINE_GRACE_SECS => {
                tracing::warn!(instance = %s.instance, "membership re-check failed ({e}); using the last check");
                Ok(s.clone())
            }
            Err(e) => Err(api_error(e)),
        }
    }

    async fn lose_membership(&self, s: &Session, reason: &str) -> Result<(), MembershipError> {
        let (i, a, h) = (s.instance.clone(), s.account_id.clone(), s.handle.clone());
        let reason = reason.to_string();
        self.store
            .run(move |c| {
                let tx = c.transaction()?;
                let now = unix_now() as i64;
                store::set_member(&tx, &i, &a, &h, false, now)?;
                store::delete_account_sessions(&tx, &i, &a)?;
                store::audit(
                    &tx,
                    now,
                    "membership_lost",
                    &h,
                    "",
                    serde_json::json!({ "reason": reason }),
                )?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// What binds a sealed token to its place: the instance id, the base URL that issued it
    /// and the account. A token sealed for one instance, host or account opens for no other,
    /// so it is never sent to a host that did not issue it.
    fn token_context(inst: &Instance, account_id: &str) -> Vec<u8> {
        format!("{}\0{}\0{}", inst.config.id, inst.base, account_id).into_bytes()
    }

    /// An instance access token as it is stored: sealed ([`sealing`]), with a prefix that
    /// tells it from a token stored in clear by an older version.
    fn seal_token(&self, inst: &Instance, account_id: &str, token: &str) -> String {
        let context = Self::token_context(inst, account_id);
        let sealed = self.sealing.tokens.seal(&context, token.as_bytes());
        format!("{SEALED_TOKEN_PREFIX}{sealed}")
    }

    /// A session's instance access token, if it opens for the instance as configured now.
    fn open_token(&self, inst: &Instance, s: &Session) -> Option<String> {
        let sealed = s.access_token.strip_prefix(SEALED_TOKEN_PREFIX)?;
        let plain = self
            .sealing
            .tokens
            .open(&Self::token_context(inst, &s.account_id), sealed)?;
        String::from_utf8(plain).ok()
    }

    /// A session's instance access token; a session whose token no longer opens (its
    /// instance moved to another base URL, or the sealing secret was replaced) is ended.
    async fn session_token(&self, inst: &Instance, s: &Session) -> Result<String, MembershipError> {
        if let Some(token) = self.open_token(inst, s) {
            return Ok(token);
        }
        tracing::warn!(
            instance = %s.instance,
            "a session's instance token does not open (the instance's base URL or the sealing \
             secret changed since sign-in); the member must sign in again"
        );
        let id = s.id_hash.clone();
        self.store
            .run(move |c| store::delete_session(c, &id))
            .await?;
        Err(MembershipError::NotSignedIn)
    }

    /// Seals the tokens an older version stored in clear; ends the sessions of instances
    /// no longer configured.
    fn seal_clear_tokens(&self) -> Result<(), StoreError> {
        let clear = self
            .store
            .run_sync(|c| store::session_tokens_not_prefixed(c, SEALED_TOKEN_PREFIX))?;
        for (id_hash, instance, account_id, token) in clear {
            let sealed = self
                .instance(&instance)
                .ok()
                .map(|inst| self.seal_token(inst, &account_id, &token));
            self.store.run_sync(|c| match &sealed {
                Some(sealed) => store::set_session_token(c, &id_hash, sealed),
                None => store::delete_session(c, &id_hash),
            })?;
        }
        Ok(())
    }

    /// A grant for a signed-in member to join `room` (opening it if they may).
    pub async fn member_grant(
        &self,
        s: &Session,
        room: &str,
    ) -> Result<IssuedGrant, MembershipError> {
        if !plenary_proto::valid_room_name(room) {
            return Err(MembershipError::BadRequest(
                "room must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let s = &self.recheck(s).await?;
        let may_open = s.is_host || self.config.who_may_open_rooms == OpenRooms::Members;
        let (r, h) = (room.to_string(), s.handle.clone());
        let mode = self
            .store
            .run(move |c| {
                let now = unix_now() as i64;
                if let Some(mode) = store::room_mode(c, &r)? {
                    return Ok(Some(mode));
                }
                if !may_open {
                    return Ok(None);
                }
                let tx = c.transaction()?;
                store::open_room(&tx, &r, &h, now)?;
                store::audit(&tx, now, "room_opened", &h, &r, serde_json::json!({}))?;
                tx.commit()?;
                Ok(Some(RoomMode::MembersAndGuests))
            })
            .await?;
        match mode {
            None => {
                return Err(MembershipError::Forbidden(
                    "this room is not open yet, and only hosts may open rooms".into(),
                ))
            }
            Some(RoomMode::Locked) if !s.is_host => {
                return Err(MembershipError::Forbidden(
                    "a host has locked this room".into(),
                ))
            }
            _ => {}
        }
        let permissions = Permissions {
            can_publish: !s.listen_only,
            can_publish_sources: Vec::new(),
            can_subscribe: true,
            can_publish_data: true,
            is_host: s.is_host,
        };
        let role = if s.is_host { Role::Host } else { Role::Member };
        let claims = Claims::new(
            room,
            &s.handle,
            &s.display_name,
            role,
            std::time::Duration::from_secs(self.config.grant_ttl_secs),
        )
        .with_permissions(permissions);
        self.issue(claims, &s.handle).await
    }

    /// Signs `claims` with the active key and records the grant in the audit log.
    async fn issue(&self, claims: Claims, actor: &str) -> Result<IssuedGrant, MembershipError> {
        let key = self.current_key().await?;
        let grant = self
            .keys
            .mint_server(&claims, &key.kid, &key.encoding)
            .map_err(|e| MembershipError::Sign(e.to_string()))?;
        let detail = serde_json::json!({
            "jti": claims.jti,
            "identity": claims.sub,
            "role": claims.role,
            "permissions": claims.permissions,
            "exp": claims.exp,
            "kid": key.kid,
        });
        let (a, r) = (actor.to_string(), claims.room.clone());
        self.store
            .run(move |c| store::audit(c, unix_now() as i64, "grant", &a, &r, detail))
            .await?;
        Ok(IssuedGrant {
            grant,
            room: claims.room,
            ws_url: "/rtc",
        })
    }

    /// The active signing key, reloaded when `plenary keys rotate` added a newer one.
    async fn current_key(&self) -> Result<keys::ActiveKey, MembershipError> {
        let store = self.store.clone();
        let dir = self.keys_dir.clone();
        let ttl = self.config.grant_ttl_secs as i64;
        // Not through `Store::run`: the key functions take the store's lock themselves.
        let (active, verifying) = tokio::task::spawn_blocking(move || {
            let now = unix_now() as i64;
            let a = keys::active(&store, &dir, now).map_err(key_to_store)?;
            let v = keys::verifying(&store, now, ttl).map_err(key_to_store)?;
            Ok::<_, StoreError>((a, v))
        })
        .await
        .map_err(|_| StoreError::Task)??;
        let changed = {
            let mut cur = self.active_key.lock().unwrap_or_else(|p| p.into_inner());
            let changed = cur.kid != active.kid;
            *cur = active.clone();
            changed
        };
        if changed {
            tracing::info!(kid = %active.kid, "signing with a new key");
        }
        self.keys.set_server_keys(verifying);
        Ok(active)
    }

    /// Loads keys from the store when a grant names a `kid` we do not know yet.
    pub async fn refresh_keys(&self) {
        let _ = self.current_key().await;
    }

    /// Marks a grant (member, guest or API-key) as used, until it expires; false when it was
    /// used before (a replay). Kept in the store, so it holds across restarts.
    pub async fn consume_jti(&self, claims: &Claims) -> Result<bool, MembershipError> {
        let (key, exp) = (crate::grant::replay_key(claims), claims.exp as i64);
        Ok(self
            .store
            .run(move |c| store::use_jti(c, &key, exp + 60, unix_now() as i64))
            .await?)
    }

    /// A host sets a room's mode.
    pub async fn set_room_mode(
        &self,
        s: &Session,
        room: &str,
        mode: RoomMode,
    ) -> Result<(), MembershipError> {
        let s = &self.recheck(s).await?;
        if !s.is_host {
            return Err(MembershipError::Forbidden(
                "only hosts may change a room's access".into(),
            ));
        }
        let (r, h) = (room.to_string(), s.handle.clone());
        let found = self
            .store
            .run(move |c| {
                let tx = c.transaction()?;
                let found = store::set_room_mode(&tx, &r, mode)?;
                if found {
                    store::audit(
                        &tx,
                        unix_now() as i64,
                        "room_mode",
                        &h,
                        &r,
                        serde_json::json!({ "mode": mode }),
                    )?;
                }
                tx.commit()?;
                Ok(found)
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(MembershipError::NotFound(format!(
                "room {room:?} is not open"
            )))
        }
    }

    /// Signs out: revokes the instance token (best effort), deletes the session.
    pub async fn logout(&self, cookie: &str) -> Result<(), MembershipError> {
        let c = cookie.to_string();
        let Some(s) = self.store.run(move |conn| store::session(conn, &c)).await? else {
            return Ok(());
        };
        let inst = self.instance(&s.instance).ok().cloned();
        let token = inst.as_ref().and_then(|i| self.open_token(i, &s));
        if let (Some(inst), Some(token)) = (inst, token) {
            let disc = self.discovery(&inst).await;
            if let Ok(app) = self.app(&inst, &disc).await {
                if let Err(e) = self.client.revoke(&disc, &app, &token).await {
                    tracing::warn!(instance = %s.instance, "token revocation failed: {e}");
                }
            }
        }
        self.store
            .run(move |conn| {
                let tx = conn.transaction()?;
                store::delete_session(&tx, &s.id_hash)?;
                store::audit(
                    &tx,
                    unix_now() as i64,
                    "sign_out",
                    &s.handle,
                    "",
                    serde_json::json!({}),
                )?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}

fn key_to_store(e: keys::KeyError) -> StoreError {
    match e {
        keys::KeyError::Store(s) => s,
        keys::KeyError::File { path, reason } => StoreError::Sql(rusqlite::Error::InvalidPath(
            PathBuf::from(format!("{path}: {reason}")),
        )),
    }
}

/// Where keys live: `keys_dir`, or `keys` beside the database.
pub fn keys_dir(config: &MembershipConfig) -> PathBuf {
    if !config.keys_dir.is_empty() {
        return PathBuf::from(&config.keys_dir);
    }
    let db = PathBuf::from(&config.database);
    db.parent()
        .map(|p| p.join("keys"))
        .unwrap_or_else(|| PathBuf::from("keys"))
}

fn display_name(inst: &Instance) -> String {
    if inst.config.display_name.is_empty() {
        inst.base.host_str().unwrap_or("the instance").to_string()
    } else {
        inst.config.display_name.clone()
    }
}

fn api_error(e: ApiError) -> MembershipError {
    match e {
        ApiError::Status(429) => MembershipError::RateLimited,
        other => MembershipError::Instance(other),
    }
}

/// Whether a member's role makes them a host under the instance's rule.
pub fn role_is_host(rule: &InstanceConfig, account: &Account) -> bool {
    if let Some(role) = &account.role {
        if rule
            .host_roles
            .iter()
            .any(|n| !role.name.is_empty() && n.eq_ignore_ascii_case(&role.name))
        {
            return true;
        }
        if !role.id.is_empty() && rule.host_role_ids.contains(&role.id) {
            return true;
        }
        if rule.host_permissions != 0 {
            if let Ok(bits) = role.permissions.parse::<u64>() {
                if bits & rule.host_permissions != 0 {
                    return true;
                }
            }
        }
    }
    if rule.pleroma_staff_are_hosts {
        if let Some(p) = &account.pleroma {
            return p.is_admin || p.is_moderator;
        }
    }
    false
}

/// Case-insensitive handle match (`@user@domain`, leading `@` optional in the list).
pub fn contains_handle(list: &[String], handle: &str) -> bool {
    let norm = |h: &str| h.trim().trim_start_matches('@').to_ascii_lowercase();
    let h = norm(handle);
    list.iter().any(|x| norm(x) == h)
}

/// Whether `path` is a path on this site (no scheme, no host, no `//` or `/\` tricks).
pub fn is_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.contains(['\r', '\n', '\\'])
        && !path.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mastodon::{AccountRole, PleromaFields};

    fn rule() -> InstanceConfig {
        InstanceConfig {
            id: "sc".into(),
            base_url: "https://social.coop".into(),
            domain: String::new(),
            display_name: String::new(),
            members: true,
            host_roles: vec!["Moderator".into(), "Host".into()],
            host_role_ids: vec!["7".into()],
            host_permissions: 0x400,
            pleroma_staff_are_hosts: true,
        }
    }

    fn account(role: Option<AccountRole>, pleroma: Option<PleromaFields>) -> Account {
        Account {
            id: "1".into(),
            username: "a".into(),
            display_name: String::new(),
            limited: false,
            suspended: false,
            role,
            pleroma,
        }
    }

    #[test]
    fn host_rules_by_name_id_permission_and_pleroma_flags() {
        let r = rule();
        let role = |id: &str, name: &str, perms: &str| {
            Some(AccountRole {
                id: id.into(),
                name: name.into(),
                permissions: perms.into(),
            })
        };
        assert!(role_is_host(
            &r,
            &account(role("3", "moderator", "0"), None)
        ));
        assert!(role_is_host(&r, &account(role("7", "Custom", "0"), None)));
        assert!(role_is_host(&r, &account(role("9", "Other", "1024"), None)));
        assert!(!role_is_host(&r, &account(role("9", "Other", "1"), None)));
        assert!(!role_is_host(&r, &account(role("", "", ""), None)));
        assert!(!role_is_host(&r, &account(None, None)));
        let staff = PleromaFields {
            is_admin: false,
            is_moderator: true,
        };
        assert!(role_is_host(&r, &account(None, Some(staff.clone()))));
        let mut no_pleroma = rule();
        no_pleroma.pleroma_staff_are_hosts = false;
        assert!(!role_is_host(&no_pleroma, &account(None, Some(staff))));
    }

    #[test]
    fn handles_compare_case_insensitively() {
        let list = vec!["@Alice@Social.Coop".to_string(), "bob@x.org".to_string()];
        assert!(contains_handle(&list, "@alice@social.coop"));
        assert!(contains_handle(&list, "@BOB@x.org"));
        assert!(!contains_handle(&list, "@carol@social.coop"));
    }

    #[test]
    fn only_local_return_paths() {
        assert!(is_local_path("/"));
        assert!(is_local_path("/room/gm?x=1"));
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "evil",
            "/a\r\nSet-Cookie: x",
            "",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
    }
}
