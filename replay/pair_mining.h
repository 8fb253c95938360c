// Mining preference pairs from a rollout log: rollouts of the same prompt (same token sequence)
// are compared by score. best-worst: one pair per prompt, the highest against the lowest score;
// all: every pair whose scores differ by more than the margin. Pairs with equal responses, or a
// score gap not above the margin, are skipped. Rewards and the chosen side's policy version are
// kept as metadata (source "rollout-log").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "replay/preference_buffer.h"
#include "replay/rollout_log.h"

namespace keel {

enum class MineMode { kBestWorst, kAll };
MineMode parse_mine_mode(const std::string& s);  // "best-worst" | "all"

struct MineOptions {
  MineMode mode = MineMode::kBestWorst;
  double margin = 0.0;               // minimum score gap (strictly greater)
  bool finished_only = false;        // ignore rollouts that did not end with EOS
  int64_t max_pairs_per_prompt = 0;  // 0 = no limit (mode all)
};

struct MineReport {
  int64_t rollouts = 0, prompts = 0, prompts_with_pairs = 0, pairs = 0, skipped_close = 0;
};

// Pairs in the order prompts first appear in the log.
std::vector<PreferencePair> mine_pairs(const std::vector<LoggedRollout>& rows, const MineOptions& options,
                                       MineReport* report = nullptr);

}  // namespace keel
