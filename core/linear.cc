#include "core/linear.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/kernel_isa.h"
#include "core/linear_group.h"

// The kernels pass 64-byte vectors between inlined helpers only; no ABI crosses a library boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace keel {

namespace {

namespace F = torch::nn::functional;

thread_local const DecodeWeights* current_decode_weights = nullptr;

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
struct Halves {
  typedef uint16_t type __attribute__((vector_size(2 * L)));
};
template <int L>
struct Words {
  typedef uint32_t type __attribute__((vector_size(4 * L)));
};
template <int L>
inline __attribute__((always_inline)) Vec<L> load(const Bf16* p) {
  typename Halves<L>::type h;
  __builtin_memcpy(&h, p, sizeof h);
  const auto bits = __builtin_convertvector(h, typename Words<L>::type) << 16;
  Vec<L> v;
  __builtin_memcpy(&v, &bits, sizeof v);
  return v;
}
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
template <int L, int MR, class W>
inline __attribute__((always_inline)) void nk_tile(const float* x, int64_t ldx, const W* w, int64_t ldw, int64_t K,
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
      for (int64_t k = kv; k < K; ++k) v += x[m * ldx + k] * to_float(w[j * ldw + k]);
      y[m * ldy + j] = v;
    }
}

// W [K, N] read row by row: the sums of `width` output columns from n0 (a multiple of L; M * width
// at most kPanelFloats) for every row of x stay in L1 while each pass reads the panel's run of 4
// consecutive rows of W. Runs of hundreds of floats stream at the memory's rate (measured at d 768:
// 20-24 GB/s of 30 on 2 threads, where register tiles of 2L columns, which read 2L floats of each
// row, reached 12-18); a panel as wide as W reads one run front to back.
inline constexpr int64_t kPanelColumns = 512;
inline constexpr int64_t kPanelFloats = kMaxSmallRows * kPanelColumns;
// Rows of W [K, N] a block holds at least when the product is split by rows (fewer: by panels).
inline constexpr int64_t kMinBlockRows = 16;
template <int L, class W>
inline __attribute__((always_inline)) void kn_panel(const float* x, int64_t ldx, int64_t M, const W* w, int64_t N, int64_t K,
                                                    const float* bias, float* y, int64_t ldy, int64_t n0, int64_t width) {
  alignas(64) float acc[kPanelFloats];
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < width; ++j) acc[m * width + j] = bias ? bias[n0 + j] : 0.0f;
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const W *w0 = w + k * N + n0, *w1 = w0 + N, *w2 = w1 + N, *w3 = w2 + N;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * ldx + k;
      const float x0 = xm[0], x1 = xm[1], x2 = xm[2], x3 = xm[3];
      float* a = acc + m * width;
      for (int64_t j = 0; j < width; j += L) {
        Vec<L> v = load<L>(a + j);
        v += x0 * load<L>(w0 + j);
        v += x1 * load<L>(w1 + j);
        v += x2 * load<L>(w2 + j);
        v += x3 * load<L>(w3 + j);
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

// W [K, N] against 9 to kMaxTiledRows rows of x: tiles of MR rows of x and NV vectors of output
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
  for (; k < K; ++k) v += x[k] * to_float(wn[k]);
  return v;
}

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

// The bfloat16 single-row kernel reorders x on the stack: rows of x up to this width; wider rows
// of bfloat16 weights take the tiles.
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

// M (2 to kMaxSmallRows) rows of x against rows [n_begin, n_end) of bfloat16 W [N, K], one row of
// W at a time, so that each weight is widened once (load_pairs) for all M rows rather than once per
// pair of rows as in the tiles: at 8 rows the widening, not the memory, bounded the tiles.
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

