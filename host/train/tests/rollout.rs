//! Rollouts with the real calculator: scripted tool-using turns, malformed calls, determinism, and exact gradient
//! accumulation over micro-batches.

mod support;

use std::cell::RefCell;

use candle_core::Device;
use sod_loss_abi::{DivergenceKind, DivergenceSpec};
use sod_model::{
    ChatMessage, ChatTokenizer, FinishReason, Generation, Sampler, SamplingParams, SequenceKv,
    load_model_dir,
};
use sod_sandbox::{Limits, Sandbox, SandboxConfig};
use sod_train::rollout::{Policy, RolloutRequest, RolloutSettings, ToolBox, rollout};
use sod_train::teacher::{Teacher, score};
use sod_train::update::{
    DivergenceTerm, Params, PpoClip, UpdateBatch, grad_norm, policy_gradients,
};
use support::{Fixture, target_dir, tools_dir};

fn toolbox() -> ToolBox {
    let sandbox = Sandbox::new(SandboxConfig {
        tools_dir: Some(tools_dir()),
        cache_dir: Some(target_dir().join("test-cache")),
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    ToolBox::new(sandbox, &["calculator".to_string()], Limits::default()).expect("calculator")
}

fn settings() -> RolloutSettings {
    RolloutSettings {
        max_turns: 3,
        max_new_tokens_per_turn: 16,
        max_total_tokens: 1024,
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
        },
        seed: 5,
    }
}

fn request(id: &str, sample: u64) -> RolloutRequest {
    RolloutRequest {
        prompt_id: id.to_string(),
        sample_index: sample,
        group: 0,
        messages: vec![ChatMessage::user(format!("What is 6 * 7? ({id})"))],
        prompt_tokens: None,
    }
}

/// Plays fixed assistant turns, one per call, whatever the prompt.
struct Scripted {
    tokenizer: ChatTokenizer,
    turns: RefCell<Vec<String>>,
}

impl Scripted {
    fn new(tokenizer: ChatTokenizer, turns: &[&str]) -> Self {
        Scripted {
            tokenizer,
            turns: RefCell::new(turns.iter().map(|t| t.to_string()).collect()),
        }
    }
}

impl Policy for Scripted {
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        _states: &mut [SequenceKv],
        _max_new_tokens: usize,
        _stop: &[u32],
        _samplers: &mut [Sampler],
    ) -> sod_model::Result<Vec<Generation>> {
        let text = self.turns.borrow_mut().remove(0);
        let tokens = self.tokenizer.encode(&text)?;
        Ok(prompts
            .iter()
            .map(|_| Generation {
                logprobs: vec![-0.5; tokens.len()],
                sampling_logprobs: vec![-0.5; tokens.len()],
                tokens: tokens.clone(),
                finish: FinishReason::Stop,
            })
            .collect())
    }
}

#[test]
fn tool_calls_run_and_their_responses_are_masked() {
    let fx = Fixture::new();
    let tokenizer = ChatTokenizer::from_dir(&fx.path().join("student")).unwrap();
    let policy = Scripted::new(
        ChatTokenizer::from_dir(&fx.path().join("student")).unwrap(),
        &[
            "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"6*7\"}}</tool_call><|im_end|>",
            "The answer is \\boxed{42}.<|im_end|>",
        ],
    );
    let trajs = rollout(
        &policy,
        &tokenizer,
        &toolbox(),
        &settings(),
        &[request("q", 0)],
    )
    .unwrap();
    let t = &trajs[0];
    assert_eq!((t.turns, t.tool_calls, t.valid_tool_calls), (2, 1, 1));
    assert!(!t.truncated() && !t.infra_fault);
    assert!(t.final_text.contains("\\boxed{42}"));
    assert_eq!(t.mask.len(), t.response_tokens().len());
    assert_eq!(t.behaviour_logprobs.len(), t.mask.len());
    // The tokens the student did not generate are exactly the tool response and the next assistant header.
    let unmasked: Vec<u32> = t
        .response_tokens()
        .iter()
        .zip(&t.mask)
        .filter(|(_, m)| **m == 0)
        .map(|(id, _)| *id)
        .collect();
    let tool_text = tokenizer.decode(&unmasked, false).unwrap();
    assert!(
        tool_text.contains("<tool_response>\n42\n</tool_response>"),
        "{tool_text:?}"
    );
    assert!(
        tool_text.ends_with("<|im_start|>assistant\n"),
        "{tool_text:?}"
    );
    assert!(
        t.behaviour_logprobs
            .iter()
            .zip(&t.mask)
            .all(|(&lp, &m)| (m == 1) == (lp != 0.0))
    );
    assert_eq!(sod_train::reward::math_reward(&t.final_text, "42"), 1.0);
}

