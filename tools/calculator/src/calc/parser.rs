//! Recursive-descent parser from tokens to an expression tree.
//!
//! Grammar, loosest binding first:
//!
//! ```text
//! expression := term (('+' | '-') term)*
//! term       := unary (('*' | '/' | '//' | '%') unary)*
//! unary      := ('-' | '+') unary | power
//! power      := postfix ('^' unary)?            (right-associative, `2^-1` allowed)
//! postfix    := primary '!'?
//! primary    := number | name | name '(' expression (',' expression)* ')' | '(' expression ')'
//! ```
//!
//! Every cycle of the grammar goes through `unary`, which counts nesting depth, so deep input
//! is refused with an error long before the stack is at risk. Left-associative chains are
//! stored flat, so the tree is never deeper than the nesting either.

use num_rational::BigRational;

use super::lexer::{Token, TokenKind, lex};
use super::{CalcError, MAX_DEPTH, MAX_INPUT_CHARS};

/// A binary operator of a left-associative chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    FloorDivide,
    Remainder,
}

/// A named constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Constant {
    Pi,
    E,
}

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Abs,
    Min,
    Max,
    Gcd,
    Lcm,
    Factorial,
    Binomial,
    Floor,
    Ceil,
    Round,
    Sqrt,
    Exp,
    Ln,
    Log,
    Log2,
    Log10,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
}

/// Every function with its name and the least and most arguments it takes.
const FUNCTIONS: &[(&str, Function, usize, Option<usize>)] = &[
    ("abs", Function::Abs, 1, Some(1)),
    ("min", Function::Min, 1, None),
    ("max", Function::Max, 1, None),
    ("gcd", Function::Gcd, 1, None),
    ("lcm", Function::Lcm, 1, None),
    ("factorial", Function::Factorial, 1, Some(1)),
    ("binomial", Function::Binomial, 2, Some(2)),
    ("floor", Function::Floor, 1, Some(1)),
    ("ceil", Function::Ceil, 1, Some(1)),
    ("round", Function::Round, 1, Some(1)),
    ("sqrt", Function::Sqrt, 1, Some(1)),
    ("exp", Function::Exp, 1, Some(1)),
    ("ln", Function::Ln, 1, Some(1)),
    ("log", Function::Log, 1, Some(2)),
    ("log2", Function::Log2, 1, Some(1)),
    ("log10", Function::Log10, 1, Some(1)),
    ("sin", Function::Sin, 1, Some(1)),
    ("cos", Function::Cos, 1, Some(1)),
    ("tan", Function::Tan, 1, Some(1)),
    ("asin", Function::Asin, 1, Some(1)),
    ("acos", Function::Acos, 1, Some(1)),
    ("atan", Function::Atan, 1, Some(1)),
];

/// Every constant with its name.
const CONSTANTS: &[(&str, Constant)] = &[("pi", Constant::Pi), ("e", Constant::E)];

impl Function {
    /// The function's name in expressions.
    pub fn name(self) -> &'static str {
        FUNCTIONS
            .iter()
            .find(|(_, function, _, _)| *function == self)
            .map_or("?", |(name, _, _, _)| name)
    }
}

/// An expression tree. Positions are 1-based character positions of the operator or name,
/// used in evaluation errors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Number(BigRational),
    Constant(Constant),
    Negate {
        operand: Box<Expr>,
        position: usize,
    },
    /// `first op₁ x₁ op₂ x₂ …`, evaluated left to right; all operators share a precedence.
    Chain {
        first: Box<Expr>,
        rest: Vec<(BinaryOp, usize, Expr)>,
    },
    Power {
        base: Box<Expr>,
        exponent: Box<Expr>,
        position: usize,
    },
    Factorial {
        operand: Box<Expr>,
        position: usize,
    },
    Call {
        function: Function,
        arguments: Vec<Expr>,
        position: usize,
    },
}

