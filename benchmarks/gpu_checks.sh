#!/bin/bash
# Correctness checks that need a GPU, run from the repository root on a machine with CUDA:
# the NaN, empty-reduction and activation tests (tests/misuse/, tests/test_activations.py) with
# their Triton cases moved from the interpreter to the GPU (backend "triton"), the GPU tests
# (tests/test_gpu.py: CUDA-graph replay, autotuning) and the input checks (device memory).
# Without a GPU, tests/test_gpu_compile.py checks that the same kernels compile to a cubin.
set -u
python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v WARNING | tail -2
work=$(mktemp -d tests/misuse/gpu_XXXX)
touch "$work/__init__.py"
for f in tests/misuse/test_nan.py tests/misuse/test_empty.py tests/test_activations.py; do
  sed 's/"interpret"/"triton"/g' "$f" > "$work/$(basename "$f")"
done
workers=""; python -c "import xdist" 2>/dev/null && workers="-n 8"
CHAINRULE_CACHE_DIR=$(mktemp -d) python -m pytest -q -p no:cacheprovider $workers "$work" tests/test_gpu.py \
    tests/misuse/test_inputs.py tests/test_degenerate_sizes.py
status=$?
rm -rf "$work"
exit $status
