//! Utility bills: one JSON record each by id, changed together with its audit entry.

use super::audit::Pending;
use super::schema::BILLS;
use super::{Result, Store};
use crate::domain::bill::Bill;

impl Store {
    /// Every bill, by id.
    pub fn bills(&self) -> Result<Vec<Bill>> {
        self.records(BILLS, "bill")
    }

    /// One bill.
    pub fn bill(&self, id: &str) -> Result<Option<Bill>> {
        self.record(BILLS, "bill", id)
    }

    /// Stores `bill` (new or replaced), with `audit`.
    pub fn bill_put(&self, bill: &Bill, audit: Pending<'_>) -> Result<()> {
        self.put_records(BILLS, &[(bill.bill_id.as_str(), bill)], &[], vec![audit])
    }

    /// Removes bill `id`, with `audit`.
    pub fn bill_delete(&self, id: &str, audit: Pending<'_>) -> Result<()> {
        self.put_records::<Bill>(BILLS, &[], &[id], vec![audit])
    }
}
