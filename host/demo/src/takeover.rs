//! How reliable a teacher is where on-policy distillation asks it to be: on the student's own prefixes.
//!
//! The cold-start student is sampled at the training temperature on the test problems. Each trajectory is cut
//! after its first step whose calculator result is not the intended step's (an *off-track* prefix: a miscopied
//! number, a wrong operation, an invalid call), and, separately, after its first step when that step is right (an
//! *on-track* prefix). A teacher then continues each prefix greedily with the real calculator, from the student's
//! own tokens (as it scores them in training); its take-over success is the fraction it finishes with the right
//! answer.
//!
//! The same pass records how the student's samples at the training temperature end (the finish causes): a fair
//! cold start ends nearly all of its turns within the budget.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sod_model::{ChatMessage, ChatTokenizer, Qwen3};
use sod_train::rollout::{RolloutRequest, RolloutSettings, ToolBox, Trajectory};

use super::gold::{self, Calculator, recovery_conversation};
use super::tasks::Task;

/// The student's turns of one trajectory: each one's range in the response tokens (through its `<|im_end|>`) and
/// its text as decoded (without `<|im_end|>`), in order.
fn turns(
    tokenizer: &ChatTokenizer,
    t: &Trajectory,
) -> anyhow::Result<Vec<(std::ops::Range<usize>, String)>> {
    let response = t.response_tokens();
    let mut turns = Vec::new();
    let mut start = None;
    for (i, &m) in t
        .mask
        .iter()
        .enumerate()
        .chain(std::iter::once((t.mask.len(), &0)))
    {
        match (m, start) {
            (1, None) => start = Some(i),
            (0, Some(s)) => {
                let text = tokenizer.decode(&response[s..i], false)?;
                let text = text
                    .find("<|im_end|>")
                    .map_or(text.as_str(), |e| &text[..e])
                    .to_string();
                turns.push((s..i, text));
                start = None;
            }
            _ => {}
        }
    }
    Ok(turns)
}

/// Where a prefix comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrefixKind {
    /// The student's, cut after its first step when that step is right.
    OnTrack,
    /// The student's, cut after its first wrong step.
    OffTrack,
    /// Gold up to a step whose call has one miscopied digit (as in the recovery teacher's training data, on a test
    /// problem), cut after the calculator's answer to it.
    Perturbed,
}

/// A prefix for a teacher to continue.
#[derive(Debug, Clone)]
pub struct Prefix {
    /// Index of the test problem.
    pub task: usize,
    /// Where it comes from.
    pub kind: PrefixKind,
    /// The conversation up to and including the calculator's response to the prefix's last step.
    pub messages: Vec<ChatMessage>,
    /// The student's tokens of that conversation, through the next assistant header: what the teacher continues.
    pub tokens: Vec<u32>,
}

/// The prefixes of one student trajectory: the first off-track one, and the on-track one after a right first step.
/// A prefix needs the student's next turn to have begun (its tokens end with that turn's header).
pub fn prefixes(
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    task_index: usize,
    task: &Task,
    t: &Trajectory,
) -> anyhow::Result<Vec<Prefix>> {
    let mut messages = gold::prompt(task);
    let turns = turns(tokenizer, t)?;
    let mut out = Vec::new();
    for (k, (_, text)) in turns.iter().enumerate() {
        // The call key the rollout used, so that a stateful or seeded tool would answer the same.
        let responses = toolbox.respond(text, &format!("{}/{}/{k}", t.prompt_id, t.sample_index));
        let Some((next, _)) = turns.get(k + 1) else {
            break;
        };
        if responses.calls == 0 || k >= task.steps.len() {
            // The final answer (or a turn past the intended steps): nothing left to take over.
            break;
        }
        let right = responses.valid_calls == 1
            && responses.responses.len() == 1
            && responses.responses[0].trim() == task.steps[k].result.to_string();
        messages.push(ChatMessage::assistant(text.clone()));
        messages.extend(responses.responses.into_iter().map(ChatMessage::tool));
        let tokens = t.tokens[..t.prompt_len + next.start].to_vec();
        if !right {
            out.push(Prefix {
                task: task_index,
                kind: PrefixKind::OffTrack,
                messages,
                tokens,
            });
            break;
        }
        if k == 0 {
            out.push(Prefix {
                task: task_index,
                kind: PrefixKind::OnTrack,
                messages: messages.clone(),
                tokens,
            });
        }
    }
    Ok(out)
}

/// Take-over success of one teacher.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TakeOver {
    /// Off-track prefixes, and those the teacher finished right.
    pub off_track: usize,
    /// Of `off_track`, solved.
    pub off_track_solved: usize,
    /// On-track prefixes, and those the teacher finished right.
    pub on_track: usize,
    /// Of `on_track`, solved.
    pub on_track_solved: usize,
    /// Perturbed prefixes (one per test problem).
    pub perturbed: usize,
    /// Of `perturbed`, solved.
    pub perturbed_solved: usize,
}

