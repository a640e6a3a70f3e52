//! The server under test: its URL, and its `/metrics` (Prometheus text), fetched with a tiny
//! HTTP/1.1 GET so that the load tester needs no HTTP client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What went wrong talking to the server's HTTP side.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The URL is not `http(s)://host[:port][/]`.
    #[error("unsupported URL {0:?}: use http://host:port or https://host:port")]
    Url(String),
    /// TLS could not be set up or failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The host name does not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// Connecting or reading failed.
    #[error("HTTP request to {addr} failed: {source}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server answered something other than 200.
    #[error("HTTP GET {path} answered: {status}")]
    Status {
        /// The path.
        path: String,
        /// The status line.
        status: String,
    },
    /// The request did not finish in time.
    #[error("HTTP GET {0} timed out")]
    Timeout(String),
}

/// A Plenary base URL, split into what the load tester needs.
#[derive(Debug, Clone)]
pub struct ServerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `https://`: the TLS configuration (`None` for `http://`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    https: bool,
}

impl ServerUrl {
    /// Parses `http://host[:port][/]` or `https://…` (then checked against the system's
    /// roots, or not at all with `insecure`).
    pub fn parse_with(url: &str, insecure: bool) -> Result<ServerUrl, ServerError> {
        let mut u = ServerUrl::parse(url)?;
        if u.https {
            u.tls = Some(
                crate::tls::client_config(insecure).map_err(|e| ServerError::Tls(e.to_string()))?,
            );
        }
        Ok(u)
    }

    /// Parses `http://host[:port][/]` or `https://host[:port][/]` (no TLS configuration yet:
    /// see [`ServerUrl::parse_with`]).
    pub fn parse(url: &str) -> Result<ServerUrl, ServerError> {
        let bad = || ServerError::Url(url.to_owned());
        let (https, rest) = match url.strip_prefix("https://") {
            Some(r) => (true, r),
            None => (false, url.strip_prefix("http://").ok_or_else(bad)?),
        };
        let default_port = if https { 443 } else { 80 };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(ServerUrl {
            host,
            port,
            tls: None,
            https,
        })
    }

    /// Whether it is `https://`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The signaling WebSocket URL.
    pub fn ws_url(&self) -> String {
        let scheme = if self.https { "wss" } else { "ws" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}/rtc", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}/rtc", self.host, self.port)
        }
    }

    /// `GET path` at `addr` (this URL's address), over TLS for `https://`.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<String, ServerError> {
        match &self.tls {
            Some(tls) => http_get_tls(addr, &self.host, path, tls).await,
            None => http_get(addr, &self.host, path).await,
        }
    }

    /// The first address the host resolves to.
    pub async fn resolve(&self) -> Result<SocketAddr, ServerError> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ServerError::Resolve(self.host.clone()))
    }
}

/// `GET path` on `addr`; returns the body.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<String, ServerError> {
    let io = |source| ServerError::Io { addr, source };
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.map_err(io)?;
        request(&mut s, host, path).await.map_err(io)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| ServerError::Timeout(path.to_owned()))??;
    body(&buf, path)
}

/// `GET path` on `addr` over TLS (server name `host`).
pub async fn http_get_tls(
    addr: SocketAddr,
    host: &str,
    path: &str,
    tls: &std::sync::Arc<rustls::ClientConfig>,
) -> Result<String, ServerError> {
    let io = |source| ServerError::Io { addr, source };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| ServerError::Tls(format!("{host}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(tls));
    let fetch = async {
        let tcp = TcpStream::connect(addr).await.map_err(io)?;
        let mut s = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        request(&mut s, host, path).await.map_err(io)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| ServerError::Timeout(path.to_owned()))??;
    body(&buf, path)
}

async fn request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
    path: &str,
) -> std::io::Result<Vec<u8>> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(16 * 1024);
    // A TLS server may close without close_notify: keep what arrived.
    match s.read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(e),
    }
}

