//! Evaluation: a row formula over one row, an aggregate formula streamed through an
//! [`Aggregator`] with SQL-like null rules and a compensated sum.

use super::parse::*;

use super::*;

/// Supplies leaf values to [`eval`]; monomorphised, so no dynamic dispatch.
pub(super) trait Leaves {
    fn var(&self, index: usize) -> Option<f64>;
    fn time(&self, t: TimeFn) -> Option<f64>;
    fn agg(&self, slot: usize) -> Option<f64>;
}

impl Leaves for RowCtx<'_> {
    #[inline]
    fn var(&self, index: usize) -> Option<f64> {
        self.values
            .get(index)
            .copied()
            .flatten()
            .filter(|v| v.is_finite())
    }

    #[inline]
    fn time(&self, t: TimeFn) -> Option<f64> {
        Some(match t {
            TimeFn::Date => self.day as f64,
            TimeFn::Hour => f64::from(self.hour),
            TimeFn::Weekday => f64::from(self.weekday),
            TimeFn::Month => f64::from(self.month),
        })
    }

    #[inline]
    fn agg(&self, _slot: usize) -> Option<f64> {
        None
    }
}

/// Leaves of the outer expression of an aggregate formula at `finish`.
struct Finished<'a>(&'a [AggState]);

impl Leaves for Finished<'_> {
    fn var(&self, _index: usize) -> Option<f64> {
        None
    }

    fn time(&self, _t: TimeFn) -> Option<f64> {
        None
    }

    fn agg(&self, slot: usize) -> Option<f64> {
        self.0.get(slot).and_then(AggState::value)
    }
}

#[inline]
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Turns `-0.0` into `0.0` (also the normal form for DISTINCT keys).
#[inline]
pub(super) fn normalize_zero(v: f64) -> f64 {
    if v == 0.0 { 0.0 } else { v }
}

/// Rounds half away from zero to the precision given by `scale` (`10^n`).
fn round_half_away(x: f64, scale: f64) -> f64 {
    let scaled = x * scale;
    if !scaled.is_finite() {
        // So large that it has no fractional digits at this precision.
        return x;
    }
    let rounded = scaled.round() / scale;
    if rounded.is_finite() { rounded } else { x }
}

/// Evaluates `e`; every `Some` result is finite.
pub(super) fn eval<L: Leaves>(e: &Expr, leaves: &L) -> Option<f64> {
    match e {
        Expr::Num(v) => Some(*v),
        Expr::Var(index) => leaves.var(*index),
        Expr::Time(t) => leaves.time(*t),
        Expr::Agg(slot) => leaves.agg(*slot),
        Expr::Neg(x) => Some(-eval(x, leaves)?),
        Expr::Bin(op, a, b) => {
            let a = eval(a, leaves)?;
            let b = eval(b, leaves)?;
            let r = match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div | BinOp::Rem if b == 0.0 => return None,
                BinOp::Div => a / b,
                BinOp::Rem => a % b,
            };
            finite(r)
        }
        Expr::Math(f, x) => {
            let x = eval(x, leaves)?;
            match f {
                MathFn::Abs => Some(x.abs()),
                MathFn::Floor => Some(x.floor()),
                MathFn::Ceil => Some(x.ceil()),
                MathFn::Sqrt if x < 0.0 => None,
                MathFn::Sqrt => Some(x.sqrt()),
            }
        }
        Expr::Round(x, scale) => Some(round_half_away(eval(x, leaves)?, *scale)),
    }
}

/// Neumaier-compensated running sum of non-null values.
#[derive(Debug, Clone, Default)]
pub(super) struct SumAcc {
    pub(super) sum: f64,
    pub(super) compensation: f64,
    pub(super) n: u64,
}

impl SumAcc {
    pub(super) fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.compensation += (self.sum - t) + v;
        } else {
            self.compensation += (v - t) + self.sum;
        }
        self.sum = t;
        self.n += 1;
    }

    pub(super) fn total(&self) -> f64 {
        self.sum + self.compensation
    }
}

#[derive(Debug, Clone)]
pub(super) enum AggState {
    Sum(SumAcc),
    Avg(SumAcc),
    Min(Option<f64>),
    Max(Option<f64>),
    CountAll(u64),
    Count(u64),
    Distinct(HashSet<u64>),
}

impl AggState {
    pub(super) fn new(kind: AggKind) -> Self {
        match kind {
            AggKind::Sum => Self::Sum(SumAcc::default()),
            AggKind::Avg => Self::Avg(SumAcc::default()),
            AggKind::Min => Self::Min(None),
            AggKind::Max => Self::Max(None),
            AggKind::CountAll => Self::CountAll(0),
            AggKind::Count => Self::Count(0),
            AggKind::CountDistinct => Self::Distinct(HashSet::new()),
        }
    }

