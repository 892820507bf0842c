//! Write sod tools in Rust and build them as WebAssembly components.
//!
//! A sod tool is a WebAssembly component implementing the `sod:tool` contract in
//! `sdk/wit/tool.wit`: it describes itself (name, version, description and a JSON Schema of its
//! arguments, enough for an OpenAI-style function definition) and answers calls whose arguments
//! are a JSON object. The host runs it under WASI preview 2, deterministically and with fuel,
//! memory and output limits.
//!
//! With this crate a tool is a plain Rust type implementing [`Tool`]:
//!
//! * the arguments are a typed struct deriving [`serde::Deserialize`] and
//!   [`schemars::JsonSchema`]; the JSON Schema the model sees is generated from it
//!   ([`parameters_schema`]), doc comments on fields become property descriptions;
//! * malformed arguments never reach your code: they become
//!   [`ToolError::InvalidArguments`] with a message naming the field and the expected type
//!   ([`parse_arguments`]);
//! * [`export_tool!`] wires the type to the component's exports.
//!
//! # Example
//!
//! `Cargo.toml` of the tool:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! sod-tool-sdk = { path = "../../sdk/tool" }
//! serde = { version = "1", features = ["derive"] }
//! schemars = "1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use sod_tool_sdk::{Tool, ToolError};
//!
//! /// Arguments of `repeat`.
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Args {
//!     /// The text to repeat.
//!     text: String,
//!     /// How many times to repeat it (at most 100).
//!     times: u32,
//! }
//!
//! struct Repeat;
//!
//! impl Tool for Repeat {
//!     type Args = Args;
//!     const NAME: &'static str = "repeat";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const DESCRIPTION: &'static str = "Repeats a text a given number of times.";
//!
//!     fn call(args: Args) -> Result<String, ToolError> {
//!         if args.times > 100 {
//!             return Err(ToolError::invalid_arguments("`times` must be at most 100"));
//!         }
//!         Ok(args.text.repeat(args.times as usize))
//!     }
//! }
//!
//! sod_tool_sdk::export_tool!(Repeat);
//!
//! // The same code path the component runs, testable natively:
//! assert_eq!(sod_tool_sdk::invoke::<Repeat>(r#"{"text": "ab", "times": 3}"#).unwrap(), "ababab");
//! let err = sod_tool_sdk::invoke::<Repeat>(r#"{"text": "ab", "times": "3"}"#).unwrap_err();
//! assert!(err.to_string().contains("times"));
//! let descriptor = sod_tool_sdk::describe::<Repeat>();
//! assert_eq!(descriptor.name, "repeat");
//! assert!(descriptor.parameters.contains(r#""required":["text","times"]"#));
//! ```
//!
//! Build it with
//! `cargo build --target wasm32-wasip2 --profile guest -p <crate>`; the target's linker
//! (`wasm-component-ld`) turns the cdylib into a component at
//! `target/wasm32-wasip2/guest/<crate_name>.wasm`.
//!
//! # Composing tools
//!
//! A tool may call other tools through the host with [`sandbox::call_tool`]. Only tools that
//! call it import the `sod:tool/sandbox` interface (unused imports are dropped when the
//! component is linked), so simple tools need no capability beyond WASI.
//!
//! # Native builds
//!
//! The crate also compiles for the host target, so `cargo test`, `cargo doc` and clippy work on
//! tool crates. Natively [`describe`] and [`invoke`] behave exactly as in the component;
//! only [`sandbox::call_tool`] needs the sod host and panics elsewhere.

#![warn(missing_docs)]

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

pub use schemars;
pub use serde;
pub use serde_json;

/// Bindings generated once from `sdk/wit` for the `composite-tool` world.
///
/// Tools do not use this module directly: [`export_tool!`] and [`sandbox`] wrap it.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "composite-tool",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__sod_tool_export_bindings",
        default_bindings_module: "sod_tool_sdk::bindings",
        additional_derives: [PartialEq, Eq],
        additional_member_attributes: {
            "sod:tool/sandbox@0.1.0/outcome-kind.ok": [#[doc = "The tool returned its output."]],
            "sod:tool/sandbox@0.1.0/outcome-kind.tool-error": [#[doc = "The tool returned a `tool-error`; `output` holds its message."]],
            "sod:tool/sandbox@0.1.0/outcome-kind.time-limit": [#[doc = "The call ran out of fuel or time."]],
            "sod:tool/sandbox@0.1.0/outcome-kind.memory-limit": [#[doc = "The call exceeded its memory limit."]],
            "sod:tool/sandbox@0.1.0/outcome-kind.output-truncated": [#[doc = "The output exceeded its limit; `output` holds the kept prefix."]],
            "sod:tool/sandbox@0.1.0/outcome-kind.crashed": [#[doc = "The tool trapped (panic, unreachable, stack overflow)."]],
            "sod:tool/sandbox@0.1.0/outcome-kind.infra-fault": [#[doc = "The host failed to run the tool (for example an unknown tool name)."]],
        },
    });
}

/// What a tool says about itself; produced by [`describe`].
pub use bindings::sod::tool::types::Descriptor;

/// A tool: typed arguments, a self-description and one call.
///
/// Implement it on a unit struct and export the struct with [`export_tool!`]. See the
/// [crate documentation](crate) for a complete example.
pub trait Tool {
    /// The arguments object. Derive [`serde::Deserialize`] and [`schemars::JsonSchema`] on a
    /// struct; the generated JSON Schema is what the model sees, so document every field.
    /// `#[serde(deny_unknown_fields)]` is recommended: a misspelled field then gets a clear
    /// error instead of being ignored.
    type Args: DeserializeOwned + schemars::JsonSchema;

    /// Name the model uses to call the tool, e.g. `calculator`.
    const NAME: &'static str;
    /// Version of the tool, semver; usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One paragraph a model reads to decide when and how to call the tool.
    const DESCRIPTION: &'static str;

    /// Handles one call with already validated arguments and returns the text the model reads.
    fn call(args: Self::Args) -> Result<String, ToolError>;
}

/// Why a call produced no output; becomes the contract's `tool-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The arguments were malformed or out of range: the caller's fault.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The arguments were well-formed but the tool could not complete the request
    /// (for example a division by zero).
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    /// A [`ToolError::InvalidArguments`] with `message`.
    pub fn invalid_arguments(message: impl fmt::Display) -> Self {
        Self::InvalidArguments(message.to_string())
    }

    /// A [`ToolError::Failed`] with `message`.
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }
}

impl From<ToolError> for bindings::sod::tool::types::ToolError {
    fn from(error: ToolError) -> Self {
        match error {
            ToolError::InvalidArguments(message) => Self::InvalidArguments(message),
            ToolError::Failed(message) => Self::Failed(message),
        }
    }
}

/// Arguments of a tool that takes none: accepts `{}` (or an empty argument string) only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArguments {}

/// The JSON Schema of an arguments type, compact and ready for an OpenAI-style function
/// definition: `{"type":"object","properties":{…},"required":[…]}` with field doc comments as
/// descriptions, nested types inlined, and no `$schema`, or top-level `title` or `description`
/// (the tool's description is [`Tool::DESCRIPTION`]).
pub fn parameters_schema<A: schemars::JsonSchema>() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.meta_schema = None;
            settings.inline_subschemas = true;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<A>();
    if let Some(object) = schema.as_object_mut() {
        // The descriptor already carries the tool's description; the struct's own doc comment
        // and name would only cost prompt tokens.
        object.remove("title");
        object.remove("description");
        object.remove("$schema");
    }
    serde_json::Value::from(schema).to_string()
}

/// Parses a call's JSON `arguments` into `A`.
///
/// An empty or all-whitespace string counts as `{}`. Errors are
/// [`ToolError::InvalidArguments`] whose message says what was wrong and where: invalid JSON
/// (with line and column), a missing or unknown field, or a field of the wrong type, e.g.
/// ``argument `times`: invalid type: string "3", expected u32 at line 1 column 26``.
pub fn parse_arguments<A: DeserializeOwned>(arguments: &str) -> Result<A, ToolError> {
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| ToolError::InvalidArguments(describe_parse_error(&error)))?;
    deserializer.end().map_err(|error| {
        ToolError::invalid_arguments(format_args!(
            "arguments are not valid JSON: {error} (trailing characters after the object)"
        ))
    })?;
    Ok(parsed)
}

fn describe_parse_error(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = error.inner();
    match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("arguments are not valid JSON: {inner}")
        }
        serde_json::error::Category::Data | serde_json::error::Category::Io => {
            let path = error.path().to_string();
            if path != "." {
                format!("argument `{path}`: {inner}")
            } else if inner.to_string().starts_with("invalid type") {
                format!("expected a JSON object of named arguments: {inner}")
            } else {
                inner.to_string()
            }
        }
    }
}

