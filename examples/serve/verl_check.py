"""verl's own SandboxFusion client against `sod serve` (issue 19, item 3; docs/serve.md).

Loads `verl/utils/reward_score/sandbox_fusion/utils.py` out of verl's published wheel, unchanged (only that file:
its package's __init__ would import torch and ray), and runs `check_correctness` -- verl's code reward -- on
stdin/stdout problems at verl's default concurrency (`reward.sandbox_fusion.max_concurrent: 64`, one semaphore
shared by all cases, as verl's reward manager does). Prints what verl would score, the expected score, the
failures, and requests/s.

Set-up (dev-time only, nothing of verl is vendored):
    python3 -m venv .venv-verl && .venv-verl/bin/pip install requests==2.32.3
    .venv-verl/bin/pip download verl==0.9.1 --no-deps -d .venv-verl/wheels
Run (with `sod serve --bind 127.0.0.1:8080 --workers 2` running):
    .venv-verl/bin/python examples/serve/verl_check.py --url http://127.0.0.1:8080/run_code \
        --wheel .venv-verl/wheels/verl-0.9.1-py3-none-any.whl --problems 256
"""

import argparse
import concurrent.futures
import importlib.util
import sys
import threading
import time
import zipfile

MODULE = "verl/utils/reward_score/sandbox_fusion/utils.py"

# (name, program, stdin, expected stdout, what verl's check_correctness must say)
CASES = [
    ("correct", "a, b = map(int, input().split())\nprint(a + b)", "2 40\n", "42", True),
    ("wrong answer", "a, b = map(int, input().split())\nprint(a * b)", "2 40\n", "42", False),
    ("runtime error", "raise ValueError('no')", "", "", -2),
    ("syntax error", "def f(:\n    pass", "", "", -2),
    ("time limit", "while True:\n    pass", "", "", -3),
    ("exit code", "import sys\nprint(42)\nsys.exit(3)", "", "42", -2),
]


def load_verl(wheel):
    source = zipfile.ZipFile(wheel).read(MODULE).decode("utf-8")
    spec = importlib.util.spec_from_loader("verl_sandbox_fusion_utils", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{wheel}!{MODULE}", "exec"), module.__dict__)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the /run_code URL")
    parser.add_argument("--wheel", required=True, help="verl's wheel (pip download verl --no-deps)")
    parser.add_argument("--problems", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=int, default=1, help="verl's per-case timeout, seconds")
    args = parser.parse_args()
    verl = load_verl(args.wheel)
    semaphore = threading.Semaphore(args.concurrency)

    def one(index):
        name, code, stdin, expected, want = CASES[index % len(CASES)]
        in_outs = {"inputs": [stdin], "outputs": [expected]}
        results, metadata = verl.check_correctness(
            args.url, in_outs, code, timeout=args.timeout, concurrent_semaphore=semaphore
        )
        return name, want, results[0], metadata[0]

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        answers = list(pool.map(one, range(args.problems)))
    elapsed = time.perf_counter() - started
    wrong = [(name, want, got, meta.get("status"), meta.get("api_request_error"))
             for name, want, got, meta in answers if got != want]
    by_case = {}
    for name, want, got, _ in answers:
        by_case.setdefault(name, set()).add(repr(got))
    print(f"verl {MODULE} against {args.url}: {args.problems} problems, concurrency {args.concurrency}")
    for name, *_ in CASES:
        print(f"  {name:14s} verl scored {sorted(by_case.get(name, []))}")
    print(f"  {len(answers) - len(wrong)} of {len(answers)} as expected; {args.problems / elapsed:.1f} problems/s")
    for item in wrong[:10]:
        print("  unexpected:", item)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
