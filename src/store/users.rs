//! Users, refresh tokens and revoked access tokens.

use super::schema::{REFRESH, REVOKED, SESSIONS, USERNAMES, USERS};
use super::{Error, Result, Store};
use crate::auth::{Permission, Role};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};

/// A user account.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub id: u32,
    /// Login name (unique, case-insensitive).
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// Extra permissions on top of the role.
    pub permissions: Vec<Permission>,
    /// Disabled users cannot log in and their tokens stop working.
    pub disabled: bool,
    /// Created, UTC ms.
    pub created_ms: i64,
    /// Last changed, UTC ms.
    pub updated_ms: i64,
    /// Bumped on password change or disable: older access tokens stop working.
    pub token_version: u32,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Role permissions plus extra grants, sorted and unique.
    pub fn effective_permissions(&self) -> Vec<Permission> {
        let mut p: Vec<Permission> = self.role.permissions().to_vec();
        p.extend(&self.permissions);
        p.sort();
        p.dedup();
        p
    }

    /// Whether the user holds `p`.
    pub fn has(&self, p: Permission) -> bool {
        self.role.permissions().contains(&p) || self.permissions.contains(&p)
    }
}

fn key(username: &str) -> String {
    username.to_lowercase()
}

fn decode(b: &[u8]) -> Result<User> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

/// An enabled admin: someone who can still manage users.
fn active_admin(u: &User) -> bool {
    u.role == Role::Admin && !u.disabled
}

/// Refuses a change that took away `before`'s admin rights when no other enabled admin is left:
/// nobody could manage users any more.
fn keep_an_admin(txn: &WriteTransaction, before: &User, after: Option<&User>) -> Result<()> {
    if !active_admin(before) || after.is_some_and(active_admin) {
        return Ok(());
    }
    for e in txn.open_table(USERS)?.iter()? {
        let (_, v) = e?;
        let u = decode(v.value())?;
        if u.id != before.id && active_admin(&u) {
            return Ok(());
        }
    }
    Err(Error::Conflict(format!(
        "{} is the last enabled admin: make another user admin first",
        before.username
    )))
}

fn put(txn: &WriteTransaction, u: &User) -> Result<()> {
    let json = serde_json::to_vec(u).map_err(|e| Error::Corrupt(e.to_string()))?;
    txn.open_table(USERS)?.insert(u.id, json.as_slice())?;
    Ok(())
}

/// A stored refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRow {
    /// Whose.
    pub user_id: u32,
    /// Expiry, UTC ms.
    pub expires_ms: i64,
    /// The session (login) it belongs to; 0 for tokens stored before sessions existed.
    #[serde(default)]
    pub family: u64,
    /// When it was traded for a new one; a used token presented again revokes its family.
    #[serde(default)]
    pub used_ms: Option<i64>,
}

/// How long a used refresh token is kept to recognise a replay, ms.
pub const REUSE_WINDOW_MS: i64 = 86_400_000;

fn decode_refresh(b: &[u8]) -> Result<RefreshRow> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Row(RefreshRow),
        Old(u32, i64),
    }
    match serde_json::from_slice(b).map_err(|e| Error::Corrupt(format!("refresh token: {e}")))? {
        Stored::Row(r) => Ok(r),
        Stored::Old(user_id, expires_ms) => Ok(RefreshRow {
            user_id,
            expires_ms,
            family: 0,
            used_ms: None,
        }),
    }
}

fn put_refresh_row(txn: &WriteTransaction, hash: &str, r: &RefreshRow) -> Result<()> {
    let v = serde_json::to_vec(r).map_err(|e| Error::Corrupt(e.to_string()))?;
    txn.open_table(REFRESH)?.insert(hash, v.as_slice())?;
    Ok(())
}

fn put_session(txn: &WriteTransaction, family: u64, user_id: u32, expires_ms: i64) -> Result<()> {
    let v =
        serde_json::to_vec(&(user_id, expires_ms)).map_err(|e| Error::Corrupt(e.to_string()))?;
    txn.open_table(SESSIONS)?.insert(family, v.as_slice())?;
    Ok(())
}

/// Removes a session and every refresh token of it.
fn end_session(txn: &WriteTransaction, family: u64) -> Result<()> {
    if family == 0 {
        return Ok(());
    }
    txn.open_table(SESSIONS)?.remove(family)?;
    txn.open_table(REFRESH)?
        .retain(|_, v| decode_refresh(v).map_or(true, |r| r.family != family))?;
    Ok(())
}

