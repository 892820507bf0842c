//! Outcome rewards: scoring a finished trajectory's final answer against the reference.
//!
//! The math reward ([`MathReward`]) takes the final answer from the last assistant turn ([`extract_answer`]),
//! normalises both sides ([`normalize_answer`]) and compares them as strings or, when both are numbers, as exact
//! rationals ([`answers_match`]): `0.5`, `1/2` and `\frac{1}{2}` are the same answer, `0.333` and `1/3` are not.
//!
//! The code reward ([`CodeReward`]) takes the last fenced Python block of the final answer ([`extract_code`]) and
//! has the `judge` tool run it against the example's tests in the sandbox: 1 when every test passes, else 0, or
//! the fraction of tests passed with partial credit. A judging that fails for reasons that are not the model's
//! (a sandbox fault, an `internal_error` verdict) is a fault: the trainer flags the trajectory instead of
//! scoring it.
//!
//! Other scorers implement [`Reward`]; the trainer only sees the trait.

use sod_judge_protocol::{Args, Report, Verdict};
use sod_sandbox::{CallOptions, OutcomeKind, Sandbox, Tool};

use crate::config::{CodeRewardConfig, RewardKind};
use crate::dataset::{Dataset, Example};
use crate::episode::Scored;
use crate::error::{Result, TrainError};
use crate::judging::judge_call;
use crate::rollout::Trajectory;

/// The reward of one trajectory, or why it could not be scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The reward; 0 when `fault` is set.
    pub reward: f32,
    /// The scorer failed for reasons that are not the model's (infrastructure): drop the trajectory.
    pub fault: Option<String>,
}

impl Score {
    /// A reward.
    pub fn reward(reward: f32) -> Self {
        Score {
            reward,
            fault: None,
        }
    }

    /// A scoring that failed for reasons that are not the model's.
    pub fn fault(message: impl Into<String>) -> Self {
        Score {
            reward: 0.0,
            fault: Some(message.into()),
        }
    }
}

/// Scores the final assistant text of a trajectory. Implementations must be deterministic.
pub trait Reward: Send + Sync {
    /// The reward of `response` (the last assistant turn) for `example`; higher is better.
    fn score(&self, response: &str, example: &Example) -> Score;
    /// Whether a reward counts as a correct answer (for the accuracy metric).
    fn is_correct(&self, reward: f32) -> bool {
        reward >= 1.0
    }
    /// Checks that every example carries what this scorer needs, before a run starts.
    fn check_dataset(&self, _dataset: &Dataset) -> Result<()> {
        Ok(())
    }
}

/// 1 when the final answer equals the reference (see the module docs), else 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct MathReward;

impl Reward for MathReward {
    fn score(&self, response: &str, example: &Example) -> Score {
        Score::reward(math_reward(response, &example.answer))
    }

    fn check_dataset(&self, dataset: &Dataset) -> Result<()> {
        match dataset.examples().iter().find(|e| e.answer.is_empty()) {
            Some(e) => Err(TrainError::Config(format!(
                "reward: example {:?} has no answer for the math reward (a code problem? set reward = \"code\")",
                e.id
            ))),
            None => Ok(()),
        }
    }
}

/// The scorer for the configured reward kind; the code reward runs the `judge` tool of `sandbox` (which runs
/// the `python` tool: both must be in the sandbox's tools directory).
pub fn reward_for(
    kind: RewardKind,
    code: CodeRewardConfig,
    sandbox: &Sandbox,
) -> Result<Box<dyn Reward>> {
    Ok(match kind {
        RewardKind::Math => Box::new(MathReward),
        RewardKind::Code => Box::new(CodeReward::new(sandbox.clone(), code)?),
    })
}

