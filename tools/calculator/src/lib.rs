//! `calculator`: a sod tool that evaluates arithmetic expressions exactly.
//!
//! Arguments: `{"expression": "..."}`. Integers and fractions are exact big rationals
//! (results print as `p` or a reduced `p/q`); real functions and constants switch to `f64`.
//! Malformed expressions are `invalid-arguments` with the position of the error; division by
//! zero, domain errors and results over 10 000 digits are `failed`. The language is documented
//! in [`calc`].

pub mod calc;

use sod_tool_sdk::{Tool, ToolError};

/// Arguments of the calculator.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The expression, e.g. `2^100 / 3 + binomial(10, 4)` or `sqrt(2) * pi`.
    pub expression: String,
}

/// The calculator tool.
pub struct Calculator;

impl Tool for Calculator {
    type Args = Args;
    const NAME: &'static str = "calculator";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Evaluates an arithmetic expression. Integers and \
        fractions are exact, up to 10000 digits (decimals like 0.1 are exact fractions); exact \
        results are an integer or a reduced fraction p/q. Operators: + - * / (exact division), \
        // (floor division), % (modulo), ^ or ** (power), n! (factorial), parentheses. Exact \
        functions: abs, min, max, gcd, lcm, factorial, binomial(n, k), floor, ceil, round. \
        Real functions sqrt, exp, ln, log(x) or log(x, base), log2, log10, sin, cos, tan, asin, \
        acos, atan (radians) and the constants pi and e give a floating-point result.";

    fn call(args: Args) -> Result<String, ToolError> {
        match calc::evaluate(&args.expression) {
            Ok(value) => Ok(value.to_string()),
            Err(error @ calc::CalcError::Syntax { .. }) => Err(ToolError::invalid_arguments(error)),
            Err(error @ calc::CalcError::Eval { .. }) => Err(ToolError::failed(error)),
        }
    }
}

sod_tool_sdk::export_tool!(Calculator);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself() {
        let descriptor = sod_tool_sdk::describe::<Calculator>();
        assert_eq!(descriptor.name, "calculator");
        assert_eq!(descriptor.version, env!("CARGO_PKG_VERSION"));
        let schema: serde_json::Value =
            serde_json::from_str(&descriptor.parameters).expect("schema is JSON");
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], serde_json::json!(["expression"]));
        assert_eq!(schema["properties"]["expression"]["type"], "string");
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn calls_map_errors_to_contract_kinds() {
        let call = sod_tool_sdk::invoke::<Calculator>;
        assert_eq!(
            call(r#"{"expression": "2^64 / 6"}"#),
            Ok("9223372036854775808/3".into())
        );
        assert_eq!(
            call(r#"{"expression": "1 / 0"}"#),
            Err(ToolError::Failed("division by zero (at position 3)".into()))
        );
        assert_eq!(
            call(r#"{"expression": "1 +* 2"}"#),
            Err(ToolError::InvalidArguments(
                "expected a number, name or `(` but found `*` (at position 4)".into()
            ))
        );
        assert!(
            matches!(call(r#"{"expression": 5}"#), Err(ToolError::InvalidArguments(m)) if m.contains("expression"))
        );
        assert!(
            matches!(call(r#"{"expr": "5"}"#), Err(ToolError::InvalidArguments(m)) if m.contains("unknown field"))
        );
    }
}
