// The fused GPT-2 decoding block (core/gpt2_decode_block.h) against the block's formula written
// with LibTorch's own ops (layer_norm, matmul with the Conv1D weights, softmax, tanh GELU):
// outputs and the cache slots it writes, with float32 weights and with bfloat16 decoding copies,
// one row or several rows at their own slots; the inputs it must turn away; and a GPT-2 model's
// decoding steps taking it.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "core/gpt2_decode_block.h"
#include "core/linear.h"
#include "core/transformer.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace F = torch::nn::functional;

struct Gpt2Case {
  int64_t B, d, H, ff, capacity, span;
  std::vector<int64_t> write;  // each row's slot
};

// Random weights at the scale training keeps activations near 1: entries ~ N(0, 1/K), biases and
// norms away from their initial 0 and 1 so that a bias or norm left out shows.
Gpt2BlockWeights random_weights(const Gpt2Case& c) {
  auto m = [](int64_t k, int64_t n) { return torch::randn({k, n}) / std::sqrt(static_cast<double>(k)); };
  auto v = [](int64_t n) { return 0.1 * torch::randn({n}); };
  Gpt2BlockWeights w;
  w.ln_1_weight = 1 + v(c.d), w.ln_1_bias = v(c.d), w.ln_2_weight = 1 + v(c.d), w.ln_2_bias = v(c.d);
  w.attn = m(c.d, 3 * c.d), w.attn_bias = v(3 * c.d), w.attn_proj = m(c.d, c.d), w.attn_proj_bias = v(c.d);
  w.fc = m(c.d, c.ff), w.fc_bias = v(c.ff), w.mlp_proj = m(c.ff, c.d), w.mlp_proj_bias = v(c.d);
  w.eps = 1e-5;
  w.heads = c.H;
  return w;
}

// Caches with earlier keys and values in place, row b attending to its slots 0..write[b] (later
// slots of the span masked, as shorter rows of a per-row cache are).
DecodeSlots random_slots(const Gpt2Case& c) {
  DecodeSlots s;
  s.k_cache = torch::randn({c.B, c.H, c.capacity, c.d / c.H});
  s.v_cache = torch::randn({c.B, c.H, c.capacity, c.d / c.H});
  s.write = c.write;
  s.span = c.span;
  s.bias = torch::zeros({c.B, 1, 1, c.span});
  for (int64_t b = 0; b < c.B; ++b) {
    const int64_t slot = c.write[static_cast<size_t>(b)];
    if (slot + 1 < c.span) s.bias[b].narrow(-1, slot + 1, c.span - slot - 1).fill_(-1e9);
  }
  return s;
}

