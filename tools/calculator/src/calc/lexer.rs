//! Splits an expression into tokens, turning number literals into exact rationals.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::Zero;

use super::{CalcError, MAX_DIGITS};

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// A number literal, exactly.
    Number(BigRational),
    /// A function or constant name, lower-cased.
    Name(String),
    Plus,
    Minus,
    Star,
    Slash,
    SlashSlash,
    Percent,
    /// `^` or `**`.
    Power,
    Bang,
    LParen,
    RParen,
    Comma,
    /// After the last token.
    End,
}

/// A token with its source text and 1-based character position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub text: String,
    pub position: usize,
}

impl Token {
    /// How error messages refer to the token.
    pub fn describe(&self) -> String {
        match &self.kind {
            TokenKind::End => "the end of the expression".to_owned(),
            TokenKind::Number(_) => format!("the number `{}`", self.text),
            TokenKind::Name(_) => format!("the name `{}`", self.text),
            _ => format!("`{}`", self.text),
        }
    }
}

/// Tokenizes `input`. The last token is always [`TokenKind::End`].
pub(crate) fn lex(input: &str) -> Result<Vec<Token>, CalcError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i + 1)) {
            let (value, end) = lex_number(&chars, i)?;
            i = end;
            TokenKind::Number(value)
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect::<String>().to_lowercase();
            TokenKind::Name(if name == "π" { "pi".to_owned() } else { name })
        } else {
            i += 1;
            match c {
                '+' => TokenKind::Plus,
                '-' | '−' => TokenKind::Minus,
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    TokenKind::Power
                }
                '*' | '×' => TokenKind::Star,
                '/' if chars.get(i) == Some(&'/') => {
                    i += 1;
                    TokenKind::SlashSlash
                }
                '/' | '÷' => TokenKind::Slash,
                '%' => TokenKind::Percent,
                '^' => TokenKind::Power,
                '!' => TokenKind::Bang,
                '(' => TokenKind::LParen,
                ')' => TokenKind::RParen,
                ',' => TokenKind::Comma,
                _ => {
                    return Err(CalcError::syntax(
                        start + 1,
                        format!("unexpected character `{c}`"),
                    ));
                }
            }
        };
        tokens.push(Token {
            kind,
            text: chars[start..i].iter().collect(),
            position: start + 1,
        });
    }
    tokens.push(Token {
        kind: TokenKind::End,
        text: String::new(),
        position: chars.len() + 1,
    });
    Ok(tokens)
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i).is_some_and(char::is_ascii_digit)
}

