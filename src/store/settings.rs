//! Settings made through the API (they win over the config file's): small JSON records by
//! name, each change audited in the same transaction.

use super::schema::SETTINGS;
use super::{Error, Result, Store};
use redb::ReadableDatabase;
use serde::Serialize;
use serde::de::DeserializeOwned;

impl Store {
    /// The setting `name`, if one was made.
    pub fn setting<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(SETTINGS)?;
        t.get(name)?
            .map(|v| {
                serde_json::from_slice(v.value())
                    .map_err(|e| Error::Corrupt(format!("setting {name}: {e}")))
            })
            .transpose()
    }

    /// Stores the setting `name`, with its audit entry.
    pub fn setting_put<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        audit: Option<super::audit::Pending<'_>>,
    ) -> Result<()> {
        let b = serde_json::to_vec(value).map_err(|e| Error::Corrupt(e.to_string()))?;
        let txn = self.begin_write()?;
        txn.open_table(SETTINGS)?.insert(name, b.as_slice())?;
        if let Some(a) = audit {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(())
    }
}
