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

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Internal representation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MathFn {
    Abs,
    Floor,
    Ceil,
    Sqrt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeFn {
    Date,
    Hour,
    Weekday,
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggFn {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Sum,
    Avg,
    Min,
    Max,
    CountAll,
    Count,
    CountDistinct,
}

#[derive(Debug, Clone, Copy)]
enum Func {
    Agg(AggFn),
    Math(MathFn),
    Round,
    Time(TimeFn),
}

/// Compact expression tree. Depth is bounded by the token and depth limits.
#[derive(Debug, Clone)]
enum Expr {
    Num(f64),
    Var(usize),
    Time(TimeFn),
    /// Finished value of aggregate slot `n` (only in the outer expression).
    Agg(usize),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Math(MathFn, Box<Expr>),
    /// `ROUND(x, n)` with the scale `10^n` precomputed.
    Round(Box<Expr>, f64),
}

#[derive(Debug, Clone)]
struct AggSpec {
    kind: AggKind,
    /// `None` only for `COUNT(*)`.
    arg: Option<Expr>,
}

#[derive(Debug)]
struct Program {
    root: Expr,
    aggs: Vec<AggSpec>,
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based character position.
    pos: usize,
}

fn syntax(pos: usize, message: impl Into<String>) -> FormulaError {
    FormulaError::Syntax {
        pos,
        message: message.into(),
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Num(v) => format!("number {v}"),
        Tok::Ident(name) => format!("name `{name}`"),
        Tok::LParen => "'('".to_string(),
        Tok::RParen => "')'".to_string(),
        Tok::Comma => "','".to_string(),
        Tok::Plus => "'+'".to_string(),
        Tok::Minus => "'-'".to_string(),
        Tok::Star => "'*'".to_string(),
        Tok::Slash => "'/'".to_string(),
        Tok::Percent => "'%'".to_string(),
    }
}

fn is_digit_at(chars: &[char], i: usize) -> bool {
    chars.get(i).is_some_and(char::is_ascii_digit)
}

fn skip_digits(chars: &[char], mut i: usize) -> usize {
    while is_digit_at(chars, i) {
        i += 1;
    }
    i
}

/// Splits `chars` into tokens, enforcing [`MAX_TOKENS`].
fn lex(chars: &[char]) -> Result<Vec<Token>, FormulaError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_digit() || (c == '.' && is_digit_at(chars, i + 1)) {
            let start = i;
            i = skip_digits(chars, i);
            if chars.get(i) == Some(&'.') {
                i += 1;
                if !is_digit_at(chars, i) {
                    return Err(syntax(i + 1, "expected a digit after '.'"));
                }
                i = skip_digits(chars, i);
            }
            if matches!(chars.get(i), Some('e' | 'E')) {
                i += 1;
                if matches!(chars.get(i), Some('+' | '-')) {
                    i += 1;
                }
                if !is_digit_at(chars, i) {
                    return Err(syntax(
                        i + 1,
                        "expected digits in the exponent of the number",
                    ));
                }
                i = skip_digits(chars, i);
            }
            let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
            let value: f64 = text
                .parse()
                .map_err(|_| syntax(pos, format!("invalid number `{text}`")))?;
            if !value.is_finite() {
                return Err(syntax(pos, format!("number `{text}` is too large")));
            }
            Tok::Num(value)
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
            {
                i += 1;
            }
            Tok::Ident(chars.get(start..i).unwrap_or_default().iter().collect())
        } else {
            i += 1;
            match c {
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                ',' => Tok::Comma,
                '+' => Tok::Plus,
                '-' => Tok::Minus,
                '*' => Tok::Star,
                '/' => Tok::Slash,
                '%' => Tok::Percent,
                _ => return Err(syntax(pos, format!("unexpected character {c:?}"))),
            }
        };
        if tokens.len() >= MAX_TOKENS {
            return Err(FormulaError::TooManyTokens { max: MAX_TOKENS });
        }
        tokens.push(Token { tok, pos });
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

fn lookup_function(upper: &str) -> Option<Func> {
    Some(match upper {
        "SUM" => Func::Agg(AggFn::Sum),
        "AVG" | "AVERAGE" => Func::Agg(AggFn::Avg),
        "MIN" => Func::Agg(AggFn::Min),
        "MAX" => Func::Agg(AggFn::Max),
        "COUNT" => Func::Agg(AggFn::Count),
        "ABS" => Func::Math(MathFn::Abs),
        "FLOOR" => Func::Math(MathFn::Floor),
        "CEIL" => Func::Math(MathFn::Ceil),
        "SQRT" => Func::Math(MathFn::Sqrt),
        "ROUND" => Func::Round,
        "DATE" => Func::Time(TimeFn::Date),
        "HOUR" => Func::Time(TimeFn::Hour),
        "WEEKDAY" => Func::Time(TimeFn::Weekday),
        "MONTH" => Func::Time(TimeFn::Month),
        _ => return None,
    })
}

struct Parser<'r> {
    tokens: Vec<Token>,
    next: usize,
    /// Position reported when the formula ends too early.
    end_pos: usize,
    depth: usize,
    resolve: &'r dyn Fn(&str) -> Option<usize>,
    /// Upper-case name of the aggregate currently being parsed, if any.
    in_agg: Option<String>,
    aggs: Vec<AggSpec>,
    /// First variable / time function found outside any aggregate.
    first_outside: Option<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.tokens.get(self.next + k).map(|t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end_pos, |t| t.pos)
    }

    fn enter(&mut self) -> Result<(), FormulaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FormulaError::TooDeep { max: MAX_DEPTH });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn note_outside(&mut self, what: impl FnOnce() -> String) {
        if self.in_agg.is_none() && self.first_outside.is_none() {
            self.first_outside = Some(what());
        }
    }

    /// Consumes a `)` or fails with "expected ')'" (or `alternatives`).
    fn expect_close(&mut self, alternatives: &str) -> Result<(), FormulaError> {
        let pos = self.pos();
        match self.peek() {
            Some(Tok::RParen) => {
                self.next += 1;
                Ok(())
            }
            Some(other) => Err(syntax(
                pos,
                format!("expected {alternatives}, found {}", describe(other)),
            )),
            None => Err(syntax(pos, format!("expected {alternatives}"))),
        }
    }

    /// True when the next token is the `DISTINCT` keyword (followed by
    /// something that starts an expression).
    fn at_distinct(&self) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("distinct"))
            && matches!(
                self.peek_at(1),
                Some(Tok::Ident(_) | Tok::Num(_) | Tok::LParen | Tok::Minus | Tok::Plus)
            )
    }

    fn expr(&mut self) -> Result<Expr, FormulaError> {
        let mut lhs = self.term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Plus) => BinOp::Add,
                Some(Tok::Minus) => BinOp::Sub,
                _ => return Ok(lhs),
            };
            self.next += 1;
            let rhs = self.term()?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
    }

    fn term(&mut self) -> Result<Expr, FormulaError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Star) => BinOp::Mul,
                Some(Tok::Slash) => BinOp::Div,
                Some(Tok::Percent) => BinOp::Rem,
                _ => return Ok(lhs),
            };
            self.next += 1;
            let rhs = self.unary()?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
    }

    fn unary(&mut self) -> Result<Expr, FormulaError> {
        let negate = match self.peek() {
            Some(Tok::Minus) => true,
            Some(Tok::Plus) => false,
            _ => return self.primary(),
        };
        self.next += 1;
        self.enter()?;
        let inner = self.unary()?;
        self.leave();
        Ok(if negate {
            Expr::Neg(Box::new(inner))
        } else {
            inner
        })
    }

    fn primary(&mut self) -> Result<Expr, FormulaError> {
        let pos = self.pos();
        let Some(token) = self.tokens.get(self.next) else {
            return Err(syntax(
                pos,
                "unexpected end of formula; expected a number, a variable, a function or '('",
            ));
        };
        match &token.tok {
            Tok::Num(v) => {
                let v = *v;
                self.next += 1;
                Ok(Expr::Num(v))
            }
            Tok::LParen => {
                self.next += 1;
                self.enter()?;
                let inner = self.expr()?;
                self.expect_close("')'")?;
                self.leave();
                Ok(inner)
            }
            Tok::Ident(name) => {
                let name = name.clone();
                self.next += 1;
                if self.peek() == Some(&Tok::LParen) {
                    self.call(&name)
                } else {
                    self.variable(&name)
                }
            }
            other => Err(syntax(
                pos,
                format!(
                    "unexpected {}; expected a number, a variable, a function or '('",
                    describe(other)
                ),
            )),
        }
    }

    fn variable(&mut self, name: &str) -> Result<Expr, FormulaError> {
        if name == TIMESTAMP {
            return Err(FormulaError::Misuse(TIMESTAMP_MISUSE.to_string()));
        }
        let Some(index) = (self.resolve)(name) else {
            return Err(FormulaError::UnknownVariable(name.to_string()));
        };
        self.note_outside(|| format!("`{name}`"));
        Ok(Expr::Var(index))
    }

    /// Parses a call; the function name is consumed and `(` is next.
    fn call(&mut self, name: &str) -> Result<Expr, FormulaError> {
        let upper = name.to_ascii_uppercase();
        let Some(func) = lookup_function(&upper) else {
            return Err(FormulaError::UnknownFunction(name.to_string()));
        };
        self.next += 1; // '('
        self.enter()?;
        let expr = match func {
            Func::Time(t) => self.time_call(t, &upper)?,
            Func::Agg(a) => self.agg_call(a, &upper)?,
            Func::Math(m) => {
                let args = self.row_args(&upper)?;
                let mut it = args.into_iter();
                match (it.next(), it.next()) {
                    (Some(x), None) => Expr::Math(m, Box::new(x)),
                    _ => {
                        return Err(FormulaError::Misuse(format!(
                            "{upper}() takes exactly one argument"
                        )));
                    }
                }
            }
            Func::Round => {
                let args = self.row_args(&upper)?;
                let mut it = args.into_iter();
                match (it.next(), it.next(), it.next()) {
                    (Some(x), None, None) => Expr::Round(Box::new(x), 1.0),
                    (Some(x), Some(n), None) => {
                        let digits = match n {
                            Expr::Num(v) => (0..=9).find(|&d| f64::from(d) == v),
                            _ => None,
                        };
                        let Some(digits) = digits else {
                            return Err(FormulaError::Misuse(
                                "the second argument of ROUND() must be a whole number \
                                 from 0 to 9, e.g. ROUND(x, 2)"
                                    .to_string(),
                            ));
                        };
                        Expr::Round(Box::new(x), 10f64.powi(digits))
                    }
                    _ => {
                        return Err(FormulaError::Misuse(
                            "ROUND() takes one or two arguments: ROUND(x) or ROUND(x, digits)"
                                .to_string(),
                        ));
                    }
                }
            }
        };
        self.leave();
        Ok(expr)
    }

    fn time_call(&mut self, t: TimeFn, upper: &str) -> Result<Expr, FormulaError> {
        if !matches!(self.peek(), Some(Tok::Ident(s)) if s == TIMESTAMP) {
            return Err(FormulaError::Misuse(format!(
                "{upper}() only accepts `timestamp` as its argument, e.g. {upper}(timestamp)"
            )));
        }
        self.next += 1;
        if self.peek().is_some_and(|t| *t != Tok::RParen) {
            return Err(FormulaError::Misuse(format!(
                "{upper}() takes exactly one argument, which must be `timestamp`: \
                 {upper}(timestamp)"
            )));
        }
        self.expect_close("')'")?;
        self.note_outside(|| format!("`{upper}(timestamp)`"));
        Ok(Expr::Time(t))
    }

    fn agg_arg(&mut self, upper: &str) -> Result<Expr, FormulaError> {
        self.in_agg = Some(upper.to_string());
        let arg = self.expr()?;
        self.in_agg = None;
        Ok(arg)
    }

    fn agg_call(&mut self, a: AggFn, upper: &str) -> Result<Expr, FormulaError> {
        if let Some(outer) = &self.in_agg {
            return Err(FormulaError::Misuse(format!(
                "aggregate functions cannot be nested: {upper}() is inside {outer}()"
            )));
        }
        let (kind, arg) = if self.peek() == Some(&Tok::Star) {
            if a != AggFn::Count {
                return Err(star_misuse(upper));
            }
            self.next += 1;
            (AggKind::CountAll, None)
        } else if self.at_distinct() {
            if a != AggFn::Count {
                return Err(distinct_misuse(upper));
            }
            self.next += 1;
            (AggKind::CountDistinct, Some(self.agg_arg(upper)?))
        } else if self.peek() == Some(&Tok::RParen) {
            return Err(FormulaError::Misuse(if a == AggFn::Count {
                "COUNT() needs an argument: COUNT(*), COUNT(x) or COUNT(DISTINCT x)".to_string()
            } else {
                format!("{upper}() needs exactly one argument")
            }));
        } else {
            let kind = match a {
                AggFn::Sum => AggKind::Sum,
                AggFn::Avg => AggKind::Avg,
                AggFn::Min => AggKind::Min,
                AggFn::Max => AggKind::Max,
                AggFn::Count => AggKind::Count,
            };
            (kind, Some(self.agg_arg(upper)?))
        };
        if self.peek() == Some(&Tok::Comma) {
            return Err(FormulaError::Misuse(format!(
                "{upper}() takes exactly one argument"
            )));
        }
        self.expect_close("')'")?;
        self.aggs.push(AggSpec { kind, arg });
        Ok(Expr::Agg(self.aggs.len() - 1))
    }

    fn row_args(&mut self, upper: &str) -> Result<Vec<Expr>, FormulaError> {
        if self.peek() == Some(&Tok::Star) {
            return Err(star_misuse(upper));
        }
        if self.at_distinct() {
            return Err(distinct_misuse(upper));
        }
        let mut args = Vec::new();
        if self.peek() == Some(&Tok::RParen) {
            self.next += 1;
            return Ok(args);
        }
        args.push(self.expr()?);
        while self.peek() == Some(&Tok::Comma) {
            self.next += 1;
            args.push(self.expr()?);
        }
        self.expect_close("',' or ')'")?;
        Ok(args)
    }
}

