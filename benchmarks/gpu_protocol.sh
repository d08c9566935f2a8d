#!/usr/bin/env bash
# The prepared GPU run of the paper's protocol (issue 26), for a loan of a GPU machine (the device
# tool: no internet there; it uses the machine's own torch and runs torchstn from this checkout).
# Each cell trains as the paper did (torchstn reproduce TABLE --protocol paper: SGD, batch 256,
# 150,000 iterations, 0.01 divided by 10 every 50,000), headline pairs first, several runs side by
# side on the one GPU (--jobs); the records and run folders go to $OUT (or runs/gpu-protocol/),
# from where results/*.json take them with `torchstn reproduce render` after copying back.
# Usage: bash benchmarks/gpu_protocol.sh [JOBS]   (JOBS runs at once, default 4)
# Stop it at any time: finished runs are kept and reused by the next call, runs cut short resume.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-runs/gpu-protocol}"
jobs="${1:-4}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
common=(--protocol paper --device cuda --jobs "$jobs" --resume --runs-dir "$out/runs"
        --results-dir "$out/results" --results-md "$out/RESULTS.md" --set data.prefetch=true)
# first, which way several runs share the GPU best (sequential, processes, vmap): a minute
python -m torchstn bench --only seeds --device cuda --out "$out/gpu_seeds.json" \
    --results-dir "$out" --markdown "$out/GPU_SEEDS.md" 2>&1 | tail -4
# the headline pairs: RTS (CNN / ST-CNN) and cluttered (FCN / ST-FCN, CNN / ST-CNN), seed by seed
for seed in 0 1 2; do
    python -m torchstn reproduce table1 --columns RTS --models cnn,st_cnn_affine --seeds "$seed" "${common[@]}"
    python -m torchstn reproduce cluttered --models fcn,st_fcn_affine,cnn,st_cnn_affine --seeds "$seed" "${common[@]}"
done
# then the rest of Table 1 and the addition table
python -m torchstn reproduce table1 "${common[@]}"
python -m torchstn reproduce addition "${common[@]}"
