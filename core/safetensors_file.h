// A safetensors file (core/safetensors.h) read tensor by tensor. The header is read and checked
// when it opens; each tensor's bytes then go from the file straight into memory the caller names
// (a model's parameters), so loading a model holds no copy of the file. Errors are
// load_safetensors's, kinds included: a missing file is an I/O error naming it, a defect in the
// header or a file that ends before a tensor does is corrupt data naming the file and the tensor.
#pragma once

#include <string>

#include "core/safetensors.h"

namespace keel {

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  bool contains(const std::string& name) const { return header_.entries.count(name) != 0; }
  // The entry of `name`; an error naming the tensor and the file when it has none.
  const SafetensorsEntry& entry(const std::string& name) const;

  // Reads tensor `name`'s entry(name).bytes() bytes into dst, CPU memory of at least that size.
  // Reads are positioned (pread): several threads may read one file at once.
  void read_into(const std::string& name, void* dst) const;
  // Tensor `name` in fresh CPU memory.
  torch::Tensor read(const std::string& name) const;
  // Every tensor, each in fresh CPU memory.
  TensorMap read_all() const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  SafetensorsHeader header_;
};

}  // namespace keel
