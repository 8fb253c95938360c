// `keel report`: one self-contained HTML file (inline SVG, no network, no server) that shows runs.
// Every metrics.jsonl under the given run directories (up to three levels down: a pretrain run,
// the default job's pretrain/ sft/ ppo/learner/) is one series, named by its path. Each metric key
// gets one plot of its value against the step, the series that have it overlaid; plots are
// grouped by the key's family (train/, ppo/, eval/, replay/, ...). Then each series' resolved
// configuration (the newest checkpoint's run_config.ini, or a job's launch.ini) and, where a run
// logged rollouts (rollouts.h5), its last rollouts decoded with the run's tokenizer.
//
// Each plot is an <svg class="plot" data-metric="KEY">; each series in it a
// <polyline data-series="NAME" data-points="N">, N the number of metric lines that hold KEY with
// a finite value: what a reader (or a test) can check against the file. A one-line script sets
// data-drawn on each polyline to the number of points the browser parsed from it.
#pragma once

#include <string>
#include <vector>

namespace keel {

struct ReportOptions {
  std::vector<std::string> runs;  // run directories
  std::string out;                // the HTML file
  std::string title = "keel runs";
  int rollout_samples = 8;  // rollouts shown per rollout log
};

struct ReportSummary {
  int series = 0, plots = 0, rollout_logs = 0;
};

// Writes the report atomically. KeelError when no metrics.jsonl is found under the runs.
ReportSummary write_run_report(const ReportOptions& o);

}  // namespace keel
