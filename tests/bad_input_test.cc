// Bad input gets a clear error naming the problem: missing or truncated weights, a config that
// does not match them, corrupt token files, unknown options, JSONL that is not JSON.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include <filesystem>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/token_file.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

// Runs fn and returns the error message it throws ("" if none).
template <typename F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_CONTAINS(msg, text) EXPECT_NE((msg).find(text), std::string::npos) << "message: " << (msg)

std::string small_model_dir(const std::string& name) {
  const std::string dir = test::temp_dir(name);
  ModelConfig c;
  c.vocab_size = 50;
  c.d_model = 16;
  c.n_layer = 1;
  c.n_head = 2;
  c.max_positions = 32;
  Transformer m(c);
  save_model(dir, m);
  return dir;
}

TEST(BadInput, MissingSafetensors) {
  const auto dir = small_model_dir("bad_missing");
  fs::remove(dir + "/model.safetensors");
  EXPECT_ERROR_CONTAINS(error_of([&] { load_model(dir); }), "model.safetensors is missing");
}

TEST(BadInput, TruncatedSafetensors) {
  const auto dir = small_model_dir("bad_truncated");
  const auto path = dir + "/model.safetensors";
  fs::resize_file(path, fs::file_size(path) - 100);
  EXPECT_ERROR_CONTAINS(error_of([&] { load_model(dir); }), "truncated");
  fs::resize_file(path, 5);
  EXPECT_ERROR_CONTAINS(error_of([&] { load_model(dir); }), "truncated");
}

// A file size limit (RLIMIT_FSIZE) for as long as it lives, with SIGXFSZ ignored so that a write
// beyond it fails with EFBIG, as one to a full disk fails, instead of killing the test.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) : handler_(std::signal(SIGXFSZ, SIG_IGN)) {
    ::getrlimit(RLIMIT_FSIZE, &old_);
    struct rlimit limit = old_;
    limit.rlim_cur = std::min(bytes, old_.rlim_max);
    set_ = ::setrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur == bytes;
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, handler_);
  }
  bool set() const { return set_; }

 private:
  void (*handler_)(int);
  struct rlimit old_ {};
  bool set_ = false;
};

TEST(BadInput, AFailedSaveKeepsThePreviousFileAndNamesTheCause) {
  const std::string path = test::temp_dir("bad_save") + "/weights.safetensors";
  save_safetensors(path, {{"w", torch::arange(16, torch::kFloat32)}});
  const std::string before = read_file(path);
  ErrorKind kind = ErrorKind::kInternal;
  std::string error;
  {
    FileSizeLimit limit(1 << 20);
    if (!limit.set()) GTEST_SKIP() << "cannot lower the file size limit to 1 MiB here";
    try {
      save_safetensors(path, {{"w", torch::zeros({1 << 20})}});  // 4 MB
    } catch (const KeelError& e) {
      error = e.what(), kind = e.kind();
    }
  }
  EXPECT_ERROR_CONTAINS(error, "cannot write " + path + ".tmp");
  EXPECT_TRUE(kind == ErrorKind::kIo || kind == ErrorKind::kOutOfSpace) << error_kind_name(kind);
  EXPECT_EQ(read_file(path), before) << "the previous file changed";
  EXPECT_FALSE(fs::exists(path + ".tmp")) << "the partial file was left behind";
}

TEST(BadInput, ConfigShapesDoNotMatchWeights) {
  const auto dir = small_model_dir("bad_config");
  auto cfg = test::read_text(dir + "/config.json");
  const auto at = cfg.find("\"n_embd\": 16");
  ASSERT_NE(at, std::string::npos) << cfg;
  cfg.replace(at, 12, "\"n_embd\": 32");
  test::write_text(dir + "/config.json", cfg);
  const auto msg = error_of([&] { load_model(dir); });
  EXPECT_ERROR_CONTAINS(msg, "does not match the weights");
  EXPECT_ERROR_CONTAINS(msg, "transformer.");
}

