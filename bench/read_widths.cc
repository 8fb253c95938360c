#include "bench/read_widths.h"

#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include <torch/torch.h>

#include "bench/size_bench.h"

// The vectors pass between inlined helpers only; no ABI crosses a library boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace keel::bench {
namespace {

#if defined(__x86_64__)
typedef float V8 __attribute__((vector_size(32)));
typedef float V16 __attribute__((vector_size(64)));

// The sum of n floats with four accumulators of vector type V.
template <class V>
inline __attribute__((always_inline)) float sum_with(const float* p, int64_t n) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  V a[4] = {};
  for (int64_t k = 0; k + 4 * L <= n; k += 4 * L)
    for (int u = 0; u < 4; ++u) {
      V v;
      std::memcpy(&v, p + k + u * L, sizeof v);
      a[u] += v;
    }
  const V s = (a[0] + a[1]) + (a[2] + a[3]);
  float t = 0.0f;
  for (int64_t i = 0; i < L; ++i) t += s[i];
  return t;
}
__attribute__((target("avx2"))) float sum_256(const float* p, int64_t n) { return sum_with<V8>(p, n); }
__attribute__((target("avx512f"))) float sum_512(const float* p, int64_t n) { return sum_with<V16>(p, n); }
#endif

}  // namespace

void read_widths(int64_t megabytes, int rounds) {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx512f") || rounds < 1) {
    std::fprintf(stderr, "read_widths: needs a CPU with AVX-512 and ROUNDS >= 1\n");
    return;
  }
  const int64_t threads = at::get_num_threads();
  const int64_t chunk = megabytes * 1000000 / 4 / threads / 64 * 64;  // floats a thread reads
  auto buffer = torch::ones({chunk * threads});
  const float* p = buffer.data_ptr<float>();
  std::vector<float> sums(static_cast<size_t>(threads));
  auto gbs = [&](float (*sum)(const float*, int64_t)) {
    const auto t = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sums[static_cast<size_t>(i)] = sum(p + i * chunk, chunk);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    return static_cast<double>(chunk * threads * 4) / s / 1e9;
  };
  gbs(sum_256), gbs(sum_512);  // warm-up
  std::vector<double> narrow, wide, ratio;
  for (int r = 0; r < rounds; ++r) {  // the order alternates, so neither always runs second
    const double a = gbs(r % 2 ? sum_512 : sum_256), b = gbs(r % 2 ? sum_256 : sum_512);
    narrow.push_back(r % 2 ? b : a), wide.push_back(r % 2 ? a : b);
    ratio.push_back(narrow.back() / wide.back());
  }
  std::printf(
      "{\"bench\": \"read_widths\", \"threads\": %lld, \"mb\": %lld, \"rounds\": %d, \"gbs_256_median\": %.2f, "
      "\"gbs_512_median\": %.2f, \"gbs_256_p90\": %.2f, \"gbs_512_p90\": %.2f, \"ratio_256_to_512_median\": %.3f, "
      "\"ratio_q1\": %.3f, \"ratio_q3\": %.3f, \"check\": %.0f}\n",
      static_cast<long long>(threads), static_cast<long long>(megabytes), rounds, quantile(narrow, 0.5), quantile(wide, 0.5),
      quantile(narrow, 0.9), quantile(wide, 0.9), quantile(ratio, 0.5), quantile(ratio, 0.25), quantile(ratio, 0.75),
      static_cast<double>(sums[0]));
#else
  std::fprintf(stderr, "read_widths: x86-64 only\n");
  (void)megabytes, (void)rounds;
#endif
}

}  // namespace keel::bench
