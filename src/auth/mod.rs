//! Identity: roles and permissions, password hashing, signed tokens, secret keys and login
//! throttling. No routing here: the API turns these into extractors and middleware.

pub mod gate;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod rate;
pub mod setup;
pub mod signing;
pub mod throttle;
pub mod ticket;

use serde::{Deserialize, Serialize};

/// Everything a route can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    /// Create, download and manage exports.
    DataExport,
    /// See devices and readings.
    DeviceRead,
    /// Switch relays.
    DeviceControl,
    /// Read and verify the audit log.
    AuditRead,
    /// Manage users.
    UserManage,
    /// Change system configuration.
    SystemConfig,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 6] = [
        Permission::DataExport,
        Permission::DeviceRead,
        Permission::DeviceControl,
        Permission::AuditRead,
        Permission::UserManage,
        Permission::SystemConfig,
    ];

    /// The name used in the API (`DATA_EXPORT`, …).
    pub fn name(self) -> &'static str {
        match self {
            Permission::DataExport => "DATA_EXPORT",
            Permission::DeviceRead => "DEVICE_READ",
            Permission::DeviceControl => "DEVICE_CONTROL",
            Permission::AuditRead => "AUDIT_READ",
            Permission::UserManage => "USER_MANAGE",
            Permission::SystemConfig => "SYSTEM_CONFIG",
        }
    }

    /// Parses a name in any case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }
}

/// A user's role; it grants a fixed set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Devices (read and control) and exports.
    Operator,
    /// Read devices.
    Viewer,
}

impl Role {
    /// Permissions the role grants.
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Role::Admin => &Permission::ALL,
            Role::Operator => &[
                Permission::DeviceRead,
                Permission::DeviceControl,
                Permission::DataExport,
            ],
            Role::Viewer => &[Permission::DeviceRead],
        }
    }

    /// Parses `admin`, `operator` or `viewer` in any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Whether `s` is a valid new username: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

/// Who holds what: the part of a user account the privilege rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder<'a> {
    /// User id.
    pub id: u32,
    /// Role.
    pub role: Role,
    /// Extra permissions.
    pub extra: &'a [Permission],
}

impl Holder<'_> {
    /// Whether `p` is held (by the role or a grant).
    pub fn has(&self, p: Permission) -> bool {
        self.role.permissions().contains(&p) || self.extra.contains(&p)
    }
}

/// The privilege rules of user management (through the API; root on the admin socket is
/// exempt): nobody grants a role or permission they do not hold themselves, only admins
/// change or delete admins, and nobody changes their own role or permissions. `before` is
/// `None` for a new user, `after` `None` for a deletion. The reason when refused.
pub fn check_change(
    actor: Holder<'_>,
    before: Option<Holder<'_>>,
    after: Option<Holder<'_>>,
) -> Result<(), Refused> {
    let is_admin = actor.role == Role::Admin;
    if let Some(b) = before {
        if b.role == Role::Admin && !is_admin {
            return Err(Refused::AdminsOnly);
        }
        if let Some(a) = after
            && b.id == actor.id
            && (a.role != b.role || !same_set(a.extra, b.extra))
        {
            return Err(Refused::OwnRights);
        }
    }
    let Some(a) = after else { return Ok(()) };
    if a.role == Role::Admin && before.is_none_or(|b| b.role != Role::Admin) && !is_admin {
        return Err(Refused::MakeAdmin);
    }
    for p in Permission::ALL {
        if a.has(p) && !before.is_some_and(|b| b.has(p)) && !actor.has(p) {
            return Err(Refused::NotHeld {
                permission: p.name(),
                role: a.role,
            });
        }
    }
    Ok(())
}

/// Why [`check_change`] refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A non-admin touched an admin.
    #[error("only an admin may change or delete an admin")]
    AdminsOnly,
    /// Someone changed their own role or permissions.
    #[error("you cannot change your own role or permissions")]
    OwnRights,
    /// A non-admin made someone admin.
    #[error("only an admin may make a user admin")]
    MakeAdmin,
    /// Someone granted what they do not hold.
    #[error(
        "you cannot grant {permission} (role {role:?} or a permission) without holding it yourself"
    )]
    NotHeld {
        /// The permission granted.
        permission: &'static str,
        /// The role of the user after the change.
        role: Role,
    },
}

fn same_set(a: &[Permission], b: &[Permission]) -> bool {
    a.iter().all(|p| b.contains(p)) && b.iter().all(|p| a.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_their_permissions() {
        assert_eq!(Role::Admin.permissions().len(), 6);
        assert!(
            Role::Operator
                .permissions()
                .contains(&Permission::DataExport)
        );
        assert!(
            !Role::Operator
                .permissions()
                .contains(&Permission::UserManage)
        );
        assert_eq!(Role::Viewer.permissions(), &[Permission::DeviceRead]);
        assert_eq!(Role::parse("OPERATOR"), Some(Role::Operator));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(
            Permission::parse("data_export"),
            Some(Permission::DataExport)
        );
        assert_eq!(Permission::parse("EVERYTHING"), None);
    }

    #[test]
    fn privilege_rules() {
        let um = [Permission::UserManage];
        let viewer_um = Holder {
            id: 7,
            role: Role::Viewer,
            extra: &um,
        };
        let admin = Holder {
            id: 1,
            role: Role::Admin,
            extra: &[],
        };
        let as_admin = Holder {
            role: Role::Admin,
            ..viewer_um
        };
        // Self-promotion and any change of one's own role or permissions.
        assert!(check_change(viewer_um, Some(viewer_um), Some(as_admin)).is_err());
        let all = Permission::ALL;
        let more = Holder {
            extra: &all,
            ..viewer_um
        };
        assert!(check_change(viewer_um, Some(viewer_um), Some(more)).is_err());
        assert!(
            check_change(
                admin,
                Some(admin),
                Some(Holder {
                    role: Role::Viewer,
                    ..admin
                })
            )
            .is_err()
        );
        // Admins are changed and deleted by admins only.
        assert!(check_change(viewer_um, Some(admin), Some(admin)).is_err());
        assert!(check_change(viewer_um, Some(admin), None).is_err());
        assert!(check_change(admin, Some(viewer_um), None).is_ok());
        // Grants only of what one holds.
        let new_viewer = Holder {
            id: 9,
            role: Role::Viewer,
            extra: &[],
        };
        assert!(check_change(viewer_um, None, Some(new_viewer)).is_ok());
        let op = Holder {
            role: Role::Operator,
            ..new_viewer
        };
        assert!(check_change(viewer_um, None, Some(op)).is_err());
        assert!(check_change(viewer_um, Some(new_viewer), Some(op)).is_err());
        let um_grant = Holder {
            extra: &um,
            ..new_viewer
        };
        assert!(check_change(viewer_um, Some(new_viewer), Some(um_grant)).is_ok());
        assert!(
            check_change(
                admin,
                None,
                Some(Holder {
                    role: Role::Admin,
                    ..new_viewer
                })
            )
            .is_ok()
        );
        // Taking a permission away grants nothing.
        assert!(check_change(viewer_um, Some(op), Some(new_viewer)).is_ok());
    }
}
