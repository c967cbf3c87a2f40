//! Tables of JSON records by id (alert rules, alerts, bills): read all, read one, and store or
//! remove several with their audit entries in one transaction.

use super::audit::Pending;
use super::{Error, Result, Store};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(super) type Table = TableDefinition<'static, &'static str, &'static [u8]>;

fn decode<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

impl Store {
    pub(super) fn records<T: DeserializeOwned>(&self, table: Table, what: &str) -> Result<Vec<T>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(table)?;
        t.iter()?.map(|e| decode(what, e?.1.value())).collect()
    }

    pub(super) fn record<T: DeserializeOwned>(
        &self,
        table: Table,
        what: &str,
        id: &str,
    ) -> Result<Option<T>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(table)?;
        t.get(id)?.map(|v| decode(what, v.value())).transpose()
    }

    /// Stores records (new or replaced) and removes `gone`, with `audit`, in one transaction.
    pub(super) fn put_records<T: Serialize>(
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
}