/// Parses a whole expression.
pub(crate) fn parse(input: &str) -> Result<Expr, CalcError> {
    let length = input.chars().count();
    if length > MAX_INPUT_CHARS {
        return Err(CalcError::syntax(
            MAX_INPUT_CHARS + 1,
            format!("the expression is longer than {MAX_INPUT_CHARS} characters"),
        ));
    }
    let tokens = lex(input)?;
    if tokens.len() == 1 {
        return Err(CalcError::syntax(1, "the expression is empty"));
    }
    let mut parser = Parser {
        tokens,
        index: 0,
        depth: 0,
    };
    let expr = parser.expression()?;
    let next = parser.peek();
    match next.kind {
        TokenKind::End => Ok(expr),
        TokenKind::RParen => Err(CalcError::syntax(
            next.position,
            "unmatched `)`: there is no `(` to close",
        )),
        TokenKind::Comma => Err(CalcError::syntax(
            next.position,
            "unexpected `,`: commas only separate function arguments \
             (write numbers without thousands separators)",
        )),
        TokenKind::Number(_) | TokenKind::Name(_) | TokenKind::LParen => Err(CalcError::syntax(
            next.position,
            format!(
                "missing operator before {} (implicit multiplication is not supported: write `2*x`)",
                next.describe()
            ),
        )),
        TokenKind::Bang => Err(CalcError::syntax(
            next.position,
            "`!!` (double factorial) is not supported; write `factorial(n!)` for (n!)!",
        )),
        _ => Err(CalcError::syntax(
            next.position,
            format!("unexpected {}", next.describe()),
        )),
    }
}

struct Parser {
    tokens: Vec<Token>,
    index: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // `lex` ends every token list with `End`, and `advance` never moves past it.
        &self.tokens[self.index.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if self.index < self.tokens.len() - 1 {
            self.index += 1;
        }
        token
    }

    fn expression(&mut self) -> Result<Expr, CalcError> {
        self.chain(Self::term, |kind| match kind {
            TokenKind::Plus => Some(BinaryOp::Add),
            TokenKind::Minus => Some(BinaryOp::Subtract),
            _ => None,
        })
    }

    fn term(&mut self) -> Result<Expr, CalcError> {
        self.chain(Self::unary, |kind| match kind {
            TokenKind::Star => Some(BinaryOp::Multiply),
            TokenKind::Slash => Some(BinaryOp::Divide),
            TokenKind::SlashSlash => Some(BinaryOp::FloorDivide),
            TokenKind::Percent => Some(BinaryOp::Remainder),
            _ => None,
        })
    }

