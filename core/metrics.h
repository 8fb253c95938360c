// Run metrics: one JSONL line per log call in <run_dir>/metrics.jsonl ({"step": n, "time": s, name: value...})
// and the same scalars in a TensorBoard event file (<run_dir>/events.out.tfevents.<time>.<host>),
// so `tensorboard --logdir <run_dir>` shows the curves. Appends on resume. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace keel {

using Scalars = std::map<std::string, double>;

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& run_dir);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Writes `scalars` for `step`; names like "train/loss" become TensorBoard tags as they are.
  void log(int64_t step, const Scalars& scalars);

 private:
  void write_event(const std::string& event);
  std::FILE* jsonl_ = nullptr;
  std::FILE* events_ = nullptr;
};

// TFRecord framing of one serialized tf.Event (exposed for tests): length, masked CRC32C, data, CRC.
std::string tfrecord_frame(const std::string& data);
uint32_t crc32c(const std::string& data);

}  // namespace keel
