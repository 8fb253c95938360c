#include "replay/rollout_log.h"

#include <hdf5.h>

#include <filesystem>

#include "core/error.h"
#include "replay/hdf5_io.h"

namespace keel {

namespace {
constexpr int kLogFormatVersion = 2;  // 2 added uid and the trained_* datasets; 1 is still read

using h5::append;
using h5::extent;

hid_t make_extendable(hid_t file, const char* name, hid_t type) { return h5::create_extendable(file, name, type, 4096); }

void append_raw(hid_t ds, hid_t memtype, const void* data, hsize_t n) { h5::append(ds, memtype, data, n); }

template <typename T>
void append_vec(hid_t ds, hid_t memtype, const std::vector<T>& v) {
  append_raw(ds, memtype, v.data(), v.size());
}

}  // namespace

struct RolloutLog::Impl {
  hid_t file = -1;
  hid_t prompt_tokens, prompt_offsets, response_tokens, response_offsets, logprobs, score, policy_version, actor_id,
      group_id, finished, learner_version, uid, trained_uid, trained_version;
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
    m.uid = open("uid");
    m.trained_uid = open("trained_uid");
    m.trained_version = open("trained_version");
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
  m.uid = make_extendable(m.file, "uid", H5T_STD_U64LE);
  m.trained_uid = make_extendable(m.file, "trained_uid", H5T_STD_U64LE);
  m.trained_version = make_extendable(m.file, "trained_version", H5T_STD_U64LE);
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
                  m.policy_version, m.actor_id, m.group_id, m.finished, m.learner_version, m.uid, m.trained_uid,
                  m.trained_version})
    H5Dclose(d);
  H5Fclose(m.file);
}

void RolloutLog::append(const std::vector<wire::Rollout>& rollouts, uint64_t learner_version) {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(h5::mutex());
  std::vector<int32_t> pt, rt;
  std::vector<float> lp, score;
  std::vector<int64_t> po, ro;
  std::vector<uint64_t> pv, gid, lv, uid;
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
    uid.push_back(r.uid);
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
  append_vec(m.uid, H5T_NATIVE_UINT64, uid);
  m.rows += static_cast<int64_t>(rollouts.size());
  H5Fflush(m.file, H5F_SCOPE_GLOBAL);
}

void RolloutLog::mark_trained(const std::vector<uint64_t>& uids, uint64_t version) {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(h5::mutex());
  append_vec(m.trained_uid, H5T_NATIVE_UINT64, uids);
  append_vec(m.trained_version, H5T_NATIVE_UINT64, std::vector<uint64_t>(uids.size(), version));
  H5Fflush(m.file, H5F_SCOPE_GLOBAL);
}

int64_t RolloutLog::size() const { return impl_->rows; }

LoggedRollout to_logged(wire::Rollout r) {
  LoggedRollout l;
  l.prompt = std::move(r.prompt_tokens);
  l.response = std::move(r.response_tokens);
  l.logprobs = std::move(r.logprobs);
  l.score = r.score;
  l.policy_version = r.policy_version;
  l.group_id = r.group_id;
  l.uid = r.uid;
  l.actor_id = r.actor_id;
  l.finished = r.finished;
  return l;
}

wire::Rollout to_wire(const LoggedRollout& l) {
  wire::Rollout r;
  r.prompt_tokens = l.prompt;
  r.response_tokens = l.response;
  r.logprobs = l.logprobs;
  r.policy_version = l.policy_version;
  r.actor_id = l.actor_id;
  r.score = l.score;
  r.finished = l.finished;
  r.group_id = l.group_id;
  r.uid = l.uid;
  return r;
}

