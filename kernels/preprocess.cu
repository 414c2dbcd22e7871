// Frame preprocessing on the GPU, matching runtime/preprocess.py (which matches the reference demo):
//   1. pil_resize_h_kernel   PIL's horizontal resampling pass (LANCZOS a=3 or BICUBIC a=-0.5), fixed point with
//                            PIL's 22-bit integer coefficients, uint8 intermediate; only the rows and columns
//                            the centre crop needs are computed.
//   2. pil_resize_v_kernel   PIL's vertical pass on that intermediate, then (u8/255 - 0.5)/0.5 into NCHW float32:
//                            the CUT3R image (crop included: the tables only cover the cropped region).
//   3. bilinear_pad_kernel   torch's bilinear resize (align_corners=False, no antialias) of that image into an
//                            RxR square, centred, padded with -1: the human-branch input.
// The per-output-pixel filter tables (first tap, tap count, integer weights) are computed on the host exactly as
// PIL computes them (kernels/preprocess_gpu.py), so the integer arithmetic here reproduces PIL bit for bit.
// Passes 1-2 are not fused: the horizontal pass output is reused by ~2*support vertical taps, so recomputing it
// per output pixel would multiply the work by the tap count; the uint8 intermediate is small (crop-sized).
//
// Host emulation: no warp-level code and no barriers (every output pixel is independent).
// Standalone benchmark: nvcc -O3 -arch=sm_87 -DKERNEL_BENCH_MAIN preprocess.cu -o preprocess_bench

#define PIL_PRECISION_BITS 22  // 32 - 8 - 2, as PIL
#define PIL_HALF (1 << (PIL_PRECISION_BITS - 1))

__device__ __forceinline__ unsigned char pil_clip8(int acc) {
  const int v = acc >> PIL_PRECISION_BITS;  // arithmetic shift: floor, as PIL's lookup index
  return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// src: (H0, W0, channels) uint8 with row pitch `pitch` bytes; channels 1 (gray), 3 or 4 (alpha ignored);
// bgr != 0 swaps R and B. tmp: (n_rows, out_w, 3) uint8 = resampled source rows y_first .. y_first+n_rows-1.
// xmin/xcount: (out_w,) first source column and tap count of each output column; coeff: (out_w, ksize) int32.
extern "C" __global__ void pil_resize_h_kernel(const unsigned char* __restrict__ src, int pitch, int channels,
                                               int bgr, int y_first, int n_rows, const int* __restrict__ xmin,
                                               const int* __restrict__ xcount, const int* __restrict__ coeff,
                                               int ksize, int out_w, unsigned char* __restrict__ tmp) {
  const int xx = blockIdx.x * blockDim.x + threadIdx.x;
  const int r = blockIdx.y;
  if (xx >= out_w || r >= n_rows) return;
  const unsigned char* row = src + (size_t)(y_first + r) * pitch;
  const int* k = coeff + (size_t)xx * ksize;
  const int x0 = xmin[xx], n = xcount[xx];
  int s0 = PIL_HALF, s1 = PIL_HALF, s2 = PIL_HALF;
  for (int x = 0; x < n; ++x) {
    const unsigned char* px = row + (size_t)(x0 + x) * channels;
    const int w = k[x];
    if (channels == 1) {
      s0 += px[0] * w;
    } else {
      s0 += px[0] * w;
      s1 += px[1] * w;
      s2 += px[2] * w;
    }
  }
  if (channels == 1) s1 = s2 = s0;  // gray replicated to RGB (PIL converts L to RGB before resizing)
  unsigned char* out = tmp + ((size_t)r * out_w + xx) * 3;
  out[0] = pil_clip8(bgr ? s2 : s0);
  out[1] = pil_clip8(s1);
  out[2] = pil_clip8(bgr ? s0 : s2);
}

// tmp: (n_rows, W, 3) uint8 from pass 1; ymin (relative to tmp) / ycount / coeff: (H,) (H,) (H, ksize).
// img: (3, H, W) float32, (u8/255 - 0.5)/0.5 with float32 operations in ToTensor+Normalize order.
extern "C" __global__ void pil_resize_v_kernel(const unsigned char* __restrict__ tmp, int W, int H,
                                               const int* __restrict__ ymin, const int* __restrict__ ycount,
                                               const int* __restrict__ coeff, int ksize, float* __restrict__ img) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int yy = blockIdx.y;
  if (x >= W || yy >= H) return;
  const int* k = coeff + (size_t)yy * ksize;
  const int y0 = ymin[yy], n = ycount[yy];
  int s[3] = {PIL_HALF, PIL_HALF, PIL_HALF};
  for (int y = 0; y < n; ++y) {
    const unsigned char* px = tmp + ((size_t)(y0 + y) * W + x) * 3;
    const int w = k[y];
    s[0] += px[0] * w;
    s[1] += px[1] * w;
    s[2] += px[2] * w;
  }
  for (int c = 0; c < 3; ++c) {
    const float u = (float)pil_clip8(s[c]) / 255.0f;
    img[((size_t)c * H + yy) * W + x] = (u - 0.5f) / 0.5f;
  }
}

