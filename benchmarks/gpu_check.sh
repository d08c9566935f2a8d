#!/usr/bin/env bash
# The prepared GPU check of the fused path (issue 25, "must hold" 5), for a short loan of a GPU
# machine (the device tool: no internet there, so it uses the machine's own torch and triton and
# runs torchstn from this checkout). In order, each step stopping the script if it fails:
#   1. the Triton kernels' tests on CUDA (compiled by Triton, not interpreted), the CUDA tests
#      (a training step under torch.cuda.set_sync_debug_mode("error"), compile and export with
#      the Triton operator) and the graph tests;
#   2. the sampler group of the benchmark on the GPU: unfused, fused-triton and fused-triton
#      (deterministic) rows beside PyTorch, written to $OUT (or benchmarks/results/).
# Usage: bash benchmarks/gpu_check.sh     (about 5 minutes on an H100; nothing is installed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
python - <<'PY'
import torch, importlib.util
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-",
      "triton", importlib.util.find_spec("triton") is not None)
PY
python -m pytest -q -p no:cacheprovider -o addopts="" tests/test_native_triton.py \
    tests/test_cuda.py tests/test_native_graphs.py 2>&1 | tee "$out/gpu_check_tests.log" | tail -25
python -m torchstn bench --only sampler --device cuda --out "$out/gpu_sampler.json" \
    --results-dir "$out" --markdown "$out/GPU_SAMPLER.md" 2>&1 | tail -8
