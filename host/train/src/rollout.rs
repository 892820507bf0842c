//! Rollouts: the student talks with the tools until it gives a final answer.
//!
//! A trajectory starts from the chat template's rendering of the prompt (with the tools' function schemas in the
//! system prompt unless [`ToolBox::with_schemas_in_prompt`] leaves them out) and alternates:
//! 1. one assistant turn, generated for all still-active trajectories in one batch, stopping at `<|im_end|>`/eos;
//! 2. the turn's Hermes `<tool_call>` blocks, run in the sandbox (the calls of different trajectories in
//!    parallel); a malformed call is answered with the parser's error message, an unknown tool with the list of
//!    known ones: the model learns from its mistakes, nothing crashes;
//! 3. the tool responses, rendered by the chat template as a continuation of the conversation (followed by the
//!    next assistant header) and appended with mask 0: the student did not generate them.
//!
//! A turn without tool calls ends the trajectory. A turn cut by the token budget, or tool calls after the last
//! allowed turn, end it as truncated. A tool call that ends in an infrastructure fault ends it flagged, so the
//! loss drops it instead of blaming the model.
//!
//! Stateful tools (`python` by default, see [`ToolBox::with_stateful_tools`]): a trajectory's calls of such a tool
//! run in one sandbox session named after the trajectory, [`session_id`] (`"{prompt_id}/{sample}"`), so that
//! variables defined in one turn are there in the next; trajectories never share a session. The same id is put
//! into the call's `"session"` argument when the model gave none (the python tool keeps a namespace per
//! `session` argument, and only keeps it at all when the argument is set); a model that names its own `session`
//! keeps it, and gets that namespace inside its trajectory's interpreter. Every session of a trajectory is
//! released when the trajectory ends: final answer, truncation, infrastructure fault, or an error of the rollout.
//!
//! Randomness: each trajectory samples with its own [`Sampler`] seeded by `(seed, prompt id, sample index)`, and
//! each tool call is seeded by its call key `"{prompt_id}/{sample}/{turn}/{k}"`, so a trajectory does not depend
//! on which others share its batch.

use std::collections::{BTreeMap, BTreeSet};

use sod_model::{
    ChatMessage, ChatTokenizer, FinishReason, Generation, Qwen3, Sampler, SamplingParams,
    SequenceKv,
};
use sod_sandbox::{CallOptions, Limits, OutcomeKind, Sandbox, Tool};

use crate::error::{Result, TrainError};

/// What generates assistant turns: the student model, or a scripted stand-in in tests.
pub trait Policy {
    /// Generates one turn for each prompt. `states[i]` is what the policy kept of trajectory `i` from its
    /// previous turn, to be continued and replaced (see [`Qwen3::generate_batch_with`]); the rollout passes each
    /// trajectory's state from turn to turn. A policy that keeps nothing leaves them alone.
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        states: &mut [SequenceKv],
        max_new_tokens: usize,
        stop_tokens: &[u32],
        samplers: &mut [Sampler],
    ) -> sod_model::Result<Vec<Generation>>;
}

impl Policy for Qwen3 {
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        states: &mut [SequenceKv],
        max_new_tokens: usize,
        stop_tokens: &[u32],
        samplers: &mut [Sampler],
    ) -> sod_model::Result<Vec<Generation>> {
        self.generate_batch_with(prompts, states, max_new_tokens, stop_tokens, samplers)
    }
}

/// Budgets and sampling of rollouts.
#[derive(Debug, Clone, Copy)]
pub struct RolloutSettings {
    /// Most assistant turns per trajectory.
    pub max_turns: usize,
    /// Most tokens per assistant turn.
    pub max_new_tokens_per_turn: usize,
    /// Most tokens per trajectory, prompt included.
    pub max_total_tokens: usize,
    /// Temperature and top-p.
    pub sampling: SamplingParams,
    /// Run seed for sampling.
    pub seed: u64,
}

