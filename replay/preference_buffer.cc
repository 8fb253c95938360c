#include "replay/preference_buffer.h"

#include <hdf5.h>

#include <filesystem>

#include "core/error.h"
#include "replay/hdf5_io.h"

namespace keel {

namespace {

using h5::Handle;

constexpr const char* kFormatName = "keel-preferences";
const char* const kSides[3] = {"prompt", "chosen", "rejected"};

std::string s(const char* side, const char* what) { return std::string(side) + "/" + what; }

// A failed file-system call: kOutOfSpace when the disk is full, kIo otherwise.
ErrorKind fs_kind(const std::error_code& ec) { return io_error_kind(ec.value()); }

void rename_into_place(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::filesystem::rename(from, to, ec);
  KEEL_CHECK_KIND(fs_kind(ec), !ec, "cannot rename " << from << " to " << to << ": " << ec.message());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

struct PreferenceWriter::Impl {
  std::string path, write_path;
  PreferenceContents contents;
  bool atomic = true, finished = false;
  Handle file;
  Handle tokens[3], offsets[3], text[3], text_offsets[3];
  Handle chosen_reward, rejected_reward, policy_version, source, source_offsets;
  int64_t pairs = 0, token_total[3] = {0, 0, 0}, text_total[3] = {0, 0, 0}, source_total = 0;

  // Appends are staged and written in blocks: one HDF5 extend+write per dataset per block.
  std::vector<int32_t> tok_buf[3];
  std::vector<int64_t> off_buf[3], text_off_buf[3], source_off_buf;
  std::string text_buf[3], source_buf;
  std::vector<float> cr_buf, rr_buf;
  std::vector<int64_t> pv_buf;

  void create_datasets();
  void flush();

  // Closes every dataset, then the file. With `report`, a file whose last writes did not reach the
  // disk is a KeelError (kIo / kOutOfSpace); without, errors are ignored (an abandoned writer).
  void close(bool report) {
    for (int k = 0; k < 3; ++k)
      for (Handle* d : {&tokens[k], &offsets[k], &text[k], &text_offsets[k]}) d->reset();
    for (Handle* d : {&chosen_reward, &rejected_reward, &policy_version, &source, &source_offsets}) d->reset();
    if (report)
      file.close("preference buffer " + write_path);
    else
      file.reset();
  }
};

void PreferenceWriter::Impl::create_datasets() {
  const hid_t f = file.get();
  const int64_t zero = 0;
  for (int k = 0; k < 3; ++k) {
    tokens[k] = h5::create_extendable(f, s(kSides[k], "tokens"), H5T_STD_I32LE, 65536);
    offsets[k] = h5::create_extendable(f, s(kSides[k], "offsets"), H5T_STD_I64LE, 4096);
    h5::append(offsets[k].get(), H5T_NATIVE_INT64, &zero, 1);
    if (contents.text) {
      text[k] = h5::create_extendable(f, s(kSides[k], "text"), H5T_STD_U8LE, 65536);
      text_offsets[k] = h5::create_extendable(f, s(kSides[k], "text_offsets"), H5T_STD_I64LE, 4096);
      h5::append(text_offsets[k].get(), H5T_NATIVE_INT64, &zero, 1);
    }
  }
  if (contents.meta) {
    chosen_reward = h5::create_extendable(f, "meta/chosen_reward", H5T_IEEE_F32LE, 4096);
    rejected_reward = h5::create_extendable(f, "meta/rejected_reward", H5T_IEEE_F32LE, 4096);
    policy_version = h5::create_extendable(f, "meta/policy_version", H5T_STD_I64LE, 4096);
    source = h5::create_extendable(f, "meta/source", H5T_STD_U8LE, 65536);
    source_offsets = h5::create_extendable(f, "meta/source_offsets", H5T_STD_I64LE, 4096);
    h5::append(source_offsets.get(), H5T_NATIVE_INT64, &zero, 1);
  }
}

void PreferenceWriter::Impl::flush() {
  for (int k = 0; k < 3; ++k) {
    h5::append(tokens[k].get(), H5T_NATIVE_INT32, tok_buf[k]);
    h5::append(offsets[k].get(), H5T_NATIVE_INT64, off_buf[k]);
    tok_buf[k].clear();
    off_buf[k].clear();
    if (contents.text) {
      h5::append(text[k].get(), H5T_NATIVE_UINT8, text_buf[k].data(), text_buf[k].size());
      h5::append(text_offsets[k].get(), H5T_NATIVE_INT64, text_off_buf[k]);
      text_buf[k].clear();
      text_off_buf[k].clear();
    }
  }
  if (contents.meta) {
    h5::append(chosen_reward.get(), H5T_NATIVE_FLOAT, cr_buf);
    h5::append(rejected_reward.get(), H5T_NATIVE_FLOAT, rr_buf);
    h5::append(policy_version.get(), H5T_NATIVE_INT64, pv_buf);
    h5::append(source.get(), H5T_NATIVE_UINT8, source_buf.data(), source_buf.size());
    h5::append(source_offsets.get(), H5T_NATIVE_INT64, source_off_buf);
    cr_buf.clear();
    rr_buf.clear();
    pv_buf.clear();
    source_buf.clear();
    source_off_buf.clear();
  }
  h5::flush(file.get(), "preference buffer " + write_path);
}

PreferenceWriter::PreferenceWriter(const std::string& path, const std::string& tokenizer_identity, PreferenceContents contents,
                                   bool atomic)
    : impl_(std::make_unique<Impl>()) {
  h5::quiet();
  auto& m = *impl_;
  m.path = path;
  m.contents = contents;
  m.atomic = atomic;
  m.write_path = atomic ? path + ".tmp" : path;
  const auto parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  KEEL_CHECK_KIND(fs_kind(ec), !ec, "cannot create directory " << parent.string() << ": " << ec.message());
  m.file = h5::create_file(m.write_path, H5F_ACC_TRUNC, "preference buffer");
  h5::set_attr_string(m.file.get(), "format", kFormatName);
  h5::set_attr_int(m.file.get(), "format_version", kPreferenceFormatVersion);
  h5::set_attr_string(m.file.get(), "tokenizer", tokenizer_identity);
  m.create_datasets();
  h5::flush(m.file.get(), "preference buffer " + m.write_path);
}

PreferenceWriter::~PreferenceWriter() {
  auto& m = *impl_;
  if (m.finished) return;
  try {
    if (!m.atomic && m.file.valid()) m.flush();
  } catch (...) {
    // A destructor must not throw: the live buffer keeps what reached the disk before.
  }
  m.close(/*report=*/false);
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
    m.close(/*report=*/true);
  }
  if (m.atomic) rename_into_place(m.write_path, m.path);
  m.finished = true;
}

int64_t PreferenceWriter::size() const { return impl_->pairs; }

// ---------------------------------------------------------------------------------------------
// Reader

struct PreferenceReader::Impl {
  std::string path;
  PreferenceInfo info;
  Handle file;
  Handle tokens[3], text[3];
  std::vector<int64_t> offsets[3], text_offsets[3], source_offsets;
  Handle chosen_reward, rejected_reward, policy_version, source, ref_chosen, ref_rejected;