fn star_misuse(upper: &str) -> FormulaError {
    FormulaError::Misuse(format!(
        "`*` as an argument is only allowed in COUNT(*), not in {upper}()"
    ))
}

fn distinct_misuse(upper: &str) -> FormulaError {
    FormulaError::Misuse(format!(
        "DISTINCT is only allowed in COUNT(DISTINCT ...), not in {upper}()"
    ))
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// Supplies leaf values to [`eval`]; monomorphised, so no dynamic dispatch.
trait Leaves {
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
fn normalize_zero(v: f64) -> f64 {
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
fn eval<L: Leaves>(e: &Expr, leaves: &L) -> Option<f64> {
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
struct SumAcc {
    sum: f64,
    compensation: f64,
    n: u64,
}

impl SumAcc {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.compensation += (self.sum - t) + v;
        } else {
            self.compensation += (v - t) + self.sum;
        }
        self.sum = t;
        self.n += 1;
    }

    fn total(&self) -> f64 {
        self.sum + self.compensation
    }
}

#[derive(Debug, Clone)]
enum AggState {
    Sum(SumAcc),
    Avg(SumAcc),
    Min(Option<f64>),
    Max(Option<f64>),
    CountAll(u64),
    Count(u64),
    Distinct(HashSet<u64>),
}

impl AggState {
    fn new(kind: AggKind) -> Self {
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

    fn value(&self) -> Option<f64> {
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
        let chars: Vec<char> = src.chars().take(MAX_LEN + 1).collect();
        if chars.len() > MAX_LEN {
            return Err(FormulaError::TooLong { max: MAX_LEN });
        }
        let tokens = lex(&chars)?;
        if tokens.is_empty() {
            return Err(syntax(1, "the formula is empty"));
        }
        let mut parser = Parser {
            tokens,
            next: 0,
            end_pos: chars.len() + 1,
            depth: 0,
            resolve,
            in_agg: None,
            aggs: Vec::new(),
            first_outside: None,
        };
        let root = parser.expr()?;
        if let Some(token) = parser.tokens.get(parser.next) {
            let message = match &token.tok {
                Tok::RParen => "unmatched ')'".to_string(),
                other => format!(
                    "unexpected {}; expected an operator (+ - * / %) or the end of the formula",
                    describe(other)
                ),
            };
            return Err(syntax(token.pos, message));
        }
        if !parser.aggs.is_empty()
            && let Some(what) = parser.first_outside
        {
            return Err(FormulaError::Misuse(format!(
                "{what} must be inside an aggregate such as SUM() in a formula that uses aggregates"
            )));
        }
        Ok(Formula {
            program: Arc::new(Program {
                root,
                aggs: parser.aggs,
            }),
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

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(name: &str) -> Option<usize> {
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

    fn parse(src: &str) -> Result<Formula, FormulaError> {
        Formula::parse(src, &resolver)
    }

    fn ctx(values: &[Option<f64>]) -> RowCtx<'_> {
        RowCtx {
            values,
            day: 0,
            hour: 0,
            weekday: 1,
            month: 1,
        }
    }

    /// Evaluates a row formula with power_w, rated_power, energy_kwh, a, b.
    fn row_eval(src: &str, values: &[Option<f64>]) -> Option<f64> {
        let f = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(!f.is_aggregate(), "{src} should be a row formula");
        f.eval_row(&ctx(values))
    }

    fn num(src: &str) -> Option<f64> {
        row_eval(src, &[])
    }

    /// Runs an aggregate formula over rows of power_w values.
    fn agg_power(src: &str, power: &[Option<f64>]) -> Option<f64> {
        let f = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(f.is_aggregate(), "{src} should be an aggregate formula");
        let mut agg = f.aggregator();
        for p in power {
            let values = [*p];
            agg.add(&ctx(&values)).unwrap();
        }
        agg.finish()
    }

    fn err(src: &str) -> FormulaError {
        match parse(src) {
            Ok(_) => panic!("`{src}` should not parse"),
            Err(e) => e,
        }
    }

    fn misuse(src: &str) -> String {
        match err(src) {
            FormulaError::Misuse(m) => m,
            other => panic!("`{src}`: expected Misuse, got {other:?}"),
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

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
    fn precedence_and_associativity() {
        assert_eq!(num("10 - 4 - 3"), Some(3.0));
        assert_eq!(num("2 * 3 + 4"), Some(10.0));
        assert_eq!(num("2 + 3 * 4"), Some(14.0));
        assert_eq!(num("-2 * 3"), Some(-6.0));
        assert_eq!(num("8 / 4 / 2"), Some(1.0));
        assert_eq!(num("(2 + 3) * 4"), Some(20.0));
        assert_eq!(num("2 - -3"), Some(5.0));
        assert_eq!(num("--2"), Some(2.0));
        assert_eq!(num("+2 - +1"), Some(1.0));
        assert_eq!(num("-(1 + 2) * 2"), Some(-6.0));
        assert_eq!(num("1.5e2"), Some(150.0));
        assert_eq!(num(".5 * 4"), Some(2.0));
        assert_eq!(num("2E-1"), Some(0.2));
        assert_eq!(num("1e+2"), Some(100.0));
        assert_eq!(num("  \t 1 +\n 2  "), Some(3.0));
    }

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
    fn variables_are_case_sensitive() {
        assert_eq!(
            err("Power_W"),
            FormulaError::UnknownVariable("Power_W".into())
        );
        assert_eq!(row_eval("power_w", &[Some(4.0)]), Some(4.0));
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
    fn error_too_many_tokens() {
        let ok = format!("{}1", "1+".repeat(99)); // 199 tokens
        assert_eq!(num(&ok), Some(100.0));
        let e = err(&format!("{}1", "1+".repeat(100))); // 201 tokens
        assert_eq!(e, FormulaError::TooManyTokens { max: 200 });
        assert_eq!(
            e.to_string(),
            "formula is too complex: at most 200 numbers, names and operators are allowed"
        );
    }

    #[test]
    fn error_too_deep() {
        let nest = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(num(&nest(32)), Some(1.0));
        let e = err(&nest(33));
        assert_eq!(e, FormulaError::TooDeep { max: 32 });
        assert_eq!(
            e.to_string(),
            "formula is nested too deeply: at most 32 levels of parentheses, signs and \
             function calls are allowed"
        );
        assert_eq!(num(&format!("{}1", "-".repeat(32))), Some(1.0));
        assert_eq!(
            err(&format!("{}1", "-".repeat(33))),
            FormulaError::TooDeep { max: 32 }
        );
        let calls = |n: usize| format!("{}1{}", "ABS(".repeat(n), ")".repeat(n));
        assert_eq!(num(&calls(32)), Some(1.0));
        assert_eq!(err(&calls(33)), FormulaError::TooDeep { max: 32 });
        // Mixed nesting counts every level.
        let mixed = format!("{}-(1){}", "ABS((".repeat(16), "))".repeat(16));
        assert_eq!(err(&mixed), FormulaError::TooDeep { max: 32 });
    }

    #[test]
    fn error_syntax() {
        let e = err("(1 + 2");
        assert_eq!(
            e,
            FormulaError::Syntax {
                pos: 7,
                message: "expected ')'".into()
            }
        );
        assert_eq!(e.to_string(), "syntax error at character 7: expected ')'");
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "the formula is empty"),
            ("   ", 1, "the formula is empty"),
            ("1 +", 4, "unexpected end of formula"),
            ("1 2", 3, "unexpected number 2; expected an operator"),
            ("1 + )", 5, "unexpected ')'; expected a number"),
            ("(1))", 4, "unmatched ')'"),
            ("2 ^ 3", 3, "unexpected character '^'"),
            ("1.", 3, "expected a digit after '.'"),
            ("1.e5", 3, "expected a digit after '.'"),
            ("2e", 3, "expected digits in the exponent"),
            ("2e+x", 4, "expected digits in the exponent"),
            ("1e400", 1, "number `1e400` is too large"),
            ("ABS(1 2)", 7, "expected ',' or ')', found number 2"),
            ("SUM(power_w", 12, "expected ')'"),
            ("DATE(timestamp", 15, "expected ')'"),
            ("power_w power_w", 9, "unexpected name `power_w`"),
            ("1,2", 2, "unexpected ','"),
            ("é", 1, "unexpected character 'é'"),
        ];
        for (src, pos, needle) in cases {
            match err(src) {
                FormulaError::Syntax { pos: p, message } => {
                    assert_eq!(p, *pos, "{src}: {message}");
                    assert!(message.contains(needle), "{src}: {message}");
                }
                other => panic!("{src}: expected Syntax, got {other:?}"),
            }
        }
    }

    #[test]
    fn error_unknown_variable_and_function() {
        let e = err("power_w + nope");
        assert_eq!(e, FormulaError::UnknownVariable("nope".into()));
        assert_eq!(e.to_string(), "unknown variable `nope`");
        let e = err("Median(power_w)");
        assert_eq!(e, FormulaError::UnknownFunction("Median".into()));
        assert!(
            e.to_string()
                .starts_with("unknown function `Median()`; available functions are SUM, AVG")
        );
        // A known function name used without parentheses is just a variable name.
        assert_eq!(err("SUM"), FormulaError::UnknownVariable("SUM".into()));
    }

    #[test]
    fn error_misuse_message() {
        let e = err("SUM(SUM(power_w))");
        assert_eq!(
            e,
            FormulaError::Misuse(
                "aggregate functions cannot be nested: SUM() is inside SUM()".into()
            )
        );
        assert_eq!(
            e.to_string(),
            "aggregate functions cannot be nested: SUM() is inside SUM()"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().contains("nested"));
    }

    #[test]
    fn nested_aggregates_rejected() {
        assert!(misuse("SUM(MAX(power_w))").contains("MAX() is inside SUM()"));
        assert!(misuse("avg(1 + count(*))").contains("COUNT() is inside AVG()"));
        assert!(misuse("COUNT(DISTINCT SUM(power_w))").contains("cannot be nested"));
        assert!(misuse("MIN(ABS(MAX(power_w)))").contains("cannot be nested"));
    }

    #[test]
    fn bare_variable_beside_aggregate_rejected() {
        let m = misuse("SUM(energy_kwh) / power_w");
        assert_eq!(
            m,
            "`power_w` must be inside an aggregate such as SUM() in a formula that uses aggregates"
        );
        assert_eq!(
            misuse("power_w + SUM(energy_kwh)"),
            "`power_w` must be inside an aggregate such as SUM() in a formula that uses aggregates"
        );
        assert_eq!(
            misuse("SUM(energy_kwh) / DATE(timestamp)"),
            "`DATE(timestamp)` must be inside an aggregate such as SUM() in a formula that uses \
             aggregates"
        );
        assert!(misuse("ROUND(power_w, 2) + COUNT(*)").contains("`power_w` must be inside"));
        // Constants and row functions around aggregates are fine.
        assert!(parse("ROUND(100 * SUM(a) / SUM(b), 1)").is_ok());
    }

    #[test]
    fn timestamp_misuse_rejected() {
        for src in [
            "timestamp",
            "timestamp + 1",
            "SUM(timestamp)",
            "ABS(timestamp)",
        ] {
            assert_eq!(
                misuse(src),
                "timestamp can only be used inside DATE(), HOUR(), WEEKDAY() or MONTH()",
                "{src}"
            );
        }
        assert_eq!(
            misuse("DATE(power_w)"),
            "DATE() only accepts `timestamp` as its argument, e.g. DATE(timestamp)"
        );
        assert!(misuse("hour()").contains("HOUR() only accepts `timestamp`"));
        assert_eq!(
            misuse("MONTH(timestamp + 1)"),
            "MONTH() takes exactly one argument, which must be `timestamp`: MONTH(timestamp)"
        );
        assert!(misuse("WEEKDAY(timestamp, 1)").contains("exactly one argument"));
        assert!(misuse("DATE(Timestamp)").contains("only accepts `timestamp`"));
    }

    #[test]
    fn star_and_distinct_misuse() {
        assert!(misuse("SUM(*)").contains("only allowed in COUNT(*), not in SUM()"));
        assert!(misuse("ABS(*)").contains("only allowed in COUNT(*)"));
        assert!(misuse("SUM(DISTINCT power_w)").contains("not in SUM()"));
        assert!(misuse("ABS(DISTINCT power_w)").contains("DISTINCT is only allowed"));
        assert!(misuse("COUNT()").contains("COUNT(*), COUNT(x) or COUNT(DISTINCT x)"));
        assert!(misuse("SUM()").contains("exactly one argument"));
        assert!(misuse("COUNT(power_w, a)").contains("exactly one argument"));
        assert!(misuse("COUNT(*, 1)").contains("exactly one argument"));
        assert!(matches!(
            err("COUNT(* 1)"),
            FormulaError::Syntax { pos: 9, .. }
        ));
        // `DISTINCT` not followed by an expression is an ordinary name.
        assert_eq!(
            err("COUNT(DISTINCT)"),
            FormulaError::UnknownVariable("DISTINCT".into())
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
