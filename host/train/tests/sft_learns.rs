//! The supervised trainer learns what a transformer should learn quickly: copying a random digit string seen
//! earlier in the sequence. Tool use rests on this skill (numbers copied into tool calls and out of tool
//! responses); a broken gradient path through attention or the output head shows up here as a loss stuck at the
//! no-copy level of about ln 10 per digit.

use std::ops::ControlFlow;

use candle_core::Device;
use sod_model::{Qwen3Config, TrainableModel};
use sod_train::TrainError;
use sod_train::sft::{SftConfig, SftExample, SftTrainer};

/// `[start, d1..d8, separator | d1..d8, end]` with random digits; token ids: 1 start, 2 separator, 3 end,
/// 10..20 the digits. Only the part after the separator is trained.
fn copy_example(index: u64) -> SftExample {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut digit = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        10 + (state % 10) as u32
    };
    let number: Vec<u32> = (0..8).map(|_| digit()).collect();
    let mut tokens = vec![1];
    tokens.extend(&number);
    tokens.push(2);
    let prompt_len = tokens.len();
    tokens.extend(&number);
    tokens.push(3);
    SftExample {
        id: format!("copy-{index}"),
        mask: vec![1; tokens.len() - prompt_len],
        tokens,
        prompt_len,
    }
}

#[test]
fn sft_learns_to_copy_a_digit_string() {
    let mut config = Qwen3Config::tiny(32, 64, 2);
    config.head_dim = Some(32);
    config.rope_theta = 10_000.0;
    let model = TrainableModel::init_random(&config, 1, &Device::Cpu).unwrap();
    let examples: Vec<SftExample> = (0..4096).map(copy_example).collect();
    let sft = SftConfig {
        steps: 100,
        batch_size: 16,
        micro_batch: 8,
        learning_rate: 3e-3,
        warmup_steps: 10,
        max_grad_norm: 1.0,
        weight_decay: 0.0,
        seed: 0,
        schedule: Default::default(),
        min_lr_ratio: 0.0,
        gradient_checkpointing: false,
    };
    let mut trainer = SftTrainer::new(&model, examples, sft).unwrap();
    let history = trainer
        .run(|_| Ok::<_, TrainError>(ControlFlow::Continue(())))
        .unwrap();
    let first = history[0].loss;
    assert!(first > 2.0, "an untrained model cannot copy: {first}");
    let last = &history[history.len() - 5..];
    for m in last {
        // Measured: about 0.005 at step 100 (0.04 at step 50).
        assert!(m.loss < 0.2, "copying not learned: {last:?}");
        assert!(m.confident_fraction > 0.95, "{last:?}");
    }
}

/// An assistant message with `weight: 0` stays in the context but leaves the loss: its tokens are masked, the
/// other turns' are not, and the token ids are those of the unweighted conversation. Any other weight is refused.
#[test]
fn weight_zero_messages_are_context_only() {
    use sod_model::{ChatMessage, ChatTokenizer, ToolCall};
    use sod_train::sft::tokenize_conversation;
    // Qwen3's vocabulary with the built-in template (the demo's; Qwen3's own re-renders earlier turns).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/qwen3-tokenizer");
    let tokenizer = ChatTokenizer::from_files(&dir.join("tokenizer.json"), None).unwrap();
    let call = |expression: &str| {
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall {
                name: "calculator".into(),
                arguments: serde_json::json!({ "expression": expression }),
            }],
        )
    };
    let mut wrong = call("17*32");
    let plain = vec![
        ChatMessage::system("Use the calculator."),
        ChatMessage::user("What is 17 * 23?"),
        wrong.clone(),
        ChatMessage::tool("544"),
        call("17*23"),
        ChatMessage::tool("391"),
        ChatMessage::assistant("\\boxed{391}"),
    ];
    wrong.weight = Some(0);
    let mut weighted = plain.clone();
    weighted[2] = wrong;
    let a = tokenize_conversation(&tokenizer, "plain", &plain, &[]).unwrap();
    let b = tokenize_conversation(&tokenizer, "weighted", &weighted, &[]).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.prompt_len, b.prompt_len);
    // The first trained run of `a` is the wrong call; in `b` it is masked and everything else is unchanged.
    let first_run = a.mask.iter().take_while(|&&m| m == 1).count();
    assert!(first_run > 5);
    assert!(b.mask[..first_run].iter().all(|&m| m == 0));
    assert_eq!(a.mask[first_run..], b.mask[first_run..]);
    assert_eq!(a.trained_tokens() - b.trained_tokens(), first_run);
    weighted[2].weight = Some(2);
    let err = tokenize_conversation(&tokenizer, "bad", &weighted, &[]).unwrap_err();
    assert!(err.to_string().contains("weight 2"), "{err}");
}
