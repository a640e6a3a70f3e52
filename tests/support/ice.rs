//! A raw ICE peer for the reachability tests: a hand-written SDP offer (a data channel and a
//! receive-only audio m-line, `max-bundle`), the server's answer read line by line, and STUN
//! binding requests (RFC 8489 with MESSAGE-INTEGRITY and FINGERPRINT, RFC 8445 attributes)
//! sent over UDP or over TCP with RFC 4571 framing. Nothing of the server's code is used.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::net::SocketAddr;
use std::time::Duration;

use aws_lc_rs::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// An offer as a browser under `max-bundle` makes it: data channel first, then audio.
pub fn offer_sdp(ufrag: &str, pwd: &str) -> String {
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        &format!("a=ice-ufrag:{ufrag}"),
        &format!("a=ice-pwd:{pwd}"),
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC",
        "a=setup:actpass",
        "a=mid:0",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        &format!("a=ice-ufrag:{ufrag}"),
        &format!("a=ice-pwd:{pwd}"),
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC",
        "a=setup:actpass",
        "a=mid:1",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "",
    ]
    .join("\r\n")
}

/// What an answer says about ICE, per m-section.
#[derive(Debug, Clone, Default)]
pub struct AnswerSection {
    /// `a=mid`.
    pub mid: String,
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`.
    pub pwd: String,
    /// `a=candidate:` lines (without `a=`).
    pub candidates: Vec<String>,
    /// Whether `a=end-of-candidates` is there.
    pub end_of_candidates: bool,
}

/// The m-sections of an SDP.
pub fn sections(sdp: &str) -> Vec<AnswerSection> {
    let mut out: Vec<AnswerSection> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            out.push(AnswerSection::default());
            continue;
        }
        let Some(s) = out.last_mut() else { continue };
        if let Some(v) = line.strip_prefix("a=mid:") {
            s.mid = v.into();
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            s.ufrag = v.into();
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            s.pwd = v.into();
        } else if let Some(v) = line.strip_prefix("a=") {
            if v.starts_with("candidate:") {
                s.candidates.push(v.into());
            } else if v == "end-of-candidates" {
                s.end_of_candidates = true;
            }
        }
    }
    out
}

/// The address of the first candidate of `proto` (`udp` or `tcp`) in `candidates`.
pub fn candidate_addr(candidates: &[String], proto: &str) -> Option<SocketAddr> {
    candidates.iter().find_map(|c| {
        let f: Vec<&str> = c.split_whitespace().collect();
        (f.get(2)?.eq_ignore_ascii_case(proto))
            .then(|| format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok())?
    })
}

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A binding request from the controlling side (with USE-CANDIDATE), as a browser sends
/// them: USERNAME `server_ufrag:client_ufrag`, integrity keyed with the server's password.
pub fn binding_request(
    txid: [u8; 12],
    server_ufrag: &str,
    client_ufrag: &str,
    server_pwd: &str,
) -> Vec<u8> {
    let mut attrs = Vec::new();
    attr(
        &mut attrs,
        0x0006,
        format!("{server_ufrag}:{client_ufrag}").as_bytes(),
    );
    attr(&mut attrs, 0x0024, &0x6e7f_1effu32.to_be_bytes()); // PRIORITY
    attr(&mut attrs, 0x802A, &0x1234_5678_9abc_def0u64.to_be_bytes()); // ICE-CONTROLLING
    attr(&mut attrs, 0x0025, &[]); // USE-CANDIDATE
    let header = |len: usize| {
        let mut h = vec![0x00, 0x01];
        h.extend_from_slice(&(len as u16).to_be_bytes());
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&txid);
        h
    };
    let mut msg = header(attrs.len() + 24);
    msg.extend_from_slice(&attrs);
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, server_pwd.as_bytes());
    let mac = hmac::sign(&key, &msg);
    attr(&mut attrs, 0x0008, mac.as_ref());
    let mut msg = header(attrs.len() + 8);
    msg.extend_from_slice(&attrs);
    let fp = crc32(&msg) ^ 0x5354_554e;
    attr(&mut attrs, 0x8028, &fp.to_be_bytes());
    let mut msg = header(attrs.len());
    msg.extend_from_slice(&attrs);
    msg
}

/// Whether `msg` is a binding success response to `txid`.
pub fn is_success_for(msg: &[u8], txid: &[u8; 12]) -> bool {
    msg.len() >= 20 && msg[0..2] == [0x01, 0x01] && msg[4..8] == MAGIC && msg[8..20] == txid[..]
}

/// A fresh transaction id.
pub fn txid(n: u32) -> [u8; 12] {
    let mut t = [7u8; 12];
    t[8..].copy_from_slice(&n.to_be_bytes());
    t
}

/// Sends one RFC 4571 frame.
pub async fn send_frame(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    s.write_all(&(data.len() as u16).to_be_bytes()).await?;
    s.write_all(data).await
}

/// Reads one RFC 4571 frame (None: the server closed, or nothing came in `limit`).
pub async fn recv_frame(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(limit, async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut data = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut data).await.ok()?;
        Some(data)
    })
    .await
    .ok()
    .flatten()
}

/// Whether the server closes `s` within `limit` (reads until EOF or error).
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A binding request over TCP; whether the server answered it with a success.
pub async fn check_tcp(
    s: &mut TcpStream,
    n: u32,
    server_ufrag: &str,
    client_ufrag: &str,
    server_pwd: &str,
) -> bool {
    let id = txid(n);
    if send_frame(
        s,
        &binding_request(id, server_ufrag, client_ufrag, server_pwd),
    )
    .await
    .is_err()
    {
        return false;
    }
    loop {
        match recv_frame(s, Duration::from_secs(3)).await {
            Some(f) if is_success_for(&f, &id) => return true,
            Some(_) => continue, // something else (e.g. a DTLS retransmit)
            None => return false,
        }
    }
}

/// A binding request over UDP to `to`; whether the server answered it with a success.
pub async fn check_udp(
    sock: &UdpSocket,
    to: SocketAddr,
    n: u32,
    server_ufrag: &str,
    client_ufrag: &str,
    server_pwd: &str,
) -> bool {
    let id = txid(n);
    let req = binding_request(id, server_ufrag, client_ufrag, server_pwd);
    for _ in 0..3 {
        if sock.send_to(&req, to).await.is_err() {
            return false;
        }
        let got = tokio::time::timeout(Duration::from_millis(700), async {
            let mut buf = [0u8; 2048];
            loop {
                let Ok((n, _)) = sock.recv_from(&mut buf).await else {
                    return false;
                };
                if is_success_for(&buf[..n], &id) {
                    return true;
                }
            }
        })
        .await;
        if got == Ok(true) {
            return true;
        }
    }
    false
}
