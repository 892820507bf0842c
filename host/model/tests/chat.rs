//! Tokenizer, chat template and tiny model directory tests.

use serde_json::json;
use sod_model::{
    BUILTIN_CHAT_TEMPLATE, ChatMessage, ChatTokenizer, ModelError, Qwen3Config, TINY_ADDED_TOKENS,
    ToolCall, load_model_dir, parse_tool_calls, train_tiny_tokenizer, write_tiny_model_dir,
};

const CORPUS: &[&str] = &[
    "The calculator adds numbers: 12 + 30 = 42.",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2 + 2\"}}\n</tool_call><|im_end|>",
    "<|im_start|>user\n<tool_response>\n4\n</tool_response><|im_end|>\n<|im_start|>assistant\nThe answer is 4.<|im_end|>",
    "Python code: print(sum(range(10))) prints 45.",
    "Let me think step by step about the question and answer it.",
];

fn calculator_tool() -> serde_json::Value {
    json!({
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. 2 + 2"}},
                "required": ["expression"],
            },
        },
    })
}

fn tool_conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are a careful assistant."),
        ChatMessage::user("What is 17 * 23?"),
        ChatMessage {
            reasoning_content: Some("I should use the calculator.".into()),
            ..ChatMessage::assistant_with_tool_calls(
                "",
                vec![ToolCall {
                    name: "calculator".into(),
                    arguments: json!({"expression": "17 * 23"}),
                }],
            )
        },
        ChatMessage::tool("391"),
        ChatMessage::assistant("17 * 23 = 391."),
    ]
}

#[test]
fn builtin_template_renders_a_tool_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny");
    write_tiny_model_dir(&path, &Qwen3Config::tiny(400, 64, 2), CORPUS, 1).unwrap();
    let tok = ChatTokenizer::from_dir(&path).unwrap();
    assert!(
        !tok.uses_builtin_template(),
        "the tiny directory ships its template in tokenizer_config.json"
    );
    assert_eq!(tok.chat_template().source(), BUILTIN_CHAT_TEMPLATE);

    let tools = [calculator_tool()];
    let text = tok
        .render_chat(&tool_conversation(), &tools, false)
        .unwrap();
    let expected_head = "<|im_start|>system\nYou are a careful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"";
    assert!(text.starts_with(expected_head), "{text}");
    // One tool per line, Python json.dumps separators. (Key order follows serde_json's map: sorted unless its
    // preserve_order feature is on.)
    let tool_line = text
        .lines()
        .find(|l| l.contains("\"name\": \"calculator\""))
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(tool_line).unwrap();
    assert_eq!(parsed, calculator_tool());
    assert!(
        tool_line.contains("\"description\": \"Evaluate an arithmetic expression.\""),
        "{text}"
    );
    let expected_tail = "</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n\
<|im_start|>user\nWhat is 17 * 23?<|im_end|>\n\
<|im_start|>assistant\n<think>\nI should use the calculator.\n</think>\n\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"17 * 23\"}}\n</tool_call><|im_end|>\n\
<|im_start|>user\n<tool_response>\n391\n</tool_response><|im_end|>\n\
<|im_start|>assistant\n17 * 23 = 391.<|im_end|>\n";
    assert!(text.ends_with(expected_tail), "{text}");

    // Tokenises, and the special tokens are single ids.
    let ids = tok.encode(&text).unwrap();
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == im_start).count(), 5);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert!(ids.iter().all(|&i| (i as usize) < 400));

    // Prefix property: the conversation up to the tool result with a generation prompt is a prefix of the full one.
    let partial = tok
        .render_chat(&tool_conversation()[..4], &tools, true)
        .unwrap();
    assert!(text.starts_with(&partial), "{partial}");
    assert!(partial.ends_with("</tool_response><|im_end|>\n<|im_start|>assistant\n"));

    // Without tools and with thinking disabled.
    let mut extra = serde_json::Map::new();
    extra.insert("enable_thinking".into(), json!(false));
    let plain = tok
        .render_chat_with(&[ChatMessage::user("hi")], &[], true, &extra)
        .unwrap();
    assert_eq!(
        plain,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
}

