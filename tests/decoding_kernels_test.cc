// The decoding step's own kernels against LibTorch: the in-place small-row products (core/linear.h)
// equal OpenBLAS's F::linear / addmm, with float32 weights or their bfloat16 decoding copies,
// decode_attention equals the plain attention, and draw_categorical samples each row's
// distribution.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <tuple>

#include "actors/sampler.h"
#include "core/decode_attention.h"
#include "core/decode_ops.h"
#include "core/linear_group.h"
#include "core/error.h"
#include "core/kernel_isa.h"
#include "core/linear.h"
#include "core/threads.h"
#include "core/transformer.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace F = torch::nn::functional;

// Largest |a - b| relative to the largest |b| (products of K terms round differently per order).
double relative_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

struct ProductCase {
  int64_t M, K, N;
};

// Shapes that hit every path: one row (W [N, K] row by row: K a multiple of 4 vectors, of 2, of
// one, of none; K at the bfloat16 single-row kernel's limit of 8192 and above it, where a bfloat16
// row takes the kernel of more rows), odd row counts (row blocks of 8 or 4 for W [K, N], of 2 for W [N, K]), widths that are not whole
// tiles (edge columns), K not a multiple of the lanes, the limit; W [K, N] split by blocks of rows
// (GPT-2 small's c_attn and mlp.c_proj; K = 130 gives 7 blocks, the last one short) and by panels.
const ProductCase kCases[] = {{1, 16, 32},    {1, 256, 8},    {1, 40, 33},  {1, 100, 13},  {1, 1, 17},
                              {1, 8192, 17},  {1, 8200, 17},  {3, 40, 33},  {7, 17, 70},   {8, 256, 768},
                              {5, 64, 31},    {6, 96, 97},    {2, 1, 5},    {8, 130, 257}, {kMaxSmallRows, 48, 64},
                              {1, 768, 2304}, {2, 3072, 768}, {4, 127, 96}, {3, 128, 1000}};

// Float32 rounding against LibTorch's own sums: its error grows as a random walk over the K terms.
double tolerance(int64_t K) { return 2e-6 * std::max(1.0, std::sqrt(static_cast<double>(K) / 512.0)); }

// Runs `check` with each build of the kernels this CPU can run, then goes back to the best.
void in_every_instruction_set(const std::function<void()>& check) {
  const KernelIsa best = kernel_isa();
  for (auto isa : {KernelIsa::kAvx512, KernelIsa::kAvx2, KernelIsa::kGeneric}) {
    if (!limit_kernel_isa(isa)) continue;  // this CPU lacks it
    SCOPED_TRACE("instruction set " + std::to_string(static_cast<int>(isa)));
    check();
  }
  EXPECT_TRUE(limit_kernel_isa(best));
}

TEST(SmallProducts, EqualLibTorchInBothWeightLayoutsWithAndWithoutBiasInEveryInstructionSet) {
  c10::InferenceMode inference;
  torch::manual_seed(3);
  in_every_instruction_set([] {
    for (const auto& c : kCases) {
      auto x = torch::randn({c.M, c.K});
      auto w_nk = torch::randn({c.N, c.K});
      auto w_kn = torch::randn({c.K, c.N});
      auto bias = torch::randn({c.N});
      SCOPED_TRACE("M " + std::to_string(c.M) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N));
      ASSERT_TRUE(uses_small_kernel(x, w_nk, bias));
      EXPECT_LT(relative_diff(linear_nk(x, w_nk, bias), F::linear(x, w_nk, bias)), tolerance(c.K));
      EXPECT_LT(relative_diff(linear_nk(x, w_nk), F::linear(x, w_nk)), tolerance(c.K));
      EXPECT_LT(relative_diff(linear_kn(x, w_kn, bias), torch::addmm(bias, x, w_kn)), tolerance(c.K));
      EXPECT_LT(relative_diff(linear_kn(x, w_kn), torch::mm(x, w_kn)), tolerance(c.K));
    }
  });
}

