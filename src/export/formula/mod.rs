//! Safe formula evaluator for the "custom fields" of the energy-data export.
//!
//! This module owns the whole life of a custom-field formula: lexing, parsing,
//! validation (limits, function placement, row vs. aggregate kind) and
//! evaluation. It never panics on any input and has no dependencies.
//!
//! # Grammar
//!
//! Whitespace is ignored.
//!
//! ```text
//! expr    := term (('+' | '-') term)*
//! term    := unary (('*' | '/' | '%') unary)*
//! unary   := '-' unary | '+' unary | primary
//! primary := NUMBER | IDENT | IDENT '(' [args] ')' | '(' expr ')'
//! args    := '*' | 'DISTINCT' expr | expr (',' expr)*
//! NUMBER  := digits ['.' digits] [('e'|'E') ['+'|'-'] digits]   (also '.5')
//! IDENT   := [A-Za-z_][A-Za-z0-9_]*
//! ```
//!
//! Function names are case-insensitive; variable names are case-sensitive and
//! are resolved to indices once, at parse time, by a caller-supplied resolver.
//! `DISTINCT` (any case) is a keyword when it is the first thing inside the
//! parentheses of a call and is followed by the start of an expression.
//!
//! Functions:
//! * aggregates: `SUM(x)`, `AVG(x)` (alias `AVERAGE`), `MIN(x)`, `MAX(x)`,
//!   `COUNT(*)`, `COUNT(x)`, `COUNT(DISTINCT x)`;
//! * row functions: `ABS(x)`, `ROUND(x)`, `ROUND(x, n)` (`n` an integer
//!   literal `0..=9`, half away from zero), `FLOOR(x)`, `CEIL(x)`, `SQRT(x)`;
//! * time functions, whose only allowed argument is the special identifier
//!   `timestamp`: `DATE(timestamp)` (local day number), `HOUR(timestamp)`
//!   (0–23), `WEEKDAY(timestamp)` (ISO 1–7), `MONTH(timestamp)` (1–12).
//!   A bare `timestamp` anywhere else is an error.
//!
//! A formula containing any aggregate call is an *aggregate formula*: every
//! variable and time function must then sit inside an aggregate, aggregates
//! must not nest, and it is evaluated once over all rows with an
//! [`Aggregator`]. Any other formula is a *row formula*, evaluated per row with
//! [`Formula::eval_row`].
//!
//! # Limits
//!
//! * [`MAX_LEN`] characters of source (Unicode scalar values, not bytes);
//! * [`MAX_TOKENS`] tokens;
//! * [`MAX_DEPTH`] levels of nesting, where every parenthesised group, every
//!   unary sign and every function call adds one level;
//! * [`MAX_DISTINCT`] distinct values per `COUNT(DISTINCT …)`.
//!
//! Together these bound parse time, evaluation recursion and memory.
//!
//! # Null semantics (SQL-like)
//!
//! * A missing value (`None`, an index beyond the row's values, or a
//!   non-finite value such as NaN) is null.
//! * Null propagates through arithmetic and row functions.
//! * Division or modulo by zero is null; so is any non-finite intermediate
//!   result (overflow) and `SQRT` of a negative number.
//! * Aggregates skip null inputs; `SUM`/`AVG`/`MIN`/`MAX` over no non-null
//!   input are null, `COUNT` is then 0.
//! * A final result of `-0` is reported as `0`.
//!
//! `%` is the floating-point remainder; its sign follows the dividend
//! (`-7 % 3` is `-1`), as in SQL and C.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use eval::{AggState, eval, normalize_zero};
use parse::Program;

mod eval;
mod lex;
mod parse;

/// Maximum length of a formula, in characters.
pub const MAX_LEN: usize = 500;
/// Maximum nesting of parentheses, unary signs and function calls.
pub const MAX_DEPTH: usize = 32;
/// Maximum number of tokens (numbers, names, operators, punctuation).
pub const MAX_TOKENS: usize = 200;
/// Maximum number of distinct values one `COUNT(DISTINCT …)` may track.
pub const MAX_DISTINCT: usize = 1_000_000;

const TIMESTAMP: &str = "timestamp";
const TIMESTAMP_MISUSE: &str =
    "timestamp can only be used inside DATE(), HOUR(), WEEKDAY() or MONTH()";
