//! Download tickets: a link that works without a header (`?ticket=`), bound to one resource
//! (an export id), one user and their token version (a password change or disabling voids
//! it), an expiry, and, when issued in a session, that session (logout voids it):
//! `<user id>.<expiry s>.<mac>` or `<user id>.<session hex>.<expiry s>.<mac>`, the MAC an
//! HMAC-SHA256 with the token-signing key.

use super::keys::SecretKey;

/// Lifetime of a ticket in a page link.
pub const TTL_S: i64 = 15 * 60;

/// Who a ticket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// User id.
    pub user_id: u32,
    /// Their token version.
    pub token_version: u32,
    /// The session it was issued in (0: none, e.g. an e-mailed link).
    pub session: u64,
}

fn mac(key: &SecretKey, resource: &str, h: Holder, exp_s: i64) -> String {
    use hmac::{KeyInit, Mac};
    let mut m =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("any key length");
    let (id, ver) = (h.user_id, h.token_version);
    m.update(format!("download-ticket\0{resource}\0{id}\0{ver}\0{exp_s}").as_bytes());
    if h.session != 0 {
        m.update(format!("\0{}", h.session).as_bytes());
    }
    let tag = m.finalize().into_bytes();
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..20])
}

/// A ticket for `resource` valid `ttl_s` seconds from `now_ms`, and its expiry (UTC ms).
pub fn issue(key: &SecretKey, resource: &str, h: Holder, now_ms: i64, ttl_s: i64) -> (String, i64) {
    let exp_s = now_ms / 1000 + ttl_s;
    let m = mac(key, resource, h, exp_s);
    let t = match h.session {
        0 => format!("{}.{exp_s}.{m}", h.user_id),
        s => format!("{}.{s:x}.{exp_s}.{m}", h.user_id),
    };
    (t, exp_s * 1000)
}

/// What a ticket claims, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// User id.
    pub user_id: u32,
    /// Session (0: none).
    pub session: u64,
    /// Expiry, Unix seconds.
    pub exp_s: i64,
    mac: String,
}

/// Reads a ticket's parts; `None` when it is not one.
pub fn parse(ticket: &str) -> Option<Claimed> {
    let parts: Vec<&str> = ticket.split('.').collect();
    let (uid, session, exp, mac) = match parts[..] {
        [uid, exp, mac] => (uid, "0", exp, mac),
        [uid, s, exp, mac] => (uid, s, exp, mac),
        _ => return None,
    };
    Some(Claimed {
        user_id: uid.parse().ok()?,
        session: u64::from_str_radix(session, 16).ok()?,
        exp_s: exp.parse().ok()?,
        mac: mac.to_owned(),
    })
}

impl Claimed {
    /// Whether the ticket is valid for `resource` and the user's `token_version` at `now_ms`
    /// (the MAC compared in constant time).
    pub fn valid(&self, key: &SecretKey, resource: &str, token_version: u32, now_ms: i64) -> bool {
        let h = Holder {
            user_id: self.user_id,
            token_version,
            session: self.session,
        };
        let want = mac(key, resource, h, self.exp_s);
        now_ms / 1000 < self.exp_s
            && want.len() == self.mac.len()
            && want
                .bytes()
                .zip(self.mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_bound_to_resource_user_version_session_and_time() {
        let k = SecretKey::from_bytes([7; 32]);
        let h = Holder {
            user_id: 3,
            token_version: 1,
            session: 0xabc,
        };
        let (t, exp) = issue(&k, "exp_1", h, 1_000_000, TTL_S);
        assert_eq!(exp, (1_000 + TTL_S) * 1000);
        let c = parse(&t).unwrap();
        assert_eq!((c.user_id, c.session), (3, 0xabc));
        assert!(c.valid(&k, "exp_1", 1, 1_000_000));
        assert!(!c.valid(&k, "exp_2", 1, 1_000_000), "another export");
        assert!(
            !c.valid(&k, "exp_1", 2, 1_000_000),
            "after a password change"
        );
        assert!(!c.valid(&k, "exp_1", 1, exp), "expired");
        assert!(!c.valid(&SecretKey::from_bytes([8; 32]), "exp_1", 1, 1_000_000));
        let (plain, _) = issue(&k, "exp_1", Holder { session: 0, ..h }, 0, 60);
        assert_eq!(
            plain.split('.').count(),
            3,
            "no session: the old three-part form"
        );
        assert!(parse("1.2").is_none() && parse("x.2.3").is_none());
    }
}