/// The descriptor the component returns from `describe`.
pub fn describe<T: Tool>() -> Descriptor {
    Descriptor {
        name: T::NAME.to_owned(),
        version: T::VERSION.to_owned(),
        description: T::DESCRIPTION.to_owned(),
        parameters: parameters_schema::<T::Args>(),
    }
}

/// Runs one call the way the component does: parses `arguments` (see [`parse_arguments`]) and
/// hands them to [`Tool::call`]. Use it to test tools natively.
pub fn invoke<T: Tool>(arguments: &str) -> Result<String, ToolError> {
    T::call(parse_arguments::<T::Args>(arguments)?)
}

/// Exports a [`Tool`] as the component's `describe` and `call` functions.
///
/// Use it once per tool crate, at module level, with the crate built as a `cdylib`:
///
/// ```ignore
/// sod_tool_sdk::export_tool!(MyTool);
/// ```
#[macro_export]
macro_rules! export_tool {
    ($tool:ty) => {
        const _: () = {
            type __SodToolExport = $crate::__private::Exported<$tool>;
            $crate::bindings::__sod_tool_export_bindings!(
                __SodToolExport with_types_in $crate::bindings
            );
        };
    };
}

/// Implementation details of [`export_tool!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Adapts a [`Tool`] to the generated `Guest` trait.
    pub struct Exported<T>(PhantomData<T>);

    impl<T: Tool> bindings::Guest for Exported<T> {
        fn describe() -> Descriptor {
            describe::<T>()
        }

        fn call(arguments: String) -> Result<String, bindings::sod::tool::types::ToolError> {
            invoke::<T>(&arguments).map_err(Into::into)
        }
    }
}