const KNOWN_FUNCTIONS: &str = "SUM, AVG, AVERAGE, MIN, MAX, COUNT, ABS, ROUND, FLOOR, CEIL, SQRT, \
     DATE, HOUR, WEEKDAY, MONTH";

/// Values of one row handed to evaluation.
#[derive(Debug, Clone, Copy)]
pub struct RowCtx<'a> {
    /// Variable values by the index the resolver gave; None = null/missing.
    pub values: &'a [Option<f64>],
    /// Local calendar day number of the row's timestamp (any monotonic day count, e.g. days since 1970-01-01 in the export's time zone).
    pub day: i64,
    /// Local hour 0..=23.
    pub hour: u32,
    /// ISO weekday 1 (Mon) ..= 7 (Sun).
    pub weekday: u32,
    /// Local month 1..=12.
    pub month: u32,
}

/// Why a formula could not be parsed, or why aggregation had to stop.
#[derive(Debug, Clone, PartialEq)]
pub enum FormulaError {
    /// The formula has more than `max` characters.
    TooLong {
        /// The limit ([`MAX_LEN`]).
        max: usize,
    },
    /// Parentheses, signs or function calls are nested more than `max` levels.
    TooDeep {
        /// The limit ([`MAX_DEPTH`]).
        max: usize,
    },
    /// The formula has more than `max` tokens.
    TooManyTokens {
        /// The limit ([`MAX_TOKENS`]).
        max: usize,
    },
    /// The text does not follow the grammar.
    Syntax {
        /// 1-based character (not byte) position of the problem; one past the
        /// last character when the formula ends too early.
        pos: usize,
        /// What was expected or found, in plain English.
        message: String,
    },
    /// The resolver does not know this variable name (as written).
    UnknownVariable(String),
    /// No function has this name (as written).
    UnknownFunction(String),
    /// A known construct used in the wrong place or with wrong arguments
    /// (nested aggregates, variables outside aggregates, `timestamp`
    /// misuse, wrong argument counts, `*`/`DISTINCT` outside `COUNT`, …).
    /// The string is the complete user-facing message.
    Misuse(String),
    /// A `COUNT(DISTINCT …)` saw more than `max` distinct values.
    TooManyDistinct {
        /// The limit ([`MAX_DISTINCT`]).
        max: usize,
    },
    /// The `COUNT(DISTINCT …)` sets of one request would hold more than `max` values in all.
    DistinctBudget {
        /// The request's budget (`[exports] distinct_budget`).
        max: usize,
    },
}

impl fmt::Display for FormulaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { max } => {
                write!(
                    f,
                    "formula is too long: at most {max} characters are allowed"
                )
            }
            Self::TooDeep { max } => write!(
                f,
                "formula is nested too deeply: at most {max} levels of parentheses, \
                 signs and function calls are allowed"
            ),
            Self::TooManyTokens { max } => write!(
                f,
                "formula is too complex: at most {max} numbers, names and operators are allowed"
            ),
            Self::Syntax { pos, message } => {
                write!(f, "syntax error at character {pos}: {message}")
            }
            Self::UnknownVariable(name) => write!(f, "unknown variable `{name}`"),
            Self::UnknownFunction(name) => write!(
                f,
                "unknown function `{name}()`; available functions are {KNOWN_FUNCTIONS}"
            ),
            Self::Misuse(message) => f.write_str(message),
            Self::TooManyDistinct { max } => write!(
                f,
                "COUNT(DISTINCT ...) found more than {max} distinct values, which is the limit"
            ),
            Self::DistinctBudget { max } => write!(
                f,
                "COUNT(DISTINCT ...) would keep more than {max} distinct values in all \
                 ([exports] distinct_budget, shared by every custom field of the request)"
            ),
        }
    }
}

impl std::error::Error for FormulaError {}

/// A parsed and validated formula with its variables resolved to indices.
///
/// Cheap to clone (the parsed program is shared).
#[derive(Debug, Clone)]
pub struct Formula {
    program: Arc<Program>,
}

/// Streaming state of an aggregate formula: O(1) memory per aggregate call except COUNT(DISTINCT), which keeps a set bounded by MAX_DISTINCT and by the request's [`DistinctBudget`].
#[derive(Debug, Clone)]
pub struct Aggregator {
    program: Arc<Program>,
    states: Vec<AggState>,
    distinct_limit: usize,
    budget: Option<DistinctBudget>,
    failed: Option<FormulaError>,
}

