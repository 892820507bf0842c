//! Multi-step arithmetic word problems with large numbers.
//!
//! Each problem takes two or three calculator steps, and every step after the first uses the previous
//! step's result: a model that mis-copies one tool result gets every later step wrong, which is the
//! cascade SOD's step weights are about. The numbers are large enough that a small model cannot do the
//! arithmetic in its head, so it has to call the tool; answers are checked exactly.
//!
//! Problems are a pure function of (seed, split, index). The train and test splits draw from separate
//! random streams, and a train problem whose numbers coincide with a test problem's is skipped, so the
//! splits are disjoint.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Which part of the task family a problem belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Problems the models are trained on.
    Train,
    /// Held-out problems for evaluation.
    Test,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One calculator step: the expression a model should send and its exact result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Calculator expression, e.g. `4817*36`.
    pub expression: String,
    /// Its exact value.
    pub result: i64,
}

/// A word problem with its solution path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Unique id, e.g. `train-17`.
    pub id: String,
    /// The question shown to the model.
    pub question: String,
    /// The calculator steps of the intended solution, in order.
    pub steps: Vec<Step>,
    /// The final answer (the last step's result) as text.
    pub answer: String,
}

/// SplitMix64: small, fast, and fully specified here, so problems never change with a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64, split: Split, index: u64) -> Self {
        let digest = Sha256::digest(format!("sod-demo-tasks-v1/{seed}/{}/{index}", split.name()));
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        SplitMix64(u64::from_le_bytes(bytes))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: i64, high: i64) -> i64 {
        let span = (high - low + 1) as u64;
        low + (self.next() % span) as i64
    }
}

fn step(expression: String, result: i64) -> Step {
    Step { expression, result }
}

/// Number of problem templates.
pub const TEMPLATES: u64 = 4;

/// Digit counts of each template's numbers (in the order the question states them) and of its step results. A
/// problem is redrawn until it has its template's shape, so every problem of a template puts its numbers at the
/// same token positions: a tiny model then learns to copy numbers (from the question into a call, from a tool
/// response into the next call) within a minute of training, instead of first having to discover
/// content-addressed copying. The numbers stay too large for the model to compute in its head.
const SHAPES: [(&[usize], &[usize]); TEMPLATES as usize] = [
    (&[3, 2, 2], &[5, 7]),
    (&[4, 2, 2, 4], &[4, 5, 4]),
    (&[3, 2, 2], &[5, 4]),
    (&[5, 2, 3, 4], &[4, 4, 4]),
];

fn digits(n: i64) -> usize {
    n.unsigned_abs().to_string().len()
}

/// The problem with `index` in `split`, before the disjointness filter.
fn raw_task(seed: u64, split: Split, index: u64) -> (Task, Vec<i64>) {
    let mut rng = SplitMix64::new(seed, split, index);
    let template = rng.next() % TEMPLATES;
    let id = format!("{}-{index}", split.name());
    let (inputs, results) = SHAPES[template as usize];
    loop {
        let (question, steps, numbers) = draw(&mut rng, template);
        let shape_holds = numbers[1..]
            .iter()
            .map(|&n| digits(n))
            .eq(inputs.iter().copied())
            && steps
                .iter()
                .map(|s| digits(s.result))
                .eq(results.iter().copied());
        if shape_holds {
            let answer = steps
                .last()
                .map(|s| s.result.to_string())
                .unwrap_or_default();
            return (
                Task {
                    id,
                    question,
                    steps,
                    answer,
                },
                numbers,
            );
        }
    }
}

/// One draw of `template`'s numbers: the question, the steps, and `[template, numbers...]`.
fn draw(rng: &mut SplitMix64, template: u64) -> (String, Vec<Step>, Vec<i64>) {
    match template {
        0 => {
            let (a, b, c) = (rng.range(120, 980), rng.range(12, 95), rng.range(13, 89));
            let r1 = a * b;
            let r2 = r1 * c;
            (
                format!(
                    "A factory makes {a} boxes a day for {b} days. Each box holds {c} bolts. How many bolts does it make in total?"
                ),
                vec![step(format!("{a}*{b}"), r1), step(format!("{r1}*{c}"), r2)],
                vec![template as i64, a, b, c],
            )
        }
        1 => {
            let (a, b, c) = (rng.range(1000, 9999), rng.range(12, 99), rng.range(24, 96));
            let r1 = b * c;
            let r2 = a + r1;
            let d = rng.range(100, r2 - 1);
            let r3 = r2 - d;
            (
                format!(
                    "A library has {a} books. It buys {b} crates of {c} books each, then gives away {d} books. How many books does it have now?"
                ),
                vec![
                    step(format!("{b}*{c}"), r1),
                    step(format!("{a}+{r1}"), r2),
                    step(format!("{r2}-{d}"), r3),
                ],
                vec![template as i64, a, b, c, d],
            )
        }
        2 => {
            let (a, b, c) = (rng.range(150, 999), rng.range(17, 89), rng.range(7, 43));
            let r1 = a * b;
            let r2 = r1 / c;
            (
                format!(
                    "{a} tickets are sold for {b} coins each. The coins are shared equally among {c} clubs, and the bank keeps any remainder. How many coins does each club get?"
                ),
                vec![step(format!("{a}*{b}"), r1), step(format!("{r1}//{c}"), r2)],
                vec![template as i64, a, b, c],
            )
        }
        _ => {
            let (b, c) = (rng.range(12, 48), rng.range(130, 870));
            let r1 = b * c;
            let a = r1 + rng.range(1000, 9000);
            let d = rng.range(200, 4000);
            let r2 = a - r1;
            let r3 = r2 + d;
            (
                format!(
                    "A tank holds {a} litres of water. Each of {b} pipes drains {c} litres, and then {d} litres are poured in. How many litres are in the tank now?"
                ),
                vec![
                    step(format!("{b}*{c}"), r1),
                    step(format!("{a}-{r1}"), r2),
                    step(format!("{r2}+{d}"), r3),
                ],
                vec![template as i64, a, b, c, d],
            )
        }
    }
}

