#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run (about 2 minutes on an H200):
#   1. the standalone kernel benchmarks (nvcc -DKERNEL_BENCH_MAIN): each kernel against its CPU reference;
#   2. the `gpu`-marked tests (pycuda launchers against numpy, zero-copy device frames; the TensorRT and
#      ORT-CUDA ones skip with their reason where those libraries are missing);
#   3. benchmarks/gpu_kernels.py: our kernels through the runtime's launchers, validated and timed.
# Needs nvcc, pycuda and the package importable (`pip install -e '.[gpu]'`). Usage:
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]        (default benchmarks/results)
# ARCH (default sm_90) is the nvcc target of the standalone benchmarks; PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
arch=${ARCH:-sm_90}
py=${PYTHON:-python3}
mkdir -p "$out"
log="$out/gpu_check.log"
: >"$log"
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$log"
standalone="$out/gpu_standalone.txt"
: >"$standalone"
for k in smplx_skinning preprocess; do
  if nvcc -O3 -arch="$arch" -DKERNEL_BENCH_MAIN "kernels/$k.cu" -o "/tmp/${k}_bench" >>"$log" 2>&1; then
    if [ "$k" = smplx_skinning ]; then
      for p in 1 4 16; do "/tmp/${k}_bench" "$p" || status=1; done
    else
      "/tmp/${k}_bench" || status=1
    fi 2>&1 | tee -a "$standalone"
  else
    echo "nvcc failed for $k" | tee -a "$log"; status=1
  fi
done
grep -q FAIL "$standalone" && status=1
"$py" -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_kernels_smplx.py tests/test_kernels_preprocess.py \
  tests/test_device_frames.py tests/test_trt_gpu.py tests/test_ort_backend.py 2>&1 | tee -a "$log" || status=1
"$py" -m human3r_edge.benchmarks.gpu_kernels --standalone "$standalone" --out "$out" 2>&1 | tee -a "$log" || status=1
echo "gpu_check status: $status" | tee -a "$log"
exit $status
