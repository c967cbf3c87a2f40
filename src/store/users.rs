//! Users, refresh tokens and revoked access tokens.

use super::schema::{REFRESH, REVOKED, USERNAMES, USERS};
use super::{Error, Result, Store};
use crate::auth::{Permission, Role};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
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

fn drop_refresh_tokens(txn: &WriteTransaction, user_id: u32) -> Result<()> {
    let mut t = txn.open_table(REFRESH)?;
    t.retain(|_, v| {
        serde_json::from_slice::<(u32, i64)>(v).map_or(true, |(uid, _)| uid != user_id)
    })?;
    Ok(())
}

impl Store {
    /// Creates a user; fails with [`Error::Conflict`] when the name is taken.
    pub fn create_user(
        &self,
        mut u: User,
        audit: Option<super::audit::Pending<'_>>,
    ) -> Result<User> {
        let txn = self.begin_write()?;
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

    /// Changes a user with `f`; bumps the token version (and drops refresh tokens) when the
    /// password changed or the user was disabled.
    pub fn update_user(
        &self,
        id: u32,
        now_ms: i64,
        f: impl FnOnce(&mut User),
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
        f(&mut u);
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

    /// Deletes a user and their refresh tokens.
    pub fn delete_user(&self, id: u32, audit: Option<super::audit::Pending<'_>>) -> Result<User> {
        let txn = self.begin_write()?;
        let u = {
            let mut t = txn.open_table(USERS)?;
            let u = decode(
                t.remove(id)?
                    .ok_or_else(|| Error::NotFound(format!("user {id}")))?
                    .value(),
            )?;
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

    /// Stores a refresh token (by its hash) for a user until `expires_ms`.
    pub fn put_refresh(&self, token_hash: &str, user_id: u32, expires_ms: i64) -> Result<()> {
        let txn = self.begin_write()?;
        let v = serde_json::to_vec(&(user_id, expires_ms))
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        txn.open_table(REFRESH)?.insert(token_hash, v.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Removes a refresh token and returns its user and expiry (rotation and logout).
    pub fn take_refresh(&self, token_hash: &str) -> Result<Option<(u32, i64)>> {
        let txn = self.begin_write()?;
        let got = txn
            .open_table(REFRESH)?
            .remove(token_hash)?
            .map(|v| {
                serde_json::from_slice::<(u32, i64)>(v.value())
                    .map_err(|e| Error::Corrupt(e.to_string()))
            })
            .transpose()?;
        txn.commit()?;
        Ok(got)
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
