//! Room grants: the signed JWTs that let a client join one room with explicit permissions.
//!
//! Two kinds of signer, told apart by the `kid` header:
//! - **API keys** (HS256): `plenary token`, an operator's backend, dev mode. The `kid` names
//!   the key and must equal `iss`.
//! - **The server's Ed25519 keys** (EdDSA): grants Plenary mints for signed-in members and
//!   invited guests (see `membership`). `iss` is [`MEMBER_ISSUER`]; the key set is shared
//!   with the membership service, which adds keys on rotation.
//!
//! [`KeyRing::verify`] runs on every join: it finds the key by `kid`, pins the algorithm
//! that key is for (so an HS256 token "signed" with a public key, or `alg: none`, fails),
//! and checks `iss`, `aud`, `nbf`, `exp` (30 s leeway), the lifetime bound (API keys:
//! `auth.max_grant_ttl_secs`, 10 minutes by default), and that every required claim is
//! present. Every grant opens one join: the caller records its [`replay_key`] when the join
//! goes ahead, in the store's `used_jti` table when sign-in is configured, else in the key
//! ring's bounded in-memory [`ReplayCache`] ([`KeyRing::consume_jti`]); either way until the
//! grant expires. Tokens and secrets never reach a log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use plenary_proto::{Role, TrackSource};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `nbf` and `exp`.
pub const LEEWAY_SECS: u64 = 30;

/// Most unexpired grant ids the in-memory [`ReplayCache`] remembers.
pub const MAX_REMEMBERED_GRANTS: usize = 100_000;

/// The `iss` of grants the server signs itself (members, guests).
pub const MEMBER_ISSUER: &str = "plenary";

/// What a grant lets its holder do. Every permission defaults to `false`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Permissions {
    /// May publish media.
    pub can_publish: bool,
    /// Sources the holder may publish; empty with `can_publish` means every source.
    pub can_publish_sources: Vec<TrackSource>,
    /// May receive the others' media.
    pub can_subscribe: bool,
    /// May send data messages to the room.
    pub can_publish_data: bool,
    /// Has host powers in the room.
    pub is_host: bool,
}

impl Permissions {
    /// Publish any source, subscribe, send data.
    pub fn speaker() -> Self {
        Permissions {
            can_publish: true,
            can_publish_sources: Vec::new(),
            can_subscribe: true,
            can_publish_data: true,
            is_host: false,
        }
    }

    /// Subscribe only.
    pub fn listener() -> Self {
        Permissions {
            can_subscribe: true,
            ..Permissions::default()
        }
    }

    /// Whether publishing `source` is allowed.
    pub fn may_publish(&self, source: TrackSource) -> bool {
        self.can_publish
            && (self.can_publish_sources.is_empty() || self.can_publish_sources.contains(&source))
    }
}

/// The claims of a room grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the API key that signed it.
    pub iss: String,
    /// Audience: the configured `auth.audience`.
    pub aud: String,
    /// Subject: the participant's stable identity.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// The one room this grant opens.
    pub room: String,
    /// Role in the room.
    pub role: Role,
    /// For guests: the handle of the member who invited them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<String>,
    /// What the holder may do.
    #[serde(default)]
    pub permissions: Permissions,
    /// Not before (seconds since the Unix epoch).
    pub nbf: u64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
}

impl Claims {
    /// Claims valid from now for `ttl`, with no permissions; `iss` and `aud` are filled in by
    /// [`KeyRing::mint`] when left empty.
    pub fn new(room: &str, identity: &str, name: &str, role: Role, ttl: Duration) -> Claims {
        let now = unix_now();
        Claims {
            iss: String::new(),
            aud: String::new(),
            sub: identity.into(),
            name: name.into(),
            room: room.into(),
            role,
            invited_by: None,
            permissions: Permissions::default(),
            nbf: now,
            exp: now + ttl.as_secs(),
            jti: crate::secret::random_id(),
        }
    }

    /// The same claims with these permissions.
    pub fn with_permissions(mut self, permissions: Permissions) -> Claims {
        self.permissions = permissions;
        self
    }
}

