#!/usr/bin/env bash
# The GPU check of sod, from the bundle `cargo xtask gpu-pack` writes: `bash run.sh OUTDIR [--cpu]`.
#
# Writes OUTDIR/report.json (and every step's own output and log beside it):
#   1. correctness: `sod bench device` (CUDA against the CPU on a tiny model: logits, log-probs, generation with the
#      KV cache, four update steps), with its tolerances and pass/fail;
#   2. speed: one train step (score + PPO update + AdamW) of a Qwen3-0.6B-shaped model with random weights made here
#      (`sod bench make-model`), tokens/s and MFU, beside PyTorch eager (transformers' Qwen3ForCausalLM, same
#      shapes and batch); generation tokens/s with the KV cache beside transformers' `generate`;
#   3. the demo's on-policy phase (`sod demo --quick`) on the GPU against the CPU: the wall time of each run.
# Every step has its own time limit and a failed step is recorded, not fatal: the report is always written.
#
# --cpu: everything on the CPU, with small shapes, and the PyTorch baselines skipped (this machine may have no torch);
# the binary is $SOD (a CPU build) when set. This is how the script is tested before a GPU is lent.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: bash run.sh OUTDIR [--cpu]}
MODE=cuda
[[ ${2:-} == --cpu ]] && MODE=cpu
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/run.log"
STARTED=$(date +%s)
SOD=${SOD:-$HERE/bin/sod}
PYTHON=${PYTHON:-python3}
export SOD_TOOLS_DIR="$HERE/tools" SOD_PLUGIN_DIR="$HERE/plugins" SOD_CACHE_DIR="$OUT/tool-cache"

log() { echo "[$(($(date +%s) - STARTED))s] $*" | tee -a "$LOG" >&2; }

# The CUDA libraries the binary links (libcublas.so.13, libcurand.so.10, libcudart.so.13): wherever this machine
# has them (a CUDA toolkit, or the nvidia-* wheels beside PyTorch).
if [[ $MODE == cuda ]]; then
  dirs=""
  for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13; do
    found=$( (ls -d /usr/local/cuda*/lib64/$lib /usr/local/cuda*/targets/*/lib/$lib /usr/lib/x86_64-linux-gnu/$lib \
      2>/dev/null; "$PYTHON" - "$lib" <<'EOF' 2>/dev/null
import glob, site, sys
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for path in glob.glob(f"{base}/nvidia/**/{sys.argv[1]}", recursive=True):
        print(path)
EOF
    ) | head -1)
    if [[ -n $found ]]; then
      dir=$(dirname "$found")
      [[ ":$dirs:" == *":$dir:"* ]] || dirs="$dirs:$dir"
    else
      log "warning: $lib not found"
    fi
  done
  export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  DEVICE=cuda:0
else
  DEVICE=cpu
fi

# step NAME SECONDS COMMAND...: runs COMMAND with stdout to OUT/NAME.json and stderr to OUT/NAME.log, records rc.
step() {
  local name=$1 limit=$2
  shift 2
  log "$name: $*"
  local t0
  t0=$(date +%s%N)
  timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
  local rc=$?
  echo "{\"rc\": $rc, \"seconds\": $((($(date +%s%N) - t0) / 1000000))e-3}" > "$OUT/$name.status"
  log "$name: rc $rc"
}

{
  echo "mode: $MODE"
  uname -a
  nproc
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)' 2>&1 || true
  ldd "$SOD" 2>&1 | grep -E "cuda|cublas|curand|nvrtc" || true
} > "$OUT/machine.txt"

# 1. Correctness.
step correctness 120 "$SOD" bench device --device "$DEVICE"

# 2. Speed, on Qwen3-0.6B's shape (random weights).
MODEL="$OUT/qwen3-0.6b-random"
step make-model 120 "$SOD" bench make-model --config "$HERE/qwen3-0.6b.json" --out "$MODEL"
if [[ $MODE == cuda ]]; then
  TRAIN=(--trajectories 8 --tokens 1024 --prompt 128 --micro-batch 4)
  GEN=(--prompts 8 --prompt-tokens 128 --new-tokens 128)
  TRAIN_BASE="$PYTHON $HERE/pytorch_train_step.py step --device cuda"
  GEN_BASE="$PYTHON $HERE/pytorch_generate.py --device cuda"
else
  TRAIN=(--trajectories 1 --tokens 64 --prompt 16 --micro-batch 1)
  GEN=(--prompts 1 --prompt-tokens 16 --new-tokens 4)
  TRAIN_BASE=""
  GEN_BASE=""
