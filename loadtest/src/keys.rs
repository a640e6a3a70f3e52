//! SRTP keys out of webrtc-rs, so received media can be accounted from the clear RTP header
//! and only a sample decrypted (see `group::fast`).
//!
//! webrtc-rs keeps its SRTP contexts private, but it lets the application choose the crypto
//! provider of a peer connection. [`KeyCapture`] wraps the default provider and delegates
//! every operation to it; it only watches HMACs keyed with a 48-byte secret (a TLS 1.2
//! master secret) whose input is the DTLS-SRTP exporter seed (RFC 5764 §4.2: the label
//! `EXTRACTOR-dtls_srtp`, then client and server randoms). It keeps that secret and seed, and
//! [`Exporter::keys`] recomputes the exporter output (TLS 1.2 PRF, P_SHA256) and splits it as
//! RFC 5764 does — exactly what webrtc-rs does when the handshake completes. Nothing about the
//! handshake changes.
//!
//! [`SrtpRx`] then decrypts a received SRTP packet in place (AEAD AES-128-GCM and
//! AES-256-GCM, RFC 7714 — Plenary's str0m picks AES-256-GCM today — or AES-128-CM with
//! HMAC-SHA1, RFC 3711), allocating nothing; other profiles fall back to webrtc-rs's own SRTP
//! context (which allocates, acceptable for a sample). [`SrtcpRx`]
//! decrypts received RTCP (sender reports, for the LSR/DLSR of our receiver reports).

use std::sync::{Arc, Mutex};

use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher,
    CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac,
    PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SignatureScheme, SigningKey, StreamCipher,
    StreamCipherAlgorithm,
};
use rtc::srtp::config::{Config as SrtpConfig, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

/// Why keys could not be had or a packet not decrypted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The exporter secret was not seen (the handshake is not complete).
    #[error("DTLS-SRTP exporter secret not seen yet")]
    NotYet,
    /// A crypto operation failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// An SRTP profile this module does not know.
    #[error("unknown SRTP profile {0:?}")]
    Profile(String),
    /// The packet is too short or its tag did not verify.
    #[error("SRTP packet did not verify")]
    Auth,
}

fn crypto_err(e: impl std::fmt::Display) -> KeyError {
    KeyError::Crypto(e.to_string())
}

/// Length of a TLS 1.2 master secret.
const MASTER_SECRET_LEN: usize = 48;
/// Client random + server random.
const RANDOMS_LEN: usize = 64;

/// What [`KeyCapture`] saw: the DTLS master secret and the exporter seed.
#[derive(Clone)]
pub struct Exporter {
    master_secret: Vec<u8>,
    seed: Vec<u8>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter(..)")
    }
}

/// Both directions' SRTP master keys of one peer connection.
#[derive(Clone)]
pub struct SrtpKeys {
    /// The negotiated profile.
    pub profile: ProtectionProfile,
    /// What we send with.
    pub local_key: Vec<u8>,
    /// Its salt.
    pub local_salt: Vec<u8>,
    /// What the server sends with.
    pub remote_key: Vec<u8>,
    /// Its salt.
    pub remote_salt: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpKeys({:?}, ..)", self.profile)
    }
}

/// The profile named as webrtc-rs's transport statistics name it.
pub fn profile_by_stats_name(name: &str) -> Result<ProtectionProfile, KeyError> {
    Ok(match name {
        "SRTP_AEAD_AES_128_GCM" => ProtectionProfile::AeadAes128Gcm,
        "SRTP_AEAD_AES_256_GCM" => ProtectionProfile::AeadAes256Gcm,
        "SRTP_AES128_CM_HMAC_SHA1_80" => ProtectionProfile::Aes128CmHmacSha1_80,
        "SRTP_AES128_CM_HMAC_SHA1_32" => ProtectionProfile::Aes128CmHmacSha1_32,
        other => return Err(KeyError::Profile(other.to_owned())),
    })
}

