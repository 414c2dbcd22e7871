// SMPL-X skinning for P people per launch, with Human3R's head-anchored camera transform and the world transform.
//
// Pipeline (four launches, in this order; layouts match human3r_edge.runtime.smplx.skinning.SMPLXModel):
//   1. smplx_fk_kernel      one block per person: local rotations, blend features, rest joints from the folded
//                           joint regressor, forward kinematics one tree level per barrier, and the per-joint
//                           transforms with R_glob / head centring / translation folded in.
//   2. smplx_blend_*_kernel template + shape/expression + pose blend. One thread per vertex coordinate serves
//                           up to 16 people from registers, so the blend basis (60 MB fp32, 30 MB fp16) is read
//                           once per 16 people instead of once per person: this is the fusion that pays, since
//                           the basis is ~95% of all bytes moved.
//   3. smplx_skin_kernel    linear blend skinning (sparse weights, ELL layout) + camera and world outputs.
//                           Not fused with 2: v_posed costs 2 x 126 KB per person round trip (<5% of the bytes),
//                           while fusing would need every joint transform of every person in one block.
//   4. smplx_joints_kernel  the 21 vertex-selected joints and 51 barycentric landmarks, world joints.
//
// Layouts (float32 unless noted): params (P, 500) = [53 row-major rotations (477) | betas, expression (20) |
// head translation (3)]; feats (P, n_blend) = [coefficients (20) | (R_j - I) of the pose joints (9 each)];
// basis (n_blend, 3V) coordinate-major columns c*V + v (float32, or IEEE half bits as unsigned short);
// v_posed (P, 3V) coordinate-major; A (P, 55, 3, 4) row-major; weights ELL (kw, V) indices and values;
// v_cam / v_world (P, V, 3); j_cam / j_world (P, 127, 3); c2w (4, 4) row-major.
//
// Host emulation: no warp-level code; every __syncthreads() is reached by all threads of the block.
// Standalone benchmark: nvcc -O3 -arch=sm_87 -DKERNEL_BENCH_MAIN smplx_skinning.cu -o smplx_bench

#ifdef __CUDACC__
#include <cuda_fp16.h>
#endif

#define SMPLX_J 55                 // skeleton joints
#define SMPLX_ROTS 53              // Human3R rotations per person
#define SMPLX_COEFFS 20            // 10 betas + 10 expression coefficients
#define SMPLX_PARAM_STRIDE 500     // 53 * 9 + 20 + 3
#define SMPLX_HEAD 15              // joint the camera translation is anchored to
#define SMPLX_OUT_JOINTS 127
#define SMPLX_PCHUNK 16            // people served per pass over the blend basis
#define SMPLX_MAX_BLEND 512        // capacity of the shared feature buffer (488 used)

