#include "core/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace keel {

namespace {
constexpr char kMagic[8] = {'K', 'E', 'E', 'L', 'T', 'O', 'K', '\0'};
constexpr size_t kHeader = 64;
}  // namespace

TokenFileWriter::TokenFileWriter(const std::string& path, int64_t vocab_size, int32_t eos_id)
    : path_(path), width_(vocab_size <= 65536 ? 2 : 4), vocab_size_(vocab_size), eos_id_(eos_id) {
  file_ = std::fopen((path + ".tmp").c_str(), "wb");
  KEEL_CHECK_KIND(io_error_kind(errno), file_, "cannot create " << path << ".tmp: " << std::strerror(errno));
  char zero[kHeader] = {};
  std::fwrite(zero, 1, kHeader, static_cast<FILE*>(file_));
}

TokenFileWriter::~TokenFileWriter() {
  if (file_) {
    std::fclose(static_cast<FILE*>(file_));
    std::remove((path_ + ".tmp").c_str());
  }
}

void TokenFileWriter::append(const std::vector<int32_t>& ids) {
  auto* f = static_cast<FILE*>(file_);
  for (int32_t id : ids) {
    KEEL_CHECK(id >= 0 && id < vocab_size_, "token id " << id << " outside vocabulary " << vocab_size_);
    if (width_ == 2) {
      const uint16_t v = static_cast<uint16_t>(id);
      std::fwrite(&v, 2, 1, f);
    } else {
      std::fwrite(&id, 4, 1, f);
    }
  }
  count_ += static_cast<int64_t>(ids.size());
}

void TokenFileWriter::finish() {
  auto* f = static_cast<FILE*>(file_);
  char h[kHeader] = {};
  std::memcpy(h, kMagic, 8);
  const uint32_t version = kTokenFileVersion;
  const uint64_t count = static_cast<uint64_t>(count_), vocab = static_cast<uint64_t>(vocab_size_);
  const uint32_t eos = eos_id_ < 0 ? 0xffffffffu : static_cast<uint32_t>(eos_id_);
  std::memcpy(h + 8, &version, 4);
  std::memcpy(h + 12, &width_, 4);
  std::memcpy(h + 16, &count, 8);
  std::memcpy(h + 24, &vocab, 8);
  std::memcpy(h + 32, &eos, 4);
  std::fseek(f, 0, SEEK_SET);
  std::fwrite(h, 1, kHeader, f);
  KEEL_CHECK_KIND(io_error_kind(errno), std::fflush(f) == 0, "cannot write " << path_ << ".tmp: " << std::strerror(errno));
  ::fsync(fileno(f));
  std::fclose(f);
  file_ = nullptr;
  KEEL_CHECK_KIND(ErrorKind::kIo, std::rename((path_ + ".tmp").c_str(), path_.c_str()) == 0, "cannot rename to " << path_);
}

TokenFile::TokenFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  KEEL_CHECK_KIND(ErrorKind::kIo, fd >= 0, "token file " << path << " cannot be opened: " << std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < kHeader) {
    ::close(fd);
    KEEL_FAIL_KIND(ErrorKind::kCorruptData,
                   "token file " << path << " is corrupt: " << map_size_ << " bytes, shorter than its 64-byte header");
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  KEEL_CHECK_KIND(io_error_kind(errno), map_ != MAP_FAILED, "cannot map " << path << ": " << std::strerror(errno));
  const char* h = static_cast<const char*>(map_);
  auto fail = [&](const std::string& why) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    KEEL_FAIL_KIND(ErrorKind::kCorruptData, "token file " << path << " is corrupt: " << why);
  };
  if (std::memcmp(h, kMagic, 8) != 0) fail("bad magic (not a keel token file)");
  uint32_t version, width, eos;
  uint64_t count, vocab;
  std::memcpy(&version, h + 8, 4);
  std::memcpy(&width, h + 12, 4);
  std::memcpy(&count, h + 16, 8);
  std::memcpy(&vocab, h + 24, 8);
  std::memcpy(&eos, h + 32, 4);
  if (version == 0) fail("format version 0 (not a version any keel wrote)");
  if (version > kTokenFileVersion)
    fail("format version " + std::to_string(version) + " is newer than this keel reads (" + std::to_string(kTokenFileVersion) +
         ")");
  if (width != 2 && width != 4) fail("bytes per token " + std::to_string(width) + " (expected 2 or 4)");
  // Compared by division: count * width can wrap around for a forged count.
  if ((map_size_ - kHeader) % width != 0 || count != (map_size_ - kHeader) / width)
    fail("header says " + std::to_string(count) + " tokens (" + std::to_string(kHeader + count * width) +
         " bytes) but the file has " + std::to_string(map_size_) + " bytes (truncated?)");
  width_ = width;
  count_ = static_cast<int64_t>(count);
  vocab_size_ = static_cast<int64_t>(vocab);
  eos_id_ = eos == 0xffffffffu ? -1 : static_cast<int32_t>(eos);
  data_ = h + kHeader;
  ::madvise(map_, map_size_, MADV_RANDOM);
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, map_size_);
}

void TokenFile::read(int64_t begin, int64_t n, int64_t* out) const {
  KEEL_CHECK(begin >= 0 && begin + n <= count_, "token range [" << begin << ", " << begin + n << ") outside " << path_);
  if (width_ == 2) {
    const auto* p = static_cast<const uint16_t*>(data_) + begin;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    const auto* p = static_cast<const int32_t*>(data_) + begin;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  }
}

}  // namespace keel