// A bfloat16 copy in scope: the product equals the float32 product with the weight rounded to
// bfloat16 (the products accumulate in float32), not the product with the float32 weight.
TEST(SmallProducts, ReadTheBfloat16CopyInScopeAsTheWeightRoundedToBfloat16InEveryInstructionSet) {
  c10::InferenceMode inference;
  torch::manual_seed(4);
  in_every_instruction_set([] {
    for (const auto& c : kCases) {
      auto x = torch::randn({c.M, c.K});
      auto w_nk = torch::randn({c.N, c.K}), w_kn = torch::randn({c.K, c.N}), bias = torch::randn({c.N});
      auto rounded = [](const torch::Tensor& w) { return w.to(torch::kBFloat16).to(torch::kFloat32); };
      SCOPED_TRACE("M " + std::to_string(c.M) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N));
      DecodeWeights copies;
      copies.refresh({w_nk}, {w_kn});
      EXPECT_EQ(copies.bytes(), 2 * (w_nk.numel() + w_kn.numel()));
      const auto plain_nk = linear_nk(x, w_nk, bias), plain_kn = linear_kn(x, w_kn, bias);
      DecodeWeightsScope scope(&copies);
      EXPECT_LT(relative_diff(linear_nk(x, w_nk, bias), F::linear(x, rounded(w_nk), bias)), tolerance(c.K));
      EXPECT_LT(relative_diff(linear_kn(x, w_kn, bias), torch::addmm(bias, x, rounded(w_kn))), tolerance(c.K));
      if (c.K >= 16) {
        EXPECT_GT(relative_diff(linear_nk(x, w_nk, bias), plain_nk), 1e-5) << "the copy was not read";
        EXPECT_GT(relative_diff(linear_kn(x, w_kn, bias), plain_kn), 1e-5) << "the copy was not read";
      }
      // A weight without a copy keeps its float32 product.
      auto other = torch::randn({c.N, c.K});
      EXPECT_LT(relative_diff(linear_nk(x, other), F::linear(x, other)), tolerance(c.K));
    }
  });
}

// The product a device without keel's kernels (CUDA) computes with a decoding copy, here on the
// CPU's LibTorch: x and the result rounded to bfloat16 around a float32-summed product with the
// rounded weight, in either stored layout, the bias added in float32; none without a copy in scope,
// for a weight without one, or where autograd follows x.
TEST(DecodingCopyProduct, IsTheBfloat16ProductOfTheRoundedOperandsPlusTheFloat32Bias) {
  torch::manual_seed(5);
  auto x = torch::randn({5, 48}), w_nk = torch::randn({24, 48}), w_kn = torch::randn({48, 24}), bias = torch::randn({24});
  auto bf = [](const torch::Tensor& t) { return t.to(torch::kBFloat16).to(torch::kFloat32); };
  DecodeWeights copies;
  copies.refresh({w_nk}, {w_kn});
  EXPECT_FALSE(decoding_copy_product(x, w_nk, bias).defined()) << "no copy in scope";
  DecodeWeightsScope scope(&copies);
  torch::NoGradGuard no_grad;
  // Each output is one bfloat16 rounding of a float32 sum: within 2^-8 of the sum, relatively.
  for (const auto& [w, exact] : {std::pair{w_nk, F::linear(bf(x), bf(w_nk))}, std::pair{w_kn, torch::mm(bf(x), bf(w_kn))}}) {
    const auto y = decoding_copy_product(x, w, bias), product = decoding_copy_product(x, w, {});
    ASSERT_TRUE(y.defined() && product.defined());
    EXPECT_EQ(y.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(y.equal(product + bias)) << "the bias added in float32";
    EXPECT_LE(((product - exact).abs() - exact.abs() * std::ldexp(1.0, -8)).max().item<float>(), 1e-5);
    EXPECT_TRUE(product.equal(bf(product))) << "the product is a bfloat16 value widened";
    EXPECT_GT((y - F::linear(x, w.dim() == 2 && w.size(0) == 24 ? w : w.t(), bias)).abs().max().item<float>(), 1e-3)
        << "the float32 product, not the copy's";
  }
  EXPECT_FALSE(decoding_copy_product(x, torch::randn({24, 48}), bias).defined()) << "a weight without a copy";
  torch::AutoGradMode grad(true);
  EXPECT_FALSE(decoding_copy_product(x.clone().requires_grad_(), w_nk, bias).defined()) << "autograd follows x";
}

// Decoding steps of 9 to kMaxTiledRows rows: register tiles over W [K, N] (every row count modulo
// the tile's 4, column blocks of 4, 3, 2 and 1 vectors, edge columns, chunks of rows of W that do
// not divide K) and the row-pair tiles over W [N, K]; the float32 weight is read even with a
// bfloat16 copy in scope, and the bits do not depend on the thread count.
TEST(SmallProducts, TilesOfMoreRowsEqualLibTorchReadFloat32AndKeepTheirBitsOnAnyThreadCount) {
  c10::InferenceMode inference;
  torch::manual_seed(6);
  const ProductCase cases[] = {{9, 64, 64},     {10, 300, 80}, {11, 130, 112}, {12, 768, 2304},
                               {13, 256, 1000}, {16, 17, 3},   {31, 129, 48},  {kMaxTiledRows, 3072, 768}};
  in_every_instruction_set([&] {
    for (const auto& c : cases) {
      auto x = torch::randn({c.M, c.K});
      auto w_nk = torch::randn({c.N, c.K}), w_kn = torch::randn({c.K, c.N}), bias = torch::randn({c.N});
      SCOPED_TRACE("M " + std::to_string(c.M) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N));
      ASSERT_FALSE(uses_small_kernel(x, w_kn, bias));
      ASSERT_TRUE(uses_tiled_kernel(x, w_kn, bias) && uses_tiled_kernel(x, w_nk, bias));
      const auto kn = linear_kn(x, w_kn, bias), nk = linear_nk(x, w_nk, bias);
      EXPECT_LT(relative_diff(kn, torch::addmm(bias, x, w_kn)), tolerance(c.K));
      EXPECT_LT(relative_diff(linear_kn(x, w_kn), torch::mm(x, w_kn)), tolerance(c.K));
      EXPECT_LT(relative_diff(nk, F::linear(x, w_nk, bias)), tolerance(c.K));
      DecodeWeights copies;
      copies.refresh({w_nk}, {w_kn});
      DecodeWeightsScope scope(&copies);
      EXPECT_TRUE(torch::equal(linear_kn(x, w_kn, bias), kn)) << "a bfloat16 copy was read";
      EXPECT_TRUE(torch::equal(linear_nk(x, w_nk, bias), nk)) << "a bfloat16 copy was read";
    }
  });
  const int threads = at::get_num_threads();
  auto x = torch::randn({20, 512}), w_kn = torch::randn({512, 1536}), w_nk = torch::randn({1536, 512});
  std::vector<torch::Tensor> kn, nk;
  for (int t : {1, 2, 3}) {
    at::set_num_threads(t);
    kn.push_back(linear_kn(x, w_kn));
    nk.push_back(linear_nk(x, w_nk));
  }
  at::set_num_threads(threads);
  for (int i : {1, 2}) {
    EXPECT_TRUE(torch::equal(kn[0], kn[i])) << i + 1 << " threads";
    EXPECT_TRUE(torch::equal(nk[0], nk[i])) << i + 1 << " threads";
  }
}