fi
step train-step 240 "$SOD" bench train-step --model "$MODEL" --device "$DEVICE" "${TRAIN[@]}" --baseline "$TRAIN_BASE"
step generate 180 "$SOD" bench generate --model "$MODEL" --device "$DEVICE" "${GEN[@]}" --baseline "$GEN_BASE"
rm -rf "$MODEL"

# 3. The demo's on-policy phase: the CPU first (it builds and caches the models), then the GPU from the same cache.
SETTINGS="$OUT/demo-settings.json"
"$SOD" demo --quick --print-settings > "$SETTINGS" 2>> "$LOG"
# Short model builds (the point is the on-policy phase's time, not the models' accuracy), so that both runs fit the
# script's few minutes; on the CPU check fewer tasks and on-policy steps as well.
"$PYTHON" - "$SETTINGS" "$MODE" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
small = sys.argv[2] == "cpu"
s["train_tasks"], s["test_tasks"] = (64, 16) if small else (512, 64)
s["teacher_sft"]["steps"] = s["student_sft"]["steps"] = 20 if small else 100
s["teacher_sft"]["warmup_steps"] = s["student_sft"]["warmup_steps"] = 2 if small else 10
s["cold_start_stop"].update({"from": 20, "every": 20, "problems": 8 if small else 32})
if small:
    s["rl"]["steps"] = 2
json.dump(s, open(sys.argv[1], "w"), indent=2)
EOF
step demo-cpu 240 "$SOD" demo --settings "$SETTINGS" --device cpu --out "$OUT/demo-cpu" --cache "$OUT/demo-cache"
if [[ $MODE == cuda ]]; then
  step demo-gpu 180 "$SOD" demo --settings "$SETTINGS" --device "$DEVICE" --jobs 1 --out "$OUT/demo-gpu" \
    --cache "$OUT/demo-cache"
fi

# The report.
"$PYTHON" - "$OUT" "$MODE" <<'EOF'
import glob, json, os, sys

out, mode = sys.argv[1], sys.argv[2]

def read(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            lines = [l for l in f.read().splitlines() if l.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None

def status(name):
    try:
        return json.load(open(os.path.join(out, name + ".status")))
    except (OSError, ValueError):
        return None

def on_policy(dir_name):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, dir_name, "*", "run.json"))):
        run = json.load(open(path))
        runs[os.path.basename(os.path.dirname(path))] = run.get("train_seconds")
    return runs

# Qwen3-0.6B: parameters without the tied output head counted twice; 6 FLOPs per parameter and trained token
# (forward 2, backward 4), the score pass 2 more, the recomputed forward of gradient checkpointing 2 more.
PARAMS = 596_049_920
PEAK_F32_TFLOPS = 67.0  # H100/H200 SXM, FP32 without tensor cores; TF32 tensor cores: 495 dense.
train = read("train-step")
mfu = None
if train and mode == "cuda":
    m = train["sod"]
    tokens = train["trajectories"] * train["tokens"]
    flops = tokens * PARAMS * (2 + 6 + (2 if train.get("gradient_checkpointing") else 0))
    mfu = {"flops_per_step": flops, "peak_tflops_f32": PEAK_F32_TFLOPS,
           "sod": flops / (m["score_s"] + m["update_s"]) / (PEAK_F32_TFLOPS * 1e12)}
    if train.get("baseline"):
        b = train["baseline"]
        mfu["pytorch"] = tokens * PARAMS * 8 / (b["score_s"] + b["update_s"]) / (PEAK_F32_TFLOPS * 1e12)
cpu_runs, gpu_runs = on_policy("demo-cpu"), on_policy("demo-gpu")
report = {
    "mode": mode,
    "machine": open(os.path.join(out, "machine.txt")).read(),
    "steps": {n: status(n) for n in ["correctness", "make-model", "train-step", "generate", "demo-cpu", "demo-gpu"]},
    "correctness": read("correctness"),
    "train_step": train,
    "mfu": mfu,
    "generate": read("generate"),
    "demo_on_policy_seconds": {"cpu": cpu_runs, "gpu": gpu_runs or None},
}
json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=2)
c = report["correctness"] or {}
print(f"report: {out}/report.json; correctness pass: {c.get('pass')}; steps: "
      + ", ".join(f"{k} rc {v['rc']}" for k, v in report["steps"].items() if v))
EOF
log "done"
