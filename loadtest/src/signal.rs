//! One participant's signaling session: the WebSocket at `/rtc` (docs/protocol.md). It
//! joins with the grant, hands the welcome to the participant's group, then relays: server
//! messages to the group, the group's messages to the server, a `ping` every 10 s, and a
//! `leave` at the end.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use plenary_proto::{ClientMessage, ServerMessage, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::group::GroupCmd;

/// How often the session pings (the server drops sessions silent for 30 s).
const PING_EVERY: Duration = Duration::from_secs(10);

/// Runs one session until `stop` turns true, the server closes, or the group lets go.
#[allow(clippy::too_many_arguments)]
pub async fn session(
    pid: usize,
    ws_url: String,
    grant: String,
    room: String,
    group: mpsc::Sender<GroupCmd>,
    timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let t0 = Instant::now();
    let fail = |reason: String| GroupCmd::Failed { pid, t0, reason };
    let connector = tls.map(tokio_tungstenite::Connector::Rustls);
    let connect = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_tls_with_config(ws_url, None, false, connector),
    )
    .await;
    let mut ws = match connect {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            let _ = group.send(fail(format!("WebSocket: {e}"))).await;
            return;
        }
        Err(_) => {
            let _ = group
                .send(fail("timed out: WebSocket connect".into()))
                .await;
            return;
        }
    };
    // Built as JSON rather than as `ClientMessage::Join` so that optional fields added to the
    // protocol later (e.g. session resumption) need no change here.
    let join = serde_json::json!({
        "type": "join",
        "protocol": PROTOCOL_VERSION,
        "grant": grant,
        "room": room,
    });
    if let Err(e) = ws.send(Message::text(join.to_string())).await {
        let _ = group.send(fail(format!("WebSocket send: {e}"))).await;
        return;
    }
    let deadline = tokio::time::Instant::from_std(t0 + timeout);
    let mut early = Vec::new();
    let welcome = loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next {
            Err(_) => break Err("timed out: welcome".to_owned()),
            Ok(None) => break Err("WebSocket closed before welcome".to_owned()),
            Ok(Some(Err(e))) => break Err(format!("WebSocket: {e}")),
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ServerMessage>(&t) {
                Ok(ServerMessage::Welcome { ice_servers, .. }) => break Ok(ice_servers),
                Ok(ServerMessage::Error { code, message }) => {
                    break Err(format!("refused: {code:?}: {message}"))
                }
                Ok(other) => early.push(other),
                Err(e) => break Err(format!("bad server message: {e}")),
            },
            Ok(Some(Ok(Message::Close(_)))) => break Err("closed before welcome".to_owned()),
            Ok(Some(Ok(_))) => {}
        }
    };
    let ice_servers = match welcome {
        Ok(s) => s,
        Err(reason) => {
            let _ = group.send(fail(reason)).await;
            return;
        }
    };
    let (to_ws, mut from_group) = mpsc::unbounded_channel();
    if group
        .send(GroupCmd::Welcome {
            pid,
            t0,
            to_ws,
            ice_servers,
        })
        .await
        .is_err()
    {
        return;
    }
    for msg in early {
        let _ = group
            .send(GroupCmd::Signal {
                pid,
                msg: Box::new(msg),
            })
            .await;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut ping_id = 0u64;
    let reason = loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    let _ = ws.send(text(&ClientMessage::Leave)).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
            }
            out = from_group.recv() => match out {
                Some(msg) => {
                    if let Err(e) = ws.send(text(&msg)).await {
                        break format!("WebSocket send: {e}");
                    }
                }
                // The group dropped this participant (its join failed).
                None => {
                    let _ = ws.send(text(&ClientMessage::Leave)).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
            },
            _ = ping.tick() => {
                ping_id += 1;
                if let Err(e) = ws.send(text(&ClientMessage::Ping { id: ping_id })).await {
                    break format!("WebSocket send: {e}");
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMessage>(&t) {
                    Ok(ServerMessage::Pong { .. }) => {}
                    Ok(msg) => {
                        if group.send(GroupCmd::Signal { pid, msg: Box::new(msg) }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => break format!("bad server message: {e}"),
                },
                Some(Ok(Message::Close(_))) | None => break "signaling closed by the server".into(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("WebSocket: {e}"),
            },
        }
    };
    let _ = group.send(fail(reason)).await;
}

fn text(msg: &ClientMessage) -> Message {
    // Serializing our own message types cannot fail.
    Message::text(serde_json::to_string(msg).unwrap_or_default())
}
