#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/safetensors_file.h"

namespace keel {

using nlohmann::json;

namespace {

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};
const DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2},
    {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},   {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},
    {"U8", torch::kUInt8, 1},    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* by_name(const std::string& n) {
  for (const auto& d : kDtypes)
    if (n == d.name) return &d;
  return nullptr;
}
const DtypeInfo& by_type(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (t == d.type) return d;
  KEEL_FAIL("safetensors: unsupported tensor dtype " << t);
}

}  // namespace

std::string safetensors_dtype_name(torch::ScalarType type) { return by_type(type).name; }
bool parse_safetensors_dtype(const std::string& name, torch::ScalarType* type) {
  const auto* d = by_name(name);
  if (d) *type = d->type;
  return d != nullptr;
}

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  const int open_error = errno;
  KEEL_CHECK_KIND(io_error_kind(open_error), fd >= 0, "cannot open " << path << ": " << std::strerror(open_error));
  // Into a buffer of the file's size, grown only for a file that grew meanwhile or has no size (a
  // pipe): a string stream grew by copies and handed out a copy of its own, three passes and three
  // times the memory for a 500 MB model.
  struct stat st {};
  std::string bytes(::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? static_cast<size_t>(st.st_size) : 0, '\0');
  size_t done = 0;
  for (;;) {
    if (done == bytes.size()) bytes.resize(bytes.size() + (1 << 16));
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      ::close(fd);
      KEEL_CHECK_KIND(io_error_kind(e), n == 0, "cannot read " << path << ": " << std::strerror(e));
      break;
    }
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

namespace {

// A file written as path + ".tmp" and renamed over `path` by commit(), after fsync; removed when
// destroyed uncommitted, so a failed write leaves whatever `path` held before.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int e = errno;
    KEEL_CHECK_KIND(io_error_kind(e), fd_ >= 0, "cannot create " << tmp_ << ": " << std::strerror(e));
  }
  ~AtomicFile() {
    if (fd_ < 0) return;
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail(w < 0 ? errno : ENOSPC, "write " + tmp_);  // a write of nothing: the device is full
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  void commit() {
    if (::fsync(fd_) != 0) fail(errno, "flush " + tmp_ + " to disk");
    const int closed = ::close(fd_);
    fd_ = -1;
    if (closed != 0) fail(errno, "close " + tmp_);  // a network file system may report a failed write only here
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail(errno, "rename " + tmp_ + " to " + path_);
  }

 private:
  // Removes the temporary file and throws: cannot `what`, with error e's cause.
  [[noreturn]] void fail(int e, const std::string& what) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
    KEEL_FAIL_KIND(io_error_kind(e), "cannot " << what << ": " << std::strerror(e));
  }

  std::string path_, tmp_;
  int fd_ = -1;
};

