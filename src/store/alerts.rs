//! Alert rules and alerts: one JSON record each by id, changed together with its audit entry.

use super::audit::Pending;
use super::schema::{ALERT_RULES, ALERTS};
use super::{Result, Store};
use crate::domain::alert::{Alert, Rule, State};

impl Store {
    /// Every alert rule, by id.
    pub fn alert_rules(&self) -> Result<Vec<Rule>> {
        self.records(ALERT_RULES, "alert rule")
    }

    /// One alert rule.
    pub fn alert_rule(&self, id: &str) -> Result<Option<Rule>> {
        self.record(ALERT_RULES, "alert rule", id)
    }

    /// Stores `rule` (new or replaced), with `audit`.
    pub fn alert_rule_put(&self, rule: &Rule, audit: Option<Pending<'_>>) -> Result<()> {
        self.put_records(
            ALERT_RULES,
            &[(rule.rule_id.as_str(), rule)],
            &[],
            audit.into_iter().collect(),
        )
    }

    /// Removes rule `id`, with `audit`.
    pub fn alert_rule_delete(&self, id: &str, audit: Option<Pending<'_>>) -> Result<()> {
        self.put_records::<Rule>(ALERT_RULES, &[], &[id], audit.into_iter().collect())
    }

    /// Every stored alert, by id.
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        self.records(ALERTS, "alert")
    }

    /// One alert.
    pub fn alert(&self, id: &str) -> Result<Option<Alert>> {
        self.record(ALERTS, "alert", id)
    }

    /// Stores alerts (new or changed), with their audit entries, in one transaction.
    pub fn alerts_put(&self, alerts: &[&Alert], audit: Vec<Pending<'_>>) -> Result<()> {
        let put: Vec<(&str, &&Alert)> = alerts.iter().map(|a| (a.alert_id.as_str(), a)).collect();
        self.put_records(ALERTS, &put, &[], audit)
    }

    /// Removes resolved alerts resolved before `before_ms`; returns how many.
    pub fn alerts_retain(&self, before_ms: i64) -> Result<u64> {
        let old: Vec<String> = self
            .alerts()?
            .into_iter()
            .filter(|a| a.state == State::Resolved && a.resolved_ms.is_some_and(|t| t < before_ms))
            .map(|a| a.alert_id)
            .collect();
        let ids: Vec<&str> = old.iter().map(String::as_str).collect();
        self.put_records::<Alert>(ALERTS, &[], &ids, Vec::new())?;
        Ok(old.len() as u64)
    }
}