// Full tiles [tile_begin, tile_end) of W [N, K].
template <int L, class W>
inline __attribute__((always_inline)) void nk_tiles(const float* x, int64_t ldx, int64_t M, const W* w, int64_t K,
                                                    const float* bias, float* y, int64_t ldy, int64_t tile_begin,
                                                    int64_t tile_end) {
  if (M == 1 && (std::is_same_v<W, float> || K <= kMaxPairedK))
    return nk_single_row<L>(x, w, K, bias, y, tile_begin * nk_cols<L>(), tile_end * nk_cols<L>());
  if constexpr (std::is_same_v<W, Bf16>)
    if (M >= 2) return nk_rows_bf16<L>(x, ldx, M, w, K, bias, y, ldy, tile_begin * nk_cols<L>(), tile_end * nk_cols<L>());
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t n0 = t * nk_cols<L>();
    const W* wt = w + n0 * K;
    const float* bt = bias ? bias + n0 : nullptr;
    int64_t m0 = 0;
    for (; m0 + 2 <= M; m0 += 2) nk_tile<L, 2, W>(x + m0 * ldx, ldx, wt, K, K, bt, y + m0 * ldy + n0, ldy, m0 == 0);
    if (m0 < M) nk_tile<L, 1, W>(x + m0 * ldx, ldx, wt, K, K, bt, y + m0 * ldy + n0, ldy, m0 == 0);
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

// The kernels compiled for each instruction set, for each weight type; the set is picked once from the CPU.
template <class W>
struct KernelsOf {
  void (*kn_panel)(const float*, int64_t, int64_t, const W*, int64_t, int64_t, const float*, float*, int64_t, int64_t, int64_t);
  void (*nk)(const float*, int64_t, int64_t, const W*, int64_t, const float*, float*, int64_t, int64_t, int64_t);
};
struct Kernels {
  int64_t lanes, nk_cols;
  KernelsOf<float> f32;
  KernelsOf<Bf16> bf16;
  void (*kn_tiled)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, const float*, float*, int64_t, int64_t,
                   int64_t);
};
#define KEEL_KERNELS_OF(NAME, TARGET, L, W)                                                                                      \
  TARGET void NAME##_kn_panel(const float* x, int64_t ldx, int64_t M, const W* w, int64_t N, int64_t K, const float* bias,       \
                              float* y, int64_t ldy, int64_t n0, int64_t width) {                                                \
    kn_panel<L, W>(x, ldx, M, w, N, K, bias, y, ldy, n0, width);                                                                 \
  }                                                                                                                              \
  TARGET void NAME##_nk(const float* x, int64_t ldx, int64_t M, const W* w, int64_t K, const float* bias, float* y, int64_t ldy, \
                        int64_t t0, int64_t t1) {                                                                                \
    nk_tiles<L, W>(x, ldx, M, w, K, bias, y, ldy, t0, t1);                                                                       \
  }