/// One trajectory to roll out.
#[derive(Debug, Clone)]
pub struct RolloutRequest {
    /// The prompt's id (seeds sampling and names tool calls).
    pub prompt_id: String,
    /// Which sample of the prompt this is (seeds sampling; distinct across epochs).
    pub sample_index: u64,
    /// Group id handed to the loss (trajectories of one prompt share it).
    pub group: u32,
    /// The conversation so far (system and user messages).
    pub messages: Vec<ChatMessage>,
    /// The prompt's tokens as they are, instead of the rendering of `messages`: to continue a recorded trajectory
    /// token for token (a teacher taking over from a student's prefix). `messages` must then be the same
    /// conversation; what follows is rendered after it.
    pub prompt_tokens: Option<Vec<u32>>,
}

/// A finished trajectory: the token sequence and what happened along it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    /// The prompt's id.
    pub prompt_id: String,
    /// The sample index.
    pub sample_index: u64,
    /// Group id.
    pub group: u32,
    /// Every token: the prompt, then the response (turns and tool responses).
    pub tokens: Vec<u32>,
    /// Number of prompt tokens at the start of `tokens`.
    pub prompt_len: usize,
    /// One per response token: 1 where the student generated it, 0 for tool responses and chat-template glue.
    pub mask: Vec<u8>,
    /// One per response token: the student's log-prob when sampling (behaviour policy), 0 where the mask is 0.
    pub behaviour_logprobs: Vec<f32>,
    /// Text of the last assistant turn (the one scored).
    pub final_text: String,
    /// Assistant turns generated.
    pub turns: usize,
    /// `<tool_call>` blocks written.
    pub tool_calls: usize,
    /// Tool calls that parsed, named a known tool and were accepted by it.
    pub valid_tool_calls: usize,
    /// What ended the trajectory: a final answer, one of the budgets, or a sandbox fault.
    pub finish: Finish,
    /// A tool call hit a sandbox failure: drop the trajectory, do not blame the model.
    pub infra_fault: bool,
    /// Outcome reward (set by the trainer after scoring).
    pub reward: f32,
}

impl Trajectory {
    /// A sequence that was not rolled out (SFT data, a benchmark's batch): `tokens` with the first `prompt_len` the
    /// prompt and `mask` over the rest, answered in one turn without tool calls, behaviour log-probs 0, reward 0.
    pub fn offline(prompt_id: String, tokens: Vec<u32>, prompt_len: usize, mask: Vec<u8>) -> Self {
        Trajectory {
            prompt_id,
            sample_index: 0,
            group: 0,
            behaviour_logprobs: vec![0.0; mask.len()],
            tokens,
            prompt_len,
            mask,
            final_text: String::new(),
            turns: 1,
            tool_calls: 0,
            valid_tool_calls: 0,
            finish: Finish::Answered,
            infra_fault: false,
            reward: 0.0,
        }
    }
}

/// What ended a trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Finish {
    /// A turn without tool calls: the final answer (right or wrong).
    Answered,
    /// A turn ran out of `max_new_tokens_per_turn` before its end-of-turn token.
    TurnTokens,
    /// The whole sequence reached `max_total_tokens` (during a turn, or with the tool responses).
    TotalTokens,
    /// The last allowed turn (`max_turns`) still asked for tools.
    MaxTurns,
    /// A tool call hit a sandbox failure.
    InfraFault,
}

impl Finish {
    /// Every finish, in metric order.
    pub const ALL: [Finish; 5] = [
        Finish::Answered,
        Finish::TurnTokens,
        Finish::TotalTokens,
        Finish::MaxTurns,
        Finish::InfraFault,
    ];

    /// Its name in metrics and records.
    pub fn name(self) -> &'static str {
        match self {
            Finish::Answered => "answered",
            Finish::TurnTokens => "turn_tokens",
            Finish::TotalTokens => "total_tokens",
            Finish::MaxTurns => "max_turns",
            Finish::InfraFault => "infra_fault",
        }
    }

    /// Ended by a budget rather than by a final answer or a fault.
    pub fn is_truncation(self) -> bool {
        matches!(
            self,
            Finish::TurnTokens | Finish::TotalTokens | Finish::MaxTurns
        )
    }
}

impl Trajectory {
    /// Ended by a budget rather than by a final answer (see [`Finish::is_truncation`]).
    pub fn truncated(&self) -> bool {
        self.finish.is_truncation()
    }

