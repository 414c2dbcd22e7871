"""The CPU stand-in for tensorrt/pycuda catches the contract breaches a real GPU would punish."""
from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

from human3r_edge.runtime.cuda_util import CudaGraphs, require_pycuda, require_tensorrt
from human3r_edge.errors import Human3RError
from support.fake_gpu import ContractViolation, fake_gpu  # noqa: F401  (fixture)
from support.toy_export import write_toy_export


@pytest.fixture
def cuda(fake_gpu):
    cuda = require_pycuda()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    yield cuda
    ctx.pop()


@pytest.fixture
def engine(fake_gpu, tmp_path):
    """A deserialized toy smpl_head engine and its I/O (name -> (shape, dtype, nbytes))."""
    write_toy_export(tmp_path, fp16=False)
    trt = fake_gpu.trt
    logger = trt.Logger()
    builder = trt.Builder(logger)
    net = builder.create_network(0)
    parser = trt.OnnxParser(net, logger)
    assert parser.parse_from_file(str(tmp_path / "smpl_head.onnx"))
    plan = builder.build_serialized_network(net, builder.create_builder_config())
    eng = trt.Runtime(logger).deserialize_cuda_engine(plan)
    io = {}
    for i in range(eng.num_io_tensors):
        n = eng.get_tensor_name(i)
        shape, dt = tuple(eng.get_tensor_shape(n)), np.dtype(trt.nptype(eng.get_tensor_dtype(n)))
        io[n] = (shape, dt, int(np.prod(shape)) * dt.itemsize, eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    return eng, io


def _bind_all(ctx_, cuda, io, skip=()):
    bufs = {n: cuda.mem_alloc(nb) for n, (_, _, nb, _) in io.items()}
    for n, (shape, _, _, is_in) in io.items():
        if is_in:
            assert ctx_.set_input_shape(n, shape)
        if n not in skip:
            assert ctx_.set_tensor_address(n, int(bufs[n]))
    return bufs


def test_imports_resolve_to_the_stand_in(fake_gpu):
    assert require_tensorrt() == fake_gpu.trt.__version__
    import pycuda.driver as drv

    assert drv is fake_gpu.cuda and sys.modules["tensorrt"] is fake_gpu.trt


def test_valid_enqueue_runs_the_graph(cuda, engine, fake_gpu):
    eng, io = engine
    ctx_ = eng.create_execution_context()
    bufs = _bind_all(ctx_, cuda, io)
    stream = cuda.Stream()
    for n, (shape, dt, _, is_in) in io.items():
        if is_in:
            host = cuda.pagelocked_empty(shape, dt)
            host[:] = 0.1
            cuda.memcpy_htod_async(bufs[n], host, stream)
    assert ctx_.execute_async_v3(stream.handle)
    out = cuda.pagelocked_empty(io["smpl_rotmat"][0], np.float32)
    cuda.memcpy_dtoh_async(out, bufs["smpl_rotmat"], stream)
    assert np.isnan(out).all()  # nothing ran yet: the stream executes on synchronize
    stream.synchronize()
    assert np.isfinite(out).all()
    r = out[0, 0, 0]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)  # the toy head's Gram-Schmidt rotations


def test_unset_address_is_caught(cuda, engine, fake_gpu):
    eng, io = engine
    ctx_ = eng.create_execution_context()
    bufs = _bind_all(ctx_, cuda, io, skip=("smpl_shape",))  # noqa: F841  (keeps the buffers alive)
    with pytest.raises(ContractViolation, match="smpl_shape has no address"):
        ctx_.execute_async_v3(cuda.Stream().handle)
    assert len(fake_gpu.take_violations()) == 1


def test_unset_input_shape_is_caught(cuda, engine, fake_gpu):
    eng, io = engine
    ctx_ = eng.create_execution_context()
    bufs = {n: cuda.mem_alloc(nb) for n, (_, _, nb, _) in io.items()}
    for n, b in bufs.items():
        assert ctx_.set_tensor_address(n, int(b))
    with pytest.raises(ContractViolation, match="human_tokens has no shape"):
        ctx_.execute_async_v3(cuda.Stream().handle)
    assert len(fake_gpu.take_violations()) == 1


