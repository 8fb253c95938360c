#include "core/decode_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/kernel_isa.h"

// The kernels pass vectors between inlined helpers only; no ABI crosses a library boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace keel {

namespace {

// 16 independent partial sums: the compiler vectorises them for the function's instruction set.
inline __attribute__((always_inline)) float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

// scores[bh, s] = scale * q·k_s + bias[b, s] for heads [begin, end).
inline __attribute__((always_inline)) void scores_body(const DecodeHeads& a, float* scores, int64_t begin, int64_t end) {
  for (int64_t bh = begin; bh < end; ++bh) {
    const int64_t b = bh / a.H, h = bh % a.H, kv = h / a.rep;
    const float* q = a.q + b * a.q_b + h * a.q_h;
    const float* k = a.k + b * a.k_b + kv * a.k_h;
    const float* bias = a.bias + b * a.bias_b;
    float* out = scores + bh * a.S;
    for (int64_t s = 0; s < a.S; ++s) out[s] = a.scale * dot(q, k + s * a.k_s, a.hd) + bias[s];
  }
}

// out[bh, :] = sum_s probs[bh, s] v_s for heads [begin, end); out is [B, 1, H, hd].
inline __attribute__((always_inline)) void values_body(const DecodeHeads& a, const float* probs, float* out, int64_t begin,
                                                       int64_t end) {
  for (int64_t bh = begin; bh < end; ++bh) {
    const int64_t b = bh / a.H, h = bh % a.H, kv = h / a.rep;
    const float* v = a.v + b * a.v_b + kv * a.v_h;
    const float* p = probs + bh * a.S;
    float* o = out + bh * a.hd;
    std::fill(o, o + a.hd, 0.0f);
    for (int64_t s = 0; s < a.S; ++s) {
      const float ps = p[s];
      if (ps == 0.0f) continue;  // masked (padding) slots
      const float* vs = v + s * a.v_s;
      for (int64_t d = 0; d < a.hd; ++d) o[d] += ps * vs[d];
    }
  }
}

// Vectors of L floats and of L 32-bit integers (an alias template cannot carry vector_size).
template <int L>
struct VectorsOf;
template <>
struct VectorsOf<16> {
  typedef float floats __attribute__((vector_size(64)));
  typedef int32_t ints __attribute__((vector_size(64)));
};
template <>
struct VectorsOf<8> {
  typedef float floats __attribute__((vector_size(32)));
  typedef int32_t ints __attribute__((vector_size(32)));
};
template <>
struct VectorsOf<4> {
  typedef float floats __attribute__((vector_size(16)));
  typedef int32_t ints __attribute__((vector_size(16)));
};
template <int L>
using Floats = typename VectorsOf<L>::floats;
template <int L>
using Ints = typename VectorsOf<L>::ints;

// exp(x) for x <= 0 (scores less their row's maximum), L at a time (glibc's expf, called per
// score, would cost more than the scores' dot products at spans of hundreds): 2^n p(r) for
// x = n ln2 + r, p Cephes' polynomial (relative error ~2e-7); 0 below -87, where float32's exp
// underflows, so that masked slots weigh nothing.
template <int L>
inline __attribute__((always_inline)) Floats<L> exp_nonpositive(Floats<L> x) {
  const Floats<L> c = x < -87.0f ? Floats<L>{} - 87.0f : x;
  const Floats<L> n = (c * 1.44269504f + 12582912.0f) - 12582912.0f;  // rounded to nearest: 1.5 * 2^23
  const Floats<L> r = c - n * 0.693359375f + n * 2.12194440e-4f;
  Floats<L> p = 1.9875691500e-4f * r + 1.3981999507e-3f;
  p = ((p * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r + 1.6666665459e-1f;
  p = (p * r + 5.0000001201e-1f) * r * r + r + 1.0f;
  const Ints<L> bits = (__builtin_convertvector(n, Ints<L>) + 127) << 23;
  Floats<L> scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return x < -87.0f ? Floats<L>{} : p * scale;
}

// In place for rows [begin, end) of scores [., S]: row = exp(row - max) / sum, as torch::softmax.
template <int L>
inline __attribute__((always_inline)) void softmax_body(float* scores, int64_t S, int64_t begin, int64_t end) {
  for (int64_t bh = begin; bh < end; ++bh) {
    float* row = scores + bh * S;
    const float m = *std::max_element(row, row + S);
    Floats<L> sums{};
    for (int64_t i = 0; i < S; i += L) {
      const int64_t n = std::min<int64_t>(L, S - i);
      Floats<L> v = Floats<L>{} - 1e30f;  // lanes past the row's end: exp 0
      __builtin_memcpy(&v, row + i, static_cast<size_t>(n) * sizeof(float));
      v = exp_nonpositive<L>(v - m);
      sums += v;
      __builtin_memcpy(row + i, &v, static_cast<size_t>(n) * sizeof(float));
    }
    float sum = 0.0f;
    for (int j = 0; j < L; ++j) sum += sums[j];
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < S; ++i) row[i] *= inv;
  }
}

#define KEEL_ATTENTION_KERNELS(SUFFIX, TARGET, L)                                                                 \
  TARGET void scores_##SUFFIX(const DecodeHeads& a, float* scores, int64_t begin, int64_t end) {                  \
    scores_body(a, scores, begin, end);                                                                           \
  }                                                                                                               \
  TARGET void values_##SUFFIX(const DecodeHeads& a, const float* probs, float* out, int64_t begin, int64_t end) { \
    values_body(a, probs, out, begin, end);                                                                       \
  }                                                                                                               \
  TARGET void softmax_##SUFFIX(float* scores, int64_t S, int64_t begin, int64_t end) { softmax_body<L>(scores, S, begin, end); }
