// The CPU kernels behind the small-row and tiled products of core/linear.h, as templates over
// the vector width L (16 floats for AVX-512, 8 for AVX2, 4 for the generic build) and the weight
// element type (float32, or bfloat16 bits). Each computes a piece of y = x · W (+ bias) on one
// thread, reading W in place; core/linear.cc compiles them once per instruction set and splits
// their work over the threads. Internal to core/linear.cc.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/linear.h"

// The kernels pass 64-byte vectors between inlined helpers only; no ABI crosses a library boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace keel::linear_kernels {

// Vectors of L floats: one register of AVX-512 (16), AVX (8) or SSE (4).
template <int L>
struct Lanes;
template <>
struct Lanes<16> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct Lanes<8> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct Lanes<4> {
  typedef float type __attribute__((vector_size(16)));
};
template <int L>
using Vec = typename Lanes<L>::type;

template <int L>
inline __attribute__((always_inline)) Vec<L> load(const float* p) {
  Vec<L> v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
template <int L>
inline __attribute__((always_inline)) void store(float* p, Vec<L> v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// A weight element is float32, or bfloat16 (decoding copies, DecodeWeights) kept as the upper 16
// bits of a float32: widened in registers, so products still accumulate in float32.
using Bf16 = uint16_t;
template <int L>
struct Words {
  typedef uint32_t type __attribute__((vector_size(4 * L)));
};
inline float to_float(float w) { return w; }
inline float to_float(Bf16 w) {
  const uint32_t bits = static_cast<uint32_t>(w) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

// Register tiles per instruction set: W [N, K] takes rows of x in pairs and L/2 output columns
// (L accumulators).
template <int L>
constexpr int64_t nk_cols() {
  return L / 2;
}

// Lane of one level of a pairwise reduction tree with blocks of B lanes: output chunk c of 2B lanes
// takes block c of `a` then of `b` (first half of each pair of blocks, or the second).
constexpr int fold_lane(int L, int B, bool second, int i) {
  const int c = i / (2 * B), r = i % (2 * B);
  return (r < B ? c * 2 * B + r : L + c * 2 * B + (r - B)) + (second ? B : 0);
}
template <int L, int B, std::size_t... I>
inline __attribute__((always_inline)) Vec<L> fold(Vec<L> a, Vec<L> b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, fold_lane(L, B, false, I)...) + __builtin_shufflevector(a, b, fold_lane(L, B, true, I)...);
}
template <int L, int N, int B>
inline __attribute__((always_inline)) void fold_level(Vec<L> (&a)[L]) {
  for (int i = 0; i < N / 2; ++i) a[i] = fold<L, B>(a[2 * i], a[2 * i + 1], std::make_index_sequence<L>{});
  if constexpr (N > 2) fold_level<L, N / 2, B / 2>(a);
}
constexpr int bit_reversed(int i, int L) {
  int r = 0;
  for (int bit = 1; bit < L; bit <<= 1, i >>= 1) r = (r << 1) | (i & 1);
  return r;
}
// Sums of the lanes of L vectors in one vector: lane i holds the sum of a[bit_reversed(i)].
template <int L>
inline __attribute__((always_inline)) Vec<L> lane_sums(Vec<L> (&a)[L]) {
  fold_level<L, L, L / 2>(a);
  return a[0];
}

// W [N, K]: L/2 rows of W (output columns) against MR <= 2 rows of x, as dot products along K.
// The accumulator of output lane p = m * L/2 + j sits at a[bit_reversed(p)], so the reduction
// tree leaves the sums in output order.
template <int L, int MR>
inline __attribute__((always_inline)) void nk_tile(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K,
                                                   const float* bias, float* y, int64_t ldy, bool prefetch) {
  static_assert(MR == 1 || MR == 2);
  constexpr int NR = L / 2;
  Vec<L> acc[L];
  for (auto& a : acc) a = Vec<L>{};
  const int64_t kv = K / L * L;
  for (int64_t k = 0; k < kv; k += L) {
    if (prefetch && k % 16 == 0)  // weights stream from memory once per step: fetch the next tile's rows now
      for (int j = 0; j < NR; ++j) __builtin_prefetch(w + (NR + j) * ldw + k);
    for (int j = 0; j < NR; ++j) {
      const Vec<L> wj = load<L>(w + j * ldw + k);
      for (int m = 0; m < MR; ++m) acc[bit_reversed(m * NR + j, L)] += load<L>(x + m * ldx + k) * wj;
    }
  }
  float sums[L];
  store<L>(sums, lane_sums<L>(acc));
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NR; ++j) {
      float v = sums[m * NR + j] + (bias ? bias[j] : 0.0f);
      for (int64_t k = kv; k < K; ++k) v += x[m * ldx + k] * w[j * ldw + k];
      y[m * ldy + j] = v;
    }
}

// W [K, N] read row by row: the sums of `width` output columns from n0 (a multiple of L; M * width
// at most kPanelFloats) for every row of x stay in L1 while each pass reads the panel's run of R
// consecutive rows of W. Runs of hundreds of floats stream at the memory's rate (measured at d 768:
// 20-24 GB/s of 30 on 2 threads, where register tiles of 2L columns, which read 2L floats of each
// row, reached 12-18); a panel as wide as W reads one run front to back. Each output sums the bias
// then k in order, whatever R.
inline constexpr int64_t kPanelColumns = 512;
inline constexpr int64_t kPanelFloats = kMaxSmallRows * kPanelColumns;
template <int L, int R>
inline __attribute__((always_inline)) void kn_panel_runs(const float* x, int64_t ldx, int64_t M, const float* w, int64_t N,
                                                         int64_t K, const float* bias, float* y, int64_t ldy, int64_t n0,
                                                         int64_t width) {
  alignas(64) float acc[kPanelFloats];
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < width; ++j) acc[m * width + j] = bias ? bias[n0 + j] : 0.0f;
  int64_t k = 0;
  for (; k + R <= K; k += R) {
    const float* wk = w + k * N + n0;
    for (int64_t m = 0; m < M; ++m) {
      float xr[R];
      for (int r = 0; r < R; ++r) xr[r] = x[m * ldx + k + r];
      float* a = acc + m * width;
      for (int64_t j = 0; j < width; j += L) {
        Vec<L> v = load<L>(a + j);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) v += xr[r] * load<L>(wk + r * N + j);
        store<L>(a + j, v);
      }
    }
  }
  for (; k < K; ++k)
    for (int64_t m = 0; m < M; ++m) {
      const float xk = x[m * ldx + k];
      float* a = acc + m * width;
      for (int64_t j = 0; j < width; j += L) store<L>(a + j, load<L>(a + j) + xk * load<L>(w + k * N + n0 + j));
    }
  for (int64_t m = 0; m < M; ++m) std::copy(acc + m * width, acc + (m + 1) * width, y + m * ldy + n0);
}