#[test]
fn malformed_and_unknown_calls_are_answered_not_fatal() {
    let tb = toolbox();
    let turn = "<think>hm</think><tool_call>{\"name\": \"calculator\", \"arguments\": </tool_call>\
                <tool_call>{\"name\": \"shell\", \"arguments\": {}}</tool_call>\
                <tool_call>{\"name\": \"calculator\", \"arguments\": {\"expr\": \"1\"}}</tool_call>\
                <tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2^10\"}}</tool_call>";
    let r = tb.respond(turn, "p/0/0");
    assert_eq!(r.calls, 4);
    assert_eq!(r.valid_calls, 1, "{r:?}");
    assert!(!r.infra_fault);
    assert!(
        r.responses[0].starts_with("error: "),
        "{:?}",
        r.responses[0]
    );
    assert!(
        r.responses[1].contains("no tool named \"shell\"") && r.responses[1].contains("calculator")
    );
    assert!(
        r.responses[2].starts_with("Error: "),
        "{:?}",
        r.responses[2]
    );
    assert_eq!(r.responses[3].trim(), "1024");

    // Through a rollout: a malformed call gets the parser's message as the tool response, and the
    // tool-calling last turn (max_turns reached) is marked truncated.
    let fx = Fixture::new();
    let tokenizer = ChatTokenizer::from_dir(&fx.path().join("student")).unwrap();
    let policy = Scripted::new(
        ChatTokenizer::from_dir(&fx.path().join("student")).unwrap(),
        &[
            "<tool_call>{oops</tool_call><|im_end|>",
            "<tool_call>{\"name\": \"calculator\"}</tool_call><|im_end|>",
        ],
    );
    let short = RolloutSettings {
        max_turns: 2,
        ..settings()
    };
    let t = &rollout(&policy, &tokenizer, &tb, &short, &[request("q", 0)]).unwrap()[0];
    let text = tokenizer.decode(t.response_tokens(), false).unwrap();
    assert!(text.contains("<tool_response>\nerror: "), "{text}");
    assert!(t.truncated());
    assert_eq!((t.tool_calls, t.valid_tool_calls), (2, 0));
}

/// With Qwen3's own tokenizer and chat template, a scripted tool-using rollout (the real calculator answering) has
/// exactly the token ids transformers' `apply_chat_template` gives the finished conversation (fixture
/// `agent_conversation_sft`, but its final newline, which comes after the last generated `<|im_end|>`): the newline
/// after each `<|im_end|>`, the tool responses' user turns, and no think block where Qwen3's template drops it.
#[test]
fn rollouts_with_qwen3s_template_are_laid_out_as_transformers_renders() {
    let case = support::qwen3_rendering("agent_conversation_sft");
    let text = case["text"].as_str().unwrap();
    let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
    let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
    // What the model generated: each assistant turn after its header, through <|im_end|>.
    const HEADER: &str = "<|im_start|>assistant\n";
    let mut turns = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(HEADER) {
        let body = &rest[i + HEADER.len()..];
        let end = body.find("<|im_end|>").unwrap() + "<|im_end|>".len();
        turns.push(&body[..end]);
        rest = &body[end..];
    }
    assert_eq!(turns.len(), 3);
    let tokenizer = support::qwen3_tokenizer();
    let policy = Scripted::new(support::qwen3_tokenizer(), &turns);
    let prompt_end = text.find(HEADER).unwrap() + HEADER.len();
    let request = RolloutRequest {
        prompt_id: "agent".into(),
        sample_index: 0,
        group: 0,
        messages: messages[..2].to_vec(),
        prompt_tokens: Some(tokenizer.encode(&text[..prompt_end]).unwrap()),
    };
    let long = RolloutSettings {
        max_turns: 4,
        max_new_tokens_per_turn: 256,
        ..settings()
    };
    let t = &rollout(&policy, &tokenizer, &toolbox(), &long, &[request]).unwrap()[0];
    assert_eq!((t.turns, t.tool_calls, t.valid_tool_calls), (3, 2, 2));
    assert_eq!(
        tokenizer.decode(&ids[ids.len() - 1..], false).unwrap(),
        "\n"
    );
    assert_eq!(
        t.tokens,
        ids[..ids.len() - 1],
        "rollout:  {:?}\nfixture: {:?}",
        tokenizer.decode(&t.tokens, false).unwrap(),
        &text[..text.len() - 1]
    );
    // The generated tokens (mask 1) are the turns, nothing else.
    let generated: Vec<u32> = t
        .response_tokens()
        .iter()
        .zip(&t.mask)
        .filter(|(_, m)| **m == 1)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(tokenizer.decode(&generated, false).unwrap(), turns.concat());
}

