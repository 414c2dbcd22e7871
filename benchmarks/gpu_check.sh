#!/usr/bin/env bash
# The checks that need an NVIDIA GPU without TensorRT, in one run of at most 8 minutes (each step has a timeout):
#   1. the standalone kernel benchmarks (nvcc -DKERNEL_BENCH_MAIN): each kernel against its CPU reference;
#   2. the `gpu`-marked tests (pycuda launchers against numpy, kernels loaded from the shipped PTX, zero-copy
#      device frames; the TensorRT and ORT-CUDA ones skip with their reason where those libraries are missing);
#   3. benchmarks/gpu_kernels.py: our kernels through the runtime's launchers, validated and timed;
#   4. benchmarks/gpu_torch.py: the PyTorch reference of 672S and 896L at 512x288 on the GPU, fp32 and fp16
#      autocast, per stage with torch.cuda.max_memory_allocated, beside the paper's and our projected figures;
#   5. ort-cuda end to end: `human3r-edge doctor`; the golden ../shared/goldens/tiny_a replayed and compared
#      (where present); `check --backend ort-cuda` on a seeded tiny export (self-made reference + polygraphy);
#      the 672S benchmark. onnxruntime-gpu (244 MB) comes from $ORT_WHEEL_DIR (a local folder of wheels: no network)
#      when it is set, else from the package index.
# Usage: bash benchmarks/gpu_check.sh [RESULTS_DIR]          (default benchmarks/results)
#   ARCH (default sm_90): nvcc target of the standalone benchmarks; PYTHON (default python3);
#   GPU_CHECK_DRY_RUN=1: the same steps on the CPU with the tiny config (what tests/test_gpu_check.py runs).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
arch=${ARCH:-sm_90}
py=${PYTHON:-python3}
dry=${GPU_CHECK_DRY_RUN:-0}
mkdir -p "$out"
log="$out/gpu_check.log"
: >"$log"
status=0
t_start=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-480}  # the whole run: 8 minutes
step() { echo "== $1 ($(( $(date +%s) - t_start )) s of $budget)" | tee -a "$log"; }
cap() {  # a step's timeout: at most $1 seconds, and never past the run's budget
  local left=$(( budget - ($(date +%s) - t_start) ))
  [ "$left" -lt 1 ] && left=1
  [ "$1" -lt "$left" ] && echo "$1" || echo "$left"
}

step "1. GPU and standalone kernels"
standalone="$out/gpu_standalone.txt"
: >"$standalone"
if [ "$dry" = 1 ]; then
  echo "dry run: no nvidia-smi / nvcc benchmarks" | tee -a "$log"
else
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$log"
  for k in smplx_skinning preprocess; do
    if timeout "$(cap 60)" nvcc -O3 -arch="$arch" -DKERNEL_BENCH_MAIN "kernels/$k.cu" -o "/tmp/${k}_bench" >>"$log" 2>&1; then
      if [ "$k" = smplx_skinning ]; then
        for p in 1 4 16; do timeout "$(cap 30)" "/tmp/${k}_bench" "$p" || status=1; done
      else
        timeout "$(cap 30)" "/tmp/${k}_bench" || status=1
      fi 2>&1 | tee -a "$standalone"
    else
      echo "nvcc failed for $k" | tee -a "$log"; status=1
    fi
  done
  grep -q FAIL "$standalone" && status=1
fi

step "2. gpu-marked tests"
if [ "$dry" = 1 ]; then
  echo "dry run: skipped (they need a GPU)" | tee -a "$log"
else
  timeout "$(cap 120)" "$py" -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_kernels_smplx.py \
    tests/test_kernels_preprocess.py tests/test_kernels_shipped_ptx.py tests/test_device_frames.py \
    tests/test_trt_gpu.py tests/test_ort_backend.py 2>&1 | tee -a "$log" || status=1
fi

step "3. kernels through the runtime's launchers"
if [ "$dry" = 1 ]; then
  echo "dry run: skipped (needs pycuda and a GPU)" | tee -a "$log"