#[test]
fn numbers_are_encoded_digit_by_digit_wherever_they_appear() {
    // Qwen's pre-tokenisation: a digit is never merged with another digit or with the space before it, so a
    // number copied from prose into a JSON string is the same token sequence.
    let corpus: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "It makes {} boxes, \"{}*{}\" = {}",
                100 + i,
                12 * i,
                34,
                12 * i * 34
            )
        })
        .collect();
    let refs: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let tokenizer = train_tiny_tokenizer(&refs, 400).unwrap();
    let tok =
        ChatTokenizer::new(tokenizer, None, Some("<|im_end|>"), Some("<|endoftext|>")).unwrap();
    let digits = tok.encode("4817").unwrap();
    assert_eq!(digits.len(), 4);
    for (digit, id) in "4817".chars().zip(&digits) {
        assert_eq!(tok.decode(&[*id], false).unwrap(), digit.to_string());
    }
    for context in ["makes 4817 boxes", "\"4817*36\"", "(4817)", "x4817"] {
        let ids = tok.encode(context).unwrap();
        assert!(
            ids.windows(4).any(|w| w == digits.as_slice()),
            "{context:?} does not hold 4817 as its four digit tokens"
        );
        assert_eq!(tok.decode(&ids, false).unwrap(), context);
    }
}

#[test]
fn hermes_tool_call_turn_round_trips_through_the_tokenizer() {
    let tokenizer = train_tiny_tokenizer(CORPUS, 380).unwrap();
    assert!(tokenizer.get_vocab_size(true) <= 380);
    let tok =
        ChatTokenizer::new(tokenizer, None, Some("<|im_end|>"), Some("<|endoftext|>")).unwrap();
    assert!(tok.uses_builtin_template());
    let turn = "<|im_start|>assistant\n<think>\nneed   a tool — ünïcödé ✓\n</think>\n\n<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print('a\\tb')\\n\"}}\n</tool_call><|im_end|>\n";
    let ids = tok.encode(turn).unwrap();
    for special in TINY_ADDED_TOKENS {
        if turn.contains(special) {
            assert!(
                ids.contains(&tok.token_id(special).unwrap()),
                "{special} is not one token"
            );
        }
    }
    let back = tok.decode(&ids, false).unwrap();
    assert_eq!(back, turn);
    // Decoding the generated part (after the header) and parsing the tool call.
    let header = tok.encode("<|im_start|>assistant\n").unwrap();
    assert_eq!(&ids[..header.len()], &header[..]);
    let generated = tok.decode(&ids[header.len()..], false).unwrap();
    let calls = parse_tool_calls(&generated);
    assert_eq!(calls.len(), 1);
    let call = calls[0].as_ref().unwrap();
    assert_eq!(call.name, "python");
    assert_eq!(call.arguments, json!({"code": "print('a\tb')\n"}));
    // Tool tags survive skip_special_tokens (they are not special); ChatML markers do not.
    let skipped = tok.decode(&ids, true).unwrap();
    assert!(
        skipped.contains("<tool_call>") && !skipped.contains("<|im_end|>"),
        "{skipped}"
    );
    assert_eq!(tok.eos_token_id(), tok.token_id("<|im_end|>"));
    assert_eq!(tok.pad_token_id(), tok.token_id("<|endoftext|>"));
    assert_eq!(
        tok.stop_token_ids(),
        [
            tok.token_id("<|im_end|>").unwrap(),
            tok.token_id("<|endoftext|>").unwrap()
        ]
    );
}

