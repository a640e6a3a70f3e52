//! `--turn`: each simulated attendee's media goes through the TURN server its `welcome`
//! names (Plenary's `[turn]`, e.g. coturn), with the time-limited credentials in it — what a
//! meeting of attendees behind UDP-hostile networks costs the TURN server and Plenary.
//!
//! A [`TurnTunnel`] wraps one peer's UDP socket: it allocates a relay on the TURN server
//! (webrtc-rs's sans-IO TURN client: Allocate with the long-term credentials, then a
//! permission and a channel binding per destination), sends everything the peer connection
//! writes to the server through the relay (ChannelData once bound, Send indications before),
//! and unwraps what comes back. The peer connection is not told: its ICE checks and media
//! simply travel through the relay, so the server sees the relayed address, and every
//! packet crosses the TURN server both ways. No I/O here: the group does it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use plenary_proto::IceServer;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::turn::client::{Client, ClientConfig, Event};

/// Why a tunnel could not be made or broke.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The welcome names no `turn:` URL with credentials.
    #[error("--turn: the welcome names no TURN server with credentials (configure [turn] on the server)")]
    NoServer,
    /// The URL's host does not resolve.
    #[error("--turn: cannot resolve {0}")]
    Resolve(String),
    /// The TURN client refused something.
    #[error("TURN: {0}")]
    Client(String),
    /// The TURN server refused the allocation (e.g. expired credentials).
    #[error("TURN allocation refused: {0}")]
    Refused(String),
}

/// The first `turn:` URL (over UDP) of a welcome's ICE servers, with its credentials:
/// (server address, username, password).
pub fn turn_server(servers: &[IceServer]) -> Result<(SocketAddr, String, String), TurnError> {
    for s in servers {
        let (Some(user), Some(pass)) = (&s.username, &s.credential) else {
            continue;
        };
        for url in &s.urls {
            let Some(rest) = url.strip_prefix("turn:") else {
                continue;
            };
            let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
            if query.contains("transport=tcp") {
                continue;
            }
            let hostport = if hostport.contains(':') && !hostport.ends_with(']') {
                hostport.to_string()
            } else {
                format!("{hostport}:3478")
            };
            let addr = hostport
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| TurnError::Resolve(hostport.clone()))?;
            return Ok((addr, user.clone(), pass.clone()));
        }
    }
    Err(TurnError::NoServer)
}

/// Where the allocation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelState {
    /// Allocate sent.
    Allocating,
    /// The relay is ours.
    Ready(SocketAddr),
    /// Refused or timed out.
    Failed(String),
}

/// One peer's relay through the TURN server.
pub struct TurnTunnel {
    client: Client,
    server: SocketAddr,
    local: SocketAddr,
    /// Where the allocation stands.
    pub state: TunnelState,
    /// Destinations a permission was asked for.
    permitted: Vec<SocketAddr>,
    /// Datagrams relayed to the peer connection so far.
    pub relayed_in: u64,
    /// Datagrams sent through the relay so far.
    pub relayed_out: u64,
    /// The last thing that went wrong, for diagnostics.
    pub last_error: Option<String>,
}

impl TurnTunnel {
    /// A tunnel from `local` (the peer's socket) through `server`, allocating at once.
    pub fn new(
        server: SocketAddr,
        local: SocketAddr,
        username: String,
        password: String,
        now: Instant,
    ) -> Result<TurnTunnel, TurnError> {
        let err = |e: rtc::shared::error::Error| TurnError::Client(e.to_string());
        let provider: Arc<dyn rtc::crypto::RTCCryptoProvider> =
            rtc::crypto::default_provider().map_err(|e| TurnError::Client(e.to_string()))?;
        let mut client = Client::new(
            ClientConfig {
                turn_serv_addr: server.to_string(),
                local_addr: local,
                transport_protocol: TransportProtocol::UDP,
                username,
                password,
                ..ClientConfig::default()
            },
            provider,
        )
        .map_err(err)?;
        client.allocate(now).map_err(err)?;
        Ok(TurnTunnel {
            client,
            server,
            local,
            state: TunnelState::Allocating,
            permitted: Vec::new(),
            relayed_in: 0,
            relayed_out: 0,
            last_error: None,
        })
    }