/// The trainer's scoring of a step's rollouts: only a finished answer can be right, so truncated and faulted
/// trajectories get 0 unscored; the others are scored (`examples[i]` is trajectory `i`'s problem) on up to
/// `threads` threads. A scorer's infrastructure fault flags the trajectory like a tool's.
pub fn score_trajectories(
    reward: &dyn Reward,
    trajectories: Vec<Trajectory>,
    examples: &[&Example],
    threads: usize,
) -> Vec<Scored> {
    let finished: Vec<usize> = (0..trajectories.len())
        .filter(|&i| !(trajectories[i].truncated() || trajectories[i].infra_fault))
        .collect();
    let items: Vec<(&str, &Example)> = finished
        .iter()
        .map(|&i| (trajectories[i].final_text.as_str(), examples[i]))
        .collect();
    let mut scores = finished
        .iter()
        .copied()
        .zip(score_all(reward, &items, threads))
        .peekable();
    let mut scored = Vec::with_capacity(trajectories.len());
    for (i, trajectory) in trajectories.into_iter().enumerate() {
        let mut entry = Scored::unscored(trajectory);
        if let Some((_, score)) = scores.next_if(|(at, _)| *at == i) {
            entry.reward = score.reward;
            entry.scorer_fault = score.fault.is_some();
        }
        scored.push(entry);
    }
    scored
}

/// Scores `(response, example)` pairs on up to `threads` threads (at least one); scores come back in input
/// order and do not depend on the number of threads.
pub fn score_all(reward: &dyn Reward, items: &[(&str, &Example)], threads: usize) -> Vec<Score> {
    let threads = threads.clamp(1, items.len().max(1));
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(response, example)| reward.score(response, example))
                        .collect::<Vec<Score>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Name of the tool that judges code.
pub const JUDGE_TOOL: &str = "judge";

/// Runs the candidate program of a response against the example's tests with the `judge` tool.
#[derive(Clone)]
pub struct CodeReward {
    sandbox: Sandbox,
    judge: Tool,
    settings: CodeRewardConfig,
}

impl CodeReward {
    /// Loads the `judge` and `python` tools from `sandbox` (so that a missing tool fails the run's setup, not
    /// its first step).
    pub fn new(sandbox: Sandbox, settings: CodeRewardConfig) -> Result<Self> {
        let judge = sandbox.tool(JUDGE_TOOL)?;
        sandbox.tool("python")?;
        Ok(CodeReward {
            sandbox,
            judge,
            settings,
        })
    }

    /// The judge's arguments for `program` against `tests`.
    fn judge_args<'a>(
        &self,
        program: &str,
        tests: &'a serde_json::Value,
    ) -> Args<&'a serde_json::Value> {
        Args {
            code: program.to_string(),
            tests,
            fuel_per_test: Some(self.settings.fuel_per_test),
            memory_bytes_per_test: Some(self.settings.memory_bytes_per_test),
            // Without partial credit the first failure decides.
            stop_on_first_failure: !self.settings.partial_credit,
            float_tolerance: None,
        }
    }
}

/// The candidate program of a response for a problem: [`extract_code`], after the problem's prefix when it has
/// one (HumanEval: the prompt's imports, helpers and signature; a complete function in the response redefines
/// the stub, a bare body continues it). `None` when the response has no code.
pub fn candidate_program(response: &str, tests: &crate::dataset::CodeTests) -> Option<String> {
    let code = extract_code(response)?;
    Some(match &tests.prefix {
        Some(prefix) => format!("{prefix}\n{code}\n"),
        None => format!("{code}\n"),
    })
}

/// The code of a response: after the reasoning (`</think>`), the content of the last complete fenced block
/// tagged `python`, `py`, `python3` or untagged; without such a block, the whole text. `None` when it is blank.
pub fn extract_code(response: &str) -> Option<String> {
    let text = response
        .rfind("</think>")
        .map_or(response, |i| &response[i + "</think>".len()..]);
    let mut last = None;
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let Some(line_end) = after.find('\n') else {
            break;
        };
        let tag = after[..line_end].trim().to_ascii_lowercase();
        let body = &after[line_end + 1..];
        let Some(close) = body.find("```") else {
            break;
        };
        if matches!(tag.as_str(), "python" | "py" | "python3" | "") {
            last = Some(&body[..close]);
        }
        rest = &body[close + 3..];
    }
    let code = last.unwrap_or(text);
    (!code.trim().is_empty()).then(|| code.trim_end().to_string())
}

