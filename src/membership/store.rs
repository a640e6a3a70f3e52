//! Persistent state in an embedded SQLite database: instance app registrations (per instance
//! id, base URL and redirect URI), sign-in
//! sessions, used OAuth states, rooms, invitations, signing keys (public halves; private
//! keys live in files), used grant ids, guest time, the append-only audit log, and the
//! record of meetings (its tables here; its reads and writes in `crate::record`).
//!
//! Every multi-step change runs in one transaction, so a failure leaves nothing half
//! written. Secrets that identify a browser or a guest (session cookies, OAuth states,
//! invitation tokens) are stored only as SHA-256 hashes; instance access tokens, which must
//! be used again, are stored sealed (encrypted by `Membership`, see `sealing`). Calls are synchronous; async code
//! reaches the store through [`Store::run`], which moves the work off the async threads.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::secret::hash_secret;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The background task died.
    #[error("database task failed")]
    Task,
    /// The database's folder is missing and could not be created.
    #[error(
        "cannot create the database folder {path}: {reason}; create it for the user Plenary \
         runs as (e.g. `install -d -m 700 -o plenary {path}`) or set membership.database \
         to a path in an existing folder"
    )]
    Folder {
        /// The folder.
        path: String,
        /// Why it could not be created.
        reason: String,
    },
}

/// Creates `dir` and its missing parents, readable by this user only (0700 on Unix).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The schema, one migration per entry; applied in order, each once.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE apps (
    instance TEXT PRIMARY KEY,
    base_url TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE oauth_states (
    state_hash TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    verifier TEXT NOT NULL,
    return_to TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    account_id TEXT NOT NULL,
    handle TEXT NOT NULL,
    display_name TEXT NOT NULL,
    is_host INTEGER NOT NULL,
    listen_only INTEGER NOT NULL,
    access_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    checked_at INTEGER NOT NULL
);
CREATE INDEX sessions_account ON sessions(instance, account_id);
CREATE TABLE members (
    instance TEXT NOT NULL,
    account_id TEXT NOT NULL,
    handle TEXT NOT NULL,
    active INTEGER NOT NULL,
    checked_at INTEGER NOT NULL,
    PRIMARY KEY (instance, account_id)
);
CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    room TEXT NOT NULL,
    label TEXT NOT NULL,
    inviter_instance TEXT NOT NULL,
    inviter_account TEXT NOT NULL,
    inviter_handle TEXT NOT NULL,
    valid_until INTEGER NOT NULL,
    max_uses INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    can_speak INTEGER NOT NULL,
    can_video INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX invitations_inviter ON invitations(inviter_instance, inviter_account);