#define KEEL_KERNELS(NAME, TARGET, L)                                                                                          \
  KEEL_KERNELS_OF(NAME##F32, TARGET, L, float)                                                                                 \
  KEEL_KERNELS_OF(NAME##Bf16, TARGET, L, Bf16)                                                                                 \
  TARGET void NAME##_kn_tiled(const float* x, int64_t ldx, int64_t M, const float* w, int64_t N, int64_t K, const float* bias, \
                              float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {                                         \
    kn_tiled<L>(x, ldx, M, w, N, K, bias, y, ldy, n_begin, n_end);                                                             \
  }                                                                                                                            \
  constexpr Kernels NAME = {                                                                                                   \
      L, nk_cols<L>(), {NAME##F32_kn_panel, NAME##F32_nk}, {NAME##Bf16_kn_panel, NAME##Bf16_nk}, NAME##_kn_tiled};
#if defined(__x86_64__)
KEEL_KERNELS(kAvx512Kernels, __attribute__((target("avx512f"))), 16)
KEEL_KERNELS(kAvx2Kernels, __attribute__((target("avx2,fma"))), 8)
#endif
KEEL_KERNELS(kGenericKernels, , 4)
#undef KEEL_KERNELS
#undef KEEL_KERNELS_OF

const Kernels& kernels_for(KernelIsa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case KernelIsa::kAvx512:
      return kAvx512Kernels;
    case KernelIsa::kAvx2:
      return kAvx2Kernels;
#endif
    default:
      return kGenericKernels;
  }
}

// x as [M, K] rows with unit stride along K.
torch::Tensor rows_of(const torch::Tensor& x, int64_t K) {
  auto x2 = x.reshape({-1, K});
  return x2.stride(1) == 1 ? x2 : x2.contiguous();
}

// Output columns [0, whole) of W [K, N] when M rows of them fit one panel: kRowBlocks blocks of
// consecutive rows of W, each read as one run front to back into sums of its own, added in block
// order after. The blocks do not depend on the thread count, so neither do the bits; a thread
// takes consecutive blocks. (Panels side by side read each row's width / threads floats, then
// jump a row: GPT-2 small's mlp.c_proj, 3072 x 768, streamed at 13-15 GB/s that way and at
// 36-37 GB/s by rows, on 2 threads of an AVX-512 EPYC.)
inline constexpr int64_t kRowBlocks = 8;
template <class W>
void kn_product_by_rows(const float* xp, int64_t ldx, int64_t M, const W* wp, int64_t N, int64_t K, const float* bp, float* yp,
                        const KernelsOf<W>& k, int64_t whole) {
  const int64_t rows = (K + 4 * kRowBlocks - 1) / (4 * kRowBlocks) * 4;  // runs of 4 rows stay whole
  const int64_t blocks = (K + rows - 1) / rows, block = M * whole;       // the last block may be short
  // The calling thread's sums, kept between steps; each block's kn_panel writes all of its part.
  thread_local std::vector<float> sums;
  sums.resize(static_cast<size_t>(kRowBlocks * kPanelFloats));
  float* s = sums.data();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t k0 = b * rows, k1 = std::min(K, k0 + rows);
      k.kn_panel(xp + k0, ldx, M, wp + k0 * N, N, k1 - k0, b == 0 ? bp : nullptr, s + b * block, whole, 0, whole);
    }
  });
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < whole; ++j) {
      float v = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) v += s[b * block + m * whole + j];
      yp[m * N + j] = v;
    }
}

// Output columns [0, whole) of W [K, N]: by blocks of rows when M rows of them fit one panel and
// W has rows enough, else in panels side by side, as many per thread, so the threads finish
// together. Neither gives bits that depend on the thread count.
template <class W>
void kn_product(const float* xp, int64_t ldx, int64_t M, const W* wp, int64_t N, int64_t K, const float* bp, float* yp,
                const KernelsOf<W>& k, int64_t lanes, int64_t whole) {
  if (whole > 0 && M * whole <= kPanelFloats && K >= kRowBlocks * kMinBlockRows)
    return kn_product_by_rows(xp, ldx, M, wp, N, K, bp, yp, k, whole);
  const int64_t threads = at::get_num_threads();
  const int64_t panels = threads * std::max<int64_t>(1, (whole + threads * kPanelColumns - 1) / (threads * kPanelColumns));
  const int64_t width = ((whole + panels - 1) / panels + lanes - 1) / lanes * lanes;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = p * width, w = std::min(width, whole - n0);
      if (w > 0) k.kn_panel(xp, ldx, M, wp, N, K, bp, yp, N, n0, w);
    }
  });
}

// One product with W [N, K] for nk_products: y [M, N] = x · Wᵀ (+ bias).
template <class W>
struct NkOperand {
  const W* w;
  const float* bias;  // or null
  float* y;
  int64_t N;
};

