// Host emulation of the CUDA C++ subset used by our kernels: force-included (g++ -include cuda_shim.h) in
// front of an unmodified .cu file, which then builds with the host compiler into a shared library.
//
// Execution model (why the emulation is faithful):
//   * Blocks run one after another (in grid order, reversed, or shuffled: the same order mode as the threads).
//     The threads of a block run as cooperative fibers (ucontext), all on one OS thread.
//   * __syncthreads() is a real barrier: a fiber that reaches it yields; the next phase starts only when every
//     live thread of the block waits at a barrier. Threads that exit while others wait, or that wait at different
//     __syncthreads() call sites, are reported as errors (both are undefined behaviour on a GPU).
//   * Inside a phase the threads run one after another, in an order chosen per launch: forward, reverse or a
//     seeded shuffle. A read of shared memory written by another thread in the same phase (a missing barrier)
//     therefore sees a different value under different orders, which the tests detect.
//   * __shared__ variables live in one linker section; it is filled with 0xFF bytes (a float NaN) before every
//     block, so reading shared memory that the block never wrote gives NaN instead of a stale value.
//   * There are no warps: __shfl_*, __syncwarp, __ballot and warp-synchronous tricks do not compile here.
//   * Not supported: dynamic (extern) shared memory, __constant__ symbols set from the host, textures,
//     cooperative groups, streams inside kernels. Atomics are plain read-modify-writes (one OS thread runs all).
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("h3emu_shared")))

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace h3emu {

enum : int { kReady = 0, kAtBarrier = 1, kDone = 2 };
enum : int { kForward = 0, kReverse = 1, kShuffle = 2 };

struct Fiber {
  ucontext_t ctx;
  int state = kReady;
  int line = 0;  // source line of the barrier it waits at (for messages)
  int site = 0;  // identity of that barrier call site (__COUNTER__)
  uint3 tid{0, 0, 0};
  bool initialised = false;
};

inline uint3 g_threadIdx{0, 0, 0}, g_blockIdx{0, 0, 0};
inline dim3 g_blockDim, g_gridDim;
inline ucontext_t g_scheduler;
inline std::vector<Fiber> g_fibers;
inline char* g_stacks = nullptr;  // malloc'd, never touched up front: only the pages a fiber uses are committed
inline size_t g_stack_bytes = 128 * 1024;
inline int g_current = -1;
inline void (*g_body)(void*) = nullptr;
inline void* g_body_arg = nullptr;
inline std::string g_error;

inline void fiber_entry() {
  g_body(g_body_arg);
  g_fibers[g_current].state = kDone;  // returning resumes uc_link, the scheduler
}

inline void syncthreads(int line, int site) {
  Fiber& f = g_fibers[g_current];
  f.state = kAtBarrier;
  f.line = line;
  f.site = site;
  swapcontext(&f.ctx, &g_scheduler);
}

inline bool ensure_fibers(size_t n) {
  if (g_fibers.size() >= n) return true;
  if (!g_stacks)
    if (const char* s = std::getenv("H3EMU_STACK_BYTES"))
      g_stack_bytes = std::max<size_t>(64 * 1024, std::strtoul(s, nullptr, 10));
  std::free(g_stacks);
  g_stacks = static_cast<char*>(std::malloc(n * g_stack_bytes));
  if (!g_stacks) {
    g_fibers.clear();
    return false;
  }
  g_fibers.assign(n, Fiber{});
  return true;
}

extern "C" char __start_h3emu_shared[] __attribute__((weak));
extern "C" char __stop_h3emu_shared[] __attribute__((weak));

inline void poison_shared() {
  if (__start_h3emu_shared && __stop_h3emu_shared && __stop_h3emu_shared > __start_h3emu_shared)
    std::memset(__start_h3emu_shared, 0xFF, size_t(__stop_h3emu_shared - __start_h3emu_shared));
}

// Runs one block: fibers in phases separated by barriers. Returns 0, or 1 with g_error set.
inline int run_block(unsigned nthreads, int order, uint64_t seed) {
  if (!ensure_fibers(nthreads)) {
    g_error = "out of memory for fiber stacks";
    return 1;
  }
  for (unsigned t = 0; t < nthreads; ++t) {
    Fiber& f = g_fibers[t];
    if (!f.initialised) {
      getcontext(&f.ctx);
      f.initialised = true;
    }
    f.ctx.uc_stack.ss_sp = g_stacks + size_t(t) * g_stack_bytes;
    f.ctx.uc_stack.ss_size = g_stack_bytes;
    f.ctx.uc_link = &g_scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
    f.state = kReady;
    f.line = f.site = 0;
    f.tid = uint3{t % g_blockDim.x, (t / g_blockDim.x) % g_blockDim.y, t / (g_blockDim.x * g_blockDim.y)};
  }
  std::vector<unsigned> perm(nthreads);
  for (unsigned t = 0; t < nthreads; ++t) perm[t] = t;
  if (order == kReverse) std::reverse(perm.begin(), perm.end());
  std::mt19937_64 rng(seed);
  for (int phase = 0;; ++phase) {
    if (order == kShuffle) std::shuffle(perm.begin(), perm.end(), rng);
    for (unsigned t : perm) {
      Fiber& f = g_fibers[t];
      if (f.state != kReady) continue;
      g_current = int(t);
      g_threadIdx = f.tid;
      swapcontext(&g_scheduler, &f.ctx);
    }
    unsigned waiting = 0, done = 0;
    int line = -1, site = -1;
    bool same_site = true;
    for (unsigned t = 0; t < nthreads; ++t) {
      const Fiber& f = g_fibers[t];
      if (f.state == kDone) ++done;
      if (f.state == kAtBarrier) {
        ++waiting;
        if (site < 0) {
          site = f.site;
          line = f.line;
        }
        same_site = same_site && f.site == site;
      }
    }
    if (waiting == 0) return 0;
    char buf[256];
    if (done > 0) {
      std::snprintf(buf, sizeof buf,
                    "__syncthreads divergence in block (%u,%u,%u), phase %d: %u threads exited while %u wait at the "
                    "barrier on line %d",
                    g_blockIdx.x, g_blockIdx.y, g_blockIdx.z, phase, done, waiting, line);
      g_error = buf;
      return 1;
    }
    if (!same_site) {
      std::snprintf(buf, sizeof buf,
                    "__syncthreads divergence in block (%u,%u,%u), phase %d: threads wait at different barriers",
                    g_blockIdx.x, g_blockIdx.y, g_blockIdx.z, phase);
      g_error = buf;
      return 1;
    }
    for (unsigned t = 0; t < nthreads; ++t)
      if (g_fibers[t].state == kAtBarrier) g_fibers[t].state = kReady;
  }
}

// A source without any __syncthreads (the build defines H3EMU_NO_BARRIERS) needs no fibers: running each thread
// to completion, in the chosen order, is one of the schedules a GPU may produce.
inline int run_block_direct(unsigned nthreads, int order, uint64_t seed) {
  std::vector<unsigned> perm(nthreads);
  for (unsigned t = 0; t < nthreads; ++t) perm[t] = t;
  if (order == kReverse) std::reverse(perm.begin(), perm.end());
  if (order == kShuffle) {
    std::mt19937_64 rng(seed);
    std::shuffle(perm.begin(), perm.end(), rng);
  }
  for (unsigned t : perm) {
    g_threadIdx = uint3{t % g_blockDim.x, (t / g_blockDim.x) % g_blockDim.y, t / (g_blockDim.x * g_blockDim.y)};
    g_body(g_body_arg);
  }
  return 0;
}

inline int run_grid(dim3 grid, dim3 block, void (*body)(void*), void* arg, int order, uint64_t seed) {
  g_error.clear();
  const unsigned nthreads = block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    g_error = "invalid block dimensions (at most 1024 threads, z <= 64)";
    return 1;
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    g_error = "invalid grid dimensions";
    return 1;
  }
  g_blockDim = block;
  g_gridDim = grid;
  g_body = body;
  g_body_arg = arg;
  // blocks run in the same order mode as threads: a kernel that depends on block order (a race between
  // blocks) gives different results under forward / reverse / shuffled launches
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<uint64_t> blocks(nblocks);
  for (uint64_t b = 0; b < nblocks; ++b) blocks[b] = b;
  if (order == kReverse) std::reverse(blocks.begin(), blocks.end());
  if (order == kShuffle) {
    std::mt19937_64 rng(seed ^ 0xB10C5EEDull);
    std::shuffle(blocks.begin(), blocks.end(), rng);
  }
  for (uint64_t b : blocks) {
    const uint64_t plane = uint64_t(grid.x) * grid.y;
    g_blockIdx = uint3{unsigned(b % grid.x), unsigned((b / grid.x) % grid.y), unsigned(b / plane)};
    poison_shared();
    const uint64_t block_seed = seed * 0x9E3779B97F4A7C15ull + b;
#ifdef H3EMU_NO_BARRIERS
    if (run_block_direct(nthreads, order, block_seed)) return 1;
#else
    if (run_block(nthreads, order, block_seed)) return 1;
#endif
  }
  return 0;
}