    /// The TURN server's address (datagrams from it are the tunnel's).
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// A datagram from the TURN server: hands what it carries for the peer connection to
    /// `deliver` as (from, payload).
    pub fn handle_read(
        &mut self,
        now: Instant,
        data: BytesMut,
        deliver: impl FnMut(SocketAddr, BytesMut),
    ) {
        let msg = TaggedBytesMut {
            now,
            transport: self.context(),
            message: data,
        };
        if let Err(e) = self.client.handle_read(msg) {
            self.last_error = Some(e.to_string());
        }
        self.events(deliver);
    }

    /// Sends `data` to `dest` through the relay. Before the relay and a permission for
    /// `dest` exist it is dropped (ICE retransmits), and the permission is asked for.
    pub fn send(&mut self, now: Instant, data: &[u8], dest: SocketAddr) {
        let TunnelState::Ready(relayed) = self.state else {
            return;
        };
        let Ok(mut relay) = self.client.relay(relayed) else {
            return;
        };
        if !self.permitted.contains(&dest) {
            self.permitted.push(dest);
            if let Err(e) = relay.create_permission(now, dest) {
                self.last_error = Some(format!("permission for {dest}: {e}"));
            }
            return;
        }
        if relay.send_to(now, data, dest).is_ok() {
            self.relayed_out += 1;
        }
    }

    /// Time passed (retransmissions, refreshes).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.client.handle_timeout(now);
        self.events(|_, _| {});
    }

    /// The next datagram for the TURN server: (destination, bytes).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.client
            .poll_write()
            .map(|m| (m.transport.peer_addr, m.message))
    }

    fn events(&mut self, mut deliver: impl FnMut(SocketAddr, BytesMut)) {
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::AllocateResponse(_, relayed) => {
                    self.state = TunnelState::Ready(relayed);
                }
                Event::AllocateError(_, e) => {
                    self.state = TunnelState::Failed(e.to_string());
                }
                Event::TransactionTimeout(_) if self.state == TunnelState::Allocating => {
                    self.state = TunnelState::Failed("no answer from the TURN server".into());
                }
                Event::CreatePermissionError(_, e) => {
                    self.last_error = Some(format!("permission refused: {e}"));
                }
                Event::DataIndicationOrChannelData(_, from, payload) => {
                    self.relayed_in += 1;
                    deliver(from, payload);
                }
                _ => {}
            }
        }
    }

    fn context(&self) -> TransportContext {
        TransportContext {
            local_addr: self.local,
            peer_addr: self.server,
            transport_protocol: TransportProtocol::UDP,
            ecn: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_welcomes_udp_turn_url_is_chosen() {
        let servers = vec![
            IceServer {
                urls: vec!["stun:127.0.0.1:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:127.0.0.1:3478?transport=tcp".into(),
                    "turn:127.0.0.1:3479?transport=udp".into(),
                ],
                username: Some("1700000000:ann".into()),
                credential: Some("pw".into()),
            },
        ];
        let (addr, user, pass) = turn_server(&servers).unwrap();
        assert_eq!(addr, "127.0.0.1:3479".parse::<SocketAddr>().unwrap());
        assert_eq!((user.as_str(), pass.as_str()), ("1700000000:ann", "pw"));
        assert!(matches!(
            turn_server(&servers[..1]),
            Err(TurnError::NoServer)
        ));
        let plain = vec![IceServer {
            urls: vec!["turn:127.0.0.1".into()],
            username: Some("u".into()),
            credential: Some("p".into()),
        }];
        assert_eq!(turn_server(&plain).unwrap().0.port(), 3478);
    }
}