// Products of x [M, K] with several [N_i, K] weights of one element type in one pass over the
// threads: the tiles of every weight are numbered one after the other and split together.
template <class W>
void nk_products(const float* xp, int64_t ldx, int64_t M, int64_t K, const std::vector<NkOperand<W>>& ops, const KernelsOf<W>& k,
                 int64_t cols) {
  std::vector<int64_t> first(ops.size() + 1, 0);  // first tile of each weight
  for (size_t i = 0; i < ops.size(); ++i) first[i + 1] = first[i] + ops[i].N / cols;
  // Enough multiply-adds per task (~64k) that handing tiles to another thread pays.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, M * K * cols));
  at::parallel_for(0, first.back(), grain, [&](int64_t begin, int64_t end) {
    for (size_t i = 0; i < ops.size(); ++i) {
      const int64_t b = std::max(begin, first[i]) - first[i], e = std::min(end, first[i + 1]) - first[i];
      if (b >= e) continue;
      const auto& o = ops[i];
      k.nk(xp, ldx, M, o.w, K, o.bias, o.y, o.N, b, e);
    }
  });
  for (const auto& o : ops) {
    const int64_t whole = o.N / cols * cols;  // the rest are edge columns
    if (whole < o.N) edge_columns(xp, ldx, M, o.w, o.N, K, /*w_is_kn=*/false, o.bias, o.y, o.N, whole, o.N);
  }
}

// y = x · W (+ bias) with W's elements of type W (float32 or bfloat16 bits).
template <class W>
torch::Tensor small_product(const torch::Tensor& x, const W* wp, int64_t N, const torch::Tensor& bias, bool kn,
                            const KernelsOf<W>& k, int64_t lanes, int64_t nk_cols) {
  const int64_t K = x.size(-1);
  auto x2 = rows_of(x, K);
  const int64_t M = x2.size(0), ldx = x2.stride(0);
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  auto y = torch::empty({M, N}, x.options());
  const float* xp = x2.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  if (kn) {
    const int64_t whole = N / lanes * lanes;  // columns the panels cover; the rest are edge columns
    kn_product(xp, ldx, M, wp, N, K, bp, yp, k, lanes, whole);
    if (whole < N) edge_columns(xp, ldx, M, wp, N, K, /*w_is_kn=*/true, bp, yp, N, whole, N);
  } else {
    nk_products<W>(xp, ldx, M, K, {{wp, bp, yp, N}}, k, nk_cols);
  }
  return y.view(out_shape);
}

// y = x · W (+ bias), W [K, N], for more than kMaxSmallRows rows of x: blocks of output columns
// over the threads (bits independent of their number), float32 weights.
torch::Tensor tiled_kn_product(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, const Kernels& k) {
  const int64_t K = x.size(-1), N = weight.size(1);
  auto x2 = rows_of(x, K);
  const int64_t M = x2.size(0), ldx = x2.stride(0);
  auto y = torch::empty({M, N}, x.options());
  const float *xp = x2.data_ptr<float>(), *wp = weight.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t whole = N / k.lanes * k.lanes, block = (k.lanes >= 16 ? 4 : 2) * k.lanes;  // kTiledVectors
  at::parallel_for(0, (whole + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
    k.kn_tiled(xp, ldx, M, wp, N, K, bp, yp, N, begin * block, std::min(whole, end * block));
  });
  if (whole < N) edge_columns(xp, ldx, M, wp, N, K, /*w_is_kn=*/true, bp, yp, N, whole, N);
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  return y.view(out_shape);
}

// The small-row product with `weight`, or with its decoding copy when the thread has one (at most
// kMaxSmallRows rows; more read the float32 weight).
torch::Tensor small_product(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, bool kn) {
  const Kernels& k = kernels_for(kernel_isa());
  if (x.numel() / x.size(-1) > kMaxSmallRows) {
    if (kn) return tiled_kn_product(x, weight, bias, k);
    return small_product(x, weight.data_ptr<float>(), weight.size(0), bias, /*kn=*/false, k.f32, k.lanes, k.nk_cols);
  }
  const int64_t N = kn ? weight.size(1) : weight.size(0);
  const torch::Tensor copy = current_decode_weights ? current_decode_weights->find(weight) : torch::Tensor();
  if (copy.defined())  // [N, K] whatever the weight's layout
    return small_product(x, reinterpret_cast<const Bf16*>(copy.data_ptr<at::BFloat16>()), N, bias, /*kn=*/false, k.bf16, k.lanes,
                         k.nk_cols);
  return small_product(x, weight.data_ptr<float>(), N, bias, kn, k.f32, k.lanes, k.nk_cols);
}