else
  timeout "$(cap 60)" "$py" -m human3r_edge.benchmarks.gpu_kernels --standalone "$standalone" --out "$out" 2>&1 \
    | tee -a "$log" || status=1
fi

step "4. PyTorch reference per stage"
if [ "$dry" = 1 ]; then
  torch_args=(--configs tiny --resolution 128x96 --precisions fp32 --frames 1 --warmup 0 --device cpu)
else
  torch_args=(--configs 672S,896L --resolution 512x288 --precisions fp32,fp16 --frames 5 --warmup 2)
fi
timeout "$(cap 240)" "$py" -m human3r_edge.benchmarks.gpu_torch "${torch_args[@]}" --out "$out" 2>&1 | tee -a "$log" \
  || status=1

step "5. ort-cuda end to end"
backend=ort-cuda
if [ "$dry" = 1 ]; then
  backend=ort-cpu
  echo "dry run: ort-cpu stands in for ort-cuda" | tee -a "$log"
elif ! "$py" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
    2>/dev/null; then
  if [ -n "${ORT_WHEEL_DIR:-}" ] && [ -d "$ORT_WHEEL_DIR" ]; then
    timeout "$(cap 120)" "$py" -m pip install -q --no-index --find-links "$ORT_WHEEL_DIR" 'onnxruntime-gpu[cuda,cudnn]' \
      'nvidia-cublas' 2>&1 | tee -a "$log" || status=1
  else
    timeout "$(cap 150)" "$py" -m pip install -q 'onnxruntime-gpu[cuda,cudnn]==1.31.*' 'nvidia-cublas~=13.0' 2>&1 \
      | tee -a "$log" || status=1
  fi
fi
timeout "$(cap 60)" "$py" -m human3r_edge doctor --backend "$backend" 2>&1 | tee -a "$log" || status=1
golden=../shared/goldens/tiny_a
if [ -d "$golden" ]; then  # golden comparison: replay (exports the golden's checkpoint on the fly), then compare
  timeout "$(cap 150)" "$py" -m human3r_edge replay --golden "$golden" --backend "$backend" --out "$out/gpu_check_tiny_a.npz" \
    2>&1 | tail -3 | tee -a "$log" || status=1
  timeout "$(cap 30)" "$py" -m human3r_edge compare "$out/gpu_check_tiny_a.npz" "$golden/golden.npz" 2>&1 | tail -8 \
    | tee -a "$log" || status=1
else
  echo "no $golden here: golden comparison skipped" | tee -a "$log"
fi
tiny="$out/gpu_check_tiny_export"  # a seeded random tiny export: `check` with its self-made reference
if [ ! -f "$tiny/export.json" ]; then
  timeout "$(cap 120)" "$py" -m human3r_edge export --config tiny --random-weights --resolution 128x96 --out "$tiny" \
    >>"$log" 2>&1 || status=1
fi
if [ "$dry" = 1 ]; then
  echo "dry run: check needs a GPU backend (exit 3 expected here)" | tee -a "$log"
  timeout "$(cap 120)" "$py" -m human3r_edge check --backend ort-cuda --engines "$tiny" --onnx-dir "$tiny" >>"$log" 2>&1
  [ $? = 3 ] || status=1
else
  timeout "$(cap 150)" "$py" -m human3r_edge check --backend ort-cuda --engines "$tiny" --onnx-dir "$tiny" 2>&1 | tail -40 \
    | tee -a "$log" || status=1
fi
if [ "$dry" != 1 ]; then
  timeout "$(cap 150)" "$py" -m human3r_edge bench --config 672S --resolution 512x288 --backends ort-cuda --frames 5 \
    --json "$out/gpu_check_672S_ort-cuda.json" 2>&1 | tail -15 | tee -a "$log" || status=1
fi
echo "gpu_check status: $status ($(( $(date +%s) - t_start )) s)" | tee -a "$log"
exit $status