/// With `enable_thinking = false` as the tokenizer's template kwargs (run.toml's `chat_template_kwargs`), prompts
/// render as transformers renders them with that keyword (fixture `no_thinking_generation_prompt`), and a Qwen3
/// rollout opens every turn, the one after a tool response too, with the empty think block.
#[test]
fn qwen3_rollouts_without_thinking_open_every_turn_with_the_empty_think_block() {
    let no_thinking = || {
        let mut kwargs = serde_json::Map::new();
        kwargs.insert("enable_thinking".into(), false.into());
        support::qwen3_tokenizer().with_template_kwargs(kwargs)
    };
    let tokenizer = no_thinking();
    let case = support::qwen3_rendering("no_thinking_generation_prompt");
    let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
    let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
    assert_eq!(tokenizer.encode_chat(&messages, &[], true).unwrap(), ids);

    let policy = Scripted::new(
        no_thinking(),
        &[
            "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"6*7\"}}\n</tool_call><|im_end|>",
            "The answer is \\boxed{42}.<|im_end|>",
        ],
    );
    let long = RolloutSettings {
        max_new_tokens_per_turn: 64,
        ..settings()
    };
    let t = &rollout(&policy, &tokenizer, &toolbox(), &long, &[request("q", 0)]).unwrap()[0];
    assert_eq!((t.turns, t.valid_tool_calls), (2, 1));
    let text = tokenizer.decode(&t.tokens, false).unwrap();
    let opened = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    assert_eq!(text.matches(opened).count(), 2, "{text}");
    assert!(
        text.contains(
            "</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nThe answer"
        ),
        "{text}"
    );
}