TEST(BadInput, CorruptTokenFiles) {
  const std::string dir = test::temp_dir("bad_tokens");
  TokenFileWriter w(dir + "/ok.bin", 100, 2);
  w.append({1, 2, 3, 4});
  w.finish();
  const auto bytes = test::read_text(dir + "/ok.bin");
  test::write_text(dir + "/magic.bin", "XXXX" + bytes.substr(4));
  EXPECT_ERROR_CONTAINS(error_of([&] { TokenFile f(dir + "/magic.bin"); }), "bad magic");
  test::write_text(dir + "/short.bin", bytes.substr(0, bytes.size() - 2));
  EXPECT_ERROR_CONTAINS(error_of([&] { TokenFile f(dir + "/short.bin"); }), "truncated");
  std::string future = bytes;
  future[8] = 9;
  test::write_text(dir + "/future.bin", future);
  EXPECT_ERROR_CONTAINS(error_of([&] { TokenFile f(dir + "/future.bin"); }), "format version 9 is newer");
  test::write_text(dir + "/tiny.bin", "KEEL");
  EXPECT_ERROR_CONTAINS(error_of([&] { TokenFile f(dir + "/tiny.bin"); }), "shorter than its 64-byte header");
  // Found by fuzz_token_file: a count whose byte size wraps around 2^64 matched the file's size.
  std::string forged = bytes.substr(0, 64);
  forged[12] = 4;  // 4 bytes per token
  const uint64_t count = uint64_t{1} << 62;
  std::memcpy(&forged[16], &count, 8);
  test::write_text(dir + "/forged.bin", forged);
  EXPECT_ERROR_CONTAINS(error_of([&] { TokenFile f(dir + "/forged.bin"); }), "header says 4611686018427387904 tokens");
}

TEST(BadInput, UnknownOptionIsRejectedByName) {
  auto r = test::keel("pretrain --data x --tokenizer y --bogus-option 3");
  EXPECT_NE(r.code, 0);
  EXPECT_ERROR_CONTAINS(r.output, "bogus-option");
  r = test::keel("no-such-command");
  EXPECT_EQ(r.code, 2);
  EXPECT_ERROR_CONTAINS(r.output, "unknown command");
}

// A user's error names the problem, not the build machine's source tree; KEEL_DEBUG=1 adds the
// error's kind and where it was raised, for a bug report.
TEST(BadInput, ErrorsCarryNoSourcePathUnlessDebugging) {
  const std::string args = "tokenizer train --input /nonexistent/book.txt --out " + test::temp_dir("bad_path") + "/tok";
  auto r = test::keel(args);
  EXPECT_EQ(r.code, 1);
  EXPECT_ERROR_CONTAINS(r.output, "error: corpus input /nonexistent/book.txt does not exist");
  EXPECT_EQ(r.output.find(".cc:"), std::string::npos) << r.output;
  r = test::run("KEEL_DEBUG=1 " + test::keel_bin() + " " + args);
  EXPECT_ERROR_CONTAINS(r.output, "(io, raised at core/corpus.cc:");
}

TEST(BadInput, SftFileWithNonJsonLineNamesTheLine) {
  const std::string dir = test::temp_dir("bad_sft_cli");
  const auto model = small_model_dir("bad_sft_model");
  // A model directory needs a tokenizer for SFT: give it GPT-2's (vocab mismatch is its own error).
  test::write_text(dir + "/train.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\n{oops\n");
  auto r = test::keel("sft --init " + model + " --train-file " + dir + "/train.jsonl --out " + dir + "/run --steps 1");
  EXPECT_NE(r.code, 0);
  EXPECT_ERROR_CONTAINS(r.output, "holds no tokenizer");
}

TEST(BadInput, HelpExplainsEveryCommand) {
  for (const char* c : {"pretrain", "sft", "generate", "tokenizer train", "data tokenize", "tasks export", "eval tasks"}) {
    auto r = test::keel(std::string(c) + " --help");
    EXPECT_EQ(r.code, 0) << c;
    EXPECT_ERROR_CONTAINS(r.output, std::string("usage: keel ") + c);
  }
}

}  // namespace
}  // namespace keel
