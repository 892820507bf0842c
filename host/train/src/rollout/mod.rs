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

pub mod config;
mod toolbox;
mod trajectory;

pub use config::RolloutConfig;
use toolbox::answer_part;
pub use toolbox::{ToolBox, ToolResponses, session_id};
pub use trajectory::{Finish, Trajectory};

use std::collections::{BTreeMap, BTreeSet};

use sod_model::{
    ChatMessage, ChatTokenizer, FinishReason, Generation, Qwen3, Sampler, SamplingParams,
    SequenceKv,
};

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

/// [`rollout`] of `requests`, `chunk` at a time (bounding memory): trajectories come back in request order and do
/// not depend on `chunk`, since each samples with its own seeded sampler.
pub fn rollout_chunked(
    policy: &dyn Policy,
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    settings: &RolloutSettings,
    requests: &[RolloutRequest],
    chunk: usize,
) -> Result<Vec<Trajectory>> {
    let mut trajectories = Vec::with_capacity(requests.len());
    for part in requests.chunks(chunk.max(1)) {
        trajectories.extend(rollout(policy, tokenizer, toolbox, settings, part)?);
    }
    Ok(trajectories)
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
