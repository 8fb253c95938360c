// Loading a model directory: the weights go from the file into the parameters, converted where the
// file's dtype differs; heads the file lacks start where a new model's start; a file that ends
// before a tensor does is an error naming the tensor, even when it shrinks after it was opened.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/model_loader.h"
#include "core/safetensors_file.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

double max_diff(Transformer& a, Transformer& b) { return test::max_parameter_diff(a, b); }

TEST(ModelLoad, EveryParameterIsTheFilesForBothFamilies) {
  for (auto family : {Family::kGpt2, Family::kLlama}) {
    const auto dir = test::temp_dir(std::string("load_") + family_name(family));
    auto saved = test::lively_model(family, 40, 16, 11);
    save_model(dir, saved);
    auto loaded = load_model(dir);
    EXPECT_EQ(max_diff(loaded, saved), 0.0) << family_name(family);
    // Not a model that merely starts where the saved one started.
    Transformer fresh(saved->config());
    EXPECT_GT(max_diff(fresh, saved), 1e-3);
  }
}

TEST(ModelLoad, TensorsOfAnotherDtypeAreConverted) {
  const auto dir = test::temp_dir("load_bf16");
  auto saved = test::lively_model(Family::kLlama, 40, 16, 12);
  TensorMap halves;
  for (const auto& [name, t] : model_tensors(saved)) halves[name] = t.to(torch::kBFloat16);
  save_model(dir, saved->config(), halves);
  auto loaded = load_model(dir);
  auto params = saved->named_parameters();
  for (const auto& p : loaded->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), torch::kFloat32);
    EXPECT_TRUE(p.value().equal(params[p.key()].to(torch::kBFloat16).to(torch::kFloat32))) << p.key();
  }
}

TEST(ModelLoad, HeadsTheFileLacksStartAsANewModelsDo) {
  const auto dir = test::temp_dir("load_heads");
  auto saved = test::lively_model(Family::kGpt2, 40, 16, 13);
  save_model(dir, saved);
  ModelLoadOptions with_value;
  with_value.value_head = true;
  auto policy = load_model_as(dir, with_value);
  auto params = policy->named_parameters();
  EXPECT_EQ(params["value_head.weight"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(params["value_head.bias"].abs().max().item<double>(), 0.0);
  EXPECT_TRUE(params["transformer.h.0.mlp.c_fc.weight"].equal(saved->named_parameters()["transformer.h.0.mlp.c_fc.weight"]));
  // A new reward head is the one a model initialised from head_seed has.
  ModelLoadOptions with_score;
  with_score.reward_head = true;
  with_score.head_seed = 5;
  auto rm = load_model_as(dir, with_score);
  auto config = saved->config();
  config.reward_head = true;
  Transformer seeded(config);
  seeded->init_weights(5);
  const auto score = rm->named_parameters()["score.weight"];
  EXPECT_TRUE(score.equal(seeded->named_parameters()["score.weight"]));
  EXPECT_GT(score.abs().max().item<double>(), 0.0);
  with_score.head_seed = 6;
  EXPECT_FALSE(load_model_as(dir, with_score)->named_parameters()["score.weight"].equal(score));
}

TEST(SafetensorsFileTest, ReadsWhatParseReads) {
  const auto path = test::temp_dir("st_file") + "/t.safetensors";
  const TensorMap tensors = {{"a", torch::arange(6, torch::kFloat32).reshape({2, 3})},
                             {"ids", torch::arange(5, torch::kInt64)},
                             {"h", torch::full({3}, 1.5, torch::kBFloat16)},
                             {"empty", torch::zeros({0, 4})}};
  save_safetensors(path, tensors, {{"format", "pt"}});
  const SafetensorsFile file(path);
  EXPECT_EQ(file.header().metadata.at("format"), "pt");
  ASSERT_EQ(file.header().entries.size(), 4u);
  const auto all = file.read_all();
  Metadata meta;
  const auto parsed = parse_safetensors(read_file(path), path, &meta);
  EXPECT_EQ(meta, file.header().metadata);
  for (const auto& [name, t] : tensors) {
    EXPECT_TRUE(all.at(name).equal(t)) << name;
    EXPECT_TRUE(parsed.at(name).equal(t)) << name;
    EXPECT_EQ(file.entry(name).shape, t.sizes().vec()) << name;
  }
  auto into = torch::empty({2, 3});
  file.read_into("a", into.data_ptr());
  EXPECT_TRUE(into.equal(tensors.at("a")));
  EXPECT_NE(test::keel_error_of([&] { file.entry("b"); }).find("holds no tensor 'b'"), std::string::npos);
}

TEST(SafetensorsFileTest, AFileThatShrinksAfterOpeningIsReportedTruncated) {
  const auto path = test::temp_dir("st_shrink") + "/t.safetensors";
  save_safetensors(path, {{"w", torch::arange(64, torch::kFloat32)}});
  const SafetensorsFile file(path);
  fs::resize_file(path, fs::file_size(path) - 16);
  try {
    file.read("w");
    FAIL() << "a read past the end of the file must fail";
  } catch (const KeelError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kCorruptData);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
  // Opened after it shrank, the header's offsets already run past the data.
  EXPECT_NE(test::keel_error_of([&] { SafetensorsFile again(path); }).find("runs past the end"), std::string::npos);
  EXPECT_NE(test::keel_error_of([&] { SafetensorsFile absent(path + ".none"); }).find("is missing"), std::string::npos);
}

// Safetensors bytes with header `json` and `data` bytes of data.
std::string safetensors_with_header(const std::string& json, size_t data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
  return out + json + std::string(data, '\0');
}

TEST(SafetensorsFileTest, HeadersLibTorchCouldNotHoldAreCorruptData) {
  const std::vector<std::string> bad = {
      // no bytes, but strides that overflow
      R"({"x": {"dtype": "F32", "shape": [0, 2, 4611686018427387904], "data_offsets": [0, 0]}})",
      R"({"x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}})",
      R"({"x": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}})",
      R"({"x": {"dtype": "F32", "shape": [4], "data_offsets": [-1, 16]}})",
      R"({"x": {"dtype": 3, "shape": [4], "data_offsets": [0, 16]}})",
      R"({"__metadata__": "pt", "x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
  };
  for (const auto& json : bad) {
    try {
      parse_safetensors(safetensors_with_header(json, 16), "crafted");
      ADD_FAILURE() << "accepted " << json;
    } catch (const KeelError& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kCorruptData) << json;
    }
  }
  const auto ok = parse_safetensors(
      safetensors_with_header(R"({"x": {"dtype": "F32", "shape": [0, 2, 5], "data_offsets": [0, 0]}})", 0), "crafted");
  EXPECT_EQ(ok.at("x").sizes(), (std::vector<int64_t>{0, 2, 5}));
}

}  // namespace
}  // namespace keel
