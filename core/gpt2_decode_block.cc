#include "core/gpt2_decode_block.h"

#include <array>
#include <atomic>
#include <tuple>

#include "core/decode_attention.h"
#include "core/decode_ops.h"
#include "core/error.h"
#include "core/linear.h"

namespace keel {
namespace {

std::atomic<int64_t> blocks_run{0};

// A step's sizes: rows, model width, heads, head width, MLP width, attended slots.
struct Dims {
  int64_t B, d, H, hd, ff, span;
};

Dims dims_of(const torch::Tensor& x, const Gpt2BlockWeights& w, const DecodeSlots& s) {
  const int64_t d = x.size(2);
  return {x.size(0), d, w.heads, d / w.heads, w.fc.size(1), s.span};
}

bool weights_fit(const torch::Tensor& x, const Gpt2BlockWeights& w, const Dims& n) {
  // Arrays, not vectors: this check runs every layer of every step.
  const std::tuple<const torch::Tensor*, const torch::Tensor*, int64_t, int64_t> products[] = {
      {&w.attn, &w.attn_bias, n.d, 3 * n.d},
      {&w.attn_proj, &w.attn_proj_bias, n.d, n.d},
      {&w.fc, &w.fc_bias, n.d, n.ff},
      {&w.mlp_proj, &w.mlp_proj_bias, n.ff, n.d}};
  for (const auto& [weight, bias, K, N] : products)
    if (!weight->defined() || !weight->sizes().equals({K, N}) || !bias->defined() || !bias->sizes().equals({N}) ||
        !uses_small_kernel(x, *weight, *bias))
      return false;
  if (!decode_ops_apply(n.B, {w.ln_1_weight, w.ln_1_bias, w.ln_2_weight, w.ln_2_bias})) return false;
  for (const auto* t : {&w.ln_1_weight, &w.ln_1_bias, &w.ln_2_weight, &w.ln_2_bias})
    if (!t->sizes().equals({n.d})) return false;
  return true;
}

// The step's intermediate rows.
struct Buffers {
  float *hs, *qkv, *attn, *scores, *fc;
};

Buffers carve(torch::Tensor& storage, const Dims& n) {
  const auto p = carve_scratch<5>(storage, {n.B * n.d, n.B * 3 * n.d, n.B * n.d, n.B * n.H * n.span, n.B * n.ff});
  return {p[0], p[1], p[2], p[3], p[4]};
}

const float* data(const torch::Tensor& t) { return t.data_ptr<float>(); }

// out = x + attn_proj(attention(q, k, v of attn(ln_1(x)))), the new key and value cached.
void attention_half(const float* x, const Gpt2BlockWeights& w, const DecodeSlots& s, const Dims& n, const Buffers& b,
                    float* out) {
  layer_norm_into(x, n.B, n.d, data(w.ln_1_weight), data(w.ln_1_bias), w.eps, b.hs);
  linear_kn_into(b.hs, n.B, n.d, w.attn, w.attn_bias, b.qkv);  // row r: q, k, v side by side
  write_decode_slots(s, b.qkv + n.d, b.qkv + 2 * n.d, 3 * n.d, n.B, n.H, n.hd);
  decode_attention_into(decode_heads(s, b.qkv, 3 * n.d, n.B, n.H, n.H, n.hd), b.scores, b.attn);
  linear_kn_into(b.attn, n.B, n.d, w.attn_proj, w.attn_proj_bias, out);
  for (int64_t i = 0; i < n.B * n.d; ++i) out[i] = x[i] + out[i];
}

// out += mlp_proj(gelu(fc(ln_2(out)))).
void mlp_half(const Gpt2BlockWeights& w, const Dims& n, const Buffers& b, float* out) {
  layer_norm_into(out, n.B, n.d, data(w.ln_2_weight), data(w.ln_2_bias), w.eps, b.hs);
  linear_kn_into(b.hs, n.B, n.d, w.fc, w.fc_bias, b.fc);
  // LibTorch's vectorised tanh: a scalar one for each of B ff elements cost more than the op's dispatch.
  auto fc = torch::from_blob(b.fc, {n.B * n.ff}, torch::kFloat32);
  at::gelu_(fc, "tanh");
  linear_kn_into(b.fc, n.B, n.ff, w.mlp_proj, w.mlp_proj_bias, b.hs);
  for (int64_t i = 0; i < n.B * n.d; ++i) out[i] = out[i] + b.hs[i];
}

}  // namespace

bool gpt2_decode_block_applies(const torch::Tensor& x, const Gpt2BlockWeights& w, const DecodeSlots& s) {
  if (!x.defined() || x.dim() != 3 || x.size(1) != 1 || x.size(0) < 1 || !decode_ops_apply(x.size(0), {x})) return false;
  if (w.heads <= 0 || x.size(2) % w.heads != 0 || !w.fc.defined() || w.fc.dim() != 2) return false;
  const Dims n = dims_of(x, w, s);
  return weights_fit(x, w, n) && decode_slots_fit(s, n.B, n.H, n.hd);
}

torch::Tensor gpt2_decode_block(const torch::Tensor& x, const Gpt2BlockWeights& w, const DecodeSlots& s) {
  KEEL_CHECK(gpt2_decode_block_applies(x, w, s),
             "gpt2_decode_block: needs CPU float32 x [B <= " << kMaxSmallRows
                                                             << ", 1, d], the block's weights, its cache "
                                                                "[B, heads, capacity, d / heads] and slots below the span");
  const Dims n = dims_of(x, w, s);
  torch::Tensor scratch;
  const Buffers b = carve(scratch, n);
  auto out = torch::empty_like(x);
  attention_half(x.data_ptr<float>(), w, s, n, b, out.data_ptr<float>());
  mlp_half(w, n, b, out.data_ptr<float>());
  blocks_run.fetch_add(1, std::memory_order_relaxed);
  return out;
}

int64_t gpt2_decode_blocks_run() { return blocks_run.load(std::memory_order_relaxed); }

}  // namespace keel
