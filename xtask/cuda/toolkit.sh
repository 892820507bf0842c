#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler and libraries from PyPI's NVIDIA wheels into DEST (project-local), and
# prepares what linking needs: unversioned .so links and a libcuda.so stub (soname libcuda.so.1; the real driver
# library is found at run time on the GPU machine). Prints the toolkit root (CUDA_ROOT) on its last line.
#
# Why these versions (../shared/notes/feasibility.md): they work with driver 580; newer nvvm/crt emit PTX that
# driver 580 rejects, so they are pinned too. Never `pip --upgrade --target` (it wiped an install once).
set -euo pipefail
DEST=${1:?usage: toolkit.sh DEST}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
)
STAMP="$DEST/installed.txt"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "${WHEELS[*]}" ]]; then
  echo "toolkit.sh: installing ${WHEELS[*]} into $DEST/venv" >&2
  rm -rf "$DEST/venv"
  python3 -m venv "$DEST/venv"
  "$DEST/venv/bin/pip" install --quiet --no-cache-dir "${WHEELS[@]}"
  echo "${WHEELS[*]}" > "$STAMP"
fi
ROOT=$(echo "$DEST"/venv/lib/python3*/site-packages/nvidia/cu13)
[[ -x "$ROOT/bin/nvcc" ]] || { echo "toolkit.sh: no nvcc under $ROOT" >&2; exit 1; }
# Unversioned names for the linker (-lcublas finds libcublas.so, not libcublas.so.13).
for lib in "$ROOT"/lib/lib*.so.*; do
  base=$(basename "$lib")
  plain=${base%%.so.*}.so
  [[ -e "$ROOT/lib/$plain" ]] || ln -s "$base" "$ROOT/lib/$plain"
done
# A stub driver library: every cu* function cuda.h declares or #defines to a versioned name, defined empty. Only
# the link sees it; at run time the soname libcuda.so.1 resolves to the machine's driver.
STUBS="$DEST/stubs"
if [[ ! -f "$STUBS/libcuda.so" ]]; then
  mkdir -p "$STUBS"
  grep -ohE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$ROOT/include/cuda.h" | tr -d '( \t' > "$STUBS/names.txt"
  grep -ohE '#define[[:space:]]+cu[A-Z][A-Za-z0-9_]*[[:space:]]+cu[A-Z][A-Za-z0-9_]*' "$ROOT/include/cuda.h" \
    | awk '{print $3}' >> "$STUBS/names.txt"
  sort -u "$STUBS/names.txt" | awk '{print "void " $1 "(void) {}"}' > "$STUBS/cuda_stub.c"
  gcc -shared -fPIC -o "$STUBS/libcuda.so" -Wl,-soname,libcuda.so.1 "$STUBS/cuda_stub.c"
fi
echo "$ROOT"
