//! The record of meetings: what the meetings ask to keep (attendance, speaking turns,
//! motions and votes, settings, host actions) written to the SQLite store, each record
//! with its audit row in one transaction; the meetings that go on after a restart; and
//! the minutes, as JSON and Markdown, over HTTP (for hosts) and from the command line.
//!
//! - [`write`]: one record's rows.
//! - [`restore`]: meetings rebuilt from their records at start.
//! - [`minutes`], [`markdown`]: the minutes.
//! - [`routes`]: `GET /api/minutes/{room}`.
//! - [`civil`]: dates in UTC.
//!
//! The media plane hands records over a bounded channel; one task ([`spawn`]) writes them
//! in batches (a batch is one transaction, so each record and its audit row commit
//! together). At shutdown the media plane closes its side once everything is handed over,
//! and [`Recorder::finish`] waits until the last batch, and an audit row
//! `server_shutdown`, are written.

pub mod civil;
pub mod markdown;
pub mod minutes;
pub mod restore;
pub mod routes;
pub mod write;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::media::RoomRecord;
use crate::membership::store::Store;

/// Records waiting to be written (the media plane keeps more in its own outbox).
pub const RECORD_QUEUE: usize = 4096;
/// Most records written in one transaction.
const BATCH: usize = 256;

/// The task that writes records.
pub struct Recorder {
    task: JoinHandle<()>,
}

impl Recorder {
    /// Waits until every record handed over is written (call once the senders are gone).
    pub async fn finish(self) {
        if let Err(e) = self.task.await {
            tracing::error!("the recorder failed: {e}");
        }
    }
}

/// Starts the recorder on `store`; returns where to send records.
pub fn spawn(store: Store) -> (mpsc::Sender<RoomRecord>, Recorder) {
    let (tx, mut rx) = mpsc::channel::<RoomRecord>(RECORD_QUEUE);
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            write_batch(&store, batch).await;
        }
        // Every sender is gone: the server is stopping. The audit log's last row says so.
        let now = crate::grant::unix_now() as i64;
        let res = store
            .run(move |c| {
                crate::membership::store::audit(
                    c,
                    now,
                    "server_shutdown",
                    "operator",
                    "",
                    serde_json::json!({}),
                )
            })
            .await;
        if let Err(e) = res {
            tracing::warn!("cannot write the audit log's last row: {e}");
        }
    });
    (tx, Recorder { task })
}

/// Writes a batch in one transaction; if that fails, each record alone (so one bad record
/// loses only itself, and says so).
async fn write_batch(store: &Store, batch: Vec<RoomRecord>) {
    let all = store
        .run({
            let batch = batch.clone();
            move |c| {
                let tx = c.transaction()?;
                for r in &batch {
                    write::write(&tx, r)?;
                }
                tx.commit()?;
                Ok(())
            }
        })
        .await;
    let Err(e) = all else { return };
    tracing::warn!(
        "cannot write {} records at once ({e}); writing them one by one",
        batch.len()
    );
    for r in batch {
        let room = r.room.clone();
        let res = store
            .run(move |c| {
                let tx = c.transaction()?;
                write::write(&tx, &r)?;
                tx.commit()?;
                Ok(())
            })
            .await;
        if let Err(e) = res {
            tracing::error!(room = %room, "a meeting record is lost: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