// The block with LibTorch's ops on copies of the caches (`k_cache`, `v_cache` receive the writes).
torch::Tensor reference_block(const torch::Tensor& x, const Gpt2BlockWeights& w, const DecodeSlots& s, torch::Tensor& k_cache,
                              torch::Tensor& v_cache) {
  const int64_t B = x.size(0), d = x.size(2), H = w.heads, hd = d / H;
  auto ln = [&](const torch::Tensor& t, const torch::Tensor& g, const torch::Tensor& b) {
    return torch::layer_norm(t, {d}, g, b, w.eps);
  };
  auto qkv = torch::addmm(w.attn_bias, ln(x, w.ln_1_weight, w.ln_1_bias).view({B, d}), w.attn);
  auto q = qkv.narrow(1, 0, d).reshape({B, H, hd}), k = qkv.narrow(1, d, d).reshape({B, H, hd});
  auto v = qkv.narrow(1, 2 * d, d).reshape({B, H, hd});
  for (int64_t b = 0; b < B; ++b) {
    k_cache[b].select(1, s.write[static_cast<size_t>(b)]).copy_(k[b]);
    v_cache[b].select(1, s.write[static_cast<size_t>(b)]).copy_(v[b]);
  }
  auto keys = k_cache.narrow(2, 0, s.span), values = v_cache.narrow(2, 0, s.span);  // [B, H, span, hd]
  auto scores = torch::matmul(q.unsqueeze(2), keys.transpose(-1, -2)).squeeze(2) / std::sqrt(static_cast<double>(hd)) +
                s.bias.view({B, 1, s.span});
  auto a = torch::matmul(torch::softmax(scores, -1).unsqueeze(2), values).squeeze(2).reshape({B, d});
  auto x1 = x.view({B, d}) + torch::addmm(w.attn_proj_bias, a, w.attn_proj);
  auto h = torch::gelu(torch::addmm(w.fc_bias, ln(x1, w.ln_2_weight, w.ln_2_bias), w.fc), "tanh");
  return (x1 + torch::addmm(w.mlp_proj_bias, h, w.mlp_proj)).view({B, 1, d});
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// One row; several rows at their own slots, with widths (d, 3d, ff) that are no multiple of
// either instruction set's vector (edge columns, an odd head width); the row limit.
const Gpt2Case kCases[] = {
    {1, 64, 4, 256, 12, 7, {6}}, {3, 36, 4, 68, 10, 7, {2, 6, 4}}, {kMaxSmallRows, 28, 4, 44, 5, 5, {4, 0, 1, 2, 3, 4, 4, 1}}};

class FusedGpt2Block : public ::testing::TestWithParam<bool> {};  // with bfloat16 decoding copies or not

TEST_P(FusedGpt2Block, EqualsTheBlocksLibTorchOpsAndWritesTheSameCacheSlots) {
  torch::NoGradGuard no_grad;
  const bool bf16 = GetParam();
  torch::manual_seed(7);
  for (const auto& c : kCases) {
    const auto w = random_weights(c);
    const auto s = random_slots(c);
    const auto x = torch::randn({c.B, 1, c.d});
    DecodeWeights copies;
    if (bf16) copies.refresh({}, {w.attn, w.attn_proj, w.fc, w.mlp_proj});
    // The reference multiplies by the weights the kernels read: rounded to bfloat16 when copies are in scope.
    Gpt2BlockWeights read = w;
    if (bf16)
      for (auto* t : {&read.attn, &read.attn_proj, &read.fc, &read.mlp_proj}) *t = t->to(torch::kBFloat16).to(torch::kFloat32);
    auto k_ref = s.k_cache.clone(), v_ref = s.v_cache.clone();
    const auto expected = reference_block(x, read, s, k_ref, v_ref);
    DecodeWeightsScope scope(bf16 ? &copies : nullptr);
    ASSERT_TRUE(gpt2_decode_block_applies(x, w, s)) << c.B << " rows";
    const auto got = gpt2_decode_block(x, w, s);
    EXPECT_LT(max_diff(got, expected), 2e-5) << c.B << " rows, d " << c.d;
    EXPECT_LT(max_diff(s.k_cache, k_ref), 2e-6) << c.B << " rows";
    EXPECT_LT(max_diff(s.v_cache, v_ref), 2e-6) << c.B << " rows";
  }
}

INSTANTIATE_TEST_SUITE_P(Weights, FusedGpt2Block, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? std::string("Bfloat16Copies") : std::string("Float32"); });

