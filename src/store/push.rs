//! The push targets' state as the store keeps it: one small record per target (what it
//! acknowledged), written with the writer's discipline — not durable by itself, made durable
//! by the next checkpoint, and durable when asked (shutdown, a finished backfill).

use super::schema::PUSH;
use super::{Result, Store};
use redb::{Durability, ReadableDatabase};

impl Store {
    /// The stored state of push target `name`, if any.
    pub fn push_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(PUSH)?;
        Ok(t.get(name)?.map(|v| v.value().to_vec()))
    }

    /// Stores the state of push target `name`; `durable`: survives a power cut when this
    /// returns (otherwise with the next durable commit of anyone).
    pub fn push_state_put(&self, name: &str, state: &[u8], durable: bool) -> Result<()> {
        let mut txn = self.begin_write()?;
        if !durable {
            txn.set_durability(Durability::None)?;
        }
        txn.open_table(PUSH)?.insert(name, state)?;
        txn.commit()?;
        Ok(())
    }
}
