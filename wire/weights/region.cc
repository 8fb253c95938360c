#include "wire/weights/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

namespace {

constexpr char kMagic[8] = {'K', 'E', 'E', 'L', 'S', 'H', 'W', '1'};
constexpr size_t kLayoutAt = 256;
constexpr size_t kSeq = 32, kHeld = 48, kNewest = 64;

// Creating or sizing the region: no room (a full or small tmpfs, a file too large for it, no
// memory) is kOutOfSpace, any other failure kIo.
ErrorKind sizing_kind(int err) { return err == EFBIG ? ErrorKind::kOutOfSpace : io_error_kind(err); }

uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

uint64_t load_acquire(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void store_release(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

}  // namespace

uint64_t* SharedWeights::word(size_t byte_offset) const { return reinterpret_cast<uint64_t*>(base_ + byte_offset); }

std::unique_ptr<SharedWeights> SharedWeights::create(const std::string& path, const TensorMap& like) {
  std::unique_ptr<SharedWeights> w(new SharedWeights());
  w->path_ = path;
  nlohmann::json layout = nlohmann::json::array();
  uint64_t offset = 0;
  for (const auto& [name, t] : like) {
    Entry e{name, t.scalar_type(), t.sizes().vec(), offset, static_cast<uint64_t>(t.numel()) * t.element_size()};
    layout.push_back({{"name", name},
                      {"dtype", safetensors_dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"offset", e.offset},
                      {"bytes", e.bytes}});
    offset = round_up(offset + e.bytes, 64);
    w->entries_.push_back(std::move(e));
  }
  const std::string text = layout.dump();
  w->slot_bytes_ = round_up(std::max<uint64_t>(offset, 64), 4096);
  w->data_offset_ = round_up(kLayoutAt + text.size(), 4096);
  w->size_ = w->data_offset_ + 2 * w->slot_bytes_;

  ::unlink(path.c_str());
  w->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  KEEL_CHECK_KIND(sizing_kind(errno), w->fd_ >= 0, "cannot create shared weights " << path << ": " << std::strerror(errno));
  w->owner_ = true;  // from here on the destructor removes the file
  // Reserve every page now: a full tmpfs then fails here with a message, not later with SIGBUS.
  const int rc = ::posix_fallocate(w->fd_, 0, static_cast<off_t>(w->size_));
  KEEL_CHECK_KIND(sizing_kind(rc), rc == 0,
                  "cannot reserve " << w->size_ / (1 << 20) << " MiB for shared weights " << path << ": " << std::strerror(rc)
                                    << " (is the shared-memory file system too small? see --shared-dir)");
  void* p = ::mmap(nullptr, w->size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, w->fd_, 0);
  KEEL_CHECK_KIND(sizing_kind(errno), p != MAP_FAILED, "cannot map shared weights " << path << ": " << std::strerror(errno));
  w->base_ = static_cast<uint8_t*>(p);
  std::memcpy(w->base_, kMagic, 8);
  *w->word(8) = text.size();
  *w->word(16) = w->slot_bytes_;
  *w->word(24) = w->data_offset_;
  std::memcpy(w->base_ + kLayoutAt, text.data(), text.size());
  return w;
}

std::unique_ptr<SharedWeights> SharedWeights::open(const std::string& path) {
  std::unique_ptr<SharedWeights> w(new SharedWeights());
  w->path_ = path;
  w->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KEEL_CHECK_KIND(ErrorKind::kIo, w->fd_ >= 0, "cannot open shared weights " << path << ": " << std::strerror(errno));
  struct stat st {};
  KEEL_CHECK_KIND(ErrorKind::kIo, ::fstat(w->fd_, &st) == 0, "cannot stat shared weights " << path);
  w->size_ = static_cast<size_t>(st.st_size);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, w->size_ >= kLayoutAt,
                  path << " is too short (" << w->size_ << " bytes) to be a shared weights file");
  void* p = ::mmap(nullptr, w->size_, PROT_READ, MAP_SHARED | MAP_POPULATE, w->fd_, 0);
  KEEL_CHECK_KIND(io_error_kind(errno), p != MAP_FAILED, "cannot map shared weights " << path << ": " << std::strerror(errno));
  w->base_ = static_cast<uint8_t*>(p);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, std::memcmp(w->base_, kMagic, 8) == 0,
                  path << " is not a keel shared weights file (bad magic)");
  const uint64_t layout_bytes = *w->word(8);
  w->slot_bytes_ = *w->word(16);
  w->data_offset_ = *w->word(24);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData,
                  layout_bytes <= w->size_ - kLayoutAt && w->data_offset_ >= kLayoutAt + layout_bytes &&
                      w->slot_bytes_ <= (w->size_ - std::min<uint64_t>(w->data_offset_, w->size_)) / 2,
                  path << ": layout, data offset or slot size lies outside the file");
  nlohmann::json layout;
  try {
    layout = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(w->base_ + kLayoutAt), layout_bytes));
  } catch (const nlohmann::json::exception& e) {
    KEEL_FAIL_KIND(ErrorKind::kCorruptData, path << ": the layout is not JSON (" << e.what() << ")");
  }
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, layout.is_array(), path << ": the layout is not a list of tensors");
  for (const auto& j : layout) {
    Entry e;
    try {
      e.name = j.at("name").get<std::string>();
      KEEL_CHECK_KIND(ErrorKind::kCorruptData, parse_safetensors_dtype(j.at("dtype").get<std::string>(), &e.dtype),
                      path << ": tensor " << e.name << " has an unknown dtype");
      e.shape = j.at("shape").get<std::vector<int64_t>>();
      e.offset = j.at("offset").get<uint64_t>();
      e.bytes = j.at("bytes").get<uint64_t>();
    } catch (const nlohmann::json::exception& x) {
      KEEL_FAIL_KIND(ErrorKind::kCorruptData, path << ": a layout entry lacks a field (" << x.what() << ")");
    }
    uint64_t numel = 1;
    for (auto d : e.shape) {
      KEEL_CHECK_KIND(ErrorKind::kCorruptData, d >= 0 && d < (int64_t{1} << 40),
                      path << ": tensor " << e.name << " has a bad shape");
      numel *= static_cast<uint64_t>(d);
    }
    KEEL_CHECK_KIND(ErrorKind::kCorruptData,
                    e.bytes == numel * c10::elementSize(e.dtype) && e.offset <= w->slot_bytes_ &&
                        e.bytes <= w->slot_bytes_ - e.offset && e.offset % 64 == 0,
                    path << ": tensor " << e.name << " does not fit its slot");
    w->entries_.push_back(std::move(e));
  }
  return w;
}