def test_input_aliased_to_output_is_caught(cuda, engine, fake_gpu):
    eng, io = engine
    ctx_ = eng.create_execution_context()
    bufs = _bind_all(ctx_, cuda, io)
    # the input placed in the output's buffer: an alias (and a buffer of the wrong size for the input)
    ctx_.set_tensor_address("human_tokens", int(bufs["smpl_rotmat"]))
    fake_gpu.dev.raise_on_violation = False  # collect every breach of this one call
    assert ctx_.execute_async_v3(cuda.Stream().handle)
    found = fake_gpu.take_violations()
    assert any("human_tokens and output smpl_rotmat overlap" in v for v in found)
    assert any("buffer of human_tokens is 7632 bytes" in v for v in found)


def test_aliasing_alone_is_caught(cuda, engine, fake_gpu):
    eng, io = engine
    ctx_ = eng.create_execution_context()
    bufs = _bind_all(ctx_, cuda, io)
    assert io["smpl_shape"][2] == io["smpl_expression"][2]
    ctx_.set_tensor_address("smpl_expression", int(bufs["smpl_shape"]))  # two outputs in one buffer
    with pytest.raises(ContractViolation, match="overlap in device memory"):
        ctx_.execute_async_v3(cuda.Stream().handle)
    assert len(fake_gpu.take_violations()) == 1


def test_wrong_buffer_size_is_caught(cuda, engine, fake_gpu):
    eng, io = engine
    ctx_ = eng.create_execution_context()
    bufs = _bind_all(ctx_, cuda, io)  # noqa: F841
    small = cuda.mem_alloc(io["smpl_transl"][2] - 4)
    ctx_.set_tensor_address("smpl_transl", int(small))
    with pytest.raises(ContractViolation, match="run 4 bytes past the end"):
        ctx_.execute_async_v3(cuda.Stream().handle)
    bigger = cuda.mem_alloc(io["smpl_transl"][2] + 256)
    ctx_.set_tensor_address("smpl_transl", int(bigger))
    with pytest.raises(ContractViolation, match="needs exactly"):
        ctx_.execute_async_v3(cuda.Stream().handle)
    assert len(fake_gpu.take_violations()) == 2


def test_use_after_free_is_caught(cuda, engine, fake_gpu):
    eng, io = engine
    ctx_ = eng.create_execution_context()
    bufs = _bind_all(ctx_, cuda, io)
    bufs["smpl_shape"].free()
    with pytest.raises(ContractViolation, match="use after free"):
        ctx_.execute_async_v3(cuda.Stream().handle)
    assert len(fake_gpu.take_violations()) == 1


def test_freed_after_enqueue_is_caught_at_execution(cuda, engine, fake_gpu):
    eng, io = engine
    ctx_ = eng.create_execution_context()
    bufs = _bind_all(ctx_, cuda, io)
    stream = cuda.Stream()
    assert ctx_.execute_async_v3(stream.handle)
    del bufs["smpl_transl"]  # the last reference dies while the work is still queued
    with pytest.raises(ContractViolation, match="use after free"):
        stream.synchronize()
    assert len(fake_gpu.take_violations()) == 1


def test_copy_direction_size_and_pinning(cuda, fake_gpu):
    d = cuda.mem_alloc(64)
    pinned = cuda.pagelocked_empty((16,), np.float32)
    pageable = np.zeros(16, np.float32)
    s = cuda.Stream()
    with pytest.raises(ContractViolation, match="pageable"):
        cuda.memcpy_htod_async(d, pageable, s)
    with pytest.raises(ContractViolation, match="wrong direction"):
        cuda.memcpy_htod_async(pinned, d, s)  # arguments swapped
    with pytest.raises(ContractViolation, match="wrong direction"):
        cuda.memcpy_dtoh_async(d, pinned, s)
    with pytest.raises(ContractViolation, match="past the end"):
        cuda.memcpy_htod_async(d, cuda.pagelocked_empty((17,), np.float32), s)
    with pytest.raises(ContractViolation, match="not device memory"):
        cuda.memcpy_dtod_async(d, pageable.ctypes.data, 64, s)
    fake_gpu.take_violations()
    # the host side of an async copy is read when the stream runs, as on a GPU
    pinned[:] = 1.0
    cuda.memcpy_htod_async(d, pinned, s)
    pinned[:] = 2.0
    back = cuda.pagelocked_empty((16,), np.float32)
    cuda.memcpy_dtoh_async(back, d, s)
    s.synchronize()
    assert (back == 2.0).all()


