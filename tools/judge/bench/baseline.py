#!/usr/bin/env python3
"""Baseline for `sod judge`: the subprocess-per-program approach of openai/human-eval.

Every solution becomes one program (HumanEval: prompt + completion + "\\n" + tests) run by a fresh
`python3` process with a wall-clock timeout; it passes when the process exits with status 0.
Stdin/stdout problems run one process per case and compare outputs with trailing whitespace
ignored. Solutions run on --jobs threads, each waiting for its own subprocess, as the human-eval
harness does with its worker pool. There is no sandbox: use only on trusted code (the reference
solutions).

    python3 tools/judge/bench/baseline.py --problems humaneval.jsonl \\
        --solutions humaneval_reference.jsonl --jobs 2 --timeout 3

Prints `passed N/M` and the wall time of the judging (file reading excluded).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def normalize(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = [line.rstrip(" \t\x0b\x0c") for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def program_of(problem: dict, solution: dict) -> str:
    if "code" in solution:
        return solution["code"]
    if problem.get("entry_point"):
        return problem.get("prompt", "") + solution["completion"]
    return solution["completion"]


def run(python: str, path: str, stdin: str, timeout: float) -> tuple[bool, str]:
    """Runs `path`; returns (exited with 0 in time, stdout)."""
    try:
        done = subprocess.run(
            [python, path],
            input=stdin.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            cwd=os.path.dirname(path),
        )
    except subprocess.TimeoutExpired:
        return False, ""
    return done.returncode == 0, done.stdout.decode("utf-8", "replace")


def judge(python: str, problem: dict, solution: dict, timeout: float, scratch: str) -> bool:
    code = program_of(problem, solution)
    tests = problem["tests"]
    with tempfile.TemporaryDirectory(dir=scratch) as workdir:
        path = os.path.join(workdir, "program.py")
        if isinstance(tests, str):
            with open(path, "w", encoding="utf-8") as f:
                f.write(code + "\n" + tests)
            return run(python, path, "", timeout)[0]
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        for case in tests:
            ok, out = run(python, path, case["input"], timeout)
            if not ok or normalize(out) != normalize(case["output"]):
                return False
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", required=True)
    parser.add_argument("--solutions", required=True)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    problems = {row["id"]: row for row in read_jsonl(args.problems)}
    solutions = read_jsonl(args.solutions)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(
                pool.map(
                    lambda s: judge(args.python, problems[s["id"]], s, args.timeout, scratch),
                    solutions,
                )
            )
        elapsed = time.perf_counter() - started
    print(f"judged {len(results)} solutions in {elapsed:.2f}s with {args.jobs} job(s)",
          file=sys.stderr)
    print(f"passed {sum(results)}/{len(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
