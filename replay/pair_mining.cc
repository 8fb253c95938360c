#include "replay/pair_mining.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace keel {

MineMode parse_mine_mode(const std::string& s) {
  if (s == "best-worst") return MineMode::kBestWorst;
  if (s == "all") return MineMode::kAll;
  KEEL_FAIL("unknown mining mode '" << s << "' (expected best-worst or all)");
}

namespace {
PreferencePair make_pair(const LoggedRollout& c, const LoggedRollout& r) {
  PreferencePair p;
  p.prompt = c.prompt;
  p.chosen = c.response;
  p.rejected = r.response;
  p.chosen_reward = c.score;
  p.rejected_reward = r.score;
  p.policy_version = static_cast<int64_t>(c.policy_version);
  p.source = "rollout-log";
  return p;
}
}  // namespace

std::vector<PreferencePair> mine_pairs(const std::vector<LoggedRollout>& rows, const MineOptions& o, MineReport* report) {
  MineReport rep;
  rep.rollouts = static_cast<int64_t>(rows.size());
  std::map<std::vector<int32_t>, size_t> group_of;
  std::vector<std::vector<size_t>> groups;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (o.finished_only && !rows[i].finished) continue;
    auto [it, fresh] = group_of.emplace(rows[i].prompt, groups.size());
    if (fresh) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  rep.prompts = static_cast<int64_t>(groups.size());
  std::vector<PreferencePair> out;
  for (const auto& g : groups) {
    const size_t before = out.size();
    if (o.mode == MineMode::kBestWorst) {
      // Stable: among equal scores the first logged wins, so the result does not depend on sort internals.
      size_t best = g[0], worst = g[0];
      for (size_t i : g) {
        if (rows[i].score > rows[best].score) best = i;
        if (rows[i].score < rows[worst].score) worst = i;
      }
      if (rows[best].score - rows[worst].score > o.margin && rows[best].response != rows[worst].response)
        out.push_back(make_pair(rows[best], rows[worst]));
      else if (g.size() > 1)
        ++rep.skipped_close;
    } else {
      int64_t taken = 0;
      for (size_t a = 0; a < g.size(); ++a)
        for (size_t b = 0; b < g.size(); ++b) {
          const auto &c = rows[g[a]], &r = rows[g[b]];
          if (c.score - r.score <= o.margin) {
            if (a < b && std::abs(c.score - r.score) <= o.margin) ++rep.skipped_close;
            continue;
          }
          if (c.response == r.response) continue;
          if (o.max_pairs_per_prompt > 0 && taken >= o.max_pairs_per_prompt) continue;
          out.push_back(make_pair(c, r));
          ++taken;
        }
    }
    if (out.size() > before) ++rep.prompts_with_pairs;
  }
  rep.pairs = static_cast<int64_t>(out.size());
  if (report) *report = rep;
  return out;
}

}  // namespace keel