// ------------------------------------------------------------------------------------------------ 1. FK
extern "C" __global__ void __launch_bounds__(64) smplx_fk_kernel(
    const float* __restrict__ params, int P, int n_blend, const float* __restrict__ j_template,
    const float* __restrict__ j_dirs, const int* __restrict__ parents, const int* __restrict__ depth,
    int num_levels, const int* __restrict__ joint_rot, const int* __restrict__ pose_slot,
    float* __restrict__ feats, float* __restrict__ A, float* __restrict__ j_cam) {
  __shared__ float R[SMPLX_J * 9];   // local rotation of each joint
  __shared__ float J[SMPLX_J * 3];   // rest joint positions
  __shared__ float GR[SMPLX_J * 9];  // accumulated rotation
  __shared__ float Gt[SMPLX_J * 3];  // posed joint position
  const int p = blockIdx.x;
  const int j = threadIdx.x;
  if (p >= P) return;  // uniform across the block, before any barrier
  const float* prm = params + (size_t)p * SMPLX_PARAM_STRIDE;
  const float* coef = prm + SMPLX_ROTS * 9;
  const float* transl = coef + SMPLX_COEFFS;
  float* f = feats + (size_t)p * n_blend;
  if (j < SMPLX_COEFFS) f[j] = coef[j];
  if (j < SMPLX_J) {
    const int r = joint_rot[j];  // -1: identity (root, eyes)
    for (int e = 0; e < 9; ++e) R[j * 9 + e] = r >= 0 ? prm[r * 9 + e] : (e % 4 == 0 ? 1.0f : 0.0f);
    for (int c = 0; c < 3; ++c) {
      float acc = j_template[j * 3 + c];
      for (int k = 0; k < SMPLX_COEFFS; ++k) acc += coef[k] * j_dirs[k * SMPLX_J * 3 + j * 3 + c];
      J[j * 3 + c] = acc;
    }
    const int s = pose_slot[j];  // -1: joint not in the pose basis
    if (s >= 0)
      for (int e = 0; e < 9; ++e) f[SMPLX_COEFFS + s * 9 + e] = R[j * 9 + e] - (e % 4 == 0 ? 1.0f : 0.0f);
  }
  __syncthreads();
  for (int d = 0; d < num_levels; ++d) {  // every thread runs every level: the barrier is never divergent
    if (j < SMPLX_J && depth[j] == d) {
      if (d == 0) {
        for (int e = 0; e < 9; ++e) GR[j * 9 + e] = R[j * 9 + e];
        for (int c = 0; c < 3; ++c) Gt[j * 3 + c] = J[j * 3 + c];
      } else {
        const int q = parents[j];
        for (int a = 0; a < 3; ++a) {
          for (int b = 0; b < 3; ++b) {
            float acc = 0.0f;
            for (int k = 0; k < 3; ++k) acc += GR[q * 9 + a * 3 + k] * R[j * 9 + k * 3 + b];
            GR[j * 9 + a * 3 + b] = acc;
          }
          float acc = Gt[q * 3 + a];
          for (int k = 0; k < 3; ++k) acc += GR[q * 9 + a * 3 + k] * (J[j * 3 + k] - J[q * 3 + k]);
          Gt[j * 3 + a] = acc;
        }
      }
    }
    __syncthreads();
  }
  if (j < SMPLX_J) {
    const float* rg = prm;  // Human3R's global rotation, applied about the head joint
    float trel[3], tpos[3];
    for (int a = 0; a < 3; ++a) {
      float gj = 0.0f;
      for (int k = 0; k < 3; ++k) gj += GR[j * 9 + a * 3 + k] * J[j * 3 + k];
      trel[a] = Gt[j * 3 + a] - gj - Gt[SMPLX_HEAD * 3 + a];
      tpos[a] = Gt[j * 3 + a] - Gt[SMPLX_HEAD * 3 + a];
    }
    float* Aj = A + ((size_t)p * SMPLX_J + j) * 12;
    float* jc = j_cam + ((size_t)p * SMPLX_OUT_JOINTS + j) * 3;
    for (int a = 0; a < 3; ++a) {
      for (int b = 0; b < 3; ++b) {
        float acc = 0.0f;
        for (int k = 0; k < 3; ++k) acc += rg[a * 3 + k] * GR[j * 9 + k * 3 + b];
        Aj[a * 4 + b] = acc;
      }
      float t = transl[a], u = transl[a];
      for (int k = 0; k < 3; ++k) {
        t += rg[a * 3 + k] * trel[k];
        u += rg[a * 3 + k] * tpos[k];
      }
      Aj[a * 4 + 3] = t;
      jc[a] = u;
    }
  }
}

// ------------------------------------------------------------------------------------------------ 2. blend
// version 1 (reference for the benchmark): one thread per (vertex coordinate, person); the basis is re-read
// from memory for every person.
extern "C" __global__ void smplx_blend_v1_kernel(const float* __restrict__ feats, int P, int n_blend,
                                                 const float* __restrict__ basis, const float* __restrict__ templ,
                                                 int n3, float* __restrict__ v_posed) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int p = blockIdx.y;
  if (i >= n3 || p >= P) return;
  float acc = templ[i];
  for (int k = 0; k < n_blend; ++k) acc += feats[(size_t)p * n_blend + k] * basis[(size_t)k * n3 + i];
  v_posed[(size_t)p * n3 + i] = acc;
}

__device__ __forceinline__ float load_basis(const float* b, size_t i) { return __ldg(b + i); }
__device__ __forceinline__ float load_basis(const unsigned short* b, size_t i) {
  return __half2float(__ushort_as_half(__ldg(b + i)));
}

