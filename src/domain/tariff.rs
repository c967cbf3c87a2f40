//! The tariff model people write (in `[tariff]` of the config file or through `PUT
//! /api/tariffs`) and its validation into a [`Compiled`] form with prices as integers: pure
//! rules, no I/O. Versions over time and the cost engine are `crate::tariff`'s.

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A tariff as written by people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tariff {
    /// Price of one kWh when `rates` is absent (a flat tariff).
    pub price_per_kwh: f64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Currency symbol for documents (default: the code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// Decimals of the currency's minor unit (default 2; 0 for JPY, KRW …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
    /// IANA zone the rules are read in (default: the daemon's `timezone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Day of the month a billing period starts (1–28); tiers count from it.
    pub billing_day: u8,
    /// When this version starts: `YYYY-MM-DD` (local midnight) or RFC 3339. Absent in the
    /// config file: from the beginning of time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    /// The energy rates (default: flat at `price_per_kwh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<Rates>,
    /// Date ranges with their own rates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seasons: Vec<Season>,
    /// Fixed charges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixed_charges: Vec<FixedCharge>,
    /// Taxes and surcharges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub taxes: Vec<Tax>,
    /// Public holidays (`YYYY-MM-DD`): time-of-use treats them as Sundays.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
}

impl Default for Tariff {
    fn default() -> Self {
        Self {
            price_per_kwh: 0.15,
            currency: "USD".into(),
            symbol: None,
            decimals: None,
            timezone: None,
            billing_day: 1,
            effective_from: None,
            rates: None,
            seasons: Vec::new(),
            fixed_charges: Vec::new(),
            taxes: Vec::new(),
            holidays: Vec::new(),
        }
    }
}

/// How energy is priced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rates {
    /// One price.
    Flat {
        /// Price of a kWh.
        price_per_kwh: f64,
    },
    /// Prices by weekday and local clock time.
    TimeOfUse {
        /// Periods, tried in order; the first that holds the time applies.
        periods: Vec<TouPeriod>,
        /// Price outside every period.
        default_price_per_kwh: f64,
        /// Name of the time outside every period (default `off_peak`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_name: Option<String>,
    },
    /// Monthly consumption tiers, priced marginally.
    Tiered {
        /// Tiers in order; the last has no `up_to_kwh`.
        tiers: Vec<Tier>,
    },
    /// Each interval at the price of a stored series (day-ahead prices), plus a markup.
    Dynamic {
        /// The price series (`PUT /api/tariffs/prices/{series}`).
        series: String,
        /// Added to every interval's price, per kWh.
        #[serde(default)]
        markup_per_kwh: f64,
        /// Price of a bucket the series has no price for (absent: such buckets are priced 0
        /// and named `missing price`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback_price_per_kwh: Option<f64>,
    },
}

/// A time-of-use period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouPeriod {
    /// Name (`peak`, `shoulder` …).
    pub name: String,
    /// ISO weekdays (1 = Monday … 7 = Sunday); default every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<u8>,
    /// Local start, `HH:MM`.
    pub start: String,
    /// Local end, `HH:MM` (exclusive; before `start` means past midnight; `24:00` allowed).
    pub end: String,
    /// Price of a kWh.
    pub price_per_kwh: f64,
}

/// A consumption tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Upper bound of the billing month's consumption in this tier (absent: no bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_kwh: Option<f64>,
    /// Price of a kWh in this tier.
    pub price_per_kwh: f64,
}

/// A season: its own rates between two dates of every year.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Season {
    /// Name.
    pub name: String,
    /// First day, `MM-DD`.
    pub start: String,
    /// Last day (inclusive), `MM-DD`; before `start` wraps over the new year.
    pub end: String,
    /// Rates in the season.
    pub rates: Rates,
}

/// How often a fixed charge applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// Every local day.
    Day,
    /// Every billing period.
    Month,
}

