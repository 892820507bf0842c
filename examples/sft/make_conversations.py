#!/usr/bin/env python3
"""Writes conversations.jsonl: tool-calling conversations for `sod sft` in the layout of verl's multi-turn SFT
data and OpenAI's fine-tuning files (a `messages` list with `tool_calls`, `tool` messages, and a `tools` column
holding the function schemas as a JSON string, as verl stores them).

Each row is a two-step arithmetic problem solved with the calculator, one step per call, then the boxed answer;
every tool response is what sod's calculator answers. Deterministic (seeded); run from anywhere:

    python3 examples/sft/make_conversations.py
"""

import json
import random
from pathlib import Path

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluates an arithmetic expression exactly.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "The expression, e.g. `17*23`."}},
            "required": ["expression"],
        },
    },
}


def call(expression):
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"expression": expression}}}],
    }


def main():
    rng = random.Random(0)
    rows = []
    for k in range(200):
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 999)
        first = a * b
        answer = first + c
        rows.append(
            {
                "id": f"calc-{k}",
                "messages": [
                    {"role": "system", "content": "Solve the problem with the calculator, one step per call. Give the final answer as \\boxed{N}."},
                    {"role": "user", "content": f"What is {a} * {b} + {c}?"},
                    call(f"{a}*{b}"),
                    {"role": "tool", "content": str(first)},
                    call(f"{first}+{c}"),
                    {"role": "tool", "content": str(answer)},
                    {"role": "assistant", "content": f"The answer is \\boxed{{{answer}}}."},
                ],
                "tools": json.dumps([CALCULATOR]),
                "data_source": "sod-example-arithmetic",
            }
        )
    out = Path(__file__).with_name("conversations.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} conversations to {out}")


if __name__ == "__main__":
    main()
