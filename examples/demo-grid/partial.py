#!/usr/bin/env python3
"""The table and paired differences of a `sod demo --full` run directory from the runs finished so far.

    python3 examples/demo-grid/partial.py runs/full-2

Only seeds whose every run has finished are used (so that differences stay paired). The statistics are those of
host/demo/src/report.rs: a row's interval adds the problems' variance (of the per-problem mean over seeds) and the
seeds' (of the per-seed means); 95% normal intervals, Wilson's for a single seed.
"""
import glob, json, math, os, sys
from collections import defaultdict

def var(x):
    n = len(x)
    if n < 2:
        return 0.0
    m = sum(x) / n
    return sum((v - m) ** 2 for v in x) / (n - 1)

def mean_half(x):  # x[seed][problem]
    s, n = len(x), min(len(r) for r in x)
    per_problem = [sum(r[i] for r in x) / s for i in range(n)]
    per_seed = [sum(r[:n]) / n for r in x]
    mean = sum(per_seed) / s
    return mean, 1.96 * math.sqrt(var(per_problem) / n + var(per_seed) / s)

def wilson(p, n, z=1.96):
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(c - h, 0.0), min(c + h, 1.0)

def main(out):
    settings = json.load(open(os.path.join(out, "settings.json")))
    cold = [json.loads(l)["correct"] for l in open(os.path.join(out, "eval", "student-cold-start.jsonl"))]
    runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "*", "run.json")))]
    by_seed = defaultdict(list)
    for r in runs:
        by_seed[r["spec"]["seed"]].append(r)
    per_seed = 10 if settings["grid"] else 4
    seeds = sorted(s for s, rs in by_seed.items() if len(rs) == per_seed)
    rows = defaultdict(dict)
    for s in seeds:
        for r in by_seed[s]:
            rows[(r["spec"]["teacher"], r["spec"]["arm"])][s] = [float(c) for c in r["correct"]]
    print(f"{out}: {len(runs)} runs finished; complete seeds {seeds}\n")
    m, lo, hi = sum(cold) / len(cold), *wilson(sum(cold) / len(cold), len(cold))
    print(f"{'row':<48} {'accuracy':>8}  95% interval")
    print(f"{'student (cold start)':<48} {m:>8.3f}  [{lo:.3f}, {hi:.3f}]")
    for (teacher, arm), by in rows.items():
        x = [by[s] for s in seeds]
        mean, half = mean_half(x)
        lo, hi = (wilson(mean, len(x[0])) if len(x) == 1 else (max(mean - half, 0), min(mean + half, 1)))
        print(f"{arm + ' / ' + str(teacher):<48} {mean:>8.3f}  [{lo:.3f}, {hi:.3f}]")
    print()
    def diff(a, b, name):
        d = [[x - y for x, y in zip(a[s], b[s] if isinstance(b, dict) else b)] for s in seeds]
        mean, half = mean_half(d)
        word = "not separated" if mean - half <= 0 <= mean + half else ("better" if mean > 0 else "worse")
        print(f"{name:<60} {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] {word}")
    coldf = [float(c) for c in cold]
    for (teacher, arm), by in rows.items():
        diff(by, coldf, f"{arm} / {teacher} - cold start")
    for teacher in ["recovery", "gold"]:
        for sod, opd in [("sod-sampled", "opd-sampled"), ("sod-full", "opd-full")]:
            if (teacher, sod) in rows and (teacher, opd) in rows:
                diff(rows[(teacher, sod)], rows[(teacher, opd)], f"{sod} - {opd} / {teacher}")
    for arm in ["opd-sampled", "sod-sampled", "opd-full", "sod-full"]:
        if ("recovery", arm) in rows and ("gold", arm) in rows:
            diff(rows[("recovery", arm)], rows[("gold", arm)], f"{arm}: recovery - gold")

if __name__ == "__main__":
    main(sys.argv[1])
