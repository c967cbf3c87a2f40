//! The lexer of the formula language: characters into numbers, names and punctuation,
//! each with its 1-based position for error messages.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    /// 1-based character position.
    pub(super) pos: usize,
}

pub(super) fn syntax(pos: usize, message: impl Into<String>) -> FormulaError {
    FormulaError::Syntax {
        pos,
        message: message.into(),
    }
}

pub(super) fn describe(tok: &Tok) -> String {
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
pub(super) fn lex(chars: &[char]) -> Result<Vec<Token>, FormulaError> {
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

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

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
}
