// Token files: a 64-byte header then the token ids, memory-mapped for training.
// Header (little-endian): magic "KEELTOK\0" (8 bytes), u32 version (1), u32 bytes per token (2 or 4),
// u64 token count, u64 vocab size, u32 eos id (0xffffffff if none), 28 reserved zero bytes.
// Documents are separated by EOS. See docs/formats.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel {

constexpr uint32_t kTokenFileVersion = 1;

class TokenFileWriter {
 public:
  // Writes to path + ".tmp"; finish() renames it into place, so a crash leaves no partial file.
  TokenFileWriter(const std::string& path, int64_t vocab_size, int32_t eos_id);
  ~TokenFileWriter();
  void append(const std::vector<int32_t>& ids);
  void finish();
  int64_t count() const { return count_; }

 private:
  std::string path_;
  void* file_ = nullptr;  // FILE*
  uint32_t width_;
  int64_t vocab_size_;
  int32_t eos_id_;
  int64_t count_ = 0;
};

// Read-only mapping of a token file. Throws KeelError naming the defect for a bad magic,
// a future version, a bad width or a size that disagrees with the header count.
class TokenFile {
 public:
  explicit TokenFile(const std::string& path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  int64_t size() const { return count_; }
  int64_t vocab_size() const { return vocab_size_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t operator[](int64_t i) const {
    return width_ == 2 ? static_cast<const uint16_t*>(data_)[i] : static_cast<const int32_t*>(data_)[i];
  }
  // Copies tokens [begin, begin + n) into out (int64 for LibTorch).
  void read(int64_t begin, int64_t n, int64_t* out) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const void* data_ = nullptr;
  uint32_t width_ = 0;
  int64_t count_ = 0, vocab_size_ = 0;
  int32_t eos_id_ = -1;
};

}  // namespace keel
