#include "replay/hdf5_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace keel::h5 {

namespace {

// HDF5's sec2 driver leaves write(2)'s errno behind: a write that failed for want of room is
// kOutOfSpace, any other kIo. Callers clear errno before the HDF5 call and pass what it left.
ErrorKind write_failure_kind(int err) { return io_error_kind(err); }

herr_t close_id(hid_t id) {
  switch (H5Iget_type(id)) {
    case H5I_FILE:
      return H5Fclose(id);
    case H5I_GROUP:
      return H5Gclose(id);
    case H5I_DATATYPE:
      return H5Tclose(id);
    case H5I_DATASPACE:
      return H5Sclose(id);
    case H5I_DATASET:
      return H5Dclose(id);
    case H5I_ATTR:
      return H5Aclose(id);
    case H5I_GENPROP_LST:
      return H5Pclose(id);
    default:
      return H5Idec_ref(id) < 0 ? -1 : 0;
  }
}

}  // namespace

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

void Handle::reset(hid_t id) {
  if (id_ >= 0) close_id(id_);
  id_ = id;
}

void Handle::close(const std::string& what) {
  if (id_ < 0) return;
  errno = 0;
  const herr_t st = close_id(release());
  const int err = errno;
  KEEL_CHECK_KIND(write_failure_kind(err), st >= 0,
                  "HDF5: cannot close " << what << " (the last writes may not have reached the disk)");
}

std::mutex& mutex() {
  static std::mutex m;
  return m;
}

void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

Handle open_file(const std::string& path, unsigned flags, const std::string& what) {
  std::error_code ec;
  KEEL_CHECK_KIND(ErrorKind::kIo, std::filesystem::exists(path, ec), what << " " << path << " does not exist");
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  KEEL_CHECK_KIND(ErrorKind::kIo, is_hdf5 >= 0, what << " " << path << " cannot be read: " << std::strerror(errno));
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, is_hdf5 > 0,
                  what << " " << path << " is not an HDF5 file (truncated or another format)");
  Handle file(H5Fopen(path.c_str(), flags, H5P_DEFAULT));
  if (file.valid()) return file;
  // The file is readable and starts like HDF5: unless writing is refused, its contents are at fault.
  const bool rdwr = (flags & H5F_ACC_RDWR) != 0;
  KEEL_CHECK_KIND(ErrorKind::kIo, ::access(path.c_str(), rdwr ? R_OK | W_OK : R_OK) == 0,
                  what << " " << path << " cannot be opened" << (rdwr ? " for writing" : "") << ": " << std::strerror(errno));
  KEEL_FAIL_KIND(ErrorKind::kCorruptData, what << " " << path << " cannot be opened as HDF5 (truncated or corrupt file?)");
}

Handle create_file(const std::string& path, unsigned flags, const std::string& what) {
  errno = 0;
  Handle file(H5Fcreate(path.c_str(), flags, H5P_DEFAULT, H5P_DEFAULT));
  const int err = errno;
  KEEL_CHECK_KIND(write_failure_kind(err), file.valid(), "cannot create " << what << " " << path);
  return file;
}

void flush(hid_t file, const std::string& origin) {
  errno = 0;
  const herr_t st = H5Fflush(file, H5F_SCOPE_GLOBAL);
  const int err = errno;
  KEEL_CHECK_KIND(write_failure_kind(err), st >= 0, origin << ": HDF5 flush failed");
}