// A model decoding from bfloat16 copies gives the logits of its twin with every weight matrix
// rounded to bfloat16 (Llama with an untied head, so that the embedding, a lookup table kept in
// float32, is the same in both), and its own float32 logits again once the dtype is float32.
// GPT-2 ties the head to the embedding: its bfloat16 logits stay within bfloat16's rounding.
TEST(SmallProducts, AModelWithBfloat16DecodingWeightsDecodesAsItsRoundedTwin) {
  c10::InferenceMode inference;
  for (auto family : {Family::kLlama, Family::kGpt2}) {
    auto c = test::tiny_model_config();
    c.family = family;
    c.tie_embeddings = family == Family::kGpt2;
    Transformer model(c), twin(c);
    model->init_weights(5);
    twin->init_weights(5);
    for (auto& p : twin->named_parameters())
      if (p.value().dim() == 2 && p.key() != "model.embed_tokens.weight")
        p.value().copy_(p.value().to(torch::kBFloat16).to(torch::kFloat32));
    auto tokens = torch::randint(3, c.vocab_size, {4, 1}, torch::kLong);
    auto logits_of = [&](Transformer& m) { return m->logits(m->hidden({tokens, {}, {}, {}})); };
    const auto f32 = logits_of(model);
    model->set_decode_dtype(torch::kBFloat16);
    EXPECT_EQ(model->decode_dtype(), torch::kBFloat16);
    const auto bf16 = logits_of(model);
    if (family == Family::kLlama) {
      EXPECT_LT(relative_diff(bf16, logits_of(twin)), 1e-5);
    }
    EXPECT_GT(relative_diff(bf16, f32), 1e-5) << "the copies were not read";
    EXPECT_LT(relative_diff(bf16, f32), 3e-2);
    model->set_decode_dtype(torch::kFloat32);
    EXPECT_EQ(relative_diff(logits_of(model), f32), 0.0);
  }
}

TEST(SmallProducts, TakeStridedRowsAndBatchedShapesAndGiveTheSameBitsOnAnyThreadCount) {
  c10::InferenceMode inference;
  torch::manual_seed(4);
  // The sampler's last-position hidden state: rows of a [B, T, d] tensor, not contiguous.
  auto h = torch::randn({6, 5, 64});
  auto last = h.select(1, 4);
  ASSERT_FALSE(last.is_contiguous());
  auto w = torch::randn({300, 64});
  EXPECT_LT(relative_diff(linear_nk(last, w), F::linear(last.contiguous(), w)), 2e-6);
  auto x3 = torch::randn({2, 3, 64});
  auto w_kn = torch::randn({64, 40}), b = torch::randn({40});
  auto y3 = linear_kn(x3, w_kn, b);
  EXPECT_EQ(y3.sizes(), (std::vector<int64_t>{2, 3, 40}));
  EXPECT_LT(relative_diff(y3, torch::matmul(x3, w_kn) + b), 2e-6);

  // Output columns are split over threads, and the blocks of rows whose sums W [K, N] adds do not
  // depend on the thread count: neither do the bits.
  const int threads = at::get_num_threads();
  auto x = torch::randn({8, 256}), x1 = torch::randn({1, 1024});
  auto big = torch::randn({4096, 256}), big_kn = torch::randn({1024, 2048}), b_kn = torch::randn({2048});
  std::vector<torch::Tensor> nk, kn, kn8;
  for (int t : {1, 2, 3}) {
    at::set_num_threads(t);
    nk.push_back(linear_nk(x, big));
    kn.push_back(linear_kn(x1, big_kn, b_kn));
    kn8.push_back(linear_kn(x.narrow(1, 0, 128), big_kn.narrow(0, 0, 128)));
  }
  at::set_num_threads(threads);
  for (int i : {1, 2}) {
    EXPECT_TRUE(torch::equal(nk[0], nk[i])) << i + 1 << " threads";
    EXPECT_TRUE(torch::equal(kn[0], kn[i])) << i + 1 << " threads";
    EXPECT_TRUE(torch::equal(kn8[0], kn8[i])) << i + 1 << " threads";
  }
  EXPECT_LT(relative_diff(kn[0], torch::addmm(b_kn, x1, big_kn)), tolerance(1024));
}