// Whether x · weight (+ bias) can take keel's kernels with at most max_rows rows of x.
bool takes_kernels(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, int64_t max_rows) {
  // The generic build (SSE, NEON) is not faster than OpenBLAS's own kernels: it runs only when a
  // test limits a better CPU to it.
  if (kernel_isa() == KernelIsa::kGeneric && best_kernel_isa() == KernelIsa::kGeneric) return false;
  if (!x.defined() || x.dim() < 1 || x.device().type() != torch::kCPU || x.scalar_type() != torch::kFloat32) return false;
  if (weight.scalar_type() != torch::kFloat32 || weight.dim() != 2 || !weight.is_contiguous() || !weight.device().is_cpu())
    return false;
  if (bias.defined() &&
      (bias.scalar_type() != torch::kFloat32 || !bias.is_contiguous() || !bias.device().is_cpu() || bias.dim() != 1))
    return false;
  if (x.numel() / std::max<int64_t>(1, x.size(-1)) > max_rows || x.numel() == 0) return false;
  // Autograd needs LibTorch's ops; decoding runs in inference mode or without grad.
  if (torch::autograd::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad())))
    return false;
  return true;
}

}  // namespace

void DecodeWeights::refresh(const std::vector<torch::Tensor>& nk, const std::vector<torch::Tensor>& kn) {
  torch::NoGradGuard no_grad;
  std::unordered_map<const void*, Copy> copies;
  for (const auto* list : {&nk, &kn})
    for (const auto& w : *list) {
      KEEL_CHECK(w.dim() == 2 && w.scalar_type() == torch::kFloat32 && w.device().is_cpu(),
                 "decoding copies are made of float32 CPU weight matrices, got " << w.sizes() << " " << w.scalar_type());
      const auto nk_view = list == &kn ? w.detach().t() : w.detach();
      copies[w.unsafeGetTensorImpl()] = {w, nk_view.to(torch::kBFloat16).contiguous()};
    }
  copies_ = std::move(copies);
}

torch::Tensor DecodeWeights::find(const torch::Tensor& weight) const {
  const auto it = copies_.find(weight.unsafeGetTensorImpl());
  return it == copies_.end() ? torch::Tensor() : it->second.copy;
}

int64_t DecodeWeights::bytes() const {
  int64_t b = 0;
  for (const auto& [key, c] : copies_) b += static_cast<int64_t>(c.copy.nbytes());
  return b;
}

DecodeWeightsScope::DecodeWeightsScope(const DecodeWeights* w) : previous_(current_decode_weights) { current_decode_weights = w; }
DecodeWeightsScope::~DecodeWeightsScope() { current_decode_weights = previous_; }

bool uses_small_kernel(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return takes_kernels(x, weight, bias, kMaxSmallRows);
}
bool uses_tiled_kernel(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return x.defined() && x.dim() >= 1 && x.numel() / std::max<int64_t>(1, x.size(-1)) > kMaxSmallRows &&
         takes_kernels(x, weight, bias, kMaxTiledRows);
}

torch::Tensor linear_nk(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  KEEL_CHECK(x.size(-1) == weight.size(1),
             "linear: input width " << x.size(-1) << " != weight [" << weight.size(0) << ", " << weight.size(1) << "] columns");
  // A bias of another length is left to LibTorch, which names the mismatch.
  if ((uses_small_kernel(x, weight, bias) || uses_tiled_kernel(x, weight, bias)) &&
      (!bias.defined() || bias.size(0) == weight.size(0)))
    return small_product(x, weight, bias, /*kn=*/false);
  return F::linear(x, weight, bias);
}