/// A fixed charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedCharge {
    /// Name.
    pub name: String,
    /// Amount per day or per billing period.
    pub amount: f64,
    /// `day` or `month`.
    pub per: Per,
}

/// A tax or surcharge in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tax {
    /// Name.
    pub name: String,
    /// Percent of the energy cost and fixed charges.
    pub percent: f64,
}

/// Why a tariff is invalid; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TariffError {
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

pub(crate) fn err(field: impl Into<String>, message: impl Into<String>) -> TariffError {
    TariffError {
        field: field.into(),
        message: message.into(),
    }
}

/// Micro-units of money per kWh.
pub type Micro = i64;

/// A price as micro-units per kWh (6 decimals), refusing negative and absurd values.
fn price(field: &str, p: f64) -> Result<Micro, TariffError> {
    if !(p.is_finite() && (0.0..=1_000_000.0).contains(&p)) {
        return Err(err(field, "must be a number between 0 and 1000000"));
    }
    Ok((p * 1e6).round() as Micro)
}

/// Minutes after local midnight of `HH:MM` (`24:00` is 1440 when `end`).
fn hhmm(field: &str, s: &str, end: bool) -> Result<u32, TariffError> {
    let bad = || err(field, format!("use HH:MM, got {s:?}"));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && (m > 0 || !end)) {
        return Err(bad());
    }
    if m % 15 != 0 {
        return Err(err(
            field,
            "times must fall on a quarter hour (costs are computed per 15 minutes)",
        ));
    }
    Ok(h * 60 + m)
}

/// `MM-DD` as month × 100 + day.
fn month_day(field: &str, s: &str) -> Result<u32, TariffError> {
    let bad = || err(field, format!("use MM-DD, got {s:?}"));
    let (m, d) = s.split_once('-').ok_or_else(bad)?;
    let (m, d): (u32, u32) = (m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    NaiveDate::from_ymd_opt(2024, m, d).ok_or_else(bad)?;
    Ok(m * 100 + d)
}

/// A time-of-use period, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Name.
    pub name: String,
    /// Bit `d` set for ISO weekday `d`.
    pub days: u8,
    /// Start, minutes after local midnight.
    pub start: u32,
    /// End (exclusive), minutes after local midnight; less than `start` wraps.
    pub end: u32,
    /// Price.
    pub price: Micro,
}

impl Band {
    /// Whether the band holds `minute` of a day that counts as ISO weekday `today`, the day
    /// before counting as `yesterday` (holidays count as Sundays, each on its own date).
    pub fn holds(&self, today: u32, yesterday: u32, minute: u32) -> bool {
        let day_ok = |d: u32| self.days & (1 << d) != 0;
        if self.start <= self.end {
            day_ok(today) && (self.start..self.end).contains(&minute)
        } else if minute >= self.start {
            day_ok(today)
        } else {
            // After midnight: the period began the day before.
            minute < self.end && day_ok(yesterday)
        }
    }
}

/// Whether `s` may name a price series: 1 to 64 letters, digits, `-` or `_`.
pub fn series_name_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Rates, compiled.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// One price.
    Flat(Micro),
    /// Bands, then the default (name, price).
    Tou(Vec<Band>, String, Micro),
    /// (upper bound in mWh or none, price), in order.
    Tiered(Vec<(Option<i64>, Micro)>),
    /// (series, markup, fallback price).
    Dynamic(String, Micro, Option<Micro>),
}

/// A dynamic rate, checked: the series name, the markup and the fallback price.
fn dynamic(
    field: &str,
    series: &str,
    markup: f64,
    fallback: Option<f64>,
) -> Result<Model, TariffError> {
    if !series_name_ok(series) {
        return Err(err(
            format!("{field}.series"),
            "1 to 64 letters, digits, '-' or '_'",
        ));
    }
    if !(markup.is_finite() && markup.abs() <= 1_000.0) {
        return Err(err(
            format!("{field}.markup_per_kwh"),
            "a number between -1000 and 1000",
        ));
    }
    let fallback = fallback
        .map(|p| price(&format!("{field}.fallback_price_per_kwh"), p))
        .transpose()?;
    Ok(Model::Dynamic(
        series.to_owned(),
        (markup * 1e6).round() as Micro,
        fallback,
    ))
}

