#!/usr/bin/env bash
# The on-policy measurements of docs/training.md, on the demo's cached models.
#
#   examples/onpolicy/run.sh OUT_DIR TRAIN_JSONL TEACHER_DIR STUDENT_DIR ARM [SEED]
#
# TRAIN_JSONL is the demo's train.jsonl (a demo run writes it into its --out directory); its last 256 rows are held
# out for evaluation and the others are the on-policy prompts. ARM names a row of docs/training.md:
#   cold            the cold-start student, evaluated only
#   opd-full        OPD, full-vocabulary reverse KL          sod-full     SOD, full-vocabulary reverse KL
#   opd-sampled     OPD, sampled-token (the paper's)         sod-sampled  SOD, sampled-token (the paper's)
#   null-full       opd-full with the null-signal control    jsd-full     OPD, full-vocabulary JSD(0.5)
# Extra `key=value` overrides of the run config may be given in SOD_SET (space separated), with RUN_TAG naming
# the variant in the run directory.
set -euo pipefail
arm=$5 seed=${6:-0}
# Absolute: the configs resolve relative paths against their own directory.
mkdir -p "$1"
out=$(realpath "$1") train=$(realpath "$2") teacher=$(realpath "$3") student=$(realpath "$4")
here=$(cd "$(dirname "$0")" && pwd)
sod=${SOD:-$here/../../target/debug/sod}
mkdir -p "$out"
head -n -256 "$train" > "$out/onpolicy.jsonl"
tail -n 256 "$train" > "$out/heldout.jsonl"
case $arm in
  cold) loss=() ;;
  opd-full) loss=(--set loss.name=opd --set loss.settings.signal=full) ;;
  sod-full) loss=(--set loss.name=sod --set loss.settings.signal=full) ;;
  jsd-full) loss=(--set loss.name=opd --set loss.settings.signal=full --set loss.settings.divergence=jsd) ;;
  null-full) loss=(--set loss.name=opd --set loss.settings.signal=full --set null_signal=true) ;;
  opd-sampled) loss=(--set loss.name=opd --set learning_rate=1e-4) ;;
  sod-sampled) loss=(--set loss.name=sod --set learning_rate=1e-4) ;;
  *) echo "unknown arm $arm" >&2; exit 2 ;;
esac
run="$out/$arm${RUN_TAG:-}-seed$seed"
model=$student
if [ "$arm" != cold ]; then
  extra=()
  for kv in ${SOD_SET:-}; do extra+=(--set "$kv"); done
  "$sod" train --config "$here/train.toml" --set "student=$student" --set "teacher=$teacher" \
    --set "dataset=$out/onpolicy.jsonl" --set "out_dir=$run" --set "seed=$seed" "${loss[@]}" "${extra[@]}"
  model=$(ls -d "$run"/checkpoints/step-* | sort -V | tail -n 1)
fi
"$sod" eval --config "$here/eval.toml" --set "model=$model" --set "out_dir=$run/eval" \
  --set "datasets=[{name=\"heldout\", path=\"$out/heldout.jsonl\", kind=\"math\"}]" > "$run.eval.log"
tail -n 3 "$run.eval.log"