bool linear_nk_group_applies(const torch::Tensor& x, const std::vector<torch::Tensor>& weights) {
  for (const auto& w : weights) {
    KEEL_CHECK(w.dim() == 2 && x.size(-1) == w.size(1),
               "linear: input width " << x.size(-1) << " != weight " << w.sizes() << " columns");
    if (!uses_small_kernel(x, w, {})) return false;
  }
  return true;
}

void linear_nk_group_into(const float* x, int64_t M, int64_t ldx, int64_t K, const std::vector<torch::Tensor>& weights,
                          const std::vector<float*>& ys) {
  KEEL_CHECK(ys.size() == weights.size() && M <= kMaxSmallRows,
             "linear_nk_group_into: one output per weight, at most " << kMaxSmallRows << " rows");
  for (const auto& w : weights)
    KEEL_CHECK(w.dim() == 2 && w.size(1) == K && w.is_contiguous() && w.scalar_type() == torch::kFloat32,
               "linear_nk_group_into: weights [N, " << K << "] contiguous float32, got " << w.sizes());
  // The weights' decoding copies, all or none: one pass reads one element type.
  std::vector<torch::Tensor> copies;
  for (const auto& w : weights)
    if (current_decode_weights)
      if (auto c = current_decode_weights->find(w); c.defined()) copies.push_back(c);
  const Kernels& k = kernels_for(kernel_isa());
  if (copies.empty()) {
    std::vector<NkOperand<float>> ops;
    for (size_t i = 0; i < weights.size(); ++i) ops.push_back({weights[i].data_ptr<float>(), nullptr, ys[i], weights[i].size(0)});
    nk_products(x, ldx, M, K, ops, k.f32, k.nk_cols);
  } else if (copies.size() == weights.size()) {
    std::vector<NkOperand<Bf16>> ops;
    for (size_t i = 0; i < weights.size(); ++i)
      ops.push_back({reinterpret_cast<const Bf16*>(copies[i].data_ptr<at::BFloat16>()), nullptr, ys[i], weights[i].size(0)});
    nk_products(x, ldx, M, K, ops, k.bf16, k.nk_cols);
  } else {  // some with copies, some without: one pass each
    for (size_t i = 0; i < weights.size(); ++i) linear_nk_group_into(x, M, ldx, K, {weights[i]}, {ys[i]});
  }
}

std::vector<torch::Tensor> linear_nk_group(const torch::Tensor& x, const std::vector<torch::Tensor>& weights) {
  std::vector<torch::Tensor> ys;
  if (!linear_nk_group_applies(x, weights)) {
    for (const auto& w : weights) ys.push_back(linear_nk(x, w));
    return ys;
  }
  const int64_t K = x.size(-1);
  auto x2 = rows_of(x, K);
  std::vector<float*> outs;
  for (const auto& w : weights) {
    ys.push_back(torch::empty({x2.size(0), w.size(0)}, x.options()));
    outs.push_back(ys.back().data_ptr<float>());
  }
  linear_nk_group_into(x2.data_ptr<float>(), x2.size(0), x2.stride(0), K, weights, outs);
  auto shape = x.sizes().vec();
  for (auto& y : ys) {
    shape.back() = y.size(1);
    y = y.view(shape);
  }
  return ys;
}

torch::Tensor linear_kn(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  KEEL_CHECK(x.size(-1) == weight.size(0),
             "linear: input width " << x.size(-1) << " != weight [" << weight.size(0) << ", " << weight.size(1) << "] rows");
  if ((uses_small_kernel(x, weight, bias) || uses_tiled_kernel(x, weight, bias)) &&
      (!bias.defined() || bias.size(0) == weight.size(1)))
    return small_product(x, weight, bias, /*kn=*/true);
  // One fused addmm over the flattened tokens instead of a matmul and an add.
  auto x2 = x.reshape({-1, x.size(-1)});
  auto y = bias.defined() ? torch::addmm(bias, x2, weight) : torch::mm(x2, weight);
  auto shape = x.sizes().vec();
  shape.back() = weight.size(1);
  return y.view(shape);
}

}  // namespace keel