// ---- launching a kernel from an argument array (kernelParams convention: args[i] points at argument i)
template <class T>
constexpr char type_code() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_pointer_v<U>) return 'P';
  else if constexpr (std::is_same_v<U, float>) return 'f';
  else if constexpr (std::is_same_v<U, double>) return 'd';
  else if constexpr (std::is_same_v<U, int>) return 'i';
  else if constexpr (std::is_same_v<U, unsigned>) return 'I';
  else if constexpr (std::is_same_v<U, long long> || std::is_same_v<U, long>) return 'q';
  else if constexpr (std::is_same_v<U, unsigned long long> || std::is_same_v<U, unsigned long>) return 'Q';
  else if constexpr (std::is_same_v<U, short>) return 'h';
  else if constexpr (std::is_same_v<U, unsigned short>) return 'H';
  else if constexpr (std::is_same_v<U, char> || std::is_same_v<U, signed char>) return 'b';
  else if constexpr (std::is_same_v<U, unsigned char>) return 'B';
  else static_assert(sizeof(U) == 0, "kernel parameter type not supported by the host emulation");
}

template <class... A>
std::string signature(void (*)(A...)) {
  return std::string{type_code<A>()...};
}

template <class... A, size_t... I>
void call_kernel(void (*k)(A...), void** args, std::index_sequence<I...>) {
  k(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <class... A>
struct Launch {
  void (*kernel)(A...);
  void** args;
  static void thunk(void* self) {
    auto* l = static_cast<Launch*>(self);
    call_kernel(l->kernel, l->args, std::index_sequence_for<A...>{});
  }
};

template <class... A>
int launch(void (*k)(A...), dim3 grid, dim3 block, void** args, int order, uint64_t seed) {
  Launch<A...> l{k, args};
  return run_grid(grid, block, &Launch<A...>::thunk, &l, order, seed);
}

}  // namespace h3emu

#define threadIdx (h3emu::g_threadIdx)
#define blockIdx (h3emu::g_blockIdx)
#define blockDim (h3emu::g_blockDim)
#define gridDim (h3emu::g_gridDim)
#define __syncthreads() h3emu::syncthreads(__LINE__, __COUNTER__)

// ---- device functions used by our kernels
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __float2int_rd(float x) { return int(std::floor(x)); }
inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }
template <class T>
inline T __ldg(const T* p) { return *p; }
using std::max;
using std::min;