/// How many distinct values all `COUNT(DISTINCT …)` sets of one request may still take: one
/// budget shared by every aggregator of the request, so that many fields with many sets
/// cannot hold more than it together.
#[derive(Debug, Clone)]
pub struct DistinctBudget {
    left: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

impl DistinctBudget {
    /// A budget of `max` values.
    pub fn new(max: usize) -> Self {
        Self {
            left: Arc::new(std::sync::atomic::AtomicUsize::new(max)),
            max,
        }
    }

    fn take(&self) -> Result<(), FormulaError> {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
            .map(|_| ())
            .map_err(|_| FormulaError::DistinctBudget { max: self.max })
    }
}

impl Formula {
    /// Parses `src`, resolving each variable name through `resolve` (None = unknown variable → error).
    ///
    /// Checks, in order: the length limit, lexing and the token limit, the
    /// grammar with the depth limit and function rules, then the rule that
    /// an aggregate formula has no variable outside its aggregates.
    pub fn parse(
        src: &str,
        resolve: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Formula, FormulaError> {
        parse::program(src, resolve).map(|p| Formula {
            program: Arc::new(p),
        })
    }

    /// True when the formula uses aggregates (evaluate with an Aggregator).
    pub fn is_aggregate(&self) -> bool {
        !self.program.aggs.is_empty()
    }

    /// Row evaluation; None when any input is null, on division/modulo by zero, or when the result is not finite. Calling it on an aggregate formula returns None.
    ///
    /// Does not allocate; a result of `-0` is returned as `0`.
    pub fn eval_row(&self, row: &RowCtx<'_>) -> Option<f64> {
        if self.is_aggregate() {
            return None;
        }
        eval(&self.program.root, row).map(normalize_zero)
    }

    /// A fresh accumulator for an aggregate formula.
    ///
    /// For a row formula the accumulator holds no aggregates and its
    /// [`Aggregator::finish`] returns `None`.
    pub fn aggregator(&self) -> Aggregator {
        Aggregator {
            program: Arc::clone(&self.program),
            states: self
                .program
                .aggs
                .iter()
                .map(|spec| AggState::new(spec.kind))
                .collect(),
            distinct_limit: MAX_DISTINCT,
            budget: None,
            failed: None,
        }
    }

    /// An accumulator whose `COUNT(DISTINCT …)` sets draw on `budget`.
    pub fn aggregator_within(&self, budget: &DistinctBudget) -> Aggregator {
        Aggregator {
            budget: Some(budget.clone()),
            ..self.aggregator()
        }
    }
}

/// Shared by the tests of every part of the formula language.
#[cfg(test)]
mod testkit {
    use super::*;

    pub fn resolver(name: &str) -> Option<usize> {
        match name {
            "power_w" => Some(0),
            "rated_power" => Some(1),
            "energy_kwh" => Some(2),
            "a" => Some(3),
            "b" => Some(4),
            "far_away" => Some(1000),
            _ => None,
        }
    }

    pub fn parse(src: &str) -> Result<Formula, FormulaError> {
        Formula::parse(src, &resolver)
    }

    pub fn ctx(values: &[Option<f64>]) -> RowCtx<'_> {
        RowCtx {
            values,
            day: 0,
            hour: 0,
            weekday: 1,
            month: 1,
        }
    }

    /// Evaluates a row formula with power_w, rated_power, energy_kwh, a, b.
    pub fn row_eval(src: &str, values: &[Option<f64>]) -> Option<f64> {
        let f = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(!f.is_aggregate(), "{src} should be a row formula");
        f.eval_row(&ctx(values))
    }

    pub fn num(src: &str) -> Option<f64> {
        row_eval(src, &[])
    }

    /// Runs an aggregate formula over rows of power_w values.
    pub fn agg_power(src: &str, power: &[Option<f64>]) -> Option<f64> {
        let f = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(f.is_aggregate(), "{src} should be an aggregate formula");
        let mut agg = f.aggregator();
        for p in power {
            let values = [*p];
            agg.add(&ctx(&values)).unwrap();
        }
        agg.finish()
    }

    pub fn err(src: &str) -> FormulaError {
        match parse(src) {
            Ok(_) => panic!("`{src}` should not parse"),
            Err(e) => e,
        }
    }

