#include "replay/rollout_log.h"

#include <hdf5.h>

#include <filesystem>

#include "core/error.h"
#include "replay/hdf5_io.h"

namespace keel {

namespace {
constexpr int kLogFormatVersion = 2;  // 2 added uid and the trained_* datasets; 1 is still read

using h5::extent;
using h5::Handle;

template <typename T>
void append_vec(const Handle& ds, hid_t memtype, const std::vector<T>& v) {
  h5::append(ds.get(), memtype, v.data(), v.size());
}

}  // namespace

struct RolloutLog::Impl {
  std::string origin;  // "rollout log <path>", for messages
  Handle file;
  Handle prompt_tokens, prompt_offsets, response_tokens, response_offsets, logprobs, score, policy_version, actor_id, group_id,
      finished, learner_version, uid, trained_uid, trained_version;
  int64_t rows = 0, prompt_total = 0, response_total = 0;

  struct Dataset {
    const char* name;
    Handle* handle;
    hid_t file_type;  // as created
  };
  // Every dataset, for opening or creating them all alike.
  std::vector<Dataset> datasets() {
    return {{"prompt_tokens", &prompt_tokens, H5T_STD_I32LE},
            {"prompt_offsets", &prompt_offsets, H5T_STD_I64LE},
            {"response_tokens", &response_tokens, H5T_STD_I32LE},
            {"response_offsets", &response_offsets, H5T_STD_I64LE},
            {"logprobs", &logprobs, H5T_IEEE_F32LE},
            {"score", &score, H5T_IEEE_F32LE},
            {"policy_version", &policy_version, H5T_STD_U64LE},
            {"actor_id", &actor_id, H5T_STD_U32LE},
            {"group_id", &group_id, H5T_STD_U64LE},
            {"finished", &finished, H5T_STD_U8LE},
            {"learner_version", &learner_version, H5T_STD_U64LE},
            {"uid", &uid, H5T_STD_U64LE},
            {"trained_uid", &trained_uid, H5T_STD_U64LE},
            {"trained_version", &trained_version, H5T_STD_U64LE}};
  }
  void open_existing(const std::string& path);
  void create_new(const std::string& path, const std::string& tokenizer_identity);
};

void RolloutLog::Impl::open_existing(const std::string& path) {
  file = h5::open_file(path, H5F_ACC_RDWR, "rollout log");
  const int64_t version = h5::get_attr_int(file.get(), "format_version", origin);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, version == kLogFormatVersion,
                  "rollout log " << path << " has format version " << version << ", expected " << kLogFormatVersion);
  for (const auto& d : datasets()) *d.handle = h5::open_dataset(file.get(), d.name, origin);
  rows = static_cast<int64_t>(extent(score.get()));
  prompt_total = static_cast<int64_t>(extent(prompt_tokens.get()));
  response_total = static_cast<int64_t>(extent(response_tokens.get()));
}

void RolloutLog::Impl::create_new(const std::string& path, const std::string& tokenizer_identity) {
  file = h5::create_file(path, H5F_ACC_EXCL, "rollout log");
  for (const auto& d : datasets()) *d.handle = h5::create_extendable(file.get(), d.name, d.file_type, 4096);
  const int64_t zero = 0;
  h5::append(prompt_offsets.get(), H5T_NATIVE_INT64, &zero, 1);
  h5::append(response_offsets.get(), H5T_NATIVE_INT64, &zero, 1);
  h5::set_attr_int(file.get(), "format_version", kLogFormatVersion, H5T_STD_I32LE);
  h5::set_attr_fixed_string(file.get(), "tokenizer", tokenizer_identity);
  h5::flush(file.get(), origin);
}

RolloutLog::RolloutLog(const std::string& path, const std::string& tokenizer_identity) : impl_(std::make_unique<Impl>()) {
  h5::quiet();
  impl_->origin = "rollout log " + path;
  if (std::filesystem::exists(path))
    impl_->open_existing(path);
  else
    impl_->create_new(path, tokenizer_identity);
}

