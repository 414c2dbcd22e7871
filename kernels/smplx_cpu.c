// SMPL-X skinning on the CPU: the two heavy stages of runtime/smplx/skinning.py, compiled at first use.
//
// runtime/smplx/native.py compiles this file with the system C compiler (-O3 -march=native), caches the shared
// library, and calls it through ctypes from several Python threads (ctypes releases the GIL), each on its own
// range of blocks or vertices; there is no OpenMP and no global state. Without a compiler the numpy path runs.
//
//   h3r_blend  v_posed = template + feats . basis for P people: the (P x 488) x (488 x 3V) product that is ~60% of
//              the numpy path's time. The basis is stored in column blocks of 16 (nblk, K, 16), so each block is
//              one contiguous stream; a register tile of 8 people x 16 columns (16 AVX/NEON-width accumulators)
//              reuses each basis load 8 times. The numpy path (OpenBLAS) reaches ~86 GFLOP/s on this shape with
//              16 rows; this tile about 140 on the same 2 cores.
//   h3r_skin   linear blend skinning with the sparse weights (kw non-zero joints per vertex), fused with applying
//              the transform, the planar -> interleaved layout change and the optional world transform: one pass
//              over each person's vertices instead of a dense (P*12 x 55) x (55 x V) GEMM plus three more passes.
//
// Arithmetic is float32 throughout; results differ from the numpy path only in summation order (~1e-7 m).
// GCC/Clang vector extensions: the same source vectorises for AVX2/AVX-512 and for NEON (Jetson).
#include <stddef.h>
#include <stdint.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  // unaligned loads/stores of 8 floats

#define H3R_BLOCK 16  // basis columns per block
#define H3R_TILE 8    // people per register tile

int h3r_abi_version(void) { return 2; }

// One register tile: PT people x 16 columns of one basis block, all K coefficients (PT is a constant after
// inlining, so the accumulators live in registers). Small tiles split K over KS accumulator sets, so that
// enough independent FMA chains are in flight to hide the FMA latency (1 person: 4 sets of 2 vectors).
static inline __attribute__((always_inline)) void blend_tile(const int PT, const float* ft, int Ppad, int K,
                                                             const float* bb, const float* templ, int c0, int n3,
                                                             float* out, int pn) {
  enum { KS_MAX = 4 };
  const int KS = PT >= 4 ? 1 : (PT == 2 ? 2 : 4);
  v8 acc[KS_MAX][8][2];
#pragma GCC unroll 4
  for (int s = 0; s < KS; ++s)
#pragma GCC unroll 8
    for (int p = 0; p < PT; ++p) acc[s][p][0] = acc[s][p][1] = (v8){0};
  int k = 0;
  for (; k + KS <= K; k += KS) {
    __builtin_prefetch(bb + (size_t)(k + 16) * H3R_BLOCK, 0, 0);
#pragma GCC unroll 4
    for (int s = 0; s < KS; ++s) {
      const v8 r0 = *(const v8u*)(bb + (size_t)(k + s) * H3R_BLOCK);
      const v8 r1 = *(const v8u*)(bb + (size_t)(k + s) * H3R_BLOCK + 8);
      const float* f = ft + (size_t)(k + s) * Ppad;
#pragma GCC unroll 8
      for (int p = 0; p < PT; ++p) {
        acc[s][p][0] += f[p] * r0;
        acc[s][p][1] += f[p] * r1;
      }
    }
  }
  for (; k < K; ++k) {  // K not a multiple of KS
    const v8 r0 = *(const v8u*)(bb + (size_t)k * H3R_BLOCK), r1 = *(const v8u*)(bb + (size_t)k * H3R_BLOCK + 8);
    const float* f = ft + (size_t)k * Ppad;
#pragma GCC unroll 8
    for (int p = 0; p < PT; ++p) {
      acc[0][p][0] += f[p] * r0;
      acc[0][p][1] += f[p] * r1;
    }
  }
  float res[8][H3R_BLOCK];  // registers -> memory once, with constant indices (acc stays in registers above)
#pragma GCC unroll 8
  for (int p = 0; p < PT; ++p) {
    v8 s0 = acc[0][p][0], s1 = acc[0][p][1];
#pragma GCC unroll 4
    for (int s = 1; s < KS; ++s) {
      s0 += acc[s][p][0];
      s1 += acc[s][p][1];
    }
    *(v8u*)res[p] = s0;
    *(v8u*)(res[p] + 8) = s1;
  }
  const int nc = n3 - c0 < H3R_BLOCK ? n3 - c0 : H3R_BLOCK;  // the last block is partial
  for (int p = 0; p < pn; ++p)
    for (int c = 0; c < nc; ++c) out[(size_t)p * n3 + c0 + c] = res[p][c] + templ[c0 + c];
}

