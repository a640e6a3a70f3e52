//! Built-in TLS, whole-server: a self-signed certificate made at test time (rcgen), HTTPS
//! and `wss://` signaling on `http.addr`, ICE-TCP sharing that same port (told apart by the
//! first bytes), the certificate replaced on disk and reloaded on SIGHUP, and a broken
//! replacement refused while the working certificate stays.

#[path = "support/ice.rs"]
mod ice;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use plenary::config::Config;
use plenary::grant::{Claims, Permissions};
use plenary_proto::{ClientMessage, Role, ServerMessage, PROTOCOL_VERSION};
use support::bounded;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// Accepts any certificate and remembers the leaf it saw (the test checks which one the
/// server presents; trust is not what is tested here).
#[derive(Debug)]
struct Remember {
    seen: std::sync::Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Remember {
    fn verify_server_cert(
        &self,
        end_entity: &pki_types::CertificateDer<'_>,
        _: &[pki_types::CertificateDer<'_>],
        _: &pki_types::ServerName<'_>,
        _: &[u8],
        _: pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.seen.lock().unwrap().push(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to `addr`, and the leaf certificate the server showed.
async fn tls_connect(
    addr: std::net::SocketAddr,
) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(Remember {
        seen: Default::default(),
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let leaf = verifier.seen.lock().unwrap().last().cloned().unwrap();
    (tls, leaf)
}

/// A fresh self-signed certificate for localhost, written to `dir`; returns its DER.
fn write_cert(dir: &Path) -> Vec<u8> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    ck.cert.der().to_vec()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_wss_and_ice_tcp_share_one_port_and_sighup_reloads_the_certificate() {
    bounded(Duration::from_secs(120), async {
        let dir = std::env::temp_dir().join(format!("plenary-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = write_cert(&dir);
        let mut config = Config::for_tests();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        config.http.addr = addr;
        config.media.tcp_addr = Some(addr);
        config.tls.cert = dir.join("cert.pem").display().to_string();
        config.tls.key = dir.join("key.pem").display().to_string();
        let server = plenary::start(config.clone())
            .await
            .expect("starts with TLS");
        assert!(server.tls());
        assert_eq!(server.tcp_addr(), Some(addr), "ICE-TCP on the HTTPS port");

        // HTTPS.
        let (mut tls, leaf) = tls_connect(addr).await;
        assert_eq!(leaf, first, "the configured certificate");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        tls.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.ends_with("ok"), "{body}");

        // Plain HTTP on the TLS port gets nothing.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(T, plain.read_to_end(&mut buf)).await;
        assert!(
            !String::from_utf8_lossy(&buf).contains("200"),
            "no plain HTTP"
        );

        // wss:// signaling, then an offer; the answer names the shared port as the TCP
        // candidate, and a STUN check framed for ICE-TCP on that port is answered.
        let (tls, _) = tls_connect(addr).await;
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("wss://localhost:{}/rtc", addr.port()), tls)
                .await
                .expect("WebSocket over TLS");
        let claims = Claims::new(
            "tls-room",
            "tess",
            "Tess",
            Role::Member,
            Duration::from_secs(60),
        )
        .with_permissions(Permissions::speaker());
        let join = ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            grant: config.mint_grant(&claims).unwrap(),
            resume: None,
            room: None,
        };
        ws.send(Message::text(serde_json::to_string(&join).unwrap()))
            .await
            .unwrap();
        let offer = ClientMessage::Offer {
            sdp: ice::offer_sdp("tessUfrg", "tess-password-0123456789ab"),
            tracks: Vec::new(),
        };
        let mut answer = None;
        while answer.is_none() {
            let msg = tokio::time::timeout(T, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            match serde_json::from_str::<ServerMessage>(&text).unwrap() {
                ServerMessage::Welcome { .. } => {
                    ws.send(Message::text(serde_json::to_string(&offer).unwrap()))
                        .await
                        .unwrap();
                }
                ServerMessage::Answer { sdp, .. } => answer = Some(sdp),
                _ => {}
            }
        }
        let sections = ice::sections(&answer.unwrap());
        assert_eq!(
            ice::candidate_addr(&sections[0].candidates, "tcp"),
            Some(addr)
        );
        let mut media = TcpStream::connect(addr).await.unwrap();
        assert!(
            ice::check_tcp(
                &mut media,
                1,
                &sections[0].ufrag,
                "tessUfrg",
                &sections[0].pwd
            )
            .await,
            "ICE-TCP on the HTTPS port"
        );

        // A broken replacement is refused; the working certificate stays.
        std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
        assert!(server.reload_tls().is_err());
        assert_eq!(
            tls_connect(addr).await.1,
            first,
            "the old certificate stays"
        );

        // A renewed certificate, and SIGHUP: new connections get it.
        let second = write_cert(&dir);
        assert_ne!(first, second);
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen = tls_connect(addr).await.1;
            if seen == second {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, second, "SIGHUP reloaded the certificate");
        // The signaling session opened before the reload carries on.
        ws.send(Message::text(r#"{"type":"ping","id":5}"#))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(T, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                if t.contains("\"pong\"") {
                    break;
                }
            }
        }
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
