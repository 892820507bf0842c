//! The same rollouts whatever runs the tool calls: this process, two worker processes, one or three `sod serve`
//! processes. Then three endpoints with the one holding some of the python sessions killed mid-run: the
//! trajectories whose sessions lived there end as infra faults (left out of the loss by the trainer), and every
//! other trajectory, stateless calls included, is what this process gives.
//!
//! The policy is scripted (a tiny random model makes no tool calls): each prompt names its task, and the script
//! plays that task's turns with the real calculator and python tools, so the tool responses are the real outcomes.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use sod_model::{
    ChatMessage, ChatTokenizer, FinishReason, Generation, Sampler, SamplingParams, SequenceKv,
};
use sod_sandbox::workers::{WorkerCommand, WorkerPool};
use sod_sandbox::{Limits, RemoteTools, Sandbox, SandboxConfig};
use sod_tests::{serve_process, sod_binary, target_dir, workspace_root};
use sod_train::rollout::{
    Finish, Policy, RolloutRequest, RolloutSettings, ToolBox, Trajectory, rollout, session_id,
};

/// Trajectories of each kind: `s<k>` use a python session over three turns, `c<k>` only the stateless calculator.
const TASKS: usize = 4;

fn qwen3_tokenizer() -> ChatTokenizer {
    let dir = workspace_root().join("../shared/data/qwen3-tokenizer");
    ChatTokenizer::from_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .expect("the Qwen3 tokenizer")
}

fn call(name: &str, arguments: serde_json::Value) -> String {
    format!(
        "<tool_call>{}</tool_call><|im_end|>",
        serde_json::json!({"name": name, "arguments": arguments})
    )
}

/// Turn `turn` of task `task` (`s3`, `c0`, ...).
fn script(task: &str, turn: usize) -> String {
    let k: u64 = task[1..].parse().expect("task number");
    match (task.as_bytes()[0], turn) {
        // State across turns, and the seed: python's random is seeded per call from the run seed and call key.
        (b's', 0) => call(
            "python",
            serde_json::json!({"code": format!("import random\nx = {k} + random.randrange(1000)")}),
        ),
        (b's', 1) => call("python", serde_json::json!({"code": "x = x * 2\nprint(x)"})),
        (b's', 2) => call("python", serde_json::json!({"code": "print(x + 1)"})),
        (b'c', t) if t < 3 => call(
            "calculator",
            serde_json::json!({"expression": format!("{k} * 7 + {t}")}),
        ),
        _ => format!("The answer is \\boxed{{{k}}}.<|im_end|>"),
    }
}

/// Plays [`script`] for each prompt (the task is named in the prompt, the turn is the number of assistant turns in
/// it) and runs `before_turn` with the turn's index before each batch.
struct Scripted<'a> {
    tokenizer: ChatTokenizer,
    turn: RefCell<usize>,
    before_turn: &'a dyn Fn(usize),
}

impl Policy for Scripted<'_> {
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        _states: &mut [SequenceKv],
        _max_new_tokens: usize,
        _stop: &[u32],
        _samplers: &mut [Sampler],
    ) -> sod_model::Result<Vec<Generation>> {
        (self.before_turn)(*self.turn.borrow());
        *self.turn.borrow_mut() += 1;
        prompts
            .iter()
            .map(|prompt| {
                let text = self.tokenizer.decode(prompt, false)?;
                let task = text
                    .split("Task ")
                    .nth(1)
                    .and_then(|rest| rest.split('.').next())
                    .expect("the prompt names its task")
                    .to_string();
                let turn = text.matches("<|im_start|>assistant").count() - 1;
                let tokens = self.tokenizer.encode(&script(&task, turn))?;
                Ok(Generation {
                    logprobs: vec![-0.5; tokens.len()],
                    sampling_logprobs: vec![-0.5; tokens.len()],
                    tokens,
                    finish: FinishReason::Stop,
                })
            })
            .collect()
    }
}

fn requests() -> Vec<RolloutRequest> {
    (0..TASKS)
        .flat_map(|k| [format!("s{k}"), format!("c{k}")])
        .map(|task| RolloutRequest {
            prompt_id: task.clone(),
            sample_index: 0,
            group: 0,
            messages: vec![ChatMessage::user(format!("Task {task}. Work it out."))],
            prompt_tokens: None,
        })
        .collect()
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        tools_dir: Some(target_dir().join("tools")),
        cache_dir: Some(target_dir().join("test-cache-cli")),
        seed: 11,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn run(sandbox: &Sandbox, before_turn: &dyn Fn(usize)) -> Vec<Trajectory> {
    let tools = ["calculator".to_string(), "python".to_string()];
    let toolbox = ToolBox::new(sandbox.clone(), &tools, Limits::default())
        .expect("tools")
        .with_stateful_tools(&["python".to_string()]);
    sandbox
        .check_backend()
        .expect("the backend serves the same tools");
    let settings = RolloutSettings {
        max_turns: 5,
        max_new_tokens_per_turn: 128,
        max_total_tokens: 8192,
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
        },
        seed: 11,
    };
    let policy = Scripted {
        tokenizer: qwen3_tokenizer(),
        turn: RefCell::new(0),
        before_turn,
    };
    rollout(
        &policy,
        &qwen3_tokenizer(),
        &toolbox,
        &settings,
        &requests(),
    )
    .expect("rollout")
}

