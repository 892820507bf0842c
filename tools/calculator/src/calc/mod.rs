//! The calculator proper: a hand-written lexer and recursive-descent parser producing an
//! expression tree, and an evaluator over exact big rationals with an `f64` fallback for real
//! functions.
//!
//! # Language
//!
//! | syntax | meaning |
//! |---|---|
//! | `12`, `0.25`, `1.5e-3` | exact numbers: decimals are exact fractions (`0.1` is `1/10`) |
//! | `a + b`, `a - b`, `a * b` (also `×`) | exact arithmetic |
//! | `a / b` (also `÷`) | exact division: `1/3` stays `1/3` |
//! | `a // b` | floor division (rounds toward negative infinity) |
//! | `a % b` | modulo with the sign of the divisor, as in Python |
//! | `a ^ b`, `a ** b` | power, right-associative; `-2^2` is `-4`, `2^-1` is `1/2` |
//! | `n!` | factorial |
//! | `-a`, `+a`, `( … )` | signs and grouping |
//! | `abs min max gcd lcm factorial binomial floor ceil round` | exact functions |
//! | `sqrt exp ln log log2 log10 sin cos tan asin acos atan`, `pi`, `e` | real (`f64`) |
//!
//! Precedence, from loosest: `+ -`, then `* / // %`, then unary signs, then `^`, then `!`.
//! Names are case-insensitive; `π` is `pi`. Implicit multiplication (`2pi`) is not supported.
//!
//! Exact results print as an integer or a reduced fraction `p/q`. As soon as a real function
//! or constant is involved the result is an `f64`, printed in its shortest round-trip form with
//! a decimal point or exponent (`1.4142135623730951`, `4.0`, `1e-7`).
//!
//! # Limits
//!
//! Expressions are at most [`MAX_INPUT_CHARS`] characters and nest at most [`MAX_DEPTH`]
//! levels. No exact number, literal or intermediate, may exceed [`MAX_DIGITS`] decimal digits in
//! its numerator or denominator; powers, factorials and binomials are refused *before* they
//! are computed when their size estimate exceeds the bound.

mod eval;
mod lexer;
mod parser;

pub use eval::Value;

/// Most characters an expression may have.
pub const MAX_INPUT_CHARS: usize = 10_000;

/// Deepest nesting of parentheses, signs and powers the parser accepts.
pub const MAX_DEPTH: usize = 100;

/// Most decimal digits of the numerator or denominator of any exact number.
pub const MAX_DIGITS: u64 = 10_000;

/// Why an expression has no value. Positions count characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    /// The expression is malformed: a syntax error, an unknown name, a wrong number of
    /// arguments, an over-long or over-nested expression.
    #[error("{message} (at position {position})")]
    Syntax {
        /// Character position of the offending token.
        position: usize,
        /// What is wrong.
        message: String,
    },
    /// The expression is well-formed but has no value: division by zero, a domain error such
    /// as `sqrt(-1)`, or a result too large to compute.
    #[error("{message} (at position {position})")]
    Eval {
        /// Character position of the operator or function that failed.
        position: usize,
        /// What is wrong.
        message: String,
    },
}

impl CalcError {
    pub(crate) fn syntax(position: usize, message: impl Into<String>) -> Self {
        Self::Syntax {
            position,
            message: message.into(),
        }
    }

    pub(crate) fn eval(position: usize, message: impl Into<String>) -> Self {
        Self::Eval {
            position,
            message: message.into(),
        }
    }
}

/// Parses and evaluates `expression`.
pub fn evaluate(expression: &str) -> Result<Value, CalcError> {
    let tree = parser::parse(expression)?;
    eval::evaluate(&tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(expression: &str) -> String {
        match evaluate(expression) {
            Ok(value) => value.to_string(),
            Err(error) => panic!("`{expression}` failed: {error}"),
        }
    }

    #[test]
    fn end_to_end_examples() {
        assert_eq!(ok("1 + 2 * 3"), "7");
        assert_eq!(ok("(1 + 2) * 3"), "9");
        assert_eq!(ok("2^100"), "1267650600228229401496703205376");
        assert_eq!(ok("1/3 + 1/6"), "1/2");
        assert_eq!(ok("0.1 + 0.2"), "3/10");
        assert_eq!(ok("sqrt(2)"), "1.4142135623730951");
        assert_eq!(ok("factorial(5) / 4!"), "5");
        assert_eq!(ok("gcd(12, 18) + lcm(4, 6)"), "18");
    }

    #[test]
    fn error_kinds() {
        assert!(matches!(evaluate("1 +"), Err(CalcError::Syntax { .. })));
        assert!(matches!(evaluate("1 / 0"), Err(CalcError::Eval { .. })));
        let message = evaluate("1 / (2 - 2)").unwrap_err().to_string();
        assert_eq!(message, "division by zero (at position 3)");
    }
}
