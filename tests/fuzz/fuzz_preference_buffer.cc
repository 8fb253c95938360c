// Preference buffers as another tool might write them, with every field the fuzzer's to choose:
// the format attributes, pair counts, offsets (sorted, unsorted, negative, past the data), token
// dtypes (int32, int64, float), datasets left out or of the wrong length, metadata and cached
// reference log-probs. Structure-aware: the fuzz input drives a writer on the HDF5 C API, so that
// keel's own checks are exercised rather than the HDF5 library's parser. Contract: PreferenceReader
// opens and reads every pair, or throws a KeelError.
#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "replay/hdf5_io.h"
#include "replay/preference_buffer.h"
#include "tests/fuzz/fuzz_seeds.h"

namespace {

hid_t pick_type(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 9)) {
    case 0:
      return H5T_STD_I64LE;
    case 1:
      return H5T_IEEE_F32LE;
    case 2:
      return H5T_STD_U8LE;
    default:
      return H5T_STD_I32LE;
  }
}

void write_dataset(hid_t file, const std::string& name, hid_t type, const std::vector<int64_t>& values) {
  const hsize_t n = values.size();
  hid_t space = H5Screate_simple(1, &n, nullptr);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t ds = H5Dcreate2(file, name.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  if (ds >= 0) {
    if (n) H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(ds);
  }
  H5Pclose(lcpl);
  H5Sclose(space);
}

std::vector<int64_t> offsets(FuzzedDataProvider& in, int64_t pairs, int64_t total) {
  std::vector<int64_t> o;
  const int shape = in.ConsumeIntegralInRange<int>(0, 7);
  const int64_t count = shape == 1 ? in.ConsumeIntegralInRange<int64_t>(0, 12) : pairs + 1;
  if (shape == 2) {  // arbitrary values
    for (int64_t i = 0; i < count; ++i) o.push_back(in.ConsumeIntegral<int64_t>());
    return o;
  }
  int64_t at = 0;
  for (int64_t i = 0; i < count; ++i) {
    o.push_back(at);
    at += in.ConsumeIntegralInRange<int64_t>(shape == 3 ? -3 : 0, 6);
  }
  if (shape != 4 && !o.empty()) o.back() = total;  // shape 4: the last offset disagrees with the data
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/keel-fuzz-prefs-" + std::to_string(::getpid()) + ".h5";
  keel::h5::quiet();
  FuzzedDataProvider in(data, size);
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0) return 0;
  if (in.ConsumeIntegralInRange<int>(0, 9))
    keel::h5::set_attr_string(file, "format", in.ConsumeBool() ? "keel-preferences" : in.ConsumeRandomLengthString(16));
  if (in.ConsumeIntegralInRange<int>(0, 9))
    keel::h5::set_attr_int(file, "format_version", in.ConsumeIntegralInRange<int64_t>(-1, 3));
  if (in.ConsumeBool()) keel::h5::set_attr_string(file, "tokenizer", in.ConsumeRandomLengthString(24));
  const int64_t pairs = in.ConsumeIntegralInRange<int64_t>(0, 6);
  const bool with_text = in.ConsumeIntegralInRange<int>(0, 3) == 0;
  for (const char* side : {"prompt", "chosen", "rejected"}) {
    if (in.ConsumeIntegralInRange<int>(0, 19) == 0) continue;  // side left out
    const int64_t total = in.ConsumeIntegralInRange<int64_t>(0, 24);
    std::vector<int64_t> tokens;
    for (int64_t i = 0; i < total; ++i) tokens.push_back(in.ConsumeIntegralInRange<int64_t>(-2, 70000));
    write_dataset(file, std::string(side) + "/tokens", pick_type(in), tokens);
    if (in.ConsumeIntegralInRange<int>(0, 19))
      write_dataset(file, std::string(side) + "/offsets", H5T_STD_I64LE, offsets(in, pairs, total));
    if (with_text) {
      const int64_t chars = in.ConsumeIntegralInRange<int64_t>(0, 24);
      std::vector<int64_t> text;
      for (int64_t i = 0; i < chars; ++i) text.push_back(in.ConsumeIntegralInRange<int64_t>(0, 255));
      write_dataset(file, std::string(side) + "/text", H5T_STD_U8LE, text);
      write_dataset(file, std::string(side) + "/text_offsets", H5T_STD_I64LE, offsets(in, pairs, chars));
    }
  }
  if (in.ConsumeBool()) {
    for (const char* name : {"meta/chosen_reward", "meta/rejected_reward", "meta/policy_version"}) {
      if (in.ConsumeIntegralInRange<int>(0, 9) == 0) continue;
      std::vector<int64_t> v(static_cast<size_t>(in.ConsumeBool() ? pairs : in.ConsumeIntegralInRange<int64_t>(0, 8)), 1);
      write_dataset(file, name, pick_type(in), v);
    }
    if (in.ConsumeBool()) {
      std::vector<int64_t> src(static_cast<size_t>(in.ConsumeIntegralInRange<int64_t>(0, 12)), 'x');
      write_dataset(file, "meta/source", H5T_STD_U8LE, src);
      write_dataset(file, "meta/source_offsets", H5T_STD_I64LE, offsets(in, pairs, static_cast<int64_t>(src.size())));
    }
  }
  if (in.ConsumeBool()) {
    for (const char* name : {"ref/chosen_logprob", "ref/rejected_logprob"}) {
      if (in.ConsumeIntegralInRange<int>(0, 9) == 0) continue;
      std::vector<int64_t> v(static_cast<size_t>(in.ConsumeBool() ? pairs : in.ConsumeIntegralInRange<int64_t>(0, 8)), -1);
      write_dataset(file, name, pick_type(in), v);
    }
  }
  H5Fclose(file);
  try {
    keel::PreferenceReader reader(path);
    const auto all = reader.read(0, reader.size());
    FUZZ_ASSERT(static_cast<int64_t>(all.size()) == reader.size(), "an opened buffer reads back every pair it counts");
  } catch (const keel::KeelError&) {
  }
  return 0;
}