// A single row of x reads each row of W once, so its passes take runs of 16 rows: 16 streams in
// flight instead of 4 (GPT-2 small's [K, N] products at batch 1 read 41 GB/s against 33 with runs
// of 4, 27 with 32, when a plain read ran at 48, on 2 threads of an AVX-512 EPYC). More rows reread
// runs of 4, which stay in L1 across the rows of x (16 rows of a 512-column panel would not).
template <int L>
inline __attribute__((always_inline)) void kn_panel(const float* x, int64_t ldx, int64_t M, const float* w, int64_t N, int64_t K,
                                                    const float* bias, float* y, int64_t ldy, int64_t n0, int64_t width) {
  if (M == 1) return kn_panel_runs<L, 16>(x, ldx, M, w, N, K, bias, y, ldy, n0, width);
  kn_panel_runs<L, 4>(x, ldx, M, w, N, K, bias, y, ldy, n0, width);
}

// W [K, N] against 2 to kMaxTiledRows rows of x: tiles of MR rows of x and NV vectors of output
// columns whose sums stay in registers over a chunk of rows of W (NV loads of W and MR broadcasts
// of x per NV * MR multiply-adds); the chunk, read from memory by the first tile, stays in cache for
// the others. Each output sums the bias then k in order, as kn_panel does.
template <int L, int MR, int NV>
inline __attribute__((always_inline)) void kn_tile(const float* x, int64_t ldx, const float* w, int64_t N, int64_t k0, int64_t k1,
                                                   const float* bias, float* y, int64_t ldy, int64_t n0) {
  Vec<L> acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v)
      acc[m][v] = k0 > 0 ? load<L>(y + m * ldy + n0 + v * L) : bias ? load<L>(bias + n0 + v * L) : Vec<L>{};
  for (int64_t k = k0; k < k1; ++k) {
    Vec<L> wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = load<L>(w + k * N + n0 + v * L);
    for (int m = 0; m < MR; ++m) {
      const float xm = x[m * ldx + k];
      for (int v = 0; v < NV; ++v) acc[m][v] += xm * wv[v];
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) store<L>(y + m * ldy + n0 + v * L, acc[m][v]);
}
template <int L, int MR>
inline __attribute__((always_inline)) void kn_tile_of(int64_t nv, const float* x, int64_t ldx, const float* w, int64_t N,
                                                      int64_t k0, int64_t k1, const float* bias, float* y, int64_t ldy,
                                                      int64_t n0) {
  constexpr int kWide = L >= 16 ? 4 : 2;  // MR * NV + NV + 1 registers: 21 of 32 on AVX-512, 11 of 16 on AVX2
  if (nv >= kWide) return kn_tile<L, MR, kWide>(x, ldx, w, N, k0, k1, bias, y, ldy, n0);
  if (kWide == 4 && nv == 3) return kn_tile<L, MR, 3>(x, ldx, w, N, k0, k1, bias, y, ldy, n0);
  if (nv >= 2) return kn_tile<L, MR, 2>(x, ldx, w, N, k0, k1, bias, y, ldy, n0);
  kn_tile<L, MR, 1>(x, ldx, w, N, k0, k1, bias, y, ldy, n0);
}

