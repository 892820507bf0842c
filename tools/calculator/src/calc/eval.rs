//! Evaluation of expression trees over exact rationals, falling back to `f64` for real
//! functions.

use std::cmp::Ordering;
use std::f64::consts::{LN_10, LOG10_2};
use std::fmt;

use num_bigint::{BigInt, Sign};
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{FromPrimitive, One, Signed, ToPrimitive, Zero};

use super::parser::{BinaryOp, Constant, Expr, Function};
use super::{CalcError, MAX_DIGITS};

/// The value of an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An exact rational number; displays as `p` or the reduced fraction `p/q`.
    Exact(BigRational),
    /// A finite floating-point number, produced once a real function or constant is involved;
    /// displays in its shortest round-trip form with a decimal point or exponent.
    Real(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Exact(value) if value.is_integer() => write!(f, "{}", value.numer()),
            Value::Exact(value) => write!(f, "{}/{}", value.numer(), value.denom()),
            Value::Real(value) if *value == 0.0 => f.write_str("0.0"),
            Value::Real(value) => write!(f, "{value:?}"),
        }
    }
}

/// Evaluates a parsed expression.
pub(crate) fn evaluate(expr: &Expr) -> Result<Value, CalcError> {
    match expr {
        Expr::Number(value) => Ok(Value::Exact(value.clone())),
        Expr::Constant(Constant::Pi) => Ok(Value::Real(std::f64::consts::PI)),
        Expr::Constant(Constant::E) => Ok(Value::Real(std::f64::consts::E)),
        Expr::Negate { operand, .. } => Ok(match evaluate(operand)? {
            Value::Exact(value) => Value::Exact(-value),
            Value::Real(value) => Value::Real(-value),
        }),
        Expr::Chain { first, rest } => {
            let mut accumulator = evaluate(first)?;
            for (op, position, operand) in rest {
                let operand = evaluate(operand)?;
                accumulator = binary(*op, accumulator, operand, *position)?;
            }
            Ok(accumulator)
        }
        Expr::Power {
            base,
            exponent,
            position,
        } => power(&evaluate(base)?, &evaluate(exponent)?, *position),
        Expr::Factorial { operand, position } => {
            let n = integer_argument(&evaluate(operand)?, "factorial", *position)?;
            factorial(&n, *position)
        }
        Expr::Call {
            function,
            arguments,
            position,
        } => {
            let values = arguments
                .iter()
                .map(evaluate)
                .collect::<Result<Vec<_>, _>>()?;
            call(*function, &values, *position)
        }
    }
}

/// An exact result, refused when too large.
fn exact(value: BigRational, position: usize) -> Result<Value, CalcError> {
    let digits = decimal_digits(value.numer()).max(decimal_digits(value.denom()));
    if digits > MAX_DIGITS {
        return Err(too_large(digits as f64, position));
    }
    Ok(Value::Exact(value))
}

/// A real result, refused unless finite.
fn real(value: f64, position: usize) -> Result<Value, CalcError> {
    if value.is_nan() {
        Err(CalcError::eval(position, "the result is not a real number"))
    } else if value.is_infinite() {
        Err(CalcError::eval(
            position,
            "the result is too large for floating point (beyond 1.8e308)",
        ))
    } else {
        Ok(Value::Real(value))
    }
}

fn too_large(estimated_digits: f64, position: usize) -> CalcError {
    let estimate = if !estimated_digits.is_finite() || estimated_digits >= 1e15 {
        "astronomically many".to_owned()
    } else {
        format!("about {}", estimated_digits.round())
    };
    CalcError::eval(
        position,
        format!("the result would have {estimate} digits, more than the limit of {MAX_DIGITS}"),
    )
}

/// `log10(|n|)`, accurate to about 1e-15 relative even for numbers beyond `f64`'s range;
/// negative infinity for zero.
fn log10_abs(n: &BigInt) -> f64 {
    let bits = n.bits();
    if bits <= 1000 {
        return n.abs().to_f64().map_or(f64::NEG_INFINITY, f64::log10);
    }
    let shift = bits - 64;
    let top = (n.magnitude() >> shift).to_f64().unwrap_or(1.0);
    top.log10() + shift as f64 * LOG10_2
}

/// Number of decimal digits of `|n|` (1 for zero).
fn decimal_digits(n: &BigInt) -> u64 {
    if n.is_zero() {
        return 1;
    }
    let log = log10_abs(n);
    let nearest = log.round();
    if (log - nearest).abs() < 1e-6 && nearest < 1e6 {
        // Close to a power of ten, where rounding could go either way: decide exactly.
        let power = BigInt::from(10u32).pow(nearest as u32);
        return if n.magnitude() >= power.magnitude() {
            nearest as u64 + 1
        } else {
            nearest as u64
        };
    }
    log.floor() as u64 + 1
}

