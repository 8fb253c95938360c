#include "core/metrics.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

namespace {

double now_seconds() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

// Minimal protobuf encoding of tf.Event {1: double wall_time, 2: int64 step, 3: string file_version,
// 5: Summary {1: repeated Value {1: string tag, 2: float simple_value}}}.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void put_bytes(std::string& out, int field, const std::string& s) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | 2);
  put_varint(out, s.size());
  out += s;
}
template <typename T>
void put_fixed(std::string& out, int field, T v) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | (sizeof(T) == 8 ? 1 : 5));
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
std::string event_header(double wall, int64_t step) {
  std::string e;
  put_fixed<double>(e, 1, wall);
  put_varint(e, 2 << 3 | 0);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

}  // namespace

uint32_t crc32c(const std::string& data) {
  static uint32_t table[256] = {};
  static bool init = false;
  if (!init) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82F63B78u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    init = true;
  }
  uint32_t crc = 0xffffffffu;
  for (unsigned char ch : data) crc = table[(crc ^ ch) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

std::string tfrecord_frame(const std::string& data) {
  auto masked = [](uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; };
  std::string len(8, '\0');
  const uint64_t n = data.size();
  std::memcpy(len.data(), &n, 8);
  std::string out = len;
  uint32_t c = masked(crc32c(len));
  out.append(reinterpret_cast<const char*>(&c), 4);
  out += data;
  c = masked(crc32c(data));
  out.append(reinterpret_cast<const char*>(&c), 4);
  return out;
}

MetricsWriter::MetricsWriter(const std::string& run_dir) {
  std::filesystem::create_directories(run_dir);
  jsonl_ = std::fopen((run_dir + "/metrics.jsonl").c_str(), "a");
  KEEL_CHECK_KIND(ErrorKind::kIo, jsonl_, "cannot open " << run_dir << "/metrics.jsonl");
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const double t = now_seconds();
  const std::string name =
      run_dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(t)) + "." + host + "." + std::to_string(::getpid());
  events_ = std::fopen(name.c_str(), "wb");
  KEEL_CHECK_KIND(ErrorKind::kIo, events_, "cannot open " << name);
  std::string e = event_header(t, 0);
  put_bytes(e, 3, "brain.Event:2");
  write_event(e);
}

MetricsWriter::~MetricsWriter() {
  if (jsonl_) std::fclose(jsonl_);
  if (events_) std::fclose(events_);
}

void MetricsWriter::write_event(const std::string& event) {
  const auto framed = tfrecord_frame(event);
  std::fwrite(framed.data(), 1, framed.size(), events_);
  std::fflush(events_);
}

void MetricsWriter::log(int64_t step, const Scalars& scalars) {
  const double t = now_seconds();
  nlohmann::json j;
  j["step"] = step;
  j["time"] = t;
  std::string summary;
  for (const auto& [name, v] : scalars) {
    j[name] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    std::string value;
    put_bytes(value, 1, name);
    put_fixed<float>(value, 2, static_cast<float>(v));
    put_bytes(summary, 1, value);
  }
  const std::string line = j.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), jsonl_);
  std::fflush(jsonl_);
  std::string e = event_header(t, step);
  put_bytes(e, 5, summary);
  write_event(e);
}

}  // namespace keel