Handle create_extendable(hid_t file, const std::string& name, hid_t type, hsize_t chunk) {
  hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunks[1] = {chunk};
  Handle space(H5Screate_simple(1, dims, maxdims));
  Handle plist(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(plist.get(), 1, chunks);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  errno = 0;
  Handle ds(H5Dcreate2(file, name.c_str(), type, space.get(), lcpl.get(), plist.get(), H5P_DEFAULT));
  const int err = errno;
  KEEL_CHECK_KIND(write_failure_kind(err), ds.valid(), "cannot create dataset " << name);
  return ds;
}

bool exists(hid_t file, const std::string& name) {
  // Check each path component so that a missing group is "absent", not an error.
  size_t at = 0;
  while (true) {
    at = name.find('/', at + 1);
    const std::string prefix = name.substr(0, at);
    if (!prefix.empty() && H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (at == std::string::npos) return true;
  }
}

Handle open_dataset(hid_t file, const std::string& name, const std::string& origin) {
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, exists(file, name), origin << ": dataset /" << name << " is missing");
  Handle d(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, d.valid(), origin << ": /" << name << " is not a dataset");
  return d;
}

Handle create_group(hid_t file, const std::string& name) {
  errno = 0;
  Handle g(H5Gcreate2(file, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  const int err = errno;
  KEEL_CHECK_KIND(write_failure_kind(err), g.valid(), "cannot create group " << name);
  return g;
}

Handle open_group(hid_t file, const std::string& name, const std::string& origin) {
  Handle g(exists(file, name) ? H5Gopen2(file, name.c_str(), H5P_DEFAULT) : -1);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, g.valid(), origin << ": group /" << name << " is missing");
  return g;
}

std::string name_of(hid_t obj) {
  const ssize_t n = H5Iget_name(obj, nullptr, 0);
  if (n <= 0) return "(unnamed)";
  std::string s(static_cast<size_t>(n) + 1, '\0');
  H5Iget_name(obj, s.data(), s.size());
  s.resize(static_cast<size_t>(n));
  return s;
}

hsize_t extent(hid_t ds) {
  Handle space(H5Dget_space(ds));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  hsize_t dims[1] = {0};
  if (rank == 1) H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, rank == 1,
                  "dataset " << name_of(ds) << " has rank " << rank << ", expected a one-dimensional array");
  return dims[0];
}

namespace {
H5T_class_t type_class(hid_t ds) {
  Handle t(H5Dget_type(ds));
  return H5Tget_class(t.get());
}
}  // namespace

bool is_integer(hid_t ds) { return type_class(ds) == H5T_INTEGER; }
bool is_float(hid_t ds) { return type_class(ds) == H5T_FLOAT; }

void append(hid_t ds, hid_t memtype, const void* data, hsize_t n) {
  if (n == 0) return;
  const hsize_t old = extent(ds);
  hsize_t size[1] = {old + n};
  errno = 0;
  const herr_t st = H5Dset_extent(ds, size);
  const int err = errno;
  KEEL_CHECK_KIND(write_failure_kind(err), st >= 0, "HDF5: cannot extend dataset " << name_of(ds));
  write_range(ds, memtype, old, n, data);
}

void write_range(hid_t ds, hid_t memtype, hsize_t begin, hsize_t n, const void* data) {
  if (n == 0) return;
  Handle file_space(H5Dget_space(ds));
  hsize_t start[1] = {begin}, count[1] = {n};
  H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
  Handle mem_space(H5Screate_simple(1, count, nullptr));
  errno = 0;
  const herr_t st = H5Dwrite(ds, memtype, mem_space.get(), file_space.get(), H5P_DEFAULT, data);
  const int err = errno;
  KEEL_CHECK_KIND(write_failure_kind(err), st >= 0, "HDF5 write failed (dataset " << name_of(ds) << ")");
}

void read_range(hid_t ds, hid_t memtype, hsize_t begin, hsize_t n, void* out, const std::string& origin) {
  if (n == 0) return;
  const hsize_t size = extent(ds);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, begin + n <= size,
                  origin << ": read of [" << begin << ", " << begin + n << ") past the end (" << size << ")");
  Handle file_space(H5Dget_space(ds));
  hsize_t start[1] = {begin}, count[1] = {n};
  H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
  Handle mem_space(H5Screate_simple(1, count, nullptr));
  const herr_t st = H5Dread(ds, memtype, mem_space.get(), file_space.get(), H5P_DEFAULT, out);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, st >= 0, origin << ": HDF5 read failed (truncated or corrupt file?)");
}

int64_t check_offsets_count(hid_t ds, int64_t rows, const std::string& origin, OffsetsTail tail) {
  const hsize_t n = extent(ds);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, n >= 1,
                  origin << ": " << name_of(ds) << " is empty; it needs N+1 entries starting at 0");
  if (rows < 0) return static_cast<int64_t>(n) - 1;
  const auto want = static_cast<hsize_t>(rows) + 1;
  const bool exact = tail == OffsetsTail::kNone;
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, exact ? n == want : n >= want,
                  origin << ": " << name_of(ds) << " has " << n << " entries, expected " << (exact ? "" : "at least ") << want
                         << " (rows + 1)");
  return rows;
}