/// The first `count` test problems of the family with `seed`.
pub fn test_tasks(seed: u64, count: usize) -> Vec<Task> {
    (0..count as u64)
        .map(|index| raw_task(seed, Split::Test, index).0)
        .collect()
}

/// The first `count` train problems whose numbers differ from every one of the first `test_count`
/// test problems.
pub fn train_tasks(seed: u64, count: usize, test_count: usize) -> Vec<Task> {
    let held_out: HashSet<Vec<i64>> = (0..test_count as u64)
        .map(|index| raw_task(seed, Split::Test, index).1)
        .collect();
    (0u64..)
        .map(|index| raw_task(seed, Split::Train, index))
        .filter(|(_, numbers)| !held_out.contains(numbers))
        .map(|(task, _)| task)
        .take(count)
        .collect()
}

/// Whether `predicted` (an extracted final answer) is exactly the task's answer.
pub fn is_correct(task: &Task, predicted: &str) -> bool {
    let cleaned: String = predicted
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect();
    cleaned == task.answer
}

/// The dataset row the trainer reads: `{"id", "question", "answer"}`.
pub fn dataset_row(task: &Task) -> serde_json::Value {
    serde_json::json!({ "id": task.id, "question": task.question, "answer": task.answer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_deterministic_and_seed_dependent() {
        assert_eq!(test_tasks(7, 20), test_tasks(7, 20));
        assert_ne!(test_tasks(7, 20), test_tasks(8, 20));
        assert_eq!(train_tasks(7, 30, 20), train_tasks(7, 30, 20));
    }

    #[test]
    fn steps_chain_and_answers_are_exact() {
        for task in train_tasks(1, 200, 50)
            .iter()
            .chain(test_tasks(1, 50).iter())
        {
            assert!(task.steps.len() >= 2, "{task:?}");
            for pair in task.steps.windows(2) {
                let previous = pair[0].result.to_string();
                assert!(
                    pair[1].expression.contains(&previous),
                    "step uses the previous result: {task:?}"
                );
            }
            for step in &task.steps {
                assert!(step.result > 0, "{task:?}");
                assert_eq!(evaluate(&step.expression), step.result, "{task:?}");
            }
            assert!(is_correct(task, &task.answer));
            assert!(!is_correct(task, &(task.steps[0].result + 1).to_string()));
        }
    }

    #[test]
    fn splits_are_disjoint_and_every_template_appears() {
        let test = test_tasks(3, 100);
        let train = train_tasks(3, 400, 100);
        let test_questions: HashSet<&str> = test.iter().map(|t| t.question.as_str()).collect();
        assert!(
            train
                .iter()
                .all(|t| !test_questions.contains(t.question.as_str()))
        );
        let openings: HashSet<&str> = train
            .iter()
            .map(|t| t.question.split(' ').nth(1).unwrap_or(""))
            .collect();
        assert!(openings.len() >= TEMPLATES as usize, "{openings:?}");
    }

    #[test]
    fn every_problem_of_a_template_has_the_same_shape() {
        let blank = |text: &str| -> String {
            text.chars()
                .map(|c| if c.is_ascii_digit() { '0' } else { c })
                .collect()
        };
        let mut shapes: std::collections::HashMap<String, (String, Vec<String>)> =
            std::collections::HashMap::new();
        for task in train_tasks(2, 300, 50)
            .iter()
            .chain(test_tasks(2, 50).iter())
        {
            let shape = (
                blank(&task.question),
                task.steps
                    .iter()
                    .map(|s| blank(&format!("{} = {}", s.expression, s.result)))
                    .collect::<Vec<_>>(),
            );
            let template = blank(task.question.split('.').next().unwrap_or(""))
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            let seen = shapes.entry(template).or_insert_with(|| shape.clone());
            assert_eq!(*seen, shape, "{task:?}");
        }
        assert_eq!(shapes.len(), TEMPLATES as usize, "{:?}", shapes.keys());
    }

    #[test]
    fn every_question_of_a_template_has_the_same_token_count() {
        let tasks = train_tasks(4, 400, 10);
        let questions: Vec<&str> = tasks.iter().map(|t| t.question.as_str()).collect();
        let tokenizer = sod_model::train_tiny_tokenizer(&questions, 600).unwrap();
        let mut lengths: std::collections::HashMap<String, usize> = Default::default();
        for task in &tasks {
            let words: String = task.question.split(' ').skip(1).take(2).collect();
            let n = tokenizer
                .encode(task.question.as_str(), false)
                .unwrap()
                .len();
            let seen = *lengths.entry(words.clone()).or_insert(n);
            assert_eq!(seen, n, "{words}: {}", task.question);
        }
    }

    /// An independent evaluator for the two-operand expressions the templates write.
    fn evaluate(expression: &str) -> i64 {
        for (op, f) in [
            ("//", (|a, b| a / b) as fn(i64, i64) -> i64),
            ("*", |a, b| a * b),
            ("+", |a, b| a + b),
            ("-", |a, b| a - b),
        ] {
            if let Some((left, right)) = expression.split_once(op) {
                let a: i64 = left.parse().expect("left operand");
                let b: i64 = right.parse().expect("right operand");
                return f(a, b);
            }
        }
        panic!("unexpected expression {expression}");
    }
}
