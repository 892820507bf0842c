#!/usr/bin/env python3
"""transformers' `generate` with the KV cache, the baseline of `sod bench generate` (same shapes, same batch).

A dev-time tool, not part of the build or of CI (run on the GPU machine by the bundle of `cargo xtask gpu-pack`).

    python3 pytorch_generate.py --model DIR [--device cuda] [--dtype float32] --prompts 8 --prompt-tokens 128 \
        --new-tokens 128 --temperature 1.0 --seed 0

`prompts` sequences of `prompt-tokens` uniform random ids (no padding), `new-tokens` generated for each with
sampling at `temperature` (top-k and top-p off; greedy at 0) and no early stop (min_new_tokens = max_new_tokens), after
a 2-token warm-up. Prints one JSON line: seconds, tokens, tokens_per_s, device, dtype, torch and transformers versions.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import Qwen3ForCausalLM

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = Qwen3ForCausalLM.from_pretrained(args.model, torch_dtype=dtype).to(device).eval()
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, model.config.vocab_size, (args.prompts, args.prompt_tokens), generator=gen).to(device)
    attention = torch.ones_like(ids)
    torch.manual_seed(args.seed)

    def run(new: int) -> torch.Tensor:
        sample = args.temperature > 0
        with torch.no_grad():
            return model.generate(
                input_ids=ids,
                attention_mask=attention,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=sample,
                temperature=args.temperature if sample else None,
                top_k=0 if sample else None,
                top_p=1.0 if sample else None,
                use_cache=True,
                pad_token_id=0,
            )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(2)
    sync()
    started = time.perf_counter()
    out = run(args.new_tokens)
    sync()
    seconds = time.perf_counter() - started
    tokens = (out.shape[1] - args.prompt_tokens) * args.prompts
    print(json.dumps({
        "framework": "transformers generate",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "dtype": args.dtype,
        "seconds": round(seconds, 6),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 3),
    }), flush=True)


if __name__ == "__main__":
    main()