std::vector<int64_t> read_offsets(hid_t ds, int64_t rows, hsize_t data_extent, const std::string& origin, OffsetsTail tail) {
  const std::string name = name_of(ds);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, is_integer(ds), origin << ": " << name << " must hold integers");
  const int64_t n = check_offsets_count(ds, rows, origin, tail);
  std::vector<int64_t> v(static_cast<size_t>(n) + 1);
  read_range(ds, H5T_NATIVE_INT64, 0, v.size(), v.data(), origin + " " + name);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, v[0] == 0, origin << ": " << name << "[0] is " << v[0] << ", expected 0");
  for (size_t i = 1; i < v.size(); ++i)
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, v[i] >= v[i - 1],
                    origin << ": " << name << " decreases at row " << i - 1 << " (entry " << i << " is " << v[i] << ", entry "
                           << i - 1 << " is " << v[i - 1] << ")");
  const auto size = static_cast<int64_t>(data_extent);
  const bool ok = tail == OffsetsTail::kNone ? v.back() == size : v.back() <= size;
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, ok,
                  origin << ": " << name << " ends at " << v.back() << " (row " << n - 1 << ") but the data holds " << size
                         << " elements" << (v.back() > size ? " (truncated file?)" : ""));
  return v;
}

void set_attr_int(hid_t obj, const std::string& name, int64_t value, hid_t file_type) {
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  Handle scalar(H5Screate(H5S_SCALAR));
  Handle a(H5Acreate2(obj, name.c_str(), file_type, scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
  KEEL_CHECK_KIND(ErrorKind::kIo, a.valid() && H5Awrite(a.get(), H5T_NATIVE_INT64, &value) >= 0,
                  "HDF5: cannot write attribute " << name << " of " << name_of(obj));
}

namespace {
void write_string_attr(hid_t obj, const std::string& name, hid_t str, const void* data) {
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  Handle scalar(H5Screate(H5S_SCALAR));
  Handle a(H5Acreate2(obj, name.c_str(), str, scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
  KEEL_CHECK_KIND(ErrorKind::kIo, a.valid() && H5Awrite(a.get(), str, data) >= 0,
                  "HDF5: cannot write attribute " << name << " of " << name_of(obj));
}
}  // namespace

void set_attr_string(hid_t obj, const std::string& name, const std::string& value) {
  // Variable-length UTF-8, as h5py writes strings: Python reads them back as str, not bytes.
  Handle str(H5Tcopy(H5T_C_S1));
  H5Tset_size(str.get(), H5T_VARIABLE);
  H5Tset_cset(str.get(), H5T_CSET_UTF8);
  const char* p = value.c_str();
  write_string_attr(obj, name, str.get(), &p);
}

void set_attr_fixed_string(hid_t obj, const std::string& name, const std::string& value) {
  const std::string stored = value.empty() ? " " : value;
  Handle str(H5Tcopy(H5T_C_S1));
  H5Tset_size(str.get(), stored.size());
  write_string_attr(obj, name, str.get(), stored.c_str());
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

int64_t get_attr_int(hid_t obj, const std::string& name, const std::string& origin) {
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, has_attr(obj, name), origin << ": attribute " << name << " is missing");
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  Handle t(H5Aget_type(a.get()));
  int64_t v = 0;
  const bool ok = H5Tget_class(t.get()) == H5T_INTEGER && H5Aread(a.get(), H5T_NATIVE_INT64, &v) >= 0;
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, ok, origin << ": attribute " << name << " is not an integer");
  return v;
}

namespace {
// Reads a string attribute `a` of type `t` into *out; false when it is not a string.
bool read_string_attr(hid_t a, hid_t t, std::string* out) {
  if (H5Tget_class(t) != H5T_STRING) return false;
  if (H5Tis_variable_str(t) > 0) {
    char* s = nullptr;
    Handle mt(H5Tcopy(H5T_C_S1));
    H5Tset_size(mt.get(), H5T_VARIABLE);
    H5Tset_cset(mt.get(), H5Tget_cset(t));
    if (H5Aread(a, mt.get(), &s) < 0) return false;
    if (s) {
      *out = s;
      H5free_memory(s);
    }
    return true;
  }
  std::string buf(H5Tget_size(t), '\0');
  if (H5Aread(a, t, buf.data()) < 0) return false;
  *out = buf.substr(0, buf.find('\0'));
  return true;
}
}  // namespace

std::string get_attr_string(hid_t obj, const std::string& name, const std::string& origin) {
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, has_attr(obj, name), origin << ": attribute " << name << " is missing");
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  Handle t(H5Aget_type(a.get()));
  std::string out;
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, read_string_attr(a.get(), t.get(), &out),
                  origin << ": attribute " << name << " is not a string");
  return out;
}

}  // namespace keel::h5