    pub(super) fn value(&self) -> Option<f64> {
        match self {
            Self::Sum(acc) if acc.n > 0 => finite(acc.total()),
            Self::Avg(acc) if acc.n > 0 => finite(acc.total() / acc.n as f64),
            Self::Sum(_) | Self::Avg(_) => None,
            Self::Min(m) | Self::Max(m) => *m,
            Self::CountAll(n) | Self::Count(n) => Some(*n as f64),
            Self::Distinct(set) => Some(set.len() as f64),
        }
    }
}

impl Aggregator {
    /// Feeds one row. Err(TooManyDistinct) once a DISTINCT set would exceed MAX_DISTINCT.
    ///
    /// After an error the aggregator is spent: every later `add` returns the
    /// same error and [`Aggregator::finish`] returns `None`. Does not
    /// allocate except to grow a `COUNT(DISTINCT …)` set.
    pub fn add(&mut self, row: &RowCtx<'_>) -> Result<(), FormulaError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        for (spec, state) in self.program.aggs.iter().zip(self.states.iter_mut()) {
            let value = match &spec.arg {
                Some(arg) => eval(arg, row),
                None => None,
            };
            match state {
                AggState::CountAll(n) => *n += 1,
                AggState::Count(n) => {
                    if value.is_some() {
                        *n += 1;
                    }
                }
                AggState::Sum(acc) | AggState::Avg(acc) => {
                    if let Some(v) = value {
                        acc.add(v);
                    }
                }
                AggState::Min(m) => {
                    if let Some(v) = value {
                        *m = Some(m.map_or(v, |cur| cur.min(v)));
                    }
                }
                AggState::Max(m) => {
                    if let Some(v) = value {
                        *m = Some(m.map_or(v, |cur| cur.max(v)));
                    }
                }
                AggState::Distinct(set) => {
                    if let Some(v) = value {
                        let key = normalize_zero(v).to_bits();
                        if !set.contains(&key) {
                            let taken = match &self.budget {
                                _ if set.len() >= self.distinct_limit => {
                                    Err(FormulaError::TooManyDistinct { max: MAX_DISTINCT })
                                }
                                Some(b) => b.take(),
                                None => Ok(()),
                            };
                            if let Err(e) = taken {
                                self.failed = Some(e.clone());
                                return Err(e);
                            }
                            set.insert(key);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Final value: the outer arithmetic applied to the finished aggregates. SQL null semantics: aggregates skip null inputs; SUM/AVG/MIN/MAX over no non-null input are null (COUNT is 0); null propagates through arithmetic; division by zero → null.
    ///
    /// Also `None` for a row formula and after [`Aggregator::add`] failed.
    /// Can be called at any time and does not consume the state.
    pub fn finish(&self) -> Option<f64> {
        if self.failed.is_some() || self.states.is_empty() {
            return None;
        }
        eval(&self.program.root, &Finished(&self.states)).map(normalize_zero)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn modulo() {
        assert_eq!(num("7 % 3"), Some(1.0));
        assert_eq!(num("-7 % 3"), Some(-1.0));
        assert_eq!(num("7.5 % 2"), Some(1.5));
        assert_eq!(num("2 * 7 % 4"), Some(2.0));
        assert_eq!(num("1 + 7 % 4"), Some(4.0));
        assert_eq!(num("5 % 0"), None);
    }

    #[test]
    fn round_half_away_from_zero() {
        assert_eq!(num("ROUND(2.5)"), Some(3.0));
        assert_eq!(num("ROUND(-2.5)"), Some(-3.0));
        assert_eq!(num("ROUND(2.4)"), Some(2.0));
        assert_eq!(num("ROUND(-2.4)"), Some(-2.0));
        assert_eq!(num("ROUND(0.5)"), Some(1.0));
        assert_eq!(num("ROUND(-0.5)"), Some(-1.0));
        assert_eq!(num("ROUND(1.25, 1)"), Some(1.3));
        assert_eq!(num("ROUND(-1.25, 1)"), Some(-1.3));
        assert_eq!(num("ROUND(1.23456, 2)"), Some(1.23));
        assert_eq!(num("ROUND(2.5, 0)"), Some(3.0));
        assert_eq!(num("round(1.23456789012, 9)"), Some(1.234_567_89));
        assert_eq!(num("ROUND(1e300, 9)"), Some(1e300));
        // -0 is reported as 0.
        let r = num("ROUND(-0.4)").unwrap();
        assert_eq!(r, 0.0);
        assert!(r.is_sign_positive());
        assert_eq!(num("ROUND(5, (2))"), Some(5.0));
        for bad in [
            "ROUND(1, 10)",
            "ROUND(1, 1.5)",
            "ROUND(1, -1)",
            "ROUND(1, power_w)",
            "ROUND(1, 1 + 1)",
        ] {
            assert!(misuse(bad).contains("from 0 to 9"), "{bad}");
        }
        for bad in ["ROUND()", "ROUND(1, 2, 3)"] {
            assert!(misuse(bad).contains("one or two arguments"), "{bad}");
        }
    }

    #[test]
    fn math_functions_and_case_insensitivity() {
        assert_eq!(num("ABS(-3)"), Some(3.0));
        assert_eq!(num("abs(-3)"), Some(3.0));
        assert_eq!(num("Abs(3)"), Some(3.0));
        assert_eq!(num("FLOOR(-1.5)"), Some(-2.0));
        assert_eq!(num("CEIL(1.2)"), Some(2.0));
        assert_eq!(num("SQRT(9)"), Some(3.0));
        assert_eq!(num("SQRT(-1)"), None);
        assert_eq!(num("SQRT(0)"), Some(0.0));
        assert_eq!(num("ABS(FLOOR(-2.5) * 2)"), Some(6.0));
        assert!(misuse("ABS()").contains("exactly one argument"));
        assert!(misuse("ABS(1, 2)").contains("exactly one argument"));
    }

    #[test]
    fn null_propagation() {
        let v = [None, Some(2.0), Some(f64::NAN), Some(f64::INFINITY)];
        assert_eq!(row_eval("power_w + 1", &v), None);
        assert_eq!(row_eval("power_w * 0", &v), None);
        assert_eq!(row_eval("ABS(power_w)", &v), None);
        assert_eq!(row_eval("ROUND(power_w, 2)", &v), None);
        assert_eq!(row_eval("-power_w", &v), None);
        assert_eq!(row_eval("rated_power * 2", &v), Some(4.0));
        // NaN and infinity inputs are null.
        assert_eq!(row_eval("energy_kwh", &v), None);
        assert_eq!(row_eval("a", &v), None);
        // Index beyond the row's values is null, no panic.
        assert_eq!(row_eval("far_away + 1", &v), None);
        assert_eq!(row_eval("b", &[]), None);
    }

    #[test]
    fn division_by_zero_and_overflow() {
        assert_eq!(num("1 / 0"), None);
        assert_eq!(num("0 / 0"), None);
        assert_eq!(num("1 / -0"), None);
        assert_eq!(num("1 / (2 - 2)"), None);
        assert_eq!(
            row_eval("power_w / rated_power", &[Some(5.0), Some(0.0)]),
            None
        );
        assert_eq!(num("1e308 * 10"), None);
        assert_eq!(num("-1e308 - 1e308"), None);
        assert_eq!(num("1e308 * 10 * 0"), None);
    }

    #[test]
    fn time_functions_in_row_formulas() {
        let f = parse("DATE(timestamp) * 100 + HOUR(timestamp)").unwrap();
        let row = RowCtx {
            values: &[],
            day: 19_000,
            hour: 23,
            weekday: 7,
            month: 12,
        };
        assert_eq!(f.eval_row(&row), Some(1_900_023.0));
        let f = parse("weekday(timestamp) * 100 + Month(timestamp)").unwrap();
        assert_eq!(f.eval_row(&row), Some(712.0));
        let before_epoch = RowCtx { day: -3, ..row };
        assert_eq!(
            parse("DATE(timestamp)").unwrap().eval_row(&before_epoch),
            Some(-3.0)
        );
    }

    #[test]
    fn count_star_vs_count_x_and_other_aggregates() {
        let p = [Some(1.0), None, Some(3.0), Some(f64::NAN)];
        assert_eq!(agg_power("COUNT(*)", &p), Some(4.0));
        assert_eq!(agg_power("count(*)", &p), Some(4.0));
        assert_eq!(agg_power("COUNT(power_w)", &p), Some(2.0));
        assert_eq!(agg_power("SUM(power_w)", &p), Some(4.0));
        assert_eq!(agg_power("AVG(power_w)", &p), Some(2.0));
        assert_eq!(agg_power("average(power_w)", &p), Some(2.0));
        assert_eq!(agg_power("MIN(power_w)", &p), Some(1.0));
        assert_eq!(agg_power("MAX(power_w)", &p), Some(3.0));
        assert_eq!(agg_power("MAX(-power_w)", &p), Some(-1.0));
        assert_eq!(agg_power("SUM(power_w * 2) + 1", &p), Some(9.0));
        assert_eq!(
            agg_power("ROUND(SUM(power_w) / COUNT(*), 2)", &p),
            Some(1.0)
        );
        // Aggregate argument null on some rows: COUNT(x) counts only non-null results.
        assert_eq!(
            agg_power("COUNT(10 / power_w)", &[Some(0.0), Some(2.0)]),
            Some(1.0)
        );
    }

    #[test]
    fn aggregates_over_no_input() {
        let all_null = [None, None];
        assert_eq!(agg_power("SUM(power_w)", &all_null), None);
        assert_eq!(agg_power("AVG(power_w)", &all_null), None);
        assert_eq!(agg_power("MIN(power_w)", &all_null), None);
        assert_eq!(agg_power("MAX(power_w)", &all_null), None);
        assert_eq!(agg_power("COUNT(power_w)", &all_null), Some(0.0));
        assert_eq!(agg_power("COUNT(*)", &all_null), Some(2.0));
        assert_eq!(agg_power("COUNT(DISTINCT power_w)", &all_null), Some(0.0));
        assert_eq!(agg_power("COUNT(*)", &[]), Some(0.0));
        assert_eq!(agg_power("SUM(power_w)", &[]), None);
        // Null propagates through the outer arithmetic.
        assert_eq!(agg_power("SUM(power_w) + COUNT(*)", &all_null), None);
        // Division by zero in the outer arithmetic.
        assert_eq!(agg_power("COUNT(*) / COUNT(power_w)", &all_null), None);
        assert_eq!(
            agg_power("SUM(power_w) / SUM(power_w - 1)", &[Some(1.0)]),
            None
        );
    }

    #[test]
    fn count_distinct() {
        let p = [
            Some(1.0),
            Some(1.0),
            Some(2.0),
            None,
            Some(0.0),
            Some(-0.0),
            Some(f64::NAN),
        ];
        assert_eq!(agg_power("COUNT(DISTINCT power_w)", &p), Some(3.0));
        assert_eq!(agg_power("count(distinct power_w)", &p), Some(3.0));
        assert_eq!(
            agg_power("COUNT(DISTINCT ROUND(power_w / 2))", &p),
            Some(2.0)
        );
        assert_eq!(agg_power("COUNT(DISTINCT -power_w)", &p), Some(3.0));
        assert_eq!(
            agg_power("COUNT(DISTINCT power_w) * 10 + COUNT(*)", &p),
            Some(37.0)
        );
    }

    #[test]
    fn sum_is_compensated() {
        let f = parse("SUM(power_w)").unwrap();
        let mut agg = f.aggregator();
        for v in [1e16, 1.0, -1e16, 1.0] {
            agg.add(&ctx(&[Some(v)])).unwrap();
        }
        assert_eq!(agg.finish(), Some(2.0));
        let mut agg = f.aggregator();
        for _ in 0..10 {
            agg.add(&ctx(&[Some(0.1)])).unwrap();
        }
        assert_eq!(agg.finish(), Some(1.0));
        // Overflow of the sum is null, not infinity.
        let mut agg = f.aggregator();
        for _ in 0..3 {
            agg.add(&ctx(&[Some(1e308)])).unwrap();
        }
        assert_eq!(agg.finish(), None);
    }

    #[test]
    fn too_many_distinct() {
        let f = parse("COUNT(DISTINCT power_w) + SUM(power_w)").unwrap();
        let mut agg = f.aggregator();
        agg.distinct_limit = 3;
        for v in [1.0, 2.0, 3.0, 3.0, 1.0] {
            agg.add(&ctx(&[Some(v)])).unwrap();
        }
        assert_eq!(agg.finish(), Some(13.0));
        let e = agg.add(&ctx(&[Some(4.0)])).unwrap_err();
        assert_eq!(e, FormulaError::TooManyDistinct { max: MAX_DISTINCT });
        assert_eq!(
            e.to_string(),
            "COUNT(DISTINCT ...) found more than 1000000 distinct values, which is the limit"
        );
        // The aggregator is spent.
        assert_eq!(agg.add(&ctx(&[Some(1.0)])), Err(e));
        assert_eq!(agg.finish(), None);
        // A fresh aggregator is unaffected and the real limit is MAX_DISTINCT.
        let fresh = f.aggregator();
        assert_eq!(fresh.distinct_limit, MAX_DISTINCT);
        // SUM over no rows is null, so the whole sum is null.
        assert_eq!(fresh.finish(), None);
    }
}
