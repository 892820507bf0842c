//! The judge's use of the run protocol (`sod_judge_protocol::run`): the program it runs in the
//! python tool for each test, and what it makes of the record that comes back.
//!
//! For every test the judge builds one program: the run protocol's Python side, the harness
//! (`harness.py`), then a call `_sod_judge(tag, mode, solution, tests, stdin)`, the texts
//! base64-encoded so that nothing in them can change how the python tool reads the program (it
//! runs the first ```` ```python ```` fence it finds, for example). It runs as the `code` argument
//! of a fresh python tool instance.
//!
//! The harness writes one line to the tool's output: the call's tag, then a JSON
//! [`RunRecord`](sod_judge_protocol::run::RunRecord). The tag is `sod-judge:` and 32 hex digits of a SHA-256 of the test's inputs, so
//! it is deterministic, differs between tests, and is unknown to the candidate program unless it
//! inspects the interpreter's own frames. [`run::parse_record`] accepts an output only when exactly one
//! line starts with the tag: a program that prints a made-up record as well is caught by the
//! repetition, and text outside the record (which only code outside the candidate's streams can
//! produce) is ignored.

use sha2::{Digest, Sha256};
use sod_judge_protocol::run::{self, RecordError, base64};

/// Source of the Python harness, after the run protocol's Python side it uses.
pub fn source() -> String {
    format!(
        "{}

{}",
        run::PYTHON,
        include_str!("harness.py")
    )
}

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
            "{}\n\n_sod_judge({:?}, {:?}, {:?}, {:?}, {:?})\n",
            source(),
            self.tag,
            mode,
            base64(self.solution.as_bytes()),
            base64(tests.as_bytes()),
            base64(input.as_bytes()),
        )
    }

    /// The python tool's arguments for this invocation: `{"code": program}`.
    pub fn python_arguments(&self) -> String {
        run::tool_arguments(&self.program())
    }
}

/// What a missing, repeated or malformed record means for the test, in the report's words.
pub fn explain(error: &RecordError) -> String {
    match error {
        RecordError::Missing => {
            "the judge's harness did not report (the program stopped it)".to_string()
        }
        RecordError::Repeated(n) => {
            format!("the judge's harness reported {n} times (the program forged its report)")
        }
        RecordError::Malformed(e) => format!("the judge's harness report is malformed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(program.starts_with(&source()));
        assert!(program.starts_with(run::PYTHON));
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
    fn record_errors_are_explained_as_the_report_says_them() {
        assert!(explain(&RecordError::Missing).contains("did not report"));
        assert!(
            explain(&RecordError::Repeated(2)).contains("reported 2 times (the program forged")
        );
        assert!(explain(&RecordError::Malformed("eof".into())).ends_with("malformed: eof"));
    }
}
