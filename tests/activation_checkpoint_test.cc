// Activation checkpointing changes memory, not numbers: the gradients of a checkpointed piece, of
// the fused head and loss, and of a whole checkpointed model equal those of the plain pass.
#include <gtest/gtest.h>

#include "core/activation_checkpoint.h"
#include "core/fused_cross_entropy.h"
#include "core/transformer.h"
#include "support/test_support.h"

namespace keel {
namespace {

TEST(ActivationCheckpoint, GradientsEqualThePlainPass) {
  torch::manual_seed(3);
  auto w = torch::randn({6, 6}, torch::requires_grad()), x0 = torch::randn({4, 6}, torch::requires_grad());
  auto piece = [w](const torch::Tensor& x) { return torch::tanh(x.matmul(w)).matmul(w).sin(); };
  piece(x0 * 2).pow(2).sum().backward();
  const auto want_w = w.grad().clone(), want_x = x0.grad().clone();
  w.mutable_grad().zero_();
  x0.mutable_grad().zero_();
  auto y = checkpointed(piece, x0 * 2);
  EXPECT_TRUE(y.requires_grad());
  y.pow(2).sum().backward();
  EXPECT_TRUE(torch::allclose(w.grad(), want_w, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(x0.grad(), want_x, 1e-6, 1e-7));
  EXPECT_NE(test::keel_error_of([&] { checkpointed(piece, torch::ones({4, 6})); }).find("requires grad"), std::string::npos);
}

TEST(FusedLinearCrossEntropy, LossAndGradientsEqualThePlainHeadAndLoss) {
  torch::manual_seed(5);
  auto h = torch::randn({11, 8}, torch::requires_grad()), w = torch::randn({13, 8}, torch::requires_grad());
  auto t = torch::randint(0, 13, {11}, torch::kLong);
  t.index_put_({torch::indexing::Slice(3, 6)}, -100);
  auto plain = summed_cross_entropy(h.matmul(w.t()), t);
  (plain * 0.5).backward();
  const auto want_h = h.grad().clone(), want_w = w.grad().clone();
  h.mutable_grad().zero_();
  w.mutable_grad().zero_();
  auto fused = fused_linear_cross_entropy(h, w, t, 4);  // blocks of 4, 4 and 3 rows
  (fused * 0.5).backward();
  EXPECT_NEAR(fused.item<double>(), plain.item<double>(), 1e-5 * plain.item<double>());
  EXPECT_TRUE(torch::allclose(h.grad(), want_h, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(w.grad(), want_w, 1e-5, 1e-6));
  EXPECT_EQ(h.grad().narrow(0, 3, 3).abs().max().item<double>(), 0.0);  // rows without targets
}

class CheckpointedModel : public ::testing::TestWithParam<Family> {};

TEST_P(CheckpointedModel, GradientsEqualThePlainModel) {
  auto m = test::lively_model(GetParam(), 61, 32);
  m->train();
  torch::manual_seed(4);
  auto tokens = torch::randint(0, 61, {3, 12}, torch::kLong), targets = torch::randint(0, 61, {3, 12}, torch::kLong);
  targets.index_put_({1, torch::indexing::Slice(0, 9)}, -100);  // a block of rows without targets
  auto grads = [&](bool checkpoint) {
    m->set_activation_checkpointing(checkpoint);
    m->zero_grad();
    // Blocks of 5 rows for the loss when checkpointing: 8 blocks, one of them without targets.
    const auto loss = m->summed_cross_entropy_of(m->hidden({tokens, {}, {}, {}}), targets, 5);
    loss.backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : m->parameters()) g.push_back(p.grad().clone());
    return std::make_pair(loss.item<double>(), g);
  };
  const auto plain = grads(false), ckpt = grads(true);
  EXPECT_NEAR(ckpt.first, plain.first, 1e-5 * std::abs(plain.first));  // blocks sum in another order
  ASSERT_EQ(ckpt.second.size(), plain.second.size());
  // Equal to float32 rounding of the gradient's scale (the loss's blocks sum in another order).
  for (size_t i = 0; i < plain.second.size(); ++i) {
    const double scale = plain.second[i].abs().max().item<double>();
    EXPECT_LT((ckpt.second[i] - plain.second[i]).abs().max().item<double>(), 1e-6 * scale + 1e-7) << "parameter " << i;
  }
  // Without autograd (sampling, reference log-probs) nothing is checkpointed or recorded.
  torch::NoGradGuard ng;
  EXPECT_FALSE(m->logits(m->hidden({tokens, {}, {}, {}})).requires_grad());
}

INSTANTIATE_TEST_SUITE_P(Families, CheckpointedModel, ::testing::Values(Family::kGpt2, Family::kLlama),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace keel