RolloutLog::~RolloutLog() = default;

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
  h5::flush(m.file.get(), m.origin);
}

void RolloutLog::mark_trained(const std::vector<uint64_t>& uids, uint64_t version) {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(h5::mutex());
  append_vec(m.trained_uid, H5T_NATIVE_UINT64, uids);
  append_vec(m.trained_version, H5T_NATIVE_UINT64, std::vector<uint64_t>(uids.size(), version));
  h5::flush(m.file.get(), m.origin);
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

namespace {

int64_t read_one(const Handle& ds, hsize_t i, const std::string& origin) {
  int64_t v = 0;
  h5::read_range(ds.get(), H5T_NATIVE_INT64, i, 1, &v, origin);
  return v;
}

// The rows that every dataset of the log holds in full. Appends extend each dataset in turn (tokens
// and log-probs before offsets, offsets before the per-row columns), so a learner killed mid-append
// leaves a partial last row, which readers skip.
hsize_t complete_rows(const Handle& po, const Handle& ro, const Handle& pt, const Handle& rt,
                      std::initializer_list<const Handle*> per_row, const std::string& origin) {
  hsize_t n = std::min(extent(po.get()), extent(ro.get()));
  n = n == 0 ? 0 : n - 1;
  for (const Handle* d : per_row) n = std::min(n, extent(d->get()));
  auto past = [&](const Handle& offsets, const Handle& data) {
    const int64_t end = read_one(offsets, n, origin);
    return end < 0 || static_cast<hsize_t>(end) > extent(data.get());
  };
  while (n > 0 && (past(po, pt) || past(ro, rt))) --n;
  return n;
}

// Prompt, response and log-probs of rows [0, n) from the flat datasets, split at the offsets.
void read_token_rows(const Handle& po, const Handle& ro, const Handle& pt, const Handle& rt, const Handle& lp, hsize_t n,
                     const std::string& origin, std::vector<LoggedRollout>* rows) {
  const auto tail = h5::OffsetsTail::kAllowed;
  const auto n_rows = static_cast<int64_t>(n);
  const std::vector<int64_t> poff = h5::read_offsets(po.get(), n_rows, extent(pt.get()), origin, tail);
  const std::vector<int64_t> roff = h5::read_offsets(ro.get(), n_rows, extent(rt.get()), origin, tail);
  std::vector<int32_t> ptok(static_cast<size_t>(poff[n])), rtok(static_cast<size_t>(roff[n]));
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, extent(lp.get()) >= rtok.size(),
                  origin << ": /logprobs is shorter than /response_tokens");
  std::vector<float> lps(rtok.size());
  h5::read_range(lp.get(), H5T_NATIVE_FLOAT, 0, lps.size(), lps.data(), origin + " /logprobs");
  h5::read_range(pt.get(), H5T_NATIVE_INT32, 0, ptok.size(), ptok.data(), origin + " /prompt_tokens");
  h5::read_range(rt.get(), H5T_NATIVE_INT32, 0, rtok.size(), rtok.data(), origin + " /response_tokens");
  rows->resize(n);
  for (hsize_t i = 0; i < n; ++i) {
    auto& r = (*rows)[i];
    r.prompt.assign(ptok.begin() + poff[i], ptok.begin() + poff[i + 1]);
    r.response.assign(rtok.begin() + roff[i], rtok.begin() + roff[i + 1]);
    r.logprobs.assign(lps.begin() + roff[i], lps.begin() + roff[i + 1]);
  }
}

template <typename T, typename F>
void read_column(const Handle& ds, hid_t memtype, std::vector<LoggedRollout>* rows, const std::string& origin, F set) {
  std::vector<T> v(rows->size());
  h5::read_range(ds.get(), memtype, 0, v.size(), v.data(), origin + " " + h5::name_of(ds.get()));
  for (size_t i = 0; i < v.size(); ++i) set((*rows)[i], v[i]);
}

// Version 2: the rows' uids and the trained_uid / trained_version pairs.
void read_uids(hid_t file, const std::string& origin, RolloutLogContents* out) {
  const Handle u = h5::open_dataset(file, "uid", origin), tu = h5::open_dataset(file, "trained_uid", origin),
               tv = h5::open_dataset(file, "trained_version", origin);
  const size_t n = out->rows.size();
  std::vector<uint64_t> uv(n);
  h5::read_range(u.get(), H5T_NATIVE_UINT64, 0, std::min<hsize_t>(n, extent(u.get())), uv.data(), origin + " /uid");
  for (size_t i = 0; i < n; ++i) out->rows[i].uid = uv[i];
  const hsize_t t = std::min(extent(tu.get()), extent(tv.get()));
  std::vector<uint64_t> tuv(t), tvv(t);
  h5::read_range(tu.get(), H5T_NATIVE_UINT64, 0, t, tuv.data(), origin + " /trained_uid");
  h5::read_range(tv.get(), H5T_NATIVE_UINT64, 0, t, tvv.data(), origin + " /trained_version");
  for (hsize_t i = 0; i < t; ++i) out->trained.push_back({tuv[i], tvv[i]});
}

}  // namespace

