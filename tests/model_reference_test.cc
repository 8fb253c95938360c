// The C++ model against the plain PyTorch reference (tests/reference/models.py) on the same
// safetensors weights: logits, loss and every gradient, for both families; checkpoints both ways.
// Every test here runs /usr/bin/python3 with torch: the whole executable has the CTest label `reference`.
#include <gtest/gtest.h>

#include "core/checkpoint.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

class ModelAgainstPython : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelAgainstPython, LogitsLossAndGradientsMatchPyTorch) {
  const std::string family = GetParam();
  const std::string dir = test::temp_dir("reference_" + family);
  auto r = test::python("reference.py make-model " + family + " " + dir + "/py 7");
  ASSERT_EQ(r.code, 0) << r.output;

  auto model = load_model(dir + "/py");
  const int64_t V = model->config().vocab_size, B = 3, T = 12;
  torch::manual_seed(3);
  auto tokens = torch::randint(0, V, {B, T}, torch::kLong);
  auto targets = torch::randint(0, V, {B, T}, torch::kLong);
  targets.index_put_({0, torch::indexing::Slice(0, 4)}, -100);  // prompt positions carry no loss
  save_safetensors(dir + "/inputs.safetensors", {{"tokens", tokens}, {"targets", targets}});
  r = test::python("reference.py forward " + dir + "/py " + dir + "/inputs.safetensors " + dir + "/ref.safetensors");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto ref = load_safetensors(dir + "/ref.safetensors");

  auto logits = model->logits(model->hidden({tokens, {}, {}, {}}));
  const int64_t n = (targets != -100).sum().item<int64_t>();
  auto loss = summed_cross_entropy(logits, targets) / static_cast<double>(n);
  loss.backward();
  EXPECT_LT(max_abs_diff(logits, ref.at("logits")), 1e-4);
  EXPECT_NEAR(loss.item<double>(), ref.at("loss").item<double>(), 1e-5);
  int checked = 0;
  for (const auto& p : model->named_parameters()) {
    auto it = ref.find("grad." + p.key());
    ASSERT_NE(it, ref.end()) << "reference has no gradient for " << p.key();
    EXPECT_LT(max_abs_diff(p.value().grad(), it->second), 1e-4) << p.key();
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(model->named_parameters().size()));
}

TEST_P(ModelAgainstPython, LeftPaddedBatchMatchesPyTorch) {
  const std::string family = GetParam();
  const std::string dir = test::temp_dir("reference_pad_" + family);
  ASSERT_EQ(test::python("reference.py make-model " + family + " " + dir + "/py 11").code, 0);
  auto model = load_model(dir + "/py");
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  auto tokens = torch::randint(4, model->config().vocab_size, {2, 9}, torch::kLong);
  auto mask = torch::ones({2, 9}, torch::kBool);
  mask.index_put_({1, torch::indexing::Slice(0, 4)}, false);  // row 1 is left-padded by 4
  auto positions = (mask.to(torch::kLong).cumsum(1) - 1).clamp_min(0);
  save_safetensors(dir + "/inputs.safetensors", {{"tokens", tokens},
                                                 {"targets", torch::full({2, 9}, -100, torch::kLong)},
                                                 {"positions", positions},
                                                 {"key_mask", mask.to(torch::kUInt8)}});
  auto r = test::python("reference.py forward " + dir + "/py " + dir + "/inputs.safetensors " + dir + "/ref.safetensors");
  // All targets are -100, so the reference loss is NaN; only logits are compared.
  ASSERT_EQ(r.code, 0) << r.output;
  auto ref = load_safetensors(dir + "/ref.safetensors").at("logits");
  auto logits = model->logits(model->hidden({tokens, positions, mask, {}}));
  auto valid = mask.unsqueeze(-1).expand_as(logits);
  EXPECT_LT(max_abs_diff(logits.masked_select(valid), ref.masked_select(valid)), 1e-4);
}

TEST_P(ModelAgainstPython, KeelCheckpointReadsBackInPythonIdentically) {
  const std::string family = GetParam();
  const std::string dir = test::temp_dir("roundtrip_" + family);
  ASSERT_EQ(test::python("reference.py make-model " + family + " " + dir + "/py 5").code, 0);
  auto model = load_model(dir + "/py");
  save_model(dir + "/keel", model);
  auto r = test::python("reference.py compare " + dir + "/py " + dir + "/keel");
  EXPECT_EQ(r.code, 0) << r.output;
  // And keel's own config.json carries the Hugging Face fields Python reads.
  const auto cfg = test::read_text(dir + "/keel/config.json");
  EXPECT_NE(cfg.find(family == "gpt2" ? "GPT2LMHeadModel" : "LlamaForCausalLM"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Families, ModelAgainstPython, ::testing::Values("gpt2", "llama"));

}  // namespace
}  // namespace keel