/// TLS 1.2 PRF with SHA-256 (RFC 5246 §5): `len` bytes of P_SHA256(secret, seed).
pub fn p_sha256(
    crypto: &dyn RTCCrypto,
    secret: &[u8],
    seed: &[u8],
    len: usize,
) -> Result<Vec<u8>, KeyError> {
    let mut mac = crypto
        .new_hmac(HmacAlgorithm::Sha256, secret)
        .map_err(crypto_err)?;
    let mut a = [0u8; 32];
    mac.sign(&[seed], &mut a).map_err(crypto_err)?;
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let mut block = [0u8; 32];
        mac.sign(&[&a, seed], &mut block).map_err(crypto_err)?;
        out.extend_from_slice(&block);
        let prev = a;
        mac.sign(&[&prev], &mut a).map_err(crypto_err)?;
    }
    out.truncate(len);
    Ok(out)
}

impl Exporter {
    /// The SRTP keys for `profile`; `is_client`: whether we were the DTLS client.
    pub fn keys(
        &self,
        crypto: &dyn RTCCrypto,
        profile: ProtectionProfile,
        is_client: bool,
    ) -> Result<SrtpKeys, KeyError> {
        let mut config = SrtpConfig {
            profile,
            ..Default::default()
        };
        let material = p_sha256(
            crypto,
            &self.master_secret,
            &self.seed,
            config.keying_material_len(),
        )?;
        config
            .set_session_keys_from_keying_material(&material, is_client)
            .map_err(crypto_err)?;
        let k = config.keys;
        Ok(SrtpKeys {
            profile,
            local_key: k.local_master_key,
            local_salt: k.local_master_salt,
            remote_key: k.remote_master_key,
            remote_salt: k.remote_master_salt,
        })
    }
}

/// A crypto provider that behaves as the default one and remembers the DTLS-SRTP exporter
/// secret of the one peer connection it serves.
pub struct KeyCapture {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: CaptureCrypto,
}

impl KeyCapture {
    /// Wraps webrtc-rs's default provider.
    pub fn new() -> Result<Arc<KeyCapture>, KeyError> {
        let inner = rtc::crypto::default_provider().map_err(crypto_err)?;
        Ok(Arc::new(KeyCapture {
            crypto: CaptureCrypto {
                inner: Arc::clone(&inner),
                seen: Arc::new(Mutex::new(None)),
            },
            inner,
        }))
    }

    /// The exporter secret, once the handshake has completed.
    pub fn exporter(&self) -> Option<Exporter> {
        self.crypto.seen.lock().ok()?.clone()
    }
}

impl RTCCryptoProvider for KeyCapture {
    fn name(&self) -> &'static str {
        "plenary-loadtest key capture"
    }
    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }
    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

struct CaptureCrypto {
    inner: Arc<dyn RTCCryptoProvider>,
    // One peer connection's; locked once per HMAC with a 48-byte key (a handful per handshake).
    seen: Arc<Mutex<Option<Exporter>>>,
}

impl RTCCrypto for CaptureCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }
    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }
    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }
    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        let mac = self.inner.crypto().new_hmac(algorithm, key)?;
        if key.len() == MASTER_SECRET_LEN && algorithm == HmacAlgorithm::Sha256 {
            return Ok(Box::new(CaptureMac {
                inner: mac,
                key: key.to_vec(),
                seen: Arc::clone(&self.seen),
            }));
        }
        Ok(mac)
    }
    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }
    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.crypto().new_aead(algorithm, key)
    }
    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }
    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }
    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }
    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }
    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}

struct CaptureMac {
    inner: Box<dyn Mac>,
    key: Vec<u8>,
    seen: Arc<Mutex<Option<Exporter>>>,
}

/// Whether `input` is the first round of the DTLS-SRTP exporter's P_SHA256 (A(1) = HMAC(seed)).
fn is_exporter_seed(input: &[&[u8]]) -> bool {
    let label = LABEL_EXTRACTOR_DTLS_SRTP.as_bytes();
    input.len() == 1 && input[0].len() == label.len() + RANDOMS_LEN && input[0].starts_with(label)
}

