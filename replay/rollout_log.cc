#include "replay/rollout_log.h"

#include <hdf5.h>

#include <filesystem>

#include "core/error.h"

namespace keel {

namespace {
constexpr int kLogFormatVersion = 1;

struct Dataset {
  const char* name;
  hid_t type;
};

hid_t make_extendable(hid_t file, const char* name, hid_t type) {
  hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {4096};
  hid_t space = H5Screate_simple(1, dims, maxdims);
  hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(plist, 1, chunk);
  hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
  H5Pclose(plist);
  H5Sclose(space);
  KEEL_CHECK(ds >= 0, "cannot create dataset " << name);
  return ds;
}

hsize_t extent(hid_t ds) {
  hid_t space = H5Dget_space(ds);
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space, dims, nullptr);
  H5Sclose(space);
  return dims[0];
}

void append_raw(hid_t ds, hid_t memtype, const void* data, hsize_t n) {
  if (n == 0) return;
  const hsize_t old = extent(ds);
  hsize_t size[1] = {old + n};
  H5Dset_extent(ds, size);
  hid_t file_space = H5Dget_space(ds);
  hsize_t start[1] = {old}, count[1] = {n};
  H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr);
  hid_t mem_space = H5Screate_simple(1, count, nullptr);
  const herr_t st = H5Dwrite(ds, memtype, mem_space, file_space, H5P_DEFAULT, data);
  H5Sclose(mem_space);
  H5Sclose(file_space);
  KEEL_CHECK(st >= 0, "HDF5 write failed");
}

template <typename T>
void append_vec(hid_t ds, hid_t memtype, const std::vector<T>& v) {
  append_raw(ds, memtype, v.data(), v.size());
}

}  // namespace

struct RolloutLog::Impl {
  hid_t file = -1;
  hid_t prompt_tokens, prompt_offsets, response_tokens, response_offsets, logprobs, score, policy_version, actor_id,
      group_id, finished, learner_version;
  int64_t rows = 0, prompt_total = 0, response_total = 0;
};

RolloutLog::RolloutLog(const std::string& path, const std::string& tokenizer_identity) : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const bool exists = std::filesystem::exists(path);
  if (exists) {
    m.file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    KEEL_CHECK(m.file >= 0, "rollout log " << path << " exists but is not a readable HDF5 file");
    int version = -1;
    hid_t a = H5Aopen(m.file, "format_version", H5P_DEFAULT);
    KEEL_CHECK(a >= 0, "rollout log " << path << " has no format_version attribute");
    H5Aread(a, H5T_NATIVE_INT, &version);
    H5Aclose(a);
    KEEL_CHECK(version == kLogFormatVersion, "rollout log " << path << " has format version " << version << ", expected "
                                                            << kLogFormatVersion);
    auto open = [&](const char* n) {
      hid_t d = H5Dopen2(m.file, n, H5P_DEFAULT);
      KEEL_CHECK(d >= 0, "rollout log " << path << " lacks dataset " << n);
      return d;
    };
    m.prompt_tokens = open("prompt_tokens");
    m.prompt_offsets = open("prompt_offsets");
    m.response_tokens = open("response_tokens");
    m.response_offsets = open("response_offsets");
    m.logprobs = open("logprobs");
    m.score = open("score");
    m.policy_version = open("policy_version");
    m.actor_id = open("actor_id");
    m.group_id = open("group_id");
    m.finished = open("finished");
    m.learner_version = open("learner_version");
    m.rows = static_cast<int64_t>(extent(m.score));
    m.prompt_total = static_cast<int64_t>(extent(m.prompt_tokens));
    m.response_total = static_cast<int64_t>(extent(m.response_tokens));
    return;
  }
  m.file = H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
  KEEL_CHECK(m.file >= 0, "cannot create rollout log " << path);
  m.prompt_tokens = make_extendable(m.file, "prompt_tokens", H5T_STD_I32LE);
  m.prompt_offsets = make_extendable(m.file, "prompt_offsets", H5T_STD_I64LE);
  m.response_tokens = make_extendable(m.file, "response_tokens", H5T_STD_I32LE);
  m.response_offsets = make_extendable(m.file, "response_offsets", H5T_STD_I64LE);
  m.logprobs = make_extendable(m.file, "logprobs", H5T_IEEE_F32LE);
  m.score = make_extendable(m.file, "score", H5T_IEEE_F32LE);
  m.policy_version = make_extendable(m.file, "policy_version", H5T_STD_U64LE);
  m.actor_id = make_extendable(m.file, "actor_id", H5T_STD_U32LE);
  m.group_id = make_extendable(m.file, "group_id", H5T_STD_U64LE);
  m.finished = make_extendable(m.file, "finished", H5T_STD_U8LE);
  m.learner_version = make_extendable(m.file, "learner_version", H5T_STD_U64LE);
  const int64_t zero = 0;
  append_raw(m.prompt_offsets, H5T_NATIVE_INT64, &zero, 1);
  append_raw(m.response_offsets, H5T_NATIVE_INT64, &zero, 1);
  hid_t scalar = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(m.file, "format_version", H5T_STD_I32LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT, &kLogFormatVersion);
  H5Aclose(a);
  hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, std::max<size_t>(1, tokenizer_identity.size()));
  a = H5Acreate2(m.file, "tokenizer", str, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, str, tokenizer_identity.empty() ? " " : tokenizer_identity.c_str());
  H5Aclose(a);
  H5Tclose(str);
  H5Sclose(scalar);
  H5Fflush(m.file, H5F_SCOPE_GLOBAL);
}