/// Calling other tools through the host (the `sod:tool/sandbox` import).
///
/// ```ignore
/// use sod_tool_sdk::sandbox::{self, Limits, OutcomeKind};
///
/// let outcome = sandbox::call_tool(
///     "calculator",
///     r#"{"expression": "2^64"}"#,
///     Limits { fuel: Some(50_000_000), ..Limits::INHERIT },
/// );
/// if outcome.kind == OutcomeKind::Ok {
///     // use outcome.output
/// }
/// ```
pub mod sandbox {
    pub use crate::bindings::sod::tool::sandbox::{Limits, Outcome, OutcomeKind};

    impl Limits {
        /// Every limit inherited from the caller.
        pub const INHERIT: Limits = Limits {
            fuel: None,
            memory_bytes: None,
            output_bytes: None,
        };
    }

    impl Default for Limits {
        fn default() -> Self {
            Self::INHERIT
        }
    }

    impl Outcome {
        /// The output when the child succeeded (`ok` or `output-truncated`, whose output is the
        /// kept prefix), otherwise `Err(self)`.
        pub fn into_output(self) -> Result<String, Outcome> {
            match self.kind {
                OutcomeKind::Ok | OutcomeKind::OutputTruncated => Ok(self.output),
                _ => Err(self),
            }
        }
    }

