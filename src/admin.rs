//! Administration from the command line: `kasad user …` and `kasad audit verify`.
//!
//! redb allows one process per database, so these commands open the database directly only
//! when no daemon runs; otherwise they talk to the running daemon over its admin socket
//! (`<data_dir>/admin.sock`, mode 0600, peer credentials checked: root or the daemon's own
//! user). Both paths run the same [`execute`] function.

use crate::audit::{Event, EventType, Severity};
use crate::auth::keys::SecretKey;
use crate::auth::setup::SetupState;
use crate::auth::throttle::Throttle;
use crate::auth::{Permission, Role, password};
use crate::store::Store;
use crate::store::audit::Pending;
use crate::store::users::User;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// An administrative request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Create a user.
    UserAdd {
        /// Login name.
        username: String,
        /// Role.
        role: Role,
        /// Extra permissions.
        permissions: Vec<Permission>,
        /// Password.
        password: String,
    },
    /// List users.
    UserList,
    /// Set a user's password.
    UserPasswd {
        /// Login name.
        username: String,
        /// New password.
        password: String,
    },
    /// Disable a user (their tokens stop working).
    UserDisable {
        /// Login name.
        username: String,
    },
    /// Delete a user.
    UserDelete {
        /// Login name.
        username: String,
    },
    /// Clear a username's login throttle (the running daemon's).
    UserUnlock {
        /// Login name.
        username: String,
    },
    /// The first-run setup code (while no user exists).
    SetupCode,
    /// Verify the audit chain.
    AuditVerify,
    /// Write a backup (database, staging log, keys) to `out`.
    Backup {
        /// Where (for the daemon: a file in its data directory the CLI then moves).
        out: PathBuf,
    },
    /// The push targets' status (the running daemon's).
    PushStatus,
    /// Queue a backfill of push target `name` from `since_ms` (the running daemon sends it).
    PushBackfill {
        /// Target name.
        name: String,
        /// Oldest time to send, UTC ms.
        since_ms: i64,
        /// Send again what a finished backfill covered.
        force: bool,
    },
}

/// Why an administrative request failed; over the socket the daemon sends its text and the
/// command line shows it as [`AdminError::Daemon`].
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No user has that name.
    #[error("no user named {0:?}")]
    NoUser(String),
    /// The username breaks the rules.
    #[error("username: 1-64 characters of letters, digits, '.', '_', '-', '@'")]
    BadUsername,
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The password could not be hashed.
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    /// The backup failed.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// The setup code could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A reply could not be written or read as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The daemon could not commit what it holds before a backup.
    #[error("the daemon could not commit its pending readings; no backup made")]
    NotFlushed,
    /// Push targets.
    #[error(transparent)]
    Push(#[from] crate::push::PushError),
    /// A request only the running daemon answers.
    #[error("{0} needs the running daemon")]
    NeedsDaemon(&'static str),
    /// The request line is not a request.
    #[error("bad request: {0}")]
    BadRequest(serde_json::Error),
    /// The request's task ended abnormally.
    #[error("{0}")]
    Task(String),
    /// The daemon holds the database but its socket does not answer.
    #[error(
        "the database is in use but the daemon's admin socket {path} is not reachable: {source}"
    )]
    Unreachable {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon closed the connection without an answer (peer credentials refused).
    #[error("the daemon refused the request (are you root or the daemon's user?)")]
    Refused,
    /// The daemon's answer: the error it reported.
    #[error("{0}")]
    Daemon(String),
}

/// The socket path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

fn event(t: EventType, who: &str, resource: String) -> Event {
    let mut e = Event::new(t, Severity::Info);
    e.username = Some(who.to_owned());
    e.resource = Some(resource);
    e
}

fn find(store: &Store, name: &str) -> Result<User, AdminError> {
    store
        .user_by_name(name)?
        .ok_or_else(|| AdminError::NoUser(name.to_owned()))
}