    pub fn misuse(src: &str) -> String {
        match err(src) {
            FormulaError::Misuse(m) => m,
            other => panic!("`{src}`: expected Misuse, got {other:?}"),
        }
    }

    pub fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    #[test]
    fn example_row_formula() {
        let v = [Some(50.0), Some(200.0)];
        assert_eq!(row_eval("power_w / rated_power * 100", &v), Some(25.0));
    }

    #[test]
    fn example_aggregate_formula() {
        let f = parse("SUM(energy_kwh) / COUNT(DISTINCT DATE(timestamp))").unwrap();
        assert!(f.is_aggregate());
        let mut agg = f.aggregator();
        for (energy, day) in [(1.0, 10), (2.0, 10), (3.0, 11)] {
            let values = [None, None, Some(energy)];
            let row = RowCtx {
                values: &values,
                day,
                hour: 12,
                weekday: 3,
                month: 6,
            };
            agg.add(&row).unwrap();
        }
        assert_eq!(agg.finish(), Some(3.0));
        // finish does not consume: calling again gives the same value.
        assert_eq!(agg.finish(), Some(3.0));
        // Aggregate formulas are not row formulas.
        assert_eq!(f.eval_row(&ctx(&[None, None, Some(1.0)])), None);
    }

    #[test]
    fn row_formula_aggregator_and_aggregate_eval_row() {
        let row = parse("power_w + 1").unwrap();
        let mut agg = row.aggregator();
        agg.add(&ctx(&[Some(1.0)])).unwrap();
        assert_eq!(agg.finish(), None);
        let aggregate = parse("SUM(power_w)").unwrap();
        assert_eq!(aggregate.eval_row(&ctx(&[Some(1.0)])), None);
        // A constant formula is a row formula.
        let constant = parse("1 + 2").unwrap();
        assert!(!constant.is_aggregate());
        assert_eq!(constant.eval_row(&ctx(&[])), Some(3.0));
    }

    #[test]
    fn error_too_long() {
        let ok = format!("1{}", " ".repeat(MAX_LEN - 1));
        assert!(parse(&ok).is_ok());
        let long = format!("1{}", " ".repeat(MAX_LEN));
        let e = err(&long);
        assert_eq!(e, FormulaError::TooLong { max: 500 });
        assert_eq!(
            e.to_string(),
            "formula is too long: at most 500 characters are allowed"
        );
        // Characters, not bytes: 250 two-byte characters are fine length-wise.
        assert!(matches!(
            err(&"é".repeat(250)),
            FormulaError::Syntax { pos: 1, .. }
        ));
        assert_eq!(err(&"é".repeat(501)), FormulaError::TooLong { max: 500 });
        // A huge input is rejected without scanning it all.
        assert_eq!(
            err(&"(".repeat(1_000_000)),
            FormulaError::TooLong { max: 500 }
        );
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let inputs = [
            "",
            " ",
            "(",
            ")",
            "()",
            "((",
            "))",
            "+",
            "-",
            "*",
            "/",
            "%",
            ",",
            ".",
            "..5",
            "1..2",
            "1e",
            "1e+",
            "1.5.5",
            "1 +",
            "* 1",
            "1 * * 2",
            "SUM(",
            "SUM(*",
            "SUM)",
            "COUNT(*",
            "COUNT(DISTINCT",
            "COUNT(DISTINCT power_w",
            "COUNT(DISTINCT *)",
            "ROUND(1,)",
            "ROUND(,1)",
            "ABS(,)",
            "f(",
            "f()",
            "DATE(",
            "DATE(timestamp",
            "DATE timestamp",
            "timestamp(",
            "(((",
            "1)(",
            "power_w(",
            "_",
            "__x__",
            "9abc",
            "1_000",
            "$x",
            "a.b",
            "€",
            "🙂",
            "\0",
            "1\u{7f}",
            "SUM(power_w) SUM(power_w)",
            "COUNT(**)",
            "-*1",
            "(,)",
            "ROUND(1, 2,)",
            "ABS(1,,2)",
            "MIN(power_w,)",
        ];
        for src in inputs {
            assert!(parse(src).is_err(), "`{src}` should be rejected");
        }
        // The errors render to non-empty messages.
        for src in inputs {
            if let Err(e) = parse(src) {
                assert!(!e.to_string().is_empty());
            }
        }
    }