  Handle dataset(const std::string& name) { return h5::open_dataset(file.get(), name, path); }
  // A per-pair column: one value per pair.
  Handle column(const std::string& name, const char* what) {
    Handle d = dataset(name);
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, static_cast<int64_t>(h5::extent(d.get())) == info.pairs,
                    path << ": " << what << " must hold one value per pair");
    return d;
  }
  void check_format();
  void open_sides();
  void open_text();
  void open_meta();
  void open_ref();
};

void PreferenceReader::Impl::check_format() {
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, h5::has_attr(file.get(), "format_version"),
                  path << ": not a keel preference buffer (root attribute format_version is missing)");
  const int64_t version = h5::get_attr_int(file.get(), "format_version", path);
  KEEL_CHECK_KIND(
      ErrorKind::kCorruptData, version == kPreferenceFormatVersion,
      path << ": preference buffer format version " << version << ", this keel reads version " << kPreferenceFormatVersion);
  if (h5::has_attr(file.get(), "format")) {
    const auto f = h5::get_attr_string(file.get(), "format", path);
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, f == kFormatName,
                    path << ": format attribute is '" << f << "', expected '" << kFormatName << "'");
  }
  info.tokenizer = h5::has_attr(file.get(), "tokenizer") ? h5::get_attr_string(file.get(), "tokenizer", path) : "";
}

