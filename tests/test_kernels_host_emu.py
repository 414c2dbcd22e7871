"""The host-emulation harness itself: real barriers, race and divergence detection, pycuda calling convention."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from human3r_edge.kernels.host_emu import EmulationCompileError, compile_module, kernel_names
from human3r_edge.kernels.host_emu import launch
from support.fake_gpu import ContractViolation, fake_gpu, primary_gpu  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
                                reason="the host emulation needs a C++ compiler (g++ or $CXX)")
SRC = r"""
// neighbour exchange through shared memory: thread t reads what thread t+1 wrote
extern "C" __global__ void shift_with_barrier(const float* x, float* y, int n) {
  __shared__ float s[256];
  const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  if (i < n) y[i] = s[(t + 1) % blockDim.x];
}
// the same without the barrier: a planted race
extern "C" __global__ void shift_racy(const float* x, float* y, int n) {
  __shared__ float s[256];
  const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? x[i] : 0.0f;
  if (i < n) y[i] = s[(t + 1) % blockDim.x];
}
// tree reduction: log2(blockDim) barriers, each one needed
extern "C" __global__ void block_sum(const float* x, float* out) {
  __shared__ float s[128];
  const int t = threadIdx.x;
  s[t] = x[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}
extern "C" __global__ void exit_before_barrier(float* y) {
  if (threadIdx.x < 3) return;
  __syncthreads();
  y[threadIdx.x] = 1.0f;
}
extern "C" __global__ void two_barrier_sites(float* y) {
  if (threadIdx.x % 2) { __syncthreads(); } else { __syncthreads(); }
  y[threadIdx.x] = 1.0f;
}
extern "C" __global__ void read_unwritten_shared(float* y) {
  __shared__ float s[64];
  y[threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void count_3d(int* counter, unsigned* ids, float* acc, float v) {
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
  ids[bid * nthreads + tid] = bid * nthreads + tid;
  atomicAdd(counter, 1);
  atomicAdd(acc, v);
}
extern "C" __global__ void half_to_float(const unsigned short* h, float* f, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) f[i] = __half2float(__ushort_as_half(h[i]));
}
// every block writes the same word: the result depends on which block runs last (a race between blocks)
extern "C" __global__ void last_block_wins(int* out) {
  if (threadIdx.x == 0) out[0] = blockIdx.x;
}
template <typename T> __global__ void not_an_entry(T* x) { x[0] = T(1); }
"""


@pytest.fixture(scope="module")
def mod():
    return compile_module(SRC)


def test_kernel_names_skip_templates():
    assert kernel_names(SRC) == ["shift_with_barrier", "shift_racy", "block_sum", "exit_before_barrier",
                                 "two_barrier_sites", "read_unwritten_shared", "count_3d", "half_to_float",
                                 "last_block_wins"]


def _shift_reference(x: np.ndarray, block: int) -> np.ndarray:
    pad = np.zeros(-len(x) % block, np.float32)
    return np.roll(np.concatenate([x, pad]).reshape(-1, block), -1, axis=1).reshape(-1)[: len(x)]


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffle"])
def test_barrier_is_real_in_every_order(mod, order):
    n = 1000
    x = np.arange(1, n + 1, dtype=np.float32)
    y = np.zeros(n, np.float32)
    mod.get_function("shift_with_barrier")(x, y, np.int32(n), block=(256, 1, 1), grid=(4, 1), order=order)
    np.testing.assert_array_equal(y, _shift_reference(x, 256))
    out = np.zeros(8, np.float32)
    data = np.random.default_rng(0).normal(size=8 * 128).astype(np.float32)
    mod.get_function("block_sum")(data, out, block=(128, 1, 1), grid=(8, 1), order=order, seed=3)
    np.testing.assert_allclose(out, data.reshape(8, 128).sum(1), rtol=1e-5)


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffle"])
def test_planted_race_is_caught(mod, order):
    n = 1000
    x = np.arange(1, n + 1, dtype=np.float32)
    y = np.zeros(n, np.float32)
    mod.get_function("shift_racy")(x, y, np.int32(n), block=(256, 1, 1), grid=(4, 1), order=order, seed=1)
    wrong = ~(y == _shift_reference(x, 256))
    assert wrong.sum() > 0  # forward: every reader runs before its writer; reverse: the wrap-around thread
    assert np.isnan(y[wrong]).all()  # what it read is the NaN poison of never-written shared memory


def test_block_order_follows_the_order_mode(mod):
    out = np.zeros(1, np.int32)
    seen = set()
    for order in ("forward", "reverse", "shuffle"):
        mod.get_function("last_block_wins")(out, block=(32, 1, 1), grid=(16, 1), order=order, seed=5)
        seen.add(int(out[0]))
    assert {15, 0} <= seen  # forward: block 15 last; reverse: block 0 last


def test_divergent_barriers_are_errors(mod):
    y = np.zeros(32, np.float32)
    with pytest.raises(RuntimeError, match="3 threads exited while 29 wait at the barrier"):
        mod.get_function("exit_before_barrier")(y, block=(32, 1, 1), grid=(1, 1))
    with pytest.raises(RuntimeError, match="threads wait at different barriers"):
        mod.get_function("two_barrier_sites")(y, block=(32, 1, 1), grid=(1, 1))


def test_shared_memory_is_poisoned_per_block(mod):
    y = np.zeros(64, np.float32)
    mod.get_function("read_unwritten_shared")(y, block=(64, 1, 1), grid=(1, 1))
    assert np.isnan(y).all()


def test_3d_indices_and_atomics(mod):
    block, grid = (4, 3, 2), (2, 3, 2)
    total = 24 * 12
    counter = np.zeros(1, np.int32)
    ids = np.zeros(total, np.uint32)
    acc = np.zeros(1, np.float32)
    mod.get_function("count_3d")(counter, ids, acc, np.float32(0.5), block=block, grid=grid)
    assert counter[0] == total and acc[0] == 0.5 * total
    np.testing.assert_array_equal(ids, np.arange(total))


def test_half_conversion_is_exact_for_all_65536_values(mod):
    h = np.arange(65536, dtype=np.uint16)
    f = np.zeros(65536, np.float32)
    mod.get_function("half_to_float")(h, f, np.int32(65536), block=(256, 1, 1), grid=(256, 1))
    ref = h.view(np.float16).astype(np.float32)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(f[finite], ref[finite])
    np.testing.assert_array_equal(np.isnan(f), np.isnan(ref))
    np.testing.assert_array_equal(f[np.isinf(ref)], ref[np.isinf(ref)])


def test_calling_convention_errors(mod):
    fn = mod.get_function("shift_with_barrier")
    assert fn.signature == "PPi"
    x = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="parameter #2 \\| wrong scalar type: int. Expected numpy.int32"):
        fn(x, x, 4, block=(4, 1, 1))
    with pytest.raises(TypeError, match="parameter #2 \\| wrong scalar type: float32"):
        fn(x, x, np.float32(4), block=(4, 1, 1))
    with pytest.raises(TypeError, match="wrong number of arguments: 2"):
        fn(x, x, block=(4, 1, 1))
    with pytest.raises(TypeError, match="parameter #0 \\| expected a pointer"):
        fn(1.5, x, np.int32(4), block=(4, 1, 1))
    with pytest.raises(RuntimeError, match="invalid block dimensions"):
        fn(x, x, np.int32(4), block=(2048, 1, 1))
    with pytest.raises(ValueError, match="invalid dimensions"):
        fn(x, x, np.int32(4), block=(0, 1, 1))
    with pytest.raises(ValueError, match="dynamic shared memory"):
        fn(x, x, np.int32(4), block=(4, 1, 1), shared=128)
    with pytest.raises(ValueError, match="no such kernel"):
        mod.get_function("not_an_entry")


def test_stand_in_pycuda_allocations_and_source_module(primary_gpu):
    """The pycuda stand-in (tests/support/fake_gpu) compiles SourceModule through host_emu.launch."""
    drv, comp = primary_gpu.cuda, primary_gpu.compiler
    a = drv.mem_alloc(4000)
    assert int(a) % 256 == 0
    x = np.arange(1000, dtype=np.float32)
    drv.memcpy_htod(a, x)
    y = np.empty_like(x)
    drv.memcpy_dtoh(y, a)
    np.testing.assert_array_equal(x, y)
    with pytest.raises(ContractViolation, match="past the end"):
        drv.memcpy_htod(a, np.zeros(2000, np.float32))
    assert len(primary_gpu.take_violations()) == 1
    m = comp.SourceModule(SRC, no_extern_c=True, options=["-O3"], arch="sm_87")
    out = drv.mem_alloc(4000)
    m.get_function("shift_with_barrier")(a, out, np.int32(1000), block=(256, 1, 1), grid=(4, 1))
    drv.memcpy_dtoh(y, out)
    np.testing.assert_array_equal(y, _shift_reference(x, 256))


def test_stand_in_launches_with_the_same_argument_rules(primary_gpu):
    """The one pycuda stand-in launches through host_emu.launch: a plain int pointer is pycuda's TypeError there
    too (and recorded, so a swallowed one still fails the test)."""
    drv = primary_gpu.cuda
    a, out = drv.mem_alloc(4000), drv.mem_alloc(4000)
    fn = primary_gpu.compiler.SourceModule(SRC, no_extern_c=True).get_function("shift_with_barrier")
    with pytest.raises(TypeError, match="parameter #0.*plain Python int"):
        fn(int(a), out, np.int32(1000), block=(256, 1, 1), grid=(4, 1))
    assert len(primary_gpu.take_violations()) == 1
    fn(a, out, np.int32(1000), block=(256, 1, 1), grid=(4, 1))
    drv.Context.synchronize()


def test_compile_errors_are_reported():
    with pytest.raises(EmulationCompileError, match="g\\+\\+ failed"):
        compile_module('extern "C" __global__ void k(float* x) { __shfl_down_sync(0xffffffff, x[0], 1); }')


def test_launch_refuses_what_real_pycuda_refuses():
    """Real pycuda raises TypeError for a plain Python int/float kernel argument and passes a numpy array by value;
    the emulation would run either, so the launcher refuses them (a real H200 run caught a plain-int device
    pointer that a lenient stand-in had let through)."""
    x, y = np.zeros(1000, np.float32), np.zeros(1000, np.float32)
    a, out = np.uintp(x.ctypes.data), np.uintp(y.ctypes.data)
    fn = launch.load_source(SRC, no_extern_c=True).get_function("shift_with_barrier")
    with pytest.raises(TypeError, match="parameter #0.*plain Python int"):
        fn(int(a), out, np.int32(1000), block=(256, 1, 1), grid=(4, 1))
    with pytest.raises(TypeError, match="parameter #2.*plain Python int"):
        fn(a, out, 1000, block=(256, 1, 1), grid=(4, 1))
    with pytest.raises(TypeError, match="host numpy array"):
        fn(np.zeros(1000, np.float32), out, np.int32(1000), block=(256, 1, 1), grid=(4, 1))
    fn(np.uintp(int(a)), out, np.int32(1000), block=(256, 1, 1), grid=(4, 1))  # what the launchers pass
