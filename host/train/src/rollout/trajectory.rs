//! What a rollout produces: the [`Trajectory`] (tokens, mask, behaviour log-probs, what happened) and what ended it.

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
}

impl Trajectory {
    /// A sequence that was not rolled out (SFT data, a benchmark's batch): `tokens` with the first `prompt_len` the
    /// prompt and `mask` over the rest, answered in one turn without tool calls, behaviour log-probs 0.
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

// Stages after the rollout hand on types that carry the trajectory (`Scored`, `Episode`); the teacher's scoring
// and the update's padding read any of them through this.
impl AsRef<Trajectory> for Trajectory {
    fn as_ref(&self) -> &Trajectory {
        self
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