// Output columns [n_begin, n_end) (multiples of L) of y [M, N] = x · W (+ bias), W [K, N], by
// blocks of kTiledVectors * L columns and chunks of kTiledChunk rows of W.
inline constexpr int64_t kTiledChunk = 128;
template <int L>
inline constexpr int64_t kTiledVectors = L >= 16 ? 4 : 2;
template <int L>
inline __attribute__((always_inline)) void kn_tiled(const float* x, int64_t ldx, int64_t M, const float* w, int64_t N, int64_t K,
                                                    const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kTiledVectors<L> * L) {
    const int64_t nv = std::min<int64_t>(kTiledVectors<L>, (n_end - n0) / L);
    for (int64_t k0 = 0; k0 < K; k0 += kTiledChunk) {
      const int64_t k1 = std::min(K, k0 + kTiledChunk);
      int64_t m = 0;
      for (; m + 4 <= M; m += 4) kn_tile_of<L, 4>(nv, x + m * ldx, ldx, w, N, k0, k1, bias, y + m * ldy, ldy, n0);
      const float* xm = x + m * ldx;
      float* ym = y + m * ldy;
      if (M - m == 3) kn_tile_of<L, 3>(nv, xm, ldx, w, N, k0, k1, bias, ym, ldy, n0);
      if (M - m == 2) kn_tile_of<L, 2>(nv, xm, ldx, w, N, k0, k1, bias, ym, ldy, n0);
      if (M - m == 1) kn_tile_of<L, 1>(nv, xm, ldx, w, N, k0, k1, bias, ym, ldy, n0);
    }
  }
}

// A single-row output: its four accumulators, then the elements [k, K) that fill no vector.
template <int L, class W>
inline __attribute__((always_inline)) float single_row_sum(const Vec<L> (&acc)[4], const float* x, const W* wn, int64_t k,
                                                           int64_t K, float bias) {
  const Vec<L> a = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  float v = bias;
  for (int i = 0; i < L; ++i) v += a[i];
  // Fused explicitly: left to contraction, GCC's AVX-512 build multiplied some tails as a vector
  // and added the products one by one, so a row's bits differed from the AVX2 build's.
  for (; k < K; ++k) v = std::fma(x[k], to_float(wn[k]), v);
  return v;
}