// linear_kn_into (a fused decoding block's products, into its own buffers, rows at a stride) gives
// linear_kn's bits at every row count, by blocks of rows, panels, tiles and bfloat16 copies, and
// refuses what it does not compute.
TEST(SmallProducts, IntoACallersBufferGiveLinearKnsBits) {
  c10::InferenceMode inference;
  if (best_kernel_isa() == KernelIsa::kGeneric) GTEST_SKIP() << "linear_kn leaves these products to OpenBLAS here";
  torch::manual_seed(9);
  auto rows = torch::randn({kMaxSmallRows, 200});  // K = 130 of each row's 200: a stride
  for (const auto& [K, N] : {std::pair<int64_t, int64_t>{130, 257}, {64, 40}}) {
    auto w = torch::randn({K, N}), b = torch::randn({N});
    DecodeWeights copies;
    copies.refresh({}, {w});
    for (const bool bf16 : {false, true}) {
      const DecodeWeights* scope = bf16 ? &copies : nullptr;
      DecodeWeightsScope in_scope(scope);
      for (int64_t M = 1; M <= kMaxSmallRows; ++M) {
        auto x = rows.narrow(0, 0, M).narrow(1, 0, K);
        auto y = torch::full({M, N}, std::nanf(""));
        linear_kn_into(x.data_ptr<float>(), M, x.stride(0), w, b, y.data_ptr<float>());
        EXPECT_TRUE(torch::equal(y, linear_kn(x, w, b))) << M << " rows, K " << K << (bf16 ? ", bfloat16" : "");
      }
    }
  }
  auto y = torch::empty({kMaxSmallRows + 1, 40});
  EXPECT_THROW(linear_kn_into(rows.data_ptr<float>(), kMaxSmallRows + 1, 200, torch::randn({64, 40}), {}, y.data_ptr<float>()),
               KeelError);
  EXPECT_THROW(linear_kn_into(rows.data_ptr<float>(), 1, 200, torch::randn({64, 40}), torch::randn({39}), y.data_ptr<float>()),
               KeelError);
}

// A single row's W [K, N] product reads runs of 16 rows of W a pass; each output still sums the
// bias then k in order, so each row's outputs are the same bits alone as in a product of more rows
// going by the same blocks of rows (K = 130: a run of 16 and 4 rows left in each block; N = 257:
// edge columns). Without blocks (K < 128, or N > 4096 for one row), 2 to 8 rows take register
// tiles, one row panels: the same order again, also across the tiles' chunks of 128 rows of W
// (K = 200) and their rows left over (5 rows: a tile of 4 and one of 1).
TEST(SmallProducts, ASingleRowsProductWithWKnHasItsBitsInAProductOfMoreRowsInEveryInstructionSet) {
  c10::InferenceMode inference;
  torch::manual_seed(8);
  const ProductCase cases[] = {{2, 130, 257}, {2, 768, 768},  {2, 3072, 768}, {2, 1024, 2048},
                               {8, 40, 33},   {8, 100, 1000}, {5, 127, 96},   {5, 200, 4112}};
  in_every_instruction_set([&] {
    for (const auto& c : cases) {
      SCOPED_TRACE("M " + std::to_string(c.M) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N));
      auto x = torch::randn({c.M, c.K}), w = torch::randn({c.K, c.N}), bias = torch::randn({c.N});
      const auto all = linear_kn(x, w, bias);
      for (int64_t m = 0; m < c.M; ++m)
        EXPECT_TRUE(torch::equal(linear_kn(x.narrow(0, m, 1), w, bias), all.narrow(0, m, 1))) << "row " << m;
      EXPECT_LT(relative_diff(all, torch::addmm(bias, x, w)), tolerance(c.K));
    }
  });
}