/// `log10(|r|)` of a non-zero rational.
fn log10_rational(r: &BigRational) -> f64 {
    log10_abs(r.numer()) - log10_abs(r.denom())
}

/// A short rendering of a value for error messages.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 40 {
        return text;
    }
    match value {
        Value::Exact(r) if r.is_integer() => {
            format!("a {}-digit integer", decimal_digits(r.numer()))
        }
        _ => "a very long number".to_owned(),
    }
}

fn to_f64(value: &Value, position: usize) -> Result<f64, CalcError> {
    match value {
        Value::Real(x) => Ok(*x),
        Value::Exact(r) => match r.to_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(CalcError::eval(
                position,
                format!(
                    "{} is too large for floating-point arithmetic",
                    brief(value)
                ),
            )),
        },
    }
}

fn integer_argument(value: &Value, function: &str, position: usize) -> Result<BigInt, CalcError> {
    match value {
        Value::Exact(r) if r.is_integer() => Ok(r.numer().clone()),
        Value::Exact(_) => Err(CalcError::eval(
            position,
            format!("`{function}` needs integers, got {}", brief(value)),
        )),
        Value::Real(_) => Err(CalcError::eval(
            position,
            format!(
                "`{function}` needs exact integers, got the floating-point number {} \
                 (use round, floor or ceil to convert)",
                brief(value)
            ),
        )),
    }
}

fn binary(op: BinaryOp, a: Value, b: Value, position: usize) -> Result<Value, CalcError> {
    match (a, b) {
        (Value::Exact(x), Value::Exact(y)) => exact_binary(op, x, y, position),
        (a, b) => {
            let x = to_f64(&a, position)?;
            let y = to_f64(&b, position)?;
            real_binary(op, x, y, position)
        }
    }
}

fn zero_divisor(op: BinaryOp, position: usize) -> CalcError {
    let message = if op == BinaryOp::Remainder {
        "modulo by zero"
    } else {
        "division by zero"
    };
    CalcError::eval(position, message)
}

fn exact_binary(
    op: BinaryOp,
    x: BigRational,
    y: BigRational,
    position: usize,
) -> Result<Value, CalcError> {
    let divides = matches!(
        op,
        BinaryOp::Divide | BinaryOp::FloorDivide | BinaryOp::Remainder
    );
    if divides && y.is_zero() {
        return Err(zero_divisor(op, position));
    }
    let value = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Subtract => x - y,
        BinaryOp::Multiply => x * y,
        BinaryOp::Divide => x / y,
        BinaryOp::FloorDivide => (x / y).floor(),
        BinaryOp::Remainder => {
            let quotient = (&x / &y).floor();
            x - y * quotient
        }
    };
    exact(value, position)
}

fn real_binary(op: BinaryOp, x: f64, y: f64, position: usize) -> Result<Value, CalcError> {
    let divides = matches!(
        op,
        BinaryOp::Divide | BinaryOp::FloorDivide | BinaryOp::Remainder
    );
    if divides && y == 0.0 {
        return Err(zero_divisor(op, position));
    }
    let value = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Subtract => x - y,
        BinaryOp::Multiply => x * y,
        BinaryOp::Divide => x / y,
        BinaryOp::FloorDivide => (x / y).floor(),
        BinaryOp::Remainder => {
            let remainder = x % y;
            if remainder != 0.0 && (remainder < 0.0) != (y < 0.0) {
                remainder + y
            } else {
                remainder
            }
        }
    };
    real(value, position)
}

fn negative_fractional_power(position: usize) -> CalcError {
    CalcError::eval(
        position,
        "a negative number raised to a fractional power is not a real number",
    )
}

fn zero_to_negative_power(position: usize) -> CalcError {
    CalcError::eval(
        position,
        "division by zero: 0 cannot be raised to a negative power",
    )
}

fn power(base: &Value, exponent: &Value, position: usize) -> Result<Value, CalcError> {
    match (base, exponent) {
        (Value::Exact(b), Value::Exact(e)) => exact_power(b, e, position),
        _ => {
            let b = to_f64(base, position)?;
            let e = to_f64(exponent, position)?;
            if b == 0.0 && e < 0.0 {
                return Err(zero_to_negative_power(position));
            }
            if b < 0.0 && e.fract() != 0.0 {
                return Err(negative_fractional_power(position));
            }
            real(b.powf(e), position)
        }
    }
}