RolloutLog::~RolloutLog() {
  auto& m = *impl_;
  if (m.file < 0) return;
  for (hid_t d : {m.prompt_tokens, m.prompt_offsets, m.response_tokens, m.response_offsets, m.logprobs, m.score,
                  m.policy_version, m.actor_id, m.group_id, m.finished, m.learner_version})
    H5Dclose(d);
  H5Fclose(m.file);
}

void RolloutLog::append(const std::vector<wire::Rollout>& rollouts, uint64_t learner_version) {
  auto& m = *impl_;
  std::vector<int32_t> pt, rt;
  std::vector<float> lp, score;
  std::vector<int64_t> po, ro;
  std::vector<uint64_t> pv, gid, lv;
  std::vector<uint32_t> aid;
  std::vector<uint8_t> fin;
  for (const auto& r : rollouts) {
    pt.insert(pt.end(), r.prompt_tokens.begin(), r.prompt_tokens.end());
    rt.insert(rt.end(), r.response_tokens.begin(), r.response_tokens.end());
    lp.insert(lp.end(), r.logprobs.begin(), r.logprobs.end());
    m.prompt_total += static_cast<int64_t>(r.prompt_tokens.size());
    m.response_total += static_cast<int64_t>(r.response_tokens.size());
    po.push_back(m.prompt_total);
    ro.push_back(m.response_total);
    score.push_back(r.score);
    pv.push_back(r.policy_version);
    gid.push_back(r.group_id);
    aid.push_back(r.actor_id);
    fin.push_back(r.finished ? 1 : 0);
    lv.push_back(learner_version);
  }
  append_vec(m.prompt_tokens, H5T_NATIVE_INT32, pt);
  append_vec(m.response_tokens, H5T_NATIVE_INT32, rt);
  append_vec(m.logprobs, H5T_NATIVE_FLOAT, lp);
  append_vec(m.prompt_offsets, H5T_NATIVE_INT64, po);
  append_vec(m.response_offsets, H5T_NATIVE_INT64, ro);
  append_vec(m.score, H5T_NATIVE_FLOAT, score);
  append_vec(m.policy_version, H5T_NATIVE_UINT64, pv);
  append_vec(m.group_id, H5T_NATIVE_UINT64, gid);
  append_vec(m.actor_id, H5T_NATIVE_UINT32, aid);
  append_vec(m.finished, H5T_NATIVE_UINT8, fin);
  append_vec(m.learner_version, H5T_NATIVE_UINT64, lv);
  m.rows += static_cast<int64_t>(rollouts.size());
  H5Fflush(m.file, H5F_SCOPE_GLOBAL);
}

int64_t RolloutLog::size() const { return impl_->rows; }

}  // namespace keel
