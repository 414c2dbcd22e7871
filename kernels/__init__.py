"""CUDA kernels launched by the runtime, each next to its CPU reference, plus a host-emulation harness.

smplx_skinning.cu   SMPL-X blend shapes + pose blend, forward kinematics, skinning + camera/world transforms
                    (launcher: runtime/smplx/gpu.py, CudaSkinner).
preprocess.cu       PIL-exact resize + centre crop + [-1, 1] NCHW, and the bilinear pad of the human branch
                    (launcher and table builder: runtime/preprocess_gpu.py, CudaPreprocessor).
nv12.cu             NV12 -> RGB (BT.601 limited range, OpenCV's integer formulas) for memory:CUDAMemory frames
                    (launcher: runtime/gst/cuda_memory.py, _Nv12Converter; CPU path: runtime/gst/frames.py).
smplx_cpu.c         the CPU twin of the two heavy skinning stages (blend product, sparse skinning + transforms),
                    compiled at first use with the system C compiler (runtime/smplx/native.py); SMPLXModel's
                    default CPU path, numpy when no compiler is present.
build.py            kernel sources and nvcc helpers (PTX for sm_75/86/87/89, standalone benchmark objects).
host_emu/           the same .cu sources compiled with g++ against a shim and run on the CPU through ctypes,
                    with pycuda's calling convention (host_emu.compile_module) and its argument rules
                    (host_emu.launch); the strict pycuda stand-in of tests/support/fake_gpu launches through it,
                    so the launchers themselves run without a GPU.
"""