impl Mac for CaptureMac {
    fn output_len(&self) -> usize {
        self.inner.output_len()
    }
    fn sign(&mut self, input: &[&[u8]], output: &mut [u8]) -> Result<(), CryptoError> {
        if is_exporter_seed(input) {
            if let Ok(mut seen) = self.seen.lock() {
                *seen = Some(Exporter {
                    master_secret: self.key.clone(),
                    seed: input[0].to_vec(),
                });
            }
        }
        self.inner.sign(input, output)
    }
    fn verify(&mut self, input: &[&[u8]], expected: &[u8]) -> Result<(), CryptoError> {
        self.inner.verify(input, expected)
    }
}

/// RFC 3711 §4.3.3 key derivation (AES-CM PRF, key derivation rate 0) of `out.len()` bytes;
/// AES-256 for a 32-byte master key (RFC 6188).
fn aes_cm_kdf(
    crypto: &dyn RTCCrypto,
    label: u8,
    master_key: &[u8],
    master_salt: &[u8],
    out: &mut [u8],
) -> Result<(), KeyError> {
    let mut x = [0u8; 16];
    x[..master_salt.len()].copy_from_slice(master_salt);
    x[7] ^= label;
    let algorithm = if master_key.len() == 32 {
        BlockCipherAlgorithm::Aes256
    } else {
        BlockCipherAlgorithm::Aes128
    };
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14] = (i >> 8) as u8;
        block[15] = i as u8;
        crypto
            .block_encrypt(algorithm, master_key, &mut block)
            .map_err(crypto_err)?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

/// AES-GCM tag length (RFC 7714).
const GCM_TAG: usize = 16;

enum RxCipher {
    /// AEAD AES-128-GCM or AES-256-GCM, decrypted in place.
    Gcm {
        cipher: Box<dyn AeadCipher>,
        salt: [u8; 12],
    },
    /// AES-128-CM with an HMAC-SHA1 tag (RFC 3711), decrypted in place.
    CmSha1 {
        cipher: Box<dyn StreamCipher>,
        mac: Box<dyn Mac>,
        salt: [u8; 14],
    },
    /// Any other profile: webrtc-rs's context.
    Other(Box<Context>),
}

/// Decrypts SRTP packets received from the server, in place where the profile allows.
pub struct SrtpRx {
    cipher: RxCipher,
    tag_len: usize,
}

impl SrtpRx {
    /// A decryptor for the server's direction of `keys`.
    pub fn new(crypto: &dyn RTCCrypto, keys: &SrtpKeys) -> Result<SrtpRx, KeyError> {
        SrtpRx::with_key(crypto, keys.profile, &keys.remote_key, &keys.remote_salt)
    }