impl Reward for CodeReward {
    fn score(&self, response: &str, example: &Example) -> Score {
        let Some(tests) = &example.code else {
            return Score::fault(format!("example {:?} has no tests", example.id));
        };
        let Some(program) = candidate_program(response, tests) else {
            return Score::reward(0.0);
        };
        let (arguments, limits) = judge_call(&self.judge_args(&program, &tests.tests));
        let options = CallOptions {
            limits: Some(limits),
            ..CallOptions::default()
        };
        let outcome = self.sandbox.call(&self.judge, &arguments, &options);
        if outcome.kind != OutcomeKind::Ok {
            return Score::fault(format!(
                "the judge failed ({:?}): {}",
                outcome.kind,
                outcome.model_text()
            ));
        }
        let report: Report = match serde_json::from_str(&outcome.output) {
            Ok(report) => report,
            Err(e) => return Score::fault(format!("the judge's report does not parse: {e}")),
        };
        if let Some((i, test)) = report.internal_error() {
            let detail = test.detail.as_deref().unwrap_or("");
            return Score::fault(format!("the judge could not judge test {i}: {detail}"));
        }
        if report.total == 0 {
            return Score::fault("the judge reported no tests");
        }
        let reward = if self.settings.partial_credit {
            report.passed as f32 / report.total as f32
        } else if report.verdict == Verdict::Accepted && report.passed == report.total {
            1.0
        } else {
            0.0
        };
        Score::reward(reward)
    }

    fn check_dataset(&self, dataset: &Dataset) -> Result<()> {
        match dataset.examples().iter().find(|e| e.code.is_none()) {
            Some(e) => Err(TrainError::Config(format!(
                "reward = \"code\": example {:?} has no `tests`",
                e.id
            ))),
            None => Ok(()),
        }
    }
}

/// 1.0 when the answer extracted from `response` matches `reference`, else 0.0.
pub fn math_reward(response: &str, reference: &str) -> f32 {
    match extract_answer(response) {
        Some(answer) if answers_match(&answer, reference) => 1.0,
        _ => 0.0,
    }
}