TEST(FusedGpt2BlockInputs, TurnsAwayWhatItDoesNotComputeAndNamesIt) {
  torch::NoGradGuard no_grad;
  const Gpt2Case c{2, 32, 4, 48, 6, 4, {3, 1}};
  const auto w = random_weights(c);
  const auto s = random_slots(c);
  const auto x = torch::randn({c.B, 1, c.d});
  ASSERT_TRUE(gpt2_decode_block_applies(x, w, s));
  EXPECT_FALSE(gpt2_decode_block_applies(torch::randn({kMaxSmallRows + 1, 1, c.d}), w, s));  // rows beyond the limit
  EXPECT_FALSE(gpt2_decode_block_applies(torch::randn({c.B, 2, c.d}), w, s));                // two tokens a row
  EXPECT_FALSE(gpt2_decode_block_applies(x.to(torch::kFloat64), w, s));
  EXPECT_FALSE(gpt2_decode_block_applies(torch::randn({c.B, 1, 2 * c.d}).narrow(2, 0, c.d), w, s));  // rows at a stride
  auto beyond = s;
  beyond.write = {3, 4};  // a slot outside the span
  EXPECT_FALSE(gpt2_decode_block_applies(x, w, beyond));
  auto other_heads = w;
  other_heads.heads = 3;  // the width is not a multiple
  EXPECT_FALSE(gpt2_decode_block_applies(x, other_heads, s));
  auto no_bias = w;
  no_bias.fc_bias = torch::Tensor();
  EXPECT_FALSE(gpt2_decode_block_applies(x, no_bias, s));
  auto short_bias = w;
  short_bias.attn_bias = w.attn_bias.narrow(0, 0, 2 * c.d).contiguous();
  EXPECT_FALSE(gpt2_decode_block_applies(x, short_bias, s));
  auto transposed = w;
  transposed.attn_proj = w.attn_proj.t().contiguous().t();  // the right sizes, not contiguous
  EXPECT_FALSE(gpt2_decode_block_applies(x, transposed, s));
  auto wide_norm = w;
  wide_norm.ln_2_bias = torch::zeros({c.d + 1});
  EXPECT_FALSE(gpt2_decode_block_applies(x, wide_norm, s));
  auto narrow_cache = s;
  narrow_cache.k_cache = torch::zeros({c.B, c.H, 3, c.d / c.H});  // fewer slots than the span
  EXPECT_FALSE(gpt2_decode_block_applies(x, w, narrow_cache));
  auto one_slot = s;
  one_slot.write = {3};  // a slot for one of the two rows
  EXPECT_FALSE(gpt2_decode_block_applies(x, w, one_slot));
  auto grouped = s;  // key/value heads fewer than the query heads: GPT-2 has none
  grouped.k_cache = torch::zeros({c.B, 2, c.capacity, c.d / c.H}), grouped.v_cache = grouped.k_cache.clone();
  EXPECT_FALSE(gpt2_decode_block_applies(x, w, grouped));
  auto wide_mask = s;
  wide_mask.bias = torch::zeros({c.B, 1, 1, c.span + 1});
  EXPECT_FALSE(gpt2_decode_block_applies(x, w, wide_mask));
  try {
    gpt2_decode_block(torch::randn({kMaxSmallRows + 1, 1, c.d}), w, s);
    FAIL() << "a step of too many rows was computed";
  } catch (const KeelError& e) {
    EXPECT_NE(std::string(e.what()).find("gpt2_decode_block"), std::string::npos) << e.what();
  }
}

TEST(FusedGpt2BlockInputs, StaysOutOfAutograd) {
  const Gpt2Case c{1, 32, 4, 48, 6, 4, {3}};
  const auto w = random_weights(c);
  const auto s = random_slots(c);
  const auto x = torch::randn({c.B, 1, c.d});
  ASSERT_TRUE(gpt2_decode_block_applies(x, w, s));
  EXPECT_FALSE(gpt2_decode_block_applies(x.clone().requires_grad_(), w, s));
  auto trained = w;
  trained.fc = w.fc.clone().requires_grad_();  // a product autograd must follow
  EXPECT_FALSE(gpt2_decode_block_applies(x, trained, s));
  trained = w;
  trained.ln_2_weight = w.ln_2_weight.clone().requires_grad_();
  EXPECT_FALSE(gpt2_decode_block_applies(x, trained, s));
}

// A GPT-2 model's KV-cached decoding steps go through the fused block, one call a layer and step,
// and give the logits of the full recomputation.
TEST(FusedGpt2BlockInModel, EveryDecodingStepOfAGpt2ModelTakesItAndMatchesTheFullForward) {
  torch::NoGradGuard no_grad;
  auto m = test::lively_model(Family::kGpt2, 61, 32);
  const auto tokens = torch::randint(0, 61, {2, 8}, torch::kLong);
  auto cache = m->make_cache(2, 16);
  m->hidden({tokens.narrow(1, 0, 4), {}, {}, {}}, &cache);  // the prefill: plain ops
  const int64_t before = gpt2_decode_blocks_run();
  torch::Tensor last;
  for (int64_t t = 4; t < 8; ++t) last = m->hidden({tokens.narrow(1, t, 1), {}, {}, {}}, &cache);
  EXPECT_EQ(gpt2_decode_blocks_run() - before, 4 * m->config().n_layer);
  const auto full = m->hidden({tokens, {}, {}, {}}, nullptr).narrow(1, 7, 1);
  EXPECT_LT(max_diff(last, full), 1e-5);
}

}  // namespace
}  // namespace keel
