//! The server's sealing secret, and authenticated encryption with keys drawn from it.
//!
//! One random 256-bit secret lives in `sealing.key` in the keys folder (beside the
//! grant-signing keys, mode 0600), created on first use. Each purpose gets its own
//! AES-256-GCM key, HMAC-SHA256 of the secret and the purpose's label, so what is sealed for
//! one purpose never opens as another:
//! - [`Sealing::sign_ins`]: pending sign-ins, carried sealed in the OAuth `state` so the
//!   server keeps nothing for a sign-in that was only started;
//! - [`Sealing::tokens`]: instance access tokens, stored sealed in SQLite.
//!
//! A sealed value is `base64url(nonce ‖ ciphertext ‖ tag)` with a random 96-bit nonce; the
//! caller's associated data binds it to where it belongs (e.g. a token to its session's
//! instance and account). Losing the file only ends pending sign-ins and sessions: members
//! sign in again.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use base64::Engine;

use super::keys::{file_err, write_private, KeyError};

/// The file that holds the secret, in the keys folder.
pub const FILE_NAME: &str = "sealing.key";

const SECRET_LEN: usize = 32;
const SIGN_INS_LABEL: &[u8] = b"plenary sealing: pending sign-ins v1";
const TOKENS_LABEL: &[u8] = b"plenary sealing: instance access tokens v1";

/// Seals and opens values for one purpose.
pub struct Sealer {
    key: RandomizedNonceKey,
}

impl Sealer {
    fn derive(secret: &[u8], label: &[u8]) -> Sealer {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), label);
        let key = RandomizedNonceKey::new(&AES_256_GCM, tag.as_ref())
            .expect("an HMAC-SHA256 tag is a valid AES-256 key");
        Sealer { key }
    }

    /// Encrypts and authenticates `plaintext`, bound to `context` (authenticated, not
    /// stored: the same context is needed to open it).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> String {
        let mut in_out = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(context), &mut in_out)
            .expect("AES-GCM sealing does not fail on a buffer of this size");
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&in_out);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// The plaintext of a value [`Sealer::seal`]ed with this key and `context`; `None` when
    /// it was sealed with another key or context, altered, or is not a sealed value.
    pub fn open(&self, context: &[u8], sealed: &str) -> Option<Vec<u8>> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut in_out)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The keys drawn from the server's sealing secret.
pub struct Sealing {
    /// Pending sign-ins (the OAuth `state`).
    pub sign_ins: Sealer,
    /// Instance access tokens at rest.
    pub tokens: Sealer,
}

impl Sealing {
    fn from_secret(secret: &[u8]) -> Sealing {
        Sealing {
            sign_ins: Sealer::derive(secret, SIGN_INS_LABEL),
            tokens: Sealer::derive(secret, TOKENS_LABEL),
        }
    }
}

/// Where the secret is kept in `keys_dir`.
pub fn path(keys_dir: &Path) -> PathBuf {
    keys_dir.join(FILE_NAME)
}

/// Loads the secret from `keys_dir`, creating it (and the folder) on first use.
pub fn load_or_create(keys_dir: &Path) -> Result<Sealing, KeyError> {
    let file = path(keys_dir);
    if !file.exists() {
        super::keys::create_private_dir(keys_dir)?;
        let mut secret = [0u8; SECRET_LEN];
        rand::fill(&mut secret);
        let text = base64::engine::general_purpose::STANDARD.encode(secret) + "\n";
        match write_private(&file, text.as_bytes()) {
            Ok(()) => return Ok(Sealing::from_secret(&secret)),
            // Another process created it first: use theirs.
            Err(_) if file.exists() => {}
            Err(e) => return Err(e),
        }
    }
    let text = std::fs::read_to_string(&file).map_err(|e| file_err(&file, e))?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|s| s.len() == SECRET_LEN)
        .ok_or_else(|| KeyError::File {
            path: file.display().to_string(),
            reason: format!("not a base64 {SECRET_LEN}-byte secret"),
        })?;
    Ok(Sealing::from_secret(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("plenary-sealing-{}", crate::secret::random_id()))
    }

    #[test]
    fn the_secret_is_created_once_privately_and_reloaded() {
        let dir = temp_dir();
        let a = load_or_create(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(&dir)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = a.tokens.seal(b"ctx", b"the token");
        let b = load_or_create(&dir).unwrap();
        assert_eq!(b.tokens.open(b"ctx", &sealed).unwrap(), b"the token");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sealed_values_open_only_with_their_key_purpose_and_context() {
        let dir = temp_dir();
        let s = load_or_create(&dir).unwrap();
        let sealed = s.tokens.seal(b"session 1", b"secret");
        assert!(!sealed.contains("secret"));
        assert_ne!(
            sealed,
            s.tokens.seal(b"session 1", b"secret"),
            "random nonce"
        );
        assert_eq!(s.tokens.open(b"session 1", &sealed).unwrap(), b"secret");
        assert!(
            s.tokens.open(b"session 2", &sealed).is_none(),
            "other context"
        );
        assert!(
            s.sign_ins.open(b"session 1", &sealed).is_none(),
            "other purpose"
        );
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(s
            .tokens
            .open(b"session 1", &String::from_utf8(altered).unwrap())
            .is_none());
        assert!(s.tokens.open(b"session 1", "not sealed!").is_none());
        assert!(s.tokens.open(b"session 1", "").is_none());
        let other = load_or_create(&temp_dir()).unwrap();
        assert!(
            other.tokens.open(b"session 1", &sealed).is_none(),
            "other key"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