// version 2: one thread per vertex coordinate, people in chunks of SMPLX_PCHUNK held in registers; the chunk's
// features sit in shared memory (broadcast reads), the basis is streamed once per chunk with coalesced loads.
template <typename T>
__device__ void blend_v2(const float* __restrict__ feats, int P, int n_blend, const T* __restrict__ basis,
                         const float* __restrict__ templ, int n3, float* __restrict__ v_posed) {
  __shared__ float s_feat[SMPLX_PCHUNK * SMPLX_MAX_BLEND];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  for (int p0 = 0; p0 < P; p0 += SMPLX_PCHUNK) {
    const int np = min(SMPLX_PCHUNK, P - p0);
    __syncthreads();  // the previous chunk's readers are done before the buffer is overwritten
    for (int e = threadIdx.x; e < SMPLX_PCHUNK * n_blend; e += blockDim.x)
      s_feat[e] = e < np * n_blend ? feats[(size_t)p0 * n_blend + e] : 0.0f;
    __syncthreads();
    if (i < n3) {
      float acc[SMPLX_PCHUNK];
      const float t = templ[i];
#pragma unroll
      for (int q = 0; q < SMPLX_PCHUNK; ++q) acc[q] = t;
      for (int k = 0; k < n_blend; ++k) {
        const float b = load_basis(basis, (size_t)k * n3 + i);
#pragma unroll
        for (int q = 0; q < SMPLX_PCHUNK; ++q) acc[q] += s_feat[q * n_blend + k] * b;
      }
      for (int q = 0; q < np; ++q) v_posed[(size_t)(p0 + q) * n3 + i] = acc[q];
    }
  }
}

extern "C" __global__ void __launch_bounds__(256) smplx_blend_f32_kernel(
    const float* __restrict__ feats, int P, int n_blend, const float* __restrict__ basis,
    const float* __restrict__ templ, int n3, float* __restrict__ v_posed) {
  blend_v2<float>(feats, P, n_blend, basis, templ, n3, v_posed);
}

extern "C" __global__ void __launch_bounds__(256) smplx_blend_f16_kernel(
    const float* __restrict__ feats, int P, int n_blend, const unsigned short* __restrict__ basis,
    const float* __restrict__ templ, int n3, float* __restrict__ v_posed) {
  blend_v2<unsigned short>(feats, P, n_blend, basis, templ, n3, v_posed);
}

// ------------------------------------------------------------------------------------------------ 3. skinning
extern "C" __global__ void __launch_bounds__(128) smplx_skin_kernel(
    const float* __restrict__ v_posed, const float* __restrict__ A, const int* __restrict__ w_idx,
    const float* __restrict__ w_val, int kw, const float* __restrict__ c2w, int has_world, int P, int V,
    float* __restrict__ v_cam, float* __restrict__ v_world) {
  __shared__ float sA[SMPLX_J * 12];
  __shared__ float sW[12];
  const int p = blockIdx.y;
  if (p >= P) return;  // uniform across the block
  for (int e = threadIdx.x; e < SMPLX_J * 12; e += blockDim.x) sA[e] = A[(size_t)p * SMPLX_J * 12 + e];
  if (threadIdx.x < 12) sW[threadIdx.x] = has_world ? c2w[threadIdx.x] : 0.0f;
  __syncthreads();
  const int v = blockIdx.x * blockDim.x + threadIdx.x;
  if (v >= V) return;  // after the block's only barrier
  float T[12];
#pragma unroll
  for (int e = 0; e < 12; ++e) T[e] = 0.0f;
  for (int k = 0; k < kw; ++k) {
    const int jj = w_idx[(size_t)k * V + v];
    const float w = w_val[(size_t)k * V + v];
#pragma unroll
    for (int e = 0; e < 12; ++e) T[e] += w * sA[jj * 12 + e];
  }
  const float* vp = v_posed + (size_t)p * 3 * V;
  const float x = vp[v], y = vp[V + v], z = vp[2 * V + v];
  float o[3];
#pragma unroll
  for (int c = 0; c < 3; ++c) o[c] = T[c * 4] * x + T[c * 4 + 1] * y + T[c * 4 + 2] * z + T[c * 4 + 3];
  float* out = v_cam + ((size_t)p * V + v) * 3;
  out[0] = o[0];
  out[1] = o[1];
  out[2] = o[2];
  if (has_world) {
    float* w = v_world + ((size_t)p * V + v) * 3;
#pragma unroll
    for (int c = 0; c < 3; ++c) w[c] = sW[c * 4] * o[0] + sW[c * 4 + 1] * o[1] + sW[c * 4 + 2] * o[2] + sW[c * 4 + 3];
  }
}