// A single row's W [N, K] product streams W with vectors of at most 256 bits in every build (on an
// AVX-512 EPYC 512-bit loads streamed it more slowly), so an AVX2 and an AVX-512 CPU give a row the
// same bits, with float32 weights and with bfloat16 copies (N = 13 and 17: no edge columns, which
// depend on the tiles' width).
TEST(SmallProducts, ASingleRowsProductWithWNkHasTheSameBitsOnAvx2AndAvx512) {
  c10::InferenceMode inference;
  const KernelIsa best = kernel_isa();
  if (!limit_kernel_isa(KernelIsa::kAvx512)) GTEST_SKIP() << "this CPU lacks AVX-512";
  torch::manual_seed(9);
  for (const auto& c : {ProductCase{1, 576, 1536}, ProductCase{1, 100, 13}, ProductCase{1, 8192, 17}}) {
    SCOPED_TRACE("K " + std::to_string(c.K) + " N " + std::to_string(c.N));
    auto x = torch::randn({1, c.K}), w = torch::randn({c.N, c.K}), bias = torch::randn({c.N});
    auto w_kn = torch::randn({c.K, c.N});  // its copy is kept [N, K], so it takes the same kernel
    DecodeWeights copies;
    copies.refresh({w}, {w_kn});
    auto both = [&] {
      auto f32 = linear_nk(x, w, bias);
      DecodeWeightsScope scope(&copies);
      return std::make_pair(f32, torch::cat({linear_nk(x, w, bias), linear_kn(x, w_kn, bias)}));
    };
    ASSERT_TRUE(limit_kernel_isa(KernelIsa::kAvx512));
    const auto wide = both();
    ASSERT_TRUE(limit_kernel_isa(KernelIsa::kAvx2));
    const auto narrow = both();
    EXPECT_TRUE(torch::equal(wide.first, narrow.first)) << "float32";
    EXPECT_TRUE(torch::equal(wide.second, narrow.second)) << "bfloat16";
    EXPECT_LT(relative_diff(wide.first, F::linear(x, w, bias)), tolerance(c.K));
  }
  EXPECT_TRUE(limit_kernel_isa(best));
}

// Products with bfloat16 copies go one output at a time at every row count (1 to kMaxSmallRows)
// with vectors of at most 256 bits, so their bits depend neither on the thread count nor, where
// the CPU has AVX-512, on the instruction set (N not a multiple of either build's tile width; K =
// 8200: a single row above the single-row kernel's limit; M * K * N large enough that the threads
// split every case), and they equal LibTorch's product with the rounded weight.
TEST(SmallProducts, ProductsWithBfloat16CopiesHaveTheSameBitsOnAnyThreadCountAndOnAvx2AndAvx512) {
  c10::InferenceMode inference;
  if (best_kernel_isa() == KernelIsa::kGeneric) GTEST_SKIP() << "keel's kernels need AVX2 + FMA or AVX-512";
  const KernelIsa best = kernel_isa();
  const bool avx512 = limit_kernel_isa(KernelIsa::kAvx512);
  const int threads = at::get_num_threads();
  torch::manual_seed(10);
  for (const auto& c : {ProductCase{2, 576, 1037}, ProductCase{3, 100, 2221}, ProductCase{4, 1536, 37}, ProductCase{5, 40, 3013},
                        ProductCase{6, 64, 1029}, ProductCase{7, 17, 5013}, ProductCase{8, 576, 37}, ProductCase{1, 8200, 13}}) {
    SCOPED_TRACE("M " + std::to_string(c.M) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N));
    auto x = torch::randn({c.M, c.K}), w = torch::randn({c.N, c.K}), bias = torch::randn({c.N});
    DecodeWeights copies;
    copies.refresh({w}, {});
    auto product = [&](KernelIsa isa, int t) {
      EXPECT_TRUE(limit_kernel_isa(isa));
      at::set_num_threads(t);
      DecodeWeightsScope scope(&copies);
      return linear_nk(x, w, bias);
    };
    const KernelIsa isa = avx512 ? KernelIsa::kAvx512 : KernelIsa::kAvx2;
    const auto y = product(isa, 1);
    for (int t : {2, 3}) EXPECT_TRUE(torch::equal(y, product(isa, t))) << t << " threads";
    if (avx512) {
      EXPECT_TRUE(torch::equal(y, product(KernelIsa::kAvx2, 2))) << "AVX2";
    }
    at::set_num_threads(threads);
    EXPECT_LT(relative_diff(y, F::linear(x, w.to(torch::kBFloat16).to(torch::kFloat32), bias)), tolerance(c.K));
  }
  EXPECT_TRUE(limit_kernel_isa(best));
}

TEST(KernelIsa, AtenCpuCapabilityAvx2LowersKeelsKernelsToAvx2Too) {
  EXPECT_EQ(kernel_isa_for(KernelIsa::kAvx512, "avx2"), KernelIsa::kAvx2);
  EXPECT_EQ(kernel_isa_for(KernelIsa::kAvx512, nullptr), KernelIsa::kAvx512);
  EXPECT_EQ(kernel_isa_for(KernelIsa::kAvx512, "avx512"), KernelIsa::kAvx512);
  EXPECT_EQ(kernel_isa_for(KernelIsa::kAvx2, "avx2"), KernelIsa::kAvx2);
  EXPECT_EQ(kernel_isa_for(KernelIsa::kGeneric, "avx2"), KernelIsa::kGeneric);  // never above what the CPU has
  const char* cap = std::getenv("ATEN_CPU_CAPABILITY");
  EXPECT_EQ(kernel_isa(), kernel_isa_for(best_kernel_isa(), cap)) << "the process starts with the set the variable asks for";
}

