#!/usr/bin/env python3
"""Pure-Python reference for SOD advantages, looping over tokens as the reference implementation
does. It computes the same thing as the Rust `sod` plugin on a batch of the same layout as the
Rust benchmark (host/loss/benches/advantages.rs): 64 sequences x 20k tokens x 16 steps, groups of
8, a tenth of each sequence prompt, a fifth tool outputs.

    python3 host/loss/benches/reference_sod.py [--runs 3]

Prints a markdown table row with the time per batch. Data generation is not timed.
"""

import argparse
import math
import random
import statistics
import time

SEQUENCES = 64
TOKENS_PER_SEQUENCE = 20_000
STEPS = 16
GROUP_SIZE = 8
EPS = 1e-6
DELTA = 0.2
C = 1.0
STD_EPS = 1e-6


def synthetic_batch(seed):
    """Flat arrays with the Rust benchmark's layout."""
    rng = random.Random(seed)
    prompt = TOKENS_PER_SEQUENCE // 10
    tool_each = (TOKENS_PER_SEQUENCE // 5) // (STEPS - 1)
    generated_total = TOKENS_PER_SEQUENCE - prompt - tool_each * (STEPS - 1)
    old, teacher, mask, offsets, reward, group = [], [], [], [0], [], []
    for seq in range(SEQUENCES):
        layout = [(0, prompt)]
        for step in range(STEPS):
            if step > 0:
                layout.append((0, tool_each))
            layout.append((1, generated_total // STEPS + (1 if step < generated_total % STEPS else 0)))
        for m, length in layout:
            for _ in range(length):
                mask.append(m)
                old.append(rng.uniform(-8.0, 0.0))
                teacher.append(rng.uniform(-8.0, 0.0))
        offsets.append(len(mask))
        reward.append(float(rng.randint(0, 1)))
        group.append(seq // GROUP_SIZE)
    return old, teacher, mask, offsets, reward, group


def sod_advantages(old, teacher, mask, offsets, reward, group):
    """SOD advantages, one Python loop iteration per token."""
    # GRPO: group mean and population standard deviation.
    members = {}
    for seq, g in enumerate(group):
        members.setdefault(g, []).append(seq)
    outcome = [0.0] * len(reward)
    for seqs in members.values():
        rewards = [reward[s] for s in seqs]
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
        for s in seqs:
            outcome[s] = (reward[s] - mean) / (std + STD_EPS)

    advantages = [0.0] * len(mask)
    for seq in range(len(reward)):
        start, end = offsets[seq], offsets[seq + 1]
        # Steps: maximal runs of generated tokens.
        steps = [-1] * (end - start)
        step, in_step = 0, False
        for i in range(start, end):
            if mask[i] == 1:
                steps[i - start] = step
                in_step = True
            elif in_step:
                in_step = False
                step += 1
        # Per-step mean |log pS_old - log pT|.
        sums, counts = [], []
        for i in range(start, end):
            k = steps[i - start]
            if k < 0:
                continue
            if k == len(sums):
                sums.append(0.0)
                counts.append(0)
            sums[k] += abs(old[i] - teacher[i])
            counts[k] += 1
        d = [s / n for s, n in zip(sums, counts)]
        # w_1 = 1, w_k = min(prod_{u<k} (d_u + eps) / (d_{u+1} + eps), 1 + delta).
        weights, product = [], 1.0
        for k in range(len(d)):
            if k == 0:
                weights.append(1.0)
            else:
                product *= (d[k - 1] + EPS) / (d[k] + EPS)
                weights.append(min(product, 1.0 + DELTA))
        for i in range(start, end):
            k = steps[i - start]
            if k >= 0:
                advantages[i] = outcome[seq] + C * weights[k] * (teacher[i] - old[i])
    return advantages


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    batch = synthetic_batch(42)
    tokens = len(batch[2])
    sod_advantages(*batch)  # warm-up
    timings = []
    for _ in range(args.runs):
        start = time.perf_counter()
        sod_advantages(*batch)
        timings.append(time.perf_counter() - start)
    median = statistics.median(timings)
    print(f"Python reference: {tokens} tokens, {args.runs} runs")
    print("| what | min ms | median ms | mean ms | M tokens/s (median) |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| pure-Python token loop (reference) | {min(timings) * 1e3:.0f} | {median * 1e3:.0f} | "
        f"{statistics.mean(timings) * 1e3:.0f} | {tokens / median / 1e6:.2f} |"
    )


if __name__ == "__main__":
    main()
