#include "core/llama_decode_block.h"

#include <array>
#include <atomic>
#include <cmath>

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

// The step's intermediate rows.
struct Buffers {
  float *hs, *q, *k, *v, *attn, *scores, *gate, *up;
};

Buffers carve(torch::Tensor& storage, const Dims& n) {
  const int64_t q = n.B * n.H * n.hd, kv = n.B * n.KV * n.hd;
  const auto p = carve_scratch<8>(storage, {n.B * n.d, q, kv, kv, q, n.B * n.H * n.span, n.B * n.ff, n.B * n.ff});
  return {p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]};
}

// out = x + o(attention(rotary(q, k, v products of rms_norm(x)))), the new key and value cached.
void attention_half(const float* x, const LlamaBlockWeights& w, const DecodeSlots& s, const Dims& n, const Buffers& b,
                    float* out) {
  rms_norm_into(x, n.B, n.d, w.input_norm.data_ptr<float>(), w.eps, b.hs);
  linear_nk_group_into(b.hs, n.B, n.d, n.d, {w.q, w.k, w.v}, {b.q, b.k, b.v});
  rotary_into(b.q, n.B, n.H, n.hd, s.cos.data_ptr<float>(), s.sin.data_ptr<float>());
  rotary_into(b.k, n.B, n.KV, n.hd, s.cos.data_ptr<float>(), s.sin.data_ptr<float>());
  write_decode_slots(s, b.k, b.v, n.KV * n.hd, n.B, n.KV, n.hd);
  decode_attention_into(decode_heads(s, b.q, n.H * n.hd, n.B, n.H, n.KV, n.hd), b.scores, b.attn);
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
  if (!cpu_float_contiguous(s.sin) || !s.sin.sizes().equals(s.cos.sizes())) return false;  // read as cos is
  const Dims n = dims_of(x, w, s);
  return s.cos.sizes().equals({n.B, 1, 1, n.hd}) && weights_fit(x, w, n) && decode_slots_fit(s, n.B, n.KV, n.hd);
}

torch::Tensor llama_decode_block(const torch::Tensor& x, const LlamaBlockWeights& w, const DecodeSlots& s) {
  KEEL_CHECK(llama_decode_block_applies(x, w, s),
             "llama_decode_block: needs CPU float32 x [B <= " << kMaxSmallRows
                                                              << ", 1, d], the block's weights, its cache "
                                                                 "[B, KV, capacity, hd] and slots below the span");
  const Dims n = dims_of(x, w, s);
  torch::Tensor scratch;
  const Buffers b = carve(scratch, n);
  auto out = torch::empty_like(x);
  attention_half(x.data_ptr<float>(), w, s, n, b, out.data_ptr<float>());
  mlp_half(w, n, b, out.data_ptr<float>());
  blocks_run.fetch_add(1, std::memory_order_relaxed);
  return out;
}

int64_t llama_decode_blocks_run() { return blocks_run.load(std::memory_order_relaxed); }

}  // namespace keel
