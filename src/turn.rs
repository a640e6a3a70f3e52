//! TURN credentials for coturn's `use-auth-secret` mode (the "TURN REST API" draft,
//! draft-uberti-behave-turn-rest-00): the username is `expiry:identity` (expiry in Unix
//! seconds) and the password is base64(HMAC-SHA1(secret, username)). coturn recomputes the
//! password from its `static-auth-secret` and refuses a username whose expiry has passed, so
//! Plenary and coturn share only the secret, and what a client gets stops working by itself.
//!
//! Pure functions, no I/O. The secret never leaves this module in any other form than an
//! HMAC, and is never logged.

use aws_lc_rs::hmac;
use base64::Engine;
use plenary_proto::IceServer;

use crate::config::TurnConfig;

/// One set of time-limited TURN credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `expiry:identity`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
}

/// The credentials for `identity`, valid until `now_unix + ttl_secs`.
pub fn credentials(secret: &str, identity: &str, now_unix: u64, ttl_secs: u64) -> TurnCredentials {
    let username = format!("{}:{identity}", now_unix + ttl_secs);
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    TurnCredentials {
        password: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        username,
    }
}

/// What a `welcome` offers a client: the configured TURN URLs with fresh credentials for
/// `identity`, or nothing when no TURN server is configured.
pub fn ice_server(turn: &TurnConfig, identity: &str, now_unix: u64) -> Option<IceServer> {
    if turn.urls.is_empty() || turn.secret.is_empty() {
        return None;
    }
    let c = credentials(&turn.secret, identity, now_unix, turn.ttl);
    Some(IceServer {
        urls: turn.urls.clone(),
        username: Some(c.username),
        credential: Some(c.password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_turn_rest_api_scheme() {
        // Reference: printf '1700003600:alice' | openssl dgst -sha1 -hmac 'north-coop-secret' -binary | base64
        let c = credentials("north-coop-secret", "alice", 1_700_000_000, 3600);
        assert_eq!(c.username, "1700003600:alice");
        assert_eq!(c.password, "h73x6O7XR2cfWi+UQcwX21Gxwbk=");
    }

    #[test]
    fn the_welcome_entry_never_carries_the_secret() {
        let turn = TurnConfig {
            urls: vec![
                "turn:127.0.0.1:3478".into(),
                "turns:turn.example:443?transport=tcp".into(),
            ],
            secret: "north-coop-secret".into(),
            ttl: 600,
        };
        let s = ice_server(&turn, "@ann@social.coop", 1000).unwrap();
        assert_eq!(s.urls, turn.urls);
        assert_eq!(s.username.as_deref(), Some("1600:@ann@social.coop"));
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("north-coop-secret"), "{json}");
        assert!(ice_server(&TurnConfig::default(), "x", 0).is_none());
    }
}
