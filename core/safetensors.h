// Safetensors files: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw bytes.
// The format Hugging Face tools read and write; see docs/formats.md.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

// The bytes of a safetensors file holding `tensors` in pieces, for a writer that puts them
// somewhere of its own: piece 0 is the header (its length, the JSON, padding), then each tensor's
// data (CPU, contiguous) in file order. Their concatenation is safetensors_bytes().
struct SafetensorsPieces {
  std::string header;
  std::vector<torch::Tensor> data;
  size_t count() const { return 1 + data.size(); }
  std::string_view piece(size_t i) const;
  size_t total_bytes() const;
};
SafetensorsPieces safetensors_pieces(const TensorMap& tensors, const Metadata& metadata = {});

// The bytes of a safetensors file holding `tensors` (what save_safetensors writes).
std::string safetensors_bytes(const TensorMap& tensors, const Metadata& metadata = {});
// The same into `out`, whose memory is reused (a sender that serialises every version).
void safetensors_bytes_into(std::string& out, const TensorMap& tensors, const Metadata& metadata = {});
// Parses safetensors bytes; `origin` names them in errors.
TensorMap parse_safetensors(const std::string& bytes, const std::string& origin, Metadata* metadata = nullptr);
// The same checks, but the tensors are views into `bytes` (no copy), which they keep alive.
TensorMap safetensors_views(std::shared_ptr<const std::string> bytes, const std::string& origin, Metadata* metadata = nullptr);

// One tensor's entry in a safetensors header: dtype, shape, and its bytes [begin, end) in the data
// section.
struct SafetensorsEntry {
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
  uint64_t bytes() const { return end - begin; }
};
// A checked header: every entry's dtype known, its shape filling its span, the spans inside the data
// section and not overlapping. The data section starts at byte data_start of the file.
struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> entries;
  Metadata metadata;
  uint64_t data_start = 0;
};
// The header's length from a file's first 8 bytes (file_size bytes in all); truncation is an error.
uint64_t safetensors_header_length(std::string_view first_bytes, uint64_t file_size, const std::string& origin);
// Parses and checks the header's JSON, for a data section of data_size bytes at data_start.
SafetensorsHeader parse_safetensors_header(std::string_view header_json, uint64_t data_start, uint64_t data_size,
                                           const std::string& origin);

// Safetensors dtype names ("F32", "BF16", ...): throws KeelError for a dtype it has no name for;
// parse returns false for an unknown name.
std::string safetensors_dtype_name(torch::ScalarType type);
bool parse_safetensors_dtype(const std::string& name, torch::ScalarType* type);

// Writes `tensors` (copied to contiguous CPU memory) atomically: to path + ".tmp", fsync, rename.
void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

// Reads every tensor into owned CPU memory, each straight from the file (SafetensorsFile, in
// core/safetensors_file.h, reads chosen tensors into memory of the caller's). Throws KeelError naming the file and the defect
// (missing, truncated, bad header, unknown dtype, offsets outside the data, overlapping tensors).
TensorMap load_safetensors(const std::string& path, Metadata* metadata = nullptr);

// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

}  // namespace keel