/// Lexes `digits [. digits] [(e|E) [+-] digits]` (or `. digits …`) starting at `start`.
/// Returns the exact value and the index after the literal.
fn lex_number(chars: &[char], start: usize) -> Result<(BigRational, usize), CalcError> {
    let mut i = start;
    let mut mantissa = String::new();
    let mut fraction_digits: i64 = 0;
    while i < chars.len() && chars[i].is_ascii_digit() {
        mantissa.push(chars[i]);
        i += 1;
    }
    if i < chars.len() && chars[i] == '.' {
        i += 1;
        while i < chars.len() && chars[i].is_ascii_digit() {
            mantissa.push(chars[i]);
            fraction_digits += 1;
            i += 1;
        }
        if i < chars.len() && chars[i] == '.' {
            return Err(CalcError::syntax(
                i + 1,
                "a number cannot have a second decimal point",
            ));
        }
    }
    let mut exponent: i64 = 0;
    if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
        let marker = i;
        let mut j = i + 1;
        let negative = match chars.get(j) {
            Some('+') => {
                j += 1;
                false
            }
            Some('-') | Some('−') => {
                j += 1;
                true
            }
            _ => false,
        };
        if !next_is_digit(chars, j) {
            return Err(CalcError::syntax(
                marker + 1,
                "`e` right after a number must start an exponent such as `1e-3` \
                 (write `2*e` to multiply by the constant e)",
            ));
        }
        let digits_start = j;
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
        }
        let digits: String = chars[digits_start..j].iter().collect();
        let magnitude: i64 = match digits.trim_start_matches('0') {
            "" => 0,
            significant if significant.len() <= 9 => significant.parse().unwrap_or(i64::MAX),
            _ => i64::MAX,
        };
        exponent = if negative { -magnitude } else { magnitude };
        i = j;
    }
    let significant = mantissa.trim_start_matches('0');
    let scale = exponent.saturating_sub(fraction_digits);
    let too_large = || {
        CalcError::syntax(
            start + 1,
            format!("the number literal has more than {MAX_DIGITS} digits"),
        )
    };
    if significant.is_empty() {
        return Ok((BigRational::zero(), i));
    }
    let significant_digits = significant.len() as i64;
    let max = MAX_DIGITS as i64;
    if significant_digits > max
        || significant_digits.saturating_add(scale) > max
        || scale.saturating_neg().saturating_add(1) > max
    {
        return Err(too_large());
    }
    let numerator: BigInt = significant.parse().map_err(|_| too_large())?;
    let power_of_ten = BigInt::from(10u32).pow(scale.unsigned_abs() as u32);
    let value = if scale >= 0 {
        BigRational::from_integer(numerator * power_of_ten)
    } else {
        BigRational::new(numerator, power_of_ten)
    };
    Ok((value, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<TokenKind> {
        lex(input)
            .expect("lexes")
            .into_iter()
            .map(|token| token.kind)
            .collect()
    }

    fn number(input: &str) -> BigRational {
        match kinds(input).as_slice() {
            [TokenKind::Number(value), TokenKind::End] => value.clone(),
            other => panic!("`{input}` is not one number: {other:?}"),
        }
    }

    fn ratio(numerator: i64, denominator: i64) -> BigRational {
        BigRational::new(numerator.into(), denominator.into())
    }

    #[test]
    fn numbers_are_exact() {
        assert_eq!(number("42"), ratio(42, 1));
        assert_eq!(number("0.25"), ratio(1, 4));
        assert_eq!(number(".5"), ratio(1, 2));
        assert_eq!(number("5."), ratio(5, 1));
        assert_eq!(number("1.5e3"), ratio(1500, 1));
        assert_eq!(number("1.5E-3"), ratio(3, 2000));
        assert_eq!(number("2e+2"), ratio(200, 1));
        assert_eq!(number("000"), ratio(0, 1));
        assert_eq!(number("0e99999999999"), ratio(0, 1));
        assert_eq!(number("007.50"), ratio(15, 2));
    }

    #[test]
    fn operators_and_positions() {
        let tokens = lex("2 ** 3 // 4 ^ x").expect("lexes");
        let summary: Vec<(String, usize)> = tokens
            .iter()
            .map(|token| (token.text.clone(), token.position))
            .collect();
        assert_eq!(
            summary,
            [
                ("2", 1),
                ("**", 3),
                ("3", 6),
                ("//", 8),
                ("4", 11),
                ("^", 13),
                ("x", 15),
                ("", 16)
            ]
            .map(|(text, position)| (text.to_owned(), position))
        );
        assert_eq!(
            kinds("2×3÷4−1%2!,()"),
            vec![
                TokenKind::Number(ratio(2, 1)),
                TokenKind::Star,
                TokenKind::Number(ratio(3, 1)),
                TokenKind::Slash,
                TokenKind::Number(ratio(4, 1)),
                TokenKind::Minus,
                TokenKind::Number(ratio(1, 1)),
                TokenKind::Percent,
                TokenKind::Number(ratio(2, 1)),
                TokenKind::Bang,
                TokenKind::Comma,
                TokenKind::LParen,
                TokenKind::RParen,
                TokenKind::End,
            ]
        );
    }

    #[test]
    fn names_are_lower_cased() {
        assert_eq!(
            kinds("Sqrt π log_2"),
            vec![
                TokenKind::Name("sqrt".into()),
                TokenKind::Name("pi".into()),
                TokenKind::Name("log_2".into()),
                TokenKind::End,
            ]
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let tokens = lex("π×2").expect("lexes");
        assert_eq!(tokens[2].position, 3);
    }

    #[test]
    fn malformed_numbers() {
        let error = lex("1.2.3").unwrap_err();
        assert_eq!(
            error,
            CalcError::syntax(4, "a number cannot have a second decimal point")
        );
        let error = lex("2e").unwrap_err();
        assert!(matches!(error, CalcError::Syntax { position: 2, .. }));
        assert!(error.to_string().contains("2*e"), "{error}");
        assert!(lex("3ex").is_err());
    }

    #[test]
    fn oversized_literals_are_refused() {
        let huge = "9".repeat(10_001);
        assert!(matches!(
            lex(&huge),
            Err(CalcError::Syntax { position: 1, .. })
        ));
        assert!(lex(&"9".repeat(10_000)).is_ok());
        assert!(lex("1e10000").is_err());
        assert!(lex("1e9999").is_ok());
        assert!(lex("1e-9999").is_ok());
        assert!(lex("1e-10000").is_err());
        assert!(lex("1e99999999999999999999").is_err());
        assert!(lex("1e-99999999999999999999").is_err());
    }

    #[test]
    fn unexpected_characters() {
        assert_eq!(
            lex("1 & 2").unwrap_err(),
            CalcError::syntax(3, "unexpected character `&`")
        );
    }
}
