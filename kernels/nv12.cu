// NV12 -> packed RGB on the GPU, for `video/x-raw(memory:CUDAMemory),format=NV12` frames (runtime/gst/cuda_memory.py,
// launcher _Nv12Converter). CPU reference: runtime/gst/frames.nv12_to_rgb, OpenCV's COLOR_YUV2RGB_NV12, i.e.
// BT.601 limited range (what videoconvert assumes for SD) in OpenCV's 20-bit fixed-point integer formulas, so the
// two agree exactly (tests/test_gst_units.py, through the host emulation).
//   y:  (height, width) luma, row pitch y_pitch bytes;  uv: (height/2, width/2) interleaved U,V, row pitch uv_pitch
//   rgb: (height, width, 3) uint8, tightly packed
// One thread per output pixel. Host emulation: no barriers, no warp-level code.
// Layout as the other kernel files (llm.c dev/cuda): the kernel, its CPU reference (nv12_to_rgb_cpu, the same
// integer formulas; the host emulation exports it), and a standalone benchmark:
//   nvcc -O3 -arch=sm_87 -DKERNEL_BENCH_MAIN nv12.cu -o nv12_bench && ./nv12_bench 1920 1080

#define NV12_CY 1220542
#define NV12_CUB 2116026
#define NV12_CUG -409993
#define NV12_CVG -852492
#define NV12_CVR 1673527
#define NV12_SHIFT 20

__host__ __device__ __forceinline__ unsigned char nv12_clip8(int v) {
  return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One pixel: OpenCV's YUV420sp -> RGB integer conversion (BT.601, limited range).
__host__ __device__ __forceinline__ void nv12_pixel(int yv, int uv0, int uv1, unsigned char* o) {
  int yy = yv - 16;
  yy = (yy < 0 ? 0 : yy) * NV12_CY;
  const int u = uv0 - 128, v = uv1 - 128, half = 1 << (NV12_SHIFT - 1);
  o[0] = nv12_clip8((yy + half + NV12_CVR * v) >> NV12_SHIFT);
  o[1] = nv12_clip8((yy + half + NV12_CVG * v + NV12_CUG * u) >> NV12_SHIFT);
  o[2] = nv12_clip8((yy + half + NV12_CUB * u) >> NV12_SHIFT);
}

extern "C" __global__ void nv12_to_rgb(const unsigned char* __restrict__ y, int y_pitch,
                                       const unsigned char* __restrict__ uv, int uv_pitch, unsigned char* rgb,
                                       int width, int height) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, row = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= width || row >= height) return;
  const unsigned char* c = uv + (row / 2) * uv_pitch + (x / 2) * 2;
  nv12_pixel((int)y[row * y_pitch + x], (int)c[0], (int)c[1], rgb + ((size_t)row * width + x) * 3);
}

#ifndef NV12_EXPORT
#define NV12_EXPORT extern "C" __attribute__((visibility("default")))
#endif
// CPU reference: the same conversion, one pixel at a time on the host.
NV12_EXPORT void nv12_to_rgb_cpu(const unsigned char* y, int y_pitch, const unsigned char* uv, int uv_pitch,
                                 unsigned char* rgb, int width, int height) {
  for (int row = 0; row < height; ++row)
    for (int x = 0; x < width; ++x) {
      const unsigned char* c = uv + (row / 2) * uv_pitch + (x / 2) * 2;
      nv12_pixel((int)y[row * y_pitch + x], (int)c[0], (int)c[1], rgb + ((size_t)row * width + x) * 3);
    }
}

#ifdef KERNEL_BENCH_MAIN
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  const int w = argc > 1 ? atoi(argv[1]) : 1920, h = argc > 2 ? atoi(argv[2]) : 1080, pitch = (w + 255) / 256 * 256;
  std::vector<unsigned char> y((size_t)pitch * h), uv((size_t)pitch * (h / 2)), ref((size_t)w * h * 3),
      got((size_t)w * h * 3);
  for (size_t i = 0; i < y.size(); ++i) y[i] = (unsigned char)(i * 2654435761u >> 24);
  for (size_t i = 0; i < uv.size(); ++i) uv[i] = (unsigned char)(i * 40503u >> 8);
  nv12_to_rgb_cpu(y.data(), pitch, uv.data(), pitch, ref.data(), w, h);
  unsigned char *dy, *duv, *drgb;
  cudaMalloc(&dy, y.size());
  cudaMalloc(&duv, uv.size());
  cudaMalloc(&drgb, got.size());
  cudaMemcpy(dy, y.data(), y.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(duv, uv.data(), uv.size(), cudaMemcpyHostToDevice);
  const dim3 block(32, 8), grid((w + 31) / 32, (h + 7) / 8);
  cudaEvent_t t0, t1;
  cudaEventCreate(&t0);
  cudaEventCreate(&t1);
  nv12_to_rgb<<<grid, block>>>(dy, pitch, duv, pitch, drgb, w, h);
  const int reps = 100;
  cudaEventRecord(t0);
  for (int i = 0; i < reps; ++i) nv12_to_rgb<<<grid, block>>>(dy, pitch, duv, pitch, drgb, w, h);
  cudaEventRecord(t1);
  cudaEventSynchronize(t1);
  float ms = 0;
  cudaEventElapsedTime(&ms, t0, t1);
  cudaMemcpy(got.data(), drgb, got.size(), cudaMemcpyDeviceToHost);
  const bool ok = memcmp(got.data(), ref.data(), got.size()) == 0;  // exact: integer arithmetic
  const double bytes = (double)w * h * 1.5 + (double)w * h * 3;
  printf("nv12_to_rgb %dx%d: %.4f ms, %.1f GB/s, %s\n", w, h, ms / reps, bytes / (ms / reps * 1e6),
         ok ? "matches the CPU reference" : "MISMATCH");
  cudaFree(dy);
  cudaFree(duv);
  cudaFree(drgb);
  return ok ? 0 : 1;
}
#endif