/// One perturbed prefix per task ([`PrefixKind::Perturbed`]), in the token layout of rollouts and SFT.
pub fn perturbed_prefixes(
    calculator: &Calculator<'_>,
    tokenizer: &ChatTokenizer,
    tasks: &[Task],
) -> anyhow::Result<Vec<Prefix>> {
    let mut out = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let conversation = recovery_conversation(calculator, task)?;
        let Some(slip) = conversation.iter().position(|m| m.weight == Some(0)) else {
            continue;
        };
        let messages = conversation[..slip + 2].to_vec();
        // Laid out as a rollout lays it out (and SFT, which renders whole conversations the same way with this
        // prefix-stable template): the conversation with the next assistant header.
        let tokens = tokenizer.encode_chat(&messages, &[], true)?;
        out.push(Prefix {
            task: i,
            kind: PrefixKind::Perturbed,
            messages,
            tokens,
        });
    }
    Ok(out)
}

/// The student's samples at the training temperature: how they ended, over all samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledStart {
    /// Samples (one per test problem).
    pub samples: usize,
    /// Fraction per finish cause (`answered`, `turn_tokens`, ...).
    pub finish: BTreeMap<String, f64>,
    /// Fraction answered right.
    pub accuracy: f64,
}

/// Samples the student once per task at `settings`' temperature; returns the trajectories and how they ended.
pub fn sample_student(
    student: &Qwen3,
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    settings: &RolloutSettings,
    tasks: &[Task],
) -> anyhow::Result<(Vec<Trajectory>, SampledStart)> {
    let requests = gold::requests(tasks, "takeover/");
    let trajectories =
        sod_train::rollout::rollout_chunked(student, tokenizer, toolbox, settings, &requests, 32)?;
    let n = trajectories.len().max(1) as f64;
    let mut finish = BTreeMap::new();
    for t in &trajectories {
        *finish.entry(t.finish.name().to_string()).or_insert(0.0) += 1.0 / n;
    }
    let accuracy = tasks
        .iter()
        .zip(&trajectories)
        .filter(|(task, t)| gold::solved(task, t).0)
        .count() as f64
        / n;
    Ok((
        trajectories,
        SampledStart {
            samples: tasks.len(),
            finish,
            accuracy,
        },
    ))
}

/// One take-over as it went (a line of `eval/takeover-<teacher>.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TakenOver {
    /// Task id.
    pub id: String,
    /// Where the prefix comes from.
    pub kind: PrefixKind,
    /// Whether the teacher finished it with the right answer.
    pub solved: bool,
    /// The student's prefix after the prompt (its turns and the calculator's responses).
    pub prefix: Vec<ChatMessage>,
    /// The teacher's continuation, as generated (its turns and the calculator's responses).
    pub continuation: String,
}

