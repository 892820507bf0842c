#!/usr/bin/env python3
"""The table of docs/training.md from the runs of run.sh: held-out greedy accuracy with a 95% Wilson interval,
the paired difference to the cold start with a 95% interval, and what the runs' metrics say.

    python3 examples/onpolicy/table.py OUT_DIR
"""
import json, math, os, sys

out = sys.argv[1]

def results(run):
    path = os.path.join(out, run, "eval", "results.jsonl")
    if not os.path.isfile(path):
        return None
    rows = [json.loads(l) for l in open(path)]
    return {r["id"]: bool(r["correct"]) for r in rows}

def wilson(k, n, z=1.96):
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h

def paired(a, b):
    d = [int(a[i]) - int(b[i]) for i in sorted(a)]
    n = len(d)
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    h = 1.96 * sd / math.sqrt(n)
    return m, m - h, m + h

def last_metrics(run):
    path = os.path.join(out, run, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    lines = [json.loads(l) for l in open(path)]
    return lines[0], lines[-1], sum(l["timing"]["step_seconds"] for l in lines) / len(lines)

cold = results("cold-seed0")
print("| run | accuracy | 95% interval | minus cold start (paired, 95%) | teacher KL first -> last step | truncated (first step) | s/step |")
print("|---|---:|---|---|---|---:|---:|")
for run in sorted(d for d in os.listdir(out) if os.path.isdir(os.path.join(out, d))):
    r = results(run)
    if r is None:
        continue
    k, n = sum(r.values()), len(r)
    lo, hi = wilson(k, n)
    diff = "-" if run == "cold-seed0" else "%+.3f [%+.3f, %+.3f]" % paired(r, cold)
    m = last_metrics(run)
    kl = trunc = sps = "-"
    if m:
        first, last, sps = m
        kl = "%.3f -> %.3f" % (first["kl_teacher"], last["kl_teacher"])
        trunc = "%.2f" % first["truncated_fraction"]
        sps = "%.1f" % sps
    print(f"| {run} | {k / n:.3f} | [{lo:.3f}, {hi:.3f}] | {diff} | {kl} | {trunc} | {sps} |")
