#include "replay/hdf5_io.h"

#include "core/error.h"

namespace keel::h5 {

std::mutex& mutex() {
  static std::mutex m;
  return m;
}

void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

hid_t create_extendable(hid_t file, const std::string& name, hid_t type, hsize_t chunk) {
  hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunks[1] = {chunk};
  hid_t space = H5Screate_simple(1, dims, maxdims);
  hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(plist, 1, chunks);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t ds = H5Dcreate2(file, name.c_str(), type, space, lcpl, plist, H5P_DEFAULT);
  H5Pclose(lcpl);
  H5Pclose(plist);
  H5Sclose(space);
  KEEL_CHECK(ds >= 0, "cannot create dataset " << name);
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

hid_t open_dataset(hid_t file, const std::string& name, const std::string& origin) {
  KEEL_CHECK(exists(file, name), origin << ": dataset /" << name << " is missing");
  hid_t d = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  KEEL_CHECK(d >= 0, origin << ": /" << name << " is not a dataset");
  return d;
}

hid_t create_group(hid_t file, const std::string& name) {
  hid_t g = H5Gcreate2(file, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  KEEL_CHECK(g >= 0, "cannot create group " << name);
  return g;
}

hsize_t extent(hid_t ds) {
  hid_t space = H5Dget_space(ds);
  const int rank = H5Sget_simple_extent_ndims(space);
  hsize_t dims[1] = {0};
  if (rank == 1) H5Sget_simple_extent_dims(space, dims, nullptr);
  H5Sclose(space);
  KEEL_CHECK(rank == 1, "dataset has rank " << rank << ", expected a one-dimensional array");
  return dims[0];
}

namespace {
H5T_class_t type_class(hid_t ds) {
  hid_t t = H5Dget_type(ds);
  const H5T_class_t c = H5Tget_class(t);
  H5Tclose(t);
  return c;
}
}  // namespace

bool is_integer(hid_t ds) { return type_class(ds) == H5T_INTEGER; }
bool is_float(hid_t ds) { return type_class(ds) == H5T_FLOAT; }

void append(hid_t ds, hid_t memtype, const void* data, hsize_t n) {
  if (n == 0) return;
  const hsize_t old = extent(ds);
  hsize_t size[1] = {old + n};
  KEEL_CHECK(H5Dset_extent(ds, size) >= 0, "HDF5: cannot extend a dataset");
  write_range(ds, memtype, old, n, data);
}

void write_range(hid_t ds, hid_t memtype, hsize_t begin, hsize_t n, const void* data) {
  if (n == 0) return;
  hid_t file_space = H5Dget_space(ds);
  hsize_t start[1] = {begin}, count[1] = {n};
  H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr);
  hid_t mem_space = H5Screate_simple(1, count, nullptr);
  const herr_t st = H5Dwrite(ds, memtype, mem_space, file_space, H5P_DEFAULT, data);
  H5Sclose(mem_space);
  H5Sclose(file_space);
  KEEL_CHECK(st >= 0, "HDF5 write failed");
}

void read_range(hid_t ds, hid_t memtype, hsize_t begin, hsize_t n, void* out, const std::string& origin) {
  if (n == 0) return;
  const hsize_t size = extent(ds);
  KEEL_CHECK(begin + n <= size, origin << ": read of [" << begin << ", " << begin + n << ") past the end (" << size << ")");
  hid_t file_space = H5Dget_space(ds);
  hsize_t start[1] = {begin}, count[1] = {n};
  H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr);
  hid_t mem_space = H5Screate_simple(1, count, nullptr);
  const herr_t st = H5Dread(ds, memtype, mem_space, file_space, H5P_DEFAULT, out);
  H5Sclose(mem_space);
  H5Sclose(file_space);
  KEEL_CHECK(st >= 0, origin << ": HDF5 read failed (truncated or corrupt file?)");
}

void set_attr_int(hid_t obj, const std::string& name, int64_t value) {
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  hid_t scalar = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &value);
  H5Aclose(a);
  H5Sclose(scalar);
}

void set_attr_string(hid_t obj, const std::string& name, const std::string& value) {
  // Variable-length UTF-8, as h5py writes strings: Python reads them back as str, not bytes.
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  hid_t scalar = H5Screate(H5S_SCALAR);
  hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, H5T_VARIABLE);
  H5Tset_cset(str, H5T_CSET_UTF8);
  hid_t a = H5Acreate2(obj, name.c_str(), str, scalar, H5P_DEFAULT, H5P_DEFAULT);
  const char* p = value.c_str();
  H5Awrite(a, str, &p);
  H5Aclose(a);
  H5Tclose(str);
  H5Sclose(scalar);
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

int64_t get_attr_int(hid_t obj, const std::string& name, const std::string& origin) {
  KEEL_CHECK(has_attr(obj, name), origin << ": attribute " << name << " is missing");
  hid_t a = H5Aopen(obj, name.c_str(), H5P_DEFAULT);
  hid_t t = H5Aget_type(a);
  const bool ok = H5Tget_class(t) == H5T_INTEGER;
  H5Tclose(t);
  int64_t v = 0;
  const herr_t st = ok ? H5Aread(a, H5T_NATIVE_INT64, &v) : -1;
  H5Aclose(a);
  KEEL_CHECK(st >= 0, origin << ": attribute " << name << " is not an integer");
  return v;
}

std::string get_attr_string(hid_t obj, const std::string& name, const std::string& origin) {
  KEEL_CHECK(has_attr(obj, name), origin << ": attribute " << name << " is missing");
  hid_t a = H5Aopen(obj, name.c_str(), H5P_DEFAULT);
  hid_t t = H5Aget_type(a);
  std::string out;
  herr_t st = -1;
  if (H5Tget_class(t) == H5T_STRING) {
    if (H5Tis_variable_str(t) > 0) {
      char* s = nullptr;
      hid_t mt = H5Tcopy(H5T_C_S1);
      H5Tset_size(mt, H5T_VARIABLE);
      H5Tset_cset(mt, H5Tget_cset(t));
      st = H5Aread(a, mt, &s);
      if (st >= 0 && s) {
        out = s;
        H5free_memory(s);
      }
      H5Tclose(mt);
    } else {
      const size_t n = H5Tget_size(t);
      std::string buf(n, '\0');
      st = H5Aread(a, t, buf.data());
      out = buf.substr(0, buf.find('\0'));
    }
  }
  H5Tclose(t);
  H5Aclose(a);
  KEEL_CHECK(st >= 0, origin << ": attribute " << name << " is not a string");
  return out;
}

}  // namespace keel::h5
