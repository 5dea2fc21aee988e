#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (run by hand; CI has no GPU):
#
#   scripts/gpu-check.sh          # burn's CUDA backend
#   scripts/gpu-check.sh wgpu     # burn's wgpu backend (Vulkan) on the same card
#
# 1. builds with the GPU feature (release profile);
# 2. runs the equivalence tests on the device (crates/ponder-models/tests/gpu.rs: the
#    same weights give the CPU's logits, a mixed-exit batch equals each row run alone,
#    Mamba's scan equals its steps, token-level exits match the CPU);
# 3. runs the adaptive-inference bench (benches/benches/adaptive.rs: the default
#    Fashion-MNIST ViT, random weights) at batch 32 and 256 on the device;
# 4. prints one table: full-depth throughput, and the FLOP and wall-clock speed-ups of
#    the exit schedules, with their ratio (the target is a ratio >= 0.8: exited rows
#    really leave the batch).
#
# The CUDA build needs no CUDA toolkit: burn loads the driver's libraries at run time.
# Without `nvcc`, the CUDA version is read from nvidia-smi (CUDARC_CUDA_VERSION). Its
# first build downloads a prebuilt LLVM from github.com (burn's CUDA backend depends on
# cubecl-llvm), so the machine needs that address once, or that folder
# (~/.local/share/tracel/tracel-llvm-23.1.0-4) copied from a machine that has it.
# Logs go to runs/gpu-check/; the table is also written to runs/gpu-check/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."

backend="${1:-cuda}"
case "$backend" in
  cuda | wgpu) ;;
  *) echo "usage: $0 [cuda|wgpu]" >&2; exit 2 ;;
esac

if ! command -v nvidia-smi > /dev/null || ! card=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2> /dev/null | head -1) || [ -z "$card" ]; then
  echo "no NVIDIA GPU here (nvidia-smi found none): nothing to check" >&2
  exit 1
fi
echo "GPU: $card"

if [ "$backend" = cuda ] && ! command -v nvcc > /dev/null && [ -z "${CUDARC_CUDA_VERSION:-}" ]; then
  # "CUDA Version: 12.8" in nvidia-smi's banner -> 12080
  version=$(nvidia-smi | grep -o 'CUDA Version: [0-9]*\.[0-9]*' | head -1 | awk '{print $3}')
  if [ -n "$version" ]; then
    export CUDARC_CUDA_VERSION="${version%%.*}0${version##*.}0"
    echo "no nvcc: building for the driver's CUDA $version (CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION)"
  fi
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ponder-target}"
out=runs/gpu-check
mkdir -p "$out"

echo "== build and equivalence tests on $backend"
cargo test --release -p ponder-models --features "$backend" --test gpu 2>&1 | tee "$out/tests.log"

echo "== adaptive-inference bench on $backend, batch 32 and 256"
PONDER_BENCH_DEVICE="$backend" PONDER_BENCH_BATCHES=32,256 \
  cargo bench -p ponder-benches --features "$backend" --bench adaptive -- --noplot 2>&1 | tee "$out/bench.log"

# The bench's summary lines:
#   wall-clock vs FLOP speed-up (cuda, batch 32, median of 31; full depth 1234.5 rows/s):
#     mixed-1..6   FLOP speed-up 1.71×  wall-clock 1.52×  ratio 0.89
{
  echo "GPU: $card; backend: $backend; $(git rev-parse --short HEAD 2> /dev/null || echo 'no git')"
  echo
  echo "| batch | full depth (rows/s) | schedule | FLOP speed-up | wall-clock speed-up | ratio |"
  echo "|---:|---:|---|---:|---:|---:|"
  awk '
    /^wall-clock vs FLOP speed-up/ {
      match($0, /batch [0-9]+/); batch = substr($0, RSTART + 6, RLENGTH - 6)
      match($0, /full depth [0-9.]+/); rows = substr($0, RSTART + 11, RLENGTH - 11)
      next
    }
    /FLOP speed-up .* wall-clock .* ratio/ && batch != "" {
      printf "| %s | %s | %s | %s | %s | %s |\n", batch, rows, $1, $4, $6, $8
    }
  ' "$out/bench.log"
} | tee "$out/table.md.tmp"
mv "$out/table.md.tmp" "$out/table.md"
