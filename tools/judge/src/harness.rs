//! The protocol between the judge and the Python harness it runs in the python tool.
//!
//! For every test the judge builds one program: the harness (`harness.py`) followed by a call
//! `_sod_judge(tag, mode, solution, tests, stdin)`, the texts base64-encoded so that nothing in
//! them can change how the python tool reads the program (it runs the first ```` ```python ````
//! fence it finds, for example). It runs as the `code` argument of a fresh python tool instance.
//!
//! The harness writes one line to the tool's output: the call's tag, then a JSON [`Record`].
//! The tag is `sod-judge:` and 32 hex digits of a SHA-256 of the test's inputs, so it is
//! deterministic, differs between tests, and is unknown to the candidate program unless it
//! inspects the interpreter's own frames. [`parse_record`] accepts an output only when exactly one
//! line starts with the tag: a program that prints a made-up record as well is caught by the
//! repetition, and text outside the record (which only code outside the candidate's streams can
//! produce) is ignored.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Source of the Python harness.
pub const SOURCE: &str = include_str!("harness.py");

/// What one harness run does with the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Run the candidate, then the test program `tests` in the same namespace.
    Program {
        /// The test program (HumanEval's `check(...)`, MBPP's asserts).
        tests: &'a str,
    },
    /// Run the candidate with `input` as standard input and return what it printed.
    Stdin {
        /// The test's standard input.
        input: &'a str,
    },
}

/// One run of the harness: a candidate and one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation<'a> {
    /// The line prefix of the harness's record.
    pub tag: String,
    /// The candidate program.
    pub solution: &'a str,
    /// The test.
    pub mode: Mode<'a>,
}

impl<'a> Invocation<'a> {
    /// The invocation of test number `index` of `solution`; the tag derives from all three.
    pub fn new(solution: &'a str, mode: Mode<'a>, index: usize) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"sod-judge\0");
        hasher.update((solution.len() as u64).to_le_bytes());
        hasher.update(solution.as_bytes());
        let (kind, text) = match mode {
            Mode::Program { tests } => (b'p', tests),
            Mode::Stdin { input } => (b's', input),
        };
        hasher.update([kind]);
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
        hasher.update((index as u64).to_le_bytes());
        let digest = hasher.finalize();
        Invocation {
            tag: format!("sod-judge:{}:", hex::encode(&digest[..16])),
            solution,
            mode,
        }
    }

    /// The Python program that runs this invocation.
    pub fn program(&self) -> String {
        let (mode, tests, input) = match self.mode {
            Mode::Program { tests } => ("program", tests, String::new()),
            // Line ends of the input are unified, so `input()` never sees a `\r`.
            Mode::Stdin { input } => ("stdin", "", input.replace("\r\n", "\n")),
        };
        format!(
            "{SOURCE}\n\n_sod_judge({:?}, {:?}, {:?}, {:?}, {:?})\n",
            self.tag,
            mode,
            base64(self.solution.as_bytes()),
            base64(tests.as_bytes()),
            base64(input.as_bytes()),
        )
    }

    /// The python tool's arguments for this invocation: `{"code": program}`.
    pub fn python_arguments(&self) -> String {
        serde_json::json!({ "code": self.program() }).to_string()
    }
}

/// How the harness says the candidate's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The candidate (and the test program) ran to completion.
    Ok,
    /// The candidate does not compile (`SyntaxError`, or a NUL byte in the source).
    CompileError,
    /// The candidate raised an exception, or exited with a non-zero status.
    RuntimeError,
    /// The candidate raised `MemoryError`: an allocation failed.
    MemoryError,
    /// An `assert` of the test program failed.
    AssertionFailed,
    /// The test program does not compile: the problem is broken, not the candidate.
    BadTests,
}

/// What the harness reports about one run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// How the run ended.
    pub status: Status,
    /// The traceback, syntax error or exit status; empty when the run ended `ok`.
    pub detail: String,
    /// What the candidate printed (stdin mode), possibly a prefix: see
    /// [`Record::stdout_sha256`].
    #[serde(default)]
    pub stdout: Option<String>,
    /// UTF-8 bytes the candidate printed in all.
    #[serde(default)]
    pub stdout_bytes: Option<u64>,
    /// When `stdout` is only a prefix: SHA-256 (hex) of the whole output after
    /// [`crate::compare::normalize`].
    #[serde(default)]
    pub stdout_sha256: Option<String>,
}