#if defined(__x86_64__)
KEEL_ATTENTION_KERNELS(avx512, __attribute__((target("avx512f,fma"))), 16)
KEEL_ATTENTION_KERNELS(avx2, __attribute__((target("avx2,fma"))), 8)
#endif
KEEL_ATTENTION_KERNELS(generic, , 4)
#undef KEEL_ATTENTION_KERNELS

using ScoresFn = void (*)(const DecodeHeads&, float*, int64_t, int64_t);
using ValuesFn = void (*)(const DecodeHeads&, const float*, float*, int64_t, int64_t);
using SoftmaxFn = void (*)(float*, int64_t, int64_t, int64_t);
struct AttentionKernels {
  ScoresFn scores;
  ValuesFn values;
  SoftmaxFn softmax;
};

AttentionKernels kernels_for(KernelIsa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case KernelIsa::kAvx512:
      return {scores_avx512, values_avx512, softmax_avx512};
    case KernelIsa::kAvx2:
      return {scores_avx2, values_avx2, softmax_avx2};
#endif
    default:
      return {scores_generic, values_generic, softmax_generic};
  }
}

bool cpu_float(const torch::Tensor& t) { return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32; }

}  // namespace

bool decode_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& bias) {
  if (!cpu_float(q) || !cpu_float(k) || !cpu_float(v) || !cpu_float(bias)) return false;
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || bias.dim() != 4) return false;
  const int64_t B = q.size(0), H = q.size(1), S = k.size(2), hd = q.size(3), KV = k.size(1);
  if (q.size(2) != 1 || KV == 0 || H % KV != 0 || k.size(0) != B || k.size(3) != hd || !v.sizes().equals(k.sizes())) return false;
  if (bias.size(0) != B || bias.size(1) != 1 || bias.size(2) != 1 || bias.size(3) != S) return false;
  if (q.stride(3) != 1 || k.stride(3) != 1 || v.stride(3) != 1 || bias.stride(3) != 1) return false;
  if (torch::autograd::GradMode::is_enabled() &&
      (q.requires_grad() || k.requires_grad() || v.requires_grad() || bias.requires_grad()))
    return false;
  return S > 0;
}

torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& bias) {
  KEEL_CHECK(decode_attention_applies(q, k, v, bias),
             "decode_attention: needs CPU float32 q [B, H, 1, hd], k and v [B, KV, S, hd], bias [B, 1, 1, S]");
  const int64_t B = q.size(0), H = q.size(1), S = k.size(2), hd = q.size(3);
  const DecodeHeads a{q.data_ptr<float>(),
                      k.data_ptr<float>(),
                      v.data_ptr<float>(),
                      bias.data_ptr<float>(),
                      q.stride(0),
                      q.stride(1),
                      k.stride(0),
                      k.stride(1),
                      k.stride(2),
                      v.stride(0),
                      v.stride(1),
                      v.stride(2),
                      bias.stride(0),
                      B,
                      H,
                      H / k.size(1),
                      S,
                      hd,
                      static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)))};
  auto scores = torch::empty({B * H, S}, q.options());
  auto out = torch::empty({B, 1, H, hd}, q.options());
  decode_attention_into(a, scores.data_ptr<float>(), out.data_ptr<float>());
  return out.transpose(1, 2);  // [B, H, 1, hd], a view whose transpose back is contiguous
}

void decode_attention_into(const DecodeHeads& a, float* scores, float* out) {
  const AttentionKernels kernels = kernels_for(kernel_isa());
  // Enough work per task (~32k multiply-adds) that handing heads to another thread pays.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, a.S * a.hd));
  at::parallel_for(0, a.B * a.H, grain, [&](int64_t begin, int64_t end) {
    kernels.scores(a, scores, begin, end);
    kernels.softmax(scores, a.S, begin, end);
    kernels.values(a, scores, out, begin, end);
  });
}

}  // namespace keel