TEST(SmallProducts, SpreadOverEveryIntraOpThread) {
  // at::parallel_for runs serially in code compiled without OpenMP: keel's kernels once ran on
  // one thread of two that way, at half the memory bandwidth, with every result still right.
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  EXPECT_EQ(parallel_for_threads(), 2) << "keel's kernels run on one thread: build keel with OpenMP (CMakeLists.txt)";
  at::set_num_threads(1);
  EXPECT_EQ(parallel_for_threads(), 1);
  at::set_num_threads(threads);
}

TEST(SmallProducts, LeaveAutogradLargeBatchesAndOtherTypesToLibTorch) {
  auto w = torch::randn({16, 8}, torch::requires_grad());
  auto x = torch::randn({4, 8});
  EXPECT_FALSE(uses_small_kernel(x, w, {}));  // training: gradients flow through LibTorch's ops
  EXPECT_FALSE(uses_tiled_kernel(torch::randn({kMaxTiledRows, 8}), w, {}));
  auto y = linear_nk(x, w);
  y.sum().backward();
  EXPECT_LT((w.grad() - x.sum(0).expand({16, 8})).abs().max().item<double>(), 1e-5);
  {
    torch::NoGradGuard ng;
    EXPECT_TRUE(uses_small_kernel(x, w, {}));
    EXPECT_FALSE(uses_small_kernel(torch::randn({kMaxSmallRows + 1, 8}), w, {}));
    EXPECT_FALSE(uses_tiled_kernel(x, w, {}));  // few rows take the small-row kernels
    EXPECT_TRUE(uses_tiled_kernel(torch::randn({kMaxTiledRows, 8}), w, {}));
    EXPECT_FALSE(uses_tiled_kernel(torch::randn({kMaxTiledRows + 1, 8}), w, {}));  // a prompt's prefill: OpenBLAS
    EXPECT_FALSE(uses_small_kernel(x.to(torch::kDouble), w.to(torch::kDouble), {}));
    EXPECT_FALSE(uses_small_kernel(x, w.t(), {}));  // a transposed view is not read in place
    auto wd = w.detach().to(torch::kDouble);
    EXPECT_LT(relative_diff(linear_nk(x.to(torch::kDouble), wd), F::linear(x.to(torch::kDouble), wd)), 1e-12);
  }
  auto msg = test::keel_error_of([&] { linear_kn(x, torch::randn({9, 3})); });
  EXPECT_NE(msg.find("input width 8"), std::string::npos) << msg;
  torch::NoGradGuard ng;
  EXPECT_THROW(linear_nk(x, w.detach(), torch::zeros({15})),
               c10::Error);  // a short bias is never read past its end
  EXPECT_THROW(linear_kn(x, torch::randn({8, 16}), torch::zeros({17})), c10::Error);
}

// Several products with one input in one pass: each equals its own product, float32 and with
// bfloat16 copies, and a group that cannot take the kernels (too many rows, autograd, a copy of
// some weights only) gives each product LibTorch's or linear_nk's result.
TEST(SmallProducts, AGroupOfProductsEqualsEachProductInEveryInstructionSet) {
  c10::InferenceMode inference;
  torch::manual_seed(7);
  in_every_instruction_set([] {
    for (const auto& c : kCases) {
      SCOPED_TRACE("M " + std::to_string(c.M) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N));
      auto x = torch::randn({c.M, 1, c.K});
      const std::vector<torch::Tensor> ws = {torch::randn({c.N, c.K}), torch::randn({c.N / 2 + 3, c.K}), torch::randn({5, c.K})};
      auto ys = linear_nk_group(x, ws);
      ASSERT_EQ(ys.size(), 3u);
      for (size_t i = 0; i < ws.size(); ++i) {
        EXPECT_EQ(ys[i].sizes(), (std::vector<int64_t>{c.M, 1, ws[i].size(0)}));
        EXPECT_LT(relative_diff(ys[i], F::linear(x, ws[i])), tolerance(c.K));
      }
      DecodeWeights copies;
      copies.refresh(ws);
      DecodeWeightsScope scope(&copies);
      ys = linear_nk_group(x, ws);
      for (size_t i = 0; i < ws.size(); ++i)
        EXPECT_LT(relative_diff(ys[i], F::linear(x, ws[i].to(torch::kBFloat16).to(torch::kFloat32))), tolerance(c.K));
      DecodeWeights some;
      some.refresh({ws[0]});
      DecodeWeightsScope partial(&some);  // one element type a group: each product on its own
      ys = linear_nk_group(x, ws);
      EXPECT_LT(relative_diff(ys[0], F::linear(x, ws[0].to(torch::kBFloat16).to(torch::kFloat32))), tolerance(c.K));
      EXPECT_LT(relative_diff(ys[1], F::linear(x, ws[1])), tolerance(c.K));
    }
  });
  auto big = torch::randn({2 * kMaxSmallRows, 24});
  const std::vector<torch::Tensor> ws = {torch::randn({16, 24}), torch::randn({8, 24})};
  auto ys = linear_nk_group(big, ws);
  EXPECT_LT(relative_diff(ys[1], F::linear(big, ws[1])), 2e-6);
  EXPECT_THROW(linear_nk_group(big, {torch::randn({4, 23})}), KeelError);
}