    /// The response part of `tokens` (everything after the prompt).
    pub fn response_tokens(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Number of tokens the student generated.
    pub fn generated_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }
}

/// The tools offered to the model and how they are called.
#[derive(Clone)]
pub struct ToolBox {
    sandbox: Sandbox,
    tools: BTreeMap<String, Tool>,
    schemas: Vec<serde_json::Value>,
    limits: Limits,
    stateful: BTreeSet<String>,
    schemas_in_prompt: bool,
}

/// Longest session id used as is; longer ones are hashed (the python tool accepts at most 256 characters).
const MAX_PLAIN_SESSION_ID: usize = 128;

/// The sandbox session (and python `session` argument) of trajectory `sample` of prompt `prompt_id`:
/// `"{prompt_id}/{sample}"`, or, when that is longer than 128 characters, a SHA-256 digest of the prompt id
/// (32 hex digits) followed by `/{sample}`.
pub fn session_id(prompt_id: &str, sample: u64) -> String {
    let plain = format!("{prompt_id}/{sample}");
    if plain.len() <= MAX_PLAIN_SESSION_ID {
        return plain;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(prompt_id.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}/{sample}")
}

/// The responses to one assistant turn's tool calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResponses {
    /// One response text per `<tool_call>` block, in order.
    pub responses: Vec<String>,
    /// `<tool_call>` blocks in the turn.
    pub calls: usize,
    /// Calls that parsed, named a known tool and whose arguments the tool accepted.
    pub valid_calls: usize,
    /// Some call failed in the sandbox itself.
    pub infra_fault: bool,
}

impl ToolBox {
    /// Loads the named tools from the sandbox (`<tools_dir>/<name>.wasm`); every call runs under `limits`. The
    /// stateful tools are [`crate::config::DEFAULT_STATEFUL_TOOLS`] until [`Self::with_stateful_tools`] says
    /// otherwise.
    pub fn new(sandbox: Sandbox, names: &[String], limits: Limits) -> Result<Self> {
        let mut tools = BTreeMap::new();
        let mut schemas = Vec::new();
        for name in names {
            let tool = sandbox.tool(name)?;
            schemas.push(tool.descriptor().function_schema());
            tools.insert(name.clone(), tool);
        }
        Ok(ToolBox {
            sandbox,
            tools,
            schemas,
            limits,
            stateful: crate::config::DEFAULT_STATEFUL_TOOLS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            schemas_in_prompt: true,
        })
    }

    /// Sets which tools keep state across a trajectory's turns (see the module docs). Names of tools not offered
    /// are allowed and have no effect, so one list can serve runs with different tools.
    pub fn with_stateful_tools(mut self, names: &[String]) -> Self {
        self.stateful = names.iter().cloned().collect();
        self
    }

    /// Whether calls of `tool` run in the trajectory's session.
    pub fn is_stateful(&self, tool: &str) -> bool {
        self.stateful.contains(tool)
    }

    /// The sandbox the tools run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Releases the sessions `session` of every stateful tool offered; returns how many existed.
    pub fn release_sessions(&self, session: &str) -> usize {
        self.tools
            .keys()
            .filter(|name| self.is_stateful(name))
            .filter(|name| self.sandbox.release_session(name, session))
            .count()
    }

    /// Whether the tools' function schemas are rendered into the system prompt (the default). A model trained
    /// to call its tools without them can leave them out: the schemas (and the chat template's instructions that
    /// come with them) are then not part of any prompt, which for small models on short tasks is most of every
    /// sequence. The tools are offered and called the same either way.
    pub fn with_schemas_in_prompt(mut self, in_prompt: bool) -> Self {
        self.schemas_in_prompt = in_prompt;
        self
    }

    /// OpenAI-style function schemas, in the configured order, for the chat template; empty when the schemas are
    /// left out of the prompt ([`Self::with_schemas_in_prompt`]).
    pub fn schemas(&self) -> &[serde_json::Value] {
        if self.schemas_in_prompt {
            &self.schemas
        } else {
            &[]
        }
    }

    /// Runs the tool calls of one assistant turn (`turn_text`, as decoded) and returns the response to each.
    /// `call_key_prefix` (`"{prompt_id}/{sample}/{turn}"`) plus the call's index seeds each call. Every call is
    /// stateless; see [`Self::respond_in_session`].
    pub fn respond(&self, turn_text: &str, call_key_prefix: &str) -> ToolResponses {
        self.respond_in_session(turn_text, call_key_prefix, None)
    }

