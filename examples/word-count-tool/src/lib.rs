//! # `word-count`: a complete sod tool in 30 lines
//!
//! Counts the words, lines and characters of a text and, on request, lists its most frequent
//! words. It shows everything a tool written with [`sod_tool_sdk`] needs:
//!
//! 1. an arguments struct deriving `serde::Deserialize` and `schemars::JsonSchema`; its doc
//!    comments become the JSON Schema the model reads, and malformed arguments are answered with
//!    `invalid-arguments` before [`Tool::call`] runs;
//! 2. a type implementing [`Tool`]: name, version, description and the call itself;
//! 3. `sod_tool_sdk::export_tool!(…)`, with the crate built as a `cdylib`.
//!
//! Build the component (the host loads it from `target/tools/word-count.wasm` once `xtask`
//! has copied it there):
//!
//! ```text
//! cargo build --target wasm32-wasip2 --profile guest -p word-count-tool
//! # → target/wasm32-wasip2/guest/word_count_tool.wasm
//! ```
//!
//! A call with `{"text": "the cat and the hat", "top": 2}` answers
//!
//! ```text
//! words: 5
//! lines: 1
//! characters: 19
//! the: 2
//! and: 1
//! ```
//!
//! Words are runs of letters, digits and apostrophes (`don't` is one word), compared
//! case-insensitively; ties in the ranking are broken alphabetically, so the output is
//! deterministic.

use sod_tool_sdk::{Tool, ToolError};

/// Arguments of `word-count`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The text to analyse.
    pub text: String,
    /// How many of the most frequent words to list (default none).
    pub top: Option<usize>,
}

/// The `word-count` tool.
pub struct WordCount;

impl Tool for WordCount {
    type Args = Args;
    const NAME: &'static str = "word-count";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Counts words, lines and characters; lists the top words.";

    fn call(Args { text, top }: Args) -> Result<String, ToolError> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for word in text.split(|c: char| !c.is_alphanumeric() && c != '\'') {
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
        counts.remove("");
        // A stable sort keeps the map's alphabetical order among equal counts.
        let mut ranked: Vec<_> = counts.iter().collect();
        ranked.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        let words: usize = counts.values().sum();
        let (lines, chars) = (text.lines().count(), text.chars().count());
        let top_words = ranked.into_iter().take(top.unwrap_or(0));
        let top: String = top_words.map(|(w, n)| format!("\n{w}: {n}")).collect();
        let header = format!("words: {words}\nlines: {lines}\ncharacters: {chars}");
        Ok(header + &top)
    }
}

sod_tool_sdk::export_tool!(WordCount);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ranks() {
        let out = sod_tool_sdk::invoke::<WordCount>(r#"{"text": "the cat and the hat", "top": 2}"#);
        assert_eq!(
            out.unwrap(),
            "words: 5\nlines: 1\ncharacters: 19\nthe: 2\nand: 1"
        );
        let out = sod_tool_sdk::invoke::<WordCount>(r#"{"text": "Don't, don't!\n\n-- bye"}"#);
        assert_eq!(out.unwrap(), "words: 3\nlines: 3\ncharacters: 21");
    }

    #[test]
    fn rejects_bad_arguments() {
        let invalid = |json| {
            matches!(
                sod_tool_sdk::invoke::<WordCount>(json),
                Err(ToolError::InvalidArguments(_))
            )
        };
        assert!(invalid(r#"{"text": "a", "top": -1}"#));
        assert!(invalid(r#"{"text": 3}"#));
        assert!(invalid(r#"{"txt": "a"}"#));
        let out = sod_tool_sdk::invoke::<WordCount>(r#"{"text": "b a B ...", "top": 99}"#);
        assert_eq!(
            out.unwrap(),
            "words: 3\nlines: 1\ncharacters: 9\nb: 2\na: 1"
        );
    }
}