// Lanes of the vectors of the kernels that go one output at a time (a single row; every bfloat16
// product): 256 bits at most, also in the AVX-512 build. Those kernels stream W from memory, and
// on an AMD EPYC with AVX-512 (Zen 4, whose 512-bit operations run as two 256-bit halves) 512-bit
// loads streamed it more slowly: a plain 2-thread sum of 494 MB read 45 GB/s with them against 49
// with 256-bit loads (`keel_bench read_widths`), and Llama-135M's tied head 24-30 GB/s against
// 37-46. Vectors of 8 lanes also give their outputs the same bits on an AVX2 and an AVX-512 CPU.
template <int L>
inline constexpr int kStreamLanes = L < 8 ? L : 8;

// One row of x against rows [n_begin, n_end) of W [N, K], one output at a time, so that the
// weights stream front to back as one run the hardware prefetcher follows across rows (a decoding
// step at batch 1 is bound by that stream: Llama-135M's float32 step 6-9% shorter than with tiles
// of L/2 rows read side by side). Four accumulators keep the multiply-adds off one latency chain.
template <int L>
inline __attribute__((always_inline)) void nk_single_row(const float* x, const float* w, int64_t K, const float* bias, float* y,
                                                         int64_t n_begin, int64_t n_end) {
  const int64_t ku = K / (4 * L) * (4 * L), kv = K / L * L;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const float* wn = w + n * K;
    Vec<L> acc[4] = {};
    int64_t k = 0;
    for (; k < ku; k += 4 * L)
      for (int u = 0; u < 4; ++u) acc[u] += load<L>(x + k + u * L) * load<L>(wn + k + u * L);
    for (; k < kv; k += L) acc[0] += load<L>(x + k) * load<L>(wn + k);
    y[n] = single_row_sum<L>(acc, x, wn, k, K, bias ? bias[n] : 0.0f);
  }
}

// bfloat16 weights 2L at a time as L 32-bit words: word i holds element 2i in its low half and
// 2i + 1 in its high half, so one shift gives the even elements as float32 and one mask the odd
// (widening each half word costs five instructions per vector on AVX2: the product ran below the
// memory's rate).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "load_pairs: element 2i sits in the low half of word i");
template <int L>
inline __attribute__((always_inline)) void load_pairs(const Bf16* p, Vec<L>& even, Vec<L>& odd) {
  typename Words<L>::type u;
  __builtin_memcpy(&u, p, sizeof u);
  const typename Words<L>::type e = u << 16, o = u & 0xffff0000u;
  __builtin_memcpy(&even, &e, sizeof even);
  __builtin_memcpy(&odd, &o, sizeof odd);
}

// The bfloat16 single-row kernel reorders x on the stack: rows of x up to this width; a wider row
// takes nk_rows_bf16, which reorders it on the heap.
inline constexpr int64_t kMaxPairedK = 8192;