fn body(buf: &[u8], path: &str) -> Result<String, ServerError> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ServerError::Status {
            path: path.to_owned(),
            status: status.to_owned(),
        });
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    })
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The numbers the load tester reads from `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Process CPU seconds (user + system).
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub rss_bytes: f64,
    /// RTP packets forwarded to subscribers.
    pub rtp_forwarded: f64,
    /// Participants in the media plane.
    pub participants: f64,
    /// UDP datagrams received.
    pub packets_in: f64,
    /// UDP datagrams sent.
    pub packets_out: f64,
    /// Seconds the server's threads waited for a CPU (only when it runs on this machine).
    pub cpu_wait_seconds: f64,
    /// Send system calls (`sendmmsg` batches).
    pub send_calls: f64,
    /// Open signaling sessions (WebSockets).
    pub signaling_sessions: f64,
    /// Rooms.
    pub rooms: f64,
}

/// Reads a [`Sample`] from Prometheus text (names with or without the `plenary_` prefix).
pub fn parse_metrics(text: &str) -> Sample {
    let mut s = Sample::default();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find([' ', '{']).unwrap_or(line.len());
        let name = line[..name_end].trim_start_matches("plenary_");
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        match name {
            "process_cpu_seconds_total" => s.cpu_seconds = value,
            "process_resident_memory_bytes" => s.rss_bytes = value,
            "rtp_forwarded_total" => s.rtp_forwarded = value,
            "participants" => s.participants = value,
            "udp_packets_in_total" => s.packets_in = value,
            "udp_packets_out_total" => s.packets_out = value,
            "udp_send_calls_total" => s.send_calls = value,
            "signaling_sessions" => s.signaling_sessions = value,
            "rooms" => s.rooms = value,
            _ => {}
        }
    }
    s
}

/// Samples taken once a second during a run.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// (when, what).
    pub points: Vec<(Instant, Sample)>,
    /// The last error, if scraping failed.
    pub error: Option<String>,
}

/// What the server spent over a window of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Wall seconds of the window.
    pub seconds: f64,
    /// CPU seconds the server used.
    pub cpu_seconds: f64,
    /// CPU use as a percentage of one core.
    pub cpu_percent: f64,
    /// RTP packets forwarded.
    pub forwarded: f64,
    /// Forwarded packets per second.
    pub forwarded_per_sec: f64,
    /// CPU microseconds per forwarded packet.
    pub cpu_us_per_forwarded: f64,
    /// Forwarded packets per CPU-second (per core).
    pub forwarded_per_core_sec: f64,
    /// Seconds the server waited for a CPU (other processes had it), if known.
    pub cpu_wait_seconds: f64,
    /// Datagrams sent per send system call (how well the server batched).
    pub datagrams_per_send_call: f64,
}

impl Samples {
    /// The usage between the samples nearest to `from` and `to`.
    pub fn usage(&self, from: Instant, to: Instant) -> Option<Usage> {
        let first = self.points.iter().find(|(t, _)| *t >= from)?;
        let last = self.points.iter().rev().find(|(t, _)| *t <= to)?;
        let seconds = last.0.checked_duration_since(first.0)?.as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let cpu = (last.1.cpu_seconds - first.1.cpu_seconds).max(0.0);
        let fwd = (last.1.rtp_forwarded - first.1.rtp_forwarded).max(0.0);
        Some(Usage {
            seconds,
            cpu_seconds: cpu,
            cpu_percent: cpu * 100.0 / seconds,
            forwarded: fwd,
            forwarded_per_sec: fwd / seconds,
            cpu_us_per_forwarded: if fwd > 0.0 { cpu * 1e6 / fwd } else { 0.0 },
            forwarded_per_core_sec: if cpu > 0.0 { fwd / cpu } else { 0.0 },
            cpu_wait_seconds: (last.1.cpu_wait_seconds - first.1.cpu_wait_seconds).max(0.0),
            datagrams_per_send_call: {
                let calls = last.1.send_calls - first.1.send_calls;
                if calls > 0.0 {
                    (last.1.packets_out - first.1.packets_out) / calls
                } else {
                    0.0
                }
            },
        })
    }

    /// Largest resident memory seen.
    pub fn peak_rss(&self) -> f64 {
        self.points
            .iter()
            .map(|(_, s)| s.rss_bytes)
            .fold(0.0, f64::max)
    }

    /// Resident memory of the first sample (before the joins).
    pub fn first_rss(&self) -> f64 {
        self.points.first().map(|(_, s)| s.rss_bytes).unwrap_or(0.0)
    }

    /// Most participants seen at once.
    pub fn peak_participants(&self) -> f64 {
        self.points
            .iter()
            .map(|(_, s)| s.participants)
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = ServerUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.port, 8080);
        assert_eq!(u.ws_url(), "ws://127.0.0.1:8080/rtc");
        assert_eq!(ServerUrl::parse("http://meet.example/").unwrap().port, 80);
        let v6 = ServerUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.ws_url(), "ws://[::1]:9000/rtc");
        let s = ServerUrl::parse("https://meet.example").unwrap();
        assert_eq!(s.port, 443);
        assert!(s.is_https());
        assert_eq!(s.ws_url(), "wss://meet.example:443/rtc");
        assert!(ServerUrl::parse_with("https://meet.example", true)
            .unwrap()
            .tls
            .is_some());
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("http://x:y").is_err());
        assert!(ServerUrl::parse("http://x/path").is_err());
    }

    #[test]
    fn metrics_text_is_read_with_or_without_prefix() {
        let text = "# HELP x\n# TYPE x counter\nplenary_process_cpu_seconds_total 12.5\n\
                    process_resident_memory_bytes 1.048576e7\nplenary_rtp_forwarded_total 1000\n\
                    plenary_participants 42\nplenary_joins_refused_total{reason=\"full\"} 3\n\
                    plenary_udp_packets_out_total 1200\nplenary_udp_send_calls_total 40\n";
        let s = parse_metrics(text);
        assert_eq!(s.cpu_seconds, 12.5);
        assert_eq!(s.rss_bytes, 10_485_760.0);
        assert_eq!(s.rtp_forwarded, 1000.0);
        assert_eq!(s.participants, 42.0);
        assert_eq!(s.packets_out, 1200.0);
        assert_eq!(s.send_calls, 40.0);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }

    #[test]
    fn usage_is_computed_between_samples() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let sample = |cpu: f64, fwd: f64, rss: f64| Sample {
            cpu_seconds: cpu,
            rtp_forwarded: fwd,
            rss_bytes: rss,
            ..Sample::default()
        };
        let samples = Samples {
            points: vec![
                (at(0), sample(1.0, 0.0, 10e6)),
                (at(1), sample(1.5, 10_000.0, 20e6)),
                (at(3), sample(2.5, 60_000.0, 30e6)),
                (at(4), sample(2.6, 61_000.0, 25e6)),
            ],
            error: None,
        };
        let u = samples.usage(at(1), at(3)).unwrap();
        assert_eq!(u.seconds, 2.0);
        assert_eq!(u.cpu_seconds, 1.0);
        assert_eq!(u.cpu_percent, 50.0);
        assert_eq!(u.forwarded_per_sec, 25_000.0);
        assert_eq!(u.cpu_us_per_forwarded, 20.0);
        assert_eq!(u.forwarded_per_core_sec, 50_000.0);
        assert_eq!(samples.peak_rss(), 30e6);
        assert_eq!(samples.first_rss(), 10e6);
        assert!(samples.usage(at(5), at(6)).is_none());
    }
}