fn drop_refresh_tokens(txn: &WriteTransaction, user_id: u32) -> Result<()> {
    txn.open_table(REFRESH)?
        .retain(|_, v| decode_refresh(v).map_or(true, |r| r.user_id != user_id))?;
    txn.open_table(SESSIONS)?.retain(|_, v| {
        serde_json::from_slice::<(u32, i64)>(v).map_or(true, |(uid, _)| uid != user_id)
    })?;
    Ok(())
}

/// What trading a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Traded: the old token is spent, the new one stored in the same session.
    Rotated {
        /// Whose.
        user_id: u32,
        /// The session.
        family: u64,
    },
    /// The token had been traded before: a copy is in someone else's hands. Its whole
    /// session was revoked.
    Reused {
        /// Whose.
        user_id: u32,
        /// The revoked session.
        family: u64,
    },
    /// Unknown or expired.
    Invalid,
}

/// What the auth purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Refresh tokens (expired, or used longer ago than [`REUSE_WINDOW_MS`]).
    pub refresh: usize,
    /// Sessions past their expiry.
    pub sessions: usize,
    /// Revoked access-token ids past their expiry.
    pub revoked: usize,
}

impl Store {
    /// Creates a user; fails with [`Error::Conflict`] when the name is taken.
    pub fn create_user(&self, u: User, audit: Option<super::audit::Pending<'_>>) -> Result<User> {
        self.create_user_if(u, audit, |_| Ok(true))
    }

    /// Creates the first user; fails with [`Error::Conflict`] when any user exists (two
    /// setups at once: one wins).
    pub fn create_first_user(
        &self,
        u: User,
        audit: Option<super::audit::Pending<'_>>,
    ) -> Result<User> {
        {
            let txn = self.db().begin_read()?;
            if !txn.open_table(USERS)?.is_empty()? {
                return Err(Error::Conflict("kasad is set up already: log in".into()));
            }
        }
        // The write transactions are serial: check again inside one.
        self.create_user_if(u, audit, |txn| Ok(txn.open_table(USERS)?.is_empty()?))
    }