/// Why a python tool output is not a valid harness record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// No line starts with the tag: the harness did not finish.
    #[error("the judge's harness did not report (the program stopped it)")]
    Missing,
    /// Several lines start with the tag: the program forged a record.
    #[error("the judge's harness reported {0} times (the program forged its report)")]
    Repeated(usize),
    /// The record is not the JSON the harness writes.
    #[error("the judge's harness report is malformed: {0}")]
    Malformed(String),
}

/// Finds and parses the one record line of `output` that starts with `tag`.
pub fn parse_record(output: &str, tag: &str) -> Result<Record, ProtocolError> {
    let mut lines = output.lines().filter(|line| line.starts_with(tag));
    let Some(line) = lines.next() else {
        return Err(ProtocolError::Missing);
    };
    let extra = lines.count();
    if extra > 0 {
        return Err(ProtocolError::Repeated(extra + 1));
    }
    serde_json::from_str(&line[tag.len()..]).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Standard base64 with padding (RFC 4648), as Python's `base64.b64decode` reads it.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, symbol) in symbols.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[*symbol as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn tags_are_deterministic_and_distinct() {
        let a = Invocation::new("print(1)", Mode::Stdin { input: "" }, 0);
        let b = Invocation::new("print(1)", Mode::Stdin { input: "" }, 0);
        assert_eq!(a, b);
        assert!(a.tag.starts_with("sod-judge:") && a.tag.ends_with(':'));
        assert_eq!(a.tag.len(), "sod-judge:".len() + 32 + 1);
        let others = [
            Invocation::new("print(1)", Mode::Stdin { input: "" }, 1),
            Invocation::new("print(2)", Mode::Stdin { input: "" }, 0),
            Invocation::new("print(1)", Mode::Stdin { input: "x" }, 0),
            Invocation::new("print(1)", Mode::Program { tests: "" }, 0),
        ];
        for other in others {
            assert_ne!(a.tag, other.tag, "{other:?}");
        }
    }

    #[test]
    fn program_hides_the_texts_from_the_python_tool() {
        let solution = "```python\nprint('fenced')\n```\n";
        let invocation = Invocation::new(
            solution,
            Mode::Stdin {
                input: "1\r\n2\r\n",
            },
            3,
        );
        let program = invocation.program();
        assert!(program.starts_with(SOURCE));
        assert!(
            !program.contains("```"),
            "a fence would make the tool run only its block"
        );
        let call = program.trim_end().lines().last().unwrap_or_default();
        assert_eq!(
            call,
            format!(
                "_sod_judge({:?}, \"stdin\", {:?}, \"\", {:?})",
                invocation.tag,
                base64(solution.as_bytes()),
                base64(b"1\n2\n")
            )
        );
        let arguments: serde_json::Value =
            serde_json::from_str(&invocation.python_arguments()).expect("JSON");
        assert_eq!(arguments["code"], program);
    }

    #[test]
    fn records_are_found_by_their_tag() {
        let tag = "sod-judge:00:";
        let line =
            format!(r#"{tag}{{"status": "ok", "detail": "", "stdout": "3\n", "stdout_bytes": 2}}"#);
        let record = parse_record(&format!("noise\n{line}\nlate noise\n"), tag).expect("record");
        assert_eq!(record.status, Status::Ok);
        assert_eq!(record.stdout.as_deref(), Some("3\n"));
        assert_eq!(record.stdout_bytes, Some(2));
        assert_eq!(record.stdout_sha256, None);
        assert_eq!(parse_record("3\n", tag), Err(ProtocolError::Missing));
        assert_eq!(
            parse_record(&format!("{line}\n{line}\n"), tag),
            Err(ProtocolError::Repeated(2))
        );
        assert!(matches!(
            parse_record(&format!("{tag}{{\"status\": \"fine\"}}"), tag),
            Err(ProtocolError::Malformed(_))
        ));
        // A record of another test does not count.
        assert_eq!(
            parse_record(&line.replace("sod-judge:00:", "sod-judge:01:"), tag),
            Err(ProtocolError::Missing)
        );
    }
}
