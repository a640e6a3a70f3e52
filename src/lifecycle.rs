//! The server's stop sequence, as every part that talks to clients sees it.
//!
//! [`Phase::Serving`] → [`Phase::Draining`] (SIGTERM or SIGINT: `/healthz` answers 503,
//! every session is told `going_away`, joins are refused with `shutting_down`) →
//! [`Phase::Stopping`] (after `limits.drain_secs`: sessions close with `closing`
//! `server_shutdown`, the HTTP listener stops). The [`Stopper`] moves it on; the HTTP side
//! and each session hold a [`Lifecycle`] to look at it and wait for it. No I/O here.

use std::time::Duration;

use plenary_proto::ServerMessage;
use tokio::sync::watch;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Taking joins.
    Serving,
    /// Clients were told the server is going away; no joins.
    Draining,
    /// Closing every session.
    Stopping,
}

/// A view of the phase (cheap to clone).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    rx: watch::Receiver<Phase>,
    drain: Duration,
}

/// Moves the phase on (held by the [`crate::Server`]).
#[derive(Debug)]
pub struct Stopper {
    tx: watch::Sender<Phase>,
}

/// How long after the close a client should wait before it joins again, at least.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(5);

/// A new lifecycle in [`Phase::Serving`], whose drain lasts `drain`.
pub fn lifecycle(drain: Duration) -> (Stopper, Lifecycle) {
    let (tx, rx) = watch::channel(Phase::Serving);
    (Stopper { tx }, Lifecycle { rx, drain })
}

impl Stopper {
    /// Enters `phase` (never goes back).
    pub fn enter(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }
}

impl Lifecycle {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.rx.borrow()
    }

    /// Whether joins are refused (draining or stopping).
    pub fn refuses_joins(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// Resolves once the phase is `phase` or later (never, if the [`Stopper`] is dropped
    /// before that).
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|p| *p >= phase).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// What every session is told when the drain starts.
    pub fn going_away(&self) -> ServerMessage {
        let closes_in = self.drain;
        ServerMessage::GoingAway {
            closes_in_ms: closes_in.as_millis() as u64,
            reconnect_after_ms: (closes_in + RECONNECT_AFTER).as_millis() as u64,
            message: "The server is shutting down (for a restart or maintenance). Your \
                      meeting will close shortly; join again in a moment."
                .into(),
        }
    }
}

/// Resolves when the watched flag becomes true (never, if its sender is gone first).
pub async fn wait_until_true(mut rx: watch::Receiver<bool>) {
    loop {
        let set = *rx.borrow_and_update();
        if set {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_wake_waiters() {
        let (stop, life) = lifecycle(Duration::from_secs(2));
        assert_eq!(life.phase(), Phase::Serving);
        assert!(!life.refuses_joins());
        let waiter = {
            let life = life.clone();
            tokio::spawn(async move { life.reached(Phase::Draining).await })
        };
        stop.enter(Phase::Draining);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(life.refuses_joins());
        stop.enter(Phase::Stopping);
        stop.enter(Phase::Draining);
        assert_eq!(life.phase(), Phase::Stopping, "never goes back");
        match life.going_away() {
            ServerMessage::GoingAway {
                closes_in_ms,
                reconnect_after_ms,
                ..
            } => {
                assert_eq!(closes_in_ms, 2000);
                assert_eq!(reconnect_after_ms, 7000);
            }
            other => panic!("{other:?}"),
        }
    }
}