CREATE TABLE guest_time (
    inviter_handle TEXT NOT NULL,
    month TEXT NOT NULL,
    seconds INTEGER NOT NULL,
    PRIMARY KEY (inviter_handle, month)
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    private_key_file TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
CREATE TABLE used_jti (
    jti TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    room TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    // 2: app registrations are kept per base URL (normalized, with its trailing slash), so
    // an instance id pointed at another host registers there afresh instead of sending the
    // old host's client secret to the new one.
    r#"
CREATE TABLE apps_by_base (
    instance TEXT NOT NULL,
    base_url TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (instance, base_url, redirect_uri)
);
INSERT INTO apps_by_base
    SELECT instance,
           CASE WHEN base_url LIKE '%/' THEN base_url ELSE base_url || '/' END,
           redirect_uri, client_id, client_secret, created_at
    FROM apps;
DROP TABLE apps;
ALTER TABLE apps_by_base RENAME TO apps;
"#,
    // 3: pending sign-ins travel sealed in the OAuth state (`pending.rs`); only states
    // whose code the instance accepted are remembered, until they expire (single use).
    r#"
DROP TABLE oauth_states;
CREATE TABLE used_oauth_states (
    state_hash TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
"#,
    // 4: the record of meetings (`crate::record`): attendance, speakers, motions and votes.
    // Times are Unix milliseconds. A secret ballot is two rows that share nothing: the
    // voter in `ballot_voters` (no choice, no time), the choices in `secret_ballots` (no
    // voter, no time, a random id so that the table's order is not the order of voting).
    r#"
CREATE TABLE meetings (
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    last_active INTEGER NOT NULL,
    ended_at INTEGER,
    ended_by TEXT,
    quorum TEXT NOT NULL,
    speaker_limit_secs INTEGER
);
CREATE INDEX meetings_room ON meetings(room, started_at);
CREATE TABLE attendance (
    meeting_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    invited_by TEXT,
    is_host INTEGER NOT NULL,
    joined_at INTEGER NOT NULL,
    left_at INTEGER,
    leave_reason TEXT
);
CREATE INDEX attendance_meeting ON attendance(meeting_id, identity);
CREATE TABLE speakers (
    meeting_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    given_by TEXT NOT NULL,
    limit_secs INTEGER,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    ended_by TEXT
);
CREATE INDEX speakers_meeting ON speakers(meeting_id, identity);
CREATE TABLE motions (
    meeting_id TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    kind TEXT NOT NULL,
    options TEXT NOT NULL,
    max_choices INTEGER NOT NULL,
    allow_guests INTEGER NOT NULL,
    duration_secs INTEGER,
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    opened_by TEXT,
    opened_at INTEGER,
    deadline INTEGER,
    closed_by TEXT,
    closed_at INTEGER,
    result TEXT,
    present TEXT,
    PRIMARY KEY (meeting_id, id)
);
CREATE TABLE votes (
    meeting_id TEXT NOT NULL,
    motion_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    choices TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (meeting_id, motion_id, identity)
);
CREATE TABLE ballot_voters (
    meeting_id TEXT NOT NULL,
    motion_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (meeting_id, motion_id, identity)
);
CREATE TABLE secret_ballots (
    id INTEGER PRIMARY KEY,
    meeting_id TEXT NOT NULL,
    motion_id TEXT NOT NULL,
    choices TEXT NOT NULL
);
CREATE TABLE chat (
    meeting_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX chat_meeting ON chat(meeting_id, at);
"#,
];

/// A handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    // A std mutex: held only for the duration of one synchronous call, never across an await.
    conn: Arc<Mutex<Connection>>,
}

/// One audit log entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// What happened (`sign_in`, `sign_in_refused`, `grant`, `invitation_created`, ...).
    pub kind: String,
    /// Who did it (a handle, `guest:<name>`, or `operator`).
    pub actor: String,
    /// The room, if any.
    pub room: String,
    /// Details (JSON text). Never a token, code or secret.
    pub detail: String,
}

/// A registered OAuth app on an instance.
#[derive(Debug, Clone)]
pub struct AppRegistration {
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// The redirect URI it was registered with.
    pub redirect_uri: String,
}

/// A signed-in member's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Hash of the cookie value.
    pub id_hash: String,
    /// Instance id.
    pub instance: String,
    /// Account id on the instance.
    pub account_id: String,
    /// `@user@domain`.
    pub handle: String,
    /// Display name.
    pub display_name: String,
    /// Host by role or host list.
    pub is_host: bool,
    /// Silenced account under a listen-only policy.
    pub listen_only: bool,
    /// The instance access token as stored: sealed by `Membership` (see `sealing`), never
    /// in clear, never sent to the browser.
    pub access_token: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_seen: i64,
    /// Last membership check, Unix seconds.
    pub checked_at: i64,
}

/// A room's access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Members only.
    MembersOnly,
    /// Members and invited guests.
    MembersAndGuests,
    /// Nobody new may join (hosts still may).
    Locked,
}

impl RoomMode {
    fn as_str(self) -> &'static str {
        match self {
            RoomMode::MembersOnly => "members_only",
            RoomMode::MembersAndGuests => "members_and_guests",
            RoomMode::Locked => "locked",
        }
    }

    fn parse(s: &str) -> RoomMode {
        match s {
            "members_only" => RoomMode::MembersOnly,
            "locked" => RoomMode::Locked,
            _ => RoomMode::MembersAndGuests,
        }
    }
}

