//! The small cron runner: 5-field expressions (minute hour day-of-month month day-of-week,
//! Vixie semantics, via `croner`) evaluated in an IANA time zone, so "0 2 * * *" means 02:00
//! local time on every day including DST changes: a time skipped by spring-forward runs once
//! at the end of the gap, a time repeated by fall-back runs once, and hourly jobs run every
//! real hour. Used by the export cleanup and by scheduled exports.

use crate::clock::SharedClock;
use chrono::TimeZone;
use chrono_tz::Tz;
use std::str::FromStr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why an expression is refused, in words (it names the expression and the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

impl std::ops::Deref for CronError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A parsed cron expression (read and written as its text).
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    text: String,
    /// The hour field names hours (it is not `*` or `*/n`): wall-clock semantics.
    wall_clock: bool,
}

impl Schedule {
    /// Parses a 5-field expression; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        Self::parse_text(text).map_err(CronError)
    }

    fn parse_text(text: &str) -> Result<Self, String> {
        if text.split_whitespace().count() != 5 {
            return Err(format!(
                "{text:?} must have 5 fields: minute hour day-of-month month day-of-week"
            ));
        }
        for (field, name) in text.split_whitespace().zip(FIELDS) {
            if !field.split(',').all(item_ok) {
                return Err(format!(
                    "{text:?}: the {name} field {field:?} is not a list of *, numbers, ranges (a-b) or names, each with an optional /step"
                ));
            }
        }
        let cron = croner::Cron::from_str(text).map_err(|e| format!("{text:?}: {e}"))?;
        if !day_exists(text) {
            return Err(format!(
                "{text:?}: none of the days of the month listed falls in the months listed, so it would never run"
            ));
        }
        let hours = text.split_whitespace().nth(1).unwrap_or("*");
        Ok(Self {
            cron,
            text: text.to_owned(),
            wall_clock: hours != "*" && !hours.starts_with("*/"),
        })
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Schedule {
    /// The first run strictly after `after_ms` (UTC ms), in zone `tz`.
    pub fn next_after(&self, after_ms: i64, tz: Tz) -> Option<i64> {
        if self.wall_clock {
            return self.next_wall_clock(after_ms, tz);
        }
        let now = tz.timestamp_millis_opt(after_ms).single()?;
        self.cron
            .find_next_occurrence(&now, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// Expressions naming hours are evaluated on local wall-clock times: a time repeated by
    /// fall-back runs at its first instant (once), a time skipped by spring-forward at the end
    /// of the gap (once), for every hour listed (`30 1,13 * * *` as well as `30 1 * * *`).
    fn next_wall_clock(&self, after_ms: i64, tz: Tz) -> Option<i64> {
        let local = tz.timestamp_millis_opt(after_ms).single()?.naive_local();
        // Wall times before `local` resolve to instants at or before `after` (the first of a
        // repeated time, the end of a gap), so the search starts at `local`.
        let mut cur = chrono::Utc.from_utc_datetime(&local);
        for _ in 0..1_000 {
            let n = self.cron.find_next_occurrence(&cur, false).ok()?;
            let at = resolve_local(n.naive_utc(), tz)?;
            if at > after_ms {
                return Some(at);
            }
            cur = n;
        }
        None
    }
}

/// The five fields, as named in errors.
const FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

/// One item of a field's list: `*`, a number or a name (`JAN`, `MON`), or a range of them,
/// with an optional `/step`. croner accepts more (stray `+`, empty list items), and some of
/// what it accepts makes its search for the next run take seconds: found by fuzzing.
fn item_ok(item: &str) -> bool {
    let (base, step) = match item.split_once('/') {
        Some((b, s)) => (b, Some(s)),
        None => (item, None),
    };
    let atom = |a: &str| {
        (!a.is_empty() && a.len() <= 2 && a.bytes().all(|b| b.is_ascii_digit()))
            || (a.len() == 3 && a.bytes().all(|b| b.is_ascii_alphabetic()))
    };
    let base_ok = base == "*"
        || match base.split_once('-') {
            Some((a, b)) => atom(a) && atom(b),
            None => atom(base),
        };
    let step_ok =
        step.is_none_or(|s| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()));
    base_ok && step_ok
}

/// Whether the day-of-month and month fields (checked by [`item_ok`]) meet on a real date.
/// `0 1 31 4 *` (April 31st) never runs, and croner searched for seconds to find that out:
/// found by fuzzing. A day-of-week other than `*` matches as well (either field), so it runs.
fn day_exists(text: &str) -> bool {
    let f: Vec<&str> = text.split_whitespace().collect();
    if f[4] != "*" {
        return true;
    }
    let (days, months) = (values(f[2], 1, 31), values(f[3], 1, 12));
    // February as in a leap year: the 29th runs, if only every fourth year.
    const LAST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if months.is_empty() {
        return true; // nothing understood here: croner's own parse decides
    }
    let first_day = days.iter().min().copied().unwrap_or(1);
    months
        .iter()
        .any(|m| LAST.get(*m as usize - 1).is_some_and(|l| first_day <= *l))
}

/// The values a field's list names, within `lo..=hi` (month names as their numbers).
fn values(field: &str, lo: u32, hi: u32) -> Vec<u32> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let atom = |a: &str| {
        a.parse::<u32>().ok().or_else(|| {
            MONTHS
                .iter()
                .position(|m| m.eq_ignore_ascii_case(a))
                .map(|i| i as u32 + 1)
        })
    };
    let mut out = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, s.parse::<u32>().unwrap_or(1).max(1)),
            None => (item, 1),
        };
        let (a, b) = match base.split_once('-') {
            _ if base == "*" => (Some(lo), Some(hi)),
            Some((a, b)) => (atom(a), atom(b)),
            None if item.contains('/') => (atom(base), Some(hi)),
            None => (atom(base), atom(base)),
        };
        if let (Some(a), Some(b)) = (a, b) {
            out.extend((a.max(lo)..=b.min(hi)).step_by(step as usize));
        }
    }
    out
}