    /// A decryptor for packets protected with `master_key`/`master_salt`.
    pub fn with_key(
        crypto: &dyn RTCCrypto,
        profile: ProtectionProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<SrtpRx, KeyError> {
        let gcm = match profile {
            ProtectionProfile::AeadAes128Gcm => Some((AeadAlgorithm::Aes128Gcm, 16)),
            ProtectionProfile::AeadAes256Gcm => Some((AeadAlgorithm::Aes256Gcm, 32)),
            _ => None,
        };
        if let Some((algorithm, key_len)) = gcm {
            let mut key = [0u8; 32];
            let key = &mut key[..key_len];
            let mut salt = [0u8; 12];
            aes_cm_kdf(crypto, 0x00, master_key, master_salt, key)?;
            aes_cm_kdf(crypto, 0x02, master_key, master_salt, &mut salt)?;
            let cipher = crypto.new_aead(algorithm, key).map_err(crypto_err)?;
            return Ok(SrtpRx {
                cipher: RxCipher::Gcm { cipher, salt },
                tag_len: GCM_TAG,
            });
        }
        if matches!(
            profile,
            ProtectionProfile::Aes128CmHmacSha1_80 | ProtectionProfile::Aes128CmHmacSha1_32
        ) {
            let mut key = [0u8; 16];
            let mut auth = [0u8; 20];
            let mut salt = [0u8; 14];
            aes_cm_kdf(crypto, 0x00, master_key, master_salt, &mut key)?;
            aes_cm_kdf(crypto, 0x01, master_key, master_salt, &mut auth)?;
            aes_cm_kdf(crypto, 0x02, master_key, master_salt, &mut salt)?;
            let cipher = crypto
                .new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &key)
                .map_err(crypto_err)?;
            let mac = crypto
                .new_hmac(HmacAlgorithm::Sha1, &auth)
                .map_err(crypto_err)?;
            return Ok(SrtpRx {
                cipher: RxCipher::CmSha1 { cipher, mac, salt },
                tag_len: profile.rtp_auth_tag_len(),
            });
        }
        let ctx = Context::new(master_key, master_salt, profile, None, None, crypto)
            .map_err(crypto_err)?;
        let tag_len = profile.rtp_auth_tag_len().max(profile.aead_auth_tag_len());
        Ok(SrtpRx {
            cipher: RxCipher::Other(Box::new(ctx)),
            tag_len,
        })
    }

    /// Bytes of authentication tag after the payload.
    pub fn tag_len(&self) -> usize {
        self.tag_len
    }

    /// Decrypts `packet` (an SRTP packet whose header is `header_len` bytes, extensions
    /// included) with rollover counter `roc`, and returns the plaintext payload (padding
    /// included). GCM decrypts into `packet` itself; other profiles into `scratch`.
    pub fn decrypt<'a>(
        &mut self,
        packet: &'a mut [u8],
        header_len: usize,
        roc: u32,
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], KeyError> {
        if packet.len() < header_len + self.tag_len || header_len < 12 {
            return Err(KeyError::Auth);
        }
        match &mut self.cipher {
            RxCipher::Gcm { cipher, salt } => {
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&packet[8..12]);
                iv[6..10].copy_from_slice(&roc.to_be_bytes());
                iv[10..12].copy_from_slice(&packet[2..4]);
                for (v, s) in iv.iter_mut().zip(salt.iter()) {
                    *v ^= s;
                }
                let end = packet.len() - GCM_TAG;
                let (head, rest) = packet.split_at_mut(header_len);
                let (body, tag) = rest.split_at_mut(end - header_len);
                cipher
                    .open_in_place(&iv, head, body, tag)
                    .map_err(|_| KeyError::Auth)?;
                Ok(&packet[header_len..end])
            }
            RxCipher::CmSha1 { cipher, mac, salt } => {
                let end = packet.len() - self.tag_len;
                let mut full = [0u8; 20];
                mac.sign(&[&packet[..end], &roc.to_be_bytes()], &mut full)
                    .map_err(|_| KeyError::Auth)?;
                if !rtc::crypto::constant_time_eq(&full[..self.tag_len], &packet[end..]) {
                    return Err(KeyError::Auth);
                }
                let mut counter = [0u8; 16];
                counter[4..8].copy_from_slice(&packet[8..12]);
                counter[8..12].copy_from_slice(&roc.to_be_bytes());
                counter[12..14].copy_from_slice(&packet[2..4]);
                for (c, s) in counter.iter_mut().zip(salt.iter()) {
                    *c ^= s;
                }
                cipher
                    .apply_keystream(&counter, &mut packet[header_len..end])
                    .map_err(|_| KeyError::Auth)?;
                Ok(&packet[header_len..end])
            }
            RxCipher::Other(ctx) => {
                // webrtc-rs's context tracks the rollover counter itself.
                let _ = roc;
                let plain = ctx.decrypt_rtp(packet).map_err(|_| KeyError::Auth)?;
                scratch.clear();
                scratch.extend_from_slice(&plain);
                let end = scratch.len();
                Ok(&scratch[header_len.min(end)..end])
            }
        }
    }
}