/// An invitation as stored.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Invitation {
    /// Public id (for listing and revoking; not the token).
    pub id: String,
    /// The room.
    pub room: String,
    /// The partner's name.
    pub label: String,
    /// Inviter's instance id.
    #[serde(skip)]
    pub inviter_instance: String,
    /// Inviter's account id.
    #[serde(skip)]
    pub inviter_account: String,
    /// Inviter's handle.
    pub inviter_handle: String,
    /// Unix seconds.
    pub valid_until: i64,
    /// Most redemptions.
    pub max_uses: i64,
    /// Redemptions so far.
    pub uses: i64,
    /// Guests may use their microphone.
    pub can_speak: bool,
    /// Guests may use their camera.
    pub can_video: bool,
    /// Revoked.
    pub revoked: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// A stored signing key's public half.
#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    /// Key id.
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// File holding the PKCS#8 private key.
    pub private_key_file: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it stopped signing, if it did.
    pub retired_at: Option<i64>,
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations. A missing
    /// folder is created, readable by this user only.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                create_private_dir(dir).map_err(|e| StoreError::Folder {
                    path: dir.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|_| StoreError::Task)?
    }

    /// Runs `f` with the connection on this thread (CLI tools, tests).
    pub fn run_sync<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

// ---- free functions on a connection or transaction: the store's operations ----------------

/// Appends an audit entry.
pub fn audit(
    conn: &Connection,
    now: i64,
    kind: &str,
    actor: &str,
    room: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit (at, kind, actor, room, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now, kind, actor, room, detail.to_string()],
    )?;
    Ok(())
}

