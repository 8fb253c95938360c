// Small helpers over the HDF5 C API shared by the replay files (rollout log, preference buffer):
// one-dimensional chunked, extendable datasets; appends; range reads with type conversion; string
// attributes. Every failure is a KeelError naming the file and the dataset.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace keel::h5 {

// The HDF5 library Debian ships is not thread-safe: callers that may use HDF5 from more than one
// thread (a prefetching reader beside a writer) hold this lock around their calls.
std::mutex& mutex();

// Silences HDF5's own error printing once; keel reports errors itself.
void quiet();

// Creates an empty one-dimensional dataset of `type` that grows by appends.
hid_t create_extendable(hid_t file, const std::string& name, hid_t type, hsize_t chunk = 16384);
hid_t open_dataset(hid_t file, const std::string& name, const std::string& origin);  // throws when absent
bool exists(hid_t file, const std::string& name);  // a link at `name` (intermediate groups allowed)
hid_t create_group(hid_t file, const std::string& name);

hsize_t extent(hid_t ds);  // number of elements of a one-dimensional dataset (throws on other ranks)
// True when the dataset's stored type is an integer (any width / sign) or a float.
bool is_integer(hid_t ds);
bool is_float(hid_t ds);

void append(hid_t ds, hid_t memtype, const void* data, hsize_t n);
template <typename T>
void append(hid_t ds, hid_t memtype, const std::vector<T>& v) {
  append(ds, memtype, v.data(), v.size());
}
// Reads elements [begin, begin + n) converting to `memtype` (HDF5 converts integer widths).
void read_range(hid_t ds, hid_t memtype, hsize_t begin, hsize_t n, void* out, const std::string& origin);
// Overwrites elements [begin, begin + n).
void write_range(hid_t ds, hid_t memtype, hsize_t begin, hsize_t n, const void* data);

void set_attr_int(hid_t obj, const std::string& name, int64_t value);
void set_attr_string(hid_t obj, const std::string& name, const std::string& value);
bool has_attr(hid_t obj, const std::string& name);
int64_t get_attr_int(hid_t obj, const std::string& name, const std::string& origin);
// Reads fixed-length or variable-length string attributes (h5py writes variable-length by default).
std::string get_attr_string(hid_t obj, const std::string& name, const std::string& origin);

}  // namespace keel::h5