#[test]
fn tiny_model_dir_is_complete_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let config = Qwen3Config::tiny(400, 64, 2);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let written = write_tiny_model_dir(&a, &config, CORPUS, 7).unwrap();
    write_tiny_model_dir(&b, &config, CORPUS, 7).unwrap();
    assert_eq!(written.eos_token_id, [2]);
    assert_eq!(written.bos_token_id, Some(0));
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let (fa, fb) = (
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
        );
        assert_eq!(fa, fb, "{file} differs between two identical writes");
    }
    let mut leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    leftovers.sort();
    assert_eq!(leftovers, ["a", "b"]);
    let loaded = load_model_dir(&a, &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.config, written);
    let tok = ChatTokenizer::from_dir(&a).unwrap();
    assert!(tok.vocab_size() <= 400);
    let ids = tok
        .encode_chat(
            &[ChatMessage::user("What is 2 + 2?")],
            &[calculator_tool()],
            true,
        )
        .unwrap();
    let input = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = loaded.model.forward(&input, None).unwrap();
    assert_eq!(logits.dims(), [1, ids.len(), 400]);

    // Too small a vocabulary for a byte-level tokenizer is a clear error.
    let err = write_tiny_model_dir(
        &dir.path().join("c"),
        &Qwen3Config::tiny(100, 64, 2),
        CORPUS,
        7,
    )
    .unwrap_err();
    assert!(
        matches!(err, ModelError::Input(ref m) if m.contains("vocab_size")),
        "{err}"
    );
}

#[test]
fn tokenizer_config_variants() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = train_tiny_tokenizer(CORPUS, 300).unwrap();
    let tj = dir.path().join("tokenizer.json");
    tokenizer.save(&tj, false).unwrap();
    let cfg = dir.path().join("tokenizer_config.json");

    // A list of named templates, AddedToken-style eos.
    std::fs::write(
        &cfg,
        json!({
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"}],
            "eos_token": {"content": "<|im_end|>", "special": true},
        })
        .to_string(),
    )
    .unwrap();
    let tok = ChatTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(
        tok.render_chat(&[ChatMessage::user("x")], &[], false)
            .unwrap(),
        "[user:x]"
    );
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));

    // No chat template: the built-in one.
    std::fs::write(&cfg, json!({"eos_token": "<|im_end|>"}).to_string()).unwrap();
    assert!(
        ChatTokenizer::from_dir(dir.path())
            .unwrap()
            .uses_builtin_template()
    );

    // Errors name the problem.
    std::fs::write(&cfg, json!({"eos_token": "<nope>"}).to_string()).unwrap();
    let err = ChatTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("<nope>"), "{err}");
    std::fs::write(&cfg, json!({"chat_template": "{% for %}"}).to_string()).unwrap();
    assert!(matches!(
        ChatTokenizer::from_dir(dir.path()),
        Err(ModelError::Template(_))
    ));
    std::fs::write(&cfg, "{").unwrap();
    assert!(matches!(
        ChatTokenizer::from_dir(dir.path()),
        Err(ModelError::Json { .. })
    ));
    std::fs::remove_file(&tj).unwrap();
    let err = ChatTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn qwen3_style_template_features_render() {
    // Constructs used by Qwen3's own template: namespaces, reversed slices, string methods, `is string`,
    // loop.index0, tojson, inline if.
    let template = r#"{%- set ns = namespace(last=-1) %}
{%- for m in messages[::-1] %}
{%- if ns.last == -1 and m.role == 'user' and not (m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>')) %}{% set ns.last = (messages|length - 1) - loop.index0 %}{% endif %}
{%- endfor %}
{%- for m in messages %}
{%- if m.content is string %}{% set c = m.content %}{% else %}{% set c = '' %}{% endif %}
{%- if '</think>' in c %}{% set c = c.split('</think>')[-1].lstrip('\n') %}{% endif %}
<{{ m.role }}{{ '*' if loop.index0 == ns.last else '' }}>{{ c.rstrip() }}{% if m.tool_calls %}{% for t in m.tool_calls %}{{ t.function.arguments | tojson }}{% endfor %}{% endif %}
{%- endfor %}"#;
    let tok = ChatTokenizer::new(
        train_tiny_tokenizer(CORPUS, 300).unwrap(),
        Some(template),
        None,
        None,
    )
    .unwrap();
    let messages = vec![
        ChatMessage::user("first"),
        ChatMessage::assistant("<think>x</think>\n\nshown  "),
        ChatMessage::user("second"),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall {
                name: "f".into(),
                arguments: json!({"a": 1}),
            }],
        ),
        ChatMessage::user("<tool_response>\n1\n</tool_response>"),
    ];
    let text = tok.render_chat(&messages, &[], false).unwrap();
    assert_eq!(
        text,
        "<user>first<assistant>shown<user*>second<assistant>{\"a\": 1}<user><tool_response>\n1\n</tool_response>"
    );
}

