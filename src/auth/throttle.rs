//! Login throttling, atomic under parallel requests and fair to the owner.
//!
//! Every attempt takes a [`Reservation`] *before* its password is checked, so attempts sent
//! at once are counted as they arrive, not after their Argon2 checks: N parallel attempts
//! never check more than the allowance. A reservation ends as a success, a failure, or (when
//! dropped unresolved, e.g. an internal error) as nothing.
//!
//! - **Per address**: [`Limits::allowance`] checked failures (or refused bad inputs) per
//!   [`Limits::window_ms`]; then every attempt from that address is refused until the oldest
//!   of them leaves the window.
//! - **Per username, across addresses**: the same allowance; past it, a delay starting at
//!   [`Limits::delay_start_ms`] after the last checked failure, doubled by each further checked
//!   failure and capped at [`Limits::delay_cap_ms`]. During the delay every attempt is refused
//!   at once, and refused attempts neither count nor extend it, so a stranger's failures keep
//!   the owner waiting at most the cap, never the whole window.
//!
//! Keys are stored hashed with a per-process salt (a 60 KB username costs 16 bytes), and each
//! map holds at most [`Limits::max_keys`] entries (the least recently touched goes first).
//! Refusals are audited once per key and window: the first refusal asks for an entry, later
//! ones are counted and [`Throttle::drain_summaries`] hands their count over when the window
//! ends. Times come from the injected clock.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The rules (defaults: 5 per 15 minutes, 2 s doubling to 30 s, 10,000 keys per map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Checked failures per key within the window before refusals start.
    pub allowance: usize,
    /// The window, ms.
    pub window_ms: i64,
    /// First delay of a username past its allowance, ms.
    pub delay_start_ms: i64,
    /// Longest delay of a username, ms.
    pub delay_cap_ms: i64,
    /// Most keys kept per map (addresses, usernames, audit notes).
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            allowance: 5,
            window_ms: 15 * 60 * 1000,
            delay_start_ms: 2_000,
            delay_cap_ms: 30_000,
            max_keys: 10_000,
        }
    }
}

type Key = [u8; 16];

/// One key's recent history.
#[derive(Debug, Default)]
struct Entry {
    /// Times of checked failures in the window, oldest first (at most the allowance + 8).
    failures: VecDeque<i64>,
    /// Attempts holding a reservation now.
    inflight: u32,
    /// Last time anything happened to this key.
    touched: i64,
}

impl Entry {
    fn prune(&mut self, now: i64, window: i64) {
        while self.failures.front().is_some_and(|t| now - t >= window) {
            self.failures.pop_front();
        }
    }

    fn idle(&self, now: i64, window: i64) -> bool {
        self.inflight == 0 && self.failures.back().is_none_or(|t| now - t >= window)
    }
}

/// Refusals of one key in its current audit window.
#[derive(Debug, Clone)]
struct Note {
    what: String,
    window_start: i64,
    refused: u64,
    bad_input: bool,
}

/// A refusal counted after the first of its window, reported when the window ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// What was refused (`address 192.0.2.1`, `username` …, never a raw username).
    pub what: String,
    /// Start of the window, UTC ms.
    pub window_start_ms: i64,
    /// Refusals in the window (the first one was audited when it happened).
    pub refused: u64,
    /// Bad input rather than a throttle refusal.
    pub bad_input: bool,
}

/// Why an attempt was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// When to try again, UTC ms.
    pub retry_at_ms: i64,
    /// Which rule refused: `address` or `username`.
    pub rule: &'static str,
    /// Whether this refusal should be written to the audit log (the first of its key and
    /// window); later ones are counted for [`Throttle::drain_summaries`].
    pub audit: bool,
}

#[derive(Debug, Default)]
struct State {
    addrs: HashMap<Key, Entry>,
    users: HashMap<Key, Entry>,
    notes: HashMap<Key, Note>,
    /// Ended windows with uncounted refusals, waiting for the sweep.
    ended: Vec<Summary>,
}