fn exact_power(
    base: &BigRational,
    exponent: &BigRational,
    position: usize,
) -> Result<Value, CalcError> {
    if exponent.is_integer() {
        return exact(integer_power(base, exponent.numer(), position)?, position);
    }
    let (p, q) = (exponent.numer(), exponent.denom());
    if base.is_negative() && q.is_even() {
        return Err(negative_fractional_power(position));
    }
    if let Some(root) = exact_root(base, q) {
        return exact(integer_power(&root, p, position)?, position);
    }
    // Irrational result: |base|^exponent in floating point, with the sign of an odd root.
    let e = to_f64(&Value::Exact(exponent.clone()), position)?;
    let magnitude = base.abs();
    let value = match magnitude.to_f64() {
        Some(m) if m.is_normal() => m.powf(e),
        _ => 10f64.powf(e * log10_rational(&magnitude)),
    };
    let sign = if base.is_negative() && p.is_odd() {
        -1.0
    } else {
        1.0
    };
    real(sign * value, position)
}

/// `base^exponent` for an integer exponent, refused before computing when the result would
/// exceed the digit limit.
fn integer_power(
    base: &BigRational,
    exponent: &BigInt,
    position: usize,
) -> Result<BigRational, CalcError> {
    if base.is_zero() {
        return match exponent.sign() {
            Sign::Minus => Err(zero_to_negative_power(position)),
            Sign::NoSign => Ok(BigRational::one()),
            Sign::Plus => Ok(BigRational::zero()),
        };
    }
    if exponent.is_zero() {
        return Ok(BigRational::one());
    }
    if base.abs().is_one() {
        return Ok(if base.is_negative() && exponent.is_odd() {
            -BigRational::one()
        } else {
            BigRational::one()
        });
    }
    // |base| is neither 0 nor 1, so the larger of numerator and denominator is at least 2 and
    // the result's size grows linearly with |exponent|.
    let size = log10_abs(base.numer()).max(log10_abs(base.denom()));
    let estimated = exponent.to_f64().map_or(f64::INFINITY, f64::abs) * size;
    if estimated.floor() + 1.0 > MAX_DIGITS as f64 {
        return Err(too_large(estimated.floor() + 1.0, position));
    }
    let Some(e) = exponent.magnitude().to_u32() else {
        return Err(too_large(estimated, position));
    };
    let numerator = base.numer().pow(e);
    let denominator = base.denom().pow(e);
    Ok(if exponent.is_negative() {
        BigRational::new(denominator, numerator)
    } else {
        BigRational::new(numerator, denominator)
    })
}

/// The exact `q`-th root of `base`, if it is rational. For negative `base` the caller ensures
/// `q` is odd.
fn exact_root(base: &BigRational, q: &BigInt) -> Option<BigRational> {
    if base.is_zero() || base.abs().is_one() {
        return Some(base.clone());
    }
    let q = q.to_u32()?;
    // An integer n ≥ 2 below 2^k has its q-th root strictly between 1 and 2 when q ≥ k, so
    // only q below the bit length can give an integer root.
    let bits = base.numer().bits().max(base.denom().bits());
    if u64::from(q) >= bits {
        return None;
    }
    let root = |n: &BigInt| -> Option<BigInt> {
        let magnitude = n.abs();
        let candidate = magnitude.nth_root(q);
        (candidate.pow(q) == magnitude).then_some(candidate)
    };
    let numerator = root(base.numer())?;
    let denominator = root(base.denom())?;
    let numerator = if base.is_negative() {
        -numerator
    } else {
        numerator
    };
    Some(BigRational::new(numerator, denominator))
}

/// `log10(n!)` by Stirling's series; within 1e-9 digits of the truth for n ≥ 1.
fn log10_factorial(n: f64) -> f64 {
    if n < 2.0 {
        return 0.0;
    }
    (n * n.ln() - n + 0.5 * (2.0 * std::f64::consts::PI * n).ln() + 1.0 / (12.0 * n)) / LN_10
}

fn factorial(n: &BigInt, position: usize) -> Result<Value, CalcError> {
    if n.is_negative() {
        return Err(CalcError::eval(
            position,
            format!("factorial is only defined for non-negative integers, got {n}"),
        ));
    }
    let estimated = n
        .to_f64()
        .map_or(f64::INFINITY, |n| log10_factorial(n).floor() + 1.0);
    if estimated > MAX_DIGITS as f64 {
        return Err(too_large(estimated, position));
    }
    let Some(n) = n.to_u64() else {
        return Err(too_large(estimated, position));
    };
    // Multiply small factors together in a u64 first: far fewer big-number multiplications.
    let mut product = BigInt::one();
    let mut chunk: u64 = 1;
    for i in 2..=n {
        match chunk.checked_mul(i) {
            Some(next) => chunk = next,
            None => {
                product *= chunk;
                chunk = i;
            }
        }
    }
    product *= chunk;
    exact(BigRational::from_integer(product), position)
}