/// The most recent audit entries, newest first.
pub fn recent_audit(conn: &Connection, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT id, at, kind, actor, room, detail FROM audit ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt.query_map(params![limit as i64], |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            at: r.get(1)?,
            kind: r.get(2)?,
            actor: r.get(3)?,
            room: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The app registered on `instance` at `base_url` (normalized: [`url::Url`]'s form, with a
/// trailing slash) for `redirect_uri`, if any. A registration made at another base URL is
/// never returned: its secret belongs to that host.
pub fn app(
    conn: &Connection,
    instance: &str,
    base_url: &str,
    redirect_uri: &str,
) -> Result<Option<AppRegistration>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT client_id, client_secret, redirect_uri FROM apps
             WHERE instance = ?1 AND base_url = ?2 AND redirect_uri = ?3",
            params![instance, base_url, redirect_uri],
            |r| {
                Ok(AppRegistration {
                    client_id: r.get(0)?,
                    client_secret: r.get(1)?,
                    redirect_uri: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Records an app registration (replacing an older one for the same instance, base URL and
/// redirect URI).
pub fn save_app(
    conn: &Connection,
    instance: &str,
    base_url: &str,
    app: &AppRegistration,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO apps (instance, base_url, redirect_uri, client_id, client_secret, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![instance, base_url, app.redirect_uri, app.client_id, app.client_secret, now],
    )?;
    Ok(())
}

/// Whether an OAuth state was used already (its hash is remembered until it expires).
pub fn oauth_state_used(conn: &Connection, state: &str, now: i64) -> Result<bool, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM used_oauth_states WHERE state_hash = ?1 AND expires_at >= ?2",
        params![hash_secret(state), now],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Records an OAuth state as used until `expires_at` (by hash), dropping expired ones.
/// False if it was used before.
pub fn use_oauth_state(
    conn: &Connection,
    state: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    conn.execute(
        "DELETE FROM used_oauth_states WHERE expires_at < ?1",
        params![now],
    )?;
    let n = conn.execute(
        "INSERT OR IGNORE INTO used_oauth_states (state_hash, expires_at) VALUES (?1, ?2)",
        params![hash_secret(state), expires_at],
    )?;
    Ok(n == 1)
}

/// Creates a session (the cookie value is hashed) and records the member as active.
pub fn create_session(tx: &Transaction, cookie: &str, s: &Session) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sessions (id_hash, instance, account_id, handle, display_name, is_host,
            listen_only, access_token, created_at, last_seen, checked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            hash_secret(cookie),
            s.instance,
            s.account_id,
            s.handle,
            s.display_name,
            s.is_host,
            s.listen_only,
            s.access_token,
            s.created_at,
            s.last_seen,
            s.checked_at
        ],
    )?;
    set_member(
        tx,
        &s.instance,
        &s.account_id,
        &s.handle,
        true,
        s.checked_at,
    )
}

/// Records whether an account is (still) a member.
pub fn set_member(
    conn: &Connection,
    instance: &str,
    account_id: &str,
    handle: &str,
    active: bool,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO members (instance, account_id, handle, active, checked_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (instance, account_id) DO UPDATE SET handle = ?3, active = ?4, checked_at = ?5",
        params![instance, account_id, handle, active, now],
    )?;
    Ok(())
}

/// Whether an account was a member at its last check: `(active, checked_at)`.
pub fn member_status(
    conn: &Connection,
    instance: &str,
    account_id: &str,
) -> Result<Option<(bool, i64)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT active, checked_at FROM members WHERE instance = ?1 AND account_id = ?2",
            params![instance, account_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The session for a cookie value, if it exists (expiry is the caller's business).
pub fn session(conn: &Connection, cookie: &str) -> Result<Option<Session>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id_hash, instance, account_id, handle, display_name, is_host, listen_only,
                access_token, created_at, last_seen, checked_at
             FROM sessions WHERE id_hash = ?1",
            params![hash_secret(cookie)],
            |r| {
                Ok(Session {
                    id_hash: r.get(0)?,
                    instance: r.get(1)?,
                    account_id: r.get(2)?,
                    handle: r.get(3)?,
                    display_name: r.get(4)?,
                    is_host: r.get(5)?,
                    listen_only: r.get(6)?,
                    access_token: r.get(7)?,
                    created_at: r.get(8)?,
                    last_seen: r.get(9)?,
                    checked_at: r.get(10)?,
                })
            },
        )
        .optional()?)
}

/// Sessions whose access token lacks `prefix` (stored in clear by an older version):
/// `(id_hash, instance, account_id, token)`.
pub fn session_tokens_not_prefixed(
    conn: &Connection,
    prefix: &str,
) -> Result<Vec<(String, String, String, String)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id_hash, instance, account_id, access_token FROM sessions
         WHERE substr(access_token, 1, length(?1)) != ?1",
    )?;
    let rows = stmt.query_map(params![prefix], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces a session's stored access token.
pub fn set_session_token(conn: &Connection, id_hash: &str, token: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE sessions SET access_token = ?2 WHERE id_hash = ?1",
        params![id_hash, token],
    )?;
    Ok(())
}

/// Marks a session as used now (idle timeout) and, when given, re-checked now.
pub fn touch_session(
    conn: &Connection,
    id_hash: &str,
    now: i64,
    checked: bool,
) -> Result<(), StoreError> {
    if checked {
        conn.execute(
            "UPDATE sessions SET last_seen = ?2, checked_at = ?2 WHERE id_hash = ?1",
            params![id_hash, now],
        )?;
    } else {
        conn.execute(
            "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1",
            params![id_hash, now],
        )?;
    }
    Ok(())
}

/// Sets host status and listen-only on every session of an account (after a re-check found
/// its role or `limited` flag changed).
pub fn set_account_sessions_roles(
    conn: &Connection,
    instance: &str,
    account_id: &str,
    is_host: bool,
    listen_only: bool,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE sessions SET is_host = ?3, listen_only = ?4 WHERE instance = ?1 AND account_id = ?2",
        params![instance, account_id, is_host, listen_only],
    )?;
    Ok(())
}

/// Deletes a session.
pub fn delete_session(conn: &Connection, id_hash: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sessions WHERE id_hash = ?1", params![id_hash])?;
    Ok(())
}

/// Deletes every session of an account (membership lost).
pub fn delete_account_sessions(
    conn: &Connection,
    instance: &str,
    account_id: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM sessions WHERE instance = ?1 AND account_id = ?2",
        params![instance, account_id],
    )?;
    Ok(())
}

/// A room's mode, if it is open.
pub fn room_mode(conn: &Connection, name: &str) -> Result<Option<RoomMode>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT mode FROM rooms WHERE name = ?1",
            params![name],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(|m| RoomMode::parse(&m)))
}