RolloutLogContents read_rollout_log(const std::string& path) {
  h5::quiet();
  const std::string origin = "rollout log " + path;
  const Handle file = h5::open_file(path, H5F_ACC_RDONLY, "rollout log");
  const int64_t version = h5::get_attr_int(file.get(), "format_version", origin);
  KEEL_CHECK_KIND(
      ErrorKind::kCorruptData, version == 1 || version == kLogFormatVersion,
      "rollout log " << path << " has format version " << version << " (this keel reads 1 and " << kLogFormatVersion << ")");
  RolloutLogContents out;
  out.tokenizer = h5::has_attr(file.get(), "tokenizer") ? h5::get_attr_string(file.get(), "tokenizer", origin) : "";
  auto ds = [&](const char* n) { return h5::open_dataset(file.get(), n, origin); };
  const Handle po = ds("prompt_offsets"), ro = ds("response_offsets"), pt = ds("prompt_tokens"), rt = ds("response_tokens");
  const Handle score = ds("score"), pv = ds("policy_version"), aid = ds("actor_id"), gid = ds("group_id"), fin = ds("finished"),
               lv = ds("learner_version");
  const hsize_t n = complete_rows(po, ro, pt, rt, {&score, &pv, &aid, &gid, &fin, &lv}, origin);
  read_token_rows(po, ro, pt, rt, ds("logprobs"), n, origin, &out.rows);
  auto* rows = &out.rows;
  read_column<float>(score, H5T_NATIVE_FLOAT, rows, origin, [](LoggedRollout& r, float v) { r.score = v; });
  read_column<uint64_t>(pv, H5T_NATIVE_UINT64, rows, origin, [](LoggedRollout& r, uint64_t v) { r.policy_version = v; });
  read_column<uint64_t>(gid, H5T_NATIVE_UINT64, rows, origin, [](LoggedRollout& r, uint64_t v) { r.group_id = v; });
  read_column<uint64_t>(lv, H5T_NATIVE_UINT64, rows, origin, [](LoggedRollout& r, uint64_t v) { r.learner_version = v; });
  read_column<uint32_t>(aid, H5T_NATIVE_UINT32, rows, origin, [](LoggedRollout& r, uint32_t v) { r.actor_id = v; });
  read_column<uint8_t>(fin, H5T_NATIVE_UINT8, rows, origin, [](LoggedRollout& r, uint8_t v) { r.finished = v != 0; });
  if (version >= 2) read_uids(file.get(), origin, &out);
  return out;
}

}  // namespace keel
