#!/usr/bin/env bash
# The GPU checks of issues 2 and 4 in one go, for a session lent a CUDA machine (the `device`
# tool's `run`, from the repository root). That machine's python3 already holds torch, numpy,
# opencv-python-headless, safetensors, tqdm, pyyaml, pytest and scikit-image, so nothing is
# installed: the package runs from src/. Everything printed is also saved under $OUT (or
# ./cuda-check/ where OUT is unset). About 3-7 minutes on an H200, most of it the benchmarks.
#
#   run(command="bash scripts/cuda_check.sh", timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-cuda-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=python3

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/gpu.txt"

# 1. Every CUDA test: the upscaler's and the trainer's CUDA paths, and the data pipeline's.
timeout 240 $py -m pytest -q -p no:cacheprovider -rs tests/infer/test_tiling_cuda.py tests/train/test_loop_cuda.py \
  tests/data -k "cuda" 2>&1 | tee "$out/pytest.txt"
status=${PIPESTATUS[0]}

# 2. Upscaling speed: naive fp32 against esrforge fp32 / fp16, whole and tiled.
timeout 180 $py benchmarks/bench_upscale.py --device cuda --size 512 --repeats 3 2>&1 | tee "$out/bench_upscale.txt"

# 3. The ESRGAN GAN-stage step: fp32 NCHW, bf16 and fp16 (grad scaler), channels_last.
timeout 120 $py benchmarks/bench_train.py --batch 16 --hr-size 128 --steps 10 2>&1 | tee "$out/bench_train.txt"

# 4. A folder: reading and PNG writing overlapped with the model (esrforge's loop) vs serial.
timeout 90 $py benchmarks/bench_folder.py --device cuda --images 16 --size 512 --rounds 2 2>&1 | tee "$out/bench_folder.txt"

# 5. One Adam step over RRDBNet x4: default, foreach, fused (the trainer uses fused).
timeout 60 $py benchmarks/bench_optim.py --device cuda --rounds 3 2>&1 | tee "$out/bench_optim.txt"

exit "$status"