/// Failure history per client address and per username.
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    salt: [u8; 16],
    state: Mutex<State>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// How many keys are refusing attempts now (the health detail).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Addresses past their allowance.
    pub addresses: usize,
    /// Usernames in a delay.
    pub usernames: usize,
}

fn evict_oldest<V>(map: &mut HashMap<Key, V>, touched: impl Fn(&V) -> i64) {
    if let Some(k) = map.iter().min_by_key(|(_, v)| touched(v)).map(|(k, _)| *k) {
        map.remove(&k);
    }
}

/// A slot in the map for `k`, evicting idle entries (then the least recently touched) when
/// the map is full.
fn slot<'a>(map: &'a mut HashMap<Key, Entry>, k: Key, l: &Limits, now: i64) -> &'a mut Entry {
    if !map.contains_key(&k) && map.len() >= l.max_keys {
        map.retain(|_, e| !e.idle(now, l.window_ms));
        if map.len() >= l.max_keys {
            evict_oldest(map, |e| e.touched);
        }
    }
    let e = map.entry(k).or_default();
    e.prune(now, l.window_ms);
    e.touched = now;
    e
}

impl Throttle {
    /// A throttle with these rules.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            salt: crate::random::random_bytes::<16>(),
            state: Mutex::default(),
        }
    }

    /// The rules.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn key(&self, kind: &str, value: &str) -> Key {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(kind.as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
        let mut k = [0u8; 16];
        k.copy_from_slice(&h.finalize()[..16]);
        k
    }

    fn user_key(&self, username: &str) -> Key {
        self.key("u", &username.to_lowercase())
    }

    fn addr_key(&self, client: &str) -> Key {
        self.key("a", client)
    }

    /// The username's delay end after `n` checked failures, the last at `last`.
    fn delay_until(&self, n: usize, last: i64) -> i64 {
        let l = &self.limits;
        let steps = (n - l.allowance).min(16) as u32;
        last + (l.delay_start_ms << steps).min(l.delay_cap_ms)
    }

    /// Asks to check a password for `username` from `client` at `now`.
    pub fn reserve(
        self: &Arc<Self>,
        username: &str,
        client: &str,
        now: i64,
    ) -> Result<Reservation, Refusal> {
        let l = self.limits;
        let (ak, uk) = (self.addr_key(client), self.user_key(username));
        let mut st = self.state.lock().expect("throttle lock");
        let a = slot(&mut st.addrs, ak, &l, now);
        if a.failures.len() + a.inflight as usize >= l.allowance {
            let retry = a.failures.front().map_or(now + 1_000, |t| t + l.window_ms);
            let what = format!("address {client}");
            return Err(self.refuse(&mut st, ak, what, "address", retry, now));
        }
        let u = slot(&mut st.users, uk, &l, now);
        let n = u.failures.len();
        let refused_until = if n + (u.inflight as usize) < l.allowance {
            None
        } else {
            match (u.inflight, u.failures.back()) {
                (0, Some(&last)) if n >= l.allowance => {
                    Some(self.delay_until(n, last)).filter(|&t| now < t)
                }
                _ => Some(now + 1_000),
            }
        };
        match refused_until {
            None => u.inflight += 1,
            // The note is keyed by the username's hash; its text never repeats the name.
            Some(retry) => {
                return Err(self.refuse(&mut st, uk, "username".into(), "username", retry, now));
            }
        }
        st.addrs.get_mut(&ak).expect("slot made above").inflight += 1;
        Ok(Reservation {
            throttle: self.clone(),
            addr: ak,
            user: uk,
            done: false,
        })
    }

    /// Refuses `client` when its address is past its allowance (routes without a password
    /// check that still take a secret: refresh, setup).
    pub fn address_refused(&self, client: &str, now: i64) -> Option<Refusal> {
        let l = self.limits;
        let ak = self.addr_key(client);
        let mut st = self.state.lock().expect("throttle lock");
        let a = slot(&mut st.addrs, ak, &l, now);
        if a.failures.len() + a.inflight as usize >= l.allowance {
            let retry = a.failures.front().map_or(now + 1_000, |t| t + l.window_ms);
            let what = format!("address {client}");
            return Some(self.refuse(&mut st, ak, what, "address", retry, now));
        }
        None
    }

    /// Counts a request from `client` refused for bad input as a failure of its address;
    /// whether this one should be audited (the first of its window).
    pub fn bad_input(&self, client: &str, now: i64) -> bool {
        let mut st = self.state.lock().expect("throttle lock");
        self.address_failed(&mut st, client, now);
        let nk = self.key("bad", client);
        self.note(&mut st, nk, format!("bad input from {client}"), now)
    }

    /// Counts a wrong secret that needs no password check (an unknown refresh token) as a
    /// failure of `client`'s address, without an audit entry of its own.
    pub fn failed_secret(&self, client: &str, now: i64) {
        let mut st = self.state.lock().expect("throttle lock");
        self.address_failed(&mut st, client, now);
    }

    fn address_failed(&self, st: &mut State, client: &str, now: i64) {
        let l = self.limits;
        let a = slot(&mut st.addrs, self.addr_key(client), &l, now);
        a.failures.push_back(now);
        while a.failures.len() > l.allowance + 8 {
            a.failures.pop_front();
        }
    }

    /// Whether a refusal of key `k` at `now` is the first of its window (then it is audited).
    fn note(&self, st: &mut State, k: Key, what: String, now: i64) -> bool {
        let l = &self.limits;
        if let Some(n) = st.notes.get_mut(&k) {
            if now - n.window_start < l.window_ms {
                n.refused += 1;
                return false;
            }
            if n.refused > 1 && st.ended.len() < l.max_keys {
                st.ended.push(Summary {
                    what: n.what.clone(),
                    window_start_ms: n.window_start,
                    refused: n.refused,
                    bad_input: n.bad_input,
                });
            }
        } else if st.notes.len() >= l.max_keys {
            evict_oldest(&mut st.notes, |n| n.window_start);
        }
        let bad_input = what.starts_with("bad input");
        st.notes.insert(
            k,
            Note {
                what,
                window_start: now,
                refused: 1,
                bad_input,
            },
        );
        true
    }

    fn refuse(
        &self,
        st: &mut State,
        k: Key,
        what: String,
        rule: &'static str,
        retry_at_ms: i64,
        now: i64,
    ) -> Refusal {
        let audit = self.note(st, k, what, now);
        Refusal {
            retry_at_ms,
            rule,
            audit,
        }
    }

    /// The counts of refusal windows that have ended with more than their first (audited)
    /// refusal, to be audited as one entry each; forgets idle keys.
    pub fn drain_summaries(&self, now: i64) -> Vec<Summary> {
        let l = self.limits;
        let mut st = self.state.lock().expect("throttle lock");
        let mut out = std::mem::take(&mut st.ended);
        st.notes.retain(|_, n| {
            if now - n.window_start < l.window_ms {
                return true;
            }
            if n.refused > 1 {
                out.push(Summary {
                    what: n.what.clone(),
                    window_start_ms: n.window_start,
                    refused: n.refused,
                    bad_input: n.bad_input,
                });
            }
            false
        });
        st.addrs.retain(|_, e| !e.idle(now, l.window_ms));
        st.users.retain(|_, e| !e.idle(now, l.window_ms));
        out.sort_by_key(|s| s.window_start_ms);
        out
    }

    /// Forgets a username's failures (`kasad user unlock`); whether it had any.
    pub fn unlock(&self, username: &str) -> bool {
        let k = self.user_key(username);
        let mut st = self.state.lock().expect("throttle lock");
        let had = st.users.get(&k).is_some_and(|e| !e.failures.is_empty());
        if let Some(e) = st.users.get_mut(&k) {
            e.failures.clear();
        }
        st.notes.remove(&k);
        had
    }

    /// How many addresses and usernames refuse attempts at `now`.
    pub fn counts(&self, now: i64) -> Counts {
        let l = self.limits;
        let st = self.state.lock().expect("throttle lock");
        let live = |e: &Entry| {
            e.failures
                .iter()
                .filter(|&&t| now - t < l.window_ms)
                .count()
        };
        Counts {
            addresses: st.addrs.values().filter(|e| live(e) >= l.allowance).count(),
            usernames: st
                .users
                .values()
                .filter(|e| {
                    let n = live(e);
                    n >= l.allowance
                        && e.failures
                            .back()
                            .is_some_and(|&t| now < self.delay_until(n, t))
                })
                .count(),
        }
    }

    /// Keys held in memory (tests: the maps stay bounded).
    pub fn len(&self) -> usize {
        let st = self.state.lock().expect("throttle lock");
        st.addrs.len() + st.users.len() + st.notes.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn settle(&self, r: &Reservation, outcome: Outcome) {
        let failed_at = match outcome {
            Outcome::Failed(t) => Some(t),
            _ => None,
        };
        let l = self.limits;
        let mut guard = self.state.lock().expect("throttle lock");
        let st = &mut *guard;
        for (map, k) in [(&mut st.addrs, r.addr), (&mut st.users, r.user)] {
            let Some(e) = map.get_mut(&k) else { continue };
            e.inflight = e.inflight.saturating_sub(1);
            if let Some(t) = failed_at {
                e.failures.push_back(t);
                e.touched = t;
                while e.failures.len() > l.allowance + 8 {
                    e.failures.pop_front();
                }
            }
        }
        if outcome == Outcome::Succeeded
            && let Some(e) = st.users.get_mut(&r.user)
        {
            // A success clears the username (not the address: a stranger cannot reset the
            // count of their own address by logging in to an account of their own).
            e.failures.clear();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed(i64),
    Released,
}

/// The right to check one password; settle it with [`Reservation::succeeded`] or
/// [`Reservation::failed`] (dropping it releases the slot without counting).
#[derive(Debug)]
pub struct Reservation {
    throttle: Arc<Throttle>,
    addr: Key,
    user: Key,
    done: bool,
}

impl Reservation {
    /// The password was right: the username's failures are forgotten.
    pub fn succeeded(mut self) {
        self.done = true;
        self.throttle.clone().settle(&self, Outcome::Succeeded);
    }

    /// The password (or the user) was wrong, checked at `now`.
    pub fn failed(mut self, now: i64) {
        self.done = true;
        self.throttle.clone().settle(&self, Outcome::Failed(now));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.clone().settle(self, Outcome::Released);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Arc<Throttle> {
        Arc::new(Throttle::default())
    }

    const W: i64 = 15 * 60 * 1000;

    #[test]
    fn an_address_is_refused_after_five_checked_failures_for_the_window() {
        let t = t();
        for i in 0..5 {
            t.reserve(&format!("user{i}"), "192.0.2.1", i)
                .unwrap()
                .failed(i);
        }
        let r = t.reserve("someone", "192.0.2.1", 10).unwrap_err();
        assert_eq!((r.rule, r.retry_at_ms, r.audit), ("address", W, true));
        // Later refusals of the same window are counted, not audited.
        assert!(!t.reserve("other", "192.0.2.1", 11).unwrap_err().audit);
        // Another address is not affected, and the window frees the first.
        assert!(t.reserve("someone", "192.0.2.2", 12).is_ok());
        assert!(t.reserve("someone", "192.0.2.1", W + 1).is_ok());
    }

    #[test]
    fn parallel_attempts_never_check_more_than_the_allowance() {
        let t = t();
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..60 {
            match t.reserve("admin", &format!("198.51.100.{i}"), 0) {
                Ok(r) => held.push(r),
                Err(_) => refused += 1,
            }
        }
        assert_eq!((held.len(), refused), (5, 55));
        for r in held {
            r.failed(1);
        }
        // All five failed: the username waits 2 s after the last one.
        let r = t.reserve("admin", "203.0.113.9", 2).unwrap_err();
        assert_eq!((r.rule, r.retry_at_ms), ("username", 2_001));
    }

    #[test]
    fn a_username_delay_doubles_to_its_cap_and_refusals_do_not_extend_it() {
        let t = t();
        let mut now = 0;
        for i in 0..5 {
            t.reserve("owner", &format!("10.0.0.{i}"), now)
                .unwrap()
                .failed(now);
        }
        let mut delays = Vec::new();
        for i in 0..8 {
            let until = t.reserve("owner", "10.1.0.1", now).unwrap_err().retry_at_ms;
            delays.push(until - now);
            // Refused attempts during the delay change nothing.
            assert_eq!(
                t.reserve("owner", "10.1.0.2", now + 1)
                    .unwrap_err()
                    .retry_at_ms,
                until
            );
            now = until;
            t.reserve("owner", &format!("10.2.0.{i}"), now)
                .unwrap()
                .failed(now);
        }
        assert_eq!(
            delays,
            vec![2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]
        );
        // The owner's right password after the delay: in, and the username is cleared.
        now += 30_000;
        t.reserve("owner", "10.9.9.9", now).unwrap().succeeded();
        assert!(t.reserve("owner", "10.9.9.8", now).is_ok());
    }

    #[test]
    fn only_one_check_at_a_time_after_a_delay() {
        let t = t();
        for i in 0..5 {
            t.reserve("ann", &format!("10.0.0.{i}"), 0)
                .unwrap()
                .failed(0);
        }
        let first = t.reserve("ann", "10.1.0.1", 2_000).unwrap();
        assert!(t.reserve("ann", "10.1.0.2", 2_000).is_err());
        drop(first);
        // Dropped unresolved: released, not counted, and not a success either.
        assert!(t.reserve("ann", "10.1.0.2", 2_000).is_ok());
        assert_eq!(t.counts(1_000).usernames, 1);
    }

    #[test]
    fn bad_input_counts_for_the_address_and_is_audited_once_per_window() {
        let t = t();
        let audited: Vec<bool> = (0..7).map(|i| t.bad_input("192.0.2.7", i)).collect();
        assert_eq!(
            audited,
            vec![true, false, false, false, false, false, false]
        );
        assert_eq!(t.reserve("x", "192.0.2.7", 10).unwrap_err().rule, "address");
        let s = t.drain_summaries(W + 100);
        // One summary: the bad inputs' window counted 7; the address refusal was its only one.
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            (s[0].refused, s[0].what.as_str()),
            (7, "bad input from 192.0.2.7")
        );
    }

    #[test]
    fn keys_are_hashed_and_the_maps_stay_bounded() {
        let t = Arc::new(Throttle::new(Limits {
            max_keys: 100,
            ..Limits::default()
        }));
        let long = "x".repeat(60_000);
        for i in 0..1_000 {
            let name = format!("{long}{i}");
            t.reserve(&name, &format!("10.0.{}.{}", i / 250, i % 250), i)
                .unwrap()
                .failed(i);
        }
        assert!(t.len() <= 300, "{} keys", t.len());
    }

    #[test]
    fn unlock_clears_a_username() {
        let t = t();
        for i in 0..5 {
            t.reserve("Owner", &format!("10.0.0.{i}"), 0)
                .unwrap()
                .failed(0);
        }
        assert!(t.reserve("owner", "10.1.0.1", 1).is_err());
        assert!(t.unlock("OWNER"));
        assert!(t.reserve("owner", "10.1.0.1", 1).is_ok());
        assert!(!t.unlock("nobody"));
    }
}
