# human3r-edge: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-stamp
STUBS  := .typing
# torch is installed first and pinned: the CPU wheel lies on disk; any looser spec downloads GBs of CUDA.
TORCH_PIN := torch==2.13.0
TRT_STUBS_PIN := tensorrt-stubs==10.13.0.35.1

.PHONY: setup test demo typecheck stubs clean bench gpu-check

setup: $(STAMP) $(STUBS)/.stamp

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[export,dev]'
	touch $(STAMP)

# Published tensorrt-stubs depend on the `tensorrt` download stub, hence --no-deps; the shipped stubs are
# not valid for mypy, so a repaired copy is written to $(STUBS)/ (see export/trt_stubs.py).
$(STUBS)/.stamp: $(STAMP) export/trt_stubs.py
	$(PIP) install -q --no-deps $(TRT_STUBS_PIN)
	$(PY) -m human3r_edge.export.trt_stubs --out $(STUBS)
	touch $@

test: setup
	$(PY) -m pytest -q

typecheck: setup
	$(PY) -m mypy

demo: setup
	$(VENV)/bin/human3r-edge demo

# Needs an NVIDIA GPU and the CUDA toolkit (nvcc): pycuda builds from source against it.
gpu-check: setup
	$(PIP) install -q 'pycuda>=2024.1'
	PYTHON=$(PY) bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) $(STUBS) demo_out .pytest_cache .mypy_cache