// img: (3, H, W) float32; out: (3, R, R). Output pixel (y, x) inside the placed (new_h, new_w) window at
// (top, left) takes torch's bilinear value from the per-axis taps (i0, i1, w0, w1); everything else is -1.
extern "C" __global__ void bilinear_pad_kernel(const float* __restrict__ img, int H, int W, int R, int top, int left,
                                               int new_h, int new_w, const int* __restrict__ y0,
                                               const int* __restrict__ y1, const float* __restrict__ wy0,
                                               const float* __restrict__ wy1, const int* __restrict__ x0,
                                               const int* __restrict__ x1, const float* __restrict__ wx0,
                                               const float* __restrict__ wx1, float* __restrict__ out) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y;
  if (x >= R || y >= R) return;
  const int i = y - top, j = x - left;
  const bool inside = i >= 0 && i < new_h && j >= 0 && j < new_w;
  for (int c = 0; c < 3; ++c) {
    float v = -1.0f;
    if (inside) {
      const float* plane = img + (size_t)c * H * W;
      const float* r0 = plane + (size_t)y0[i] * W;
      const float* r1 = plane + (size_t)y1[i] * W;
      // torch's CPU kernel: each row value fma(x0, w0, x1 * w1), then fma(row0, wy0, row1 * wy1)
      const float top_v = fmaf(r0[x0[j]], wx0[j], r0[x1[j]] * wx1[j]);
      const float bot_v = fmaf(r1[x0[j]], wx0[j], r1[x1[j]] * wx1[j]);
      v = fmaf(top_v, wy0[i], bot_v * wy1[i]);
    }
    out[((size_t)c * R + y) * R + x] = v;
  }
}

#ifdef KERNEL_BENCH_MAIN
// Standalone benchmark: a 1920x1080 RGB frame -> 512x288 (LANCZOS, crop) -> 896x896 pad, against a CPU
// reference of the same integer/float arithmetic; prints ms per stage and effective GB/s.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>
#include <vector>

#define cudaCheck(call)                                                                               \
  do {                                                                                                \
    cudaError_t err_ = (call);                                                                        \
    if (err_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(err_), __FILE__, __LINE__); \
      std::exit(EXIT_FAILURE);                                                                        \
    }                                                                                                 \
  } while (0)

static double lanczos(double x) {
  auto sinc = [](double v) { return v == 0.0 ? 1.0 : std::sin(v * M_PI) / (v * M_PI); };
  return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0;
}