// The header of a safetensors file holding `tensors` (the 8-byte length, then the JSON padded to
// 8 bytes); their data follow in the order of `data`, contiguous CPU tensors.
std::string safetensors_header(const TensorMap& tensors, const Metadata& metadata, std::vector<torch::Tensor>& data) {
  json header = json::object();
  int64_t offset = 0;
  for (const auto& [name, t0] : tensors) {
    auto t = t0.detach().to(torch::kCPU).contiguous();
    const auto& d = by_type(t.scalar_type());
    const int64_t nbytes = t.numel() * d.size;
    header[name] = {{"dtype", d.name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(t);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  std::string out(8, '\0');
  const uint64_t hl = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((hl >> (8 * i)) & 0xff);
  return out + h;
}

size_t data_bytes(const torch::Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFile f(path);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

std::string safetensors_bytes(const TensorMap& tensors, const Metadata& metadata) {
  std::string out;
  safetensors_bytes_into(out, tensors, metadata);
  return out;
}

SafetensorsPieces safetensors_pieces(const TensorMap& tensors, const Metadata& metadata) {
  SafetensorsPieces p;
  p.header = safetensors_header(tensors, metadata, p.data);
  return p;
}

std::string_view SafetensorsPieces::piece(size_t i) const {
  if (i == 0) return header;
  return std::string_view(static_cast<const char*>(data.at(i - 1).data_ptr()), data_bytes(data[i - 1]));
}

size_t SafetensorsPieces::total_bytes() const {
  size_t total = header.size();
  for (const auto& t : data) total += data_bytes(t);
  return total;
}

void safetensors_bytes_into(std::string& out, const TensorMap& tensors, const Metadata& metadata) {
  const auto p = safetensors_pieces(tensors, metadata);
  out.assign(p.header.data(), p.header.size());  // a copy, not a move: out keeps the capacity it had
  out.reserve(p.total_bytes());
  for (size_t i = 1; i < p.count(); ++i) out.append(p.piece(i));
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  // Each tensor's bytes go to the file from its own memory: no copy of the whole file in memory
  // (a checkpoint of a 124M model and its AdamW moments is 1.5 GB).
  const auto p = safetensors_pieces(tensors, metadata);
  AtomicFile f(path);
  for (size_t i = 0; i < p.count(); ++i) f.write(p.piece(i).data(), p.piece(i).size());
  f.commit();
}

uint64_t safetensors_header_length(std::string_view first_bytes, uint64_t file_size, const std::string& origin) {
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, file_size >= 8 && first_bytes.size() >= 8,
                  origin << ": truncated safetensors file (" << file_size << " bytes, no header)");
  uint64_t hl = 0;
  for (int i = 0; i < 8; ++i) hl |= static_cast<uint64_t>(static_cast<unsigned char>(first_bytes[i])) << (8 * i);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, hl <= file_size - 8,
                  origin << ": truncated safetensors file: header of " << hl << " bytes but only " << file_size - 8 << " follow");
  return hl;
}

namespace {

// One header entry's dtype, shape and span, checked against a data section of data_size bytes.
SafetensorsEntry parse_entry(const json& e, uint64_t data_size, const std::string& where) {
  KEEL_CHECK_KIND(ErrorKind::kCorruptData,
                  e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
                  where << " lacks dtype, shape or data_offsets");
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, e["dtype"].is_string(), where << " has a dtype that is not a name: " << e["dtype"]);
  const auto* d = by_name(e["dtype"].get<std::string>());
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, d, where << " has unsupported dtype " << e["dtype"]);
  SafetensorsEntry out;
  out.dtype = d->type;
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, e["shape"].is_array(), where << " has a bad shape " << e["shape"]);
  // bytes: the tensor's size; extent: the same with empty dimensions counted as 1, which LibTorch's
  // strides multiply out (a shape [0, 2, 2^62] holds no bytes but overflows them).
  uint64_t bytes = static_cast<uint64_t>(d->size), extent = bytes;
  bool overflow = false;
  for (const auto& s : e["shape"]) {
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, s.is_number_integer() && s.get<int64_t>() >= 0,
                    where << " has a bad shape " << e["shape"]);
    out.shape.push_back(s.get<int64_t>());
    const auto n = static_cast<uint64_t>(out.shape.back());
    overflow = overflow || __builtin_mul_overflow(bytes, n, &bytes) ||
               __builtin_mul_overflow(extent, std::max<uint64_t>(n, 1), &extent) ||
               extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  }
  const auto& off = e["data_offsets"];
  KEEL_CHECK_KIND(ErrorKind::kCorruptData,
                  off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                  where << " has bad data_offsets");
  out.begin = off[0].get<uint64_t>(), out.end = off[1].get<uint64_t>();
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, out.begin <= out.end && out.end <= data_size,
                  where << " data [" << out.begin << ", " << out.end << ") runs past the end of the data (" << data_size
                        << " bytes): file truncated?");
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, !overflow && bytes == out.bytes(),
                  where << " shape " << e["shape"] << " does not fit the " << out.bytes() << " bytes its offsets give");
  return out;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::string_view header_json, uint64_t data_start, uint64_t data_size,
                                           const std::string& origin) {
  json header;
  try {
    header = json::parse(header_json);
  } catch (const json::exception& e) {
    KEEL_FAIL_KIND(ErrorKind::kCorruptData, origin << ": safetensors header is not valid JSON: " << e.what());
  }
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, header.is_object(), origin << ": safetensors header is not a JSON object");
  SafetensorsHeader out;
  out.data_start = data_start;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      KEEL_CHECK_KIND(ErrorKind::kCorruptData, it.value().is_object(),
                      origin << ": safetensors __metadata__ is not an object of strings");
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        out.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const auto& e = out.entries[it.key()] = parse_entry(it.value(), data_size, origin + ": tensor '" + it.key() + "'");
    spans.emplace_back(e.begin, e.end);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, spans[i].first >= spans[i - 1].second,
                    origin << ": tensors overlap in the data section");
  return out;
}

TensorMap load_safetensors(const std::string& path, Metadata* metadata) {
  struct stat st {};
  KEEL_CHECK_KIND(ErrorKind::kIo, ::stat(path.c_str(), &st) == 0,
                  "safetensors file " << path << " is missing: " << std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return parse_safetensors(read_file(path), path, metadata);  // a pipe: read it whole
  const SafetensorsFile file(path);
  if (metadata) *metadata = file.header().metadata;
  return file.read_all();
}

namespace {

// Parses and checks the header of safetensors `bytes`; each tensor's data is handed to `take`
// (dtype, shape, first byte, byte count), which makes the tensor.
template <class Take>
TensorMap parse_tensors(const std::string& bytes, const std::string& path, Metadata* metadata, Take take) {
  const uint64_t hl = safetensors_header_length(bytes, bytes.size(), path);
  const auto header = parse_safetensors_header(std::string_view(bytes).substr(8, hl), 8 + hl, bytes.size() - 8 - hl, path);
  if (metadata) *metadata = header.metadata;
  const char* base = bytes.data() + header.data_start;
  TensorMap out;
  for (const auto& [name, e] : header.entries) out[name] = take(e.dtype, e.shape, base + e.begin, e.bytes());
  return out;
}

torch::Tensor copied_tensor(torch::ScalarType type, const std::vector<int64_t>& shape, const char* data, uint64_t n) {
  auto t = torch::empty(shape, torch::dtype(type));
  std::memcpy(t.data_ptr(), data, n);
  return t;
}

}  // namespace

TensorMap parse_safetensors(const std::string& bytes, const std::string& path, Metadata* metadata) {
  return parse_tensors(bytes, path, metadata, copied_tensor);
}

TensorMap safetensors_views(std::shared_ptr<const std::string> bytes, const std::string& path, Metadata* metadata) {
  return parse_tensors(
      *bytes, path, metadata, [&](torch::ScalarType type, const std::vector<int64_t>& shape, const char* data, uint64_t n) {
        if (reinterpret_cast<uintptr_t>(data) % torch::elementSize(type) != 0)  // another writer's unaligned layout
          return copied_tensor(type, shape, data, n);
        // Every view holds the buffer; it is freed with the last of them.
        return torch::from_blob(
            const_cast<char*>(data), shape, [keep = bytes](void*) mutable { keep.reset(); }, torch::dtype(type));
      });
}

}  // namespace keel
