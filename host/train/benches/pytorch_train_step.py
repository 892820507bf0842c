#!/usr/bin/env python3
"""PyTorch (eager; CPU, or CUDA with --device) baseline for one policy update of a Qwen3 model, to compare with the Rust trainer.

A dev-time tool, not part of the build or of CI. Python 3.11. Install its own venv (CPU torch, transformers):

    python3 -m venv .venv-torch && .venv-torch/bin/pip install -r host/train/benches/requirements-torch.txt

(The only registry this project's machines reach serves torch's CUDA build for Linux x86_64, so that install is
about 3-4 GB with the nvidia-*-cu12 wheels; the benchmark still runs on the CPU only. See requirements-torch.txt.)

Sub-commands:

    make-model --out DIR [--shape 0.6b|tiny] [--seed 0]
        Writes a Hugging Face Qwen3 model directory with random weights, saved in bfloat16 (model.safetensors with
        tied embeddings, so no separate lm_head.weight; config.json; generation_config.json) plus tokenizer.json
        and tokenizer_config.json copied from shared/data/qwen3-tokenizer/ (or --tokenizer DIR). `0.6b` is the
        shape of Qwen3-0.6B (about 0.6 B parameters, 1.2 GB on disk, ~2.4 GB of memory while it is initialised
        in f32); `tiny` (hidden 64, 2 layers, same vocabulary) is for smoke tests. The weights are a
        deterministic function of --seed (transformers' own initialisation after torch.manual_seed).

    step --model DIR [--trajectories 8] [--tokens 1024] [--prompt 128] [--micro-batch 1] [--threads 2]
         [--seed 0] [--repeats 1]
        Measures one policy update the way the Rust trainer does it, and prints ONE JSON line on stdout:
          * the model is loaded in float32 (f32 master weights), eager attention, train mode (dropout is 0);
          * `trajectories` sequences of `tokens` token ids, uniform in [0, vocab) from --seed; the first `prompt`
            tokens are the prompt, the rest are "generated" (loss mask 1);
          * score: under torch.no_grad, per micro-batch, log_softmax of the logits at position i gathered at token
            i+1 (the old log-probabilities);
          * update: per micro-batch, a forward with grad, new log-probabilities of the generated tokens,
            ratio = exp(new - old), fixed advantages in [-1, 1] (from --seed), the PPO clipped surrogate (clip 0.2
            below, 0.28 above), loss = -(sum over the micro-batch's generated tokens) / (generated tokens of the
            whole batch), so that the gradients accumulate to the token mean, backward per micro-batch; then
            clip_grad_norm_(1.0), AdamW(lr 1e-6, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01).step(),
            zero_grad.
        score_s and update_s are timed apart (time.perf_counter). With --repeats N the score+update pair runs N
        times (each on the weights the previous update left) and the reported times are the medians; the
        per-repeat times are in score_s_runs / update_s_runs. Progress (micro-batch i/n, elapsed, ETA) goes to
        stderr.

Examples (from the repository root):

    .venv-torch/bin/python host/train/benches/pytorch_train_step.py make-model --shape tiny --out /tmp/tiny-qwen3
    .venv-torch/bin/python host/train/benches/pytorch_train_step.py step --model /tmp/tiny-qwen3 \\
        --trajectories 2 --tokens 64 --prompt 16 --threads 1
    .venv-torch/bin/python host/train/benches/pytorch_train_step.py make-model --shape 0.6b --out /tmp/qwen3-0.6b
    .venv-torch/bin/python host/train/benches/pytorch_train_step.py step --model /tmp/qwen3-0.6b --threads 2

Output fields: framework, torch, transformers (versions), threads, trajectories, tokens (per trajectory),
prompt, micro_batch, repeats, generated_tokens (per update), score_s, update_s, total_s (score_s + update_s),
tokens_per_s (trajectories * tokens / total_s), load_s (model load, not in total_s), loss and grad_norm (before
clipping) of the last repeat, peak_rss_mib (VmHWM of this process), score_s_runs, update_s_runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

# host/train/benches/ in the repository; anywhere else (the GPU bundle puts it at the top of sod-gpu/) its own folder.
_HERE = Path(__file__).resolve()
REPO_ROOT = _HERE.parents[3] if len(_HERE.parents) > 3 else _HERE.parent
TOKENIZER_DIR = REPO_ROOT / "shared" / "data" / "qwen3-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

VOCAB_SIZE = 151936
BOS_TOKEN_ID = 151643
EOS_TOKEN_ID = 151645

# Architecture of each --shape; everything else is common (see qwen3_config).
SHAPES = {
    "0.6b": dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    ),
}

CLIP_LOW = 0.2
CLIP_HIGH = 0.28
MAX_GRAD_NORM = 1.0
ADAMW = dict(lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tokenizer_dir(explicit: str | None) -> Path:
    """--tokenizer, else shared/data/qwen3-tokenizer of this checkout, else of the shared folder beside it."""
    if explicit:
        candidates = [Path(explicit)]
    else:
        candidates = [TOKENIZER_DIR, REPO_ROOT.parent / "shared" / "data" / "qwen3-tokenizer"]
    for d in candidates:
        if all((d / f).is_file() for f in TOKENIZER_FILES):
            return d
    raise SystemExit(f"tokenizer files {TOKENIZER_FILES} not found in any of {[str(d) for d in candidates]}")


def qwen3_config(shape: str):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_act="silu",
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_scaling=None,
        tie_word_embeddings=True,
        attention_bias=False,
        attention_dropout=0.0,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=SHAPES[shape]["num_hidden_layers"],
        use_cache=True,
        initializer_range=0.02,
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        torch_dtype="bfloat16",
        **SHAPES[shape],
    )


def make_model(args: argparse.Namespace) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3ForCausalLM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = tokenizer_dir(args.tokenizer)

    torch.manual_seed(args.seed)
    config = qwen3_config(args.shape)
    t0 = time.perf_counter()
    # Built (and initialised by transformers: normal(0, initializer_range) for linears and the embedding, ones
    # for the RMSNorms) in f32, then cast: the bf16 weights are the rounded f32 ones.
    model = Qwen3ForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=[EOS_TOKEN_ID, BOS_TOKEN_ID],
        pad_token_id=BOS_TOKEN_ID,
        do_sample=True,
        temperature=0.6,
        top_k=20,
        top_p=0.95,
    )
    model.save_pretrained(out, safe_serialization=True)

    # transformers >= 4.56 writes "dtype"; real Qwen3 checkpoints (and the Rust loader) use "torch_dtype".
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["torch_dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    for f in TOKENIZER_FILES:
        shutil.copyfile(tok_dir / f, out / f)

    n_params = sum(p.numel() for p in model.parameters())
    log(f"wrote {out} ({args.shape}, {n_params:,} parameters, seed {args.seed}) in {time.perf_counter() - t0:.1f}s")


def peak_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


class Progress:
    """One stderr line per micro-batch: phase, i/n, elapsed and the ETA of the phase."""

    def __init__(self, phase: str, total: int):
        self.phase, self.total, self.start = phase, total, time.perf_counter()

    def tick(self, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done)
        log(f"{self.phase}: micro-batch {done}/{self.total}  elapsed {elapsed:.2f}s  eta {eta:.2f}s")


def token_log_probs(logits, targets):
    """log_softmax(logits)[..., target] over the last dimension; logits (b, t, v), targets (b, t)."""
    import torch

    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def step(args: argparse.Namespace) -> None:
    if not 1 <= args.prompt < args.tokens:
        raise SystemExit(f"--prompt must be in [1, --tokens): got {args.prompt} with --tokens {args.tokens}")
    if args.trajectories < 1 or args.micro_batch < 1 or args.threads < 1 or args.repeats < 1:
        raise SystemExit("--trajectories, --micro-batch, --threads and --repeats must be >= 1")

    import torch
    import transformers
    from transformers import Qwen3ForCausalLM

    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = Qwen3ForCausalLM.from_pretrained(
        args.model,
        # `torch_dtype` is the pre-4.56 name of the same argument (now deprecated, with a warning).
        **({"dtype": torch.float32} if _has_dtype_kwarg(transformers.__version__) else {"torch_dtype": torch.float32}),
        attn_implementation="eager",
    )
    device = torch.device(args.device)
    model.to(device)
    model.train()
    load_s = time.perf_counter() - t0

    def sync() -> None:
        # CUDA runs asynchronously: wait for the queued work before reading the clock.
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    cfg = model.config
    if not model.config.tie_word_embeddings:
        log("note: the model does not tie its embeddings")
    log(
        f"loaded {args.model} in {load_s:.1f}s: {sum(p.numel() for p in model.parameters()):,} parameters (f32), "
        f"hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    # The batch: ids, and the fixed advantages of the generated tokens, both from the seed.
    n, length, prompt = args.trajectories, args.tokens, args.prompt
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, cfg.vocab_size, (n, length), generator=gen, dtype=torch.long)
    gen_len = length - prompt
    advantages = torch.rand((n, gen_len), generator=gen, dtype=torch.float32) * 2.0 - 1.0
    # Loss mask over next-token positions 0..length-2 (the log-prob at position i is that of token i+1): 1 where
    # token i+1 is generated, i.e. i >= prompt - 1. All ones here (no padding); kept explicit like the trainer.
    mask = torch.zeros((n, length - 1), dtype=torch.float32)
    mask[:, prompt - 1 :] = 1.0
    generated_total = float(mask.sum())  # = n * gen_len
    ids, advantages, mask = ids.to(device), advantages.to(device), mask.to(device)
    chunks = [(s, min(s + args.micro_batch, n)) for s in range(0, n, args.micro_batch)]

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, **ADAMW)

    score_runs, update_runs = [], []
    loss_value = grad_norm = float("nan")
    for r in range(args.repeats):
        tag = f"[{r + 1}/{args.repeats}] " if args.repeats > 1 else ""

        # Score: old log-probs of every next token.
        t0 = time.perf_counter()
        progress = Progress(f"{tag}score", len(chunks))
        old = torch.empty((n, length - 1), dtype=torch.float32, device=device)
        with torch.no_grad():
            for i, (a, b) in enumerate(chunks):
                x = ids[a:b]
                logits = model(input_ids=x, use_cache=False).logits
                old[a:b] = token_log_probs(logits[:, :-1], x[:, 1:])
                del logits
                progress.tick(i + 1)
        sync()
        score_runs.append(time.perf_counter() - t0)

        # Update: PPO clipped surrogate over the generated tokens, token mean over the whole batch.
        t0 = time.perf_counter()
        progress = Progress(f"{tag}update", len(chunks))
        loss_sum = 0.0
        for i, (a, b) in enumerate(chunks):
            x = ids[a:b]
            logits = model(input_ids=x, use_cache=False).logits
            # Positions prompt-1 .. length-2 predict the generated tokens prompt .. length-1.
            new = token_log_probs(logits[:, prompt - 1 : -1], x[:, prompt:])
            old_g = old[a:b, prompt - 1 :]
            m = mask[a:b, prompt - 1 :]
            adv = advantages[a:b]
            ratio = torch.exp(new - old_g)
            surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - CLIP_LOW, 1.0 + CLIP_HIGH) * adv)
            loss = -(surrogate * m).sum() / generated_total
            loss.backward()
            loss_sum += loss.item()
            del logits, new, ratio, surrogate, loss
            progress.tick(i + 1)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        update_runs.append(time.perf_counter() - t0)
        loss_value = loss_sum
        log(f"{tag}score {score_runs[-1]:.2f}s, update {update_runs[-1]:.2f}s, loss {loss_value:.6f}, "
            f"grad norm {grad_norm:.4g}")

    score_s = statistics.median(score_runs)
    update_s = statistics.median(update_runs)
    total_s = score_s + update_s
    total_tokens = n * length
    result = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "peak_device_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "trajectories": n,
        "tokens": length,
        "prompt": prompt,
        "micro_batch": args.micro_batch,
        "repeats": args.repeats,
        "generated_tokens": int(generated_total),
        "score_s": round(score_s, 6),
        "update_s": round(update_s, 6),
        "total_s": round(total_s, 6),
        "tokens_per_s": round(total_tokens / total_s, 3) if total_s > 0 else None,
        "load_s": round(load_s, 6),
        "loss": loss_value,
        "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
        "peak_rss_mib": round(rss, 1) if (rss := peak_rss_mib()) is not None else None,
        "score_s_runs": [round(t, 6) for t in score_runs],
        "update_s_runs": [round(t, 6) for t in update_runs],
    }
    print(json.dumps(result), flush=True)


def _has_dtype_kwarg(version: str) -> bool:
    """from_pretrained takes `dtype` from transformers 4.56 on."""
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (4, 56)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="PyTorch eager CPU baseline for one Qwen3 policy update (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    mk = sub.add_parser(
        "make-model",
        help="write a random-weight Qwen3 model directory (bf16 safetensors, tied embeddings)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mk.add_argument("--out", required=True, help="directory to write (created if missing)")
    mk.add_argument("--shape", choices=sorted(SHAPES), default="0.6b", help="architecture")
    mk.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the initialisation")
    mk.add_argument(
        "--tokenizer",
        default=None,
        help="folder with tokenizer.json and tokenizer_config.json (default: shared/data/qwen3-tokenizer)",
    )
    mk.set_defaults(func=make_model)

    st = sub.add_parser(
        "step",
        help="time one policy update (score + PPO update) and print one JSON line",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    st.add_argument("--model", required=True, help="Hugging Face model directory (e.g. from make-model)")
    st.add_argument("--trajectories", type=int, default=8, help="sequences in the batch")
    st.add_argument("--tokens", type=int, default=1024, help="tokens per sequence (prompt + generated)")
    st.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence (loss mask 0)")
    st.add_argument("--micro-batch", type=int, default=1, help="sequences per forward/backward")
    st.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    st.add_argument("--seed", type=int, default=0, help="seed of the token ids and advantages")
    st.add_argument("--repeats", type=int, default=1, help="score+update pairs to run (medians reported)")
    st.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    st.set_defaults(func=step)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
