//! What one user's scheduled exports may do (`[schedules]`; the owner being an admin exempts
//! a schedule from all of it): how many schedules (`max_per_user`), how often one runs
//! (`min_interval`: the shortest gap among its next 1,000 runs), how many runs per rolling
//! hour (`max_runs_per_hour`) and how much of the export quota their files may take
//! (`quota_share_percent`). Caps apply when a schedule is saved and when it runs; a schedule
//! saved before a cap existed keeps running and is flagged until it is edited.

use super::ScheduleRecord;
use crate::config::Schedules;
use crate::cron::Schedule;
use chrono_tz::Tz;

/// Runs looked at to find a schedule's shortest gap.
pub const LOOKAHEAD: usize = 1_000;

/// The shortest gap between two of the next `runs` occurrences after `from_ms`, ms.
pub fn shortest_gap(cron: &Schedule, tz: Tz, from_ms: i64, runs: usize) -> Option<i64> {
    let mut prev = cron.next_after(from_ms, tz)?;
    let mut best: Option<i64> = None;
    for _ in 1..runs {
        let Some(next) = cron.next_after(prev, tz) else {
            break;
        };
        best = Some(best.map_or(next - prev, |b: i64| b.min(next - prev)));
        prev = next;
    }
    best
}

fn minutes(ms: i64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms => format!("{} min", ms / 60_000),
    }
}

/// Why `cron` runs too often for `caps`, if it does.
pub fn too_often(cron: &Schedule, tz: Tz, now_ms: i64, caps: &Schedules) -> Option<String> {
    let min = i64::try_from(caps.min_interval.0.as_millis()).unwrap_or(i64::MAX);
    let gap = shortest_gap(cron, tz, now_ms, LOOKAHEAD)?;
    (gap < min).then(|| {
        format!(
            "runs as often as every {} ([schedules] min_interval is {})",
            minutes(gap),
            minutes(min)
        )
    })
}

/// Why a user owning `owned` schedules may not add another, if so.
pub fn too_many(owned: usize, caps: &Schedules) -> Option<String> {
    (owned >= caps.max_per_user).then(|| {
        format!(
            "you have {owned} scheduled exports; [schedules] max_per_user allows {}",
            caps.max_per_user
        )
    })
}

/// Why stored schedule `s` breaks a cap now (`all`: every schedule), for its `over_limit`
/// flag; `None` for an admin's schedule or one within the caps.
pub fn over_limit(
    s: &ScheduleRecord,
    owner_is_admin: bool,
    all: &[ScheduleRecord],
    caps: &Schedules,
    now_ms: i64,
) -> Option<String> {
    if owner_is_admin {
        return None;
    }
    let mut own: Vec<&ScheduleRecord> = all.iter().filter(|x| x.user_id == s.user_id).collect();
    own.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    if own.iter().position(|x| x.id == s.id) >= Some(caps.max_per_user) {
        return Some(format!(
            "its owner has {} scheduled exports; [schedules] max_per_user allows {}",
            own.len(),
            caps.max_per_user
        ));
    }
    let (cron, tz) = super::check_timing(&s.name, &s.schedule, &s.timezone).ok()?;
    too_often(&cron, tz, now_ms, caps)
}

/// The owner's share of `[exports] storage_quota_mb`, bytes.
pub fn quota_share(storage_quota_mb: u64, caps: &Schedules) -> u64 {
    storage_quota_mb
        .saturating_mul(1024 * 1024)
        .saturating_mul(u64::from(caps.quota_share_percent))
        / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(s: &str) -> Schedule {
        Schedule::parse(s).unwrap()
    }

    #[test]
    fn the_shortest_gap_is_found_among_the_next_runs() {
        let tz = chrono_tz::UTC;
        let d = Schedules::default();
        assert_eq!(shortest_gap(&cron("* * * * *"), tz, 0, 10), Some(60_000));
        assert_eq!(
            shortest_gap(&cron("0,5 9 * * *"), tz, 0, LOOKAHEAD),
            Some(300_000),
            "two runs five minutes apart once a day"
        );
        assert!(
            too_often(&cron("*/5 * * * *"), tz, 0, &d)
                .unwrap()
                .contains("every 5 min")
        );
        assert_eq!(too_often(&cron("*/15 * * * *"), tz, 0, &d), None);
        assert_eq!(too_often(&cron("0 2 * * *"), tz, 0, &d), None);
        assert!(too_many(20, &d).is_some());
        assert!(too_many(19, &d).is_none());
        assert_eq!(quota_share(2048, &d), 512 * 1024 * 1024);
    }
}