// nk_single_row for bfloat16 weights: x's elements reordered once per call to load_pairs' order
// (per block of 2L: the even elements, then the odd), so each weight is widened once in two
// instructions per 2L.
template <int L>
inline __attribute__((always_inline)) void nk_single_row(const float* x, const Bf16* w, int64_t K, const float* bias, float* y,
                                                         int64_t n_begin, int64_t n_end) {
  alignas(64) float xp[kMaxPairedK];
  const int64_t kp = K / (2 * L) * (2 * L), ku = K / (4 * L) * (4 * L);
  for (int64_t k = 0; k < kp; k += 2 * L)
    for (int i = 0; i < L; ++i) xp[k + i] = x[k + 2 * i], xp[k + L + i] = x[k + 2 * i + 1];
  for (int64_t n = n_begin; n < n_end; ++n) {
    const Bf16* wn = w + n * K;
    Vec<L> acc[4] = {};
    int64_t k = 0;
    for (; k < ku; k += 4 * L) {
      Vec<L> e0, o0, e1, o1;
      load_pairs<L>(wn + k, e0, o0);
      load_pairs<L>(wn + k + 2 * L, e1, o1);
      acc[0] += load<L>(xp + k) * e0;
      acc[1] += load<L>(xp + k + L) * o0;
      acc[2] += load<L>(xp + k + 2 * L) * e1;
      acc[3] += load<L>(xp + k + 3 * L) * o1;
    }
    for (; k < kp; k += 2 * L) {
      Vec<L> e0, o0;
      load_pairs<L>(wn + k, e0, o0);
      acc[0] += load<L>(xp + k) * e0;
      acc[1] += load<L>(xp + k + L) * o0;
    }
    y[n] = single_row_sum<L>(acc, x, wn, k, K, bias ? bias[n] : 0.0f);
  }
}

// x's M rows reordered to load_pairs' order (per block of 2L: the even elements, then the odd) in a
// buffer of this thread's, row m at m * kp, for the kp = K rounded down to 2L elements the
// blocks cover.
template <int L>
const float* paired_rows(const float* x, int64_t ldx, int64_t M, int64_t kp) {
  thread_local std::vector<float> buffer;
  buffer.resize(static_cast<size_t>(M * kp));
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * ldx;
    float* p = buffer.data() + m * kp;
    for (int64_t k = 0; k < kp; k += 2 * L)
      for (int i = 0; i < L; ++i) p[k + i] = xm[k + 2 * i], p[k + L + i] = xm[k + 2 * i + 1];
  }
  return buffer.data();
}

// M (at most kMaxSmallRows) rows of x against rows [n_begin, n_end) of bfloat16 W [N, K], one row
// of W at a time, so that each weight is widened once (load_pairs) for all M rows (the register
// tiles this replaced widened it once per pair of rows, which bounded them at 8 rows). Called with
// L = kStreamLanes, each row of W fetched while the one before it is read: with 512-bit vectors
// and the hardware prefetcher alone, which also follows the M rows of x, a quarter of the kernel's
// samples waited on loads of W (`perf annotate`), and Llama-135M's bfloat16 step on an AVX-512
// EPYC took 12.8-14.4, 16.6-18.7 and 33.7-37.6 ms at 2, 4 and 8 rows against 9.8-10.6, 13.5-14.9
// and 25.4-27.1 now (bench/README.md). Each output sums in the same order in the AVX2 and the
// AVX-512 build.
template <int L, int M>
inline __attribute__((always_inline)) void nk_rows_bf16(const float* x, int64_t ldx, const Bf16* w, int64_t K, const float* bias,
                                                        float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  constexpr int A = M <= 4 ? 2 : 1;  // accumulators a row: with few rows, more chains to hide the FMA's latency
  const int64_t kp = K / (2 * L) * (2 * L);
  const float* xp = paired_rows<L>(x, ldx, M, kp);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const Bf16* wn = w + n * K;
    Vec<L> acc[M][A] = {};
    for (int64_t k = 0; k < kp; k += 2 * L) {
      __builtin_prefetch(wn + K + k);  // the next row of W, one row ahead
      Vec<L> even, odd;
      load_pairs<L>(wn + k, even, odd);
      for (int m = 0; m < M; ++m) {
        acc[m][0] += load<L>(xp + m * kp + k) * even;
        acc[m][A - 1] += load<L>(xp + m * kp + k + L) * odd;
      }
    }
    for (int m = 0; m < M; ++m) {
      Vec<L> a[4] = {acc[m][0], A == 2 ? acc[m][A - 1] : Vec<L>{}, {}, {}};
      y[m * ldy + n] = single_row_sum<L>(a, x + m * ldx, wn, kp, K, bias ? bias[n] : 0.0f);
    }
  }
}