fn binomial(n: &BigInt, k: &BigInt, position: usize) -> Result<Value, CalcError> {
    if n.is_negative() {
        return Err(CalcError::eval(
            position,
            format!(
                "binomial(n, k) needs n ≥ 0, got n = {}",
                brief(&Value::Exact(BigRational::from_integer(n.clone())))
            ),
        ));
    }
    if k.is_negative() || k > n {
        return Ok(Value::Exact(BigRational::zero()));
    }
    let complement = n - k;
    let m = if &complement < k {
        complement
    } else {
        k.clone()
    };
    if m.is_zero() {
        return Ok(Value::Exact(BigRational::one()));
    }
    // C(n, m) with m ≤ n/2 is at least 2^m, so a large m is refused before any estimate.
    let rest = n - &m;
    let Some(m) = m.to_u64().filter(|m| *m <= 40_000) else {
        let lower = m.to_f64().map_or(f64::INFINITY, |m| m * LOG10_2);
        return Err(too_large(lower, position));
    };
    // log10 C(n, m) = Σ_{i=1..m} log10((n - m + i) / i).
    let exact_rest = rest.to_f64().filter(|r| *r < 9.0e15);
    let log_rest = log10_abs(&rest);
    let mut estimated = 0.0;
    for i in 1..=m {
        let i = i as f64;
        let top = match exact_rest {
            Some(r) => (r + i).log10(),
            None => log_rest,
        };
        estimated += top - i.log10();
    }
    let estimated = estimated.floor() + 1.0;
    if estimated > MAX_DIGITS as f64 {
        return Err(too_large(estimated, position));
    }
    // After step i, value = C(rest + i, i), an integer, so each division is exact.
    let mut value = BigInt::one();
    // `rest + m` fits in a u64 in most calls: multiply by machine words then.
    match (rest.to_u64(), (&rest + m).to_u64()) {
        (Some(small), Some(_)) => {
            // Steps i..=j batched: value · Π(small + k) / Π k is C(small + j, j), an integer,
            // so dividing by the whole batch of denominators at once is still exact.
            // Batches stay below 2^32: one big-number digit on 32-bit targets like wasm32,
            // where dividing by anything wider takes the slow long-division path.
            let batch = |a: u64, b: u64| a.checked_mul(b).filter(|p| *p <= u64::from(u32::MAX));
            let (mut numerators, mut denominators) = (1u64, 1u64);
            for i in 1..=m {
                match (batch(numerators, small + i), batch(denominators, i)) {
                    (Some(n), Some(d)) => (numerators, denominators) = (n, d),
                    _ => {
                        value = value * numerators / denominators;
                        (numerators, denominators) = (small + i, i);
                    }
                }
            }
            value = value * numerators / denominators;
        }
        _ => {
            for i in 1..=m {
                value *= &rest + i;
                value /= i;
            }
        }
    }
    exact(BigRational::from_integer(value), position)
}

/// Orders two values exactly (floats are converted to the rationals they represent).
fn compare(a: &Value, b: &Value) -> Ordering {
    let exact = |value: &Value| match value {
        Value::Exact(r) => r.clone(),
        // Values are always finite, so the conversion cannot fail.
        Value::Real(x) => BigRational::from_float(*x).unwrap_or_else(BigRational::zero),
    };
    exact(a).cmp(&exact(b))
}

/// Which logarithm.
#[derive(Clone, Copy)]
enum Log {
    Natural,
    Base2,
    Base10,
}

fn logarithm(value: &Value, kind: Log, name: &str, position: usize) -> Result<f64, CalcError> {
    let positive = match value {
        Value::Exact(r) => r.is_positive(),
        Value::Real(x) => *x > 0.0,
    };
    if !positive {
        return Err(CalcError::eval(
            position,
            format!(
                "`{name}` is only defined for positive numbers, got {}",
                brief(value)
            ),
        ));
    }
    let x = match value {
        Value::Real(x) => Some(*x),
        Value::Exact(r) => r.to_f64().filter(|x| x.is_normal()),
    };
    Ok(match (x, value) {
        (Some(x), _) => match kind {
            Log::Natural => x.ln(),
            Log::Base2 => x.log2(),
            Log::Base10 => x.log10(),
        },
        // Beyond f64's range: take the logarithm of numerator and denominator separately.
        (None, Value::Exact(r)) => {
            let log10 = log10_rational(r);
            match kind {
                Log::Natural => log10 * LN_10,
                Log::Base2 => log10 / LOG10_2,
                Log::Base10 => log10,
            }
        }
        (None, Value::Real(x)) => x.ln(),
    })
}