/// Opens a room (members and guests by default). False if it was open already.
pub fn open_room(conn: &Connection, name: &str, by: &str, now: i64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO rooms (name, mode, opened_by, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, RoomMode::MembersAndGuests.as_str(), by, now],
    )?;
    Ok(n == 1)
}

/// Sets a room's mode. False if the room is not open.
pub fn set_room_mode(conn: &Connection, name: &str, mode: RoomMode) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE rooms SET mode = ?2 WHERE name = ?1",
        params![name, mode.as_str()],
    )?;
    Ok(n == 1)
}

fn invitation_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        id: r.get(0)?,
        room: r.get(1)?,
        label: r.get(2)?,
        inviter_instance: r.get(3)?,
        inviter_account: r.get(4)?,
        inviter_handle: r.get(5)?,
        valid_until: r.get(6)?,
        max_uses: r.get(7)?,
        uses: r.get(8)?,
        can_speak: r.get(9)?,
        can_video: r.get(10)?,
        revoked: r.get(11)?,
        created_at: r.get(12)?,
    })
}

const INVITATION_COLUMNS: &str = "id, room, label, inviter_instance, inviter_account, \
    inviter_handle, valid_until, max_uses, uses, can_speak, can_video, revoked, created_at";

/// Stores a new invitation (the token only as its hash).
pub fn create_invitation(
    conn: &Connection,
    token: &str,
    inv: &Invitation,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO invitations (id, token_hash, room, label, inviter_instance, inviter_account,
            inviter_handle, valid_until, max_uses, uses, can_speak, can_video, revoked, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, 0, ?12)",
        params![
            inv.id,
            hash_secret(token),
            inv.room,
            inv.label,
            inv.inviter_instance,
            inv.inviter_account,
            inv.inviter_handle,
            inv.valid_until,
            inv.max_uses,
            inv.can_speak,
            inv.can_video,
            inv.created_at
        ],
    )?;
    Ok(())
}

/// The invitation a token opens.
pub fn invitation_by_token(
    conn: &Connection,
    token: &str,
) -> Result<Option<Invitation>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = ?1"),
            params![hash_secret(token)],
            invitation_from_row,
        )
        .optional()?)
}

/// An invitation by its public id.
pub fn invitation_by_id(conn: &Connection, id: &str) -> Result<Option<Invitation>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = ?1"),
            params![id],
            invitation_from_row,
        )
        .optional()?)
}

/// Invitations created by one member, or (with `None`) all, newest first.
pub fn list_invitations(
    conn: &Connection,
    inviter: Option<(&str, &str)>,
) -> Result<Vec<Invitation>, StoreError> {
    let mut out = Vec::new();
    match inviter {
        Some((instance, account)) => {
            let mut stmt = conn.prepare(&format!(
                "SELECT {INVITATION_COLUMNS} FROM invitations
                 WHERE inviter_instance = ?1 AND inviter_account = ?2 ORDER BY created_at DESC"
            ))?;
            for row in stmt.query_map(params![instance, account], invitation_from_row)? {
                out.push(row?);
            }
        }
        None => {
            let mut stmt = conn.prepare(&format!(
                "SELECT {INVITATION_COLUMNS} FROM invitations ORDER BY created_at DESC LIMIT 1000"
            ))?;
            for row in stmt.query_map([], invitation_from_row)? {
                out.push(row?);
            }
        }
    }
    Ok(out)
}