RolloutLogContents read_rollout_log(const std::string& path) {
  h5::quiet();
  KEEL_CHECK(std::filesystem::exists(path), "rollout log " << path << " does not exist");
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  KEEL_CHECK(file >= 0, "rollout log " << path << " is not a readable HDF5 file");
  RolloutLogContents out;
  std::vector<hid_t> open;
  try {
    const int64_t version = h5::get_attr_int(file, "format_version", path);
    KEEL_CHECK(version == 1 || version == kLogFormatVersion, "rollout log " << path << " has format version " << version
                                                                                << " (this keel reads 1 and " << kLogFormatVersion << ")");
    out.tokenizer = h5::has_attr(file, "tokenizer") ? h5::get_attr_string(file, "tokenizer", path) : "";
    auto ds = [&](const char* n) {
      open.push_back(h5::open_dataset(file, n, path));
      return open.back();
    };
    const hid_t po = ds("prompt_offsets"), ro = ds("response_offsets"), pt = ds("prompt_tokens"), rt = ds("response_tokens");
    const hid_t score = ds("score"), pv = ds("policy_version"), aid = ds("actor_id"), gid = ds("group_id"), fin = ds("finished"),
                lv = ds("learner_version");
    // Appends extend each dataset in turn; the complete rows are those every dataset holds.
    hsize_t n = std::min(extent(po), extent(ro));
    n = n == 0 ? 0 : n - 1;
    for (hid_t d : {score, pv, aid, gid, fin, lv}) n = std::min(n, extent(d));
    std::vector<int64_t> poff(n + 1), roff(n + 1);
    h5::read_range(po, H5T_NATIVE_INT64, 0, n + 1, poff.data(), path + " /prompt_offsets");
    h5::read_range(ro, H5T_NATIVE_INT64, 0, n + 1, roff.data(), path + " /response_offsets");
    while (n > 0 && (static_cast<hsize_t>(poff[n]) > extent(pt) || static_cast<hsize_t>(roff[n]) > extent(rt))) --n;
    for (hsize_t i = 0; i < n; ++i)
      KEEL_CHECK(poff[i] <= poff[i + 1] && roff[i] <= roff[i + 1], "rollout log " << path << ": offsets decrease at row " << i);
    std::vector<int32_t> ptok(static_cast<size_t>(poff[n])), rtok(static_cast<size_t>(roff[n]));
    const hid_t lp = ds("logprobs");
    KEEL_CHECK(extent(lp) >= rtok.size(), "rollout log " << path << ": /logprobs is shorter than /response_tokens");
    std::vector<float> lps(rtok.size());
    h5::read_range(lp, H5T_NATIVE_FLOAT, 0, lps.size(), lps.data(), path + " /logprobs");
    h5::read_range(pt, H5T_NATIVE_INT32, 0, ptok.size(), ptok.data(), path + " /prompt_tokens");
    h5::read_range(rt, H5T_NATIVE_INT32, 0, rtok.size(), rtok.data(), path + " /response_tokens");
    std::vector<float> sc(n);
    std::vector<uint64_t> pvv(n), gidv(n), lvv(n);
    std::vector<uint32_t> aidv(n);
    std::vector<uint8_t> finv(n);
    h5::read_range(score, H5T_NATIVE_FLOAT, 0, n, sc.data(), path);
    h5::read_range(pv, H5T_NATIVE_UINT64, 0, n, pvv.data(), path);
    h5::read_range(gid, H5T_NATIVE_UINT64, 0, n, gidv.data(), path);
    h5::read_range(lv, H5T_NATIVE_UINT64, 0, n, lvv.data(), path);
    h5::read_range(aid, H5T_NATIVE_UINT32, 0, n, aidv.data(), path);
    h5::read_range(fin, H5T_NATIVE_UINT8, 0, n, finv.data(), path);
    out.rows.resize(n);
    for (hsize_t i = 0; i < n; ++i) {
      auto& r = out.rows[i];
      r.prompt.assign(ptok.begin() + poff[i], ptok.begin() + poff[i + 1]);
      r.response.assign(rtok.begin() + roff[i], rtok.begin() + roff[i + 1]);
      r.logprobs.assign(lps.begin() + roff[i], lps.begin() + roff[i + 1]);
      r.score = sc[i];
      r.policy_version = pvv[i];
      r.group_id = gidv[i];
      r.learner_version = lvv[i];
      r.actor_id = aidv[i];
      r.finished = finv[i] != 0;
    }
    if (version >= 2) {
      const hid_t u = ds("uid"), tu = ds("trained_uid"), tv = ds("trained_version");
      std::vector<uint64_t> uv(n);
      h5::read_range(u, H5T_NATIVE_UINT64, 0, std::min<hsize_t>(n, extent(u)), uv.data(), path + " /uid");
      for (hsize_t i = 0; i < n; ++i) out.rows[i].uid = uv[i];
      const hsize_t t = std::min(extent(tu), extent(tv));
      std::vector<uint64_t> tuv(t), tvv(t);
      h5::read_range(tu, H5T_NATIVE_UINT64, 0, t, tuv.data(), path + " /trained_uid");
      h5::read_range(tv, H5T_NATIVE_UINT64, 0, t, tvv.data(), path + " /trained_version");
      for (hsize_t i = 0; i < t; ++i) out.trained.push_back({tuv[i], tvv[i]});
    }
  } catch (...) {
    for (hid_t d : open) H5Dclose(d);
    H5Fclose(file);
    throw;
  }
  for (hid_t d : open) H5Dclose(d);
  H5Fclose(file);
  return out;
}

}  // namespace keel
