// Scorers turn (prompt, response) items into sequence rewards. Three kinds, chosen by config:
//   task    the built-in task checker (1 exact, 0 otherwise; prompts outside the suite score 0
//           with part "unknown_task" = 1)
//   program a user's program speaking the line protocol of docs/reward_protocol.md
//   model   a reward-model checkpoint: its scalar head read at the last response token
// score() is called from one thread at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "wire/messages.h"

namespace keel {

struct ScoreResult {
  float score = 0;
  wire::ScoreParts parts;
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  // One result per item, in order. Throws KeelError when the batch cannot be scored.
  virtual std::vector<ScoreResult> score(const std::vector<wire::ScoreItem>& items) = 0;
};

std::unique_ptr<Scorer> make_task_scorer();
// `command` runs under /bin/sh -c; it is started on first use and restarted if it dies or breaks
// the protocol. `timeout_ms` bounds each batch (writing and reading together); keep it below the
// actors' --reward-timeout-ms, so that a batch fails before they send it again.
std::unique_ptr<Scorer> make_program_scorer(const std::string& command, int timeout_ms = 8000);
// `device`: "cpu" or "cuda". The model directory needs config keel.reward_head = true.
std::unique_ptr<Scorer> make_model_scorer(const std::string& model_dir, const std::string& device = "cpu");

// Subtracts `penalty` from items that did not end with EOS (part "missing_eos").
void apply_missing_eos_penalty(const std::vector<wire::ScoreItem>& items, std::vector<ScoreResult>& results, float penalty);

// Which scorer a reward service runs, as `keel reward serve` names it.
struct ScorerOptions {
  std::string kind = "task";      // task | program | model
  std::string program;            // kind program: the command line of the reward program
  int program_timeout_ms = 8000;  // kind program: deadline of one batch
  std::string model;              // kind model: a reward-model directory
  std::string device = "cpu";
  void validate() const;  // a known kind with what it needs
};
std::unique_ptr<Scorer> make_scorer(const ScorerOptions& o);

}  // namespace keel
