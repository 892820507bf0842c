#!/usr/bin/env bash
# Wall time to judge every HumanEval reference solution: `sod judge` (each program in a fresh
# sandboxed CPython-on-wasm instance) against baseline.py (a fresh python3 process per program,
# as openai/human-eval does), same machine, same --jobs, side by side. Prints a markdown table.
#
#   tools/judge/bench/run.sh [SOD_BINARY] [REPEATS]
#
# Needs the tools built (`cargo xtask build-tools`) and the shared benchmark files
# (`$SOD_BENCHMARKS_DIR`, default ../shared/data/benchmarks). Each row is the median of REPEATS
# runs (default 3) after one warm-up run of each, so both sides start with warm caches.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
sod="${1:-$root/target/debug/sod}"
repeats="${2:-3}"
data="${SOD_BENCHMARKS_DIR:-$root/../shared/data/benchmarks}"
problems="$data/humaneval.jsonl"
solutions="$data/humaneval_reference.jsonl"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

seconds() { date +%s.%N; }

# time_once CMD...: runs CMD, checks it passed all 164, prints the elapsed seconds.
time_once() {
    local start end result
    start="$(seconds)"
    result="$("$@" 2>/dev/null | tail -n 1)"
    end="$(seconds)"
    if [[ "$result" != "passed 164/164" ]]; then
        echo "unexpected result from $*: $result" >&2
        exit 1
    fi
    echo "$end - $start" | bc -l
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

sod_cmd() { "$sod" judge --problems "$problems" --solutions "$solutions" --jobs "$1" --out "$out/sod"; }
baseline_cmd() { python3 "$root/tools/judge/bench/baseline.py" --problems "$problems" \
    --solutions "$solutions" --jobs "$1" --timeout 3; }

echo "| jobs | sod judge (s) | python3 subprocess per program (s) | ratio |"
echo "|---|---|---|---|"
for jobs in 1 2; do
    time_once sod_cmd "$jobs" >/dev/null
    time_once baseline_cmd "$jobs" >/dev/null
    sod_times=() base_times=()
    for _ in $(seq "$repeats"); do
        sod_times+=("$(time_once sod_cmd "$jobs")")
        base_times+=("$(time_once baseline_cmd "$jobs")")
    done
    s="$(printf '%s\n' "${sod_times[@]}" | median)"
    b="$(printf '%s\n' "${base_times[@]}" | median)"
    printf '| %s | %.2f | %.2f | %.2fx |\n' "$jobs" "$s" "$b" "$(echo "$s / $b" | bc -l)"
done