/// Lets `teacher` continue every prefix greedily (`settings` at temperature 0) and counts its successes; also
/// returns each take-over.
pub fn take_over(
    teacher: &Qwen3,
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    settings: &RolloutSettings,
    tasks: &[Task],
    prefixes: &[Prefix],
) -> anyhow::Result<(TakeOver, Vec<TakenOver>)> {
    let requests: Vec<RolloutRequest> = prefixes
        .iter()
        .enumerate()
        .map(|(i, p)| RolloutRequest {
            prompt_id: format!("takeover/{}/{:?}", tasks[p.task].id, p.kind),
            sample_index: 0,
            group: i as u32,
            messages: p.messages.clone(),
            prompt_tokens: Some(p.tokens.clone()),
        })
        .collect();
    let continued =
        sod_train::rollout::rollout_chunked(teacher, tokenizer, toolbox, settings, &requests, 32)?;
    let mut out = TakeOver {
        off_track: 0,
        off_track_solved: 0,
        on_track: 0,
        on_track_solved: 0,
        perturbed: 0,
        perturbed_solved: 0,
    };
    let mut each = Vec::with_capacity(prefixes.len());
    for (p, t) in prefixes.iter().zip(&continued) {
        let (solved, _) = gold::solved(&tasks[p.task], t);
        each.push(TakenOver {
            id: tasks[p.task].id.clone(),
            kind: p.kind,
            solved,
            prefix: p.messages[2..].to_vec(),
            continuation: tokenizer.decode(t.response_tokens(), false)?,
        });
        let ok = usize::from(solved);
        let (all, solved) = match p.kind {
            PrefixKind::OffTrack => (&mut out.off_track, &mut out.off_track_solved),
            PrefixKind::OnTrack => (&mut out.on_track, &mut out.on_track_solved),
            PrefixKind::Perturbed => (&mut out.perturbed, &mut out.perturbed_solved),
        };
        *all += 1;
        *solved += ok;
    }
    Ok((out, each))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Step;
    use sod_sandbox::{Limits, Sandbox, SandboxConfig};

    fn call(expression: &str) -> String {
        format!(
            "<tool_call>\n{{\"name\": \"calculator\", \"arguments\": {{\"expression\": \"{expression}\"}}}}\n</tool_call>"
        )
    }

    /// A trajectory whose generated turns are `turns` (each followed by <|im_end|>), separated by untrained glue.
    fn trajectory(tokenizer: &ChatTokenizer, turns: &[String]) -> Trajectory {
        let im_end = tokenizer.token_id("<|im_end|>").unwrap();
        let mut tokens = tokenizer.encode("prompt").unwrap();
        let prompt_len = tokens.len();
        let mut mask = Vec::new();
        for (k, turn) in turns.iter().enumerate() {
            if k > 0 {
                let glue = tokenizer
                    .encode("\n<tool_response>\nanything\n</tool_response>\n")
                    .unwrap();
                mask.extend(std::iter::repeat_n(0u8, glue.len()));
                tokens.extend(glue);
            }
            let ids = tokenizer.encode(turn).unwrap();
            mask.extend(std::iter::repeat_n(1u8, ids.len() + 1));
            tokens.extend(ids);
            tokens.push(im_end);
        }
        Trajectory {
            turns: turns.len(),
            ..Trajectory::offline("p".into(), tokens, prompt_len, mask)
        }
    }

    #[test]
    fn prefixes_cut_after_the_first_wrong_step_and_after_a_right_first_step() {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
            });
        let sandbox = Sandbox::new(SandboxConfig {
            tools_dir: Some(target.join("tools")),
            ..SandboxConfig::default()
        })
        .expect("sandbox (build the tools first: cargo xtask build-tools)");
        let toolbox = ToolBox::new(
            sandbox.clone(),
            &["calculator".to_string()],
            Limits::default(),
        )
        .unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/qwen3-tokenizer");
        let tokenizer = ChatTokenizer::from_files(&dir.join("tokenizer.json"), None).unwrap();
        let task = Task {
            id: "t".into(),
            question: "12 boxes of 3, then 5 more?".into(),
            steps: vec![
                Step {
                    expression: "12*3".into(),
                    result: 36,
                },
                Step {
                    expression: "36+5".into(),
                    result: 41,
                },
            ],
            answer: "41".into(),
        };
        let answer = "The answer is \\boxed{41}.".to_string();
        // Right, then a miscopied previous result: on-track after step 1, off-track after step 2.
        let t = trajectory(&tokenizer, &[call("12*3"), call("63+5"), answer.clone()]);
        let p = prefixes(&tokenizer, &toolbox, 7, &task, &t).unwrap();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].kind == PrefixKind::OnTrack && p[1].kind == PrefixKind::OffTrack);
        assert_eq!((p[0].task, p[1].task), (7, 7));
        assert_eq!(p[0].messages.len(), 4);
        assert_eq!(p[1].messages.len(), 6);
        assert_eq!(
            p[1].messages[4].content,
            call("63+5"),
            "the student's turn verbatim"
        );
        assert_eq!(
            p[1].messages[5].content.trim(),
            "68",
            "the calculator's real answer"
        );
        // The student's own tokens, through the header of its next turn.
        let third_turn = t.tokens.len() - tokenizer.encode(&answer).unwrap().len() - 1;
        assert_eq!(p[1].tokens, t.tokens[..third_turn]);
        assert!(p[0].tokens.len() < p[1].tokens.len() && p[1].tokens.starts_with(&p[0].tokens));
        // A wrong first step: only the off-track prefix.
        let t = trajectory(&tokenizer, &[call("13*3"), call("39+5"), answer.clone()]);
        let p = prefixes(&tokenizer, &toolbox, 0, &task, &t).unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].kind == PrefixKind::OffTrack && p[0].messages.len() == 4);
        // All right, or an answer without calls: no off-track prefix.
        let t = trajectory(&tokenizer, &[call("12*3"), call("36+5"), answer.clone()]);
        let p = prefixes(&tokenizer, &toolbox, 0, &task, &t).unwrap();
        assert_eq!(
            p.iter().filter(|p| p.kind == PrefixKind::OffTrack).count(),
            0
        );
        assert_eq!(p.len(), 1);
        let t = trajectory(&tokenizer, &[answer]);
        assert!(
            prefixes(&tokenizer, &toolbox, 0, &task, &t)
                .unwrap()
                .is_empty()
        );

        // A perturbed gold prefix: gold up to the slip and the calculator's answer to it, ending with the next
        // turn's header, in the layout SFT trained the teachers on.
        let calculator = Calculator::new(&sandbox).unwrap();
        let p = perturbed_prefixes(&calculator, &tokenizer, std::slice::from_ref(&task)).unwrap();
        assert_eq!(p.len(), 1);
        let p = &p[0];
        assert_eq!(p.kind, PrefixKind::Perturbed);
        let slip = &p.messages[p.messages.len() - 2];
        assert_eq!(slip.weight, Some(0), "{:?}", p.messages);
        assert_eq!(p.messages.last().unwrap().role, sod_model::Role::Tool);
        let text = tokenizer.decode(&p.tokens, false).unwrap();
        assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
        let expression = slip.tool_calls[0].arguments["expression"].as_str().unwrap();
        assert!(text.contains(expression), "{text}");
    }
}