/// The final answer of a response: the content of the last complete `\boxed{...}` (nested braces allowed), else
/// what follows the last "answer is" / "answer:" on its line, else the last number. `None` when there is none.
pub fn extract_answer(response: &str) -> Option<String> {
    // Reasoning is not an answer: only look after the last </think>.
    let text = response
        .rfind("</think>")
        .map_or(response, |i| &response[i + "</think>".len()..]);
    last_boxed(text)
        .or_else(|| after_answer_phrase(text))
        .or_else(|| last_number(text))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Content of the last `\boxed{...}` (or `\fbox{...}`) whose braces balance.
fn last_boxed(text: &str) -> Option<String> {
    let mut starts: Vec<usize> = ["\\boxed{", "\\fbox{"]
        .iter()
        .flat_map(|marker| text.match_indices(marker).map(|(i, m)| i + m.len()))
        .collect();
    starts.sort_unstable();
    for &start in starts.iter().rev() {
        let mut depth = 1usize;
        for (offset, c) in text[start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(text[start..start + offset].to_string());
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// The rest of the line after the last "answer is" / "answer:" (case-insensitive).
fn after_answer_phrase(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let (at, phrase) = ["answer is", "answer:"]
        .iter()
        .filter_map(|p| lower.rfind(p).map(|i| (i, p.len())))
        .max_by_key(|(i, _)| *i)?;
    let rest = &text[at + phrase..];
    let line = rest.lines().next().unwrap_or("");
    let line = line.trim().trim_start_matches(':').trim();
    let line = line.trim_end_matches(['.', '!']).trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// The last number in the text: an optional minus, digits with optional thousands commas, an optional decimal
/// part and an optional `/denominator`.
fn last_number(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = if i > 0 && bytes[i - 1] == b'-' {
                i - 1
            } else {
                i
            };
            let mut end = i;
            let digits_from = |mut j: usize| {
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                j
            };
            end = digits_from(end);
            // Thousands groups: ",ddd" not followed by another digit.
            while end + 3 < bytes.len()
                && bytes[end] == b','
                && bytes[end + 1..end + 4].iter().all(u8::is_ascii_digit)
                && bytes.get(end + 4).is_none_or(|b| !b.is_ascii_digit())
            {
                end += 4;
            }
            if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
                end = digits_from(end + 1);
            }
            if end + 1 < bytes.len() && bytes[end] == b'/' && bytes[end + 1].is_ascii_digit() {
                end = digits_from(end + 1);
            }
            last = Some(text[start..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    last
}

/// Canonical text of an answer: no surrounding `$` or spaces, `\text{..}`-style wrappers unwrapped, LaTeX
/// spacing removed, `\dfrac`/`\tfrac` as `\frac`, thousands commas dropped, trailing zeros of decimals and a
/// trailing period removed.
pub fn normalize_answer(answer: &str) -> String {
    let mut s = answer.trim().to_string();
    // Unwrap \text{x}, \textbf{x}, \mathrm{x}, \mathbf{x}, \boxed{x}.
    for wrapper in ["\\text{", "\\textbf{", "\\mathrm{", "\\mathbf{", "\\boxed{"] {
        while let Some(start) = s.find(wrapper) {
            let inner_start = start + wrapper.len();
            let Some(len) = matching_brace(&s[inner_start..]) else {
                break;
            };
            let inner = s[inner_start..inner_start + len].to_string();
            s.replace_range(start..inner_start + len + 1, &inner);
        }
    }
    for (from, to) in [
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\ ", ""),
        ("\\$", ""),
        ("$", ""),
    ] {
        s = s.replace(from, to);
    }
    s.retain(|c| !c.is_whitespace());
    let s = s.trim_end_matches('.');
    let s = drop_thousands_commas(s);
    trim_decimal_zeros(&s)
}

/// Length of the text before the brace closing an already opened one.
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 1usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `1,234,567` -> `1234567`; a comma not between a digit and exactly three digits (a list, a tuple) stays.
fn drop_thousands_commas(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let grouping = c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.len() >= i + 4
            && chars[i + 1..i + 4].iter().all(char::is_ascii_digit)
            && chars.get(i + 4).is_none_or(|d| !d.is_ascii_digit());
        if !grouping {
            out.push(c);
        }
    }
    out
}

/// `2.50` -> `2.5`, `3.0` -> `3`, in a plain decimal; anything else unchanged.
fn trim_decimal_zeros(s: &str) -> String {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let is_decimal = unsigned.contains('.')
        && unsigned.chars().all(|c| c.is_ascii_digit() || c == '.')
        && unsigned.matches('.').count() == 1;
    if !is_decimal {
        return s.to_string();
    }
    let trimmed = s.trim_end_matches('0').trim_end_matches('.');
    if trimmed.is_empty() || trimmed == "-" {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// An exact rational `numerator / denominator` in lowest terms with a positive denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    /// Numerator (carries the sign).
    pub numerator: i128,
    /// Denominator, positive.
    pub denominator: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

impl Rational {
    /// `numerator / denominator` reduced; `None` for a zero denominator.
    pub fn new(numerator: i128, denominator: i128) -> Option<Self> {
        if denominator == 0 {
            return None;
        }
        let g = gcd(numerator, denominator).max(1);
        let sign = if denominator < 0 { -1 } else { 1 };
        Some(Rational {
            numerator: sign * numerator / g,
            denominator: sign * denominator / g,
        })
    }

    fn div(self, other: Rational) -> Option<Rational> {
        let n = self.numerator.checked_mul(other.denominator)?;
        let d = self.denominator.checked_mul(other.numerator)?;
        Rational::new(n, d)
    }
}

/// Parses a normalised answer as an exact number: an integer, a decimal, `a/b`, `\frac{a}{b}` (each part itself
/// such a number), with an optional leading minus. `None` for anything else or on overflow.
pub fn parse_rational(s: &str) -> Option<Rational> {
    if let Some(rest) = s.strip_prefix('-') {
        let r = parse_rational(rest)?;
        return Rational::new(r.numerator.checked_neg()?, r.denominator);
    }
    if let Some(rest) = s.strip_prefix("\\frac") {
        let rest = rest.strip_prefix('{')?;
        let a_len = matching_brace(rest)?;
        let after_a = &rest[a_len + 1..];
        let after_a = after_a.strip_prefix('{')?;
        let b_len = matching_brace(after_a)?;
        if b_len + 1 != after_a.len() {
            return None;
        }
        return parse_rational(&rest[..a_len])?.div(parse_rational(&after_a[..b_len])?);
    }
    if let Some((a, b)) = s.split_once('/') {
        return parse_decimal(a)?.div(parse_decimal(b)?);
    }
    parse_decimal(s)
}

/// An unsigned integer or decimal (`12`, `1.25`, `.5`, `3.`).
fn parse_decimal(s: &str) -> Option<Rational> {
    let (int_part, frac_part) = s.split_once('.').unwrap_or((s, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let numerator: i128 = digits.parse().ok()?;
    let denominator = 10i128.checked_pow(u32::try_from(frac_part.len()).ok()?)?;
    Rational::new(numerator, denominator)
}

/// Whether two answers are the same: equal after [`normalize_answer`], or both exact numbers
/// ([`parse_rational`]) of equal value.
pub fn answers_match(predicted: &str, reference: &str) -> bool {
    let (p, r) = (normalize_answer(predicted), normalize_answer(reference));
    if p.is_empty() || r.is_empty() {
        return false;
    }
    if p == r {
        return true;
    }
    matches!((parse_rational(&p), parse_rational(&r)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_last_boxed_with_nested_braces() {
        assert_eq!(
            extract_answer(r"first \boxed{1} then \boxed{\frac{a}{b}} done").as_deref(),
            Some(r"\frac{a}{b}")
        );
        assert_eq!(
            extract_answer(r"\boxed{{x}+{y}}").as_deref(),
            Some("{x}+{y}")
        );
        // An unterminated last box falls back to the previous complete one.
        assert_eq!(
            extract_answer(r"\boxed{7} and \boxed{8").as_deref(),
            Some("7")
        );
        assert_eq!(extract_answer(r"\fbox{9}").as_deref(), Some("9"));
    }

    #[test]
    fn falls_back_to_answer_phrase_then_last_number() {
        assert_eq!(
            extract_answer("so the answer is 42.").as_deref(),
            Some("42")
        );
        assert_eq!(
            extract_answer("The Answer: $1,000$\nbye").as_deref(),
            Some("$1,000$")
        );
        assert_eq!(
            extract_answer("2 + 3 = 5, minus 1 is -4.5 apples").as_deref(),
            Some("-4.5")
        );
        assert_eq!(extract_answer("ratio 3/4").as_deref(), Some("3/4"));
        assert_eq!(
            extract_answer("total 1,234,567 people").as_deref(),
            Some("1,234,567")
        );
        assert_eq!(extract_answer("no digits here"), None);
        // Reasoning before </think> is not the answer.
        assert_eq!(
            extract_answer("<think>maybe 3</think>it is 4").as_deref(),
            Some("4")
        );
        assert_eq!(extract_answer("<think>maybe 3</think>no idea"), None);
    }

    #[test]
    fn normalises_formatting() {
        assert_eq!(normalize_answer(" $1,234$ "), "1234");
        assert_eq!(normalize_answer(r"\text{5 apples}"), "5apples");
        assert_eq!(normalize_answer("7.0"), "7");
        assert_eq!(normalize_answer("2.50"), "2.5");
        assert_eq!(normalize_answer("12."), "12");
        assert_eq!(normalize_answer(r"\dfrac{1}{2}"), r"\frac{1}{2}");
        assert_eq!(normalize_answer(r"\left( 1,2 \right)"), "(1,2)");
        assert_eq!(normalize_answer("0.000"), "0");
    }

    #[test]
    fn parses_exact_rationals() {
        let r = |n, d| Rational::new(n, d);
        assert_eq!(parse_rational("0.5"), r(1, 2));
        assert_eq!(parse_rational("-3"), r(-3, 1));
        assert_eq!(parse_rational("6/4"), r(3, 2));
        assert_eq!(parse_rational(r"\frac{3}{6}"), r(1, 2));
        assert_eq!(parse_rational(r"-\frac{1}{0.5}"), r(-2, 1));
        assert_eq!(parse_rational(".25"), r(1, 4));
        assert_eq!(parse_rational("1/0"), None);
        assert_eq!(parse_rational("x"), None);
        assert_eq!(parse_rational(r"\frac{1}{2}3"), None);
        assert_eq!(parse_rational("1e5"), None);
        // Overflow is "not a number", never a panic.
        assert_eq!(parse_rational(&"9".repeat(60)), None);
    }

    #[test]
    fn matches_equal_values_only() {
        assert!(answers_match("0.5", r"\frac{1}{2}"));
        assert!(answers_match("$1,000$", "1000"));
        assert!(answers_match("3.0", "3"));
        assert!(answers_match(r"\text{yes}", "yes"));
        assert!(answers_match("-2/4", "-0.5"));
        assert!(!answers_match("0.333", "1/3"));
        assert!(!answers_match("4", "5"));
        assert!(!answers_match("", ""));
        assert!(!answers_match("1,2", "12"));
    }

    #[test]
    fn math_reward_scores_responses() {
        assert_eq!(math_reward(r"So \boxed{\dfrac{6}{8}}.", "0.75"), 1.0);
        assert_eq!(math_reward("The answer is 17", "17"), 1.0);
        assert_eq!(math_reward("The answer is 16", "17"), 0.0);
        assert_eq!(math_reward("I don't know", "17"), 0.0);
        let ex = Example {
            id: "a".into(),
            messages: vec![],
            answer: "10".into(),
            code: None,
            extra: serde_json::Map::new(),
        };
        let reward = MathReward;
        assert_eq!(reward.score("5 + 5 = 10", &ex), Score::reward(1.0));
        assert!(reward.is_correct(1.0) && !reward.is_correct(0.0));
        let items = [("10", &ex), ("11", &ex), ("<think>10</think>9", &ex)];
        let rewards: Vec<f32> = score_all(&reward, &items, 2)
            .into_iter()
            .map(|s| s.reward)
            .collect();
        assert_eq!(rewards, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn extracts_the_last_python_block_or_the_whole_answer() {
        let two = "first\n```python\nx = 1\n```\nthen\n```py\ndef f():\n    return 2\n```\nbye";
        assert_eq!(extract_code(two).as_deref(), Some("def f():\n    return 2"));
        // Blocks in other languages are not code to run; an unterminated block is ignored.
        let other = "```python\na = 1\n```\n```text\nnot code\n```\n```python\nb = 2";
        assert_eq!(extract_code(other).as_deref(), Some("a = 1"));
        assert_eq!(
            extract_code("<think>```python\nwrong\n```</think>def g(): pass").as_deref(),
            Some("def g(): pass")
        );
        assert_eq!(extract_code("   \n"), None);
        let tests = crate::dataset::CodeTests {
            tests: serde_json::json!("check(f)"),
            entry_point: Some("f".into()),
            prefix: Some("import math\ndef f():\n    \"\"\"doc\"\"\"\n".into()),
        };
        assert_eq!(
            candidate_program("```python\ndef f():\n    return 1\n```", &tests).as_deref(),
            Some("import math\ndef f():\n    \"\"\"doc\"\"\"\n\ndef f():\n    return 1\n")
        );
    }
}