// nk_rows_bf16 for a number of rows known only at run time.
template <int L>
inline __attribute__((always_inline)) void nk_rows_bf16(const float* x, int64_t ldx, int64_t M, const Bf16* w, int64_t K,
                                                        const float* bias, float* y, int64_t ldy, int64_t n_begin,
                                                        int64_t n_end) {
  static_assert(kMaxSmallRows == 8, "one case per row count");
  switch (M) {
    case 1:
      return nk_rows_bf16<L, 1>(x, ldx, w, K, bias, y, ldy, n_begin, n_end);
    case 2:
      return nk_rows_bf16<L, 2>(x, ldx, w, K, bias, y, ldy, n_begin, n_end);
    case 3:
      return nk_rows_bf16<L, 3>(x, ldx, w, K, bias, y, ldy, n_begin, n_end);
    case 4:
      return nk_rows_bf16<L, 4>(x, ldx, w, K, bias, y, ldy, n_begin, n_end);
    case 5:
      return nk_rows_bf16<L, 5>(x, ldx, w, K, bias, y, ldy, n_begin, n_end);
    case 6:
      return nk_rows_bf16<L, 6>(x, ldx, w, K, bias, y, ldy, n_begin, n_end);
    case 7:
      return nk_rows_bf16<L, 7>(x, ldx, w, K, bias, y, ldy, n_begin, n_end);
    default:
      return nk_rows_bf16<L, 8>(x, ldx, w, K, bias, y, ldy, n_begin, n_end);
  }
}

// Whether a product of M rows of x with W [N, K] goes one output at a time over all N outputs (no
// edge columns, so the bits do not depend on a tile's width), rather than by the tiles of nk_tiles:
// a single row, and every product with bfloat16 weights.
template <class W>
constexpr bool goes_by_outputs(int64_t M) {
  return M == 1 || std::is_same_v<W, Bf16>;
}

// Outputs [n_begin, n_end) of M rows of x against W [N, K], one output at a time, with vectors of
// kStreamLanes<L>: M rows of bfloat16 weights, or a single row (float32 weights go by outputs only
// then, goes_by_outputs).
template <int L, class W>
inline __attribute__((always_inline)) void nk_outputs(const float* x, int64_t ldx, int64_t M, const W* w, int64_t K,
                                                      const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  constexpr int S = kStreamLanes<L>;
  if constexpr (std::is_same_v<W, Bf16>)
    if (M >= 2 || K > kMaxPairedK) return nk_rows_bf16<S>(x, ldx, M, w, K, bias, y, ldy, n_begin, n_end);
  nk_single_row<S>(x, w, K, bias, y, n_begin, n_end);
}

// Full tiles [tile_begin, tile_end) of float32 W [N, K], for 2 or more rows of x.
template <int L>
inline __attribute__((always_inline)) void nk_tiles(const float* x, int64_t ldx, int64_t M, const float* w, int64_t K,
                                                    const float* bias, float* y, int64_t ldy, int64_t tile_begin,
                                                    int64_t tile_end) {
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t n0 = t * nk_cols<L>();
    const float* wt = w + n0 * K;
    const float* bt = bias ? bias + n0 : nullptr;
    int64_t m0 = 0;
    for (; m0 + 2 <= M; m0 += 2) nk_tile<L, 2>(x + m0 * ldx, ldx, wt, K, K, bt, y + m0 * ldy + n0, ldy, m0 == 0);
    if (m0 < M) nk_tile<L, 1>(x + m0 * ldx, ldx, wt, K, K, bt, y + m0 * ldy + n0, ldy, m0 == 0);
  }
}

// Plain loops for the columns that do not fill a tile.
template <class W>
void edge_columns(const float* x, int64_t ldx, int64_t M, const W* w, int64_t N, int64_t K, bool w_is_kn, const float* bias,
                  float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n_begin; n < n_end; ++n) {
      float v = bias ? bias[n] : 0.0f;
      for (int64_t k = 0; k < K; ++k) v += x[m * ldx + k] * to_float(w_is_kn ? w[k * N + n] : w[n * K + k]);
      y[m * ldy + n] = v;
    }
}

}  // namespace keel::linear_kernels