/// Changes user `name` with `f`, audited as USER_UPDATED in the same transaction.
fn update(
    store: &Store,
    key: &SecretKey,
    actor: &str,
    name: &str,
    now_ms: i64,
    f: impl FnOnce(&mut User),
) -> Result<(), AdminError> {
    let u = find(store, name)?;
    let ev = event(EventType::UserUpdated, actor, format!("user:{name}"));
    let f = |u: &mut User| {
        f(u);
        Ok(())
    };
    store.update_user(u.id, now_ms, f, Some(Pending::new(key, ev, now_ms)))?;
    Ok(())
}

/// What only the running daemon holds: its login throttle and setup code.
pub type Live = (Arc<Throttle>, Arc<SetupState>, Arc<crate::push::Push>);

/// Runs a request against an open store; `actor` names who asked (for the audit log);
/// `live` is the running daemon's state (`None` when the command opened the database
/// itself, with `data_dir` where it lives).
pub fn execute(
    store: &Store,
    key: &SecretKey,
    live: Option<&Live>,
    req: Request,
    actor: &str,
    now_ms: i64,
) -> Result<Value, AdminError> {
    let throttle = live.map(|l| l.0.as_ref());
    match req {
        Request::UserAdd {
            username,
            role,
            permissions,
            password: pw,
        } => {
            if !crate::auth::valid_username(&username) {
                return Err(AdminError::BadUsername);
            }
            let hash = password::hash(&pw)?;
            let u = User {
                id: 0,
                username: username.clone(),
                password_hash: hash,
                role,
                permissions,
                disabled: false,
                created_ms: now_ms,
                updated_ms: now_ms,
                token_version: 0,
            };
            let ev = event(EventType::UserCreated, actor, format!("user:{username}"));
            let u = store.create_user(u, Some(Pending::new(key, ev, now_ms)))?;
            Ok(json!({"user_id": u.id, "username": u.username, "role": u.role}))
        }
        Request::UserList => {
            let users = store.users()?;
            Ok(json!(
                users
                    .iter()
                    .map(
                        |u| json!({"user_id": u.id, "username": u.username, "role": u.role,
                    "permissions": u.effective_permissions(), "disabled": u.disabled})
                    )
                    .collect::<Vec<_>>()
            ))
        }
        Request::UserPasswd {
            username,
            password: pw,
        } => {
            let hash = password::hash(&pw)?;
            update(store, key, actor, &username, now_ms, |u| {
                u.password_hash = hash
            })?;
            Ok(json!({"username": username, "password_changed": true}))
        }
        Request::UserDisable { username } => {
            update(store, key, actor, &username, now_ms, |u| u.disabled = true)?;
            Ok(json!({"username": username, "disabled": true}))
        }
        Request::UserDelete { username } => {
            let u = find(store, &username)?;
            let ev = event(EventType::UserDeleted, actor, format!("user:{username}"));
            store.delete_user(u.id, |_| Ok(()), Some(Pending::new(key, ev, now_ms)))?;
            Ok(json!({"username": username, "deleted": true}))
        }
        Request::UserUnlock { username } => {
            let Some(t) = throttle else {
                return Ok(json!({"username": username, "unlocked": false,
                    "note": "no daemon runs: login throttling lives in the daemon's memory"}));
            };
            let had = t.unlock(&username);
            if had {
                let ev = event(EventType::UserUpdated, actor, format!("user:{username}"));
                let mut ev = ev;
                ev.details = json!({"action": "login throttle cleared"});
                store.audit_append(key, ev, now_ms)?;
            }
            Ok(json!({"username": username, "unlocked": had}))
        }
        Request::SetupCode => {
            let code = match live {
                Some((_, setup, _)) => setup.current()?,
                None if store.no_users()? => {
                    let dir = store.path().parent().unwrap_or(Path::new("."));
                    Some(crate::auth::setup::load_or_create(dir)?)
                }
                None => None,
            };
            Ok(json!({"required": code.is_some(), "setup_code": code}))
        }
        Request::AuditVerify => Ok(serde_json::to_value(store.audit_verify(key)?)?),
        Request::PushStatus => match live {
            Some((_, _, push)) => Ok(json!(push.status(now_ms)?)),
            None => Err(AdminError::NeedsDaemon("push status")),
        },
        Request::PushBackfill {
            name,
            since_ms,
            force,
        } => match live {
            Some((_, _, push)) => Ok(push.request_backfill(store, &name, since_ms, force)?),
            None => Err(AdminError::NeedsDaemon("push backfill")),
        },
        Request::Backup { out } => {
            let m = crate::backup::create(store, &out, now_ms)?;
            let mut ev = event(EventType::BackupCreated, actor, "backup".into());
            ev.details = json!({"files": m.files});
            store.audit_append(key, ev, now_ms)?;
            Ok(serde_json::to_value(m)?)
        }
    }
}