// featsT (K, Ppad): the blend coefficients, people fastest, zero beyond P, Ppad a multiple of 8.
// basis_blk (nblk, K, 16) with nblk = ceil(n3 / 16), zero-padded columns. templ (n3). out (P, n3).
// Computes column blocks [blk_lo, blk_hi). People go in tiles of 8, then 4, 2 or 1 for the rest, so one person
// costs a quarter of what eight do in arithmetic (the basis is read once per block either way).
void h3r_blend(const float* featsT, int P, int Ppad, int K, const float* basis_blk, const float* templ, int n3,
               float* out, int blk_lo, int blk_hi) {
  for (int b = blk_lo; b < blk_hi; ++b) {
    const float* bb = basis_blk + (size_t)b * K * H3R_BLOCK;
    const int c0 = b * H3R_BLOCK;
    int p0 = 0;
    for (; P - p0 >= 5; p0 += 8)
      blend_tile(8, featsT + p0, Ppad, K, bb, templ, c0, n3, out + (size_t)p0 * n3, P - p0 < 8 ? P - p0 : 8);
    for (; P - p0 >= 3; p0 += 4)
      blend_tile(4, featsT + p0, Ppad, K, bb, templ, c0, n3, out + (size_t)p0 * n3, P - p0 < 4 ? P - p0 : 4);
    for (; P - p0 >= 2; p0 += 2) blend_tile(2, featsT + p0, Ppad, K, bb, templ, c0, n3, out + (size_t)p0 * n3, 2);
    if (P - p0 == 1) blend_tile(1, featsT + p0, Ppad, K, bb, templ, c0, n3, out + (size_t)p0 * n3, 1);
  }
}

// v_posed (P, 3, V) planar; A (P, J, 12): each joint's 3x4 skinning transform (row-major, camera frame);
// w_idx, w_val (V, kw): each vertex's non-zero weights (zero-padded); world (12): [R | t] of c2w, or NULL.
// Writes v_cam (P, V, 3) and, with world, v_world (P, V, 3) for people [p_lo, p_hi) and vertices [v_lo, v_hi).
void h3r_skin(const float* v_posed, const float* A, int J, const int32_t* w_idx, const float* w_val, int kw,
              const float* world, int P, int V, float* v_cam, float* v_world, int p_lo, int p_hi, int v_lo,
              int v_hi) {
  (void)P;
  for (int p = p_lo; p < p_hi; ++p) {
    const float* Ap = A + (size_t)p * J * 12;
    const float* x = v_posed + (size_t)p * 3 * V;
    const float* y = x + V;
    const float* z = y + V;
    float* oc = v_cam + (size_t)p * V * 3;
    float* ow = world ? v_world + (size_t)p * V * 3 : NULL;
    for (int v = v_lo; v < v_hi; ++v) {
      float T[12] = {0};
      const int32_t* idx = w_idx + (size_t)v * kw;
      const float* wv = w_val + (size_t)v * kw;
      for (int k = 0; k < kw; ++k) {
        const float w = wv[k];
        const float* a = Ap + (size_t)idx[k] * 12;
        for (int e = 0; e < 12; ++e) T[e] += w * a[e];
      }
      const float px = x[v], py = y[v], pz = z[v];
      const float cx = T[0] * px + T[1] * py + T[2] * pz + T[3];
      const float cy = T[4] * px + T[5] * py + T[6] * pz + T[7];
      const float cz = T[8] * px + T[9] * py + T[10] * pz + T[11];
      oc[3 * v] = cx;
      oc[3 * v + 1] = cy;
      oc[3 * v + 2] = cz;
      if (ow) {
        ow[3 * v] = world[0] * cx + world[1] * cy + world[2] * cz + world[3];
        ow[3 * v + 1] = world[4] * cx + world[5] * cy + world[6] * cz + world[7];
        ow[3 * v + 2] = world[8] * cx + world[9] * cy + world[10] * cz + world[11];
      }
    }
  }
}
