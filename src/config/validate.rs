//! What types alone do not check: ranges, combinations and allow-lists (errors), and valid but
//! probably unintended settings (warnings, said by `check-config` and at start).

use super::{ConfigError, Settings, invalid};
use std::time::Duration;

impl Settings {
    /// `[[price_feeds]]`: a series name and a layout (the URL is checked against `[delivery]
    /// webhook_allow` at start and at every fetch).
    fn check_price_feeds(&self) -> Result<(), ConfigError> {
        for (i, f) in self.price_feeds.iter().enumerate() {
            if !crate::domain::tariff::series_name_ok(&f.series) {
                return Err(invalid(
                    &format!("price_feeds[{i}].series"),
                    "1 to 64 letters, digits, '-' or '_'",
                ));
            }
            if !["csv", "json", "awattar", "octopus"].contains(&f.layout.as_str()) {
                return Err(invalid(
                    &format!("price_feeds[{i}].layout"),
                    "csv, json, awattar or octopus",
                ));
            }
        }
        Ok(())
    }

    /// `[[push]]`: names, kinds, series and limits (URLs and secret files are checked where
    /// the targets are made, at start: `crate::push::Target::new`).
    fn check_push(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.push.iter().enumerate() {
            let key = |k: &str| format!("push[{i}].{k}");
            if !crate::domain::tariff::series_name_ok(&p.name) || !names.insert(p.name.as_str()) {
                return Err(invalid(
                    &key("name"),
                    "1 to 64 letters, digits, '-' or '_', different for every target",
                ));
            }
            if !["remote_write", "influx"].contains(&p.kind.as_str()) {
                return Err(invalid(&key("kind"), "remote_write or influx"));
            }
            if !["raw", "rollups"].contains(&p.series.as_str()) {
                return Err(invalid(&key("series"), "raw or rollups"));
            }
            if !(1..=100_000).contains(&p.batch) {
                return Err(invalid(&key("batch"), "1 to 100000 readings"));
            }
            if p.retry_max.0 < Duration::from_millis(100) || p.max_age.0 < Duration::from_secs(60) {
                return Err(invalid(
                    &key("retry_max"),
                    "retry_max at least 100ms, max_age at least 1m",
                ));
            }
            if p.username.is_some() != p.password_file.is_some()
                || (p.username.is_some() && p.bearer_token_file.is_some())
            {
                return Err(invalid(
                    &key("username"),
                    "basic auth takes username and password_file; or bearer_token_file alone",
                ));
            }
            if p.kind == "influx" && p.database.is_none() && (p.org.is_none() || p.bucket.is_none())
            {
                return Err(invalid(
                    &key("database"),
                    "influx needs database (1.x /write) or org and bucket (2.x /api/v2/write)",
                ));
            }
            if p.site.len() > 128 || p.site.chars().any(char::is_control) {
                return Err(invalid(&key("site"), "at most 128 printable characters"));
            }
        }
        Ok(())
    }

