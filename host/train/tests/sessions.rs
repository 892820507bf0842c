//! Stateful tools across a trajectory's turns, with the real python tool: one sandbox session per trajectory,
//! the trajectory id injected as the `session` argument, every session released when the trajectory ends.

mod support;

use std::cell::RefCell;

use sod_model::{
    ChatMessage, ChatTokenizer, FinishReason, Generation, Sampler, SamplingParams, SequenceKv,
};
use sod_sandbox::{Limits, Sandbox, SandboxConfig};
use sod_train::rollout::{Policy, RolloutRequest, RolloutSettings, ToolBox, rollout, session_id};
use support::{Fixture, target_dir, tools_dir};

/// A sandbox with the built tools and the tests' compile cache (the first load of python compiles it).
fn sandbox() -> Sandbox {
    let dir = tools_dir();
    assert!(
        dir.join("python.wasm").is_file(),
        "{} is missing: build the tools first with `cargo xtask build-tools`",
        dir.join("python.wasm").display()
    );
    Sandbox::new(SandboxConfig {
        tools_dir: Some(dir),
        cache_dir: Some(target_dir().join("test-cache")),
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn toolbox(sandbox: &Sandbox) -> ToolBox {
    ToolBox::new(
        sandbox.clone(),
        &["calculator".to_string(), "python".to_string()],
        Limits::default(),
    )
    .expect("tools")
}

fn python_call(arguments: serde_json::Value) -> String {
    format!(
        "<tool_call>{}</tool_call>",
        serde_json::json!({"name": "python", "arguments": arguments})
    )
}

fn settings(max_turns: usize) -> RolloutSettings {
    RolloutSettings {
        max_turns,
        max_new_tokens_per_turn: 64,
        max_total_tokens: 4096,
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
        },
        seed: 3,
    }
}

fn request(sample: u64) -> RolloutRequest {
    RolloutRequest {
        prompt_id: "q".to_string(),
        sample_index: sample,
        group: 0,
        messages: vec![ChatMessage::user("What is 41 + 1?")],
        prompt_tokens: None,
    }
}

/// Plays fixed assistant turns (the same for every prompt), records the sandbox's live sessions when each turn
/// is asked for, and answers turn `fail_at` (if any) with no generations, which fails the rollout.
struct Scripted {
    tokenizer: ChatTokenizer,
    turns: RefCell<Vec<String>>,
    sandbox: Sandbox,
    sessions_seen: RefCell<Vec<usize>>,
    fail_at: Option<usize>,
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
        let turn = self.sessions_seen.borrow().len();
        self.sessions_seen
            .borrow_mut()
            .push(self.sandbox.session_count());
        if self.fail_at == Some(turn) {
            return Ok(Vec::new());
        }
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

impl Scripted {
    fn new(fx: &Fixture, sandbox: &Sandbox, turns: Vec<String>, fail_at: Option<usize>) -> Self {
        Scripted {
            tokenizer: ChatTokenizer::from_dir(&fx.path().join("student")).unwrap(),
            turns: RefCell::new(turns),
            sandbox: sandbox.clone(),
            sessions_seen: RefCell::new(Vec::new()),
            fail_at,
        }
    }
}

/// The tool responses of a trajectory, decoded.
fn tool_text(tokenizer: &ChatTokenizer, t: &sod_train::rollout::Trajectory) -> String {
    let unmasked: Vec<u32> = t
        .response_tokens()
        .iter()
        .zip(&t.mask)
        .filter(|(_, m)| **m == 0)
        .map(|(id, _)| *id)
        .collect();
    tokenizer.decode(&unmasked, false).unwrap()
}

#[test]
fn python_state_lives_across_turns_in_one_session_per_trajectory() {
    let fx = Fixture::new();
    let tokenizer = ChatTokenizer::from_dir(&fx.path().join("student")).unwrap();
    let sandbox = sandbox();
    let tb = toolbox(&sandbox);
    // Turn 1 adds 1 to x (41 when x is new): two trajectories sharing a namespace would print 43 in one of them.
    let turns = vec![
        python_call(serde_json::json!({"code": "x = globals().get('x', 40) + 1"})) + "<|im_end|>",
        python_call(serde_json::json!({"code": "print(x + 1)"})) + "<|im_end|>",
        "The answer is \\boxed{42}.<|im_end|>".to_string(),
    ];
    let policy = Scripted::new(&fx, &sandbox, turns, None);
    let trajs = rollout(
        &policy,
        &tokenizer,
        &tb,
        &settings(4),
        &[request(0), request(1)],
    )
    .unwrap();
    for t in &trajs {
        assert_eq!((t.turns, t.tool_calls, t.valid_tool_calls), (3, 2, 2));
        assert!(!t.truncated() && !t.infra_fault);
        let text = tool_text(&tokenizer, t);
        assert!(text.contains("<tool_response>\n42\n"), "{text:?}");
        assert!(!text.contains("43") && !text.contains("Error"), "{text:?}");
    }
    // One python session per trajectory while they ran, none once they ended.
    assert_eq!(*policy.sessions_seen.borrow(), [0, 2, 2]);
    assert_eq!(sandbox.session_count(), 0);
}

#[test]
fn sessions_are_released_on_truncation_and_on_errors() {
    let fx = Fixture::new();
    let tokenizer = ChatTokenizer::from_dir(&fx.path().join("student")).unwrap();
    let sandbox = sandbox();
    let tb = toolbox(&sandbox);
    let call = python_call(serde_json::json!({"code": "y = 1"})) + "<|im_end|>";

    // Tool calls on the last allowed turn: truncated.
    let policy = Scripted::new(&fx, &sandbox, vec![call.clone(), call.clone()], None);
    let t = &rollout(&policy, &tokenizer, &tb, &settings(2), &[request(0)]).unwrap()[0];
    assert!(t.truncated());
    assert_eq!(*policy.sessions_seen.borrow(), [0, 1]);
    assert_eq!(sandbox.session_count(), 0);

    // The policy fails on the second turn, after a session was opened: the rollout's error releases it.
    let policy = Scripted::new(&fx, &sandbox, vec![call.clone(), call], Some(1));
    let err = rollout(&policy, &tokenizer, &tb, &settings(3), &[request(0)]).unwrap_err();
    assert!(err.to_string().contains("generations"), "{err}");
    assert_eq!(*policy.sessions_seen.borrow(), [0, 1]);
    assert_eq!(sandbox.session_count(), 0);

    // Requests naming one trajectory twice would share a session: refused.
    let policy = Scripted::new(&fx, &sandbox, vec![], None);
    let err = rollout(
        &policy,
        &tokenizer,
        &tb,
        &settings(2),
        &[request(0), request(0)],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("sample 0 of prompt \"q\""),
        "{err}"
    );
}

#[test]
fn the_session_argument_is_injected_only_for_stateful_tools() {
    let sandbox = sandbox();
    let tb = toolbox(&sandbox);
    let set = python_call(serde_json::json!({"code": "x = 41"}));
    let get = python_call(serde_json::json!({"code": "print(x + 1)"}));
    let session = session_id("p", 0);
    assert_eq!(session, "p/0");

    // Both calls in the trajectory's session: the injected `session` argument keeps x.
    let r = tb.respond_in_session(&format!("{set}{get}"), "p/0/0", Some(&session));
    assert_eq!((r.calls, r.valid_calls), (2, 2), "{r:?}");
    assert_eq!(r.responses[1].trim(), "42", "{r:?}");
    // A model-chosen `session` is kept: that namespace is not the injected one.
    let own = python_call(serde_json::json!({"code": "z = 1", "session": "mine"}));
    let z_default = python_call(serde_json::json!({"code": "print(z)"}));
    let z_mine = python_call(serde_json::json!({"code": "print(z + 1)", "session": "mine"}));
    let r = tb.respond_in_session(
        &format!("{own}{z_default}{z_mine}"),
        "p/0/1",
        Some(&session),
    );
    assert!(r.responses[1].contains("NameError"), "{r:?}");
    assert_eq!(r.responses[2].trim(), "2", "{r:?}");
    // The calculator is not stateful: no session of its own.
    let calc = "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1+1\"}}</tool_call>";
    let r = tb.respond_in_session(calc, "p/0/2", Some(&session));
    assert_eq!(r.responses[0].trim(), "2");
    assert_eq!(sandbox.session_count(), 1);
    assert_eq!(tb.release_sessions(&session), 1);
    assert_eq!(sandbox.session_count(), 0);

    // With no stateful tools configured every call starts fresh, and no session is opened.
    let stateless = toolbox(&sandbox).with_stateful_tools(&[]);
    assert!(!stateless.is_stateful("python"));
    let r = stateless.respond_in_session(&format!("{set}{get}"), "p/1/0", Some("p/1"));
    assert!(r.responses[1].contains("NameError"), "{r:?}");
    assert_eq!(sandbox.session_count(), 0);

    // Long prompt ids are hashed to a short session id.
    let long = session_id(&"x".repeat(300), 7);
    assert!(long.len() < 64 && long.ends_with("/7"), "{long}");
}