    /// Runs tool `name` with JSON `arguments` in a fresh instance under `limits` and waits for
    /// it to finish.
    ///
    /// Fields of `limits` left `None` inherit the caller's limits. Whatever `limits.fuel` says,
    /// the host clamps the child's fuel to the caller's remaining fuel, and the fuel the child
    /// used ([`Outcome::fuel_used`]) is charged to the caller: composing tools never escapes
    /// the caller's budget. The child's failures (tool errors, limits, traps) are reported in
    /// the [`Outcome`], never as a trap in the caller.
    ///
    /// Only works inside the sod host: natively (outside a component) it panics.
    pub fn call_tool(name: &str, arguments: &str, limits: Limits) -> Outcome {
        crate::bindings::sod::tool::sandbox::call_tool(name, arguments, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nested value.
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Point {
        /// Horizontal position.
        x: i32,
        /// Vertical position.
        y: i32,
    }

    /// Arguments of the test tool.
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Args {
        /// A word.
        word: String,
        /// Optional count.
        #[serde(default)]
        count: Option<u8>,
        /// Where.
        at: Option<Point>,
    }

    struct Echo;

    impl Tool for Echo {
        type Args = Args;
        const NAME: &'static str = "echo";
        const VERSION: &'static str = "1.2.3";
        const DESCRIPTION: &'static str = "Echoes a word.";

        fn call(args: Args) -> Result<String, ToolError> {
            if args.word.is_empty() {
                return Err(ToolError::failed("nothing to echo"));
            }
            let count = args.count.unwrap_or(1);
            let mut out = args.word.repeat(usize::from(count));
            if let Some(point) = args.at {
                out.push_str(&format!("@{},{}", point.x, point.y));
            }
            Ok(out)
        }
    }

    fn invalid(result: Result<String, ToolError>) -> String {
        match result {
            Err(ToolError::InvalidArguments(message)) => message,
            other => panic!("expected invalid-arguments, got {other:?}"),
        }
    }

    #[test]
    fn schema_is_compact_object() {
        let schema: serde_json::Value =
            serde_json::from_str(&parameters_schema::<Args>()).expect("schema is JSON");
        assert_eq!(schema["type"], "object");
        assert!(schema.get("$schema").is_none());
        assert!(schema.get("title").is_none());
        assert!(schema.get("description").is_none());
        assert!(
            schema.get("$defs").is_none(),
            "subschemas are inlined: {schema}"
        );
        assert_eq!(schema["required"], serde_json::json!(["word"]));
        assert_eq!(schema["properties"]["word"]["type"], "string");
        assert_eq!(schema["properties"]["word"]["description"], "A word.");
        assert_eq!(
            schema["properties"]["at"]["properties"]["x"]["type"],
            "integer"
        );
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn no_arguments_schema_and_parsing() {
        let schema: serde_json::Value =
            serde_json::from_str(&parameters_schema::<NoArguments>()).expect("schema is JSON");
        assert_eq!(schema["type"], "object");
        assert_eq!(parse_arguments::<NoArguments>(""), Ok(NoArguments {}));
        assert_eq!(parse_arguments::<NoArguments>(" {} "), Ok(NoArguments {}));
        assert!(parse_arguments::<NoArguments>(r#"{"a":1}"#).is_err());
    }

    #[test]
    fn descriptor_carries_constants() {
        let descriptor = describe::<Echo>();
        assert_eq!(descriptor.name, "echo");
        assert_eq!(descriptor.version, "1.2.3");
        assert_eq!(descriptor.description, "Echoes a word.");
        assert_eq!(descriptor.parameters, parameters_schema::<Args>());
    }

    #[test]
    fn valid_call() {
        assert_eq!(
            invoke::<Echo>(r#"{"word":"ab","count":2}"#).unwrap(),
            "abab"
        );
        assert_eq!(
            invoke::<Echo>(r#"{"word":"a","at":{"x":1,"y":-2}}"#).unwrap(),
            "a@1,-2"
        );
    }

    #[test]
    fn tool_failure_passes_through() {
        assert_eq!(
            invoke::<Echo>(r#"{"word":""}"#),
            Err(ToolError::Failed("nothing to echo".into()))
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let message = invalid(invoke::<Echo>(r#"{"word":"a","count":"2"}"#));
        assert!(
            message.starts_with("argument `count`: invalid type: string"),
            "{message}"
        );
        let message = invalid(invoke::<Echo>(r#"{"word":"a","at":{"x":1,"y":"no"}}"#));
        assert!(message.starts_with("argument `at.y`"), "{message}");
        let message = invalid(invoke::<Echo>(r#"{"word":"a","count":300}"#));
        assert!(
            message.contains("count") && message.contains("u8"),
            "{message}"
        );
    }

    #[test]
    fn missing_and_unknown_fields() {
        let message = invalid(invoke::<Echo>(r#"{"count":1}"#));
        assert!(message.contains("missing field `word`"), "{message}");
        let message = invalid(invoke::<Echo>(r#"{"word":"a","wrod":1}"#));
        assert!(message.contains("unknown field `wrod`"), "{message}");
        let message = invalid(invoke::<Echo>(""));
        assert!(message.starts_with("missing field `word`"), "{message}");
    }

    #[test]
    fn malformed_json() {
        let message = invalid(invoke::<Echo>(r#"{"word":"a""#));
        assert!(
            message.starts_with("arguments are not valid JSON"),
            "{message}"
        );
        let message = invalid(invoke::<Echo>(r#"{"word":"a"} x"#));
        assert!(
            message.starts_with("arguments are not valid JSON"),
            "{message}"
        );
        let message = invalid(invoke::<Echo>(r#""just a string""#));
        assert!(message.starts_with("expected a JSON object"), "{message}");
    }

    #[test]
    fn errors_convert_to_contract_type() {
        use bindings::sod::tool::types::ToolError as Wit;
        assert_eq!(
            Wit::from(ToolError::invalid_arguments("x")),
            Wit::InvalidArguments("x".into())
        );
        assert_eq!(Wit::from(ToolError::failed("y")), Wit::Failed("y".into()));
        assert_eq!(
            ToolError::invalid_arguments("x").to_string(),
            "invalid arguments: x"
        );
        assert_eq!(ToolError::failed("y").to_string(), "y");
    }

    #[test]
    fn limits_and_outcomes() {
        use sandbox::{Limits, Outcome, OutcomeKind};
        assert_eq!(Limits::default(), Limits::INHERIT);
        let ok = Outcome {
            kind: OutcomeKind::Ok,
            output: "4".into(),
            fuel_used: 10,
        };
        assert_eq!(ok.into_output(), Ok("4".into()));
        let crashed = Outcome {
            kind: OutcomeKind::Crashed,
            output: "trap".into(),
            fuel_used: 10,
        };
        assert_eq!(crashed.clone().into_output(), Err(crashed));
    }
}