/// The instant of local time `t` in `tz`: the first of two when it is repeated, the end of the
/// gap when it is skipped.
fn resolve_local(t: chrono::NaiveDateTime, tz: Tz) -> Option<i64> {
    if let Some(x) = tz.from_local_datetime(&t).earliest() {
        return Some(x.timestamp_millis());
    }
    (1..=24 * 60).find_map(|m| {
        tz.from_local_datetime(&(t + chrono::Duration::minutes(m)))
            .earliest()
            .map(|x| x.timestamp_millis())
    })
}

/// Runs `job` at every occurrence of `schedule` until `stop`. The wait is re-checked at least
/// every minute against `clock`, so a wall-clock jump (NTP sync on a Pi without RTC) neither
/// skips a run by hours nor runs one early.
pub async fn run<F, Fut>(
    schedule: Schedule,
    tz: Tz,
    clock: SharedClock,
    stop: CancellationToken,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(mut next) = schedule.next_after(clock.now_ms(), tz) else {
        tracing::warn!(schedule = schedule.text(), "cron expression never fires");
        return;
    };
    loop {
        let now = clock.now_ms();
        if now >= next {
            job().await;
            match schedule.next_after(clock.now_ms().max(next), tz) {
                Some(n) => next = n,
                None => return,
            }
            continue;
        }
        let wait = Duration::from_millis(((next - now) as u64).min(60_000));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::clock::utc;

    #[test]
    fn daily_at_two_local_follows_dst() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08 is spring-forward in New York: 02:00 does not exist that day.
        let a = s.next_after(utc("2026-03-07T12:00:00Z"), ny).unwrap();
        assert_eq!(
            a,
            utc("2026-03-08T07:00:00Z"),
            "02:00 EST → 03:00 EDT, once"
        );
        let b = s.next_after(utc("2026-06-01T12:00:00Z"), ny).unwrap();
        assert_eq!(b, utc("2026-06-02T06:00:00Z"), "02:00 EDT");
        let c = s.next_after(utc("2026-06-01T12:00:00Z"), Tz::UTC).unwrap();
        assert_eq!(c, utc("2026-06-02T02:00:00Z"));
    }

    /// The first `n` runs after `from`, as local wall-clock text.
    fn runs(expr: &str, from: &str, n: usize) -> Vec<String> {
        let ny: Tz = "America/New_York".parse().unwrap();
        let s = Schedule::parse(expr).unwrap();
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t, ny).unwrap();
                let local = ny.timestamp_millis_opt(t).unwrap();
                local.format("%Y-%m-%d %H:%M %Z").to_string()
            })
            .collect()
    }

    #[test]
    fn new_york_dst_changes() {
        // 9:00 stays 9:00 local across spring-forward (2026-03-08).
        assert_eq!(
            runs("0 9 * * *", "2026-03-07T00:00:00Z", 3),
            [
                "2026-03-07 09:00 EST",
                "2026-03-08 09:00 EDT",
                "2026-03-09 09:00 EDT"
            ]
        );
        // 02:30 does not exist on 2026-03-08: it runs once, at the end of the gap.
        assert_eq!(
            runs("30 2 * * *", "2026-03-07T12:00:00Z", 2),
            ["2026-03-08 03:00 EDT", "2026-03-09 02:30 EDT"]
        );
        // 01:30 happens twice on 2026-11-01 (fall-back): it runs once.
        assert_eq!(
            runs("30 1 * * *", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"]
        );
        // The same for every hour of a list.
        assert_eq!(
            runs("30 1,13 * * *", "2026-10-31T12:00:00Z", 3),
            [
                "2026-10-31 13:30 EDT",
                "2026-11-01 01:30 EDT",
                "2026-11-01 13:30 EST"
            ]
        );
        assert_eq!(
            runs("30 2,14 * * *", "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-07 14:30 EST",
                "2026-03-08 03:00 EDT",
                "2026-03-08 14:30 EDT"
            ]
        );
        assert_eq!(
            runs("30 1-23/12 * * *", "2026-10-31T12:00:00Z", 3),
            [
                "2026-10-31 13:30 EDT",
                "2026-11-01 01:30 EDT",
                "2026-11-01 13:30 EST"
            ]
        );
        assert_eq!(
            runs("0,30 1 * * *", "2026-11-01T04:00:00Z", 3),
            [
                "2026-11-01 01:00 EDT",
                "2026-11-01 01:30 EDT",
                "2026-11-02 01:00 EST"
            ]
        );
        // An hourly job runs every real hour, both 01:00s included.
        assert_eq!(
            runs("0 * * * *", "2026-11-01T04:30:00Z", 3),
            [
                "2026-11-01 01:00 EDT",
                "2026-11-01 01:00 EST",
                "2026-11-01 02:00 EST"
            ]
        );
    }

    #[test]
    fn spec_monthly_expression_parses() {
        let s = Schedule::parse("0 9 1 * *").unwrap();
        let next = s.next_after(utc("2026-11-25T00:00:00Z"), Tz::UTC).unwrap();
        assert_eq!(next, utc("2026-12-01T09:00:00Z"));
    }

    #[test]
    fn bad_expressions_are_explained() {
        assert!(Schedule::parse("0 2 * *").unwrap_err().contains("5 fields"));
        assert!(
            Schedule::parse("0 0 2 * * *")
                .unwrap_err()
                .contains("5 fields")
        );
        assert!(Schedule::parse("61 2 * * *").is_err());
        assert!(Schedule::parse("x 2 * * *").is_err());
        // Found by fuzzing: croner took this (an empty hour list, a stray `+`) and then spent
        // seconds on every search for its next run.
        let e = Schedule::parse("05  , 14 9 +").unwrap_err();
        assert!(e.contains("the hour field"), "{e}");
        assert!(Schedule::parse("0 9 1,15 JAN-MAR/2 MON-FRI").is_ok());
        assert!(Schedule::parse("*/15 2-4 * 3,11 0-6").is_ok());
        assert!(Schedule::parse("0 9 1 * 1/").is_err());
        // Found by fuzzing: April 31st never comes, and croner searched for seconds.
        let e = Schedule::parse("0 1 31 4 *").unwrap_err();
        assert!(e.contains("would never run"), "{e}");
        assert!(Schedule::parse("0 1 30,31 FEB *").is_err());
        assert!(Schedule::parse("0 1 31 APR-JUN/2 *").is_err());
        assert!(Schedule::parse("0 1 31 APR-MAY *").is_ok());
        assert!(Schedule::parse("0 1 29 2 *").is_ok());
        assert!(Schedule::parse("0 1 31 4 MON").is_ok());
        assert!(Schedule::parse("0 1 */10 2 *").is_ok());
    }
}
