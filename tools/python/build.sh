#!/usr/bin/env bash
# Builds the python tool: a WebAssembly component (world `tool` of sdk/wit) made by
# componentize-py from tools/python/app.py, with the standard library, sympy and mpmath
# preloaded into its snapshot.
#
# Usage: tools/python/build.sh [OUTPUT]      (default OUTPUT: target/tools/python.wasm)
#
# Idempotent: creates the project-local virtual environment .venv when missing, installs
# tools/python/requirements.txt into it when they changed, and skips the build when the
# inputs (guest sources, SDK, WIT, requirements, this script) hash to the value stamped in
# OUTPUT.inputs.sha256. Also writes the generated Python bindings to
# target/tools/python-bindings (used by the native tests and editors).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/tools/python.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
venv="$root/.venv"
wit="$root/sdk/wit"
sdk="$root/sdk/python"
# sod_run.py: the Python-run rules shared with the judge's harness and `sod serve`'s run_code wrapper.
run_protocol="$root/sdk/judge-protocol/python"
requirements="$here/requirements.txt"
bindings="$root/target/tools/python-bindings"
stamp="$out.inputs.sha256"

die() { echo "tools/python/build.sh: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required"
[ -d "$wit" ] || die "WIT directory $wit not found"

# 1. The virtual environment with componentize-py, sympy and mpmath.
if [ ! -x "$venv/bin/python" ]; then
    echo "creating virtual environment $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
req_hash="$(sha256sum "$requirements" | cut -d' ' -f1)"
req_stamp="$venv/.sod-python-tool-requirements.sha256"
if [ "$(cat "$req_stamp" 2>/dev/null)" != "$req_hash" ]; then
    echo "installing $requirements into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
        || die "pip install failed"
    echo "$req_hash" > "$req_stamp"
fi
cpy="$venv/bin/componentize-py"
[ -x "$cpy" ] || die "componentize-py missing from $venv"

# 2. Skip the build when nothing it reads changed.
inputs_hash="$(
    {
        echo "componentize-py $("$cpy" --version)"
        cd "$root"
        find tools/python sdk/python sdk/judge-protocol/python sdk/wit -type f \
            \( -name '*.py' -o -name '*.wit' -o -name 'requirements.txt' -o -name 'build.sh' \) \
            -not -path '*/tests/*' -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum
    } | sha256sum | cut -d' ' -f1
)"
if [ -f "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$inputs_hash" ]; then
    echo "python tool up to date: $out ($(du -h "$out" | cut -f1))"
    exit 0
fi

# 3. Bindings, then the component. componentize-py imports app.py at build time: that
#    preloads every module, runs the warm-up checks and seals the import system.
start=$SECONDS
mkdir -p "$(dirname "$out")"
rm -rf "$bindings"
"$cpy" -d "$wit" -w tool bindings "$bindings" >/dev/null || die "generating bindings failed"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
log="$(mktemp)"
# componentize-py adds the site-packages of $VIRTUAL_ENV to the module path; without it, it
# asks the first python3 on PATH, which would leak that interpreter's packages into the build.
if ! VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$cpy" -d "$wit" -w tool componentize app \
        -p "$here" -p "$sdk" -p "$run_protocol" -o "$tmp" >"$log" 2>&1; then
    # componentize-py appends a long native backtrace; the Python part comes first.
    grep -v -E '^ +[0-9]+: |^ +at ' "$log" | head -n 80 >&2
    rm -f "$log"
    die "componentize-py failed (see above)"
fi
rm -f "$log"
mv "$tmp" "$out"
echo "$inputs_hash" > "$stamp"
echo "built python tool: $out ($(du -h "$out" | cut -f1)) in $((SECONDS - start)) s"