#[test]
fn qwen_style_pre_tokenizer_loads_with_the_fancy_regex_backend() {
    // Qwen2/Qwen3 tokenizer.json files use an NFC normalizer and a Split pre-tokenizer with look-ahead and
    // case-insensitive groups before a regex-free ByteLevel; make sure such a file loads and round-trips without
    // the onig backend.
    let tokenizer = train_tiny_tokenizer(CORPUS, 320).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&tokenizer.to_string(false).unwrap()).unwrap();
    json["normalizer"] = json!({"type": "NFC"});
    json["pre_tokenizer"] = json!({
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        ],
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
    let tok = ChatTokenizer::from_dir(dir.path()).unwrap();
    let text = "<|im_start|>user\nIt's 12345 — déjà vu?\n\n  x<|im_end|>\n";
    let ids = tok.encode(text).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    // Digits are split one by one by this pattern.
    let digits = tok.encode("12345").unwrap();
    assert_eq!(digits.len(), 5, "{digits:?}");
}

#[test]
fn continuation_of_a_tool_turn() {
    let tok = ChatTokenizer::new(
        train_tiny_tokenizer(CORPUS, 380).unwrap(),
        None,
        Some("<|im_end|>"),
        Some("<|endoftext|>"),
    )
    .unwrap();
    let tools = [calculator_tool()];
    let conversation = tool_conversation();
    let history = &conversation[..3];
    let continuation = tok
        .render_continuation(history, &conversation[3..4], &tools, true)
        .unwrap();
    assert_eq!(
        continuation,
        "<|im_start|>user\n<tool_response>\n391\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    );
    // Token ids: prompt + generated assistant turn (ending at <|im_end|>) + "\n" + continuation equal the ids of
    // the full rendering.
    let prompt = tok
        .encode(&tok.render_chat(&conversation[..2], &tools, true).unwrap())
        .unwrap();
    let full_text = tok.render_chat(history, &tools, false).unwrap();
    let prompt_text = tok.render_chat(&conversation[..2], &tools, true).unwrap();
    let generated_text = full_text
        .strip_prefix(prompt_text.as_str())
        .unwrap()
        .strip_suffix('\n')
        .unwrap();
    assert!(generated_text.ends_with("<|im_end|>"));
    let mut ids = prompt.clone();
    ids.extend(tok.encode(generated_text).unwrap());
    ids.extend(tok.encode(&format!("\n{continuation}")).unwrap());
    let whole = tok.render_chat(&conversation[..4], &tools, true).unwrap();
    assert_eq!(ids, tok.encode(&whole).unwrap());

    // A template that rewrites earlier turns is refused.
    let unstable = ChatTokenizer::new(
        train_tiny_tokenizer(CORPUS, 300).unwrap(),
        Some("{{ messages | length }}{% for m in messages %}{{ m.content }}{% endfor %}"),
        None,
        None,
    )
    .unwrap();
    let err = unstable
        .render_continuation(
            &[ChatMessage::user("a")],
            &[ChatMessage::user("b")],
            &[],
            false,
        )
        .unwrap_err();
    assert!(matches!(err, ModelError::Template(_)), "{err}");
}
