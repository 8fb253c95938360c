#include "core/llama_decode_block.h"

#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/decode_attention.h"
#include "core/decode_ops.h"
#include "core/error.h"
#include "core/linear.h"
#include "core/linear_group.h"

namespace keel {
namespace {

std::atomic<int64_t> blocks_run{0};

bool cpu_float_contiguous(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous() &&
         !(torch::autograd::GradMode::is_enabled() && t.requires_grad());
}

// A step's sizes: rows, model width, query and kv heads, head width, MLP width, attended slots.
struct Dims {
  int64_t B, d, H, KV, hd, ff, span;
};

Dims dims_of(const torch::Tensor& x, const LlamaBlockWeights& w, const DecodeSlots& s) {
  return {x.size(0), x.size(2), w.heads, w.kv_heads, s.cos.size(3), w.gate.size(0), s.span};
}

bool weights_fit(const torch::Tensor& x, const LlamaBlockWeights& w, const Dims& n) {
  const int64_t q = n.H * n.hd, kv = n.KV * n.hd;
  // Shapes in arrays, not vectors: this check runs every layer of every step.
  const std::pair<const torch::Tensor*, std::array<int64_t, 2>> shapes[] = {
      {&w.q, {q, n.d}},       {&w.k, {kv, n.d}},    {&w.v, {kv, n.d}},      {&w.o, {n.d, q}},
      {&w.gate, {n.ff, n.d}}, {&w.up, {n.ff, n.d}}, {&w.down, {n.d, n.ff}},
  };
  for (const auto& [t, sizes] : shapes)
    if (!t->defined() || !t->sizes().equals(torch::IntArrayRef(sizes)) || !uses_small_kernel(x, *t, {})) return false;
  for (const auto* norm : {&w.input_norm, &w.post_norm})
    if (!cpu_float_contiguous(*norm) || !norm->sizes().equals({n.d})) return false;
  return true;
}

bool slots_fit(const DecodeSlots& s, const Dims& n) {
  for (const auto* c : {&s.k_cache, &s.v_cache})
    if (!cpu_float_contiguous(*c) || c->dim() != 4 || c->size(0) != n.B || c->size(1) != n.KV || c->size(3) != n.hd ||
        c->size(2) < n.span)
      return false;
  if (!s.v_cache.sizes().equals(s.k_cache.sizes())) return false;  // one capacity addresses both
  if (!cpu_float_contiguous(s.bias) || !s.bias.sizes().equals({n.B, 1, 1, n.span})) return false;
  if (!cpu_float_contiguous(s.sin) || !s.sin.sizes().equals({n.B, 1, 1, n.hd})) return false;
  if (static_cast<int64_t>(s.write.size()) != n.B) return false;
  for (const int64_t slot : s.write)
    if (slot < 0 || slot >= n.span) return false;
  return true;
}

// The step's intermediate rows, carved from one allocation.
struct Buffers {
  float *hs, *q, *k, *v, *attn, *scores, *gate, *up;
};

// Floats of each part of Buffers, in its order, rounded up to whole 64-byte lines.
std::array<int64_t, 8> part_floats(const Dims& n) {
  std::array<int64_t, 8> f = {n.d, n.H * n.hd, n.KV * n.hd, n.KV * n.hd, n.H * n.hd, n.H * n.span, n.ff, n.ff};
  for (auto& x : f) x = (n.B * x + 15) / 16 * 16;
  return f;
}

Buffers carve(float* p, const Dims& n) {
  Buffers b{};
  float** parts[] = {&b.hs, &b.q, &b.k, &b.v, &b.attn, &b.scores, &b.gate, &b.up};
  const auto floats = part_floats(n);
  for (size_t i = 0; i < floats.size(); ++i) {
    *parts[i] = p;
    p += floats[i];
  }
  return b;
}

// Row b's new key and value [KV, hd] into slot write[b] of its cache row [KV, capacity, hd].
void write_slots(const Buffers& b, const DecodeSlots& s, const Dims& n) {
  const int64_t cap = s.k_cache.size(2);
  float* kc = s.k_cache.data_ptr<float>();
  float* vc = s.v_cache.data_ptr<float>();
  for (int64_t r = 0; r < n.B; ++r)
    for (int64_t h = 0; h < n.KV; ++h) {
      const int64_t at = ((r * n.KV + h) * cap + s.write[static_cast<size_t>(r)]) * n.hd, from = (r * n.KV + h) * n.hd;
      std::memcpy(kc + at, b.k + from, static_cast<size_t>(n.hd) * sizeof(float));
      std::memcpy(vc + at, b.v + from, static_cast<size_t>(n.hd) * sizeof(float));
    }
}

DecodeHeads heads_of(const Buffers& b, const DecodeSlots& s, const Dims& n) {
  const int64_t cap = s.k_cache.size(2);
  DecodeHeads a{};
  a.q = b.q, a.k = s.k_cache.data_ptr<float>(), a.v = s.v_cache.data_ptr<float>(), a.bias = s.bias.data_ptr<float>();
  a.q_b = n.H * n.hd, a.q_h = n.hd;
  a.k_b = a.v_b = n.KV * cap * n.hd, a.k_h = a.v_h = cap * n.hd, a.k_s = a.v_s = n.hd;
  a.bias_b = n.span;
  a.B = n.B, a.H = n.H, a.rep = n.H / n.KV, a.S = n.span, a.hd = n.hd;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n.hd)));
  return a;
}