/// Why a grant was refused (or could not be minted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not a JWT at all.
    #[error("the grant is not a well-formed token")]
    Malformed,
    /// Signed with an algorithm other than HS256.
    #[error("the grant uses a signing algorithm this server does not accept")]
    WrongAlgorithm,
    /// The `kid`/`iss` names no configured API key.
    #[error("the grant was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the grant's signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("the grant has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the grant is not valid yet")]
    NotYetValid,
    /// `aud` is not this server's audience.
    #[error("the grant is for another audience")]
    WrongAudience,
    /// `iss` differs from the signing key.
    #[error("the grant's issuer does not match its key")]
    WrongIssuer,
    /// A required claim is missing or has the wrong type.
    #[error("the grant is missing a required claim or has a malformed one: {0}")]
    BadClaims(String),
    /// `exp - nbf` exceeds the configured maximum.
    #[error("the grant's lifetime exceeds the server's limit")]
    TooLong,
    /// The grant opens another room than the one asked for.
    #[error("the grant is for another room")]
    WrongRoom,
    /// No API key is configured to mint with.
    #[error("no API key is configured")]
    NoKey,
    /// Encoding failed.
    #[error("could not sign the grant: {0}")]
    Sign(String),
    /// The grant's `jti` was used before.
    #[error("the grant was already used")]
    Replayed,
    /// The in-memory replay cache is full of unexpired grants.
    #[error("the server is keeping track of too many unexpired grants; try again in a minute")]
    TooManyGrants,
}

/// What a used grant is remembered by: its issuer and `jti` (two issuers may pick the same
/// `jti`).
pub fn replay_key(claims: &Claims) -> String {
    format!("{}\u{0}{}", claims.iss, claims.jti)
}

/// Grants already used, by [`replay_key`], each until it expires (plus the leeway). Bounded:
/// when [`MAX_REMEMBERED_GRANTS`] unexpired grants are remembered, new joins are refused
/// rather than old entries forgotten (forgetting would let those grants replay).
#[derive(Default)]
pub struct ReplayCache {
    // A std mutex: held for a map access only, never across an await.
    used: Mutex<HashMap<String, u64>>,
}

impl ReplayCache {
    /// Records `key` as used until `exp`; `Replayed` if it was used before.
    pub fn consume(&self, key: &str, exp: u64, now: u64) -> Result<(), GrantError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.get(key).is_some_and(|until| *until >= now) {
            return Err(GrantError::Replayed);
        }
        if used.len() >= MAX_REMEMBERED_GRANTS || used.len() % 1024 == 1023 {
            used.retain(|_, until| *until >= now);
        }
        if used.len() >= MAX_REMEMBERED_GRANTS {
            return Err(GrantError::TooManyGrants);
        }
        used.insert(key.to_string(), exp + LEEWAY_SECS);
        Ok(())
    }

    /// Forgets the grants that expired by `now`, giving back the map's spare capacity once
    /// most of it is empty; how many.
    pub fn purge(&self, now: u64) -> usize {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let before = used.len();
        used.retain(|_, until| *until >= now);
        if used.capacity() > 2 * used.len() + 1024 {
            used.shrink_to_fit();
        }
        before - used.len()
    }
}

/// Who signed a verified grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// An operator API key (HS256).
    ApiKey,
    /// The server's own Ed25519 key (member or guest grant).
    Server,
}

/// The keys that verify grants: API keys (HS256) and the server's Ed25519 public keys.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<String, String>,
    audience: String,
    max_ttl: Duration,
    /// kid → Ed25519 public key. Shared with the membership service (rotation). A std lock:
    /// taken for a map lookup on joins and mints only, never across an await.
    ed: Arc<RwLock<BTreeMap<String, DecodingKey>>>,
    ed_max_ttl: Duration,
    /// Used grants, when no store remembers them (shared by every clone).
    replays: Arc<ReplayCache>,
}

impl KeyRing {
    /// A key ring over `key → secret` pairs.
    pub fn new(keys: BTreeMap<String, String>, audience: String, max_ttl: Duration) -> KeyRing {
        KeyRing {
            keys,
            audience,
            max_ttl,
            ed: Arc::new(RwLock::new(BTreeMap::new())),
            ed_max_ttl: Duration::from_secs(120),
            replays: Arc::new(ReplayCache::default()),
        }
    }

    /// Records a verified grant as used (in memory, until it expires): `Replayed` the second
    /// time. For servers without a store; with one, the store remembers used grants.
    pub fn consume_jti(&self, claims: &Claims) -> Result<(), GrantError> {
        self.replays
            .consume(&replay_key(claims), claims.exp, unix_now())
    }

    /// Forgets the used grants that have expired (called every few seconds); how many.
    pub fn purge_used_grants(&self) -> usize {
        self.replays.purge(unix_now())
    }

    /// Replaces the set of Ed25519 verifying keys (kid → key).
    pub fn set_server_keys(&self, keys: Vec<(String, DecodingKey)>) {
        let mut map = self.ed.write().unwrap_or_else(|p| p.into_inner());
        *map = keys.into_iter().collect();
    }

    /// Whether `kid` names a known Ed25519 key.
    pub fn has_server_key(&self, kid: &str) -> bool {
        self.ed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(kid)
    }

