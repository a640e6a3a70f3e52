//! Room grants minted with the operator's API key: HS256 JWTs with `kid` = `iss` = the key,
//! `aud` = the server's audience, and the claims Plenary's `grant.rs` expects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use plenary_proto::{Role, TrackSource};
use serde::Serialize;

/// Why a grant could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The secret is too short for the server to accept.
    #[error("the API secret must be at least 32 characters")]
    ShortSecret,
    /// Signing failed.
    #[error("cannot sign a grant: {0}")]
    Sign(String),
}

#[derive(Serialize)]
struct Permissions {
    can_publish: bool,
    can_publish_sources: Vec<TrackSource>,
    can_subscribe: bool,
    can_publish_data: bool,
    is_host: bool,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    name: &'a str,
    room: &'a str,
    role: Role,
    permissions: Permissions,
    nbf: u64,
    exp: u64,
    jti: String,
}

/// Mints grants with one API key.
pub struct Minter {
    key: String,
    audience: String,
    encoding: EncodingKey,
    ttl: Duration,
    counter: AtomicU64,
}

impl Minter {
    /// A minter for `key`/`secret`, grants valid for `ttl` (at most 24 h, the server's
    /// default limit).
    pub fn new(
        key: &str,
        secret: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Minter, GrantError> {
        if secret.len() < 32 {
            return Err(GrantError::ShortSecret);
        }
        Ok(Minter {
            key: key.to_owned(),
            audience: audience.to_owned(),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            ttl: ttl.min(Duration::from_secs(24 * 3600)),
            counter: AtomicU64::new(0),
        })
    }

    /// A grant for `identity` in `room`: a speaker (publish, subscribe, data) or a listener.
    pub fn mint(&self, room: &str, identity: &str, publisher: bool) -> Result<String, GrantError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let claims = Claims {
            iss: &self.key,
            aud: &self.audience,
            sub: identity,
            name: identity,
            room,
            role: Role::Member,
            permissions: Permissions {
                can_publish: publisher,
                can_publish_sources: Vec::new(),
                can_subscribe: true,
                can_publish_data: publisher,
                is_host: false,
            },
            // A little slack for clock skew between this machine and the server.
            nbf: now.saturating_sub(10),
            exp: now + self.ttl.as_secs(),
            jti: format!("lt-{now}-{}-{n}", std::process::id()),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.key.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| GrantError::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn grants_carry_kid_iss_aud_and_permissions() {
        let secret = "s".repeat(32);
        let m = Minter::new("k1", &secret, "plenary", Duration::from_secs(600)).unwrap();
        let token = m.mint("gm", "lt-1", false).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["plenary"]);
        v.set_issuer(&["k1"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &v,
        )
        .unwrap();
        let c = data.claims;
        assert_eq!(c["room"], "gm");
        assert_eq!(c["sub"], "lt-1");
        assert_eq!(c["role"], "member");
        assert_eq!(c["permissions"]["can_subscribe"], true);
        assert_eq!(c["permissions"]["can_publish"], false);
        assert!(c["exp"].as_u64().unwrap() - c["nbf"].as_u64().unwrap() <= 620);
        let other = m.mint("gm", "lt-1", true).unwrap();
        assert_ne!(token, other, "jti differs");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Minter::new("k", "short", "plenary", Duration::from_secs(1)),
            Err(GrantError::ShortSecret)
        ));
    }
}
