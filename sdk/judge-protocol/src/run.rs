//! The run protocol: how a Python program wrapped in the python tool reports what it did.
//!
//! A wrapper (the judge's harness, `tools/judge/src/harness.py`; `POST /run_code`'s,
//! `host/src/serve/run_code.py`) runs a program inside the python tool with private stdout, stderr
//! and stdin, then writes exactly one line to the tool's output: a tag, then a compact JSON
//! [`RunRecord`]. The Python side is [`PYTHON`] (`python/sod_run.py`), which each wrapper
//! prepends to its own source; [`parse_record`] reads the line back.
//!
//! Texts travel to the wrapper base64-encoded ([`base64`]) so that nothing in them can change how
//! the python tool reads its `code` (it runs the first ```` ```python ```` fence it finds, for
//! example).

use serde::{Deserialize, Serialize};

/// The Python side of the protocol: `_SodCapture`, `_sod_exit_status`, `_sod_register_source`
/// and `_SodReport`.
pub const PYTHON: &str = include_str!("../python/sod_run.py");

/// How the wrapped program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The program (and the test program, if any) ran to completion, or exited with status 0.
    Ok,
    /// The program does not compile (`SyntaxError`, or a NUL byte in the source).
    CompileError,
    /// The program raised an exception, or exited with a non-zero status.
    RuntimeError,
    /// The program raised `MemoryError`: an allocation failed.
    MemoryError,
    /// An `assert` of the test program failed.
    AssertionFailed,
    /// The test program does not compile: the problem is broken, not the program.
    BadTests,
}

/// What a wrapper reports about one run (see `_SodReport` in [`PYTHON`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// How the program ended.
    pub status: Ending,
    /// The status CPython would exit with, 0 to 255 (what a shell sees of `SystemExit(256)` is 0).
    pub return_code: i32,
    /// What the program wrote to stdout, possibly cut: see [`RunRecord::stdout_sha256`].
    pub stdout: String,
    /// UTF-8 bytes of the whole stdout.
    pub stdout_bytes: u64,
    /// When `stdout` is only a prefix, the wrapper's SHA-256 (hex) of the whole output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_sha256: Option<String>,
    /// What the program wrote to stderr (empty where the wrapper discards it).
    pub stderr: String,
    /// The wrapper's account of a failure: a traceback's tail, a syntax error, an exit status.
    pub detail: String,
    /// What the wrapper did to the streams (cuts), in words.
    pub notes: Vec<String>,
}

/// Why a python tool output holds no valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// No line starts with the tag: the wrapper did not finish.
    Missing,
    /// This many lines start with the tag: someone else wrote one too.
    Repeated(usize),
    /// The line is not a record; the JSON error.
    Malformed(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Missing => write!(f, "no record line"),
            RecordError::Repeated(n) => write!(f, "{n} record lines"),
            RecordError::Malformed(error) => write!(f, "the record is malformed: {error}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Finds and parses the one line of `output` that starts with `tag`. Other lines (which only code
/// outside the program's streams can write) are ignored; a second tagged line means a forged one.
pub fn parse_record(output: &str, tag: &str) -> Result<RunRecord, RecordError> {
    let mut lines = output.lines().filter(|line| line.starts_with(tag));
    let Some(line) = lines.next() else {
        return Err(RecordError::Missing);
    };
    let extra = lines.count();
    if extra > 0 {
        return Err(RecordError::Repeated(extra + 1));
    }
    serde_json::from_str(&line[tag.len()..]).map_err(|e| RecordError::Malformed(e.to_string()))
}

/// The python tool's arguments that run `code`: `{"code": code}`.
pub fn tool_arguments(code: &str) -> String {
    serde_json::json!({ "code": code }).to_string()
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

    /// A record line as `_SodReport.send` writes it.
    const LINE: &str = r#"T:{"status":"runtime_error","return_code":3,"stdout":"ü\n","stdout_bytes":3,"stderr":"boom\n","detail":"","notes":["stdout truncated"]}"#;

    #[test]
    fn records_are_found_by_their_tag_and_round_trip() {
        let record = parse_record(&format!("noise\n{LINE}\nlate noise\n"), "T:").expect("record");
        assert_eq!(record.status, Ending::RuntimeError);
        assert_eq!(record.return_code, 3);
        assert_eq!(record.stdout, "ü\n");
        assert_eq!(record.stderr, "boom\n");
        assert_eq!(record.stdout_sha256, None);
        assert_eq!(
            format!("T:{}", serde_json::to_string(&record).expect("JSON")),
            LINE
        );
        assert_eq!(parse_record("3\n", "T:"), Err(RecordError::Missing));
        assert_eq!(
            parse_record(&format!("{LINE}\n{LINE}\n"), "T:"),
            Err(RecordError::Repeated(2))
        );
        // A record of another tag does not count.
        assert_eq!(parse_record(LINE, "U:"), Err(RecordError::Missing));
    }

    #[test]
    fn hostile_records_are_errors() {
        for bad in [
            "T:{not json}",
            "T:{}",
            r#"T:{"status":"fine","return_code":0,"stdout":"","stdout_bytes":0,"stderr":"","detail":"","notes":[]}"#,
            r#"T:{"status":"ok","return_code":"0","stdout":"","stdout_bytes":0,"stderr":"","detail":"","notes":[]}"#,
            r#"T:{"status":"ok","return_code":0,"stdout":"","stdout_bytes":0,"stderr":"","detail":"","notes":[],"files":{}}"#,
            "T:[1]",
            "T:",
        ] {
            assert!(
                matches!(parse_record(bad, "T:"), Err(RecordError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn python_side_keeps_the_tool_from_misreading_it() {
        assert!(!PYTHON.contains('`'), "the tool runs only a fenced block");
        assert!(!PYTHON.contains('@'), "run_code fills @ placeholders");
        for name in [
            "status",
            "return_code",
            "stdout_bytes",
            "stdout_sha256",
            "notes",
        ] {
            assert!(PYTHON.contains(&format!("\"{name}\"")), "{name}");
        }
    }
}