fn kill(servers: &mut [(std::process::Child, std::net::SocketAddr)]) {
    for (child, _) in servers {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn endpoints(servers: &[(std::process::Child, std::net::SocketAddr)]) -> Vec<String> {
    servers
        .iter()
        .map(|(_, addr)| format!("http://{addr}"))
        .collect()
}

#[test]
fn rollouts_are_the_same_on_every_backend_and_a_lost_endpoint_faults_only_its_sessions() {
    let reference = run(&sandbox(), &|_| {});
    let tokenizer = qwen3_tokenizer();
    for t in &reference {
        // Every trajectory ran its tools for real: three valid calls, then the answer.
        assert_eq!(
            (t.turns, t.tool_calls, t.valid_tool_calls, t.infra_fault),
            (4, 3, 3, false),
            "{}: {:?}",
            t.prompt_id,
            tokenizer.decode(&t.tokens, false)
        );
        assert_eq!(t.finish, Finish::Answered);
    }
    let text = tokenizer
        .decode(&reference[0].tokens, false)
        .expect("decode");
    assert!(!text.contains("Error"), "{text}");

    // Two worker processes.
    let pool = WorkerPool::start(
        WorkerCommand {
            program: sod_binary(),
            tools_dir: target_dir().join("tools"),
            seed: 99, // The sandbox sends its own seed with every call: the workers' default never counts.
            cache_dir: Some(target_dir().join("test-cache-cli")),
            instances_ahead: false,
            max_memory_bytes: None,
        },
        2,
    )
    .expect("workers");
    let with_workers = run(&sandbox().with_backend(Arc::new(pool)), &|_| {});
    assert!(with_workers == reference, "worker processes differ");

    // One and three `sod serve` processes.
    for count in [1, 3] {
        let mut servers: Vec<_> = (0..count)
            .map(|_| serve_process(&target_dir().join("tools")))
            .collect();
        let remote = RemoteTools::new(&endpoints(&servers)).expect("client");
        let remote_run = run(&sandbox().with_backend(Arc::new(remote)), &|_| {});
        kill(&mut servers);
        assert!(remote_run == reference, "{count} endpoints differ");
    }

    // Three endpoints; before the second turn, the endpoint holding session s0 is killed.
    let servers = RefCell::new(
        (0..3)
            .map(|_| serve_process(&target_dir().join("tools")))
            .collect::<Vec<_>>(),
    );
    let remote = Arc::new(RemoteTools::new(&endpoints(&servers.borrow())).expect("client"));
    let lost: RefCell<BTreeSet<String>> = RefCell::new(BTreeSet::new());
    let killed = RefCell::new(None);
    let before_turn = |turn: usize| {
        if turn != 1 {
            return;
        }
        let holder = |task: &str| remote.session_url("python", &session_id(task, 0));
        let victim = holder("s0").expect("session s0 is pinned to an endpoint");
        for k in 0..TASKS {
            let task = format!("s{k}");
            if holder(&task).as_deref() == Some(victim.as_str()) {
                lost.borrow_mut().insert(task);
            }
        }
        let mut servers = servers.borrow_mut();
        let index = endpoints(&servers)
            .iter()
            .position(|url| *url == victim)
            .expect("the victim is one of the endpoints");
        let _ = servers[index].0.kill();
        let _ = servers[index].0.wait();
        *killed.borrow_mut() = Some(index);
    };
    let sandbox = sandbox().with_backend(remote.clone());
    let after_loss = run(&sandbox, &before_turn);
    kill(&mut servers.borrow_mut());
    let lost = lost.into_inner();
    eprintln!(
        "killed endpoint {:?} holding sessions {lost:?}",
        killed.borrow()
    );
    assert!(lost.contains("s0"));
    for (got, want) in after_loss.iter().zip(&reference) {
        if lost.contains(&got.prompt_id) {
            assert!(
                got.infra_fault && got.finish == Finish::InfraFault,
                "{}: a lost session must end its trajectory as an infra fault: {got:?}",
                got.prompt_id
            );
            // Its first call was answered before the loss; nothing after it was blamed on the model.
            assert_eq!(got.valid_tool_calls, 1, "{}", got.prompt_id);
        } else {
            assert!(
                got == want,
                "{} differs from the in-process run after losing an endpoint",
                got.prompt_id
            );
        }
    }
    // The stateless calculator calls of the turns after the kill were served by the other endpoints.
    assert!(after_loss.iter().any(|t| t.prompt_id.starts_with('c')));
    assert_eq!(sandbox.session_count(), 0);
}
