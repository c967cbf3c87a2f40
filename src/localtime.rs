//! Fast local-time breakdown and RFC 3339 formatting for exports. Converting every row through
//! chrono-tz costs more than the rest of a CSV row, so the zone offset is looked up once per
//! UTC 15-minute window (every real offset since 1970 is a multiple of 15 minutes, and zone
//! changes happen on such boundaries); a window whose two ends disagree falls back to chrono.

use chrono::{Datelike, NaiveDate, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

const WINDOW_MS: i64 = 15 * 60 * 1000;

/// A timestamp broken down in the export's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Local calendar day number (days since 1970-01-01 local).
    pub day: i64,
    /// Minute of the local day, 0–1439.
    pub minute: u32,
    /// Local hour 0–23.
    pub hour: u32,
    /// ISO weekday 1 (Mon) – 7 (Sun).
    pub weekday: u32,
    /// Local month 1–12.
    pub month: u32,
}

impl Local {
    fn of(n: chrono::NaiveDateTime) -> Self {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        Local {
            day: (n.date() - epoch).num_days(),
            minute: n.hour() * 60 + n.minute(),
            hour: n.hour(),
            weekday: n.weekday().number_from_monday(),
            month: n.month(),
        }
    }
}

/// Per-zone cache of the current window's offset and date text.
#[derive(Debug, Clone)]
pub struct TzCache {
    tz: Tz,
    utc: bool,
    win: i64,
    offset_ms: i64,
    /// `YYYY-MM-DDTHH:` of the window's local hour.
    prefix: [u8; 14],
    /// `Z` or `+HH:MM`.
    suffix: [u8; 6],
    suffix_len: usize,
    local: Local,
    exact: bool,
}

fn offset_ms(tz: Tz, ts_ms: i64) -> i64 {
    match tz.timestamp_millis_opt(ts_ms).single() {
        Some(t) => i64::from(t.offset().fix().local_minus_utc()) * 1000,
        None => 0,
    }
}

impl TzCache {
    /// A cache for zone `tz`.
    pub fn new(tz: Tz) -> Self {
        let mut c = Self {
            tz,
            utc: tz == Tz::UTC || tz == Tz::Etc__UTC,
            win: i64::MIN,
            offset_ms: 0,
            prefix: [0; 14],
            suffix: [0; 6],
            suffix_len: 0,
            local: Local {
                day: 0,
                minute: 0,
                hour: 0,
                weekday: 1,
                month: 1,
            },
            exact: false,
        };
        c.load(0);
        c
    }

    fn load(&mut self, ts_ms: i64) {
        let win = ts_ms.div_euclid(WINDOW_MS) * WINDOW_MS;
        self.win = win;
        let off = offset_ms(self.tz, win);
        self.exact = off == offset_ms(self.tz, win + WINDOW_MS - 1) && off % WINDOW_MS == 0;
        self.offset_ms = off;
        let local_ms = win + off;
        let Some(dt) = chrono::DateTime::from_timestamp_millis(local_ms) else {
            return;
        };
        let n = dt.naive_utc();
        let text = format!(
            "{:04}-{:02}-{:02}T{:02}:",
            n.year(),
            n.month(),
            n.day(),
            n.hour()
        );
        if text.len() == 14 {
            self.prefix.copy_from_slice(text.as_bytes());
        }
        let suffix = if self.utc {
            "Z".to_owned()
        } else {
            let m = off / 60_000;
            let sign = if m < 0 { '-' } else { '+' };
            format!("{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60)
        };
        self.suffix_len = suffix.len().min(6);
        self.suffix[..self.suffix_len].copy_from_slice(&suffix.as_bytes()[..self.suffix_len]);
        self.local = Local::of(n);
    }

    fn ensure(&mut self, ts_ms: i64) -> bool {
        if ts_ms < self.win || ts_ms >= self.win + WINDOW_MS {
            self.load(ts_ms);
        }
        self.exact
    }

    /// `ts_ms` broken down in local time.
    pub fn local(&mut self, ts_ms: i64) -> Local {
        if self.ensure(ts_ms) {
            let mut l = self.local;
            l.minute += ((ts_ms - self.win) / 60_000) as u32;
            return l;
        }
        let t = self.tz.timestamp_millis_opt(ts_ms).single();
        Local::of(t.map(|t| t.naive_local()).unwrap_or_default())
    }

    /// The zone's UTC offset at `ts_ms`, ms.
    pub fn offset(&mut self, ts_ms: i64) -> i64 {
        if self.ensure(ts_ms) {
            self.offset_ms
        } else {
            offset_ms(self.tz, ts_ms)
        }
    }

    /// Appends `ts_ms` as RFC 3339 in local time (`…Z` in UTC, else `…±HH:MM`), with
    /// milliseconds when `millis`.
    pub fn push_rfc3339(&mut self, out: &mut Vec<u8>, ts_ms: i64, millis: bool) {
        if !self.ensure(ts_ms) {
            let t = self.tz.timestamp_millis_opt(ts_ms).single();
            let fmt = if millis {
                chrono::SecondsFormat::Millis
            } else {
                chrono::SecondsFormat::Secs
            };
            if let Some(t) = t {
                out.extend_from_slice(t.to_rfc3339_opts(fmt, self.utc).as_bytes());
            }
            return;
        }
        let within = ts_ms - self.win; // < 15 minutes, and the local window starts on a quarter
        let minute = (self.local.minute % 60) as i64 + within / 60_000;
        let second = (within / 1000) % 60;
        out.extend_from_slice(&self.prefix);
        push2(out, minute as u32);
        out.push(b':');
        push2(out, second as u32);
        if millis {
            let ms = (within % 1000) as u32;
            out.push(b'.');
            out.push(b'0' + (ms / 100) as u8);
            out.push(b'0' + (ms / 10 % 10) as u8);
            out.push(b'0' + (ms % 10) as u8);
        }
        out.extend_from_slice(&self.suffix[..self.suffix_len]);
    }
}

fn push2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(tz: &str, ts: i64, ms: bool) -> String {
        let mut c = TzCache::new(tz.parse().unwrap());
        let mut v = Vec::new();
        c.push_rfc3339(&mut v, ts, ms);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn matches_chrono_across_zones_and_dst() {
        for tz in [
            "UTC",
            "America/New_York",
            "Asia/Kathmandu",
            "Australia/Lord_Howe",
            "Africa/Monrovia",
        ] {
            let z: Tz = tz.parse().unwrap();
            let mut c = TzCache::new(z);
            // Every 7 minutes 13.5 s over two years, crossing DST changes both ways.
            let mut ts = 1_704_067_200_000_i64 - 400 * 86_400_000;
            while ts < 1_704_067_200_000 + 400 * 86_400_000 {
                let mut v = Vec::new();
                c.push_rfc3339(&mut v, ts, true);
                let want = z
                    .timestamp_millis_opt(ts)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, tz == "UTC");
                assert_eq!(String::from_utf8(v).unwrap(), want, "{tz} at {ts}");
                let n = z.timestamp_millis_opt(ts).unwrap().naive_local();
                let l = c.local(ts);
                assert_eq!((l.hour, l.minute), (n.hour(), n.hour() * 60 + n.minute()));
                assert_eq!(l.weekday, n.weekday().number_from_monday());
                ts += 433_500;
            }
        }
    }

    #[test]
    fn whole_seconds_without_millis() {
        assert_eq!(text("UTC", 0, false), "1970-01-01T00:00:00Z");
        assert_eq!(
            text("America/New_York", 1_710_054_000_000, false),
            "2024-03-10T03:00:00-04:00"
        );
    }
}
