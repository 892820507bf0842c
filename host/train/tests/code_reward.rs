//! The code reward with the real judge and python tools: HumanEval problems (tests/fixtures/code_problems.jsonl)
//! scored against hand-written correct and wrong completions.

mod support;

use std::path::PathBuf;

use sod_sandbox::{Sandbox, SandboxConfig};
use sod_train::config::CodeRewardConfig;
use sod_train::dataset::{Dataset, Example};
use sod_train::reward::{CodeReward, MathReward, Reward, Score, score_all};
use support::{target_dir, tools_dir};

fn sandbox() -> Sandbox {
    let dir = tools_dir();
    for tool in ["judge", "python"] {
        let file = dir.join(format!("{tool}.wasm"));
        assert!(
            file.is_file(),
            "{} is missing: build the tools first with `cargo xtask build-tools`",
            file.display()
        );
    }
    Sandbox::new(SandboxConfig {
        tools_dir: Some(dir),
        cache_dir: Some(target_dir().join("test-cache")),
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn problems() -> Dataset {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/code_problems.jsonl");
    Dataset::load(&path).expect("code problems")
}

fn example<'a>(d: &'a Dataset, id: &str) -> &'a Example {
    d.examples()
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no problem {id}"))
}

const CLOSE_RIGHT: &str = "<think>Compare every pair.</think>Here is the function:\n```python\n\
def has_close_elements(numbers, threshold):\n    for i, a in enumerate(numbers):\n        \
for b in numbers[i + 1:]:\n            if abs(a - b) < threshold:\n                return True\n    \
return False\n```\n";
/// Only compares neighbours in the given order: fails the tests.
const CLOSE_WRONG: &str = "```python\ndef has_close_elements(numbers, threshold):\n    \
return any(abs(a - b) < threshold for a, b in zip(numbers, numbers[1:]))\n```";
/// A bare body continuing HumanEval's prompt, without a fence.
const TRUNCATE_RIGHT: &str = "    return number % 1.0\n";
const TRUNCATE_WRONG: &str =
    "```python\ndef truncate_number(number: float) -> float:\n    return int(number)\n```";
/// Uses `List` from the prompt's `from typing import List`: the prompt goes before the candidate.
const MAD_RIGHT: &str = "```python\ndef mean_absolute_deviation(numbers: List[float]) -> float:\n    \
mean = sum(numbers) / len(numbers)\n    return sum(abs(x - mean) for x in numbers) / len(numbers)\n```";
const MAD_SYNTAX_ERROR: &str = "```python\ndef mean_absolute_deviation(numbers:\n    return 0\n```";

#[test]
fn humaneval_completions_are_judged() {
    let d = problems();
    let reward = CodeReward::new(sandbox(), CodeRewardConfig::default()).expect("judge");
    reward.check_dataset(&d).expect("every problem has tests");
    let he0 = example(&d, "HumanEval/0");
    let he2 = example(&d, "HumanEval/2");
    let he4 = example(&d, "HumanEval/4");
    assert_eq!(
        he0.code.as_ref().and_then(|c| c.entry_point.as_deref()),
        Some("has_close_elements")
    );
    let cases = [
        (CLOSE_RIGHT, he0, 1.0),
        (CLOSE_WRONG, he0, 0.0),
        (TRUNCATE_RIGHT, he2, 1.0),
        (TRUNCATE_WRONG, he2, 0.0),
        (MAD_RIGHT, he4, 1.0),
        (MAD_SYNTAX_ERROR, he4, 0.0),
        ("I cannot solve this.", he4, 0.0),
        ("", he4, 0.0),
    ];
    let items: Vec<(&str, &Example)> = cases.iter().map(|(r, e, _)| (*r, *e)).collect();
    let scores = score_all(&reward, &items, 2);
    for ((response, example, expected), score) in cases.iter().zip(&scores) {
        assert_eq!(
            score,
            &Score::reward(*expected),
            "{} with {response:?}",
            example.id
        );
    }
    // The math reward refuses a dataset without answers.
    let err = MathReward.check_dataset(&d).unwrap_err().to_string();
    assert!(err.contains("HumanEval/0") && err.contains("code"), "{err}");
}

#[test]
fn stdin_problems_give_partial_credit_when_configured() {
    let d = problems();
    let sum = example(&d, "stdin/sum");
    // Right on the first and third cases, wrong on the second (its sum, 0, is printed as "zero").
    let partly =
        "```python\na, b = map(int, input().split())\nprint(a + b if a + b else 'zero')\n```";
    let right = "```python\na, b = map(int, input().split())\nprint(a + b)\n```";
    let binary = CodeReward::new(sandbox(), CodeRewardConfig::default()).expect("judge");
    assert_eq!(binary.score(right, sum), Score::reward(1.0));
    assert_eq!(binary.score(partly, sum), Score::reward(0.0));
    let partial = CodeReward::new(
        sandbox(),
        CodeRewardConfig {
            partial_credit: true,
            ..CodeRewardConfig::default()
        },
    )
    .expect("judge");
    let score = partial.score(partly, sum);
    assert!(score.fault.is_none(), "{score:?}");
    assert!((score.reward - 2.0 / 3.0).abs() < 1e-6, "{score:?}");
    assert_eq!(partial.score(right, sum), Score::reward(1.0));
}

#[test]
fn broken_tests_are_a_fault_not_a_wrong_answer() {
    let text = "{\"id\": \"broken\", \"prompt\": \"def f():\\n\", \"entry_point\": \"f\", \
                \"tests\": \"def check(candidate:\\n    pass\\n\"}\n\
                {\"id\": \"math\", \"question\": \"1+1?\", \"answer\": 2}\n";
    let d = Dataset::parse_jsonl(text, std::path::Path::new("t.jsonl")).unwrap();
    let reward = CodeReward::new(sandbox(), CodeRewardConfig::default()).expect("judge");
    let score = reward.score("```python\ndef f():\n    return 1\n```", &d.examples()[0]);
    assert_eq!(score.reward, 0.0);
    let fault = score
        .fault
        .expect("a broken test program is the judge's fault");
    assert!(fault.contains("test 0"), "{fault}");
    // A problem without tests cannot be scored by the code reward, and a run with it does not start.
    assert!(reward.score("x", &d.examples()[1]).fault.is_some());
    let err = reward.check_dataset(&d).unwrap_err().to_string();
    assert!(err.contains("\"math\"") && err.contains("tests"), "{err}");
}