// PIL-style coefficient tables for out = [first, first + count) of an in_size -> out_size resize.
static int tables(int in_size, int out_size, int first, int count, std::vector<int>& xmin, std::vector<int>& xcnt,
                  std::vector<int>& k) {
  const double scale = double(in_size) / out_size, fs = scale < 1.0 ? 1.0 : scale, support = 3.0 * fs;
  const int ksize = int(std::ceil(support)) * 2 + 1;
  xmin.assign(count, 0);
  xcnt.assign(count, 0);
  k.assign((size_t)count * ksize, 0);
  for (int o = 0; o < count; ++o) {
    const double center = (first + o + 0.5) * scale;
    int lo = int(center - support + 0.5), hi = int(center + support + 0.5);
    lo = lo < 0 ? 0 : lo;
    hi = (hi > in_size ? in_size : hi) - lo;
    std::vector<double> w(hi);
    double ww = 0.0;
    for (int x = 0; x < hi; ++x) ww += (w[x] = lanczos((x + lo - center + 0.5) / fs));
    for (int x = 0; x < hi; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      const double fixed = v * (1 << PIL_PRECISION_BITS);
      k[(size_t)o * ksize + x] = int(v < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    xmin[o] = lo;
    xcnt[o] = hi;
  }
  return ksize;
}

template <class T>
static T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  cudaCheck(cudaMalloc(&d, h.size() * sizeof(T) + 1));
  cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

int main() {
  const int H0 = 1080, W0 = 1920, W1 = 512, H1 = 288, W = 512, H = 288, R = 896;
  std::vector<unsigned char> frame((size_t)H0 * W0 * 3);
  unsigned s = 7u;
  for (auto& p : frame) p = (unsigned char)((s = s * 1664525u + 1013904223u) >> 24);
  std::vector<int> hx, hc, hk, vy, vc, vk;
  const int kh = tables(W0, W1, 0, W, hx, hc, hk), kv = tables(H0, H1, 0, H, vy, vc, vk);
  const int y_first = vy[0], n_rows = vy[H - 1] + vc[H - 1] - y_first;
  for (auto& y : vy) y -= y_first;
  // CPU reference of passes 1-2
  std::vector<unsigned char> tmp((size_t)n_rows * W * 3);
  for (int r = 0; r < n_rows; ++r)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) {
        int acc = PIL_HALF;
        for (int t = 0; t < hc[x]; ++t)
          acc += frame[((size_t)(y_first + r) * W0 + hx[x] + t) * 3 + c] * hk[(size_t)x * kh + t];
        const int v = acc >> PIL_PRECISION_BITS;
        tmp[((size_t)r * W + x) * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
  std::vector<float> ref((size_t)3 * H * W);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) {
        int acc = PIL_HALF;
        for (int t = 0; t < vc[y]; ++t) acc += tmp[((size_t)(vy[y] + t) * W + x) * 3 + c] * vk[(size_t)y * kv + t];
        const int v = acc >> PIL_PRECISION_BITS;
        ref[((size_t)c * H + y) * W + x] = ((float)(v < 0 ? 0 : v > 255 ? 255 : v) / 255.0f - 0.5f) / 0.5f;
      }
  unsigned char *d_frame = to_device(frame), *d_tmp;
  int *d_hx = to_device(hx), *d_hc = to_device(hc), *d_hk = to_device(hk), *d_vy = to_device(vy),
      *d_vc = to_device(vc), *d_vk = to_device(vk);
  float *d_img, *d_pad;
  cudaCheck(cudaMalloc(&d_tmp, tmp.size()));
  cudaCheck(cudaMalloc(&d_img, ref.size() * 4));
  cudaCheck(cudaMalloc(&d_pad, (size_t)3 * R * R * 4));
  // pad taps (upscale 512x288 -> 896x504), computed as torch does
  const int new_w = 896, new_h = 504, top = (R - new_h) / 2, left = 0;
  auto taps = [](int in, int out, std::vector<int>& i0, std::vector<int>& i1, std::vector<float>& w0,
                 std::vector<float>& w1) {
    const float sc = float(in) / float(out);
    for (int j = 0; j < out; ++j) {
      float src = std::fmax(std::fma(sc, j + 0.5f, -0.5f), 0.0f);
      int a = std::min(int(std::floor(src)), in - 1);
      float l = std::fmin(std::fmax(src - a, 0.0f), 1.0f);
      i0.push_back(a);
      i1.push_back(a + (a < in - 1));
      w0.push_back(1.0f - l);
      w1.push_back(l);
    }
  };
  std::vector<int> py0, py1, px0, px1;
  std::vector<float> pwy0, pwy1, pwx0, pwx1;
  taps(H, new_h, py0, py1, pwy0, pwy1);
  taps(W, new_w, px0, px1, pwx0, pwx1);
  int *d_py0 = to_device(py0), *d_py1 = to_device(py1), *d_px0 = to_device(px0), *d_px1 = to_device(px1);
  float *d_pwy0 = to_device(pwy0), *d_pwy1 = to_device(pwy1), *d_pwx0 = to_device(pwx0), *d_pwx1 = to_device(pwx1);
  auto run = [&]() {
    pil_resize_h_kernel<<<dim3((W + 127) / 128, n_rows), 128>>>(d_frame, W0 * 3, 3, 0, y_first, n_rows, d_hx, d_hc,
                                                                d_hk, kh, W, d_tmp);
    pil_resize_v_kernel<<<dim3((W + 127) / 128, H), 128>>>(d_tmp, W, H, d_vy, d_vc, d_vk, kv, d_img);
    bilinear_pad_kernel<<<dim3((R + 127) / 128, R), 128>>>(d_img, H, W, R, top, left, new_h, new_w, d_py0, d_py1,
                                                           d_pwy0, d_pwy1, d_px0, d_px1, d_pwx0, d_pwx1, d_pad);
    cudaCheck(cudaGetLastError());
  };
  run();
  cudaCheck(cudaDeviceSynchronize());
  std::vector<float> img(ref.size());
  cudaCheck(cudaMemcpy(img.data(), d_img, img.size() * 4, cudaMemcpyDeviceToHost));
  float err = 0.0f;
  for (size_t i = 0; i < img.size(); ++i) err = std::fmax(err, std::fabs(img[i] - ref[i]));
  cudaEvent_t t0, t1;
  cudaCheck(cudaEventCreate(&t0));
  cudaCheck(cudaEventCreate(&t1));
  const int iters = 100;
  cudaCheck(cudaEventRecord(t0));
  for (int i = 0; i < iters; ++i) run();
  cudaCheck(cudaEventRecord(t1));
  cudaCheck(cudaEventSynchronize(t1));
  float ms = 0.0f;
  cudaCheck(cudaEventElapsedTime(&ms, t0, t1));
  ms /= iters;
  const double bytes = double(n_rows) * W0 * 3 + tmp.size() * 2 + ref.size() * 4 * 2 + 3.0 * R * R * 4;
  std::printf("preprocess 1920x1080 -> 512x288 + 896^2 pad: max err vs CPU %.2e (%s), %.3f ms/frame, %.1f GB/s\n",
              err, err == 0.0f ? "exact" : "MISMATCH", ms, bytes / (ms * 1e-3) / 1e9);
  return err == 0.0f ? 0 : 1;
}
#endif  // KERNEL_BENCH_MAIN
