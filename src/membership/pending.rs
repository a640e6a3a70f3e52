//! Pending sign-ins, carried by the browser instead of stored by the server.
//!
//! Starting a sign-in stores nothing, so anonymous `GET /auth/{id}/login` requests cannot use
//! anything up. What the callback needs (instance, PKCE verifier, return path, expiry) is
//! sealed ([`super::sealing`]) into the OAuth `state`, together with the hash of a random
//! value the browser gets as its `plenary_oauth_state` cookie: the callback opens the state
//! and checks the cookie against it, so a state only works in the browser that started the
//! sign-in. Single use is kept by remembering a state (its hash, until it expires) once the
//! instance has accepted its code, which only a real authorization at the instance leads to
//! (`store::use_oauth_state`).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sealing::Sealing;
use crate::secret::{constant_time_eq, hash_secret, random_b64};

/// The associated data of a sealed state.
const CONTEXT: &[u8] = b"oauth state";

/// A sign-in between `GET /auth/{id}/login` and the instance's callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignIn {
    /// The instance id it was started for.
    #[serde(rename = "i")]
    pub instance: String,
    /// The PKCE verifier (secret: the state is encrypted, not only signed).
    #[serde(rename = "v")]
    pub verifier: String,
    /// Where to go after sign-in (a path on this site).
    #[serde(rename = "r")]
    pub return_to: String,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub expires_at: i64,
    /// SHA-256 (hex) of the browser's binding cookie.
    #[serde(rename = "b")]
    pub binding_hash: String,
}

impl PendingSignIn {
    /// A new pending sign-in valid for `ttl_secs`, and the value of the cookie that binds it
    /// to the browser.
    pub fn start(instance: &str, return_to: &str, now: i64, ttl_secs: i64) -> (Self, String) {
        let binding = random_b64(32);
        let pending = PendingSignIn {
            instance: instance.to_string(),
            verifier: random_b64(32),
            return_to: return_to.to_string(),
            expires_at: now + ttl_secs,
            binding_hash: hash_secret(&binding),
        };
        (pending, binding)
    }

    /// The OAuth `state` that carries it.
    pub fn seal(&self, sealing: &Sealing) -> String {
        let json = serde_json::to_vec(self).expect("a pending sign-in serializes");
        sealing.sign_ins.seal(CONTEXT, &json)
    }

    /// The pending sign-in a `state` carries, if this server sealed it (whether or not it
    /// has expired: the caller checks).
    pub fn open(sealing: &Sealing, state: &str) -> Option<PendingSignIn> {
        let json = sealing.sign_ins.open(CONTEXT, state)?;
        serde_json::from_slice(&json).ok()
    }

    /// Whether `cookie` is the binding value this sign-in was started with.
    pub fn bound_to(&self, cookie: &str) -> bool {
        constant_time_eq(hash_secret(cookie).as_bytes(), self.binding_hash.as_bytes())
    }

    /// The PKCE S256 challenge of its verifier.
    pub fn challenge(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_opens_to_its_sign_in_and_hides_the_verifier() {
        let dir =
            std::env::temp_dir().join(format!("plenary-pending-{}", crate::secret::random_id()));
        let sealing = super::super::sealing::load_or_create(&dir).unwrap();
        let (p, cookie) = PendingSignIn::start("coop", "/room/gm", 1000, 600);
        assert_eq!(p.expires_at, 1600);
        let state = p.seal(&sealing);
        assert!(!state.contains(&p.verifier) && !state.contains("room"));
        let opened = PendingSignIn::open(&sealing, &state).unwrap();
        assert_eq!(opened, p);
        assert!(opened.bound_to(&cookie));
        assert!(!opened.bound_to(&random_b64(32)));
        assert_eq!(opened.challenge().len(), 43);
        assert!(PendingSignIn::open(&sealing, &state[1..]).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
