// The fused Llama decoding block (core/llama_decode_block.h) against the block's formula written
// with LibTorch's own ops (F::linear, softmax, repeat_interleave for grouped-query attention):
// outputs and the cache slots it writes, with float32 weights and with bfloat16 decoding copies,
// one row or several rows at their own slots; and the inputs it must turn away.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "core/linear.h"
#include "core/llama_decode_block.h"
#include "core/transformer.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace F = torch::nn::functional;

struct BlockCase {
  int64_t B, d, H, KV, hd, ff, capacity, span;
  std::vector<int64_t> write;  // each row's slot
};

// Random weights at the scale training keeps activations near 1: entries ~ N(0, 1/K).
LlamaBlockWeights random_weights(const BlockCase& c) {
  auto m = [](int64_t n, int64_t k) { return torch::randn({n, k}) / std::sqrt(static_cast<double>(k)); };
  LlamaBlockWeights w;
  w.input_norm = 1 + 0.1 * torch::randn({c.d});
  w.post_norm = 1 + 0.1 * torch::randn({c.d});
  w.q = m(c.H * c.hd, c.d), w.k = m(c.KV * c.hd, c.d), w.v = m(c.KV * c.hd, c.d), w.o = m(c.d, c.H * c.hd);
  w.gate = m(c.ff, c.d), w.up = m(c.ff, c.d), w.down = m(c.d, c.ff);
  w.eps = 1e-5;
  w.heads = c.H, w.kv_heads = c.KV;
  return w;
}

