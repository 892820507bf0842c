//! The trainer's wiring of the code reward: the dataset must carry tests, and a code dataset sets up.

mod support;

use sod_train::Trainer;
use support::{Fixture, options};

#[test]
fn code_reward_runs_need_tests_in_every_row() {
    let fx = Fixture::new();
    // The fixture's math rows have no tests: refused before any model is loaded.
    let config = fx.config("math-as-code", &["reward=\"code\""]);
    let err = Trainer::new(config, options(false))
        .err()
        .expect("math rows cannot be judged")
        .to_string();
    assert!(err.contains("\"mul\"") && err.contains("tests"), "{err}");

    // HumanEval rows (a string prompt, entry point and test program) set up with the judge.
    let problems =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/code_problems.jsonl");
    let config = fx.config(
        "code",
        &[
            "reward=\"code\"",
            "tools=[\"python\"]",
            &format!("dataset={:?}", problems.display().to_string()),
        ],
    );
    let trainer = Trainer::new(config, options(false)).expect("code run sets up");
    assert_eq!(trainer.step(), 0);

    // And the math reward refuses the code rows, which have no answers.
    let config = fx.config(
        "code-as-math",
        &[&format!("dataset={:?}", problems.display().to_string())],
    );
    let err = Trainer::new(config, options(false))
        .err()
        .expect("code rows have no answer")
        .to_string();
    assert!(err.contains("HumanEval/0"), "{err}");
}