// out = x + o(attention(rotary(q, k, v products of rms_norm(x)))), the new key and value cached.
void attention_half(const float* x, const LlamaBlockWeights& w, const DecodeSlots& s, const Dims& n, const Buffers& b,
                    float* out) {
  rms_norm_into(x, n.B, n.d, w.input_norm.data_ptr<float>(), w.eps, b.hs);
  linear_nk_group_into(b.hs, n.B, n.d, n.d, {w.q, w.k, w.v}, {b.q, b.k, b.v});
  rotary_into(b.q, n.B, n.H, n.hd, s.cos.data_ptr<float>(), s.sin.data_ptr<float>());
  rotary_into(b.k, n.B, n.KV, n.hd, s.cos.data_ptr<float>(), s.sin.data_ptr<float>());
  write_slots(b, s, n);
  decode_attention_into(heads_of(b, s, n), b.scores, b.attn);
  linear_nk_group_into(b.attn, n.B, n.H * n.hd, n.H * n.hd, {w.o}, {out});
  for (int64_t i = 0; i < n.B * n.d; ++i) out[i] = x[i] + out[i];
}

// out += down(silu(gate) * up) of rms_norm(out).
void mlp_half(const LlamaBlockWeights& w, const Dims& n, const Buffers& b, float* out) {
  rms_norm_into(out, n.B, n.d, w.post_norm.data_ptr<float>(), w.eps, b.hs);
  linear_nk_group_into(b.hs, n.B, n.d, n.d, {w.gate, w.up}, {b.gate, b.up});
  for (int64_t i = 0; i < n.B * n.ff; ++i) {
    const float g = b.gate[i];
    b.gate[i] = g / (1.0f + std::exp(-g)) * b.up[i];
  }
  linear_nk_group_into(b.gate, n.B, n.ff, n.ff, {w.down}, {b.hs});
  for (int64_t i = 0; i < n.B * n.d; ++i) out[i] = out[i] + b.hs[i];
}

}  // namespace

bool llama_decode_block_applies(const torch::Tensor& x, const LlamaBlockWeights& w, const DecodeSlots& s) {
  if (!cpu_float_contiguous(x) || x.dim() != 3 || x.size(1) != 1 || x.size(0) < 1 || x.size(0) > kMaxSmallRows) return false;
  if (w.heads <= 0 || w.kv_heads <= 0 || w.heads % w.kv_heads != 0 || !w.gate.defined() || s.span < 1) return false;
  if (!cpu_float_contiguous(s.cos) || s.cos.dim() != 4 || s.cos.size(3) % 2 != 0) return false;
  const Dims n = dims_of(x, w, s);
  return s.cos.sizes().equals({n.B, 1, 1, n.hd}) && weights_fit(x, w, n) && slots_fit(s, n);
}

torch::Tensor llama_decode_block(const torch::Tensor& x, const LlamaBlockWeights& w, const DecodeSlots& s) {
  KEEL_CHECK(llama_decode_block_applies(x, w, s),
             "llama_decode_block: needs CPU float32 x [B <= " << kMaxSmallRows
                                                              << ", 1, d], the block's weights, its cache "
                                                                 "[B, KV, capacity, hd] and slots below the span");
  const Dims n = dims_of(x, w, s);
  const auto floats = part_floats(n);
  auto scratch = torch::empty({std::accumulate(floats.begin(), floats.end(), int64_t{0})}, x.options());
  const Buffers b = carve(scratch.data_ptr<float>(), n);
  auto out = torch::empty_like(x);
  attention_half(x.data_ptr<float>(), w, s, n, b, out.data_ptr<float>());
  mlp_half(w, n, b, out.data_ptr<float>());
  blocks_run.fetch_add(1, std::memory_order_relaxed);
  return out;
}

int64_t llama_decode_blocks_run() { return blocks_run.load(std::memory_order_relaxed); }

}  // namespace keel
