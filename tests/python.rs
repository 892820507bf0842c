//! The python tool (tools/python: CPython 3.14 on WASI via componentize-py, with sympy and
//! mpmath preloaded), end to end through the sandbox: the acceptance cases of its issue.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;
use sod_sandbox::{CallOptions, Limits, Outcome, OutcomeKind, Sandbox, Tool};
use sod_tests::{artifact, sod_binary, target_dir, test_config};

/// A sandbox of this test binary with the python tool loaded (compiling it takes seconds, so
/// it is done once).
fn python() -> &'static (Sandbox, Tool) {
    static PYTHON: OnceLock<(Sandbox, Tool)> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let sandbox = Sandbox::new(test_config()).expect("sandbox");
        let tool = sandbox
            .load_tool(&artifact("tools/python.wasm"))
            .expect("load tools/python.wasm");
        (sandbox, tool)
    })
}

fn call_args(arguments: serde_json::Value, options: &CallOptions) -> Outcome {
    let (sandbox, tool) = python();
    sandbox.call(tool, &arguments.to_string(), options)
}

fn call(code: &str) -> Outcome {
    call_args(json!({ "code": code }), &CallOptions::default())
}

/// Runs `code` in a fresh instance under `limits`.
fn with_limits(code: &str, limits: Limits) -> Outcome {
    let options = CallOptions {
        limits: Some(limits),
        ..CallOptions::default()
    };
    call_args(json!({ "code": code }), &options)
}

