// Errors with a kind: plain KEEL_CHECK is kInvalidArgument with its message format unchanged; a
// missing file is kIo; a corrupt offsets dataset (written here with the HDF5 C API) is
// kCorruptData naming the file, the dataset and the row, for the preference buffer and the rollout
// log alike; a shared-memory region that does not fit is kOutOfSpace. And h5::Handle closes what
// it owns exactly once.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/safetensors.h"
#include "wire/weights/region.h"
#include "core/token_file.h"
#include "replay/hdf5_io.h"
#include "replay/preference_buffer.h"
#include "replay/rollout_log.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

// The KeelError `f` throws, if any (any other exception escapes and fails the test).
std::optional<KeelError> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const KeelError& e) {
    return e;
  }
  return std::nullopt;
}

bool has(const std::optional<KeelError>& e, const std::string& text) {
  return e && std::string(e->what()).find(text) != std::string::npos;
}

// Overwrites element `i` of the one-dimensional int64 dataset `name` in an existing file.
void poke_int64(const std::string& path, const std::string& name, hsize_t i, int64_t value) {
  h5::quiet();
  h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  ASSERT_TRUE(file.valid()) << path;
  h5::Handle ds(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT));
  ASSERT_TRUE(ds.valid()) << name;
  h5::write_range(ds.get(), H5T_NATIVE_INT64, i, 1, &value);
  file.close(path);
}

void write_buffer(const std::string& path, int pairs) {
  PreferenceWriter w(path, "", {false, false});
  PreferencePair p;
  p.prompt = {1, 2};
  p.chosen = {3, 4, 5};
  p.rejected = {6};
  for (int i = 0; i < pairs; ++i) w.append(p);
  w.finish();
}

TEST(ErrorKinds, PlainCheckIsInvalidArgumentWithTheSameMessage) {
  const auto e =
      error_of([] {
        KEEL_CHECK(1 + 1 == 3, "arithmetic is "
                                   << "off");
      });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind(), ErrorKind::kInvalidArgument);
  const std::string what = e->what();
  EXPECT_EQ(what, "arithmetic is off") << "a user's message carries no source path";
  EXPECT_EQ(e->where().rfind("tests/error_kinds_test.cc:", 0), 0u) << e->where();
  EXPECT_EQ(error_of([] { KEEL_FAIL("no"); })->kind(), ErrorKind::kInvalidArgument);
  EXPECT_FALSE(error_of([] { KEEL_CHECK(true, "never"); }));
  const auto k = error_of([] { KEEL_CHECK_KIND(ErrorKind::kPeer, false, "gone"); });
  ASSERT_TRUE(k);
  EXPECT_EQ(k->kind(), ErrorKind::kPeer);
  EXPECT_EQ(std::string(k->what()), "gone");
  EXPECT_EQ(error_of([] { KEEL_FAIL_KIND(ErrorKind::kInternal, "bug"); })->kind(), ErrorKind::kInternal);
  EXPECT_STREQ(error_kind_name(ErrorKind::kCorruptData), "corrupt_data");
  EXPECT_STREQ(error_kind_name(ErrorKind::kOutOfSpace), "out_of_space");
  EXPECT_EQ(io_error_kind(ENOSPC), ErrorKind::kOutOfSpace);
  EXPECT_EQ(io_error_kind(ENOENT), ErrorKind::kIo);
}

TEST(ErrorKinds, MissingFilesAreIo) {
  const auto dir = test::temp_dir("error_kinds_missing");
  const auto pref = error_of([&] { PreferenceReader r(dir + "/absent.h5"); });
  ASSERT_TRUE(pref);
  EXPECT_EQ(pref->kind(), ErrorKind::kIo) << pref->what();
  EXPECT_TRUE(has(pref, "does not exist")) << pref->what();
  const auto log = error_of([&] { read_rollout_log(dir + "/absent.h5"); });
  ASSERT_TRUE(log);
  EXPECT_EQ(log->kind(), ErrorKind::kIo) << log->what();
  EXPECT_EQ(error_of([&] { load_safetensors(dir + "/absent.safetensors"); })->kind(), ErrorKind::kIo);
  EXPECT_EQ(error_of([&] { TokenFile t(dir + "/absent.tok"); })->kind(), ErrorKind::kIo);
  EXPECT_EQ(error_of([&] { SharedWeights::open(dir + "/absent.weights"); })->kind(), ErrorKind::kIo);
  // Present but not what it claims to be: corrupt, not I/O.
  test::write_text(dir + "/text.h5", "not an HDF5 file at all, just some text of reasonable length\n");
  const auto text = error_of([&] { PreferenceReader r(dir + "/text.h5"); });
  ASSERT_TRUE(text);
  EXPECT_EQ(text->kind(), ErrorKind::kCorruptData) << text->what();
  test::write_text(dir + "/text.safetensors", std::string("\x02\0\0\0\0\0\0\0{]", 10));
  EXPECT_EQ(error_of([&] { load_safetensors(dir + "/text.safetensors"); })->kind(), ErrorKind::kCorruptData);
}