/// Supervised fine-tuning and rollouts lay a tool conversation out alike (sod's built-in template, the demo's): a
/// scripted rollout that generates the assistant turns of a conversation, the real calculator answering, has the
/// tokens `tokenize_conversation` trains on, but the newline after the last `<|im_end|>`.
#[test]
fn rollouts_have_the_tokens_sft_trains_on() {
    use sod_model::ToolCall;
    use sod_train::sft::tokenize_conversation;
    let fx = Fixture::new();
    let tokenizer = ChatTokenizer::from_dir(&fx.path().join("student")).unwrap();
    let tb = toolbox();
    let call = |expression: &str| {
        ChatMessage::assistant_with_tool_calls(
            "Let me compute.",
            vec![ToolCall {
                name: "calculator".into(),
                arguments: serde_json::json!({ "expression": expression }),
            }],
        )
    };
    let conversation = vec![
        ChatMessage::user("What is 6 * 7 + 1? (q)"),
        call("6*7"),
        ChatMessage::tool("42"),
        call("42+1"),
        ChatMessage::tool("43"),
        ChatMessage::assistant("The answer is \\boxed{43}."),
    ];
    let example = tokenize_conversation(&tokenizer, "q", &conversation, tb.schemas()).unwrap();
    // The trained runs of tokens are the turns the model generates.
    let mut turns = Vec::new();
    let mut run: Vec<u32> = Vec::new();
    for (&id, &m) in example.tokens[example.prompt_len..]
        .iter()
        .zip(&example.mask)
    {
        if m == 1 {
            run.push(id);
        } else if !run.is_empty() {
            turns.push(tokenizer.decode(&std::mem::take(&mut run), false).unwrap());
        }
    }
    assert_eq!(turns.len(), 3, "{turns:?}");
    let turns: Vec<&str> = turns.iter().map(String::as_str).collect();
    let policy = Scripted::new(
        ChatTokenizer::from_dir(&fx.path().join("student")).unwrap(),
        &turns,
    );
    let request = RolloutRequest {
        messages: conversation[..1].to_vec(),
        ..request("q", 0)
    };
    let long = RolloutSettings {
        max_new_tokens_per_turn: 64,
        ..settings()
    };
    let t = &rollout(&policy, &tokenizer, &tb, &long, &[request]).unwrap()[0];
    assert_eq!((t.turns, t.valid_tool_calls), (3, 2));
    assert_eq!(t.prompt_len, example.prompt_len);
    assert_eq!(
        t.tokens,
        example.tokens[..example.tokens.len() - 1],
        "rollout: {:?}\nsft:     {:?}",
        tokenizer.decode(&t.tokens, false).unwrap(),
        tokenizer.decode(&example.tokens, false).unwrap()
    );
    assert_eq!(t.mask, example.mask[..example.mask.len() - 1]);
}

#[test]
fn rollouts_are_seeded_per_trajectory_not_per_batch() {
    let fx = Fixture::new();
    let dir = fx.path().join("student");
    let tokenizer = ChatTokenizer::from_dir(&dir).unwrap();
    let model = load_model_dir(&dir, &Device::Cpu).unwrap();
    let tb = toolbox();
    let requests = [request("a", 0), request("a", 1), request("b", 0)];
    let all = rollout(&model.model, &tokenizer, &tb, &settings(), &requests).unwrap();
    let again = rollout(&model.model, &tokenizer, &tb, &settings(), &requests).unwrap();
    assert_eq!(all, again);
    // Alone, or in another order, each trajectory is the same.
    let alone = rollout(&model.model, &tokenizer, &tb, &settings(), &requests[2..]).unwrap();
    assert_eq!(alone[0].tokens, all[2].tokens);
    let reversed: Vec<RolloutRequest> = requests.iter().rev().cloned().collect();
    let rev = rollout(&model.model, &tokenizer, &tb, &settings(), &reversed).unwrap();
    assert_eq!(rev[0].tokens, all[2].tokens);
    assert_eq!(rev[2].tokens, all[0].tokens);
    // Different samples of one prompt differ.
    assert_ne!(all[0].tokens, all[1].tokens);
}

