//! Random tokens and the hashing of secrets: the one place the server makes unguessable
//! values (grant ids, cookies, resume tokens, ICE credentials, invitation tokens) and turns
//! secrets into what it stores (a SHA-256 hash, compared in constant time).
//!
//! Every value comes from the operating system's generator (`rand`'s thread RNG, reseeded
//! from it). Nothing here logs or keeps what it makes.

use base64::Engine;
use sha2::{Digest, Sha256};

/// A random 128-bit id in hex (32 characters): grant ids (`jti`), key ids, test folders.
pub fn random_id() -> String {
    let n: u128 = rand::random();
    format!("{n:032x}")
}

/// `n` random bytes, base64url without padding: cookies, OAuth states, resume and
/// invitation tokens.
pub fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::fill(bytes.as_mut_slice());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A random alphanumeric token of `len` characters (ICE credentials, dev-mode keys and
/// identities: places that allow only letters and digits).
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// SHA-256 of a secret, hex-encoded: how cookies, states, resume and invitation tokens are
/// kept (the secret itself never is).
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_are_long_and_distinct() {
        let a = random_b64(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_b64(32));
        assert_eq!(random_id().len(), 32);
        assert_ne!(random_id(), random_id());
        let t = random_token(24);
        assert_eq!(t.len(), 24);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn hashes_are_hex_sha256_and_comparisons_exact() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