    /// Signs `claims` with the server's Ed25519 key (`iss` and `aud` are set here).
    pub fn mint_server(
        &self,
        claims: &Claims,
        kid: &str,
        key: &EncodingKey,
    ) -> Result<String, GrantError> {
        let mut claims = claims.clone();
        claims.iss = MEMBER_ISSUER.into();
        claims.aud = self.audience.clone();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| GrantError::Sign(e.to_string()))
    }

    /// The audience grants must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Adds a key (dev mode adds a random one at start).
    pub fn insert(&mut self, key: String, secret: String) {
        self.keys.insert(key, secret);
    }

    /// Signs `claims` with the first key. Empty `iss`/`aud` are set to that key and this
    /// ring's audience.
    pub fn mint(&self, claims: &Claims) -> Result<String, GrantError> {
        let (key, secret) = self.keys.iter().next().ok_or(GrantError::NoKey)?;
        let mut claims = claims.clone();
        if claims.iss.is_empty() {
            claims.iss = key.clone();
        }
        if claims.aud.is_empty() {
            claims.aud = self.audience.clone();
        }
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.clone());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| GrantError::Sign(e.to_string()))
    }

    /// Verifies a grant and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, GrantError> {
        self.verify_signed(token).map(|(claims, _)| claims)
    }

    /// Verifies a grant and returns its claims and who signed it.
    pub fn verify_signed(&self, token: &str) -> Result<(Claims, Signer), GrantError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // jsonwebtoken does not know `none` at all; say what it is.
            if declares_alg_none(token) {
                GrantError::WrongAlgorithm
            } else {
                GrantError::Malformed
            }
        })?;
        let kid = header.kid.ok_or(GrantError::UnknownKey)?;
        let (key, alg, issuer, max_ttl, signer) = if let Some(secret) = self.keys.get(&kid) {
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
                kid.clone(),
                self.max_ttl,
                Signer::ApiKey,
            )
        } else {
            let ed = self.ed.read().unwrap_or_else(|p| p.into_inner());
            let key = ed.get(&kid).cloned().ok_or(GrantError::UnknownKey)?;
            (
                key,
                Algorithm::EdDSA,
                MEMBER_ISSUER.to_string(),
                self.ed_max_ttl,
                Signer::Server,
            )
        };
        if header.alg != alg {
            return Err(GrantError::WrongAlgorithm);
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => GrantError::BadSignature,
                K::ExpiredSignature => GrantError::Expired,
                K::ImmatureSignature => GrantError::NotYetValid,
                K::InvalidAudience => GrantError::WrongAudience,
                K::InvalidIssuer => GrantError::WrongIssuer,
                K::InvalidAlgorithm => GrantError::WrongAlgorithm,
                K::MissingRequiredClaim(c) => GrantError::BadClaims(format!("missing {c}")),
                K::Json(_) => GrantError::BadClaims("claims do not match the grant schema".into()),
                _ => GrantError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.exp.saturating_sub(claims.nbf) > max_ttl.as_secs() {
            return Err(GrantError::TooLong);
        }
        if claims.sub.is_empty() || claims.room.is_empty() || claims.jti.is_empty() {
            return Err(GrantError::BadClaims(
                "sub, room and jti must not be empty".into(),
            ));
        }
        Ok((claims, signer))
    }
}