    fn create_user_if(
        &self,
        mut u: User,
        audit: Option<super::audit::Pending<'_>>,
        ok: impl FnOnce(&WriteTransaction) -> Result<bool>,
    ) -> Result<User> {
        let txn = self.begin_write()?;
        if !ok(&txn)? {
            return Err(Error::Conflict("kasad is set up already: log in".into()));
        }
        {
            let mut names = txn.open_table(USERNAMES)?;
            if names.get(key(&u.username).as_str())?.is_some() {
                return Err(Error::Conflict(format!(
                    "user {:?} already exists",
                    u.username
                )));
            }
            let mut meta = txn.open_table(super::schema::META)?;
            let id = meta.get("next_user_id")?.map_or(1, |v| v.value());
            meta.insert("next_user_id", id + 1)?;
            u.id = u32::try_from(id).map_err(|_| Error::Corrupt("user ids exhausted".into()))?;
            names.insert(key(&u.username).as_str(), u.id)?;
        }
        put(&txn, &u)?;
        if let Some(a) = audit {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(u)
    }

    /// Whether no user exists.
    pub fn no_users(&self) -> Result<bool> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(USERS)?.is_empty()?)
    }

    /// A user by id.
    pub fn user(&self, id: u32) -> Result<Option<User>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(USERS)?;
        t.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// A user by name (case-insensitive).
    pub fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        let txn = self.db().begin_read()?;
        let names = txn.open_table(USERNAMES)?;
        let Some(id) = names.get(key(username).as_str())?.map(|v| v.value()) else {
            return Ok(None);
        };
        let t = txn.open_table(USERS)?;
        t.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// Every user, by id.
    pub fn users(&self) -> Result<Vec<User>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(USERS)?;
        let mut out = Vec::new();
        for e in t.range::<u32>(..)? {
            out.push(decode(e?.1.value())?);
        }
        Ok(out)
    }

    /// Changes a user with `f`, which sees the stored record and may refuse (nothing is
    /// written then); bumps the token version (and drops refresh tokens and sessions) when the
    /// password changed or the user was disabled.
    pub fn update_user(
        &self,
        id: u32,
        now_ms: i64,
        f: impl FnOnce(&mut User) -> Result<()>,
        audit: Option<super::audit::Pending<'_>>,
    ) -> Result<User> {
        let txn = self.begin_write()?;
        let old = {
            let t = txn.open_table(USERS)?;
            let v = t
                .get(id)?
                .ok_or_else(|| Error::NotFound(format!("user {id}")))?;
            decode(v.value())?
        };
        let mut u = old.clone();
        f(&mut u)?;
        u.id = old.id;
        u.username = old.username.clone();
        u.updated_ms = now_ms;
        keep_an_admin(&txn, &old, Some(&u))?;
        if u.password_hash != old.password_hash || (u.disabled && !old.disabled) {
            u.token_version = old.token_version + 1;
            drop_refresh_tokens(&txn, id)?;
        }
        put(&txn, &u)?;
        if let Some(a) = audit {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(u)
    }

    /// Deletes a user and their refresh tokens, unless `check` (shown the user) refuses.
    pub fn delete_user(
        &self,
        id: u32,
        check: impl FnOnce(&User) -> Result<()>,
        audit: Option<super::audit::Pending<'_>>,
    ) -> Result<User> {
        let txn = self.begin_write()?;
        let u = {
            let mut t = txn.open_table(USERS)?;
            let u = decode(
                t.remove(id)?
                    .ok_or_else(|| Error::NotFound(format!("user {id}")))?
                    .value(),
            )?;
            check(&u)?;
            txn.open_table(USERNAMES)?
                .remove(key(&u.username).as_str())?;
            u
        };
        keep_an_admin(&txn, &u, None)?;
        drop_refresh_tokens(&txn, id)?;
        if let Some(a) = audit {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(u)
    }

    /// Starts a session for `user_id` with its first refresh token (by hash); returns the
    /// session (family) id.
    pub fn session_start(&self, token_hash: &str, user_id: u32, expires_ms: i64) -> Result<u64> {
        let family = u64::from_le_bytes(crate::random::random_bytes::<8>()) | 1;
        let txn = self.begin_write()?;
        put_session(&txn, family, user_id, expires_ms)?;
        put_refresh_row(
            &txn,
            token_hash,
            &RefreshRow {
                user_id,
                expires_ms,
                family,
                used_ms: None,
            },
        )?;
        txn.commit()?;
        Ok(family)
    }

    /// A refresh token by hash, read only (a random token costs no write).
    pub fn refresh_lookup(&self, token_hash: &str) -> Result<Option<RefreshRow>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(REFRESH)?;
        t.get(token_hash)?
            .map(|v| decode_refresh(v.value()))
            .transpose()
    }

    /// Trades refresh token `old` for `new` (expiring `expires_ms`) at `now_ms`, checking
    /// again inside the write transaction: of two parallel trades of one token, one rotates
    /// and the other is a reuse. A reuse revokes the session.
    pub fn refresh_rotate(
        &self,
        old: &str,
        new: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Rotation> {
        let txn = self.begin_write()?;
        let row = {
            let t = txn.open_table(REFRESH)?;
            t.get(old)?.map(|v| decode_refresh(v.value())).transpose()?
        };
        let outcome = match row {
            None => Rotation::Invalid,
            Some(r) if r.used_ms.is_some() => {
                end_session(&txn, r.family)?;
                txn.open_table(REFRESH)?.remove(old)?;
                Rotation::Reused {
                    user_id: r.user_id,
                    family: r.family,
                }
            }
            Some(r) if r.expires_ms <= now_ms => {
                txn.open_table(REFRESH)?.remove(old)?;
                Rotation::Invalid
            }
            Some(r) => {
                let family = match r.family {
                    0 => u64::from_le_bytes(crate::random::random_bytes::<8>()) | 1,
                    f => f,
                };
                put_refresh_row(
                    &txn,
                    old,
                    &RefreshRow {
                        used_ms: Some(now_ms),
                        family,
                        ..r
                    },
                )?;
                put_refresh_row(
                    &txn,
                    new,
                    &RefreshRow {
                        user_id: r.user_id,
                        expires_ms,
                        family,
                        used_ms: None,
                    },
                )?;
                put_session(&txn, family, r.user_id, expires_ms)?;
                Rotation::Rotated {
                    user_id: r.user_id,
                    family,
                }
            }
        };
        txn.commit()?;
        Ok(outcome)
    }

    /// Ends session `family` (logout): its refresh tokens and download tickets stop working.
    pub fn session_end(&self, family: u64) -> Result<()> {
        let txn = self.begin_write()?;
        end_session(&txn, family)?;
        txn.commit()?;
        Ok(())
    }

    /// Removes one refresh token (logout of a session from before sessions existed).
    pub fn refresh_remove(&self, token_hash: &str) -> Result<()> {
        let txn = self.begin_write()?;
        txn.open_table(REFRESH)?.remove(token_hash)?;
        txn.commit()?;
        Ok(())
    }

    /// Whether session `family` is still open at `now_ms` (0, no session, always is).
    pub fn session_open(&self, family: u64, now_ms: i64) -> Result<bool> {
        if family == 0 {
            return Ok(true);
        }
        let txn = self.db().begin_read()?;
        let t = txn.open_table(SESSIONS)?;
        Ok(match t.get(family)? {
            Some(v) => {
                serde_json::from_slice::<(u32, i64)>(v.value()).is_ok_and(|(_, exp)| exp > now_ms)
            }
            None => false,
        })
    }

    /// The daily purge: expired refresh tokens and sessions, used tokens past the reuse
    /// window, revoked access-token ids past their expiry.
    pub fn purge_auth(&self, now_ms: i64) -> Result<Purged> {
        let txn = self.begin_write()?;
        let mut p = Purged::default();
        {
            let mut t = txn.open_table(REFRESH)?;
            let before = t.len()?;
            t.retain(|_, v| {
                decode_refresh(v).map_or(true, |r| {
                    r.expires_ms > now_ms && r.used_ms.is_none_or(|u| now_ms - u < REUSE_WINDOW_MS)
                })
            })?;
            p.refresh = usize::try_from(before - t.len()?).unwrap_or(0);
            let mut s = txn.open_table(SESSIONS)?;
            let before = s.len()?;
            s.retain(|_, v| {
                serde_json::from_slice::<(u32, i64)>(v).map_or(true, |(_, exp)| exp > now_ms)
            })?;
            p.sessions = usize::try_from(before - s.len()?).unwrap_or(0);
            let mut r = txn.open_table(REVOKED)?;
            let before = r.len()?;
            r.retain(|_, exp| exp > now_ms)?;
            p.revoked = usize::try_from(before - r.len()?).unwrap_or(0);
        }
        txn.commit()?;
        Ok(p)
    }

    /// Revokes an access token id until its expiry; forgets revocations that have expired.
    pub fn revoke_access(&self, jti: &str, exp_ms: i64, now_ms: i64) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut t = txn.open_table(REVOKED)?;
            t.retain(|_, exp| exp > now_ms)?;
            t.insert(jti, exp_ms)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether an access token id was revoked.
    pub fn is_revoked(&self, jti: &str) -> Result<bool> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(REVOKED)?.get(jti)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("k.redb"), 8).unwrap();
        (dir, s)
    }

    #[test]
    fn sessions_rotate_detect_reuse_and_are_purged() {
        let (_d, s) = store();
        let fam = s.session_start("t1", 7, 1_000).unwrap();
        assert!(s.session_open(fam, 0).unwrap());
        assert_eq!(
            s.refresh_rotate("t1", "t2", 10, 2_000).unwrap(),
            Rotation::Rotated {
                user_id: 7,
                family: fam
            }
        );
        assert_eq!(s.refresh_lookup("t1").unwrap().unwrap().used_ms, Some(10));
        // t1 again: a copy is in use elsewhere; the session goes, t2 with it.
        assert_eq!(
            s.refresh_rotate("t1", "t3", 20, 2_000).unwrap(),
            Rotation::Reused {
                user_id: 7,
                family: fam
            }
        );
        assert!(!s.session_open(fam, 20).unwrap());
        assert_eq!(s.refresh_lookup("t2").unwrap(), None);
        assert_eq!(
            s.refresh_rotate("nope", "t4", 20, 2_000).unwrap(),
            Rotation::Invalid
        );
        // The purge: expired tokens and sessions, used tokens past the reuse window.
        let f2 = s.session_start("a", 8, 100).unwrap();
        s.session_start("b", 8, 10 * REUSE_WINDOW_MS).unwrap();
        s.refresh_rotate("b", "c", 200, 10 * REUSE_WINDOW_MS)
            .unwrap();
        s.revoke_access("jti", 150, 0).unwrap();
        let p = s.purge_auth(200 + REUSE_WINDOW_MS).unwrap();
        assert_eq!((p.refresh, p.sessions, p.revoked), (2, 1, 1), "{p:?}");
        assert!(!s.session_open(f2, 300).unwrap());
        assert!(s.refresh_lookup("c").unwrap().is_some());
    }

    #[test]
    fn tokens_stored_before_sessions_still_trade() {
        let (_d, s) = store();
        let txn = s.begin_write().unwrap();
        txn.open_table(REFRESH)
            .unwrap()
            .insert(
                "old",
                serde_json::to_vec(&(3u32, 5_000i64)).unwrap().as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
        match s.refresh_rotate("old", "new", 1, 9_000).unwrap() {
            Rotation::Rotated { user_id: 3, family } => {
                assert_ne!(family, 0);
                assert!(s.session_open(family, 2).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
}
