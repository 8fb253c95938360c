// Activation checkpointing changes memory, not numbers: the gradients of a checkpointed piece and
// of a whole checkpointed model equal those of the plain pass.
#include <gtest/gtest.h>

#include "core/activation_checkpoint.h"
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

class CheckpointedModel : public ::testing::TestWithParam<Family> {};

TEST_P(CheckpointedModel, GradientsEqualThePlainModel) {
  auto m = test::lively_model(GetParam(), 61, 32);
  m->train();
  torch::manual_seed(4);
  auto tokens = torch::randint(0, 61, {3, 12}, torch::kLong), targets = torch::randint(0, 61, {3, 12}, torch::kLong);
  auto grads = [&](bool checkpoint) {
    m->set_activation_checkpointing(checkpoint);
    m->zero_grad();
    const auto loss = summed_cross_entropy(m->logits(m->hidden({tokens, {}, {}, {}})), targets);
    loss.backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : m->parameters()) g.push_back(p.grad().clone());
    return std::make_pair(loss.item<double>(), g);
  };
  const auto plain = grads(false), ckpt = grads(true);
  EXPECT_DOUBLE_EQ(ckpt.first, plain.first);
  ASSERT_EQ(ckpt.second.size(), plain.second.size());
  for (size_t i = 0; i < plain.second.size(); ++i)
    EXPECT_TRUE(torch::allclose(ckpt.second[i], plain.second[i], 1e-5, 1e-6)) << "parameter " << i;
  // Without autograd (sampling, reference log-probs) nothing is checkpointed or recorded.
  torch::NoGradGuard ng;
  EXPECT_FALSE(m->logits(m->hidden({tokens, {}, {}, {}})).requires_grad());
}

INSTANTIATE_TEST_SUITE_P(Families, CheckpointedModel, ::testing::Values(Family::kGpt2, Family::kLlama),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace keel
