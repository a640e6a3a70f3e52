//! The Ed25519 keys that sign members' and guests' grants.
//!
//! Private keys live in files (PKCS#8 PEM, mode 0600) in the keys folder (mode 0700 when
//! Plenary creates it; the sealing secret of [`super::sealing`] lives there too); the database keeps
//! each key's id (`kid`), public half, file name and dates. The newest key signs; older keys
//! keep verifying until every grant they could have signed has expired, then they are
//! dropped. `plenary keys rotate` adds a key while the server runs: the server notices the
//! new key on its next mint and loads unknown `kid`s on verification.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{DecodingKey, EncodingKey};

use super::store::{self, SigningKeyRow, Store, StoreError};

/// What went wrong with the signing keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key file could not be written or read.
    #[error("key file {path}: {reason}")]
    File {
        /// Which file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The active signing key.
#[derive(Clone)]
pub struct ActiveKey {
    /// Its id (the JWT `kid`).
    pub kid: String,
    /// The private key for jsonwebtoken.
    pub encoding: EncodingKey,
}

/// Generates a key, writes its private half to `dir`, and records it as the active key.
pub fn rotate(store: &Store, dir: &Path, now: i64) -> Result<String, KeyError> {
    create_private_dir(dir)?;
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let kid = format!("ed-{}", &crate::secret::random_id()[..16]);
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::File {
            path: kid.clone(),
            reason: e.to_string(),
        })?;
    let file = format!("{kid}.pem");
    let path = dir.join(&file);
    write_private(&path, pem.as_bytes())?;
    let row = SigningKeyRow {
        kid: kid.clone(),
        public_key: key.verifying_key().to_bytes().to_vec(),
        private_key_file: path.display().to_string(),
        created_at: now,
        retired_at: None,
    };
    store.run_sync(|c| {
        let tx = c.transaction()?;
        store::add_signing_key(&tx, &row)?;
        store::audit(
            &tx,
            now,
            "key_rotated",
            "operator",
            "",
            serde_json::json!({ "kid": kid }),
        )?;
        tx.commit()?;
        Ok(())
    })?;
    Ok(kid)
}

/// The active key, creating one if there is none.
pub fn active(store: &Store, dir: &Path, now: i64) -> Result<ActiveKey, KeyError> {
    let rows = store.run_sync(|c| store::signing_keys(c))?;
    let row = match rows.into_iter().find(|r| r.retired_at.is_none()) {
        Some(r) => r,
        None => {
            rotate(store, dir, now)?;
            store
                .run_sync(|c| store::signing_keys(c))?
                .into_iter()
                .find(|r| r.retired_at.is_none())
                .ok_or_else(|| KeyError::File {
                    path: dir.display().to_string(),
                    reason: "the new key was not stored".into(),
                })?
        }
    };
    load_private(&row)
}

/// Every key that may still verify: `(kid, public key)`. Keys retired longer ago than
/// `max_grant_secs` are dropped (with their files).
pub fn verifying(
    store: &Store,
    now: i64,
    max_grant_secs: i64,
) -> Result<Vec<(String, DecodingKey)>, KeyError> {
    let files = store.run_sync(|c| store::drop_retired_keys(c, now - max_grant_secs - 60))?;
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    Ok(store
        .run_sync(|c| store::signing_keys(c))?
        .into_iter()
        .map(|r| (r.kid, DecodingKey::from_ed_der(&r.public_key)))
        .collect())
}

fn load_private(row: &SigningKeyRow) -> Result<ActiveKey, KeyError> {
    let path = PathBuf::from(&row.private_key_file);
    let pem = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
    let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::File {
        path: path.display().to_string(),
        reason: format!("not an Ed25519 PKCS#8 key: {e}"),
    })?;
    if key.verifying_key().to_bytes().as_slice() != row.public_key.as_slice() {
        return Err(KeyError::File {
            path: path.display().to_string(),
            reason: "does not match the public key on record".into(),
        });
    }
    let der = key.to_pkcs8_der().map_err(|e| KeyError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(ActiveKey {
        kid: row.kid.clone(),
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
    })
}

/// Creates `dir` (and missing parents) readable by this user only (0700), if it is missing.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    store::create_private_dir(dir).map_err(|e| file_err(dir, e))
}

/// Writes a new file readable by this user only (0600); fails if it exists.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(|e| file_err(path, e))?;
    f.write_all(bytes).map_err(|e| file_err(path, e))?;
    f.sync_all().map_err(|e| file_err(path, e))
}

pub(crate) fn file_err(path: &Path, e: std::io::Error) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_creates_a_key_and_rotation_keeps_the_old_one_verifying() {
        let dir = std::env::temp_dir().join(format!("plenary-keys-{}", crate::secret::random_id()));
        let store = Store::open_in_memory().unwrap();
        let a = active(&store, &dir, 1000).unwrap();
        assert_eq!(active(&store, &dir, 1001).unwrap().kid, a.kid, "stable");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let f = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
            assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        }
        let b = rotate(&store, &dir, 2000).unwrap();
        assert_ne!(b, a.kid);
        assert_eq!(active(&store, &dir, 2001).unwrap().kid, b);
        let kids: Vec<String> = verifying(&store, 2010, 120)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(kids.contains(&a.kid) && kids.contains(&b));
        // Long after, the retired key is gone.
        let kids: Vec<String> = verifying(&store, 9000, 120)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kids, vec![b]);
        let entries = store.run_sync(|c| store::recent_audit(c, 10)).unwrap();
        assert_eq!(
            entries.iter().filter(|e| e.kind == "key_rotated").count(),
            2
        );
    }
}