    fn chain(
        &mut self,
        operand: fn(&mut Self) -> Result<Expr, CalcError>,
        operator: fn(&TokenKind) -> Option<BinaryOp>,
    ) -> Result<Expr, CalcError> {
        let first = operand(self)?;
        let mut rest = Vec::new();
        while let Some(op) = operator(&self.peek().kind) {
            let position = self.advance().position;
            rest.push((op, position, operand(self)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Chain {
                first: Box::new(first),
                rest,
            }
        })
    }

    fn unary(&mut self) -> Result<Expr, CalcError> {
        if self.depth >= MAX_DEPTH {
            return Err(CalcError::syntax(
                self.peek().position,
                format!(
                    "the expression is nested too deeply (more than {MAX_DEPTH} levels of \
                     parentheses, signs and powers)"
                ),
            ));
        }
        self.depth += 1;
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Expr, CalcError> {
        match self.peek().kind {
            TokenKind::Minus => {
                let position = self.advance().position;
                Ok(Expr::Negate {
                    operand: Box::new(self.unary()?),
                    position,
                })
            }
            TokenKind::Plus => {
                self.advance();
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Expr, CalcError> {
        let base = self.postfix()?;
        if self.peek().kind != TokenKind::Power {
            return Ok(base);
        }
        let position = self.advance().position;
        Ok(Expr::Power {
            base: Box::new(base),
            exponent: Box::new(self.unary()?),
            position,
        })
    }

    fn postfix(&mut self) -> Result<Expr, CalcError> {
        let operand = self.primary()?;
        if self.peek().kind != TokenKind::Bang {
            return Ok(operand);
        }
        let position = self.advance().position;
        Ok(Expr::Factorial {
            operand: Box::new(operand),
            position,
        })
    }

    fn primary(&mut self) -> Result<Expr, CalcError> {
        let token = self.advance();
        match token.kind {
            TokenKind::Number(value) => Ok(Expr::Number(value)),
            TokenKind::Name(name) => self.name(&name, &token.text, token.position),
            TokenKind::LParen => {
                let inner = self.expression()?;
                self.close(token.position)?;
                Ok(inner)
            }
            TokenKind::End => Err(CalcError::syntax(
                token.position,
                "the expression ends where a number, name or `(` was expected",
            )),
            _ => Err(CalcError::syntax(
                token.position,
                format!(
                    "expected a number, name or `(` but found {}",
                    token.describe()
                ),
            )),
        }
    }

    fn name(&mut self, name: &str, text: &str, position: usize) -> Result<Expr, CalcError> {
        let called = self.peek().kind == TokenKind::LParen;
        if let Some((_, constant)) = CONSTANTS.iter().find(|(known, _)| *known == name) {
            if called {
                return Err(CalcError::syntax(
                    position,
                    format!("`{text}` is a constant, not a function"),
                ));
            }
            return Ok(Expr::Constant(*constant));
        }
        let Some(&(_, function, min, max)) =
            FUNCTIONS.iter().find(|(known, _, _, _)| *known == name)
        else {
            return Err(CalcError::syntax(position, unknown_name(text)));
        };
        if !called {
            return Err(CalcError::syntax(
                position,
                format!(
                    "the function `{text}` needs its arguments in parentheses, e.g. `{name}(2)`"
                ),
            ));
        }
        let open = self.advance().position;
        let mut arguments = vec![self.expression()?];
        while self.peek().kind == TokenKind::Comma {
            self.advance();
            arguments.push(self.expression()?);
        }
        self.close(open)?;
        let count = arguments.len();
        if count < min || max.is_some_and(|max| count > max) {
            let expected = match max {
                Some(max) if max == min => format!("{min}"),
                Some(max) => format!("{min} or {max}"),
                None => format!("at least {min}"),
            };
            let plural = if expected == "1" { "" } else { "s" };
            return Err(CalcError::syntax(
                position,
                format!("`{name}` takes {expected} argument{plural}, got {count}"),
            ));
        }
        Ok(Expr::Call {
            function,
            arguments,
            position,
        })
    }

    /// Consumes the `)` matching the `(` at `open`.
    fn close(&mut self, open: usize) -> Result<(), CalcError> {
        let token = self.advance();
        match token.kind {
            TokenKind::RParen => Ok(()),
            TokenKind::End => Err(CalcError::syntax(
                token.position,
                format!("missing `)`: the `(` at position {open} is never closed"),
            )),
            TokenKind::Number(_) | TokenKind::Name(_) | TokenKind::LParen => {
                Err(CalcError::syntax(
                    token.position,
                    format!(
                        "missing operator before {} (implicit multiplication is not supported: write `2*x`)",
                        token.describe()
                    ),
                ))
            }
            TokenKind::Bang => Err(CalcError::syntax(
                token.position,
                "`!!` (double factorial) is not supported; write `factorial(n!)` for (n!)!",
            )),
            _ => Err(CalcError::syntax(
                token.position,
                format!(
                    "expected `)` to close the `(` at position {open} but found {}",
                    token.describe()
                ),
            )),
        }
    }
}

fn unknown_name(text: &str) -> String {
    let functions: Vec<&str> = FUNCTIONS.iter().map(|(name, _, _, _)| *name).collect();
    format!(
        "unknown name `{text}`; functions: {}; constants: pi, e",
        functions.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_error(input: &str) -> (usize, String) {
        match parse(input) {
            Err(CalcError::Syntax { position, message }) => (position, message),
            other => panic!("`{input}` should be a syntax error, got {other:?}"),
        }
    }

    fn int(value: i64) -> Expr {
        Expr::Number(BigRational::from_integer(value.into()))
    }

    #[test]
    fn precedence_and_associativity() {
        // 1 - 2 - 3 is one flat chain, evaluated left to right.
        assert_eq!(
            parse("1 - 2 - 3").unwrap(),
            Expr::Chain {
                first: Box::new(int(1)),
                rest: vec![
                    (BinaryOp::Subtract, 3, int(2)),
                    (BinaryOp::Subtract, 7, int(3))
                ],
            }
        );
        // -2^2 is -(2^2); 2^3^2 is 2^(3^2).
        assert_eq!(
            parse("-2^2").unwrap(),
            Expr::Negate {
                operand: Box::new(Expr::Power {
                    base: Box::new(int(2)),
                    exponent: Box::new(int(2)),
                    position: 3,
                }),
                position: 1,
            }
        );
        assert_eq!(
            parse("2^3^2").unwrap(),
            Expr::Power {
                base: Box::new(int(2)),
                exponent: Box::new(Expr::Power {
                    base: Box::new(int(3)),
                    exponent: Box::new(int(2)),
                    position: 4,
                }),
                position: 2,
            }
        );
        // 1 + 2 * 3: multiplication binds tighter.
        assert_eq!(
            parse("1 + 2 * 3").unwrap(),
            Expr::Chain {
                first: Box::new(int(1)),
                rest: vec![(
                    BinaryOp::Add,
                    3,
                    Expr::Chain {
                        first: Box::new(int(2)),
                        rest: vec![(BinaryOp::Multiply, 7, int(3))],
                    }
                )],
            }
        );
        // 3! binds tighter than ^, and the exponent may carry a sign.
        assert_eq!(
            parse("2^-3!").unwrap(),
            Expr::Power {
                base: Box::new(int(2)),
                exponent: Box::new(Expr::Negate {
                    operand: Box::new(Expr::Factorial {
                        operand: Box::new(int(3)),
                        position: 5,
                    }),
                    position: 3,
                }),
                position: 2,
            }
        );
    }

    #[test]
    fn calls_and_constants() {
        assert_eq!(
            parse("GCD(4, 6, 8)").unwrap(),
            Expr::Call {
                function: Function::Gcd,
                arguments: vec![int(4), int(6), int(8)],
                position: 1,
            }
        );
        assert_eq!(parse("π").unwrap(), Expr::Constant(Constant::Pi));
        assert_eq!(Function::Binomial.name(), "binomial");
    }

    #[test]
    fn arity_is_checked() {
        assert_eq!(
            syntax_error("binomial(5)"),
            (1, "`binomial` takes 2 arguments, got 1".into())
        );
        assert_eq!(
            syntax_error("1 + sqrt(1, 2)"),
            (5, "`sqrt` takes 1 argument, got 2".into())
        );
        assert_eq!(
            syntax_error("log(1, 2, 3)"),
            (1, "`log` takes 1 or 2 arguments, got 3".into())
        );
        assert!(parse("max(1)").is_ok());
        assert!(syntax_error("max()").1.contains("expected a number"));
    }

    #[test]
    fn names_are_checked() {
        let (position, message) = syntax_error("2 * foo(3)");
        assert_eq!(position, 5);
        assert!(
            message.starts_with("unknown name `foo`; functions: abs,"),
            "{message}"
        );
        assert_eq!(
            syntax_error("pi(2)"),
            (1, "`pi` is a constant, not a function".into())
        );
        assert_eq!(syntax_error("sqrt + 1").0, 1);
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        assert_eq!(syntax_error("").0, 1);
        assert_eq!(syntax_error("   ").1, "the expression is empty");
        assert_eq!(
            syntax_error("1 +"),
            (
                4,
                "the expression ends where a number, name or `(` was expected".into()
            )
        );
        assert_eq!(
            syntax_error("(1 + 2"),
            (
                7,
                "missing `)`: the `(` at position 1 is never closed".into()
            )
        );
        assert_eq!(
            syntax_error("1 + 2)"),
            (6, "unmatched `)`: there is no `(` to close".into())
        );
        assert_eq!(
            syntax_error("1 * * 2"),
            (5, "expected a number, name or `(` but found `*`".into())
        );
        let (position, message) = syntax_error("2pi");
        assert_eq!(position, 2);
        assert!(
            message.starts_with("missing operator before the name `pi`"),
            "{message}"
        );
        assert_eq!(syntax_error("(1)(2)").0, 4);
        assert_eq!(syntax_error("(1 2)").0, 4);
        assert!(syntax_error("1,000").1.contains("thousands separators"));
        assert!(syntax_error("3!!").1.contains("double factorial"));
        assert!(syntax_error("(3!!)").1.contains("double factorial"));
        assert!(syntax_error("(1, 2)").1.contains("expected `)`"));
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&ok).is_ok());
        let deep = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        let (position, message) = syntax_error(&deep);
        assert_eq!(position, MAX_DEPTH + 1);
        assert!(message.contains("nested too deeply"), "{message}");
        // Far deeper input fails the same way instead of overflowing the stack.
        let very_deep = "(".repeat(5_000);
        assert!(syntax_error(&very_deep).1.contains("nested too deeply"));
        assert!(
            syntax_error(&"-".repeat(5_000))
                .1
                .contains("nested too deeply")
        );
        let tower = vec!["2"; 3_000].join("^");
        assert!(syntax_error(&tower).1.contains("nested too deeply"));
        // Long flat chains are not nesting.
        let long = vec!["1"; 4_000].join("+");
        assert!(parse(&long).is_ok());
    }

    #[test]
    fn nesting_limit_fits_a_small_stack() {
        // The guest's stack is 1 MiB; parsing and evaluating the deepest accepted input must
        // fit comfortably in a quarter of that even in unoptimised builds.
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let half = MAX_DEPTH / 2 - 1;
                let input = format!("{}1{}", "(-".repeat(half), ")".repeat(half));
                crate::calc::evaluate(&input).map(|value| value.to_string())
            })
            .expect("thread starts");
        assert_eq!(handle.join().expect("no stack overflow"), Ok("-1".into()));
    }

    #[test]
    fn length_is_bounded() {
        let long = "1".repeat(MAX_INPUT_CHARS + 1);
        assert!(syntax_error(&long).1.contains("longer than"));
    }
}