fn compile_rates(field: &str, r: &Rates) -> Result<Model, TariffError> {
    Ok(match r {
        Rates::Flat { price_per_kwh } => {
            Model::Flat(price(&format!("{field}.price_per_kwh"), *price_per_kwh)?)
        }
        Rates::TimeOfUse {
            periods,
            default_price_per_kwh,
            default_name,
        } => {
            let mut bands = Vec::new();
            for (i, p) in periods.iter().enumerate() {
                let f = format!("{field}.periods[{i}]");
                if p.name.trim().is_empty() || p.name.len() > 40 {
                    return Err(err(format!("{f}.name"), "must be 1–40 characters"));
                }
                let mut days = 0u8;
                for d in if p.days.is_empty() {
                    &[1, 2, 3, 4, 5, 6, 7][..]
                } else {
                    &p.days[..]
                } {
                    if !(1..=7).contains(d) {
                        return Err(err(
                            format!("{f}.days"),
                            format!("{d} is not an ISO weekday (1 = Monday … 7 = Sunday)"),
                        ));
                    }
                    days |= 1 << d;
                }
                let start = hhmm(&format!("{f}.start"), &p.start, false)?;
                let end = hhmm(&format!("{f}.end"), &p.end, true)?;
                if start == end {
                    return Err(err(&f, "start and end are equal"));
                }
                bands.push(Band {
                    name: p.name.clone(),
                    days,
                    start,
                    end,
                    price: price(&format!("{f}.price_per_kwh"), p.price_per_kwh)?,
                });
            }
            if bands.is_empty() {
                return Err(err(
                    format!("{field}.periods"),
                    "list at least one period (or use a flat rate)",
                ));
            }
            Model::Tou(
                bands,
                default_name.clone().unwrap_or_else(|| "off_peak".into()),
                price(
                    &format!("{field}.default_price_per_kwh"),
                    *default_price_per_kwh,
                )?,
            )
        }
        Rates::Dynamic {
            series,
            markup_per_kwh,
            fallback_price_per_kwh,
        } => dynamic(field, series, *markup_per_kwh, *fallback_price_per_kwh)?,
        Rates::Tiered { tiers } => {
            let mut out = Vec::new();
            let mut last = 0i64;
            for (i, t) in tiers.iter().enumerate() {
                let f = format!("{field}.tiers[{i}]");
                let p = price(&format!("{f}.price_per_kwh"), t.price_per_kwh)?;
                let bound = match (t.up_to_kwh, i + 1 == tiers.len()) {
                    (None, true) => None,
                    (None, false) => {
                        return Err(err(
                            format!("{f}.up_to_kwh"),
                            "only the last tier may be unbounded",
                        ));
                    }
                    (Some(_), true) => {
                        return Err(err(
                            format!("{f}.up_to_kwh"),
                            "the last tier must be unbounded (leave up_to_kwh out)",
                        ));
                    }
                    (Some(k), false) => {
                        let mwh = (k * 1e6).round();
                        if !(k.is_finite() && mwh as i64 > last) {
                            return Err(err(
                                format!("{f}.up_to_kwh"),
                                "must be a number above the previous tier's bound",
                            ));
                        }
                        last = mwh as i64;
                        Some(last)
                    }
                };
                out.push((bound, p));
            }
            if out.is_empty() {
                return Err(err(format!("{field}.tiers"), "list at least one tier"));
            }
            Model::Tiered(out)
        }
    })
}

