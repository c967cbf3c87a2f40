//! Alert rules and alerts: one JSON record each by id, changed together with its audit entry.

use super::audit::Pending;
use super::schema::{ALERT_RULES, ALERTS};
use super::{Error, Result, Store};
use crate::domain::alert::{Alert, Rule, State};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

fn decode<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

impl Store {
    fn records<T: DeserializeOwned>(&self, table: Table, what: &str) -> Result<Vec<T>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(table)?;
        t.iter()?.map(|e| decode(what, e?.1.value())).collect()
    }

    fn record<T: DeserializeOwned>(&self, table: Table, what: &str, id: &str) -> Result<Option<T>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(table)?;
        t.get(id)?.map(|v| decode(what, v.value())).transpose()
    }

    /// Stores records (new or replaced) and removes `gone`, with `audit`, in one transaction.
    fn put_records<T: Serialize>(
        &self,
        table: Table,
        put: &[(&str, &T)],
        gone: &[&str],
        audit: Vec<Pending<'_>>,
    ) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut t = txn.open_table(table)?;
            for (id, rec) in put {
                let b = serde_json::to_vec(rec).map_err(|e| Error::Corrupt(e.to_string()))?;
                t.insert(*id, b.as_slice())?;
            }
            for id in gone {
                t.remove(*id)?;
            }
        }
        for a in audit {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(())
    }

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