void PreferenceReader::Impl::open_sides() {
  // Every side must index the same pairs: compare the counts before the contents, so that the
  // side that disagrees is the one named.
  Handle offset_sets[3];
  int64_t pairs = -1;
  for (int k = 0; k < 3; ++k) {
    tokens[k] = dataset(s(kSides[k], "tokens"));
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, h5::is_integer(tokens[k].get()),
                    path << ": /" << kSides[k] << "/tokens must hold integer token ids");
    offset_sets[k] = dataset(s(kSides[k], "offsets"));
    pairs = h5::check_offsets_count(offset_sets[k].get(), pairs, path);
  }
  // A live buffer (online DPO) killed between a side's tokens and its offsets holds data past the
  // last offset: read up to the last complete pair, as the format promises.
  for (int k = 0; k < 3; ++k)
    offsets[k] = h5::read_offsets(offset_sets[k].get(), pairs, h5::extent(tokens[k].get()), path, h5::OffsetsTail::kAllowed);
  info.pairs = pairs;
}

void PreferenceReader::Impl::open_text() {
  info.text = h5::exists(file.get(), "prompt/text");
  if (!info.text) return;
  for (int k = 0; k < 3; ++k) {
    text[k] = dataset(s(kSides[k], "text"));
    const Handle o = dataset(s(kSides[k], "text_offsets"));
    text_offsets[k] = h5::read_offsets(o.get(), info.pairs, h5::extent(text[k].get()), path, h5::OffsetsTail::kAllowed);
  }
}

void PreferenceReader::Impl::open_meta() {
  info.meta = h5::exists(file.get(), "meta/chosen_reward");
  if (!info.meta) return;
  chosen_reward = column("meta/chosen_reward", "/meta rewards");
  rejected_reward = column("meta/rejected_reward", "/meta rewards");
  if (h5::exists(file.get(), "meta/policy_version")) policy_version = column("meta/policy_version", "/meta/policy_version");
  if (h5::exists(file.get(), "meta/source")) {
    source = dataset("meta/source");
    const Handle o = dataset("meta/source_offsets");
    source_offsets = h5::read_offsets(o.get(), info.pairs, h5::extent(source.get()), path);
  }
}

void PreferenceReader::Impl::open_ref() {
  info.ref = h5::exists(file.get(), "ref/chosen_logprob");
  if (!info.ref) return;
  ref_chosen = column("ref/chosen_logprob", "/ref log-probs");
  ref_rejected = column("ref/rejected_logprob", "/ref log-probs");
  const Handle g = h5::open_group(file.get(), "ref", path);
  info.ref_model = h5::has_attr(g.get(), "model") ? h5::get_attr_string(g.get(), "model", path) : "";
  info.ref_max_len = h5::has_attr(g.get(), "max_len") ? h5::get_attr_int(g.get(), "max_len", path) : 0;
}

PreferenceReader::PreferenceReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  h5::quiet();
  auto& m = *impl_;
  m.path = path;
  m.file = h5::open_file(path, H5F_ACC_RDONLY, "preference buffer");
  m.check_format();
  m.open_sides();
  m.open_text();
  m.open_meta();
  m.open_ref();
}