/// Active (not revoked, not expired, not used up) invitations of one member.
pub fn count_active_invitations(
    conn: &Connection,
    instance: &str,
    account: &str,
    now: i64,
) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM invitations WHERE inviter_instance = ?1 AND inviter_account = ?2
         AND revoked = 0 AND valid_until > ?3 AND uses < max_uses",
        params![instance, account, now],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// Counts one use of an invitation, if it still has one. False when used up meanwhile.
pub fn use_invitation(tx: &Transaction, id: &str) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE invitations SET uses = uses + 1 WHERE id = ?1 AND uses < max_uses AND revoked = 0",
        params![id],
    )?;
    Ok(n == 1)
}

/// Revokes an invitation. False if it does not exist.
pub fn revoke_invitation(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE invitations SET revoked = 1 WHERE id = ?1",
        params![id],
    )?;
    Ok(n == 1)
}

/// Guest seconds used this month by one member's invitations.
pub fn guest_seconds(conn: &Connection, inviter: &str, month: &str) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT seconds FROM guest_time WHERE inviter_handle = ?1 AND month = ?2",
            params![inviter, month],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Adds guest seconds to a member's month.
pub fn add_guest_seconds(
    conn: &Connection,
    inviter: &str,
    month: &str,
    seconds: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO guest_time (inviter_handle, month, seconds) VALUES (?1, ?2, ?3)
         ON CONFLICT (inviter_handle, month) DO UPDATE SET seconds = seconds + ?3",
        params![inviter, month, seconds],
    )?;
    Ok(())
}

/// Records a grant id as used; false if it was used before (a replay).
pub fn use_jti(
    conn: &Connection,
    jti: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    conn.execute("DELETE FROM used_jti WHERE expires_at < ?1", params![now])?;
    let n = conn.execute(
        "INSERT OR IGNORE INTO used_jti (jti, expires_at) VALUES (?1, ?2)",
        params![jti, expires_at],
    )?;
    Ok(n == 1)
}

/// Every signing key, newest first.
pub fn signing_keys(conn: &Connection) -> Result<Vec<SigningKeyRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT kid, public_key, private_key_file, created_at, retired_at FROM signing_keys
         ORDER BY created_at DESC, rowid DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SigningKeyRow {
            kid: r.get(0)?,
            public_key: r.get(1)?,
            private_key_file: r.get(2)?,
            created_at: r.get(3)?,
            retired_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds a key and retires the others (they keep verifying until their last grant expired).
pub fn add_signing_key(tx: &Transaction, row: &SigningKeyRow) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
        params![row.created_at],
    )?;
    tx.execute(
        "INSERT INTO signing_keys (kid, public_key, private_key_file, created_at, retired_at)
         VALUES (?1, ?2, ?3, ?4, NULL)",
        params![
            row.kid,
            row.public_key,
            row.private_key_file,
            row.created_at
        ],
    )?;
    Ok(())
}

