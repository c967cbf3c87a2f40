//! Price series of dynamic tariffs: per series, intervals (start, end) with a price per kWh in
//! micro-units; a new upload replaces the intervals with the same starts.

use super::audit::Pending;
use super::schema::PRICES;
use super::{Result, Store};
use redb::{ReadableDatabase, ReadableTable};

/// One interval of a price series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricePoint {
    /// Start, UTC ms.
    pub start_ms: i64,
    /// End (exclusive), UTC ms.
    pub end_ms: i64,
    /// Price of a kWh, micro-units of the currency (may be negative).
    pub micro: i64,
}

impl Store {
    /// The intervals of `series` that overlap `[start, end)`, in order (the one that began
    /// before `start` included).
    pub fn price_points(&self, series: &str, start: i64, end: i64) -> Result<Vec<PricePoint>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(PRICES)?;
        let mut out = Vec::new();
        if let Some(e) = t.range((series, i64::MIN)..(series, start))?.next_back() {
            let (k, v) = e?;
            let (end_ms, micro) = v.value();
            if end_ms > start {
                out.push(PricePoint {
                    start_ms: k.value().1,
                    end_ms,
                    micro,
                });
            }
        }
        for e in t.range((series, start)..(series, end))? {
            let (k, v) = e?;
            let (end_ms, micro) = v.value();
            out.push(PricePoint {
                start_ms: k.value().1,
                end_ms,
                micro,
            });
        }
        Ok(out)
    }

    /// Stores `points` (in order, not overlapping) into `series`, with `audit`, in one
    /// transaction: what was stored for their span is replaced, and an earlier interval that
    /// ran into it is cut short, so intervals never overlap.
    pub fn prices_put(
        &self,
        series: &str,
        points: &[PricePoint],
        audit: Pending<'_>,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return Ok(());
        };
        let (from, to) = (first.start_ms, last.end_ms);
        let txn = self.begin_write()?;
        {
            let mut t = txn.open_table(PRICES)?;
            let before = t
                .range((series, i64::MIN)..(series, from))?
                .next_back()
                .transpose()?
                .map(|(k, v)| (k.value().1, v.value()));
            if let Some((start, (end, micro))) = before
                && end > from
            {
                t.insert((series, start), (from, micro))?;
            }
            let old: Vec<i64> = t
                .range((series, from)..(series, to))?
                .map(|e| e.map(|(k, _)| k.value().1))
                .collect::<std::result::Result<_, _>>()?;
            for start in old {
                t.remove((series, start))?;
            }
            for p in points {
                t.insert((series, p.start_ms), (p.end_ms, p.micro))?;
            }
        }
        audit.append_in(&txn)?;
        txn.commit()?;
        Ok(())
    }
}