SharedWeights::~SharedWeights() {
  if (base_) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
  if (owner_) ::unlink(path_.c_str());
}

bool SharedWeights::matches(const TensorMap& tensors) const {
  if (tensors.size() != entries_.size()) return false;
  for (const auto& e : entries_) {
    auto it = tensors.find(e.name);
    if (it == tensors.end() || it->second.scalar_type() != e.dtype || it->second.sizes().vec() != e.shape) return false;
  }
  return true;
}

void SharedWeights::write(uint64_t version, const TensorMap& tensors) {
  KEEL_CHECK(owner_, "shared weights " << path_ << " were opened for reading");
  KEEL_CHECK(matches(tensors), "shared weights " << path_ << ": the tensors differ from the file's layout");
  const size_t slot = version % 2;
  uint64_t* seq = word(kSeq + 8 * slot);
  const uint64_t s = *seq;
  __atomic_store_n(seq, s + 1, __ATOMIC_RELAXED);  // odd: being written
  std::atomic_thread_fence(std::memory_order_release);
  uint8_t* data = base_ + data_offset_ + slot * slot_bytes_;
  torch::NoGradGuard ng;
  for (const auto& e : entries_) {
    auto dst = torch::from_blob(data + e.offset, e.shape, torch::dtype(e.dtype));
    dst.copy_(tensors.at(e.name));
  }
  __atomic_store_n(word(kHeld + 8 * slot), version + 1, __ATOMIC_RELAXED);
  store_release(seq, s + 2);
  store_release(word(kNewest), version + 1);
}

bool SharedWeights::read(uint64_t version, const std::function<void(const TensorMap&)>& use) const {
  const size_t slot = version % 2;
  const uint64_t* seq = word(kSeq + 8 * slot);
  const uint64_t before = load_acquire(seq);
  if (before % 2 == 1 || load_acquire(word(kHeld + 8 * slot)) != version + 1) return false;
  uint8_t* data = base_ + data_offset_ + slot * slot_bytes_;
  TensorMap views;
  for (const auto& e : entries_) views[e.name] = torch::from_blob(data + e.offset, e.shape, torch::dtype(e.dtype));
  use(views);
  std::atomic_thread_fence(std::memory_order_acquire);
  return __atomic_load_n(seq, __ATOMIC_RELAXED) == before &&
         __atomic_load_n(word(kHeld + 8 * slot), __ATOMIC_RELAXED) == version + 1;
}

bool SharedWeights::views(uint64_t version, TensorMap* out, uint64_t* token) const {
  const size_t slot = version % 2;
  const uint64_t s = load_acquire(word(kSeq + 8 * slot));
  if (s % 2 == 1 || load_acquire(word(kHeld + 8 * slot)) != version + 1) return false;
  uint8_t* data = base_ + data_offset_ + slot * slot_bytes_;
  out->clear();
  for (const auto& e : entries_) (*out)[e.name] = torch::from_blob(data + e.offset, e.shape, torch::dtype(e.dtype));
  *token = s;
  return true;
}

bool SharedWeights::unchanged(uint64_t version, uint64_t token) const {
  const size_t slot = version % 2;
  std::atomic_thread_fence(std::memory_order_acquire);
  return __atomic_load_n(word(kSeq + 8 * slot), __ATOMIC_RELAXED) == token &&
         __atomic_load_n(word(kHeld + 8 * slot), __ATOMIC_RELAXED) == version + 1;
}

bool SharedWeights::newest(uint64_t* version) const {
  const uint64_t n = load_acquire(word(kNewest));
  if (n == 0) return false;
  *version = n - 1;
  return true;
}

}  // namespace keel