    /// Like [`Self::respond`], with calls of stateful tools in the sandbox session `session` (when given) and
    /// `session` as their `"session"` argument unless the model gave one (see the module docs).
    pub fn respond_in_session(
        &self,
        turn_text: &str,
        call_key_prefix: &str,
        session: Option<&str>,
    ) -> ToolResponses {
        let calls = sod_model::parse_tool_calls(answer_part(turn_text));
        let mut out = ToolResponses {
            responses: Vec::with_capacity(calls.len()),
            calls: calls.len(),
            valid_calls: 0,
            infra_fault: false,
        };
        for (k, call) in calls.into_iter().enumerate() {
            let call = match call {
                Ok(call) => call,
                Err(error) => {
                    out.responses.push(error.to_string());
                    continue;
                }
            };
            let Some(tool) = self.tools.get(&call.name) else {
                let known: Vec<&str> = self.tools.keys().map(String::as_str).collect();
                out.responses.push(format!(
                    "error: there is no tool named {:?}; the tools are: {}.",
                    call.name,
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
                continue;
            };
            let session = session.filter(|_| self.is_stateful(&call.name));
            let mut arguments = call.arguments;
            if let (Some(id), Some(object)) = (session, arguments.as_object_mut()) {
                object
                    .entry("session")
                    .or_insert_with(|| serde_json::Value::String(id.to_string()));
            }
            let options = CallOptions {
                limits: Some(self.limits),
                seed: None,
                call_key: Some(format!("{call_key_prefix}/{k}")),
                session: session.map(str::to_string),
                ..CallOptions::default()
            };
            let outcome = self.sandbox.call(tool, &arguments.to_string(), &options);
            if outcome.kind == OutcomeKind::InfraFault {
                out.infra_fault = true;
            }
            let rejected = outcome.kind == OutcomeKind::ToolError
                && outcome.error_code.as_deref() == Some("invalid_arguments");
            if !rejected && outcome.kind != OutcomeKind::InfraFault {
                out.valid_calls += 1;
            }
            out.responses.push(outcome.model_text());
        }
        out
    }
}

/// The part of an assistant turn after its reasoning (`</think>`), where tool calls and answers live.
fn answer_part(text: &str) -> &str {
    text.rfind("</think>")
        .map_or(text, |i| &text[i + "</think>".len()..])
}

/// A trajectory under construction.
struct Live {
    traj: Trajectory,
    history: Vec<ChatMessage>,
    sampler: Sampler,
    done: bool,
    /// The trajectory's session id (see [`session_id`]).
    session: String,
    /// Its sessions were released (it is done).
    released: bool,
    /// What the policy computed of its tokens so far, for the next turn (emptied when it is done).
    kv: SequenceKv,
}

/// Releases the sessions of the trajectories not released yet when dropped: the rollout's end, an error or a
/// panic all leave the sandbox without this rollout's sessions.
struct SessionGuard<'a> {
    toolbox: &'a ToolBox,
    live: Vec<Live>,
}

/// Releases the sessions (and the policy's keys and values) of the trajectories that are done, as soon as they
/// are: an interpreter is large, and so is a long sequence's cache.
fn release_finished(toolbox: &ToolBox, live: &mut [Live]) {
    for l in live {
        if l.done && !l.released {
            toolbox.release_sessions(&l.session);
            l.released = true;
            l.kv = SequenceKv::default();
        }
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        for l in &mut self.live {
            if !l.released {
                self.toolbox.release_sessions(&l.session);
                l.released = true;
            }
        }
    }
}

/// Rolls out every request to the end (see the module docs). Trajectories come back in request order.
pub fn rollout(
    policy: &dyn Policy,
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    settings: &RolloutSettings,
    requests: &[RolloutRequest],
) -> Result<Vec<Trajectory>> {
    let stop = tokenizer.stop_token_ids();
    if stop.is_empty() {
        return Err(TrainError::Config(
            "the student's tokenizer has no stop token (eos, <|im_end|> or <|endoftext|>)".into(),
        ));
    }
    let mut live = Vec::with_capacity(requests.len());
    for request in requests {
        let prompt = match &request.prompt_tokens {
            Some(tokens) => tokens.clone(),
            None => tokenizer.encode_chat(&request.messages, toolbox.schemas(), true)?,
        };
        if prompt.len() + 1 >= settings.max_total_tokens {
            return Err(TrainError::Config(format!(
                "prompt {:?} has {} tokens, leaving no room under max_total_tokens = {}",
                request.prompt_id,
                prompt.len(),
                settings.max_total_tokens
            )));
        }
        live.push(Live {
            traj: Trajectory {
                prompt_id: request.prompt_id.clone(),
                sample_index: request.sample_index,
                group: request.group,
                prompt_len: prompt.len(),
                tokens: prompt,
                mask: Vec::new(),
                behaviour_logprobs: Vec::new(),
                final_text: String::new(),
                turns: 0,
                tool_calls: 0,
                valid_tool_calls: 0,
                finish: Finish::Answered,
                infra_fault: false,
                reward: 0.0,
            },
            history: request.messages.clone(),
            sampler: Sampler::new(
                settings.sampling,
                settings.seed,
                &request.prompt_id,
                request.sample_index,
            )?,
            done: false,
            session: session_id(&request.prompt_id, request.sample_index),
            released: false,
            kv: SequenceKv::default(),
        });
    }
    let mut seen = BTreeSet::new();
    if let Some(l) = live.iter().find(|l| !seen.insert(l.session.clone())) {
        return Err(TrainError::Config(format!(
            "two rollout requests are sample {} of prompt {:?}: they would share tool sessions",
            l.traj.sample_index, l.traj.prompt_id
        )));
    }
    let mut guard = SessionGuard { toolbox, live };

    for turn in 0..settings.max_turns {
        let live = &mut guard.live;
        generate_turn(policy, tokenizer, &stop, settings, live)?;
        // Decode the turn, decide who goes on, and run the tool calls of those who do (in parallel).
        let mut pending: Vec<(usize, String)> = Vec::new();
        for (i, l) in live.iter_mut().enumerate() {
            if l.done || l.traj.turns != turn + 1 {
                continue;
            }
            let text = l.traj.final_text.clone();
            let has_calls = !sod_model::parse_tool_calls(answer_part(&text)).is_empty();
            if l.traj.truncated() || !has_calls {
                l.done = true;
            } else if turn + 1 == settings.max_turns {
                // It asked for tools but may not continue: no final answer.
                l.traj.finish = Finish::MaxTurns;
                l.traj.tool_calls += sod_model::parse_tool_calls(answer_part(&text)).len();
                l.done = true;
            } else {
                pending.push((i, text));
            }
        }
        if pending.is_empty() {
            break;
        }
        release_finished(toolbox, live);
        let responses: Vec<ToolResponses> = std::thread::scope(|scope| {
            let handles: Vec<_> = pending
                .iter()
                .map(|(i, text)| {
                    let l = &live[*i];
                    let t = &l.traj;
                    let prefix = format!("{}/{}/{}", t.prompt_id, t.sample_index, turn);
                    let session = l.session.as_str();
                    scope.spawn(move || toolbox.respond_in_session(text, &prefix, Some(session)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        for ((i, text), result) in pending.into_iter().zip(responses) {
            append_tool_responses(tokenizer, toolbox, settings, &mut live[i], &text, result)?;
        }
        release_finished(toolbox, live);
    }
    for l in &mut guard.live {
        l.done = true;
    }
    release_finished(toolbox, &mut guard.live);
    Ok(std::mem::take(&mut guard.live)
        .into_iter()
        .map(|l| l.traj)
        .collect())
}

/// Generates one turn for every active trajectory. Trajectories are batched by their remaining token budget, so
/// that each one's budget is its own whatever else is in the batch.
fn generate_turn(
    policy: &dyn Policy,
    tokenizer: &ChatTokenizer,
    stop: &[u32],
    settings: &RolloutSettings,
    live: &mut [Live],
) -> Result<()> {
    let mut by_budget: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, l) in live.iter().enumerate() {
        if !l.done {
            let room = settings
                .max_total_tokens
                .saturating_sub(l.traj.tokens.len());
            by_budget
                .entry(room.min(settings.max_new_tokens_per_turn))
                .or_default()
                .push(i);
        }
    }
    for (budget, members) in by_budget {
        if budget == 0 {
            for &i in &members {
                live[i].traj.finish = Finish::TotalTokens;
                live[i].done = true;
            }
            continue;
        }
        let prompts: Vec<Vec<u32>> = members
            .iter()
            .map(|&i| live[i].traj.tokens.clone())
            .collect();
        let mut samplers: Vec<Sampler> = members.iter().map(|&i| live[i].sampler.clone()).collect();
        let mut states: Vec<SequenceKv> = members
            .iter()
            .map(|&i| std::mem::take(&mut live[i].kv))
            .collect();
        let generations = policy.generate(&prompts, &mut states, budget, stop, &mut samplers)?;
        for (&i, state) in members.iter().zip(states) {
            live[i].kv = state;
        }
        if generations.len() != members.len() {
            return Err(TrainError::Config(format!(
                "the policy returned {} generations for {} prompts",
                generations.len(),
                members.len()
            )));
        }
        for ((&i, generation), sampler) in members.iter().zip(generations).zip(samplers) {
            let l = &mut live[i];
            l.sampler = sampler;
            if generation.tokens.len() != generation.logprobs.len() {
                return Err(TrainError::Config(
                    "the policy returned a different number of tokens and log-probs".into(),
                ));
            }
            l.traj.turns += 1;
            l.traj.tokens.extend_from_slice(&generation.tokens);
            l.traj
                .mask
                .extend(std::iter::repeat_n(1u8, generation.tokens.len()));
            l.traj
                .behaviour_logprobs
                .extend_from_slice(&generation.logprobs);
            // A turn cut by a budget has no end-of-turn token: the conversation cannot go on. The budget was the
            // turn's own unless the sequence's room was smaller.
            if generation.finish == FinishReason::Length {
                l.traj.finish = if budget < settings.max_new_tokens_per_turn {
                    Finish::TotalTokens
                } else {
                    Finish::TurnTokens
                };
            }
            l.traj.final_text = tokenizer.decode(&generation.tokens, false)?;
        }
    }
    Ok(())
}

/// Records a turn's tool calls, appends the rendered tool responses (mask 0) and the next assistant header, and
/// ends the trajectory when a call hit a sandbox fault or the token budget is spent.
fn append_tool_responses(
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    settings: &RolloutSettings,
    live: &mut Live,
    turn_text: &str,
    result: ToolResponses,
) -> Result<()> {
    let traj = &mut live.traj;
    traj.tool_calls += result.calls;
    traj.valid_tool_calls += result.valid_calls;
    if result.infra_fault {
        traj.infra_fault = true;
        traj.finish = Finish::InfraFault;
        live.done = true;
        return Ok(());
    }
    let (assistant, _) = ChatMessage::from_assistant_output(turn_text);
    live.history.push(assistant);
    let tool_messages: Vec<ChatMessage> = result
        .responses
        .into_iter()
        .map(ChatMessage::tool)
        .collect();
    let continuation = tokenizer.render_after_generated(
        &live.history,
        &tool_messages,
        toolbox.schemas(),
        true,
        &serde_json::Map::new(),
    )?;
    live.history.extend(tool_messages);
    let ids = tokenizer.encode(&continuation)?;
    traj.tokens.extend_from_slice(&ids);
    traj.mask.extend(std::iter::repeat_n(0u8, ids.len()));
    traj.behaviour_logprobs
        .extend(std::iter::repeat_n(0.0f32, ids.len()));
    if traj.tokens.len() >= settings.max_total_tokens {
        // No room for another turn: cut the tool responses to the budget and stop.
        let excess = traj.tokens.len() - settings.max_total_tokens;
        let keep = traj.tokens.len() - excess;
        traj.tokens.truncate(keep);
        traj.mask.truncate(keep - traj.prompt_len);
        traj.behaviour_logprobs.truncate(keep - traj.prompt_len);
        traj.finish = Finish::TotalTokens;
        live.done = true;
    }
    Ok(())
}