fn call(function: Function, arguments: &[Value], position: usize) -> Result<Value, CalcError> {
    let name = function.name();
    let first = arguments.first().ok_or_else(|| {
        CalcError::eval(position, format!("`{name}` needs at least one argument"))
    })?;
    let float = |value: &Value| to_f64(value, position);
    let domain = |condition: bool, message: &str| {
        if condition {
            Ok(())
        } else {
            Err(CalcError::eval(
                position,
                format!("`{name}` {message}, got {}", brief(first)),
            ))
        }
    };
    match function {
        Function::Abs => match first {
            Value::Exact(r) => Ok(Value::Exact(r.abs())),
            Value::Real(x) => Ok(Value::Real(x.abs())),
        },
        Function::Min | Function::Max => {
            let mut best = first;
            for candidate in &arguments[1..] {
                let order = compare(candidate, best);
                let better = if function == Function::Min {
                    order == Ordering::Less
                } else {
                    order == Ordering::Greater
                };
                if better {
                    best = candidate;
                }
            }
            Ok(best.clone())
        }
        Function::Gcd | Function::Lcm => {
            let mut result = integer_argument(first, name, position)?.abs();
            for argument in &arguments[1..] {
                let n = integer_argument(argument, name, position)?;
                result = if function == Function::Gcd {
                    result.gcd(&n)
                } else {
                    result.lcm(&n)
                };
                exact(BigRational::from_integer(result.clone()), position)?;
            }
            Ok(Value::Exact(BigRational::from_integer(result)))
        }
        Function::Factorial => factorial(&integer_argument(first, name, position)?, position),
        Function::Binomial => {
            let n = integer_argument(first, name, position)?;
            let k = integer_argument(&arguments[1], name, position)?;
            binomial(&n, &k, position)
        }
        Function::Floor | Function::Ceil | Function::Round => {
            let value = match first {
                Value::Exact(r) => match function {
                    Function::Floor => r.floor(),
                    Function::Ceil => r.ceil(),
                    _ => r.round(),
                },
                Value::Real(x) => {
                    let rounded = match function {
                        Function::Floor => x.floor(),
                        Function::Ceil => x.ceil(),
                        _ => x.round(),
                    };
                    BigRational::from_integer(BigInt::from_f64(rounded).unwrap_or_default())
                }
            };
            Ok(Value::Exact(value))
        }
        Function::Sqrt => {
            let x = float(first)?;
            domain(x >= 0.0, "is only defined for non-negative numbers")?;
            real(x.sqrt(), position)
        }
        Function::Exp => real(float(first)?.exp(), position),
        Function::Ln => real(logarithm(first, Log::Natural, name, position)?, position),
        Function::Log2 => real(logarithm(first, Log::Base2, name, position)?, position),
        Function::Log10 => real(logarithm(first, Log::Base10, name, position)?, position),
        Function::Log => match arguments.get(1) {
            None => real(logarithm(first, Log::Natural, name, position)?, position),
            Some(base) => {
                let base_is = |n: u32| *base == Value::Exact(BigRational::from_integer(n.into()));
                let (kind, divisor) = if base_is(10) {
                    (Log::Base10, 1.0)
                } else if base_is(2) {
                    (Log::Base2, 1.0)
                } else {
                    let divisor = logarithm(base, Log::Natural, "log base", position)?;
                    if divisor == 0.0 {
                        return Err(CalcError::eval(position, "`log` base must not be 1"));
                    }
                    (Log::Natural, divisor)
                };
                real(logarithm(first, kind, name, position)? / divisor, position)
            }
        },
        Function::Sin => real(float(first)?.sin(), position),
        Function::Cos => real(float(first)?.cos(), position),
        Function::Tan => real(float(first)?.tan(), position),
        Function::Asin | Function::Acos => {
            let x = float(first)?;
            domain(
                (-1.0..=1.0).contains(&x),
                "is only defined between -1 and 1",
            )?;
            real(
                if function == Function::Asin {
                    x.asin()
                } else {
                    x.acos()
                },
                position,
            )
        }
        Function::Atan => real(float(first)?.atan(), position),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CalcError, evaluate};
    use super::*;

    fn ok(expression: &str) -> String {
        match evaluate(expression) {
            Ok(value) => value.to_string(),
            Err(error) => panic!("`{expression}` failed: {error}"),
        }
    }

    fn failed(expression: &str) -> (usize, String) {
        match evaluate(expression) {
            Err(CalcError::Eval { position, message }) => (position, message),
            other => panic!("`{expression}` should fail to evaluate, got {other:?}"),
        }
    }

    #[test]
    fn exact_arithmetic() {
        assert_eq!(ok("1 + 2 - 3 * 4"), "-9");
        assert_eq!(ok("7 / 2"), "7/2");
        assert_eq!(ok("6 / 4"), "3/2");
        assert_eq!(ok("-6 / 4"), "-3/2");
        assert_eq!(ok("6 / -3"), "-2");
        assert_eq!(ok("1/3 + 2/3"), "1");
        assert_eq!(ok("0.1 * 3"), "3/10");
        assert_eq!(ok("1.5e3 + 0.5"), "3001/2");
        assert_eq!(ok("-(-(3))"), "3");
        assert_eq!(ok("+-+4"), "-4");
        assert_eq!(ok("2 × 3 ÷ 4 − 1"), "1/2");
        assert_eq!(ok("10 - 2 - 3"), "5");
        assert_eq!(ok("2 / 3 / 4"), "1/6");
        assert_eq!(
            ok("123456789012345678901234567890 * 987654321098765432109876543210"),
            "121932631137021795226185032733622923332237463801111263526900"
        );
    }

    #[test]
    fn floor_division_and_modulo_follow_python() {
        assert_eq!(ok("7 // 2"), "3");
        assert_eq!(ok("-7 // 2"), "-4");
        assert_eq!(ok("7 // -2"), "-4");
        assert_eq!(ok("7 % 3"), "1");
        assert_eq!(ok("-7 % 3"), "2");
        assert_eq!(ok("7 % -3"), "-2");
        assert_eq!(ok("-7 % -3"), "-1");
        assert_eq!(ok("7/2 % 1"), "1/2");
        assert_eq!(ok("(7/2) // (1/3)"), "10");
        assert_eq!(ok("-7.5 % 2 * pi / pi"), "0.5");
        assert_eq!(ok("5.5 // (pi / pi)"), "5.0");
        assert_eq!(ok("(-7 * pi / pi) % 3"), "2.0");
        assert_eq!(ok("(7 * pi / pi) % -3"), "-2.0");
    }

    #[test]
    fn division_by_zero_fails_with_position() {
        assert_eq!(failed("1 / 0"), (3, "division by zero".into()));
        assert_eq!(failed("1 // (1 - 1)"), (3, "division by zero".into()));
        assert_eq!(failed("5 % 0"), (3, "modulo by zero".into()));
        assert_eq!(failed("pi / 0"), (4, "division by zero".into()));
        assert_eq!(failed("pi % 0.0"), (4, "modulo by zero".into()));
        assert!(failed("0 ^ -1").1.contains("division by zero"));
        assert!(failed("(0.0 * pi) ^ -1").1.contains("division by zero"));
    }

    #[test]
    fn powers() {
        assert_eq!(ok("2^10"), "1024");
        assert_eq!(ok("2**10"), "1024");
        assert_eq!(ok("2^-2"), "1/4");
        assert_eq!(ok("(2/3)^3"), "8/27");
        assert_eq!(ok("(-2/3)^-3"), "-27/8");
        assert_eq!(ok("-2^2"), "-4");
        assert_eq!(ok("(-2)^2"), "4");
        assert_eq!(ok("2^3^2"), "512");
        assert_eq!(ok("0^0"), "1");
        assert_eq!(ok("0^5"), "0");
        assert_eq!(ok("1^(10^100)"), "1");
        assert_eq!(ok("(-1)^(10^100 + 1)"), "-1");
        assert_eq!(ok("4^(1/2)"), "2");
        assert_eq!(ok("8^(2/3)"), "4");
        assert_eq!(ok("(-8)^(1/3)"), "-2");
        assert_eq!(ok("(-8)^(2/3)"), "4");
        assert_eq!(ok("(4/9)^(-1/2)"), "3/2");
        assert_eq!(ok("0^(1/2)"), "0");
        assert_eq!(ok("2^0.5"), "1.4142135623730951");
        assert_eq!(ok("(-2)^(1/3)"), "-1.2599210498948732");
        assert_eq!(ok("2^(1/3)"), "1.2599210498948732");
        // Beyond f64's range the power goes through logarithms: close, not exact.
        let cube_root = ok("(10^400)^(1/3) / 10^133")
            .parse::<f64>()
            .expect("a float");
        assert!(
            (cube_root / 10f64.powf(1.0 / 3.0) - 1.0).abs() < 1e-12,
            "{cube_root}"
        );
        assert_eq!(ok("e^0"), "1.0");
        assert_eq!(ok("2^pi"), "8.824977827076287");
        assert!(failed("(-8)^(1/2)").1.contains("not a real number"));
        assert!(failed("(-pi)^0.5").1.contains("not a real number"));
    }

    #[test]
    fn huge_powers_are_refused_before_computing() {
        assert_eq!(ok("2^33000").len(), 9934);
        let (position, message) = failed("1 + 2^34000");
        assert_eq!(position, 6);
        assert_eq!(
            message,
            "the result would have about 10236 digits, more than the limit of 10000"
        );
        assert!(failed("10^10000").1.contains("about 10001 digits"));
        assert!(failed("(1/2)^40000").1.contains("digits"));
        assert!(failed("2^(10^12)").1.contains("about 301029995664 digits"));
        assert!(failed("2^(10^30)").1.contains("astronomically many"));
        assert!(failed("2^2^2^2^2").1.contains("about 19729 digits"));
        assert!(failed("2^2^2^2^2^2").1.contains("about 19729 digits"));
        assert!(failed("3^(10^400)").1.contains("astronomically many"));
        assert!(failed("(10^5000)^2").1.contains("digits"));
        assert!(failed("10^9999 * 10^9999").1.contains("digits"));
        assert!(failed("1 / 10^9999 / 10").1.contains("digits"));
        assert_eq!(ok("(10^600)^(3/2)"), ok("10^900"));
    }

    #[test]
    fn factorials() {
        assert_eq!(ok("0!"), "1");
        assert_eq!(ok("1!"), "1");
        assert_eq!(ok("5!"), "120");
        assert_eq!(ok("factorial(20)"), "2432902008176640000");
        assert_eq!(ok("(3!)!"), "720");
        assert_eq!(ok("-3!"), "-6");
        assert_eq!(ok("2^3!"), "64");
        assert_eq!(ok("factorial(25) / factorial(23)"), "600");
        assert_eq!(ok("3000!").len(), 9131);
        let (position, message) = failed("4000!");
        assert_eq!(position, 5);
        assert!(message.contains("about 12674 digits"), "{message}");
        assert!(failed("factorial(10^20)").1.contains("astronomically"));
        assert!(failed("factorial(10^400)").1.contains("astronomically"));
        assert!(failed("(-1)!").1.contains("non-negative"));
        assert!(failed("(1/2)!").1.contains("needs integers"));
        assert!(failed("factorial(sqrt(4))").1.contains("floating-point"));
    }

    #[test]
    fn binomials() {
        assert_eq!(ok("binomial(5, 2)"), "10");
        assert_eq!(ok("binomial(5, 0)"), "1");
        assert_eq!(ok("binomial(5, 5)"), "1");
        assert_eq!(ok("binomial(5, 6)"), "0");
        assert_eq!(ok("binomial(5, -1)"), "0");
        assert_eq!(ok("binomial(0, 0)"), "1");
        assert_eq!(ok("binomial(52, 5)"), "2598960");
        assert_eq!(ok("binomial(100, 50)"), "100891344545564193334812497256");
        assert_eq!(
            ok("binomial(10^30, 2)"),
            "499999999999999999999999999999500000000000000000000000000000"
        );
        assert_eq!(ok("binomial(10^30, 10^30 - 1)"), ok("10^30"));
        assert_eq!(ok("binomial(30000, 10000)").len(), 8291);
        let (position, message) = failed("binomial(40000, 20000)");
        assert_eq!(position, 1);
        assert!(message.contains("about 12039 digits"), "{message}");
        assert!(failed("binomial(10^50, 10^49)").1.contains("digits"));
        assert!(failed("binomial(10^9000, 2)").1.contains("digits"));
        assert!(failed("binomial(-5, 2)").1.contains("n ≥ 0"));
        assert!(failed("binomial(5, 1/2)").1.contains("needs integers"));
    }

    #[test]
    fn binomials_agree_with_factorials() {
        for n in [0, 1, 2, 7, 30, 61, 200] {
            for k in 0..=n {
                let via_factorials = ok(&format!("{n}! / ({k}! * ({n} - {k})!)"));
                assert_eq!(
                    ok(&format!("binomial({n}, {k})")),
                    via_factorials,
                    "C({n}, {k})"
                );
            }
        }
    }

    #[test]
    fn integer_functions() {
        assert_eq!(ok("gcd(12, 18)"), "6");
        assert_eq!(ok("gcd(-12, 18, 8)"), "2");
        assert_eq!(ok("gcd(0, 0)"), "0");
        assert_eq!(ok("gcd(7)"), "7");
        assert_eq!(ok("lcm(4, 6)"), "12");
        assert_eq!(ok("lcm(4, -6, 10)"), "60");
        assert_eq!(ok("lcm(4, 0)"), "0");
        assert_eq!(ok("gcd(2^100, 6^50)"), ok("2^50"));
        assert!(
            failed("gcd(1.5, 3)")
                .1
                .contains("`gcd` needs integers, got 3/2")
        );
        assert!(failed("lcm(2, pi)").1.contains("floating-point"));
    }

    #[test]
    fn exact_helpers_keep_exactness() {
        assert_eq!(ok("abs(-7/2)"), "7/2");
        assert_eq!(ok("abs(-pi) - pi"), "0.0");
        assert_eq!(ok("min(3, 1/2, 2)"), "1/2");
        assert_eq!(ok("max(3, 1/2, 2)"), "3");
        assert_eq!(ok("max(3, pi)"), "3.141592653589793");
        assert_eq!(ok("min(3, pi)"), "3");
        assert_eq!(ok("max(10^400, pi)"), ok("10^400"));
        assert_eq!(ok("max(2, 2.0 * pi / pi)"), "2");
        assert_eq!(ok("floor(7/2)"), "3");
        assert_eq!(ok("floor(-7/2)"), "-4");
        assert_eq!(ok("ceil(7/2)"), "4");
        assert_eq!(ok("round(5/2)"), "3");
        assert_eq!(ok("round(-5/2)"), "-3");
        assert_eq!(ok("round(7/3)"), "2");
        assert_eq!(ok("floor(sqrt(17))"), "4");
        assert_eq!(ok("ceil(log2(1000))"), "10");
        assert_eq!(ok("round(1e20 * pi)"), "314159265358979334144");
        assert_eq!(ok("factorial(round(sqrt(16)))"), "24");
    }

    #[test]
    fn real_functions() {
        assert_eq!(ok("sqrt(2)"), "1.4142135623730951");
        assert_eq!(ok("sqrt(16)"), "4.0");
        assert_eq!(ok("sqrt(0)"), "0.0");
        assert_eq!(ok("exp(1)"), "2.718281828459045");
        assert_eq!(ok("ln(e)"), "1.0");
        assert_eq!(ok("log(e)"), "1.0");
        assert_eq!(ok("log(1000, 10)"), "3.0");
        assert_eq!(ok("log(8, 2)"), "3.0");
        assert_eq!(ok("log(81, 3)"), "4.0");
        assert_eq!(ok("log2(1024)"), "10.0");
        assert_eq!(ok("log10(10^500)"), "500.0");
        assert_eq!(ok("log10(10^-500)"), "-500.0");
        let ln = ok("ln(10^500)").parse::<f64>().expect("a float");
        assert!((ln - 1151.2925464970228).abs() < 1e-10, "{ln}");
        assert_eq!(ok("sin(0)"), "0.0");
        assert_eq!(ok("cos(pi)"), "-1.0");
        assert_eq!(ok("tan(pi / 4)"), "0.9999999999999999");
        assert_eq!(ok("sin(pi/6)"), "0.49999999999999994");
        assert_eq!(ok("asin(1) * 2"), "3.141592653589793");
        assert_eq!(ok("acos(-1)"), "3.141592653589793");
        assert_eq!(ok("atan(1) * 4"), "3.141592653589793");
        assert_eq!(ok("PI"), "3.141592653589793");
        assert_eq!(ok("1 + pi - pi"), "1.0");
        assert_eq!(ok("1e-7 * (pi / pi)"), "1e-7");
        assert_eq!(ok("1e17 * (pi / pi)"), "1e17");
        assert_eq!(ok("-0.0 * pi"), "0.0");
    }

    #[test]
    fn real_domain_errors() {
        let (position, message) = failed("2 + sqrt(-1)");
        assert_eq!(position, 5);
        assert_eq!(
            message,
            "`sqrt` is only defined for non-negative numbers, got -1"
        );
        assert!(failed("log(0)").1.contains("positive numbers, got 0"));
        assert!(failed("ln(-pi)").1.contains("positive"));
        assert!(failed("log(5, 1)").1.contains("must not be 1"));
        assert!(failed("log(5, -2)").1.contains("log base"));
        assert!(failed("asin(2)").1.contains("between -1 and 1"));
        assert!(
            failed("exp(1000)")
                .1
                .contains("too large for floating point")
        );
        assert!(
            failed("10^400 * pi")
                .1
                .contains("a 401-digit integer is too large")
        );
        assert!(failed("sqrt(10^400)").1.contains("too large"));
        assert!(failed("pi ^ 1000").1.contains("too large"));
    }

    #[test]
    fn display() {
        let third = BigRational::new(1.into(), 3.into());
        assert_eq!(Value::Exact(third).to_string(), "1/3");
        assert_eq!(Value::Real(0.1 + 0.2).to_string(), "0.30000000000000004");
        assert_eq!(Value::Real(-0.0).to_string(), "0.0");
        assert_eq!(Value::Real(1e300).to_string(), "1e300");
        assert_eq!(Value::Real(123.0).to_string(), "123.0");
        assert_eq!(
            brief(&Value::Exact(BigRational::from_integer(
                BigInt::from(10).pow(50)
            ))),
            "a 51-digit integer"
        );
    }

    #[test]
    fn digit_estimates() {
        for k in [1u32, 5, 17, 300, 301, 302, 1000, 5000] {
            let n = BigInt::from(10).pow(k);
            assert_eq!(decimal_digits(&n), u64::from(k) + 1, "10^{k}");
            assert_eq!(decimal_digits(&(n - 1)), u64::from(k), "10^{k} - 1");
        }
        assert_eq!(decimal_digits(&BigInt::zero()), 1);
        assert_eq!(decimal_digits(&BigInt::from(-99)), 2);
        for n in [1u64, 2, 5, 10, 100, 1000, 3000] {
            let mut product = BigInt::one();
            for i in 2..=n {
                product *= i;
            }
            let digits = product.to_string().len() as f64;
            assert_eq!(log10_factorial(n as f64).floor() + 1.0, digits, "{n}!");
        }
    }
}
