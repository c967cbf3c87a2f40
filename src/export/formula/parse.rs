//! The parser: tokens into a checked expression tree. Enforces the depth limit, where
//! functions may stand (aggregates not nested, `timestamp` only in time functions) and
//! resolves variable names to indices once.

use super::lex::*;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MathFn {
    Abs,
    Floor,
    Ceil,
    Sqrt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeFn {
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
pub(super) enum AggKind {
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
pub(super) enum Expr {
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
pub(super) struct AggSpec {
    pub(super) kind: AggKind,
    /// `None` only for `COUNT(*)`.
    pub(super) arg: Option<Expr>,
}

#[derive(Debug)]
pub(super) struct Program {
    pub(super) root: Expr,
    pub(super) aggs: Vec<AggSpec>,
}

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

/// Lexes and parses `src` into a checked program (see [`Formula::parse`] for the order of checks).
pub(super) fn program(
    src: &str,
    resolve: &dyn Fn(&str) -> Option<usize>,
) -> Result<Program, FormulaError> {
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
    Ok(Program {
        root,
        aggs: parser.aggs,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

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
    fn variables_are_case_sensitive() {
        assert_eq!(
            err("Power_W"),
            FormulaError::UnknownVariable("Power_W".into())
        );
        assert_eq!(row_eval("power_w", &[Some(4.0)]), Some(4.0));
    }
}