TEST(ErrorKinds, CorruptPreferenceOffsetsAreCorruptDataNamingDatasetAndRow) {
  const auto dir = test::temp_dir("error_kinds_prefs");
  write_buffer(dir + "/good.h5", 6);
  ASSERT_EQ(PreferenceReader(dir + "/good.h5").size(), 6);
  // chosen/offsets is [0, 3, 6, ...]: entry 3 set below entry 2, so row 2 runs backwards.
  std::filesystem::copy_file(dir + "/good.h5", dir + "/down.h5");
  poke_int64(dir + "/down.h5", "chosen/offsets", 3, 1);
  const auto down = error_of([&] { PreferenceReader r(dir + "/down.h5"); });
  ASSERT_TRUE(down) << "decreasing offsets must be an error";
  EXPECT_EQ(down->kind(), ErrorKind::kCorruptData) << down->what();
  EXPECT_TRUE(has(down, "down.h5")) << down->what();
  EXPECT_TRUE(has(down, "/chosen/offsets decreases at row 2")) << down->what();
  // The last offset short of the data is a live buffer's append cut short: read up to it.
  std::filesystem::copy_file(dir + "/good.h5", dir + "/short.h5");
  poke_int64(dir + "/short.h5", "rejected/offsets", 6, 5);
  EXPECT_EQ(PreferenceReader(dir + "/short.h5").size(), 6);
  // The last offset past the data is corrupt.
  std::filesystem::copy_file(dir + "/good.h5", dir + "/past.h5");
  poke_int64(dir + "/past.h5", "rejected/offsets", 6, 9);
  const auto past_end = error_of([&] { PreferenceReader r(dir + "/past.h5"); });
  ASSERT_TRUE(past_end);
  EXPECT_EQ(past_end->kind(), ErrorKind::kCorruptData) << past_end->what();
  EXPECT_TRUE(has(past_end, "/rejected/offsets")) << past_end->what();
  // The first offset not 0.
  std::filesystem::copy_file(dir + "/good.h5", dir + "/first.h5");
  poke_int64(dir + "/first.h5", "prompt/offsets", 0, 1);
  const auto first = error_of([&] { PreferenceReader r(dir + "/first.h5"); });
  ASSERT_TRUE(first);
  EXPECT_EQ(first->kind(), ErrorKind::kCorruptData);
  EXPECT_TRUE(has(first, "/prompt/offsets[0] is 1, expected 0")) << first->what();
}

wire::Rollout rollout(int32_t token) {
  wire::Rollout r;
  r.prompt_tokens = {1, token};
  r.response_tokens = {token, token + 1};
  r.logprobs = {-0.5f, -0.25f};
  r.uid = static_cast<uint64_t>(token);
  return r;
}

TEST(ErrorKinds, CorruptRolloutLogOffsetsAreCorruptData) {
  const auto dir = test::temp_dir("error_kinds_log");
  {
    RolloutLog log(dir + "/log.h5", "tok");
    log.append({rollout(10), rollout(20), rollout(30)}, 1);
  }
  ASSERT_EQ(read_rollout_log(dir + "/log.h5").rows.size(), 3u);
  // response_offsets is [0, 2, 4, 6]: entry 2 set to 1, below entry 1, so row 1 runs backwards.
  poke_int64(dir + "/log.h5", "response_offsets", 2, 1);
  const auto e = error_of([&] { read_rollout_log(dir + "/log.h5"); });
  ASSERT_TRUE(e) << "decreasing offsets must be an error";
  EXPECT_EQ(e->kind(), ErrorKind::kCorruptData) << e->what();
  EXPECT_TRUE(has(e, "rollout log " + dir + "/log.h5")) << e->what();
  EXPECT_TRUE(has(e, "/response_offsets decreases at row 1")) << e->what();
  // Restored, the log reads again: the error came from that one entry.
  poke_int64(dir + "/log.h5", "response_offsets", 2, 4);
  EXPECT_EQ(read_rollout_log(dir + "/log.h5").rows.size(), 3u);
}