/// Serves the admin socket until `cancel` fires. `writer` commits pending readings durably
/// before a backup, so that it holds them.
pub async fn serve(
    data_dir: &Path,
    store: Store,
    key: SecretKey,
    live: Live,
    clock: crate::clock::SharedClock,
    writer: crate::store::writer::WeakWriter,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let own_uid = std::fs::metadata(&path)?.uid();
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => r?,
        };
        let peer = stream.peer_cred().map(|c| c.uid()).ok();
        if !matches!(peer, Some(uid) if uid == 0 || uid == own_uid) {
            tracing::warn!(?peer, "admin socket: connection from another user refused");
            continue;
        }
        let (store, key, clock, writer, live) = (
            store.clone(),
            key.clone(),
            clock.clone(),
            writer.clone(),
            live.clone(),
        );
        tokio::spawn(async move {
            let actor = format!("cli (uid {})", peer.unwrap_or(0));
            let _ = answer(
                stream,
                Ctx {
                    store,
                    key,
                    clock,
                    writer,
                    live,
                },
                actor,
            )
            .await;
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// What one connection's request runs with.
struct Ctx {
    store: Store,
    key: SecretKey,
    clock: crate::clock::SharedClock,
    writer: crate::store::writer::WeakWriter,
    live: Live,
}

async fn answer(stream: UnixStream, ctx: Ctx, actor: String) -> std::io::Result<()> {
    let Ctx {
        store,
        key,
        clock,
        writer,
        live,
    } = ctx;
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Backup { .. }) if writer.flush().await.is_err() => Err(AdminError::NotFlushed),
        Ok(req) => {
            let now = clock.now_ms();
            tokio::task::spawn_blocking(move || {
                execute(&store, &key, Some(&live), req, &actor, now)
            })
            .await
            .unwrap_or_else(|e| Err(AdminError::Task(e.to_string())))
        }
        Err(e) => Err(AdminError::BadRequest(e)),
    };
    let body = match reply {
        Ok(v) => json!({"ok": true, "result": v}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    w.write_all(format!("{body}\n").as_bytes()).await?;
    w.shutdown().await
}

/// Sends a request to the running daemon.
pub async fn call(data_dir: &Path, req: &Request) -> Result<Value, AdminError> {
    let path = socket_path(data_dir);
    let stream = UnixStream::connect(&path)
        .await
        .map_err(|source| AdminError::Unreachable {
            path: path.display().to_string(),
            source,
        })?;
    let (r, mut w) = stream.into_split();
    let body = serde_json::to_string(req)?;
    w.write_all(format!("{body}\n").as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let v: Value = serde_json::from_str(&line).map_err(|_| AdminError::Refused)?;
    if v["ok"] == true {
        Ok(v["result"].clone())
    } else {
        Err(AdminError::Daemon(
            v["error"].as_str().unwrap_or("failed").to_owned(),
        ))
    }
}