    /// Tiny deterministic linear congruential generator.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next()).unwrap() % n
        }
    }

    /// Parses `src`; on success evaluates it on a few rows. Must never panic.
    fn exercise(src: &str, rng: &mut Lcg) -> bool {
        let Ok(f) = Formula::parse(src, &resolver) else {
            return false;
        };
        let mut agg = f.aggregator();
        for _ in 0..3 {
            let pick = |r: &mut Lcg| match r.below(6) {
                0 => None,
                1 => Some(0.0),
                2 => Some(-1.5),
                3 => Some(f64::NAN),
                4 => Some(1e308),
                _ => Some(7.0),
            };
            let values = [pick(rng), pick(rng), pick(rng), pick(rng), pick(rng)];
            let row = RowCtx {
                values: &values,
                day: 3,
                hour: 4,
                weekday: 5,
                month: 6,
            };
            if let Some(v) = f.eval_row(&row) {
                assert!(v.is_finite());
            }
            agg.add(&row).unwrap();
        }
        if let Some(v) = agg.finish() {
            assert!(v.is_finite());
        }
        true
    }

    #[test]
    fn fuzz_random_bytes_never_panic() {
        let mut rng = Lcg(0x5eed);
        for _ in 0..20_000 {
            let len = rng.below(40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| u8::try_from(rng.next() & 0xff).unwrap())
                .collect();
            let src = String::from_utf8_lossy(&bytes).into_owned();
            exercise(&src, &mut rng);
        }
    }

    #[test]
    fn fuzz_token_soup_never_panics() {
        const PIECES: &[&str] = &[
            "(",
            ")",
            "(",
            ")",
            ",",
            "+",
            "-",
            "*",
            "/",
            "%",
            " ",
            "1",
            "0",
            "2.5",
            ".5",
            "1e3",
            "1e",
            "9",
            "power_w",
            "rated_power",
            "energy_kwh",
            "a",
            "b",
            "far_away",
            "nope",
            "timestamp",
            "SUM(",
            "avg(",
            "MIN(",
            "MAX(",
            "COUNT(",
            "COUNT(*)",
            "DISTINCT ",
            "ABS(",
            "ROUND(",
            "FLOOR(",
            "CEIL(",
            "SQRT(",
            "DATE(",
            "HOUR(",
            "WEEKDAY(",
            "MONTH(",
            "DATE(timestamp)",
            "foo(",
            "é",
        ];
        let mut rng = Lcg(42);
        let mut parsed = 0;
        for _ in 0..30_000 {
            let n = rng.below(12) + 1;
            let src: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            if exercise(&src, &mut rng) {
                parsed += 1;
            }
        }
        // The soup must also produce valid formulas, so evaluation is exercised.
        assert!(parsed > 500, "only {parsed} formulas parsed");
    }

    #[test]
    fn million_row_evaluations() {
        let f = parse("power_w / rated_power * 100 + ROUND(energy_kwh, 1)").unwrap();
        let mut values = [None, Some(200.0), None];
        let mut total = 0.0;
        let mut nulls = 0u32;
        for i in 0..1_000_000u32 {
            values[0] = if i % 10 == 0 {
                None
            } else {
                Some(f64::from(i % 200))
            };
            values[2] = Some(0.25);
            match f.eval_row(&ctx(&values)) {
                Some(v) => total += v,
                None => nulls += 1,
            }
        }
        assert_eq!(nulls, 100_000);
        // Non-null rows: i % 10 != 0; p = i % 200 → p / 2 + 0.3 (ROUND(0.25, 1) = 0.3).
        let mut expected = 0.0;
        for i in 0..1_000_000u32 {
            if i % 10 != 0 {
                expected += f64::from(i % 200) / 200.0 * 100.0 + 0.3;
            }
        }
        assert!(close(Some(total), expected), "{total} vs {expected}");
    }

    #[test]
    fn long_chains_evaluate() {
        // Left-associative chains at the token limit evaluate without trouble.
        let src = format!("{}1", "2-".repeat(99));
        assert_eq!(num(&src), Some(2.0 - 98.0 * 2.0 - 1.0));
        let src = format!("SUM(power_w){}", " + COUNT(*)".repeat(39)); // 199 tokens
        assert_eq!(agg_power(&src, &[Some(1.0), None]), Some(79.0));
    }
}