// ------------------------------------------------------------------------------------------------ 4. joints
extern "C" __global__ void __launch_bounds__(128) smplx_joints_kernel(
    const float* __restrict__ v_cam, const int* __restrict__ extra, int n_extra, const int* __restrict__ lmk_vid,
    const float* __restrict__ lmk_bary, int n_lmk, const float* __restrict__ c2w, int has_world, int P, int V,
    float* __restrict__ j_cam, float* __restrict__ j_world) {
  const int p = blockIdx.x;
  const int t = threadIdx.x;
  const int n_out = SMPLX_J + n_extra + n_lmk;
  if (p >= P || t >= n_out) return;
  const float* vc = v_cam + (size_t)p * V * 3;
  float* jc = j_cam + ((size_t)p * n_out + t) * 3;
  float pos[3];
  if (t < SMPLX_J) {  // skeleton joints were written by smplx_fk_kernel
    for (int c = 0; c < 3; ++c) pos[c] = jc[c];
  } else if (t < SMPLX_J + n_extra) {
    const int vid = extra[t - SMPLX_J];
    for (int c = 0; c < 3; ++c) pos[c] = vc[vid * 3 + c];
  } else {
    const int l = t - SMPLX_J - n_extra;
    for (int c = 0; c < 3; ++c) pos[c] = 0.0f;
    for (int k = 0; k < 3; ++k) {
      const int vid = lmk_vid[l * 3 + k];
      const float b = lmk_bary[l * 3 + k];
      for (int c = 0; c < 3; ++c) pos[c] += b * vc[vid * 3 + c];
    }
  }
  if (t >= SMPLX_J)
    for (int c = 0; c < 3; ++c) jc[c] = pos[c];
  if (has_world) {
    float* jw = j_world + ((size_t)p * n_out + t) * 3;
    for (int c = 0; c < 3; ++c)
      jw[c] = c2w[c * 4] * pos[0] + c2w[c * 4 + 1] * pos[1] + c2w[c * 4 + 2] * pos[2] + c2w[c * 4 + 3];
  }
}

// ================================================================================================ host side
// CPU reference (the same math in plain loops), used by the benchmark below and, through the host emulation
// with -DKERNEL_CPU_REFERENCE, checked against the numpy path by the tests.
#if defined(KERNEL_BENCH_MAIN) || defined(KERNEL_CPU_REFERENCE)
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#ifndef SMPLX_EXPORT
#define SMPLX_EXPORT extern "C" __attribute__((visibility("default")))
#endif

