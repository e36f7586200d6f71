#!/bin/bash
# The PyTorch-on-a-GPU checks as one prepared command, for a device lent for a few minutes:
#
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=540)
#
# 1. the CUDA cases of the writer's tests (tests/torch_devices.py adds "cuda" where present);
# 2. `benchmarks/run.py --only gpu_training` (BENCHMARKS.md's section, written under $OUT);
# 3. `benchmarks/gpu_log_profile.py`: log()'s host time with the GPU idle.
#
# The device machine has no network and no TensorFlow. Its Python gets the native CRC-32C
# from a wheel carried in .whl/ (ignored by git), made here with
#   pip download google-crc32c==1.9.0 --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl
# Without it the records go through TensorBoard's pure-Python CRC (~2 ms a record), and
# env.txt says so: such figures are not the writer's.
# Each step has its own time limit (TEST_S, BENCH_S, PROFILE_S seconds), so a hang in one
# still brings back what the others wrote.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        || echo "the wheel in .whl/ does not install on this Python: see env.txt"
fi
export PYTHONPATH=/tmp/site:$PWD
{
    nvidia-smi -L
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
    python3 -c "from tb_varupdate.format import crc32c; print('native crc32c' if crc32c.NATIVE else 'NO native crc32c: pure-Python CRC')"
} 2>&1 | tee "$OUT/env.txt"
timeout "${TEST_S:-200}" python3 -m pytest -q -p no:cacheprovider -x \
    tests/test_torch_devices.py tests/test_torch_pending.py tests/test_torch_measure.py 2>&1 | tee "$OUT/tests.txt" | tail -15
timeout "${BENCH_S:-240}" python3 benchmarks/run.py --only gpu_training --output "$OUT/BENCHMARKS.md" \
    > "$OUT/bench.txt" 2>&1
cp benchmarks/results/gpu_training.json "$OUT/" 2>/dev/null
sed -n '/^## Training overhead, PyTorch on a GPU/,/^## /p' "$OUT/BENCHMARKS.md" | grep "^|\|^\*\*\|^Host" | head -40
timeout "${PROFILE_S:-90}" python3 benchmarks/gpu_log_profile.py 2>&1 | tee "$OUT/log_profile.txt"