// Caches with earlier keys and values in place, row b attending to its slots 0..write[b] (later
// slots of the span masked, as shorter rows of a per-row cache are), rotary tables of position write[b].
DecodeSlots random_slots(const BlockCase& c) {
  DecodeSlots s;
  s.k_cache = torch::randn({c.B, c.KV, c.capacity, c.hd});
  s.v_cache = torch::randn({c.B, c.KV, c.capacity, c.hd});
  s.write = c.write;
  s.span = c.span;
  s.bias = torch::zeros({c.B, 1, 1, c.span});
  auto angles = torch::empty({c.B, 1, 1, c.hd});
  for (int64_t b = 0; b < c.B; ++b) {
    const int64_t slot = c.write[static_cast<size_t>(b)];
    if (slot + 1 < c.span) s.bias[b].narrow(-1, slot + 1, c.span - slot - 1).fill_(-1e9);
    auto freqs = static_cast<double>(slot) / torch::pow(10000.0, torch::arange(0, c.hd, 2, torch::kFloat32) / c.hd);
    angles[b].view({c.hd}).copy_(torch::cat({freqs, freqs}));
  }
  s.cos = angles.cos(), s.sin = angles.sin();
  return s;
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

// The block with LibTorch's ops on copies of the caches (`k_cache`, `v_cache` receive the writes).
torch::Tensor reference_block(const torch::Tensor& x, const LlamaBlockWeights& w, const DecodeSlots& s, torch::Tensor& k_cache,
                              torch::Tensor& v_cache) {
  const int64_t B = x.size(0), H = w.heads, KV = w.kv_heads, hd = s.cos.size(-1);
  auto rms = [&](const torch::Tensor& t, const torch::Tensor& g) {
    return g * (t * torch::rsqrt(t.pow(2).mean(-1, true) + w.eps));
  };
  auto cos = s.cos.view({B, 1, hd}), sin = s.sin.view({B, 1, hd});
  auto hs = rms(x, w.input_norm);
  auto q = F::linear(hs, w.q).view({B, H, hd}), k = F::linear(hs, w.k).view({B, KV, hd});
  auto v = F::linear(hs, w.v).view({B, KV, hd});
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  for (int64_t b = 0; b < B; ++b) {
    k_cache[b].select(1, s.write[static_cast<size_t>(b)]).copy_(k[b]);
    v_cache[b].select(1, s.write[static_cast<size_t>(b)]).copy_(v[b]);
  }
  auto keys = k_cache.narrow(2, 0, s.span).repeat_interleave(H / KV, 1);  // [B, H, span, hd]
  auto values = v_cache.narrow(2, 0, s.span).repeat_interleave(H / KV, 1);
  auto scores = torch::matmul(q.unsqueeze(2), keys.transpose(-1, -2)).squeeze(2) / std::sqrt(static_cast<double>(hd)) +
                s.bias.view({B, 1, s.span});
  auto a = torch::matmul(torch::softmax(scores, -1).unsqueeze(2), values).squeeze(2).reshape({B, 1, H * hd});
  auto x1 = x + F::linear(a, w.o);
  auto h2 = rms(x1, w.post_norm);
  return x1 + F::linear(F::silu(F::linear(h2, w.gate)) * F::linear(h2, w.up), w.down);
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// One row; several rows at their own slots (GQA, lane-ragged widths); every row a query head of its own (no GQA), the row limit.
const BlockCase kCases[] = {{1, 64, 4, 2, 16, 96, 12, 7, {6}},
                            {3, 40, 6, 2, 8, 72, 10, 7, {2, 6, 4}},
                            {kMaxSmallRows, 32, 4, 4, 8, 48, 5, 5, {4, 0, 1, 2, 3, 4, 4, 1}}};

class FusedBlock : public ::testing::TestWithParam<bool> {};  // with bfloat16 decoding copies or not

TEST_P(FusedBlock, EqualsTheBlocksLibTorchOpsAndWritesTheSameCacheSlots) {
  torch::NoGradGuard no_grad;
  const bool bf16 = GetParam();
  torch::manual_seed(5);
  for (const auto& c : kCases) {
    const auto w = random_weights(c);
    const auto s = random_slots(c);
    const auto x = torch::randn({c.B, 1, c.d});
    DecodeWeights copies;
    if (bf16) copies.refresh({w.q, w.k, w.v, w.o, w.gate, w.up, w.down});
    // The reference multiplies by the weights the kernels read: rounded to bfloat16 when copies are in scope.
    LlamaBlockWeights read = w;
    if (bf16)
      for (auto* t : {&read.q, &read.k, &read.v, &read.o, &read.gate, &read.up, &read.down})
        *t = t->to(torch::kBFloat16).to(torch::kFloat32);
    auto k_ref = s.k_cache.clone(), v_ref = s.v_cache.clone();
    const auto expected = reference_block(x, read, s, k_ref, v_ref);
    DecodeWeightsScope scope(bf16 ? &copies : nullptr);
    ASSERT_TRUE(llama_decode_block_applies(x, w, s)) << c.B << " rows";
    const auto got = llama_decode_block(x, w, s);
    EXPECT_LT(max_diff(got, expected), 2e-5) << c.B << " rows, d " << c.d;
    EXPECT_LT(max_diff(s.k_cache, k_ref), 2e-6) << c.B << " rows";
    EXPECT_LT(max_diff(s.v_cache, v_ref), 2e-6) << c.B << " rows";
  }
}

INSTANTIATE_TEST_SUITE_P(Weights, FusedBlock, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? std::string("Bfloat16Copies") : std::string("Float32"); });

TEST(FusedBlockInputs, TurnsAwayWhatItDoesNotComputeAndNamesIt) {
  torch::NoGradGuard no_grad;
  const BlockCase c{2, 32, 4, 2, 8, 48, 6, 4, {3, 1}};
  const auto w = random_weights(c);
  const auto s = random_slots(c);
  const auto x = torch::randn({c.B, 1, c.d});
  ASSERT_TRUE(llama_decode_block_applies(x, w, s));
  EXPECT_FALSE(llama_decode_block_applies(torch::randn({kMaxSmallRows + 1, 1, c.d}), w, s));  // rows beyond the limit
  EXPECT_FALSE(llama_decode_block_applies(torch::randn({c.B, 2, c.d}), w, s));                // two tokens a row
  auto beyond = s;
  beyond.write = {3, 4};  // a slot outside the span
  EXPECT_FALSE(llama_decode_block_applies(x, w, beyond));
  auto narrow_cache = s;
  narrow_cache.k_cache = torch::zeros({c.B, c.KV, 3, c.hd});  // fewer slots than the span
  EXPECT_FALSE(llama_decode_block_applies(x, w, narrow_cache));
  auto other_heads = w;
  other_heads.kv_heads = 3;  // the query heads are not a multiple
  EXPECT_FALSE(llama_decode_block_applies(x, other_heads, s));
  auto double_x = x.to(torch::kFloat64);
  EXPECT_FALSE(llama_decode_block_applies(double_x, w, s));
  auto shared_tables = s;
  shared_tables.cos = s.cos.narrow(0, 0, 1), shared_tables.sin = s.sin.narrow(0, 0, 1);  // one row's tables for two rows
  EXPECT_FALSE(llama_decode_block_applies(x, w, shared_tables));
  auto short_sin = s;
  short_sin.sin = s.sin.narrow(-1, 0, c.hd / 2).contiguous();  // cos whole, sin half a head: read past its end
  EXPECT_FALSE(llama_decode_block_applies(x, w, short_sin));
  auto no_sin = s;
  no_sin.sin = torch::Tensor();
  EXPECT_FALSE(llama_decode_block_applies(x, w, no_sin));
  auto short_bias = s;
  short_bias.bias = s.bias.narrow(-1, 0, c.span - 1).contiguous();
  EXPECT_FALSE(llama_decode_block_applies(x, w, short_bias));
  auto strided_cache = s;
  strided_cache.k_cache = torch::zeros({c.B, c.capacity, c.KV, c.hd}).transpose(1, 2);  // the right sizes, not contiguous
  EXPECT_FALSE(llama_decode_block_applies(x, w, strided_cache));
  auto longer_values = s;
  longer_values.v_cache = torch::zeros({c.B, c.KV, c.capacity + 1, c.hd});  // K's capacity would address V wrongly
  EXPECT_FALSE(llama_decode_block_applies(x, w, longer_values));
  auto one_slot = s;
  one_slot.write = {3};  // a slot for one of the two rows
  EXPECT_FALSE(llama_decode_block_applies(x, w, one_slot));
  try {
    llama_decode_block(torch::randn({kMaxSmallRows + 1, 1, c.d}), w, s);
    FAIL() << "a step of too many rows was computed";
  } catch (const KeelError& e) {
    EXPECT_NE(std::string(e.what()).find("llama_decode_block"), std::string::npos) << e.what();
  }
}

// A Llama model's KV-cached decoding steps go through the fused block, one call a layer and step.
TEST(FusedBlockInModel, EveryDecodingStepOfALlamaModelTakesIt) {
  torch::NoGradGuard no_grad;
  auto m = test::lively_model(Family::kLlama, 61, 32);
  const auto tokens = torch::randint(0, 61, {2, 8}, torch::kLong);
  auto cache = m->make_cache(2, 16);
  m->hidden({tokens.narrow(1, 0, 4), {}, {}, {}}, &cache);  // the prefill: plain ops
  const int64_t before = llama_decode_blocks_run();
  for (int64_t t = 4; t < 8; ++t) m->hidden({tokens.narrow(1, t, 1), {}, {}, {}}, &cache);
  EXPECT_EQ(llama_decode_blocks_run() - before, 4 * m->config().n_layer);
}

TEST(FusedBlockInputs, StaysOutOfAutograd) {
  const BlockCase c{1, 32, 4, 2, 8, 48, 6, 4, {3}};
  const auto w = random_weights(c);
  const auto s = random_slots(c);
  const auto x = torch::randn({c.B, 1, c.d}).requires_grad_();
  EXPECT_FALSE(llama_decode_block_applies(x, w, s));
}

}  // namespace
}  // namespace keel