PreferenceReader::~PreferenceReader() = default;

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
    h5::read_range(m.tokens[k].get(), H5T_NATIVE_INT32, off[begin], buf.size(), buf.data(),
                   m.path + " /" + kSides[k] + "/tokens");
    for (size_t i = 0; i < n; ++i) {
      auto& dst = k == 0 ? out[i].prompt : k == 1 ? out[i].chosen : out[i].rejected;
      dst.assign(buf.begin() + (off[begin + i] - off[begin]), buf.begin() + (off[begin + i + 1] - off[begin]));
    }
    if (m.info.text) {
      const auto& to = m.text_offsets[k];
      std::string tb(static_cast<size_t>(to[end] - to[begin]), '\0');
      h5::read_range(m.text[k].get(), H5T_NATIVE_UINT8, to[begin], tb.size(), tb.data(), m.path + " /" + kSides[k] + "/text");
      for (size_t i = 0; i < n; ++i) {
        auto& dst = k == 0 ? out[i].prompt_text : k == 1 ? out[i].chosen_text : out[i].rejected_text;
        dst = tb.substr(to[begin + i] - to[begin], to[begin + i + 1] - to[begin + i]);
      }
    }
  }
  auto read_floats = [&](const Handle& d, float PreferencePair::*field) {
    std::vector<float> v(n);
    h5::read_range(d.get(), H5T_NATIVE_FLOAT, begin, n, v.data(), m.path);
    for (size_t i = 0; i < n; ++i) out[i].*field = v[i];
  };
  if (m.info.meta) {
    read_floats(m.chosen_reward, &PreferencePair::chosen_reward);
    read_floats(m.rejected_reward, &PreferencePair::rejected_reward);
    if (m.policy_version.valid()) {
      std::vector<int64_t> v(n);
      h5::read_range(m.policy_version.get(), H5T_NATIVE_INT64, begin, n, v.data(), m.path);
      for (size_t i = 0; i < n; ++i) out[i].policy_version = v[i];
    }
    if (m.source.valid()) {
      const auto& so = m.source_offsets;
      std::string sb(static_cast<size_t>(so[end] - so[begin]), '\0');
      h5::read_range(m.source.get(), H5T_NATIVE_UINT8, so[begin], sb.size(), sb.data(), m.path + " /meta/source");
      for (size_t i = 0; i < n; ++i) out[i].source = sb.substr(so[begin + i] - so[begin], so[begin + i + 1] - so[begin + i]);
    }
  }
  if (m.info.ref) {
    read_floats(m.ref_chosen, &PreferencePair::ref_chosen);
    read_floats(m.ref_rejected, &PreferencePair::ref_rejected);
  }
  return out;
}

namespace {
// Adds the /ref group of a buffer being written at `path`.
void write_ref_group(const std::string& path, const std::vector<float>& chosen, const std::vector<float>& rejected,
                     const std::string& ref_model, int64_t max_len) {
  Handle file = h5::open_file(path, H5F_ACC_RDWR, "preference buffer copy");
  if (h5::exists(file.get(), "ref"))
    KEEL_CHECK_KIND(ErrorKind::kIo, H5Ldelete(file.get(), "ref", H5P_DEFAULT) >= 0, path << ": cannot replace /ref");
  {
    const Handle g = h5::create_group(file.get(), "ref");
    h5::set_attr_string(g.get(), "model", ref_model);
    h5::set_attr_int(g.get(), "max_len", max_len);
  }
  for (auto [name, v] : {std::pair{"ref/chosen_logprob", &chosen}, std::pair{"ref/rejected_logprob", &rejected}}) {
    const Handle d = h5::create_extendable(file.get(), name, H5T_IEEE_F32LE, 4096);
    h5::append(d.get(), H5T_NATIVE_FLOAT, *v);
  }
  file.close("preference buffer " + path);
}
}  // namespace

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
  std::error_code ec;
  std::filesystem::copy_file(path, tmp, std::filesystem::copy_options::overwrite_existing, ec);
  KEEL_CHECK_KIND(fs_kind(ec), !ec, "cannot copy " << path << " to " << tmp << ": " << ec.message());
  try {
    write_ref_group(tmp, chosen, rejected, ref_model, max_len);
  } catch (...) {
    std::filesystem::remove(tmp, ec);  // the copy is of no use; the buffer is as it was
    throw;
  }
  rename_into_place(tmp, path);
}

}  // namespace keel
