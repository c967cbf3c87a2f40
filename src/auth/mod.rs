//! Identity: roles and permissions, password hashing, signed tokens, secret keys and login
//! throttling. No routing here: the API turns these into extractors and middleware.

pub mod jwt;
pub mod keys;
pub mod password;
pub mod throttle;

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

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random number generator is available");
    b
}

/// A random URL-safe token of `N` bytes of entropy.
pub fn random_token<const N: usize>() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<N>())
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
    fn tokens_are_random() {
        assert_ne!(random_token::<32>(), random_token::<32>());
        assert_eq!(random_token::<32>().len(), 43);
    }
}
