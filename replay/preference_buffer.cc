#include "replay/preference_buffer.h"

#include <hdf5.h>

#include <filesystem>

#include "core/error.h"
#include "replay/hdf5_io.h"

namespace keel {

namespace {

constexpr const char* kFormatName = "keel-preferences";
const char* const kSides[3] = {"prompt", "chosen", "rejected"};

std::string s(const char* side, const char* what) { return std::string(side) + "/" + what; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

struct PreferenceWriter::Impl {
  std::string path, write_path;
  PreferenceContents contents;
  bool atomic = true, finished = false;
  hid_t file = -1;
  hid_t tokens[3], offsets[3], text[3] = {-1, -1, -1}, text_offsets[3] = {-1, -1, -1};
  hid_t chosen_reward = -1, rejected_reward = -1, policy_version = -1, source = -1, source_offsets = -1;
  int64_t pairs = 0, token_total[3] = {0, 0, 0}, text_total[3] = {0, 0, 0}, source_total = 0;

  // Appends are staged and written in blocks: one HDF5 extend+write per dataset per block.
  std::vector<int32_t> tok_buf[3];
  std::vector<int64_t> off_buf[3], text_off_buf[3], source_off_buf;
  std::string text_buf[3], source_buf;
  std::vector<float> cr_buf, rr_buf;
  std::vector<int64_t> pv_buf;

  void flush() {
    for (int k = 0; k < 3; ++k) {
      h5::append(tokens[k], H5T_NATIVE_INT32, tok_buf[k]);
      h5::append(offsets[k], H5T_NATIVE_INT64, off_buf[k]);
      tok_buf[k].clear();
      off_buf[k].clear();
      if (contents.text) {
        h5::append(text[k], H5T_NATIVE_UINT8, text_buf[k].data(), text_buf[k].size());
        h5::append(text_offsets[k], H5T_NATIVE_INT64, text_off_buf[k]);
        text_buf[k].clear();
        text_off_buf[k].clear();
      }
    }
    if (contents.meta) {
      h5::append(chosen_reward, H5T_NATIVE_FLOAT, cr_buf);
      h5::append(rejected_reward, H5T_NATIVE_FLOAT, rr_buf);
      h5::append(policy_version, H5T_NATIVE_INT64, pv_buf);
      h5::append(source, H5T_NATIVE_UINT8, source_buf.data(), source_buf.size());
      h5::append(source_offsets, H5T_NATIVE_INT64, source_off_buf);
      cr_buf.clear();
      rr_buf.clear();
      pv_buf.clear();
      source_buf.clear();
      source_off_buf.clear();
    }
    H5Fflush(file, H5F_SCOPE_GLOBAL);
  }

  void close() {
    if (file < 0) return;
    for (int k = 0; k < 3; ++k)
      for (hid_t d : {tokens[k], offsets[k], text[k], text_offsets[k]})
        if (d >= 0) H5Dclose(d);
    for (hid_t d : {chosen_reward, rejected_reward, policy_version, source, source_offsets})
      if (d >= 0) H5Dclose(d);
    H5Fclose(file);
    file = -1;
  }
};

PreferenceWriter::PreferenceWriter(const std::string& path, const std::string& tokenizer_identity,
                                   PreferenceContents contents, bool atomic)
    : impl_(std::make_unique<Impl>()) {
  h5::quiet();
  auto& m = *impl_;
  m.path = path;
  m.contents = contents;
  m.atomic = atomic;
  m.write_path = atomic ? path + ".tmp" : path;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  m.file = H5Fcreate(m.write_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  KEEL_CHECK(m.file >= 0, "cannot create preference buffer " << m.write_path);
  h5::set_attr_string(m.file, "format", kFormatName);
  h5::set_attr_int(m.file, "format_version", kPreferenceFormatVersion);
  h5::set_attr_string(m.file, "tokenizer", tokenizer_identity);
  const int64_t zero = 0;
  for (int k = 0; k < 3; ++k) {
    m.tokens[k] = h5::create_extendable(m.file, s(kSides[k], "tokens"), H5T_STD_I32LE, 65536);
    m.offsets[k] = h5::create_extendable(m.file, s(kSides[k], "offsets"), H5T_STD_I64LE, 4096);
    h5::append(m.offsets[k], H5T_NATIVE_INT64, &zero, 1);
    if (contents.text) {
      m.text[k] = h5::create_extendable(m.file, s(kSides[k], "text"), H5T_STD_U8LE, 65536);
      m.text_offsets[k] = h5::create_extendable(m.file, s(kSides[k], "text_offsets"), H5T_STD_I64LE, 4096);
      h5::append(m.text_offsets[k], H5T_NATIVE_INT64, &zero, 1);
    }
  }
  if (contents.meta) {
    m.chosen_reward = h5::create_extendable(m.file, "meta/chosen_reward", H5T_IEEE_F32LE, 4096);
    m.rejected_reward = h5::create_extendable(m.file, "meta/rejected_reward", H5T_IEEE_F32LE, 4096);
    m.policy_version = h5::create_extendable(m.file, "meta/policy_version", H5T_STD_I64LE, 4096);
    m.source = h5::create_extendable(m.file, "meta/source", H5T_STD_U8LE, 65536);
    m.source_offsets = h5::create_extendable(m.file, "meta/source_offsets", H5T_STD_I64LE, 4096);
    h5::append(m.source_offsets, H5T_NATIVE_INT64, &zero, 1);
  }
  H5Fflush(m.file, H5F_SCOPE_GLOBAL);
}

PreferenceWriter::~PreferenceWriter() {
  auto& m = *impl_;
  if (m.finished) return;
  try {
    if (!m.atomic && m.file >= 0) m.flush();
  } catch (...) {
  }
  m.close();
  std::error_code ec;
  if (m.atomic) std::filesystem::remove(m.write_path, ec);
}

void PreferenceWriter::append(const PreferencePair& p) {
  auto& m = *impl_;
  KEEL_CHECK(!m.finished, "append to a finished preference buffer");
  const std::vector<int32_t>* toks[3] = {&p.prompt, &p.chosen, &p.rejected};
  const std::string* texts[3] = {&p.prompt_text, &p.chosen_text, &p.rejected_text};
  for (int k = 0; k < 3; ++k) {
    m.tok_buf[k].insert(m.tok_buf[k].end(), toks[k]->begin(), toks[k]->end());
    m.token_total[k] += static_cast<int64_t>(toks[k]->size());
    m.off_buf[k].push_back(m.token_total[k]);
    if (m.contents.text) {
      m.text_buf[k] += *texts[k];
      m.text_total[k] += static_cast<int64_t>(texts[k]->size());
      m.text_off_buf[k].push_back(m.text_total[k]);
    }
  }
  if (m.contents.meta) {
    m.cr_buf.push_back(p.chosen_reward);
    m.rr_buf.push_back(p.rejected_reward);
    m.pv_buf.push_back(p.policy_version);
    m.source_buf += p.source;
    m.source_total += static_cast<int64_t>(p.source.size());
    m.source_off_buf.push_back(m.source_total);
  }
  ++m.pairs;
  if (!m.atomic || m.off_buf[0].size() >= 4096) {
    std::lock_guard<std::mutex> lock(h5::mutex());
    m.flush();
  }
}

void PreferenceWriter::finish() {
  auto& m = *impl_;
  if (m.finished) return;
  {
    std::lock_guard<std::mutex> lock(h5::mutex());
    m.flush();
    m.close();
  }
  if (m.atomic) std::filesystem::rename(m.write_path, m.path);
  m.finished = true;
}

int64_t PreferenceWriter::size() const { return impl_->pairs; }

// ---------------------------------------------------------------------------------------------
// Reader

struct PreferenceReader::Impl {
  std::string path;
  PreferenceInfo info;
  hid_t file = -1;
  hid_t tokens[3], text[3] = {-1, -1, -1};
  std::vector<int64_t> offsets[3], text_offsets[3], source_offsets;
  hid_t chosen_reward = -1, rejected_reward = -1, policy_version = -1, source = -1, ref_chosen = -1, ref_rejected = -1;
  std::vector<hid_t> open;

  hid_t dataset(const std::string& name) {
    open.push_back(h5::open_dataset(file, name, path));
    return open.back();
  }
  // Reads an offsets array and checks it against the data it indexes.
  std::vector<int64_t> read_offsets(const std::string& name, hid_t data, int64_t expect_pairs) {
    const hid_t d = dataset(name);
    KEEL_CHECK(h5::is_integer(d), path << ": /" << name << " must hold integers");
    const hsize_t n = h5::extent(d);
    KEEL_CHECK(n >= 1, path << ": /" << name << " is empty; it needs N+1 entries starting at 0");
    if (expect_pairs >= 0)
      KEEL_CHECK(static_cast<int64_t>(n) == expect_pairs + 1,
                 path << ": /" << name << " has " << n << " entries, expected " << expect_pairs + 1 << " (pairs + 1)");
    std::vector<int64_t> v(n);
    h5::read_range(d, H5T_NATIVE_INT64, 0, n, v.data(), path + " /" + name);
    KEEL_CHECK(v[0] == 0, path << ": /" << name << "[0] is " << v[0] << ", expected 0");
    for (size_t i = 1; i < v.size(); ++i)
      KEEL_CHECK(v[i] >= v[i - 1], path << ": /" << name << " decreases at entry " << i);
    const auto size = static_cast<int64_t>(h5::extent(data));
    KEEL_CHECK(v.back() <= size, path << ": /" << name << " ends at " << v.back() << " but the data holds " << size
                                      << " elements (truncated buffer?)");
    return v;
  }
};

PreferenceReader::PreferenceReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  h5::quiet();
  auto& m = *impl_;
  m.path = path;
  KEEL_CHECK(std::filesystem::exists(path), "preference buffer " << path << " does not exist");
  KEEL_CHECK(H5Fis_hdf5(path.c_str()) > 0, path << " is not an HDF5 file (truncated or another format)");
  m.file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  KEEL_CHECK(m.file >= 0, path << ": cannot open as HDF5");
  try {
    KEEL_CHECK(h5::has_attr(m.file, "format_version"),
               path << ": not a keel preference buffer (root attribute format_version is missing)");
    const int64_t version = h5::get_attr_int(m.file, "format_version", path);
    KEEL_CHECK(version == kPreferenceFormatVersion, path << ": preference buffer format version " << version
                                                        << ", this keel reads version " << kPreferenceFormatVersion);
    if (h5::has_attr(m.file, "format")) {
      const auto f = h5::get_attr_string(m.file, "format", path);
      KEEL_CHECK(f == kFormatName, path << ": format attribute is '" << f << "', expected '" << kFormatName << "'");
    }
    m.info.tokenizer = h5::has_attr(m.file, "tokenizer") ? h5::get_attr_string(m.file, "tokenizer", path) : "";
    int64_t pairs = -1;
    for (int k = 0; k < 3; ++k) {
      m.tokens[k] = m.dataset(s(kSides[k], "tokens"));
      KEEL_CHECK(h5::is_integer(m.tokens[k]), path << ": /" << kSides[k] << "/tokens must hold integer token ids");
      m.offsets[k] = m.read_offsets(s(kSides[k], "offsets"), m.tokens[k], pairs);
      pairs = static_cast<int64_t>(m.offsets[k].size()) - 1;
    }
    m.info.pairs = pairs;
    m.info.text = h5::exists(m.file, "prompt/text");
    if (m.info.text)
      for (int k = 0; k < 3; ++k) {
        m.text[k] = m.dataset(s(kSides[k], "text"));
        m.text_offsets[k] = m.read_offsets(s(kSides[k], "text_offsets"), m.text[k], pairs);
      }
    m.info.meta = h5::exists(m.file, "meta/chosen_reward");
    if (m.info.meta) {
      m.chosen_reward = m.dataset("meta/chosen_reward");
      m.rejected_reward = m.dataset("meta/rejected_reward");
      for (hid_t d : {m.chosen_reward, m.rejected_reward})
        KEEL_CHECK(static_cast<int64_t>(h5::extent(d)) == pairs, path << ": /meta rewards must hold one value per pair");
      if (h5::exists(m.file, "meta/policy_version")) {
        m.policy_version = m.dataset("meta/policy_version");
        KEEL_CHECK(static_cast<int64_t>(h5::extent(m.policy_version)) == pairs,
                   path << ": /meta/policy_version must hold one value per pair");
      }
      if (h5::exists(m.file, "meta/source")) {
        m.source = m.dataset("meta/source");
        m.source_offsets = m.read_offsets("meta/source_offsets", m.source, pairs);
      }
    }
    m.info.ref = h5::exists(m.file, "ref/chosen_logprob");
    if (m.info.ref) {
      m.ref_chosen = m.dataset("ref/chosen_logprob");
      m.ref_rejected = m.dataset("ref/rejected_logprob");
      for (hid_t d : {m.ref_chosen, m.ref_rejected})
        KEEL_CHECK(static_cast<int64_t>(h5::extent(d)) == pairs, path << ": /ref log-probs must hold one value per pair");
      hid_t g = H5Gopen2(m.file, "ref", H5P_DEFAULT);
      m.info.ref_model = h5::has_attr(g, "model") ? h5::get_attr_string(g, "model", path) : "";
      m.info.ref_max_len = h5::has_attr(g, "max_len") ? h5::get_attr_int(g, "max_len", path) : 0;
      H5Gclose(g);
    }
  } catch (...) {
    for (hid_t d : m.open) H5Dclose(d);
    H5Fclose(m.file);
    throw;
  }
}

PreferenceReader::~PreferenceReader() {
  for (hid_t d : impl_->open) H5Dclose(d);
  if (impl_->file >= 0) H5Fclose(impl_->file);
}

const PreferenceInfo& PreferenceReader::info() const { return impl_->info; }
int64_t PreferenceReader::size() const { return impl_->info.pairs; }
const std::string& PreferenceReader::path() const { return impl_->path; }

std::vector<PreferencePair> PreferenceReader::read(int64_t begin, int64_t end) const {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(h5::mutex());
  KEEL_CHECK(0 <= begin && begin <= end && end <= m.info.pairs,
             m.path << ": pairs [" << begin << ", " << end << ") outside [0, " << m.info.pairs << ")");
  const auto n = static_cast<size_t>(end - begin);
  std::vector<PreferencePair> out(n);
  if (n == 0) return out;
  for (int k = 0; k < 3; ++k) {
    const auto& off = m.offsets[k];
    std::vector<int32_t> buf(static_cast<size_t>(off[end] - off[begin]));
    h5::read_range(m.tokens[k], H5T_NATIVE_INT32, off[begin], buf.size(), buf.data(), m.path + " /" + kSides[k] + "/tokens");
    for (size_t i = 0; i < n; ++i) {
      auto& dst = k == 0 ? out[i].prompt : k == 1 ? out[i].chosen : out[i].rejected;
      dst.assign(buf.begin() + (off[begin + i] - off[begin]), buf.begin() + (off[begin + i + 1] - off[begin]));
    }
    if (m.info.text) {
      const auto& to = m.text_offsets[k];
      std::string tb(static_cast<size_t>(to[end] - to[begin]), '\0');
      h5::read_range(m.text[k], H5T_NATIVE_UINT8, to[begin], tb.size(), tb.data(), m.path + " /" + kSides[k] + "/text");
      for (size_t i = 0; i < n; ++i) {
        auto& dst = k == 0 ? out[i].prompt_text : k == 1 ? out[i].chosen_text : out[i].rejected_text;
        dst = tb.substr(to[begin + i] - to[begin], to[begin + i + 1] - to[begin + i]);
      }
    }
  }
  auto read_floats = [&](hid_t d, float PreferencePair::*field) {
    std::vector<float> v(n);
    h5::read_range(d, H5T_NATIVE_FLOAT, begin, n, v.data(), m.path);
    for (size_t i = 0; i < n; ++i) out[i].*field = v[i];
  };
  if (m.info.meta) {
    read_floats(m.chosen_reward, &PreferencePair::chosen_reward);
    read_floats(m.rejected_reward, &PreferencePair::rejected_reward);
    if (m.policy_version >= 0) {
      std::vector<int64_t> v(n);
      h5::read_range(m.policy_version, H5T_NATIVE_INT64, begin, n, v.data(), m.path);
      for (size_t i = 0; i < n; ++i) out[i].policy_version = v[i];
    }
    if (m.source >= 0) {
      const auto& so = m.source_offsets;
      std::string sb(static_cast<size_t>(so[end] - so[begin]), '\0');
      h5::read_range(m.source, H5T_NATIVE_UINT8, so[begin], sb.size(), sb.data(), m.path + " /meta/source");
      for (size_t i = 0; i < n; ++i) out[i].source = sb.substr(so[begin + i] - so[begin], so[begin + i + 1] - so[begin + i]);
    }
  }
  if (m.info.ref) {
    read_floats(m.ref_chosen, &PreferencePair::ref_chosen);
    read_floats(m.ref_rejected, &PreferencePair::ref_rejected);
  }
  return out;
}

void write_reference_logprobs(const std::string& path, const std::vector<float>& chosen, const std::vector<float>& rejected,
                              const std::string& ref_model, int64_t max_len) {
  int64_t pairs = 0;
  {
    PreferenceReader check(path);
    pairs = check.size();
  }
  KEEL_CHECK(static_cast<int64_t>(chosen.size()) == pairs && static_cast<int64_t>(rejected.size()) == pairs,
             "reference log-probs for " << chosen.size() << " pairs, the buffer holds " << pairs);
  // Modify a copy and rename it into place: a crash leaves the original buffer as it was.
  const std::string tmp = path + ".tmp";
  std::filesystem::copy_file(path, tmp, std::filesystem::copy_options::overwrite_existing);
  hid_t file = H5Fopen(tmp.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  KEEL_CHECK(file >= 0, "cannot open " << tmp << " for writing");
  if (h5::exists(file, "ref")) H5Ldelete(file, "ref", H5P_DEFAULT);
  hid_t g = h5::create_group(file, "ref");
  h5::set_attr_string(g, "model", ref_model);
  h5::set_attr_int(g, "max_len", max_len);
  H5Gclose(g);
  for (auto [name, v] : {std::pair{"ref/chosen_logprob", &chosen}, std::pair{"ref/rejected_logprob", &rejected}}) {
    hid_t d = h5::create_extendable(file, name, H5T_IEEE_F32LE, 4096);
    h5::append(d, H5T_NATIVE_FLOAT, *v);
    H5Dclose(d);
  }
  H5Fclose(file);
  std::filesystem::rename(tmp, path);
}

}  // namespace keel