def test_capture_rules(cuda, fake_gpu):
    graphs = CudaGraphs()
    s = cuda.Stream()
    d = cuda.mem_alloc(16)
    graphs.begin_capture(s.handle)
    with pytest.raises(ContractViolation, match="during CUDA graph capture"):
        cuda.mem_alloc(16)
    with pytest.raises(ContractViolation, match="capturing"):
        s.synchronize()
    host = cuda.pagelocked_empty((4,), np.float32)
    host[:] = 3.0
    cuda.memcpy_htod_async(d, host, s)  # recorded, not run
    g = graphs.end_capture(s.handle)
    exe = graphs.instantiate(g)
    back = cuda.pagelocked_empty((4,), np.float32)
    for value in (5.0, 7.0):
        host[:] = value
        graphs.launch(exe, s.handle)
        cuda.memcpy_dtoh_async(back, d, s)
        s.synchronize()
        assert (back == value).all()  # a replay reads the captured addresses' current contents
    graphs.destroy(g, exe)
    with pytest.raises(Human3RError, match="CUresult 1"):
        graphs.destroy(g, exe)  # double destroy: a checked CUresult, not silence
    with pytest.raises(ContractViolation, match="legacy default stream"):
        graphs.begin_capture(0)
    assert len(fake_gpu.take_violations()) == 3


def test_no_context_is_caught(fake_gpu):
    cuda = require_pycuda()
    with pytest.raises(ContractViolation, match="no current CUDA context"):
        cuda.mem_alloc(16)
    fake_gpu.take_violations()
    import pycuda.autoinit  # noqa: F401  (creates and pushes a context, like the real module)

    assert int(cuda.mem_alloc(16)) % 256 == 0


def test_kernels_run_through_the_host_emulation(cuda):
    from pycuda.compiler import SourceModule

    mod = SourceModule('extern "C" __global__ void k(float* x) { x[threadIdx.x] = 2.0f; }')
    d = cuda.mem_alloc(4 * 32)
    s = cuda.Stream()
    mod.get_function("k")(d, block=(32, 1, 1), grid=(1, 1), stream=s)
    out = cuda.pagelocked_empty((32,), np.float32)
    cuda.memcpy_dtoh_async(out, d, s)
    s.synchronize()
    assert (out == 2.0).all()


def test_libcuda_error_names_resolve(fake_gpu):
    name = ctypes.c_char_p()
    fake_gpu.libcuda.cuGetErrorName(1, ctypes.byref(name))
    assert name.value == b"CUDA_ERROR_INVALID_VALUE"


def test_cuda_skinner_runs_through_the_stand_in(fake_gpu, tmp_path):
    """The runtime's pycuda SMPL-X launcher (real pycuda code path) on the strict stand-in vs the numpy path."""
    from human3r_edge.runtime.smplx.gpu import CudaSkinner
    from human3r_edge.runtime.smplx.skinning import SMPLXModel
    from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx

    import pycuda.autoinit  # noqa: F401  (the launcher expects a current context)

    model = SMPLXModel.load(write_synthetic_smplx(tmp_path, seed=4, compress=False))
    rng = np.random.default_rng(0)
    P = 3
    axis = rng.normal(size=(P, 53, 3))
    angle = np.linalg.norm(axis, axis=-1, keepdims=True)
    k = axis / angle
    kx = np.zeros((P, 53, 3, 3))
    kx[..., 0, 1], kx[..., 0, 2], kx[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    kx = kx - np.swapaxes(kx, -1, -2)
    s, c = np.sin(angle * 0.3)[..., None], np.cos(angle * 0.3)[..., None]
    rot = (np.eye(3) + s * kx + (1 - c) * kx @ kx).astype(np.float32)
    betas = rng.normal(size=(P, 10)).astype(np.float32)
    expr = rng.normal(size=(P, 10)).astype(np.float32)
    transl = rng.normal(size=(P, 3)).astype(np.float32)
    c2w = np.eye(4, dtype=np.float32)
    c2w[:3, 3] = (0.5, -0.2, 1.0)
    got = CudaSkinner(model, max_people=4).skin(rot, betas, expr, transl, c2w)
    want = model.skin(rot, betas, expr, transl, c2w)
    for a, b in ((got.v_cam, want.v_cam), (got.j_cam, want.j_cam), (got.v_world, want.v_world)):
        assert float(np.abs(a - b).max()) <= 1e-5
