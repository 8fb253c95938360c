// Small helpers over the HDF5 C API shared by the replay files (rollout log, preference buffer):
// an owning handle for every HDF5 identifier; one-dimensional chunked, extendable datasets;
// appends; range reads with type conversion; string attributes; one validator for the offsets of
// flat+offsets datasets. Every failure is a KeelError naming the file or the dataset, of kind
// kIo (a file that cannot be opened, created or written), kOutOfSpace (a write that failed with
// ENOSPC / EDQUOT) or kCorruptData (a file whose layout or contents are inconsistent).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace keel::h5 {

// Owns one HDF5 identifier (file, group, dataset, dataspace, datatype, attribute or property
// list) and closes it with the matching H5*close when destroyed or reset. Move-only; a negative
// id is held as empty. The destructor ignores close errors: writers call close() first, which
// reports them. Closing is an HDF5 call like any other: hold mutex() where other threads use HDF5.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(other.release()) {}
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() {
    const hid_t id = id_;
    id_ = -1;
    return id;
  }
  void reset(hid_t id = -1);  // closes the current id, ignoring errors, and holds `id`
  // Closes now; throws KeelError (kIo, kOutOfSpace when errno says so) naming `what` when HDF5
  // reports a failure (for a file: the final flush did not reach the disk). Empty afterwards.
  void close(const std::string& what);

 private:
  hid_t id_ = -1;
};

// The HDF5 library Debian ships is not thread-safe: callers that may use HDF5 from more than one
// thread (a prefetching reader beside a writer) hold this lock around their calls.
std::mutex& mutex();

// Silences HDF5's own error printing once; keel reports errors itself.
void quiet();

// Opening and creating files; `what` names the file's role in messages ("rollout log").
// open_file: kIo when the file is absent or cannot be opened; kCorruptData when it exists but is
// not an HDF5 file. create_file: kIo. `flags` are H5F_ACC_* flags.
Handle open_file(const std::string& path, unsigned flags, const std::string& what);
Handle create_file(const std::string& path, unsigned flags, const std::string& what);
// Flushes every buffer of `file` to disk; kIo / kOutOfSpace naming `origin` when that fails.
void flush(hid_t file, const std::string& origin);

// Creates an empty one-dimensional dataset of `type` that grows by appends (kIo on failure).
Handle create_extendable(hid_t file, const std::string& name, hid_t type, hsize_t chunk = 16384);
// Opens dataset `name`; kCorruptData naming `origin` when it is absent or not a dataset.
Handle open_dataset(hid_t file, const std::string& name, const std::string& origin);
bool exists(hid_t file, const std::string& name);          // a link at `name` (intermediate groups allowed)
Handle create_group(hid_t file, const std::string& name);  // kIo on failure
Handle open_group(hid_t file, const std::string& name, const std::string& origin);  // kCorruptData when absent

std::string name_of(hid_t obj);  // the object's path in its file ("/chosen/offsets"), for messages
hsize_t extent(hid_t ds);        // number of elements of a one-dimensional dataset (kCorruptData on other ranks)
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

// Flat+offsets datasets: row i of the data dataset is data[offsets[i]:offsets[i+1]].
enum class OffsetsTail {
  kNone,     // a finished file: exactly rows + 1 offsets, the last equal to the data's extent
  kAllowed,  // an append log a writer may have cut short: at least rows + 1 offsets (only the
             // first rows + 1 are read), the last of them at most the data's extent
};
// Checks that the offsets dataset `ds` holds rows + 1 entries (kAllowed: at least that many);
// rows < 0 accepts any count of at least one. Returns the number of rows it indexes (rows when
// rows >= 0). kCorruptData naming `origin` and the dataset otherwise.
int64_t check_offsets_count(hid_t ds, int64_t rows, const std::string& origin, OffsetsTail tail = OffsetsTail::kNone);
// Reads and validates the offsets dataset `ds` of a flat+offsets pair whose data dataset holds
// `data_extent` elements: integers, the count check_offsets_count() makes, the first 0,
// non-decreasing, the last equal to `data_extent` (kAllowed: at most). Returns the rows + 1
// offsets. Every violation is a KeelError of kind kCorruptData naming `origin` (the file), the
// dataset and the row.
std::vector<int64_t> read_offsets(hid_t ds, int64_t rows, hsize_t data_extent, const std::string& origin,
                                  OffsetsTail tail = OffsetsTail::kNone);

// Attributes. Writing failures are kIo; a missing or mistyped attribute is kCorruptData.
// set_attr_int stores `value` as `file_type` (an integer type; int64 by default).
void set_attr_int(hid_t obj, const std::string& name, int64_t value, hid_t file_type = H5T_STD_I64LE);
void set_attr_string(hid_t obj, const std::string& name, const std::string& value);
// A fixed-length string of value.size() bytes (at least one; "" is stored as " "), as version 1
// rollout logs hold their tokenizer.
void set_attr_fixed_string(hid_t obj, const std::string& name, const std::string& value);
bool has_attr(hid_t obj, const std::string& name);
int64_t get_attr_int(hid_t obj, const std::string& name, const std::string& origin);
// Reads fixed-length or variable-length string attributes (h5py writes variable-length by default).
std::string get_attr_string(hid_t obj, const std::string& name, const std::string& origin);

}  // namespace keel::h5