/// Decrypts SRTCP received from the server (sender reports), with webrtc-rs's context: RTCP is
/// a few packets a second, so its allocation does not matter.
pub struct SrtcpRx(Box<Context>);

impl SrtcpRx {
    /// A decryptor for the server's direction of `keys`.
    pub fn new(crypto: &dyn RTCCrypto, keys: &SrtpKeys) -> Result<SrtcpRx, KeyError> {
        let ctx = Context::new(
            &keys.remote_key,
            &keys.remote_salt,
            keys.profile,
            None,
            None,
            crypto,
        )
        .map_err(crypto_err)?;
        Ok(SrtcpRx(Box::new(ctx)))
    }

    /// The plaintext compound RTCP packet.
    pub fn decrypt(&mut self, packet: &[u8]) -> Result<bytes::BytesMut, KeyError> {
        self.0.decrypt_rtcp(packet).map_err(|_| KeyError::Auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<dyn RTCCryptoProvider> {
        rtc::crypto::default_provider().unwrap()
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn gcm_in_place_decrypts_what_webrtc_rs_encrypts_across_a_rollover() {
        let p = provider();
        let key: Vec<u8> = (0..16).collect();
        let salt: Vec<u8> = (100..112).collect();
        let profile = ProtectionProfile::AeadAes128Gcm;
        let mut tx = Context::new(&key, &salt, profile, None, None, p.crypto()).unwrap();
        let mut rx = SrtpRx::with_key(p.crypto(), profile, &key, &salt).unwrap();
        let mut scratch = Vec::new();
        // Sequence numbers from 65530 through the wrap: the encryptor's ROC becomes 1.
        for i in 0..12u32 {
            let seq = (65530 + i) as u16;
            let roc = (65530 + i) >> 16;
            let payload: Vec<u8> = (0..50).map(|b| (b as u8) ^ (i as u8)).collect();
            let mut enc = tx
                .encrypt_rtp(&rtp(seq, 0xabcd, &payload))
                .unwrap()
                .to_vec();
            assert_ne!(&enc[12..62], &payload[..], "encrypted");
            let got = rx.decrypt(&mut enc, 12, roc, &mut scratch).unwrap();
            assert_eq!(got, &payload[..], "seq {seq}");
        }
        // A wrong rollover counter or a flipped bit fails authentication.
        let mut enc = tx.encrypt_rtp(&rtp(6, 0xabcd, b"hello")).unwrap().to_vec();
        let mut copy = enc.clone();
        assert!(rx.decrypt(&mut copy, 12, 0, &mut scratch).is_err());
        enc[13] ^= 1;
        assert!(rx.decrypt(&mut enc, 12, 1, &mut scratch).is_err());
    }

    #[test]
    fn aes_cm_hmac_sha1_decrypts_in_place_across_a_rollover() {
        let p = provider();
        for profile in [
            ProtectionProfile::Aes128CmHmacSha1_80,
            ProtectionProfile::Aes128CmHmacSha1_32,
        ] {
            let key: Vec<u8> = (20..36).collect();
            let salt: Vec<u8> = (50..64).collect();
            let mut tx = Context::new(&key, &salt, profile, None, None, p.crypto()).unwrap();
            let mut rx = SrtpRx::with_key(p.crypto(), profile, &key, &salt).unwrap();
            let mut scratch = Vec::new();
            for i in 0..10u32 {
                let seq = (65532 + i) as u16;
                let payload: Vec<u8> = (0..77).map(|b| (b as u8).wrapping_mul(i as u8)).collect();
                let mut enc = tx.encrypt_rtp(&rtp(seq, 9, &payload)).unwrap().to_vec();
                let got = rx
                    .decrypt(&mut enc, 12, (65532 + i) >> 16, &mut scratch)
                    .unwrap();
                assert_eq!(got, &payload[..]);
            }
            let mut enc = tx.encrypt_rtp(&rtp(3, 9, b"x")).unwrap().to_vec();
            let mut wrong_roc = enc.clone();
            assert!(rx.decrypt(&mut wrong_roc, 12, 0, &mut scratch).is_err());
            enc[12] ^= 0x40;
            assert!(rx.decrypt(&mut enc, 12, 1, &mut scratch).is_err());
        }
    }

    #[test]
    fn aes_256_gcm_decrypts_in_place() {
        let p = provider();
        let profile = ProtectionProfile::AeadAes256Gcm;
        let key: Vec<u8> = (0..32).collect();
        let salt = vec![4u8; 12];
        let mut tx = Context::new(&key, &salt, profile, None, None, p.crypto()).unwrap();
        let mut rx = SrtpRx::with_key(p.crypto(), profile, &key, &salt).unwrap();
        assert_eq!(rx.tag_len(), 16);
        let mut enc = tx.encrypt_rtp(&rtp(7, 9, b"payload!")).unwrap().to_vec();
        let mut scratch = Vec::new();
        assert_eq!(
            rx.decrypt(&mut enc, 12, 0, &mut scratch).unwrap(),
            b"payload!"
        );
    }

    #[test]
    fn the_prf_expands_and_the_exporter_splits_client_and_server_keys() {
        let p = provider();
        let c = p.crypto();
        let secret = [5u8; 48];
        let seed = [6u8; 40];
        let long = p_sha256(c, &secret, &seed, 100).unwrap();
        let short = p_sha256(c, &secret, &seed, 56).unwrap();
        assert_eq!(long.len(), 100);
        assert_eq!(&long[..56], &short[..], "a prefix of the same stream");
        assert_ne!(&long[..32], &long[32..64]);
        let other = p_sha256(c, &secret, &[7u8; 40], 56).unwrap();
        assert_ne!(short, other);

        let e = Exporter {
            master_secret: secret.to_vec(),
            seed: seed.to_vec(),
        };
        let client = e.keys(c, ProtectionProfile::AeadAes128Gcm, true).unwrap();
        let server = e.keys(c, ProtectionProfile::AeadAes128Gcm, false).unwrap();
        assert_eq!(client.local_key, server.remote_key);
        assert_eq!(client.remote_salt, server.local_salt);
        assert_eq!(client.local_key, short[..16].to_vec());
        assert_eq!(client.remote_key, short[16..32].to_vec());
        assert_eq!(client.local_salt, short[32..44].to_vec());
    }

    #[test]
    fn the_capture_sees_only_the_exporter_round() {
        let cap = KeyCapture::new().unwrap();
        let c = cap.crypto();
        let secret = [9u8; 48];
        let mut out = [0u8; 32];
        // Another PRF use with a 48-byte key (key expansion): not captured.
        let mut seed = b"key expansion".to_vec();
        seed.extend_from_slice(&[1u8; 64]);
        c.new_hmac(HmacAlgorithm::Sha256, &secret)
            .unwrap()
            .sign(&[&seed], &mut out)
            .unwrap();
        assert!(cap.exporter().is_none());
        let mut seed = LABEL_EXTRACTOR_DTLS_SRTP.as_bytes().to_vec();
        seed.extend_from_slice(&[2u8; 64]);
        let mut mac = c.new_hmac(HmacAlgorithm::Sha256, &secret).unwrap();
        mac.sign(&[&seed], &mut out).unwrap();
        let e = cap.exporter().expect("captured");
        assert_eq!(e.master_secret, secret.to_vec());
        assert_eq!(e.seed, seed);
        // The wrapped HMAC computes what the plain one does.
        let mut plain = [0u8; 32];
        provider()
            .crypto()
            .new_hmac(HmacAlgorithm::Sha256, &secret)
            .unwrap()
            .sign(&[&seed], &mut plain)
            .unwrap();
        assert_eq!(out, plain);
    }
}
