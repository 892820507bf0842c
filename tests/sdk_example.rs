//! The SDK's example tool (examples/word-count-tool), built by `cargo xtask build-tools` for
//! wasm32-wasip2, loads and answers through the sandbox: the path a tool author follows.

use sod_sandbox::{CallOptions, OutcomeKind, Sandbox};
use sod_tests::{artifact, test_config};

#[test]
fn word_count_example_builds_describes_and_answers() {
    let sandbox = Sandbox::new(test_config()).expect("sandbox");
    let tool = sandbox
        .load_tool(&artifact("tools/word-count.wasm"))
        .expect("the example loads as a sod tool");
    let descriptor = tool.descriptor();
    assert_eq!(descriptor.name, "word-count");
    // The schema comes from the typed argument struct.
    assert_eq!(
        descriptor.parameters["required"],
        serde_json::json!(["text"])
    );
    assert!(descriptor.parameters["properties"]["top"].is_object());
    let schema = descriptor.function_schema();
    assert_eq!(schema["function"]["name"], "word-count");

    let outcome = sandbox.call(
        &tool,
        r#"{"text": "the cat and the hat\nthe end", "top": 2}"#,
        &CallOptions::default(),
    );
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    assert_eq!(
        outcome.output,
        "words: 7\nlines: 2\ncharacters: 27\nthe: 3\nand: 1"
    );

    let bad = sandbox.call(&tool, r#"{"txt": "typo"}"#, &CallOptions::default());
    assert_eq!(bad.kind, OutcomeKind::ToolError);
    assert_eq!(bad.error_code.as_deref(), Some("invalid_arguments"));
}