/// Runs `code` in a fresh instance and returns its output, asserting the call ended `ok`.
fn ok(code: &str) -> String {
    let outcome = call(code);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{code}\n{outcome:#?}");
    outcome.output
}

/// Runs `code` in session `id`: the host keeps the instance (CallOptions::session), the guest
/// keeps the namespace (the `session` argument).
fn in_session(id: &str, code: &str) -> Outcome {
    in_session_with(id, code, None)
}

fn in_session_with(id: &str, code: &str, limits: Option<Limits>) -> Outcome {
    let options = CallOptions {
        session: Some(id.to_string()),
        limits,
        ..CallOptions::default()
    };
    call_args(json!({ "code": code, "session": id }), &options)
}

#[test]
fn describes_itself() {
    let descriptor = python().1.descriptor();
    assert_eq!(descriptor.name, "python");
    assert_eq!(descriptor.parameters["required"], json!(["code"]));
    assert_eq!(
        descriptor.parameters["properties"]["session"]["type"],
        "string"
    );
    assert!(
        descriptor.description.contains("sympy"),
        "{}",
        descriptor.description
    );
}

#[test]
fn prints() {
    assert_eq!(ok("print(1+1)"), "2\n");
}

#[test]
fn last_expression_and_fenced_block() {
    assert_eq!(ok("x = 6\nx * 7"), "42\n");
    assert_eq!(ok("print('a')\nNone"), "a\n");
    assert_eq!(
        ok("I will compute it.\n```python\nprint(2**10)\n```\n```python\nprint('second')\n```"),
        "1024\n"
    );
}

#[test]
fn sympy_solve() {
    assert_eq!(
        ok("from sympy import symbols, solve\nx = symbols('x')\nsolve(x**2 - 5*x + 6, x)"),
        "[2, 3]\n"
    );
}

#[test]
fn sympy_lazy_submodules_are_preloaded() {
    let code = "from sympy import *\nx, n = symbols('x n')\n\
                print(integrate(1/(1 + x**2), (x, 0, oo)))\n\
                print(Matrix([[1, 2], [3, 4]]).eigenvals())\n\
                print(limit((1 + 1/n)**n, n, oo))\n\
                print(series(cos(x), x, 0, 5))\n\
                print(factorint(2**20 - 1), isprime(2**31 - 1))\n\
                from sympy.abc import y\nfrom sympy.physics.units import meter\n\
                print(simplify((y**2 - 1)/(y - 1)), meter)\n\
                import mpmath\nprint(mpmath.mpf(2).sqrt())";
    assert_eq!(
        ok(code),
        "pi/2\n{5/2 - sqrt(33)/2: 1, 5/2 + sqrt(33)/2: 1}\nE\n1 - x**2/2 + x**4/24 + O(x**5)\n\
         {3: 1, 5: 2, 11: 1, 31: 1, 41: 1} True\ny + 1 meter\n1.4142135623731\n"
    );
}

#[test]
fn stdlib_is_preloaded() {
    let code = "import json, fractions, decimal, heapq, bisect, datetime, statistics, re, \
                itertools, collections, functools, math, cmath, string, textwrap, random\n\
                print(json.dumps({'a': 1}), fractions.Fraction(2, 4), decimal.Decimal('0.1') * 3)\n\
                print(statistics.median([3, 1, 2]), math.isqrt(99), datetime.date(2000, 1, 1).isoweekday())";
    assert_eq!(ok(code), "{\"a\": 1} 1/2 0.3\n2 9 6\n");
}

#[test]
fn errors_are_readable_tracebacks() {
    let output = ok("def f(d):\n    return d['k']\nprint('before')\nf({})");
    assert!(
        output.starts_with("before\nTraceback (most recent call last):\n"),
        "{output}"
    );
    assert!(
        output.contains("  File \"<code>\", line 2, in f\n    return d['k']\n"),
        "{output}"
    );
    assert!(output.ends_with("KeyError: 'k'\n"), "{output}");
    assert!(
        !output.contains(".py\""),
        "library frames must be hidden: {output}"
    );
    let output = ok("x = (1,");
    assert!(output.contains("SyntaxError"), "{output}");
}

#[test]
fn exits_end_the_code_quietly() {
    assert_eq!(ok("print(1)\nimport sys\nsys.exit()\nprint(2)"), "1\n");
    assert_eq!(ok("print(1)\nexit(0)"), "1\n");
    assert_eq!(ok("import sys\nsys.exit(2)"), "SystemExit: 2\n");
    // os._exit would end the instance with a trap under WASI; here it is a plain exit.
    assert_eq!(ok("import os\nprint(3)\nos._exit(0)"), "3\n");
}

#[test]
fn an_exit_with_a_status_is_carried_in_the_outcome() {
    // `os._exit` raises SystemExit here (above); the real one, `posix._exit`, ends the instance. WASI preview 2
    // carries only success or failure, so 7 arrives as 1.
    for (code, status) in [("posix._exit(7)", 1), ("posix._exit(0)", 0)] {
        let exited = call(&format!("import posix\n{code}"));
        assert_eq!(exited.kind, OutcomeKind::Crashed, "{exited:#?}");
        assert_eq!(exited.exit_status, Some(status), "{exited:#?}");
        // The message a model reads still names it.
        let message = exited.message.as_deref().unwrap_or("");
        assert!(
            message.starts_with(&format!("the tool exited with status {status}")),
            "{message}"
        );
    }
    let trapped = call("import posix\nposix.abort()");
    assert_eq!(trapped.kind, OutcomeKind::Crashed, "{trapped:#?}");
    assert_eq!(trapped.exit_status, None, "{trapped:#?}");
}

#[test]
fn invalid_arguments_are_tool_errors() {
    for arguments in [
        json!({}),
        json!({ "code": 1 }),
        json!({ "code": "1", "extra": true }),
    ] {
        let outcome = call_args(arguments.clone(), &CallOptions::default());
        assert_eq!(
            outcome.kind,
            OutcomeKind::ToolError,
            "{arguments}: {outcome:?}"
        );
        assert_eq!(
            outcome.error_code.as_deref(),
            Some("invalid_arguments"),
            "{outcome:?}"
        );
    }
}

#[test]
fn session_keeps_state() {
    let first = in_session(
        "python-test-session",
        "x = 41\ndef g():\n    raise ValueError('in g')",
    );
    assert_eq!(first.kind, OutcomeKind::Ok, "{first:?}");
    assert_eq!(first.output, "");
    let second = in_session("python-test-session", "x + 1");
    assert_eq!(
        (second.kind, second.output.as_str()),
        (OutcomeKind::Ok, "42\n"),
        "{second:?}"
    );
    // A function from an earlier cell shows its source in a later cell's traceback.
    let third = in_session("python-test-session", "g()");
    assert!(
        third.output.contains("File \"<cell 1>\", line 3, in g\n"),
        "{}",
        third.output
    );
    // Another session does not see it.
    let other = in_session("python-test-other", "x");
    assert!(other.output.contains("NameError"), "{other:?}");
}

#[test]
fn session_survives_a_memory_error_and_restarts_after_a_crash() {
    let id = "python-test-robust";
    assert_eq!(in_session(id, "kept = 'yes'").kind, OutcomeKind::Ok);
    let limits = Limits {
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let refused = in_session_with(id, "b = bytearray(400 * 2**20)", Some(limits));
    assert_eq!(refused.kind, OutcomeKind::MemoryLimit, "{refused:?}");
    assert!(refused.output.contains("MemoryError"), "{refused:?}");
    // CPython recovered from the MemoryError: the session's state is intact.
    let after = in_session(id, "kept");
    assert_eq!(
        (after.kind, after.output.as_str()),
        (OutcomeKind::Ok, "yes\n"),
        "{after:?}"
    );
    // Native (C-level) recursion is not bounded by the recursion limit and overflows the wasm
    // stack: the instance traps, and the next call of the session starts from scratch.
    let crash = in_session(id, "a = []\nfor _ in range(200000):\n    a = [a]\nrepr(a)");
    assert_eq!(crash.kind, OutcomeKind::Crashed, "{crash:?}");
    let fresh = in_session(id, "kept");
    assert!(fresh.output.contains("NameError"), "{fresh:?}");
}

#[test]
fn no_session_no_state() {
    assert_eq!(ok("x = 41"), "");
    let output = ok("x + 1");
    assert!(
        output.ends_with("NameError: name 'x' is not defined\n"),
        "{output}"
    );
}

#[test]
fn numpy_is_unavailable_with_a_clear_message() {
    let output = ok("import numpy as np");
    assert!(
        output.contains("ModuleNotFoundError: numpy is not available"),
        "{output}"
    );
    assert!(
        output.contains("sympy") && output.contains("mpmath"),
        "{output}"
    );
    let output = ok("import requests_of_some_kind");
    assert!(output.contains("only modules preloaded"), "{output}");
}

#[test]
fn files_stay_in_the_tools_own_filesystem() {
    let output = ok("open('/etc/passwd').read()");
    assert!(output.contains("FileNotFoundError"), "{output}");
    let output = ok("open('../../../../etc/hostname').read()");
    assert!(output.contains("Error"), "{output}");
    assert_eq!(
        ok("with open('notes.txt', 'w') as f:\n    f.write('hi')\nprint(open('notes.txt').read())"),
        "hi\n"
    );
}

#[test]
fn no_network_processes_or_threads() {
    for (code, expected) in [
        (
            "import socket",
            "ModuleNotFoundError: socket is not available",
        ),
        (
            "import subprocess",
            "ModuleNotFoundError: subprocess is not available",
        ),
        (
            "import multiprocessing",
            "ModuleNotFoundError: multiprocessing is not available",
        ),
        (
            "import ctypes",
            "ModuleNotFoundError: ctypes is not available",
        ),
        (
            "import threading\nthreading.Thread(target=print).start()",
            "RuntimeError: can't start new thread",
        ),
        ("import os\nos.system('ls')", "AttributeError"),
        (
            "import os\nos.abort()",
            "RuntimeError: os.abort() is not available",
        ),
    ] {
        let output = ok(code);
        assert!(output.contains(expected), "{code}: {output}");
    }
}

#[test]
fn deep_recursion_is_a_recursion_error() {
    let limit: u32 = ok("import sys\nsys.getrecursionlimit()")
        .trim()
        .parse()
        .expect("a number");
    assert!(
        limit >= 1000,
        "recursion limit {limit} below CPython's default"
    );
    let recursion_error = "RecursionError: maximum recursion depth exceeded\n";
    let output = ok("def f(n):\n    return f(n + 1)\nf(0)");
    assert!(output.ends_with(recursion_error), "{output}");
    // Raising the limit is clamped, so the wasm stack still cannot overflow.
    let code = "import sys\nsys.setrecursionlimit(10**6)\nprint(sys.getrecursionlimit())\n\
                def f(n):\n    return f(n + 1)\nf(0)";
    let output = ok(code);
    assert!(output.starts_with(&format!("{limit}\n")), "{output}");
    assert!(output.ends_with(recursion_error), "{output}");
    // Recursion that re-enters the interpreter through C on every level (the memoising
    // decorators) uses the most wasm stack per level: still an error, not a trap.
    let code = "import sys, functools\nsys.setrecursionlimit(10**6)\n@functools.cache\n\
                def g(n):\n    return 0 if n == 0 else 1 + g(n - 1)\ng(10**5)";
    let output = ok(code);
    assert!(output.ends_with(recursion_error), "{output}");
    // Recursion that stays within the limit works, memoised or not.
    let depth = limit - 100;
    let code = format!(
        "import functools\ndef d(n):\n    return 0 if n == 0 else 1 + d(n - 1)\n\
         @functools.lru_cache(maxsize=None)\ndef m(n):\n    return 0 if n == 0 else 1 + m(n - 1)\n\
         print(d({depth}), m({depth}))"
    );
    assert_eq!(ok(&code), format!("{depth} {depth}\n"));
}

#[test]
fn memory_exhaustion_is_a_memory_error() {
    let limits = Limits {
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let outcome = with_limits("b = bytearray(400 * 2**20)", limits);
    assert_eq!(outcome.kind, OutcomeKind::MemoryLimit, "{outcome:?}");
    assert!(outcome.output.contains("MemoryError"), "{outcome:?}");
}

#[test]
fn endless_loop_hits_the_time_limit() {
    let limits = Limits {
        fuel: 2_000_000_000,
        ..Limits::default()
    };
    let outcome = with_limits("while True:\n    pass", limits);
    assert_eq!(outcome.kind, OutcomeKind::TimeLimit, "{outcome:?}");
}

#[test]
fn output_is_capped_in_the_guest() {
    let outcome = call(
        "for i in range(10**5):\n    print(i)\nprint('not lost', file=__import__('sys').stderr)",
    );
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    assert!(
        outcome.output.ends_with("\n[output truncated]\nnot lost\n"),
        "{}",
        &outcome.output[outcome.output.len() - 80..]
    );
    assert!(outcome.output.len() <= 64 << 10, "{}", outcome.output.len());
}

const DETERMINISM_PROBE: &str = "import random, os, uuid, time, datetime\n\
    print(random.random(), random.randint(0, 10**9), os.urandom(8).hex(), uuid.uuid4())\n\
    t0, m0 = time.time(), time.monotonic()\n\
    time.sleep(2)\n\
    print(t0, time.monotonic() - m0 >= 2, datetime.datetime.now().year >= 2000)\n\
    print(hash('abc'), hash(('x', 1.5)), list({'apple', 'banana', 'cherry', 'date'}))\n\
    print([id(object()) % 1000 for _ in range(3)])";

#[test]
fn reruns_are_byte_identical() {
    let first = call(DETERMINISM_PROBE);
    assert_eq!(first.kind, OutcomeKind::Ok, "{first:?}");
    let again = call(DETERMINISM_PROBE);
    assert_eq!(first, again);
    // A second sandbox (nothing shared but the artifact) gives the same bytes.
    let other = Sandbox::new(test_config()).expect("sandbox");
    let tool = other
        .load_tool(&artifact("tools/python.wasm"))
        .expect("load");
    let arguments = json!({ "code": DETERMINISM_PROBE }).to_string();
    assert_eq!(
        other.call(&tool, &arguments, &CallOptions::default()),
        first
    );
    // Randomness does come from the host's seed: another seed changes it, not hash().
    let reseeded = call_args(
        json!({ "code": DETERMINISM_PROBE }),
        &CallOptions {
            seed: Some(7),
            ..CallOptions::default()
        },
    );
    let lines = |o: &Outcome| o.output.lines().map(str::to_string).collect::<Vec<_>>();
    assert_ne!(lines(&reseeded)[0], lines(&first)[0]);
    assert_eq!(lines(&reseeded)[2], lines(&first)[2]);
}

#[test]
fn reruns_are_byte_identical_across_processes() {
    let arguments = json!({ "code": DETERMINISM_PROBE }).to_string();
    let run = || {
        let output = Command::new(sod_binary())
            .args(["tool", "call", "python", &arguments])
            .env("SOD_TOOLS_DIR", target_dir().join("tools"))
            .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
            .output()
            .expect("run sod");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let first = run();
    let outcome: serde_json::Value = serde_json::from_slice(&first).expect("one JSON outcome");
    assert_eq!(outcome["kind"], "ok", "{outcome}");
    assert_eq!(run(), first);
}

/// Instances made ahead of their calls (the default) give byte-identical outcomes to instances made at the
/// call, for every limit a call can set; and a call whose limits the waiting instance already exceeds gets a
/// fresh one.
#[test]
fn instances_made_ahead_give_the_same_outcomes_as_fresh_ones() {
    let make = |ahead: bool| {
        let sandbox = Sandbox::new(sod_sandbox::SandboxConfig {
            instances_ahead: ahead,
            ..test_config()
        })
        .expect("sandbox");
        let python = sandbox
            .load_tool(&artifact("tools/python.wasm"))
            .expect("python");
        let calculator = sandbox
            .load_tool(&artifact("tools/calculator.wasm"))
            .expect("calculator");
        (sandbox, python, calculator)
    };
    let (ahead, python_ahead, calculator_ahead) = make(true);
    let (fresh, python_fresh, calculator_fresh) = make(false);
    let limited = |change: fn(&mut Limits)| {
        let mut limits = Limits::default();
        change(&mut limits);
        CallOptions {
            limits: Some(limits),
            ..CallOptions::default()
        }
    };
    let seeded = CallOptions {
        seed: Some(7),
        ..CallOptions::default()
    };
    let randomness = "import random, time, os, uuid\n\
        print(random.random(), time.time(), time.monotonic(), hash('sod'), os.urandom(8).hex(), uuid.uuid4())";
    let python = |code: &str| ("python", json!({ "code": code }));
    let cases = [
        (python(randomness), CallOptions::default()),
        // Same code, another seed: different numbers, the same on both paths.
        (python(randomness), seeded),
        (python("print(1+1)"), limited(|l| l.fuel = 50_000)),
        (python("while True: pass"), limited(|l| l.fuel = 20_000_000)),
        (
            python("x = bytearray(10**9)"),
            limited(|l| l.memory_bytes = 256 << 20),
        ),
        (python("print(1)"), limited(|l| l.memory_bytes = 1 << 20)),
        (
            python("print('x' * 10**6)"),
            limited(|l| l.output_bytes = 1000),
        ),
        (python("1/0"), CallOptions::default()),
        (
            ("calculator", json!({"expression": "2^200 // 3"})),
            CallOptions::default(),
        ),
    ];
    for round in 0..2 {
        for ((tool, arguments), options) in &cases {
            let (a, f) = match *tool {
                "python" => (&python_ahead, &python_fresh),
                _ => (&calculator_ahead, &calculator_fresh),
            };
            let arguments = arguments.to_string();
            let on_ahead = ahead.call(a, &arguments, options);
            let on_fresh = fresh.call(f, &arguments, options);
            assert_eq!(
                on_ahead, on_fresh,
                "round {round}: {tool} {arguments} {options:?}"
            );
        }
    }
    let (used, set_aside) = ahead.instances_ahead_counts();
    assert!(used > 0, "calls ran on instances made ahead: {used}");
    assert!(
        set_aside > 0,
        "a 1 MiB memory limit or a tiny fuel limit cannot take a waiting instance"
    );
    assert_eq!(fresh.instances_ahead_counts(), (0, 0));
}

/// The python tool with explicit file quotas.
fn with_fs(code: &str, fs: sod_sandbox::FsLimits) -> Outcome {
    with_limits(
        code,
        Limits {
            fs,
            ..Limits::default()
        },
    )
}

/// Code that creates files and directories in a scrambled order and prints what `os` reports of them.
const LISTING: &str = "import os\n\
for name in ['zeta', 'Alpha', 'mid', '10', '9', 'beta']:\n    open(name, 'w').write(name * 3)\n\
os.mkdir('sub')\nopen('sub/inner.txt', 'wb').write(b'x' * 1000)\n\
print(os.listdir('.'))\nprint(sorted(os.listdir('.')) == os.listdir('.'))\n\
for name in ['zeta', 'sub', 'sub/inner.txt', '.']:\n    st = os.stat(name)\n    \
print(name, st.st_ino, st.st_dev, st.st_nlink, st.st_size, st.st_mode, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)\n\
print([e.name for e in os.scandir('.')])";

#[test]
fn listings_and_stat_are_a_function_of_the_call() {
    let first = call(LISTING);
    assert_eq!(first.kind, OutcomeKind::Ok, "{first:?}");
    let lines: Vec<&str> = first.output.lines().collect();
    // Sorted by name (bytes), whatever the creation order; scandir agrees.
    assert_eq!(
        lines[0], "['10', '9', 'Alpha', 'beta', 'mid', 'sub', 'zeta']",
        "{}",
        first.output
    );
    assert_eq!(lines[1], "True");
    assert_eq!(lines[6], lines[0]);
    // Inodes count up in creation order; times are the virtual clock's (2024-01-01, not the host's).
    let zeta: Vec<u64> = lines[2]
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().expect("number"))
        .collect();
    assert_eq!((zeta[0], zeta[2], zeta[3]), (2, 1, 12), "{}", lines[2]);
    let epoch_ns = sod_sandbox::EPOCH_UNIX_SECONDS * 1_000_000_000;
    for time in &zeta[5..] {
        assert!(
            *time >= epoch_ns && *time < epoch_ns + 60_000_000_000,
            "{}",
            lines[2]
        );
    }
    let sub: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!((sub[1], sub[3], sub[4]), ("8", "2", "0"), "{}", lines[3]);
    // The same bytes in a second sandbox (another engine and pool, as a second process would have).
    let other = Sandbox::new(test_config()).expect("sandbox");
    let tool = other
        .load_tool(&artifact("tools/python.wasm"))
        .expect("load");
    let second = other.call(
        &tool,
        &json!({ "code": LISTING }).to_string(),
        &CallOptions::default(),
    );
    assert_eq!(second.to_json(), first.to_json());
}

#[test]
fn each_quota_gives_its_errno_and_the_call_goes_on() {
    let fs = sod_sandbox::FsLimits {
        max_bytes: 1 << 20,
        max_file_bytes: 256 << 10,
        max_nodes: 50,
        max_name_bytes: 32,
        max_depth: 6,
        ..sod_sandbox::FsLimits::default()
    };
    // Operations on descriptors and paths report the quota's own code. A write() through CPython's
    // preview-1 adapter (componentize-py 0.25.1) reports EIO: that adapter maps every stream error to EIO,
    // whatever code the sandbox gives (docs/sandbox.md, "Files").
    let code = "import errno, os\n\
def attempt(label, f):\n    try:\n        f()\n        print(label, 'ok')\n    except OSError as e:\n        print(label, errno.errorcode[e.errno])\n\
attempt('file too large', lambda: open('big', 'wb').truncate(300 << 10))\n\
def fill():\n    for i in range(5):\n        fd = os.open(f'part{i}', os.O_WRONLY | os.O_CREAT)\n        try:\n            os.pwrite(fd, b'y' * (250 << 10), 0)\n        finally:\n            os.close(fd)\n\
attempt('bytes', fill)\n\
def write():\n    with open('w.bin', 'wb') as f:\n        f.write(b'x' * (200 << 10))\n\
attempt('write', write)\n\
for name in os.listdir('.'):\n    if name != 'big':\n        os.remove(name)\n\
def many():\n    for i in range(100):\n        open(f'n{i}', 'w').close()\n\
attempt('depth', lambda: os.makedirs('a/b/c/d/e/f/g'))\n\
attempt('name', lambda: open('n' * 40, 'w'))\n\
attempt('files', many)\n\
attempt('escape', lambda: open('../outside', 'w'))\n\
print(len(os.listdir('.')), 'alive')";
    let outcome = with_fs(code, fs);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    let lines: Vec<&str> = outcome.output.lines().collect();
    assert_eq!(
        lines,
        [
            "file too large EFBIG",
            "bytes ENOSPC",
            "write EIO",
            "depth ENAMETOOLONG",
            "name ENAMETOOLONG",
            "files EDQUOT",
            "escape EPERM",
            // 50 nodes: `big` (empty), `a` to `a/b/c/d/e/f`, `n0` to `n42`.
            "45 alive",
        ],
        "{}",
        outcome.output
    );
    assert_eq!(with_fs(code, fs).to_json(), outcome.to_json());
}

#[test]
fn a_2gb_write_ends_by_quota_in_memory() {
    let code = "import errno\nwritten = 0\nchunk = b'z' * (1 << 20)\n\
try:\n    with open('big.bin', 'wb') as f:\n        for _ in range(2048):\n            f.write(chunk)\n            written += len(chunk)\n\
except OSError as e:\n    print('stopped', errno.errorcode[e.errno], written >> 20)\n\
import os\nprint(os.path.getsize('big.bin'))\n\
for grow in (lambda f: f.truncate(2 << 30), lambda f: (f.seek(2 << 30), f.write(b'!'))):\n    \
try:\n        with open('sparse.bin', 'wb') as f:\n            grow(f)\n        print('grew')\n    except OSError as e:\n        print('refused', errno.errorcode[e.errno])";
    let outcome = call(code);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    let lines: Vec<&str> = outcome.output.lines().collect();
    // 64 MiB by default: the write stops at the quota (EIO through CPython's adapter, see above) having
    // stored what fits; growing a file past its size limit is EFBIG.
    assert!(lines[0].starts_with("stopped EIO"), "{}", outcome.output);
    let stored: u64 = lines[1].parse().expect("size");
    assert!(stored > 63 << 20 && stored <= 64 << 20, "{stored}");
    assert_eq!(
        &lines[2..],
        ["refused EFBIG", "refused EIO"],
        "{}",
        outcome.output
    );
    assert_eq!(call(code).to_json(), outcome.to_json());
}

#[test]
fn a_file_flood_ends_by_fuel_in_bounded_time() {
    let limits = Limits {
        fuel: 2_000_000_000,
        ..Limits::default()
    };
    let flood =
        "import os\ni = 0\nwhile True:\n    open('f', 'w').close()\n    os.remove('f')\n    i += 1";
    let fill = "i = 0\nwhile True:\n    try:\n        open(f'f{i % 20000}', 'w').close()\n    except OSError:\n        pass\n    i += 1";
    for code in [flood, fill] {
        let started = std::time::Instant::now();
        let outcome = with_limits(code, limits);
        let wall = started.elapsed();
        assert_eq!(outcome.kind, OutcomeKind::TimeLimit, "{outcome:?}");
        assert_eq!(with_limits(code, limits).to_json(), outcome.to_json());
        // 2e9 fuel is 0.4 s of compute at the documented rate; the old host directory took 25 s.
        assert!(
            wall < std::time::Duration::from_secs(20),
            "{code}: {wall:?}"
        );
    }
}

#[test]
fn sessions_keep_their_files_and_fresh_calls_start_empty() {
    let wrote = in_session("files-1", "open('kept.txt', 'w').write('from call 1')");
    assert_eq!(wrote.kind, OutcomeKind::Ok, "{wrote:?}");
    let read = in_session("files-1", "print(open('kept.txt').read())");
    assert_eq!(read.output, "from call 1\n", "{read:?}");
    assert_eq!(ok("import os\nprint(os.listdir('/'))"), "[]\n");
    let other = in_session("files-2", "import os\nprint(os.listdir('.'))");
    assert_eq!(other.output, "[]\n", "{other:?}");
}

#[test]
fn files_go_in_and_come_back_through_call_options() {
    let options = CallOptions {
        files: [
            ("data/in.txt".to_string(), b"2 3\n".to_vec()),
            ("/abs.bin".to_string(), vec![0, 159, 255]),
        ]
        .into_iter()
        .collect(),
        fetch_files: vec![
            "out.txt".to_string(),
            "data/in.txt".to_string(),
            "missing".to_string(),
            "data".to_string(),
        ],
        ..CallOptions::default()
    };
    let code = "a, b = map(int, open('data/in.txt').read().split())\n\
print(list(open('abs.bin', 'rb').read()))\n_ = open('out.txt', 'w').write(str(a * b))";
    let outcome = call_args(json!({ "code": code }), &options);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    assert_eq!(outcome.output, "[0, 159, 255]\n");
    let fetched: Vec<(&str, &str)> = outcome
        .files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(fetched, [("data/in.txt", "MiAzCg=="), ("out.txt", "Ng==")]);
    // Files are fetched whichever way the call ends.
    let timed_out = CallOptions {
        limits: Some(Limits {
            fuel: 500_000_000,
            ..Limits::default()
        }),
        ..options.clone()
    };
    let outcome = call_args(
        json!({ "code": "with open('out.txt', 'w') as f:\n    f.write('partial')\nwhile True:\n    pass" }),
        &timed_out,
    );
    assert_eq!(outcome.kind, OutcomeKind::TimeLimit, "{outcome:?}");
    assert_eq!(outcome.files["out.txt"], "cGFydGlhbA==");
    // Files over the quota are the caller's error; the tool never runs.
    let too_big = CallOptions {
        files: [("big".to_string(), vec![0; 2 << 20])]
            .into_iter()
            .collect(),
        limits: Some(Limits {
            fs: sod_sandbox::FsLimits {
                max_bytes: 1 << 20,
                ..sod_sandbox::FsLimits::default()
            },
            ..Limits::default()
        }),
        ..CallOptions::default()
    };
    let outcome = call_args(json!({ "code": "print('ran')" }), &too_big);
    assert_eq!(outcome.kind, OutcomeKind::ToolError, "{outcome:?}");
    assert!(
        outcome
            .message
            .as_deref()
            .unwrap_or("")
            .starts_with("files: "),
        "{outcome:?}"
    );
}

#[test]
fn filesystem_work_costs_fuel_per_operation_and_byte() {
    let fuel = |code: &str| {
        let outcome = call(code);
        assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
        outcome.fuel_used
    };
    // The same program and the same 8 MiB object, written whole or not at all: the guest's own work does not
    // depend on the length (the host copies the bytes), so the difference is the sandbox's charge.
    let write = |n: u64| {
        format!(
            "import os\ndata = b'x' * (8 << 20)\nfd = os.open('f', os.O_WRONLY | os.O_CREAT)\nos.pwrite(fd, data[:{n}], 0)\nos.close(fd)"
        )
    };
    let bytes = fuel(&write(8 << 20)) - fuel(&write(0));
    assert!(bytes >= (8 << 20) * sod_sandbox::vfs::BYTE_FUEL, "{bytes}");
    // Operations: a lower bound only, since each one is guest work too.
    let loop_of = |body: &str| format!("import os\nfor _ in range(2000):\n    {body}");
    let ops = fuel(&loop_of("os.stat('.')")) - fuel(&loop_of("len('.')"));
    assert!(ops >= 2000 * sod_sandbox::vfs::OP_FUEL, "{ops}");
}