#[test]
fn micro_batches_accumulate_to_the_full_batch_gradient() {
    // The PPO term at temperature 0.7 and a full-distribution JSD term to a teacher at temperature 1: one pass over the whole
    // batch with the default logit chunks equals one trajectory per pass with chunks of 3 rows.
    let fx = Fixture::new();
    let dir = fx.path().join("student");
    let tokenizer = ChatTokenizer::from_dir(&dir).unwrap();
    let model = load_model_dir(&dir, &Device::Cpu).unwrap();
    let teacher = Teacher::load(
        &fx.path().join("teacher"),
        &Device::Cpu,
        &model.model,
        &tokenizer,
    )
    .unwrap();
    let requests = [
        request("a", 0),
        request("a", 1),
        request("b", 0),
        request("c", 3),
    ];
    let trajs = rollout(&model.model, &tokenizer, &toolbox(), &settings(), &requests).unwrap();
    // Advantages of both signs, varying per token, so that some tokens are clipped on either side.
    let advantages: Vec<Vec<f32>> = trajs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (0..t.mask.len())
                .map(|j| ((i + j) as f32 * 0.7).sin())
                .collect()
        })
        .collect();
    let weights: Vec<Vec<f32>> = trajs
        .iter()
        .map(|t| {
            t.mask
                .iter()
                .enumerate()
                .map(|(j, &m)| f32::from(m) * (1.0 + j as f32 * 0.1))
                .collect()
        })
        .collect();
    let spec = DivergenceSpec {
        kind: DivergenceKind::Jsd { beta: 0.3 },
        top_k: 0,
    };
    let scores = score(
        &model.model,
        Some(&teacher),
        &trajs,
        2,
        0.7,
        Some((&spec, 1.0)),
        None,
    )
    .unwrap();
    let params = Params::from_varmap(&model.varmap).unwrap();
    let clip = PpoClip {
        low: 0.2,
        high: 0.28,
    };
    let episodes = sod_train::episode::Episode::with_behaviour_logprobs(&trajs);
    let batch = |micro: usize, chunk_elements: usize, gradient_checkpointing: bool| UpdateBatch {
        divergence: Some(DivergenceTerm {
            spec,
            weights: &weights,
            teacher: teacher.model(),
            teacher_rows: scores.teacher_rows.as_ref().unwrap(),
            temperature: 1.0,
        }),
        temperature: 0.7,
        chunk_elements,
        gradient_checkpointing,
        ..UpdateBatch::ppo(&episodes, &advantages, clip, micro)
    };
    let vocab = model.model.config().vocab_size;
    let (whole, s_whole) =
        policy_gradients(&model.model, &params, &batch(4, 1 << 22, false)).unwrap();
    let (parts, s_parts) =
        policy_gradients(&model.model, &params, &batch(1, 3 * vocab, false)).unwrap();
    // Activation checkpointing (the layers recomputed one at a time in the backward pass) gives the same gradient.
    let (recomputed, s_recomputed) =
        policy_gradients(&model.model, &params, &batch(2, 1 << 22, true)).unwrap();
    assert!((s_whole.loss - s_recomputed.loss).abs() < 1e-6);
    assert!(s_whole.divergence_term > 0.0);
    assert!(
        (s_whole.divergence_term - s_parts.divergence_term).abs() < 1e-6,
        "{s_whole:?} vs {s_parts:?}"
    );
    assert!(grad_norm(&whole).unwrap() > 0.0);
    assert!(
        (s_whole.loss - s_parts.loss).abs() < 1e-6,
        "{s_whole:?} vs {s_parts:?}"
    );
    assert_eq!(s_whole.tokens, s_parts.tokens);
    for (a, b) in whole
        .iter()
        .zip(&parts)
        .chain(whole.iter().zip(&recomputed))
    {
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        let scale = a
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff <= 1e-4 * scale.max(1e-3),
            "gradient differs by {diff} (scale {scale})"
        );
    }
}

#[test]
fn sampler_and_trainer_agree_on_log_probs_at_temperature_0_7() {
    // Tokens drawn at T = 0.7: the sampler's behaviour log-probs (KV cache, one token at a time) and the
    // trainer's recomputation (one forward over the whole trajectory) are both those of softmax(z / 0.7).
    let fx = Fixture::new();
    let dir = fx.path().join("student");
    let tokenizer = ChatTokenizer::from_dir(&dir).unwrap();
    let model = load_model_dir(&dir, &Device::Cpu).unwrap();
    let warm = RolloutSettings {
        sampling: SamplingParams {
            temperature: 0.7,
            top_p: 1.0,
        },
        ..settings()
    };
    let requests = [request("a", 0), request("b", 1)];
    let trajs = rollout(&model.model, &tokenizer, &toolbox(), &warm, &requests).unwrap();
    let scores = score(&model.model, None, &trajs, 2, 0.7, None, None).unwrap();
    let mut compared = 0;
    for (t, current) in trajs.iter().zip(&scores.current) {
        for (j, &m) in t.mask.iter().enumerate() {
            if m == 1 {
                let (b, c) = (t.behaviour_logprobs[j], current[j]);
                assert!((b - c).abs() < 2e-3, "token {j}: sampler {b}, trainer {c}");
                compared += 1;
            }
        }
    }
    assert!(compared > 10, "{compared}");
}
