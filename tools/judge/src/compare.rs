//! Comparing a program's output with the expected output of a stdin/stdout test.
//!
//! Both texts are [`normalize`]d first: line endings become `\n`, trailing blanks of every line
//! and trailing empty lines are dropped. Without a tolerance the normalized texts must be equal.
//! With a float tolerance `t`, lines are compared token by token (split at ASCII whitespace):
//! a token of the expected output that is a decimal or scientific number (it contains `.`, `e`
//! or `E` and parses as a finite `f64`) matches any finite number within `t`, absolute or
//! relative (`|got - expected| <= t * max(1, |expected|)`); every other token must be equal.

/// Blanks removed from the end of every line.
const TRAILING_BLANKS: &[char] = &[' ', '\t', '\u{0b}', '\u{0c}'];

/// Characters of a line shown in a difference.
const SHOWN_LINE_CHARS: usize = 120;

/// `text` with `\r\n` and `\r` line ends turned into `\n`, trailing blanks (space, tab, vertical
/// tab, form feed) removed from every line and trailing empty lines removed.
///
/// The judge's Python harness implements the same function (`normalize` in `harness.py`) to
/// hash outputs too long to be returned whole.
pub fn normalize(text: &str) -> String {
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<&str> = unified
        .split('\n')
        .map(|line| line.trim_end_matches(TRAILING_BLANKS))
        .collect();
    while lines.last().is_some_and(|line| line.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

/// Whether `got` matches `expected` (see the module documentation).
pub fn outputs_match(expected: &str, got: &str, float_tolerance: Option<f64>) -> bool {
    let expected = normalize(expected);
    let got = normalize(got);
    match float_tolerance {
        None => expected == got,
        Some(tolerance) => {
            let expected: Vec<&str> = expected.split('\n').collect();
            let got: Vec<&str> = got.split('\n').collect();
            expected.len() == got.len()
                && expected
                    .iter()
                    .zip(&got)
                    .all(|(e, g)| lines_match(e, g, tolerance))
        }
    }
}

fn lines_match(expected: &str, got: &str, tolerance: f64) -> bool {
    let expected: Vec<&str> = expected.split_ascii_whitespace().collect();
    let got: Vec<&str> = got.split_ascii_whitespace().collect();
    expected.len() == got.len()
        && expected
            .iter()
            .zip(&got)
            .all(|(e, g)| tokens_match(e, g, tolerance))
}

fn tokens_match(expected: &str, got: &str, tolerance: f64) -> bool {
    if expected == got {
        return true;
    }
    let Some(e) = float_token(expected) else {
        return false;
    };
    match got.parse::<f64>() {
        Ok(g) if g.is_finite() => (g - e).abs() <= tolerance * e.abs().max(1.0),
        _ => false,
    }
}

/// The value of a token written as a decimal or scientific number, e.g. `0.5`, `1e-9`, `-3.`.
fn float_token(token: &str) -> Option<f64> {
    if !token.contains(['.', 'e', 'E']) {
        return None;
    }
    if !token
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    token.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A short description of how `got` differs from `expected`: the first differing line of the
/// normalized texts, both versions shown (cut to 120 characters), and the line counts when
/// they differ. Used for `wrong_answer` verdicts.
pub fn short_diff(expected: &str, got: &str, float_tolerance: Option<f64>) -> String {
    let expected = normalize(expected);
    let got = normalize(got);
    if got.is_empty() {
        return format!(
            "no output; expected {} line(s), first: {}",
            line_count(&expected),
            shown(expected.split('\n').next().unwrap_or(""))
        );
    }
    let expected_lines: Vec<&str> = expected.split('\n').collect();
    let got_lines: Vec<&str> = got.split('\n').collect();
    let first = (0..expected_lines.len().max(got_lines.len())).find(|&i| {
        match (expected_lines.get(i), got_lines.get(i)) {
            (Some(e), Some(g)) => match float_tolerance {
                None => e != g,
                Some(tolerance) => !lines_match(e, g, tolerance),
            },
            _ => true,
        }
    });
    let mut text = match first {
        Some(i) => format!(
            "line {}: expected {}, got {}",
            i + 1,
            expected_lines
                .get(i)
                .map_or("<end of output>".to_string(), |l| shown(l)),
            got_lines
                .get(i)
                .map_or("<end of output>".to_string(), |l| shown(l)),
        ),
        None => "outputs differ".to_string(),
    };
    if expected_lines.len() != got_lines.len() {
        text.push_str(&format!(
            " (expected {} line(s), got {})",
            expected_lines.len(),
            got_lines.len()
        ));
    }
    text
}

fn line_count(normalized: &str) -> usize {
    if normalized.is_empty() {
        0
    } else {
        normalized.split('\n').count()
    }
}

/// A line quoted for a diff, cut to [`SHOWN_LINE_CHARS`] characters.
fn shown(line: &str) -> String {
    let count = line.chars().count();
    if count <= SHOWN_LINE_CHARS {
        format!("{line:?}")
    } else {
        let head: String = line.chars().take(SHOWN_LINE_CHARS).collect();
        format!("{head:?}... ({count} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_unifies_line_ends_and_trailing_blanks() {
        assert_eq!(normalize("1 2 \r\n3\t\r\n\r\n\n"), "1 2\n3");
        assert_eq!(normalize("a\rb\n"), "a\nb");
        assert_eq!(normalize("  lead\n"), "  lead");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize("\n \n"), "");
        assert_eq!(normalize("x\n\ny\n"), "x\n\ny");
    }

    #[test]
    fn exact_comparison_is_whitespace_tolerant_only_at_line_ends() {
        assert!(outputs_match("3\n", "3", None));
        assert!(outputs_match("1 2\n3\n", "1 2   \r\n3\r\n\r\n", None));
        assert!(!outputs_match("1 2\n", "1  2\n", None));
        assert!(!outputs_match("1 2\n", " 1 2\n", None));
        assert!(!outputs_match("3\n", "4\n", None));
        assert!(!outputs_match("a\n\nb", "a\nb", None));
        assert!(!outputs_match("0.5", "0.50000001", None));
    }

    #[test]
    fn float_tolerance_applies_to_decimal_tokens() {
        assert!(outputs_match("0.5\n", "0.50000001", Some(1e-6)));
        assert!(outputs_match("1e9 2.5", "1000000001 2.5", Some(1e-6)));
        assert!(outputs_match("x 1.000", "x   1", Some(1e-6)));
        assert!(!outputs_match("0.5", "0.6", Some(1e-6)));
        assert!(!outputs_match("0.5", "nan", Some(1e-6)));
        assert!(!outputs_match("0.5", "0.5 0.5", Some(1e-6)));
        assert!(!outputs_match("0.5\n1.5", "0.5", Some(1e-6)));
        // Integers stay exact even with a tolerance.
        assert!(!outputs_match("1000000", "1000001", Some(1e-3)));
        // Words are compared as words.
        assert!(!outputs_match("Yes", "yes", Some(1e-3)));
    }

    #[test]
    fn float_tokens_are_numbers_written_with_a_point_or_exponent() {
        assert_eq!(float_token("0.25"), Some(0.25));
        assert_eq!(float_token("-1e-3"), Some(-0.001));
        assert_eq!(float_token("3."), Some(3.0));
        assert_eq!(float_token("12"), None);
        assert_eq!(float_token("e"), None);
        assert_eq!(float_token("1.2.3"), None);
        assert_eq!(float_token("inf"), None);
        assert_eq!(float_token("NaN"), None);
    }

    #[test]
    fn diff_names_the_first_differing_line() {
        assert_eq!(
            short_diff("1\n2\n3\n", "1\n5\n3\n", None),
            r#"line 2: expected "2", got "5""#
        );
        assert_eq!(
            short_diff("1\n2\n", "1\n", None),
            r#"line 2: expected "2", got <end of output> (expected 2 line(s), got 1)"#
        );
        assert_eq!(
            short_diff("1\n", "1\nextra\n", None),
            r#"line 2: expected <end of output>, got "extra" (expected 1 line(s), got 2)"#
        );
        assert_eq!(
            short_diff("7\n8\n", "", None),
            r#"no output; expected 2 line(s), first: "7""#
        );
        assert_eq!(
            short_diff("0.5 1\n0.25\n", "0.5000001 1\n0.3\n", Some(1e-3)),
            r#"line 2: expected "0.25", got "0.3""#
        );
    }

    #[test]
    fn diff_cuts_long_lines() {
        let long = "x".repeat(500);
        let diff = short_diff(&long, "y", None);
        assert!(diff.contains("(500 characters)"), "{diff}");
        assert!(diff.len() < 200, "{diff}");
    }
}