// RMSNorm and the rotary embedding of a decoding step in one pass each equal the plain ops;
// they take decoding steps only (at most kMaxSmallRows rows, outside autograd).
TEST(DecodeOps, NormAndRotaryEqualThePlainOpsAndTakeDecodingStepsOnly) {
  torch::manual_seed(8);
  torch::NoGradGuard ng;
  const int64_t B = 2, T = 3, heads = 4, hd = 10, d = 40;
  auto x = torch::randn({B, T, d}) * 3, weight = torch::randn({d});
  const double eps = 1e-5;
  ASSERT_TRUE(decode_ops_apply(B * T, {x, weight}));
  auto plain_norm = weight * (x * torch::rsqrt(x.pow(2).mean(-1, true) + eps));
  EXPECT_LT(relative_diff(rms_norm_rows(x, weight, eps), plain_norm), 1e-6);
  auto q = torch::randn({B, T, heads, hd});
  auto angles = torch::rand({B, 1, T, hd / 2}) * 10;
  auto emb = torch::cat({angles, angles}, -1);
  auto cos = emb.cos(), sin = emb.sin();
  auto qt = q.transpose(1, 2);
  auto rotated_half = torch::cat({-qt.narrow(-1, hd / 2, hd / 2), qt.narrow(-1, 0, hd / 2)}, -1);
  auto plain_rotary = qt * cos + rotated_half * sin;
  auto fused = rotary_rows_(q.clone(), cos, sin).transpose(1, 2);
  EXPECT_LT(relative_diff(fused, plain_rotary), 1e-6);
  EXPECT_FALSE(decode_ops_apply(kMaxSmallRows + 1, {x, weight}));     // a prompt or a learner's batch
  EXPECT_FALSE(decode_ops_apply(1, {x.transpose(0, 2), weight}));     // not contiguous
  EXPECT_FALSE(decode_ops_apply(1, {x.to(torch::kDouble), weight}));  // another type
  EXPECT_THROW(rotary_rows_(q.clone(), cos.narrow(-1, 0, 8).contiguous(), sin.narrow(-1, 0, 8).contiguous()), KeelError);
  torch::GradMode::set_enabled(true);
  EXPECT_FALSE(decode_ops_apply(1, {x, weight.clone().requires_grad_()}));  // autograd
  torch::GradMode::set_enabled(false);
}

// softmax(q kᵀ / sqrt(hd) + bias) v with the kv heads repeated: the plain computation.
torch::Tensor plain_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& bias) {
  const int64_t rep = q.size(1) / k.size(1);
  auto kr = k.repeat_interleave(rep, 1), vr = v.repeat_interleave(rep, 1);
  auto scores = torch::matmul(q, kr.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1))) + bias;
  return torch::matmul(torch::softmax(scores, -1), vr);
}

TEST(DecodeAttention, EqualsThePlainComputationOverACacheWithPaddingAndGroupedHeadsInEveryInstructionSet) {
  c10::InferenceMode inference;
  torch::manual_seed(6);
  in_every_instruction_set([] {
    // Multi-head, grouped-query, multi-query; a short span, and a long one whose scores spread
    // over tens of units (the softmax's exponential over its whole range, lanes past the end).
    for (const auto& [KV, S, spread] :
         {std::tuple<int64_t, int64_t, double>{4, 37, 1.0}, {2, 37, 1.0}, {1, 37, 1.0}, {2, 333, 5.0}}) {
      SCOPED_TRACE(std::to_string(KV) + " kv heads, span " + std::to_string(S));
      const int64_t B = 3, H = 4, hd = 40, capacity = 400;
      // The query as a decoding step holds it: a permuted view of the fused qkv projection.
      auto qkv = (spread * torch::randn({B, 1, 3, H, hd})).permute({2, 0, 3, 1, 4});
      auto q = qkv[0];
      auto k_cache = torch::randn({B, KV, capacity, hd}), v_cache = torch::randn({B, KV, capacity, hd});
      auto k = k_cache.narrow(2, 0, S), v = v_cache.narrow(2, 0, S);
      auto bias = torch::zeros({B, 1, 1, S});
      bias[1].narrow(-1, 0, 5).fill_(-1e9);  // row 1 is left-padded by five slots
      ASSERT_TRUE(decode_attention_applies(q, k, v, bias));
      auto out = decode_attention(q, k, v, bias);
      EXPECT_EQ(out.sizes(), (std::vector<int64_t>{B, H, 1, hd}));
      EXPECT_LT(relative_diff(out, plain_attention(q, k, v, bias)), 1e-5);
      // Padding slots carry no weight: changing their values changes nothing.
      v_cache[1].narrow(1, 0, 5).fill_(1e3);
      EXPECT_LT(relative_diff(decode_attention(q, k, v, bias)[1], out[1]), 1e-6);
    }
  });
}