SMPLX_EXPORT void smplx_cpu_reference(const float* params, int P, int n_blend, const float* basis, const float* templ,
                                      int V, const float* j_template, const float* j_dirs, const int* parents,
                                      const int* joint_rot, const int* pose_slot, const int* w_idx,
                                      const float* w_val, int kw, const int* extra, int n_extra, const int* lmk_vid,
                                      const float* lmk_bary, int n_lmk, const float* c2w, float* v_cam,
                                      float* j_cam, float* v_world, float* j_world) {
  const int n3 = 3 * V, n_out = SMPLX_J + n_extra + n_lmk;
  std::vector<float> feats(n_blend), vp(n3), R(SMPLX_J * 9), J(SMPLX_J * 3), GR(SMPLX_J * 9), Gt(SMPLX_J * 3),
      A(SMPLX_J * 12);
  for (int p = 0; p < P; ++p) {
    const float* prm = params + (size_t)p * SMPLX_PARAM_STRIDE;
    const float* coef = prm + SMPLX_ROTS * 9;
    const float* transl = coef + SMPLX_COEFFS;
    for (int k = 0; k < SMPLX_COEFFS; ++k) feats[k] = coef[k];
    for (int j = 0; j < SMPLX_J; ++j) {
      const int r = joint_rot[j];
      for (int e = 0; e < 9; ++e) R[j * 9 + e] = r >= 0 ? prm[r * 9 + e] : (e % 4 == 0 ? 1.0f : 0.0f);
      if (pose_slot[j] >= 0)
        for (int e = 0; e < 9; ++e) feats[SMPLX_COEFFS + pose_slot[j] * 9 + e] = R[j * 9 + e] - (e % 4 == 0);
      for (int c = 0; c < 3; ++c) {
        float acc = j_template[j * 3 + c];
        for (int k = 0; k < SMPLX_COEFFS; ++k) acc += coef[k] * j_dirs[k * SMPLX_J * 3 + j * 3 + c];
        J[j * 3 + c] = acc;
      }
    }
    for (int i = 0; i < n3; ++i) {
      float acc = templ[i];
      for (int k = 0; k < n_blend; ++k) acc += feats[k] * basis[(size_t)k * n3 + i];
      vp[i] = acc;
    }
    for (int j = 0; j < SMPLX_J; ++j) {  // parents precede children: a sequential pass is a valid order
      const int q = parents[j];
      for (int a = 0; a < 3; ++a) {
        for (int b = 0; b < 3; ++b) {
          float acc = 0.0f;
          for (int k = 0; k < 3; ++k) acc += (q < 0 ? (a == k) : GR[q * 9 + a * 3 + k]) * R[j * 9 + k * 3 + b];
          GR[j * 9 + a * 3 + b] = acc;
        }
        float acc = q < 0 ? 0.0f : Gt[q * 3 + a];
        for (int k = 0; k < 3; ++k)
          acc += (q < 0 ? (a == k) : GR[q * 9 + a * 3 + k]) * (J[j * 3 + k] - (q < 0 ? 0.0f : J[q * 3 + k]));
        Gt[j * 3 + a] = acc;
      }
    }
    const float* rg = prm;
    for (int j = 0; j < SMPLX_J; ++j) {
      float trel[3], tpos[3];
      for (int a = 0; a < 3; ++a) {
        float gj = 0.0f;
        for (int k = 0; k < 3; ++k) gj += GR[j * 9 + a * 3 + k] * J[j * 3 + k];
        trel[a] = Gt[j * 3 + a] - gj - Gt[SMPLX_HEAD * 3 + a];
        tpos[a] = Gt[j * 3 + a] - Gt[SMPLX_HEAD * 3 + a];
      }
      for (int a = 0; a < 3; ++a) {
        for (int b = 0; b < 3; ++b) {
          float acc = 0.0f;
          for (int k = 0; k < 3; ++k) acc += rg[a * 3 + k] * GR[j * 9 + k * 3 + b];
          A[j * 12 + a * 4 + b] = acc;
        }
        float t = transl[a], u = transl[a];
        for (int k = 0; k < 3; ++k) {
          t += rg[a * 3 + k] * trel[k];
          u += rg[a * 3 + k] * tpos[k];
        }
        A[j * 12 + a * 4 + 3] = t;
        j_cam[((size_t)p * n_out + j) * 3 + a] = u;
      }
    }
    for (int v = 0; v < V; ++v) {
      float T[12] = {0};
      for (int k = 0; k < kw; ++k)
        for (int e = 0; e < 12; ++e) T[e] += w_val[(size_t)k * V + v] * A[w_idx[(size_t)k * V + v] * 12 + e];
      for (int c = 0; c < 3; ++c)
        v_cam[((size_t)p * V + v) * 3 + c] =
            T[c * 4] * vp[v] + T[c * 4 + 1] * vp[V + v] + T[c * 4 + 2] * vp[2 * V + v] + T[c * 4 + 3];
    }
    const float* vc = v_cam + (size_t)p * V * 3;
    for (int t = SMPLX_J; t < n_out; ++t) {
      float* jc = j_cam + ((size_t)p * n_out + t) * 3;
      if (t < SMPLX_J + n_extra) {
        for (int c = 0; c < 3; ++c) jc[c] = vc[extra[t - SMPLX_J] * 3 + c];
      } else {
        const int l = t - SMPLX_J - n_extra;
        for (int c = 0; c < 3; ++c) {
          jc[c] = 0.0f;
          for (int k = 0; k < 3; ++k) jc[c] += lmk_bary[l * 3 + k] * vc[lmk_vid[l * 3 + k] * 3 + c];
        }
      }
    }
    if (c2w) {
      for (int v = 0; v < V; ++v)
        for (int c = 0; c < 3; ++c) {
          const float* x = vc + (size_t)v * 3;
          v_world[((size_t)p * V + v) * 3 + c] =
              c2w[c * 4] * x[0] + c2w[c * 4 + 1] * x[1] + c2w[c * 4 + 2] * x[2] + c2w[c * 4 + 3];
        }
      for (int t = 0; t < n_out; ++t)
        for (int c = 0; c < 3; ++c) {
          const float* x = j_cam + ((size_t)p * n_out + t) * 3;
          j_world[((size_t)p * n_out + t) * 3 + c] =
              c2w[c * 4] * x[0] + c2w[c * 4 + 1] * x[1] + c2w[c * 4 + 2] * x[2] + c2w[c * 4 + 3];
        }
    }
  }
}
#endif  // KERNEL_BENCH_MAIN || KERNEL_CPU_REFERENCE

