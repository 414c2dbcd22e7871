# human3r-edge: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-stamp
STUBS  := .typing
TRITON := .triton-env
# torch is installed first and pinned: the CPU wheel lies on disk; any looser spec downloads GBs of CUDA.
TORCH_PIN := torch==2.13.0
TRT_STUBS_PIN := tensorrt-stubs==10.13.0.35.1
TOOLS  := .tools
GLTF_VALIDATOR_PIN := gltf-validator@2.0.0-dev.3.10

.PHONY: setup test test-fast demo typecheck clean gpu-check gst-deps c-example

setup: $(STAMP) $(STUBS)/.stamp $(TOOLS)/.stamp gst-deps $(TRITON)/stamp.json

# Triton serving (docs/serving.md): the tritonserver bundled in the nvidia-pytriton wheel and the model's own
# environment (numpy < 2: the wheel's Python-backend stub needs it) in $(TRITON)/; idempotent (a stamp of versions).
# The stub links the system libpython3.11.so.1.0 (Debian libpython3.11).
$(TRITON)/stamp.json: $(STAMP) runtime/triton/setup_env.py
	bash .ci/apt-install.sh triton libpython3.11
	$(PY) -m human3r_edge.runtime.triton.setup_env --home $(TRITON) && touch $@

# The GStreamer element (docs/gstreamer.md) needs gst-launch/gst-inspect, the Python plugin loader, PyGObject and
# the C headers: .ci/apt-install.sh checks them with dpkg on every setup and installs what is missing (apt, root
# only; elsewhere it prints the apt-get line). Its tests skip without them, except on CI (CI=true).
GST_PACKAGES := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav \
                python3-gi python3-gst-1.0 gstreamer1.0-python3-plugin-loader libgstreamer1.0-dev
# package[:command]: present when dpkg has it or the command is on PATH
VIEWER_PACKAGES := chromium:chromium nodejs:node npm:npm
gst-deps:
	bash .ci/apt-install.sh gstreamer $(GST_PACKAGES)

# The C program that embeds the element, built against pkg-config gstreamer-1.0 (Debian libgstreamer1.0-dev).
C_EXAMPLE ?= build/human3r_pipeline
c-example: $(C_EXAMPLE)
$(C_EXAMPLE): examples/c/human3r_pipeline.c
	mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -o $@ $< $$(pkg-config --cflags --libs gstreamer-1.0)

# Test tools of the viewer and the exporters: Debian's chromium (apt, root only: .ci/apt-install.sh) and Khronos's
# glTF validator (npm, into $(TOOLS)/). Missing ones are reported; their tests skip, except on CI (CI=true).
$(TOOLS)/.stamp: .ci/apt-install.sh
	bash .ci/apt-install.sh viewer $(VIEWER_PACKAGES)
	if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-audit --no-fund --prefix $(TOOLS) $(GLTF_VALIDATOR_PIN) && touch $@; \
	else echo "setup | npm not found: the glTF validator is not installed. Hint: apt-get install npm" >&2; fi

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[export,dev,viewer,serve]'
	touch $(STAMP)

# Published tensorrt-stubs depend on the `tensorrt` download stub, hence --no-deps; the shipped stubs are
# not valid for mypy, so a repaired copy is written to $(STUBS)/ (see export/trt_stubs.py).
$(STUBS)/.stamp: $(STAMP) export/trt_stubs.py
	$(PIP) install -q --no-deps $(TRT_STUBS_PIN)
	$(PY) -m human3r_edge.export.trt_stubs --out $(STUBS)
	touch $@

test: setup
	$(PY) -m pytest -q

# The edit loop: everything but the tests marked slow (> ~30 s each on the 2-core CI machine); `make test` runs all.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

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