/// A validated tariff version with integer prices.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// As written.
    pub source: Tariff,
    /// Start, UTC ms (`i64::MIN`: always).
    pub from_ms: i64,
    /// Zone of the rules.
    pub tz: Tz,
    /// Decimals of money.
    pub decimals: u8,
    /// Billing day 1–28.
    pub billing_day: u32,
    /// Rates outside seasons.
    pub base: Model,
    /// (first MMDD, last MMDD, name, rates).
    pub seasons: Vec<(u32, u32, String, Model)>,
    /// (name, per, amount in micro-units).
    pub fixed: Vec<(String, Per, Micro)>,
    /// Sum of the taxes, parts per million.
    pub tax_ppm: i64,
    /// Holidays, sorted.
    pub holidays: Vec<NaiveDate>,
}

impl Compiled {
    /// Validates `t`; `default_tz` applies when it names no zone.
    pub fn new(t: &Tariff, default_tz: Tz) -> Result<Self, TariffError> {
        let tz: Tz = match &t.timezone {
            Some(z) => z
                .parse()
                .map_err(|_| err("timezone", format!("unknown IANA time zone {z:?}")))?,
            None => default_tz,
        };
        let cur = t.currency.trim();
        if cur.len() != 3 || !cur.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(err(
                "currency",
                format!("use an ISO 4217 code such as USD or EUR, got {cur:?}"),
            ));
        }
        let decimals =
            t.decimals
                .unwrap_or(if matches!(cur, "JPY" | "KRW" | "ISK" | "CLP" | "VND") {
                    0
                } else {
                    2
                });
        if decimals > 4 {
            return Err(err("decimals", "must be between 0 and 4"));
        }
        if !(1..=28).contains(&t.billing_day) {
            return Err(err(
                "billing_day",
                "must be between 1 and 28 (every month has it)",
            ));
        }
        let from_ms = match &t.effective_from {
            None => i64::MIN,
            Some(s) => parse_start(s, tz)
                .ok_or_else(|| err("effective_from", "use YYYY-MM-DD or RFC 3339"))?,
        };
        let base = match &t.rates {
            Some(r) => compile_rates("rates", r)?,
            None => Model::Flat(price("price_per_kwh", t.price_per_kwh)?),
        };
        let mut seasons = Vec::new();
        for (i, s) in t.seasons.iter().enumerate() {
            let f = format!("seasons[{i}]");
            seasons.push((
                month_day(&format!("{f}.start"), &s.start)?,
                month_day(&format!("{f}.end"), &s.end)?,
                s.name.clone(),
                compile_rates(&format!("{f}.rates"), &s.rates)?,
            ));
        }
        let mut fixed: Vec<(String, Per, Micro)> = Vec::new();
        for (i, c) in t.fixed_charges.iter().enumerate() {
            let amount = price(&format!("fixed_charges[{i}].amount"), c.amount)?;
            if c.name.trim().is_empty() || fixed.iter().any(|f| f.0 == c.name) {
                return Err(err(
                    format!("fixed_charges[{i}].name"),
                    "give every fixed charge its own name",
                ));
            }
            fixed.push((c.name.clone(), c.per, amount));
        }
        let mut tax_ppm = 0;
        for (i, x) in t.taxes.iter().enumerate() {
            if !(x.percent.is_finite() && (0.0..=100.0).contains(&x.percent)) {
                return Err(err(
                    format!("taxes[{i}].percent"),
                    "must be between 0 and 100",
                ));
            }
            tax_ppm += (x.percent * 1e4).round() as i64;
        }
        let mut holidays = Vec::new();
        for (i, h) in t.holidays.iter().enumerate() {
            holidays.push(
                NaiveDate::parse_from_str(h, "%Y-%m-%d")
                    .map_err(|_| err(format!("holidays[{i}]"), "use YYYY-MM-DD"))?,
            );
        }
        holidays.sort_unstable();
        if from_ms != i64::MIN && from_ms.rem_euclid(900_000) != 0 {
            return Err(err(
                "effective_from",
                "must fall on a quarter hour (costs are computed per 15 minutes)",
            ));
        }
        Ok(Self {
            source: t.clone(),
            from_ms,
            tz,
            decimals,
            billing_day: u32::from(t.billing_day),
            base,
            seasons,
            fixed,
            tax_ppm,
            holidays,
        })
    }

    /// The rates in force on local date `d`, and the season's name.
    pub fn model_on(&self, d: NaiveDate) -> (&Model, Option<&str>) {
        let md = d.month() * 100 + d.day();
        for (a, b, name, m) in &self.seasons {
            let inside = if a <= b {
                (*a..=*b).contains(&md)
            } else {
                md >= *a || md <= *b
            };
            if inside {
                return (m, Some(name));
            }
        }
        (&self.base, None)
    }

    /// ISO weekday of local date `d` for time-of-use: a holiday counts as Sunday.
    pub fn weekday(&self, d: NaiveDate) -> u32 {
        if self.holidays.binary_search(&d).is_ok() {
            7
        } else {
            d.weekday().number_from_monday()
        }
    }

    /// The version as stored: its zone written out and `effective_from` as an instant, so
    /// that a later change of the daemon's zone cannot move it.
    pub fn pinned(&self) -> Tariff {
        let mut t = self.source.clone();
        t.timezone = Some(self.tz.name().to_owned());
        if self.from_ms != i64::MIN {
            t.effective_from = Some(crate::clock::rfc3339(self.from_ms));
        }
        t
    }

    /// Whether any rates of this version are tiered.
    pub fn has_tiers(&self) -> bool {
        matches!(self.base, Model::Tiered(_))
            || self.seasons.iter().any(|s| matches!(s.3, Model::Tiered(_)))
    }

    /// The price series its dynamic rates read.
    pub fn series(&self) -> Vec<&str> {
        std::iter::once(&self.base)
            .chain(self.seasons.iter().map(|s| &s.3))
            .filter_map(|m| match m {
                Model::Dynamic(name, _, _) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Start (UTC ms) of the billing period holding `ts_ms`.
    pub fn billing_start(&self, ts_ms: i64) -> i64 {
        use chrono::TimeZone;
        let d = self.tz.timestamp_millis_opt(ts_ms).unwrap().date_naive();
        let this = d.with_day(self.billing_day).expect("billing day ≤ 28");
        let start = if d >= this {
            this
        } else {
            this.checked_sub_months(chrono::Months::new(1))
                .expect("a month before a valid date")
        };
        crate::domain::rollup::local_midnight(start, self.tz)
    }

    /// Start of the billing period after the one starting at `start_ms`.
    pub fn billing_end(&self, start_ms: i64) -> i64 {
        use chrono::TimeZone;
        let d = self.tz.timestamp_millis_opt(start_ms).unwrap().date_naive();
        let next = d
            .checked_add_months(chrono::Months::new(1))
            .expect("a month after a valid date");
        crate::domain::rollup::local_midnight(next, self.tz)
    }

    /// Short description for documents ("time-of-use, 2 periods").
    pub fn describe(&self) -> String {
        let model = |m: &Model| match m {
            Model::Flat(p) => format!("flat {}", micro_text(*p)),
            Model::Tou(b, _, _) => format!("time-of-use, {} periods", b.len()),
            Model::Tiered(t) => format!("tiered, {} tiers", t.len()),
            Model::Dynamic(name, _, _) => format!("dynamic prices of {name}"),
        };
        let mut s = model(&self.base);
        for (_, _, name, m) in &self.seasons {
            s.push_str(&format!("; {name}: {}", model(m)));
        }
        s
    }
}

/// A micro-unit amount as decimal text without trailing zeros.
pub fn micro_text(m: Micro) -> String {
    let mut b = Vec::new();
    crate::numfmt::push_num(&mut b, m as f64 / 1e6, 6);
    String::from_utf8_lossy(&b).into_owned()
}

/// `YYYY-MM-DD` (local midnight in `tz`) or RFC 3339, as UTC ms.
pub fn parse_start(s: &str, tz: Tz) -> Option<i64> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(crate::domain::rollup::local_midnight(d, tz));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}