TEST(ErrorKinds, OffsetsValidatorAcceptsATailOnlyWhenAsked) {
  const auto dir = test::temp_dir("error_kinds_validator");
  h5::quiet();
  h5::Handle file = h5::create_file(dir + "/v.h5", H5F_ACC_TRUNC, "test file");
  const h5::Handle offs = h5::create_extendable(file.get(), "offsets", H5T_STD_I64LE);
  h5::append(offs.get(), H5T_NATIVE_INT64, std::vector<int64_t>{0, 2, 2, 5});
  EXPECT_EQ(h5::read_offsets(offs.get(), 3, 5, "v.h5"), (std::vector<int64_t>{0, 2, 2, 5}));
  EXPECT_EQ(h5::read_offsets(offs.get(), -1, 5, "v.h5").size(), 4u);
  // Data past the last offset: an error for a finished file, an append cut short for a log.
  const auto tail = error_of([&] { h5::read_offsets(offs.get(), 3, 7, "v.h5"); });
  ASSERT_TRUE(tail);
  EXPECT_EQ(tail->kind(), ErrorKind::kCorruptData);
  EXPECT_EQ(h5::read_offsets(offs.get(), 3, 7, "v.h5", h5::OffsetsTail::kAllowed).back(), 5);
  EXPECT_EQ(h5::read_offsets(offs.get(), 2, 7, "v.h5", h5::OffsetsTail::kAllowed).size(), 3u);
  const auto count = error_of([&] { h5::read_offsets(offs.get(), 2, 5, "v.h5"); });
  ASSERT_TRUE(count);
  EXPECT_EQ(count->kind(), ErrorKind::kCorruptData);
  EXPECT_TRUE(has(count, "v.h5: /offsets has 4 entries, expected 3")) << count->what();
  // Past the data is corrupt in either mode.
  const auto past = error_of([&] { h5::read_offsets(offs.get(), 3, 4, "v.h5", h5::OffsetsTail::kAllowed); });
  ASSERT_TRUE(past);
  EXPECT_TRUE(has(past, "(truncated file?)")) << past->what();
}

TEST(ErrorKinds, HandleClosesWhatItOwnsOnce) {
  const auto dir = test::temp_dir("error_kinds_handle");
  h5::quiet();
  h5::Handle a = h5::create_file(dir + "/h.h5", H5F_ACC_TRUNC, "test file");
  const hid_t id = a.get();
  ASSERT_GT(H5Iis_valid(id), 0);
  {
    h5::Handle b = std::move(a);
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), id);
    EXPECT_GT(H5Iis_valid(id), 0);
  }
  EXPECT_LE(H5Iis_valid(id), 0) << "the moved-to handle closes the file when it goes";
  h5::Handle c = h5::open_file(dir + "/h.h5", H5F_ACC_RDONLY, "test file");
  EXPECT_TRUE(c.valid());
  c.close("test file");
  EXPECT_FALSE(c.valid());
}

TEST(ErrorKinds, SharedWeightsThatDoNotFitAreOutOfSpace) {
  const auto dir = test::temp_dir("error_kinds_shm");
  // A file size limit below the region: posix_fallocate fails with EFBIG (SIGXFSZ ignored).
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  rlimit small = old;
  small.rlim_cur = 1 << 20;
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const auto e = error_of([&] { SharedWeights::create(dir + "/big.weights", {{"w", torch::zeros({1 << 20})}}); });
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_TRUE(e) << "a 4 MiB region under a 1 MiB file size limit must fail";
  EXPECT_EQ(e->kind(), ErrorKind::kOutOfSpace) << e->what();
  EXPECT_TRUE(has(e, "big.weights")) << e->what();
  // A directory that does not exist is an I/O failure, not a lack of room.
  const auto nodir = error_of([&] { SharedWeights::create(dir + "/no/such/dir/w.weights", {{"w", torch::zeros({4})}}); });
  ASSERT_TRUE(nodir);
  EXPECT_EQ(nodir->kind(), ErrorKind::kIo) << nodir->what();
  // A file that is not a weights region is corrupt.
  test::write_text(dir + "/junk.weights", std::string(4096, 'x'));
  EXPECT_EQ(error_of([&] { SharedWeights::open(dir + "/junk.weights"); })->kind(), ErrorKind::kCorruptData);
}

}  // namespace
}  // namespace keel