#ifdef KERNEL_BENCH_MAIN
// Standalone benchmark on random constants of SMPL-X size: validates every kernel against the CPU reference and
// prints ms per launch and the bandwidth of the blend (the bandwidth-bound stage).
#include <cstdio>
#include <cuda_runtime.h>

#define cudaCheck(call)                                                                                   \
  do {                                                                                                    \
    cudaError_t err_ = (call);                                                                            \
    if (err_ != cudaSuccess) {                                                                            \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(err_), __FILE__, __LINE__);     \
      std::exit(EXIT_FAILURE);                                                                            \
    }                                                                                                     \
  } while (0)

static const int kParents[SMPLX_J] = {-1, 0,  0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  9,  9,  12, 13, 14, 16,
                                      17, 18, 19, 15, 15, 15, 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20,
                                      37, 38, 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53};

static float frand(unsigned& s) {
  s = s * 1664525u + 1013904223u;
  return float(s >> 8) / float(1u << 24) - 0.5f;
}

template <class T>
static T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  cudaCheck(cudaMalloc(&d, h.size() * sizeof(T)));
  cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

static float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(a[i] - b[i]));
  return m;
}

int main(int argc, char** argv) {
  const int P = argc > 1 ? std::atoi(argv[1]) : 16, V = 10475, n3 = 3 * V, kw = 4, n_extra = 21, n_lmk = 51;
  const int n_pose_joints = 52, n_blend = SMPLX_COEFFS + 9 * n_pose_joints;
  unsigned seed = 1234u;
  std::vector<int> parents(kParents, kParents + SMPLX_J), depth(SMPLX_J, 0), joint_rot(SMPLX_J, -1),
      pose_slot(SMPLX_J, -1);
  int num_levels = 1;
  for (int j = 1; j < SMPLX_J; ++j) {
    depth[j] = depth[parents[j]] + 1;
    num_levels = depth[j] + 1 > num_levels ? depth[j] + 1 : num_levels;
  }
  for (int r = 1; r < 22; ++r) joint_rot[r] = r;
  for (int r = 22; r < 52; ++r) joint_rot[r + 3] = r;  // hands
  joint_rot[22] = 52;                                   // jaw
  for (int j = 1, s = 0; j < SMPLX_J; ++j)
    if (j != 23 && j != 24) pose_slot[j] = s++;
  std::vector<float> basis((size_t)n_blend * n3), templ(n3), j_template(SMPLX_J * 3),
      j_dirs(SMPLX_COEFFS * SMPLX_J * 3), w_val((size_t)kw * V), lmk_bary(n_lmk * 3), c2w(16, 0.0f),
      params((size_t)P * SMPLX_PARAM_STRIDE);
  std::vector<int> w_idx((size_t)kw * V), extra(n_extra), lmk_vid(n_lmk * 3);
  for (auto& x : basis) x = 0.004f * frand(seed);
  for (auto& x : templ) x = frand(seed);
  for (auto& x : j_template) x = frand(seed);
  for (auto& x : j_dirs) x = 0.05f * frand(seed);
  for (int v = 0; v < V; ++v)
    for (int k = 0; k < kw; ++k) {
      w_idx[(size_t)k * V + v] = (v / 191 + k) % SMPLX_J;
      w_val[(size_t)k * V + v] = 1.0f / kw;
    }
  for (auto& x : extra) x = int((frand(seed) + 0.5f) * (V - 1));
  for (auto& x : lmk_vid) x = int((frand(seed) + 0.5f) * (V - 1));
  for (auto& x : lmk_bary) x = 1.0f / 3.0f;
  for (int i = 0; i < 16; ++i) c2w[i] = (i % 5 == 0) ? 1.0f : 0.1f * frand(seed);
  c2w[12] = c2w[13] = c2w[14] = 0.0f;
  c2w[15] = 1.0f;
  for (int p = 0; p < P; ++p) {  // near-identity rotations, Gram-Schmidt orthonormalised
    float* prm = params.data() + (size_t)p * SMPLX_PARAM_STRIDE;
    for (int r = 0; r < SMPLX_ROTS; ++r) {
      float a[3] = {1.0f + 0.3f * frand(seed), 0.3f * frand(seed), 0.3f * frand(seed)};
      float b[3] = {0.3f * frand(seed), 1.0f + 0.3f * frand(seed), 0.3f * frand(seed)};
      float na = std::sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]);
      for (float& x : a) x /= na;
      float d = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
      for (int c = 0; c < 3; ++c) b[c] -= d * a[c];
      float nb = std::sqrt(b[0] * b[0] + b[1] * b[1] + b[2] * b[2]);
      for (float& x : b) x /= nb;
      float c3[3] = {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
      for (int row = 0; row < 3; ++row) {  // columns a, b, a x b
        prm[r * 9 + row * 3 + 0] = a[row];
        prm[r * 9 + row * 3 + 1] = b[row];
        prm[r * 9 + row * 3 + 2] = c3[row];
      }
    }
    for (int k = 0; k < SMPLX_COEFFS + 3; ++k) prm[SMPLX_ROTS * 9 + k] = 2.0f * frand(seed);
  }
  std::vector<float> ref_v((size_t)P * V * 3), ref_j((size_t)P * SMPLX_OUT_JOINTS * 3), ref_vw(ref_v.size()),
      ref_jw(ref_j.size());
  smplx_cpu_reference(params.data(), P, n_blend, basis.data(), templ.data(), V, j_template.data(), j_dirs.data(),
                      parents.data(), joint_rot.data(), pose_slot.data(), w_idx.data(), w_val.data(), kw,
                      extra.data(), n_extra, lmk_vid.data(), lmk_bary.data(), n_lmk, c2w.data(), ref_v.data(),
                      ref_j.data(), ref_vw.data(), ref_jw.data());

  std::vector<unsigned short> basis16(basis.size());
  for (size_t i = 0; i < basis.size(); ++i) basis16[i] = __half_as_ushort(__float2half_rn(basis[i]));
  float *d_params = to_device(params), *d_basis = to_device(basis), *d_templ = to_device(templ),
        *d_jt = to_device(j_template), *d_jd = to_device(j_dirs), *d_wv = to_device(w_val),
        *d_lb = to_device(lmk_bary), *d_c2w = to_device(c2w);
  unsigned short* d_basis16 = to_device(basis16);
  int *d_par = to_device(parents), *d_dep = to_device(depth), *d_jr = to_device(joint_rot),
      *d_ps = to_device(pose_slot), *d_wi = to_device(w_idx), *d_ex = to_device(extra), *d_lv = to_device(lmk_vid);
  float *d_feats, *d_A, *d_vp, *d_vc, *d_vw, *d_jc, *d_jw;
  cudaCheck(cudaMalloc(&d_feats, (size_t)P * n_blend * 4));
  cudaCheck(cudaMalloc(&d_A, (size_t)P * SMPLX_J * 12 * 4));
  cudaCheck(cudaMalloc(&d_vp, (size_t)P * n3 * 4));
  cudaCheck(cudaMalloc(&d_vc, (size_t)P * n3 * 4));
  cudaCheck(cudaMalloc(&d_vw, (size_t)P * n3 * 4));
  cudaCheck(cudaMalloc(&d_jc, (size_t)P * SMPLX_OUT_JOINTS * 12));
  cudaCheck(cudaMalloc(&d_jw, (size_t)P * SMPLX_OUT_JOINTS * 12));

  auto run = [&](int blend_version) {
    smplx_fk_kernel<<<P, 64>>>(d_params, P, n_blend, d_jt, d_jd, d_par, d_dep, num_levels, d_jr, d_ps, d_feats, d_A,
                               d_jc);
    if (blend_version == 1)
      smplx_blend_v1_kernel<<<dim3((n3 + 255) / 256, P), 256>>>(d_feats, P, n_blend, d_basis, d_templ, n3, d_vp);
    else if (blend_version == 2)
      smplx_blend_f32_kernel<<<(n3 + 255) / 256, 256>>>(d_feats, P, n_blend, d_basis, d_templ, n3, d_vp);
    else
      smplx_blend_f16_kernel<<<(n3 + 255) / 256, 256>>>(d_feats, P, n_blend, d_basis16, d_templ, n3, d_vp);
    smplx_skin_kernel<<<dim3((V + 127) / 128, P), 128>>>(d_vp, d_A, d_wi, d_wv, kw, d_c2w, 1, P, V, d_vc, d_vw);
    smplx_joints_kernel<<<P, 128>>>(d_vc, d_ex, n_extra, d_lv, d_lb, n_lmk, d_c2w, 1, P, V, d_jc, d_jw);
    cudaCheck(cudaGetLastError());
  };
  const char* names[4] = {"", "blend v1 (per person)", "blend v2 fp32 (people in registers)", "blend v2 fp16 basis"};
  for (int ver = 1; ver <= 3; ++ver) {
    run(ver);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<float> v(ref_v.size()), j(ref_j.size()), vw(ref_v.size()), jw(ref_j.size());
    cudaCheck(cudaMemcpy(v.data(), d_vc, v.size() * 4, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(j.data(), d_jc, j.size() * 4, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(vw.data(), d_vw, vw.size() * 4, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(jw.data(), d_jw, jw.size() * 4, cudaMemcpyDeviceToHost));
    const float tol = ver == 3 ? 1e-3f : 1e-4f;  // fp16 basis: ~5e-4 relative rounding of each basis entry
    const float err = std::fmax(std::fmax(max_abs_diff(v, ref_v), max_abs_diff(j, ref_j)),
                                std::fmax(max_abs_diff(vw, ref_vw), max_abs_diff(jw, ref_jw)));
    cudaEvent_t t0, t1;
    cudaCheck(cudaEventCreate(&t0));
    cudaCheck(cudaEventCreate(&t1));
    const int iters = 50;
    cudaCheck(cudaEventRecord(t0));
    for (int it = 0; it < iters; ++it) run(ver);
    cudaCheck(cudaEventRecord(t1));
    cudaCheck(cudaEventSynchronize(t1));
    float ms = 0.0f;
    cudaCheck(cudaEventElapsedTime(&ms, t0, t1));
    ms /= iters;
    const double passes = ver == 1 ? P : (P + SMPLX_PCHUNK - 1) / SMPLX_PCHUNK;
    const double bytes = passes * n_blend * (double)n3 * (ver == 3 ? 2 : 4);
    std::printf("%-38s P=%2d  max err %.2e (tol %.0e) %s  %.3f ms/frame  %.3f ms/body  basis %.1f GB/s\n",
                names[ver], P, err, tol, err <= tol ? "OK" : "FAIL", ms, ms / P, bytes / (ms * 1e-3) / 1e9);
  }
  return 0;
}
#endif  // KERNEL_BENCH_MAIN