inline float atomicAdd(float* p, float v) { float old = *p; *p = old + v; return old; }
inline int atomicAdd(int* p, int v) { int old = *p; *p = old + v; return old; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned old = *p; *p = old + v; return old; }
inline int atomicMax(int* p, int v) { int old = *p; *p = std::max(old, v); return old; }
inline int atomicMin(int* p, int v) { int old = *p; *p = std::min(old, v); return old; }
inline int atomicExch(int* p, int v) { int old = *p; *p = v; return old; }
inline int atomicCAS(int* p, int cmp, int v) { int old = *p; if (old == cmp) *p = v; return old; }

// ---- half precision storage (IEEE binary16), converted exactly
struct __half {
  unsigned short x;
};
inline __half __ushort_as_half(unsigned short v) { return __half{v}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline float __half2float(__half h) {
  const uint32_t sign = uint32_t(h.x & 0x8000u) << 16;
  const uint32_t exp = (h.x >> 10) & 0x1Fu, man = h.x & 0x3FFu;
  float mag;
  if (exp == 0) mag = std::ldexp(float(man), -24);                 // zero and subnormals
  else if (exp == 31) mag = man ? NAN : INFINITY;                    // inf / NaN
  else mag = std::ldexp(float(man | 0x400u), int(exp) - 25);        // normal numbers
  uint32_t bits;
  std::memcpy(&bits, &mag, 4);
  bits |= sign;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}
