#include "core/padded_batch.h"

#include <algorithm>

#include "core/error.h"

namespace keel {

PaddedBatch left_pad(const std::vector<std::vector<int32_t>>& prompts, int32_t pad) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t L = 0;
  for (const auto& p : prompts) {
    KEEL_CHECK(!p.empty(), "empty prompt: every prompt needs at least one token (e.g. BOS)");
    L = std::max<int64_t>(L, static_cast<int64_t>(p.size()));
  }
  auto tokens = torch::full({B, L}, pad, torch::kLong);
  auto mask = torch::zeros({B, L}, torch::kBool);
  auto t = tokens.accessor<int64_t, 2>();
  auto m = mask.accessor<bool, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<size_t>(b)];
    const int64_t off = L - static_cast<int64_t>(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      t[b][off + static_cast<int64_t>(i)] = p[i];
      m[b][off + static_cast<int64_t>(i)] = true;
    }
  }
  auto positions = (mask.to(torch::kLong).cumsum(1) - 1).clamp_min(0);
  return {tokens, mask, positions};
}

}  // namespace keel
