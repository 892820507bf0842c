//! The real Qwen3 chat template, rendered here, against transformers' `apply_chat_template` (fixtures made by
//! tests/fixtures/qwen3-chat/make_fixtures.py): the same text and the same token ids for every case, messages
//! read as the Hugging Face/OpenAI datasets write them.

use std::path::PathBuf;

use sod_model::{ChatMessage, ChatTokenizer, RenderedChat};

/// The real Qwen3 tokenizer with its own chat template.
fn qwen3() -> ChatTokenizer {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/qwen3-tokenizer");
    ChatTokenizer::from_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .unwrap()
}

/// The reference renderings' cases.
fn cases() -> Vec<serde_json::Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3-chat/renderings.json");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    record["cases"].as_array().unwrap().clone()
}

/// The text of the tokens `rendered` trains.
fn trained_text(tokenizer: &ChatTokenizer, rendered: &RenderedChat) -> String {
    let ids: Vec<u32> = rendered
        .ids
        .iter()
        .zip(&rendered.assistant_mask)
        .filter(|(_, m)| **m == 1)
        .map(|(i, _)| *i)
        .collect();
    tokenizer.decode(&ids, false).unwrap()
}

#[test]
fn renderings_match_transformers_token_for_token() {
    let tokenizer = qwen3();
    assert!(!tokenizer.uses_builtin_template());
    let cases = cases();
    assert!(cases.len() >= 17);
    let mut wrong = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone())
            .unwrap_or_else(|e| panic!("{name}: messages: {e}"));
        let tools: Vec<serde_json::Value> = match &case["tools"] {
            serde_json::Value::Null => Vec::new(),
            tools => tools.as_array().unwrap().clone(),
        };
        let mut extra = serde_json::Map::new();
        if let Some(thinking) = case["enable_thinking"].as_bool() {
            extra.insert("enable_thinking".into(), thinking.into());
        }
        let generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
        let text = tokenizer
            .render_chat_with(&messages, &tools, generation_prompt, &extra)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        if text != case["text"].as_str().unwrap() {
            wrong.push(format!(
                "{name}: text\n  ours:         {text:?}\n  transformers: {:?}",
                case["text"].as_str().unwrap()
            ));
        } else if tokenizer.encode(&text).unwrap() != ids {
            wrong.push(format!("{name}: ids"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn openai_tool_calls_read_and_bad_arguments_are_named() {
    let message: ChatMessage = serde_json::from_value(serde_json::json!({
        "role": "assistant", "content": null,
        "tool_calls": [
            {"type": "function", "id": "c1", "function": {"name": "calculator", "arguments": "{\"expression\": \"1+1\"}"}},
            {"name": "python", "arguments": {"code": "print(1)"}}
        ]
    }))
    .unwrap();
    assert_eq!(message.content, "");
    assert_eq!(message.tool_calls[0].name, "calculator");
    assert_eq!(message.tool_calls[0].arguments["expression"], "1+1");
    assert_eq!(message.tool_calls[1].arguments["code"], "print(1)");
    for bad in [
        serde_json::json!({"function": {"name": "calculator", "arguments": "{not json"}}),
        serde_json::json!({"name": "calculator", "arguments": [1, 2]}),
    ] {
        let err = serde_json::from_value::<ChatMessage>(serde_json::json!({
            "role": "assistant", "content": "", "tool_calls": [bad]
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("calculator"), "{err}");
    }
}

/// What an SFT trains of the real template's rendering: exactly the assistant turns as written (the final one
/// with the empty think block Qwen3's template gives the last turn), each through its `<|im_end|>`; a
/// `weight: 0` turn is context only.
#[test]
fn trained_tokens_are_the_assistant_turns() {
    let case = cases()
        .into_iter()
        .find(|c| c["name"] == "agent_conversation_sft")
        .unwrap();
    let tokenizer = qwen3();
    let mut messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
    let tools: Vec<serde_json::Value> = case["tools"].as_array().unwrap().clone();
    let none = serde_json::Map::new();
    let r = tokenizer
        .render_trained(&messages, &tools, false, &none)
        .unwrap();
    assert_eq!(r.text, case["text"].as_str().unwrap());
    let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
    assert_eq!(r.ids, ids);
    let call = |e: &str| {
        format!(
            "<tool_call>\n{{\"name\": \"calculator\", \"arguments\": {{\"expression\": \"{e}\"}}}}\n</tool_call><|im_end|>"
        )
    };
    let expected = format!(
        "{}{}<think>\n\n</think>\n\nThe answer is \\boxed{{89}}.<|im_end|>",
        call("12*7"),
        call("84+5")
    );
    assert_eq!(trained_text(&tokenizer, &r), expected);
    // The first call as context only.
    messages[2].weight = Some(0);
    let r0 = tokenizer
        .render_trained(&messages, &tools, false, &none)
        .unwrap();
    assert_eq!(
        trained_text(&tokenizer, &r0),
        expected.replacen(&call("12*7"), "", 1)
    );
    messages[2].weight = Some(2);
    assert!(
        tokenizer
            .render_trained(&messages, &tools, false, &none)
            .is_err()
    );
    // A generation prompt adds an empty header that trains nothing.
    messages[2].weight = None;
    let g = tokenizer
        .render_trained(&messages[..4], &tools, true, &none)
        .unwrap();
    assert_eq!(trained_text(&tokenizer, &g), call("12*7"));
    assert!(g.text.ends_with("<|im_start|>assistant\n"));
    assert_eq!(g.assistant_mask.last(), Some(&0));
}
