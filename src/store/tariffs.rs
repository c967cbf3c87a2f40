//! Tariff versions: an append-only list, oldest first. The config file seeds the first
//! version once; later versions come from `PUT /api/tariffs` (audited in the same
//! transaction). Stored versions are never changed, so past costs never change silently.

use super::schema::TARIFFS;
use super::{Error, Result, Store};
use crate::domain::tariff::Tariff;
use redb::{ReadableDatabase, ReadableTable};

fn decode(b: &[u8]) -> Result<Tariff> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(format!("tariff: {e}")))
}

impl Store {
    /// Every tariff version, oldest first.
    pub fn tariffs(&self) -> Result<Vec<Tariff>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(TARIFFS)?;
        t.iter()?.map(|e| decode(e?.1.value())).collect()
    }

    /// Stores `seed` as the first version when there is none; returns the versions.
    pub fn tariffs_seed(&self, seed: &Tariff) -> Result<Vec<Tariff>> {
        let txn = self.begin_write()?;
        {
            let mut t = txn.open_table(TARIFFS)?;
            if t.first()?.is_none() {
                let b = serde_json::to_vec(seed).map_err(|e| Error::Corrupt(e.to_string()))?;
                t.insert(1, b.as_slice())?;
            }
        }
        txn.commit()?;
        self.tariffs()
    }

    /// Appends a version if `check` accepts it after the stored ones (checked inside the
    /// write transaction, so two concurrent changes cannot both pass); `Ok(Err(why))` when
    /// refused.
    pub fn tariff_append<E>(
        &self,
        version: &Tariff,
        check: impl FnOnce(&[Tariff]) -> std::result::Result<(), E>,
        audit: Option<super::audit::Pending<'_>>,
    ) -> Result<std::result::Result<u64, E>> {
        let txn = self.begin_write()?;
        let n = {
            let mut t = txn.open_table(TARIFFS)?;
            let old: Vec<Tariff> = t
                .iter()?
                .map(|e| decode(e?.1.value()))
                .collect::<Result<_>>()?;
            if let Err(why) = check(&old) {
                return Ok(Err(why));
            }
            let n = t.last()?.map_or(1, |(k, _)| k.value() + 1);
            let b = serde_json::to_vec(version).map_err(|e| Error::Corrupt(e.to_string()))?;
            t.insert(n, b.as_slice())?;
            n
        };
        if let Some(a) = audit {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(Ok(n))
    }
}
