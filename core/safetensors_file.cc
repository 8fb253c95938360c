#include "core/safetensors_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace keel {

namespace {

// Reads n bytes at `offset`; the count read, short only at the end of the file.
uint64_t read_at(int fd, char* dst, uint64_t n, uint64_t offset, const std::string& path) {
  uint64_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, dst + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    const int e = errno;
    KEEL_CHECK_KIND(io_error_kind(e), r >= 0, "cannot read " << path << ": " << std::strerror(e));
    if (r == 0) break;
    done += static_cast<uint64_t>(r);
  }
  return done;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  const int e = errno;
  KEEL_CHECK_KIND(io_error_kind(e), fd_ >= 0,
                  "safetensors file " << path << (e == ENOENT ? " is missing: " : " cannot be opened: ") << std::strerror(e));
  try {
    struct stat st {};
    const int stat_error = ::fstat(fd_, &st) == 0 ? 0 : errno;
    KEEL_CHECK_KIND(io_error_kind(stat_error), stat_error == 0, "cannot stat " << path << ": " << std::strerror(stat_error));
    size_ = static_cast<uint64_t>(st.st_size);
    char first[8] = {};
    const uint64_t hl = safetensors_header_length(std::string_view(first, read_at(fd_, first, 8, 0, path)), size_, path);
    std::string json(hl, '\0');
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, read_at(fd_, json.data(), hl, 8, path) == hl,
                    path << ": truncated safetensors file: it ended inside its header");
    header_ = parse_safetensors_header(json, 8 + hl, size_ - 8 - hl, path);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() { ::close(fd_); }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = header_.entries.find(name);
  KEEL_CHECK(it != header_.entries.end(), path_ << " holds no tensor '" << name << "'");
  return it->second;
}

void SafetensorsFile::read_into(const std::string& name, void* dst) const {
  const auto& e = entry(name);
  const uint64_t got = read_at(fd_, static_cast<char*>(dst), e.bytes(), header_.data_start + e.begin, path_);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, got == e.bytes(),
                  path_ << ": truncated safetensors file: tensor '" << name << "' needs bytes up to "
                        << header_.data_start + e.end << ", the file ends at " << header_.data_start + e.begin + got);
}

torch::Tensor SafetensorsFile::read(const std::string& name) const {
  const auto& e = entry(name);
  auto t = torch::empty(e.shape, torch::dtype(e.dtype));
  read_into(name, t.data_ptr());
  return t;
}

TensorMap SafetensorsFile::read_all() const {
  TensorMap out;
  for (const auto& [name, e] : header_.entries) out[name] = read(name);
  return out;
}

}  // namespace keel
