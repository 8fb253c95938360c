#include "replay/preference_stream.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "core/error.h"

namespace keel {

namespace {
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  return x;
}
}  // namespace

// The order of one epoch: the permuted blocks and where each window starts.
struct EpochOrder {
  std::vector<int64_t> blocks;        // block indices in epoch order
  std::vector<int64_t> window_start;  // first stream position (within the epoch) of each window, + total
};

struct PreferenceStream::Impl {
  std::shared_ptr<const PreferenceReader> reader;
  PreferenceStreamOptions o;
  int64_t n = 0, nblocks = 0;
  std::map<int64_t, EpochOrder> epochs;  // touched by the worker thread only (and position())

  // The window held in memory (worker thread).
  int64_t win_epoch = -1, win_index = -1;
  std::vector<PreferencePair> window;

  // Prefetch queue.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int64_t, std::vector<PreferencePair>>> queue;
  int64_t next = 0;
  bool reset = false, stop = false;
  int64_t reset_to = 0;
  std::exception_ptr error;
  std::thread worker;

  int64_t block_size(int64_t b) const { return std::min(o.block_pairs, n - b * o.block_pairs); }

  const EpochOrder& epoch(int64_t e) {
    auto it = epochs.find(e);
    if (it != epochs.end()) return it->second;
    if (epochs.size() > 2) epochs.erase(epochs.begin());
    EpochOrder ord;
    ord.blocks.resize(static_cast<size_t>(nblocks));
    for (int64_t b = 0; b < nblocks; ++b) ord.blocks[b] = b;
    std::mt19937_64 rng(mix(o.seed, static_cast<uint64_t>(e)));
    std::shuffle(ord.blocks.begin(), ord.blocks.end(), rng);
    int64_t pos = 0;
    for (int64_t b = 0; b < nblocks; ++b) {
      if (b % o.window_blocks == 0) ord.window_start.push_back(pos);
      pos += block_size(ord.blocks[b]);
    }
    ord.window_start.push_back(pos);
    return epochs.emplace(e, std::move(ord)).first->second;
  }

  // Order of the pairs within window w of epoch e: buffer positions (relative to begin).
  std::vector<int64_t> window_positions(int64_t e, int64_t w) {
    const auto& ord = epoch(e);
    std::vector<int64_t> pos;
    for (int64_t b = w * o.window_blocks; b < std::min(nblocks, (w + 1) * o.window_blocks); ++b)
      for (int64_t i = 0; i < block_size(ord.blocks[b]); ++i) pos.push_back(ord.blocks[b] * o.block_pairs + i);
    std::mt19937_64 rng(mix(mix(o.seed, static_cast<uint64_t>(e)), static_cast<uint64_t>(w) + 1));
    std::shuffle(pos.begin(), pos.end(), rng);
    return pos;
  }

  std::pair<int64_t, int64_t> locate(int64_t p) {  // (window, offset in window) of stream position p
    const auto& ws = epoch(p / n).window_start;
    const int64_t q = p % n;
    const auto w = static_cast<int64_t>(std::upper_bound(ws.begin(), ws.end(), q) - ws.begin()) - 1;
    return {w, q - ws[w]};
  }

  const PreferencePair& pair_at(int64_t p) {
    const int64_t e = p / n;
    const auto [w, off] = locate(p);
    if (e != win_epoch || w != win_index) {
      // Read the window's blocks (each one range read), then arrange them in the shuffled order.
      const auto& ord = epoch(e);
      std::map<int64_t, PreferencePair> by_pos;
      for (int64_t b = w * o.window_blocks; b < std::min(nblocks, (w + 1) * o.window_blocks); ++b) {
        const int64_t first = ord.blocks[b] * o.block_pairs;
        auto pairs = reader->read(o.begin + first, o.begin + first + block_size(ord.blocks[b]));
        for (size_t i = 0; i < pairs.size(); ++i) by_pos.emplace(first + static_cast<int64_t>(i), std::move(pairs[i]));
      }
      window.clear();
      for (int64_t pos : window_positions(e, w)) window.push_back(std::move(by_pos.at(pos)));
      win_epoch = e;
      win_index = w;
    }
    return window[off];
  }

  std::vector<PreferencePair> make(int64_t k) {
    std::vector<PreferencePair> out;
    for (int64_t i = 0; i < o.batch_pairs; ++i) out.push_back(pair_at(k * o.batch_pairs + i));
    return out;
  }

  void run() {
    while (true) {
      int64_t k;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || reset || static_cast<int64_t>(queue.size()) < o.prefetch_batches; });
        if (stop) return;
        if (reset) {
          queue.clear();
          next = reset_to;
          reset = false;
        }
        k = next;
      }
      std::vector<PreferencePair> b;
      try {
        b = make(k);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        error = std::current_exception();
        cv.notify_all();
        return;
      }
      std::lock_guard<std::mutex> lock(mu);
      if (!reset) {
        queue.emplace_back(k, std::move(b));
        next = k + 1;
      }
      cv.notify_all();
    }
  }
};

PreferenceStream::PreferenceStream(std::shared_ptr<const PreferenceReader> reader, PreferenceStreamOptions o)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  if (o.end < 0) o.end = reader->size();
  KEEL_CHECK(0 <= o.begin && o.begin < o.end && o.end <= reader->size(),
             reader->path() << ": no pairs to stream in [" << o.begin << ", " << o.end << ") of " << reader->size());
  KEEL_CHECK(o.batch_pairs > 0 && o.block_pairs > 0 && o.window_blocks > 0 && o.prefetch_batches > 0,
             "preference stream sizes must be positive");
  m.reader = std::move(reader);
  m.o = o;
  m.n = o.end - o.begin;
  m.nblocks = (m.n + o.block_pairs - 1) / o.block_pairs;
  m.worker = std::thread([&m] { m.run(); });
}

PreferenceStream::~PreferenceStream() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  impl_->worker.join();
}

int64_t PreferenceStream::pairs() const { return impl_->n; }

std::vector<PreferencePair> PreferenceStream::batch(int64_t index) {
  auto& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  while (true) {
    if (m.error) std::rethrow_exception(m.error);
    if (!m.queue.empty() && m.queue.front().first == index) {
      auto b = std::move(m.queue.front().second);
      m.queue.pop_front();
      m.cv.notify_all();
      return b;
    }
    const bool coming = m.reset ? m.reset_to == index : (m.queue.empty() && m.next == index);
    if (!coming) {
      m.reset = true;
      m.reset_to = index;
      m.queue.clear();
      m.cv.notify_all();
    }
    m.cv.wait(lock);
  }
}

int64_t PreferenceStream::position(int64_t p) {
  // Computed from scratch (not the worker's caches) so tests can call it while the worker runs.
  Impl probe;
  probe.o = impl_->o;
  probe.n = impl_->n;
  probe.nblocks = impl_->nblocks;
  const auto [w, off] = probe.locate(p);
  return probe.window_positions(p / probe.n, w)[off];
}

}  // namespace keel