    /// Valid but probably unintended settings, in words (`check-config` and the daemon's start
    /// say them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.http.trusted_proxies {
            if p.prefix() == 0 {
                let p = p.to_string();
                out.push(format!(
                    "[http] trusted_proxies {p:?} trusts X-Forwarded-For from every client: anyone \
                     can choose the address that login throttling and the audit log see; list \
                     only the proxy's own address"
                ));
            }
        }
        if self.mdns.enabled && self.http.listen.ip().is_loopback() {
            out.push(format!(
                "[mdns] enabled, but [http] listen = {} is a loopback address: nothing is announced",
                self.http.listen
            ));
        }
        let m = &self.mqtt;
        if m.enabled && m.allow_control && (!m.tls || m.username.is_empty()) {
            let why = match (m.tls, m.username.is_empty()) {
                (false, true) => "over plain TCP to an anonymous broker",
                (false, false) => "over plain TCP (the password and commands travel in clear)",
                _ => "on an anonymous broker",
            };
            out.push(format!(
                "[mqtt] allow_control = true {why}: anyone who can publish to the broker can \
                 switch your plugs; use tls = true with a username and password_file"
            ));
        }
        out
    }

    /// Checks values that types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let targets = self.discovery_targets()?;
        let hosts = self.static_hosts()?;
        let outside = targets.iter().chain(&hosts).find(|a| !a.ip().is_loopback());
        if let (true, Some(bad)) = (self.discovery.loopback_only, outside) {
            return Err(invalid(
                "discovery.loopback_only",
                format!("{bad} is not a loopback address; only 127.0.0.0/8 is allowed here"),
            ));
        }
        for (key, d) in [
            ("poll.interval", self.poll.interval),
            ("poll.timeout", self.poll.timeout),
            ("discovery.interval", self.discovery.interval),
            ("discovery.window", self.discovery.window),
            ("storage.commit_interval", self.storage.commit_interval),
            (
                "storage.checkpoint_interval",
                self.storage.checkpoint_interval,
            ),
            ("delivery.timeout", self.delivery.timeout),
            ("delivery.link_ttl", self.delivery.link_ttl),
            ("http.header_timeout", self.http.header_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
            ("http.body_timeout", self.http.body_timeout),
        ] {
            if d.0.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if let Some(b) = self.insights.monthly_budget
            && !(b.is_finite() && b > 0.0)
        {
            return Err(invalid(
                "insights.monthly_budget",
                "must be a positive amount",
            ));
        }
        if !(1..=240).contains(&self.insights.run_end_minutes) {
            return Err(invalid(
                "insights.run_end_minutes",
                "must be 1 to 240 minutes",
            ));
        }
        if !(self.insights.unusual_min_kwh.is_finite() && self.insights.unusual_min_kwh >= 0.0) {
            return Err(invalid("insights.unusual_min_kwh", "must be 0 or more kWh"));
        }
        self.check_price_feeds()?;
        self.check_push()?;
        if !["auto", "builtin", "avahi"].contains(&self.mdns.responder.as_str()) {
            return Err(invalid(
                "mdns.responder",
                "must be \"auto\", \"builtin\" or \"avahi\"",
            ));
        }
        // With the host name in place (`%h`) it is checked where mDNS starts.
        let name = self.mdns.instance.replace("%h", "");
        if self.mdns.enabled && (self.mdns.instance.trim().is_empty() || name.len() > 63) {
            return Err(invalid(
                "mdns.instance",
                format!(
                    "{:?} must be 1 to 63 bytes long (a DNS label)",
                    self.mdns.instance
                ),
            ));
        }
        for (key, v) in [
            ("poll.concurrency", self.poll.concurrency),
            ("http.max_connections", self.http.max_connections),
            ("auth.argon2_concurrency", self.auth.argon2_concurrency),
            ("exports.distinct_budget", self.exports.distinct_budget),
            ("exports.max_custom_fields", self.exports.max_custom_fields),
            ("schedules.max_per_user", self.schedules.max_per_user),
            (
                "schedules.max_runs_per_hour",
                self.schedules.max_runs_per_hour,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !(1..=100).contains(&self.schedules.quota_share_percent) {
            return Err(invalid("schedules.quota_share_percent", "must be 1 to 100"));
        }
        let topic_ok = |t: &str| {
            !t.starts_with('$') && !t.contains(['+', '#']) && t.split('/').all(|l| !l.is_empty())
        };
        for (key, t) in [
            ("mqtt.topic_prefix", &self.mqtt.topic_prefix),
            ("mqtt.discovery_prefix", &self.mqtt.discovery_prefix),
        ] {
            if !topic_ok(t) {
                return Err(invalid(
                    key,
                    "must be a topic without wildcards or a trailing /",
                ));
            }
        }
        if self.kasa.password_file.is_some() && self.kasa.username.is_empty() {
            return Err(invalid("kasa.password_file", "needs kasa.username"));
        }
        if self.mqtt.password_file.is_some() && self.mqtt.username.is_empty() {
            return Err(invalid("mqtt.password_file", "needs mqtt.username"));
        }
        if self.mqtt.qos > 1 {
            return Err(invalid("mqtt.qos", "must be 0 or 1"));
        }
        if self.mqtt.enabled && (self.mqtt.host.is_empty() || self.mqtt.client_id.is_empty()) {
            return Err(invalid(
                "mqtt.host",
                "a broker host and a client id are needed",
            ));
        }
        self.validate_exports()
    }

    fn validate_exports(&self) -> Result<(), ConfigError> {
        let e = &self.exports;
        for (key, v) in [
            ("exports.max_records_per_export", e.max_records_per_export),
            (
                "exports.max_date_range_days",
                u64::from(e.max_date_range_days),
            ),
            (
                "exports.max_concurrent_exports",
                e.max_concurrent_exports as u64,
            ),
            ("exports.max_file_size_mb", e.max_file_size_mb),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !["A4", "Letter"].contains(&e.pdf_page_size.as_str()) {
            return Err(invalid(
                "exports.pdf_page_size",
                format!("must be \"A4\" or \"Letter\", got {:?}", e.pdf_page_size),
            ));
        }
        crate::domain::tariff::Compiled::new(&self.tariff, self.tz())
            .map_err(|e| invalid(&format!("tariff.{}", e.field), e.message))?;
        if let Some(u) = &self.http.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid(
                "http.public_url",
                "must start with http:// or https://",
            ));
        }
        self.validate_delivery()
    }

    fn validate_delivery(&self) -> Result<(), ConfigError> {
        if let Some(r) = self
            .delivery
            .directory_roots
            .iter()
            .find(|r| !r.is_absolute())
        {
            return Err(invalid(
                "delivery.directory_roots",
                format!("{} is not an absolute path", r.display()),
            ));
        }
        for u in &self.delivery.webhook_allow {
            let ok = reqwest::Url::parse(u).is_ok_and(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.host_str().is_some()
                    && p.username().is_empty()
                    && p.password().is_none()
            });
            if !ok {
                return Err(invalid(
                    "delivery.webhook_allow",
                    format!(
                        "{u:?} must be an http:// or https:// URL with a host and no user name (e.g. \"https://ha.local:8123/api/webhook/\")"
                    ),
                ));
            }
        }
        if self.delivery.retries > 10 {
            return Err(invalid("delivery.retries", "must be at most 10"));
        }
        if self.delivery.link_ttl.0 > Duration::from_secs(90 * 86_400) {
            return Err(invalid("delivery.link_ttl", "must be at most 90d"));
        }
        if self.smtp.tls == "none" && !self.smtp.username.is_empty() {
            return Err(invalid(
                "smtp.username",
                "a login over tls = \"none\" would send the password in clear text; use starttls or tls",
            ));
        }
        if !["auth", "open", "off"].contains(&self.metrics.access.as_str()) {
            return Err(invalid(
                "metrics.access",
                format!("must be auth, open or off, got {:?}", self.metrics.access),
            ));
        }
        if !["starttls", "tls", "none"].contains(&self.smtp.tls.as_str()) {
            return Err(invalid(
                "smtp.tls",
                format!(
                    "must be \"starttls\", \"tls\" or \"none\", got {:?}",
                    self.smtp.tls
                ),
            ));
        }
        if !self.smtp.host.is_empty() {
            self.smtp
                .from
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| invalid("smtp.from", format!("{:?}: {e}", self.smtp.from)))?;
        }
        Ok(())
    }
}
