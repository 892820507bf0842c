#!/usr/bin/env bash
# Runs a command as if the CPU reported other cache sizes, to measure how the CPU training's numbers depend on them:
# candle's matrix products (the gemm crate) size their blocks from /sys/devices/system/cpu/*/cache, and another
# blocking sums in another order (README, "The models depend on the machine"; docs/demo.md).
#
# Usage (as root, Linux): unshare -m host/bench/fake-cache-sizes.sh L1D L2 L3 -- COMMAND [ARGS...]
#   e.g. unshare -m host/bench/fake-cache-sizes.sh 64K 4096K 65536K -- ./target/debug/sod demo --quick \
#        --out /tmp/demo-other --cache /tmp/cache-other
# The sizes are bind-mounted over every CPU's index0 (L1d), index2 (L2) and index3 (L3) size files inside the new
# mount namespace only; the machine's /sys is untouched.
set -euo pipefail
[ $# -ge 5 ] && [ "$4" = "--" ] || { echo "usage: unshare -m $0 L1D L2 L3 -- COMMAND [ARGS...]" >&2; exit 2; }
l1="$1" l2="$2" l3="$3"
shift 4
dir="$(mktemp -d)"
echo "$l1" > "$dir/l1"
echo "$l2" > "$dir/l2"
echo "$l3" > "$dir/l3"
for cpu in /sys/devices/system/cpu/cpu[0-9]*; do
    mount --bind "$dir/l1" "$cpu/cache/index0/size"
    mount --bind "$dir/l2" "$cpu/cache/index2/size"
    mount --bind "$dir/l3" "$cpu/cache/index3/size"
done
exec "$@"