TEST(DecodeAttention, LeavesPromptsAutogradAndOtherShapesToLibTorch) {
  auto k = torch::randn({2, 2, 5, 8}), v = torch::randn({2, 2, 5, 8});
  auto bias = torch::zeros({2, 1, 1, 5});
  auto q = torch::randn({2, 4, 1, 8}, torch::requires_grad());
  EXPECT_FALSE(decode_attention_applies(q, k, v, bias));  // autograd
  torch::NoGradGuard ng;
  EXPECT_TRUE(decode_attention_applies(q, k, v, bias));
  EXPECT_FALSE(decode_attention_applies(torch::randn({2, 4, 3, 8}), k, v, torch::zeros({2, 1, 3, 5})));  // a prompt
  EXPECT_FALSE(decode_attention_applies(q, k, v, torch::zeros({1, 1, 1, 5})));                           // bias not per row
  EXPECT_FALSE(decode_attention_applies(torch::randn({2, 3, 1, 8}), k, v,
                                        bias));  // 3 heads over 2 kv heads
  EXPECT_FALSE(decode_attention_applies(q, k.transpose(2, 3), v,
                                        bias));  // head dimension not contiguous
  EXPECT_FALSE(
      decode_attention_applies(q.to(torch::kDouble), k.to(torch::kDouble), v.to(torch::kDouble), bias.to(torch::kDouble)));
}

TEST(DrawCategorical, SamplesEachRowsDistribution) {
  auto gen = at::detail::createCPUGenerator(11);
  // Unnormalised rows, zeros that must never be drawn, one row with all its mass on one entry.
  auto probs = torch::tensor({{2.0f, 1.0f, 0.0f, 0.5f, 0.5f}, {0.0f, 0.0f, 0.0f, 0.0f, 3.0f}});
  const int draws = 40000;
  std::vector<std::vector<int>> counts(2, std::vector<int>(5, 0));
  for (int i = 0; i < draws; ++i) {
    auto d = draw_categorical(probs, gen);
    for (int b = 0; b < 2; ++b) ++counts[b][static_cast<size_t>(d[b].item<int64_t>())];
  }
  const double expected[] = {0.5, 0.25, 0.0, 0.125, 0.125};
  for (int v = 0; v < 5; ++v) {
    const double p = expected[v], sd = std::sqrt(std::max(p * (1 - p), 1e-12) / draws);
    EXPECT_NEAR(counts[0][static_cast<size_t>(v)] / double(draws), p, 5 * sd + 1e-12) << "entry " << v;
  }
  EXPECT_EQ(counts[1][4], draws);

  // A vocabulary spanning many blocks: the frequency of each of 4 heavy entries far apart.
  auto wide = torch::full({1, 5000}, 1e-3f);
  for (int64_t v : {0, 1999, 2000, 4999}) wide[0][v] = 1.0f;
  int heavy[4] = {0, 0, 0, 0};
  for (int i = 0; i < draws; ++i) {
    const int64_t d = draw_categorical(wide, gen)[0].item<int64_t>();
    heavy[0] += d == 0, heavy[1] += d == 1999, heavy[2] += d == 2000, heavy[3] += d == 4999;
  }
  const double p_heavy = 1.0 / (4.0 + 4996 * 1e-3), sd = std::sqrt(p_heavy * (1 - p_heavy) / draws);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(heavy[i] / double(draws), p_heavy, 5 * sd) << "heavy entry " << i;

  // Same seed, same draws.
  auto g1 = at::detail::createCPUGenerator(5), g2 = at::detail::createCPUGenerator(5);
  auto p = torch::rand({4, 100});
  EXPECT_TRUE(torch::equal(draw_categorical(p, g1), draw_categorical(p, g2)));

  auto msg = test::keel_error_of([&] { draw_categorical(torch::tensor({{0.5f, 0.5f}, {NAN, 1.0f}}), gen); });
  EXPECT_NE(msg.find("row 1 has no probability mass"), std::string::npos) << msg;
  msg = test::keel_error_of([&] { draw_categorical(torch::zeros({1, 3}), gen); });
  EXPECT_NE(msg.find("row 0 has no probability mass"), std::string::npos) << msg;
}

}  // namespace
}  // namespace keel