/// Forgets keys retired before `before` (no grant they signed can still be valid).
pub fn drop_retired_keys(conn: &Connection, before: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT private_key_file FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
    )?;
    let files: Vec<String> = stmt
        .query_map(params![before], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    conn.execute(
        "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
        params![before],
    )?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::open_in_memory().unwrap()
    }

    #[test]
    fn migrations_apply_once_and_audit_is_append_only() {
        let dir = std::env::temp_dir().join(format!("plenary-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.db");
        let _ = std::fs::remove_file(&path);
        {
            let s = Store::open(&path).unwrap();
            s.run_sync(|c| audit(c, 1, "sign_in", "@a@x", "", serde_json::json!({})))
                .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let entries = s.run_sync(|c| recent_audit(c, 10)).unwrap();
        assert_eq!(entries.len(), 1);
        let err = s
            .run_sync(|c| Ok(c.execute("DELETE FROM audit", [])?))
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = s
            .run_sync(|c| Ok(c.execute("UPDATE audit SET kind = 'x'", [])?))
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    #[test]
    fn a_missing_database_folder_is_created_privately_or_explained() {
        let base = std::env::temp_dir().join(format!("plenary-dbdir-{}", std::process::id()));
        let path = base.join("var/lib/plenary/plenary.db");
        Store::open(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // A folder that cannot be made (its parent is a file) is explained.
        let file = base.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file.join("sub/plenary.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot create the database folder"), "{err}");
        assert!(err.contains("install -d -m 700"), "{err}");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn used_oauth_states_are_remembered_by_hash_until_they_expire() {
        let s = store();
        assert!(!s.run_sync(|c| oauth_state_used(c, "st", 0)).unwrap());
        assert!(s.run_sync(|c| use_oauth_state(c, "st", 100, 0)).unwrap());
        assert!(!s.run_sync(|c| use_oauth_state(c, "st", 100, 0)).unwrap());
        assert!(s.run_sync(|c| oauth_state_used(c, "st", 50)).unwrap());
        let raw: i64 = s
            .run_sync(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM used_oauth_states WHERE state_hash = 'st'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(raw, 0, "stored only as a hash");
        // Expired entries no longer count and are pruned.
        assert!(!s.run_sync(|c| oauth_state_used(c, "st", 200)).unwrap());
        assert!(s.run_sync(|c| use_oauth_state(c, "st", 300, 200)).unwrap());
    }

    #[test]
    fn invitation_uses_are_bounded() {
        let s = store();
        let inv = Invitation {
            id: "inv1".into(),
            room: "gm".into(),
            label: "Partner".into(),
            inviter_instance: "i".into(),
            inviter_account: "1".into(),
            inviter_handle: "@a@x".into(),
            valid_until: 1000,
            max_uses: 2,
            uses: 0,
            can_speak: true,
            can_video: false,
            revoked: false,
            created_at: 1,
        };
        s.run_sync(|c| create_invitation(c, "tok", &inv)).unwrap();
        let use_once = |s: &Store| {
            s.run_sync(|c| {
                let tx = c.transaction()?;
                let ok = use_invitation(&tx, "inv1")?;
                tx.commit()?;
                Ok(ok)
            })
            .unwrap()
        };
        assert!(use_once(&s));
        assert!(use_once(&s));
        assert!(!use_once(&s), "used up");
        let got = s
            .run_sync(|c| invitation_by_token(c, "tok"))
            .unwrap()
            .unwrap();
        assert_eq!(got.uses, 2);
        assert_eq!(
            s.run_sync(|c| count_active_invitations(c, "i", "1", 0))
                .unwrap(),
            0
        );
        assert!(s
            .run_sync(|c| invitation_by_token(c, "other"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn apps_are_found_only_at_the_base_url_they_were_registered_with() {
        let s = store();
        let reg = AppRegistration {
            client_id: "id-a".into(),
            client_secret: "secret-a".into(),
            redirect_uri: "https://meet/cb".into(),
        };
        s.run_sync(|c| save_app(c, "coop", "https://a.example/", &reg, 1))
            .unwrap();
        let found = s
            .run_sync(|c| app(c, "coop", "https://a.example/", "https://meet/cb"))
            .unwrap();
        assert_eq!(found.unwrap().client_secret, "secret-a");
        assert!(s
            .run_sync(|c| app(c, "coop", "https://b.example/", "https://meet/cb"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn version_1_app_rows_migrate_with_a_normalized_base_url() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO apps VALUES ('coop', 'https://a.example', 'https://meet/cb', 'i', 's', 1)",
            [],
        )
        .unwrap();
        let s = Store::init(conn).unwrap();
        let found = s
            .run_sync(|c| app(c, "coop", "https://a.example/", "https://meet/cb"))
            .unwrap();
        assert_eq!(found.unwrap().client_secret, "s");
    }

    #[test]
    fn jti_is_single_use() {
        let s = store();
        assert!(s.run_sync(|c| use_jti(c, "j1", 100, 0)).unwrap());
        assert!(!s.run_sync(|c| use_jti(c, "j1", 100, 0)).unwrap());
        // Expired entries are pruned.
        assert!(s.run_sync(|c| use_jti(c, "j1", 300, 200)).unwrap());
    }
}
