//! Keeps `include/sod_loss.h` in sync with the Rust ABI: compiles a C program against the header
//! that prints every struct size, field offset and constant, and compares with the Rust values.

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use sod_loss_abi::*;

/// One checked quantity: a label, the C expression giving it, and the Rust value.
struct Check {
    label: String,
    c_expr: String,
    rust: u64,
}

macro_rules! layout {
    ($checks:ident, $ty:ident { $($field:ident),* $(,)? }) => {
        $checks.push(Check {
            label: format!("sizeof {}", stringify!($ty)),
            c_expr: format!("sizeof({})", stringify!($ty)),
            rust: size_of::<$ty>() as u64,
        });
        $(
            $checks.push(Check {
                label: format!("offsetof {}.{}", stringify!($ty), stringify!($field)),
                c_expr: format!("offsetof({}, {})", stringify!($ty), stringify!($field)),
                rust: offset_of!($ty, $field) as u64,
            });
        )*
    };
}

macro_rules! constant {
    ($checks:ident, $name:ident) => {
        $checks.push(Check {
            label: stringify!($name).to_string(),
            c_expr: format!("(unsigned long long)(long long)({})", stringify!($name)),
            rust: $name as i64 as u64,
        });
    };
}

fn checks() -> Vec<Check> {
    let mut checks = Vec::new();
    layout!(checks, SodLossErrorBuf { message, capacity });
    layout!(checks, SodLossSetting { key, value });
    layout!(
        checks,
        SodLossRequirements {
            needs_teacher,
            data_source,
            min_group_size,
            reserved,
            divergence,
            top_k,
            beta
        }
    );
    layout!(
        checks,
        SodLossBatch {
            num_tokens,
            num_sequences,
            old_logprob,
            cur_logprob,
            teacher_logprob,
            mask,
            step_index,
            seq_offsets,
            reward,
            group,
            flags,
            divergence,
        }
    );
    layout!(
        checks,
        SodLossOutput {
            advantages,
            metric_ctx,
            emit_metric,
            divergence_weights
        }
    );
    layout!(
        checks,
        SodLossPlugin {
            abi_version,
            reserved,
            name,
            description,
            create,
            requirements,
            compute,
            destroy
        }
    );
    constant!(checks, SOD_LOSS_ABI_VERSION);
    constant!(checks, SOD_LOSS_ABI_VERSION_MIN);
    constant!(checks, SOD_LOSS_DIVERGENCE_NONE);
    constant!(checks, SOD_LOSS_DIVERGENCE_REVERSE_KL);
    constant!(checks, SOD_LOSS_DIVERGENCE_FORWARD_KL);
    constant!(checks, SOD_LOSS_DIVERGENCE_JSD);
    constant!(checks, SOD_LOSS_NO_STEP);
    constant!(checks, SOD_LOSS_FLAG_TRUNCATED);
    constant!(checks, SOD_LOSS_FLAG_INFRA_FAULT);
    constant!(checks, SOD_LOSS_FLAG_ALL);
    constant!(checks, SOD_LOSS_DATA_ON_POLICY);
    constant!(checks, SOD_LOSS_DATA_OFFLINE);
    constant!(checks, SOD_LOSS_OK);
    constant!(checks, SOD_LOSS_ERR_CONFIG);
    constant!(checks, SOD_LOSS_ERR_BATCH);
    constant!(checks, SOD_LOSS_ERR_COMPUTE);
    constant!(checks, SOD_LOSS_ERR_PANIC);
    checks
}

fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

#[test]
fn c_header_matches_the_rust_abi() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let checks = checks();
    let mut program =
        String::from("#include <stdio.h>\n#include <string.h>\n#include \"sod_loss.h\"\n");
    // Declaring the entry function with the header's type catches a drift in its signature.
    program.push_str("static SodLossEntryFn entry_type_check = sod_loss_plugin;\n");
    program.push_str("const SodLossPlugin *sod_loss_plugin(void) { return 0; }\n");
    program.push_str("int main(void) {\n  (void)entry_type_check;\n");
    for check in &checks {
        program.push_str(&format!(
            "  printf(\"%s=%llu\\n\", \"{}\", (unsigned long long)({}));\n",
            check.label, check.c_expr
        ));
    }
    program.push_str(
        "  printf(\"SOD_LOSS_ENTRY_SYMBOL=%s\\n\", SOD_LOSS_ENTRY_SYMBOL);\n  return 0;\n}\n",
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let source = dir.path().join("layout.c");
    let binary = dir.path().join("layout");
    std::fs::write(&source, program).expect("write the C program");
    let status = Command::new(compiler())
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{}` (set CC): {e}", compiler()));
    assert!(
        status.success(),
        "the C layout program did not compile against sod_loss.h"
    );
    let output = Command::new(&binary)
        .output()
        .expect("run the C layout program");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("UTF-8 output");

    let mut expected: Vec<String> = checks
        .iter()
        .map(|c| format!("{}={}", c.label, c.rust))
        .collect();
    expected.push(format!("SOD_LOSS_ENTRY_SYMBOL={SOD_LOSS_ENTRY_SYMBOL}"));
    let actual: Vec<&str> = printed.lines().collect();
    let mismatches: Vec<String> = expected
        .iter()
        .zip(&actual)
        .filter(|(e, a)| e.as_str() != **a)
        .map(|(e, a)| format!("Rust {e} but C {a}"))
        .collect();
    assert_eq!(
        actual.len(),
        expected.len(),
        "the C program printed {printed}"
    );
    assert!(
        mismatches.is_empty(),
        "sod_loss.h drifted from the Rust ABI:\n{}",
        mismatches.join("\n")
    );
}
