// The status of an actor-learner run, for whoever watches it (`keel launch`'s status line, a
// script): <out_dir>/status.json, rewritten atomically by the lead rank after every update and
// evaluation. Fields not measured yet are absent from the file (NaN here).
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

namespace keel {

struct RunStatus {
  uint64_t version = 0;          // policy versions published = updates completed
  int64_t step = 0, steps = 0;   // optimizer steps done / in the run
  double score = NAN;            // mean score of the last update's rollouts
  double kl = NAN;               // summed k1 KL to the reference per response, last update
  double rollouts_per_s = NAN;   // last update
  double staleness = NAN;        // mean versions the last update's rollouts lagged
  double trained_share = NAN;    // rollouts trained on / rollouts received, so far
  double held_out_reward = NAN;  // eval/reward (the user's prompts) or else eval/task_reward at the last evaluation
};

void write_run_status(const std::string& out_dir, const RunStatus& s);
// nullopt while the file does not exist or cannot be read (a run starting, a partial copy).
std::optional<RunStatus> read_run_status(const std::string& out_dir);
// "version 12/20 | score 0.613 | KL 0.052 | 3.1 rollouts/s | staleness 0.48 | trained 96% | held-out reward 0.660"
std::string format_run_status(const RunStatus& s);

}  // namespace keel