/// Whether a token's header declares `"alg": "none"` (an unsigned token).
fn declares_alg_none(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.get("alg")?
                .as_str()
                .map(|a| a.eq_ignore_ascii_case("none"))
        })
        .unwrap_or(false)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let mut keys = BTreeMap::new();
        keys.insert("k1".to_string(), "a".repeat(32));
        KeyRing::new(keys, "plenary".into(), Duration::from_secs(3600))
    }

    fn claims() -> Claims {
        Claims::new(
            "gm",
            "@alice@social.coop",
            "Alice",
            Role::Member,
            Duration::from_secs(60),
        )
        .with_permissions(Permissions::speaker())
    }

    #[test]
    fn mint_then_verify_round_trips() {
        let r = ring();
        let token = r.mint(&claims()).unwrap();
        let c = r.verify(&token).unwrap();
        assert_eq!(c.room, "gm");
        assert_eq!(c.iss, "k1");
        assert!(c.permissions.may_publish(TrackSource::Camera));
    }

    #[test]
    fn permissions_default_to_nothing() {
        let p = Permissions::default();
        assert!(!p.may_publish(TrackSource::Microphone));
        assert!(!p.can_subscribe && !p.can_publish_data && !p.is_host);
        let only_mic = Permissions {
            can_publish: true,
            can_publish_sources: vec![TrackSource::Microphone],
            ..Permissions::default()
        };
        assert!(only_mic.may_publish(TrackSource::Microphone));
        assert!(!only_mic.may_publish(TrackSource::Camera));
    }

    #[test]
    fn refuses_expired_and_not_yet_valid() {
        let r = ring();
        let mut c = claims();
        c.nbf = unix_now() - 600;
        c.exp = unix_now() - 100;
        assert_eq!(r.verify(&r.mint(&c).unwrap()), Err(GrantError::Expired));
        let mut c = claims();
        c.nbf = unix_now() + 300;
        c.exp = unix_now() + 400;
        assert_eq!(r.verify(&r.mint(&c).unwrap()), Err(GrantError::NotYetValid));
    }

    #[test]
    fn refuses_wrong_signature_audience_and_key() {
        let r = ring();
        let mut other = BTreeMap::new();
        other.insert("k1".to_string(), "b".repeat(32));
        let forged = KeyRing::new(other, "plenary".into(), Duration::from_secs(3600))
            .mint(&claims())
            .unwrap();
        assert_eq!(r.verify(&forged), Err(GrantError::BadSignature));
        let mut c = claims();
        c.aud = "elsewhere".into();
        assert_eq!(
            r.verify(&r.mint(&c).unwrap()),
            Err(GrantError::WrongAudience)
        );
        let mut unknown = BTreeMap::new();
        unknown.insert("k9".to_string(), "a".repeat(32));
        let t = KeyRing::new(unknown, "plenary".into(), Duration::from_secs(3600))
            .mint(&claims())
            .unwrap();
        assert_eq!(r.verify(&t), Err(GrantError::UnknownKey));
        let mut c = claims();
        c.iss = "someone-else".into();
        assert_eq!(r.verify(&r.mint(&c).unwrap()), Err(GrantError::WrongIssuer));
    }

    #[test]
    fn refuses_alg_none_and_garbage() {
        let r = ring();
        let token = r.mint(&claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // {"alg":"none","typ":"JWT","kid":"k1"}
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiazEifQ";
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert_eq!(r.verify(&unsigned), Err(GrantError::WrongAlgorithm));
        assert_eq!(r.verify("not-a-token"), Err(GrantError::Malformed));
    }

    #[test]
    fn a_grant_is_consumed_once_until_it_expires() {
        let r = ring();
        let c = r.verify(&r.mint(&claims()).unwrap()).unwrap();
        assert_eq!(r.consume_jti(&c), Ok(()));
        assert_eq!(
            r.clone().consume_jti(&c),
            Err(GrantError::Replayed),
            "shared"
        );
        let other = r.verify(&r.mint(&claims()).unwrap()).unwrap();
        assert_eq!(r.consume_jti(&other), Ok(()));
        // Another issuer may use the same jti.
        let mut same_jti = other.clone();
        same_jti.iss = "k2".into();
        assert_eq!(r.consume_jti(&same_jti), Ok(()));
        let cache = ReplayCache::default();
        cache.consume("a", 100, 50).unwrap();
        assert_eq!(cache.consume("a", 100, 60), Err(GrantError::Replayed));
        assert_eq!(
            cache.consume("a", 300, 200),
            Ok(()),
            "expired entries are forgotten"
        );
    }

    #[test]
    fn the_replay_cache_is_bounded_and_refuses_rather_than_forgets() {
        let cache = ReplayCache::default();
        for i in 0..MAX_REMEMBERED_GRANTS {
            cache.consume(&i.to_string(), 1000, 0).unwrap();
        }
        assert_eq!(
            cache.consume("one more", 1000, 0),
            Err(GrantError::TooManyGrants)
        );
        assert_eq!(cache.consume("0", 1000, 0), Err(GrantError::Replayed));
        // Once they expired, there is room again.
        assert_eq!(cache.consume("one more", 2000, 1100), Ok(()));
    }

    #[test]
    fn the_replay_cache_forgets_expired_grants_when_purged() {
        let cache = ReplayCache::default();
        for i in 0..5000 {
            cache
                .consume(&i.to_string(), if i < 4000 { 100 } else { 1000 }, 0)
                .unwrap();
        }
        assert_eq!(
            cache.purge(100 + LEEWAY_SECS),
            0,
            "not expired yet (leeway)"
        );
        assert_eq!(cache.purge(200), 4000);
        assert_eq!(
            cache.consume("4500", 1000, 200),
            Err(GrantError::Replayed),
            "kept"
        );
        assert_eq!(
            cache.consume("10", 1000, 200),
            Ok(()),
            "forgotten, so usable"
        );
        assert_eq!(cache.purge(5000), 1001);
    }

    #[test]
    fn refuses_overlong_lifetime() {
        let r = ring();
        let mut c = claims();
        c.exp = c.nbf + 7200;
        assert_eq!(r.verify(&r.mint(&c).unwrap()), Err(GrantError::TooLong));
    }
}
