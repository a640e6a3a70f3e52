//! Built-in TLS (rustls): the certificate chain and key come from PEM files named in
//! `[tls]`, and are read again on [`TlsFiles::reload`] (the server calls it on SIGHUP, after
//! a certificate renewal). A reload that fails keeps the working certificate and says why.
//!
//! Only the HTTP side uses it (HTTPS and `wss://`); media has its own DTLS.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the right kind.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate files and the server configuration made from them.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    /// Read once per handshake (a pointer copy), written on reload: never held across an
    /// `.await`.
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsFiles {
    /// Reads the files; fails when they cannot serve.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles, TlsError> {
        let config = server_config(cert, key)?;
        Ok(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again; on failure the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.cert, &self.key)?);
        if let Ok(mut current) = self.current.write() {
            *current = config;
        }
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        TlsAcceptor::from(config)
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let file_err = |path: &Path, what: String| TlsError::File {
        path: path.to_path_buf(),
        what,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(cert, "no CERTIFICATE in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // HTTP/1.1 only: the WebSocket upgrade needs it, and the server speaks nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
