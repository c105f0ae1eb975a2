#!/usr/bin/env bash
# amphi on a GPU beside PyTorch on the same machine: `amphi bench --device gpu` (f32 and f16
# weights) and on the CPU, then torch_ref.py (PyTorch with CUDA) on the same token ids, which
# checks every amphi embedding against PyTorch in f64 and times PyTorch in f32 and f16.
#
#   bench/gpu/run.sh AMPHI_BINARY MODEL_DIR OUT_DIR [SHAPES]
#
# Needs a GPU that wgpu reaches (Vulkan, Metal or DX12) and python3 with torch (CUDA) and
# transformers.
set -u
amphi=$1 model=$2 out=$3 shapes=${4:-1x8,1x128,32x128,128x128}
here=$(dirname "$0")
mkdir -p "$out"
"$amphi" bench -m "$model" --shapes "$shapes" --write-inputs "$out/inputs.json" || exit 1
"$amphi" bench -m "$model" --device gpu --shapes "$shapes" --out "$out/amphi-gpu-f32.json" 2>&1 | tail -5
"$amphi" bench -m "$model" --device gpu --precision f16 --shapes "$shapes" --out "$out/amphi-gpu-f16.json" 2>&1 | tail -5
"$amphi" bench -m "$model" --device cpu --no-kernels --shapes "$shapes" --max-runs 7 --out "$out/amphi-cpu.json" 2>&1 | tail -5
python3 "$here/torch_ref.py" "$model" "$out/inputs.json" "$out"/amphi-*.json
