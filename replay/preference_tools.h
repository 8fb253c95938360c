// Whole-file operations on preference buffers, as `keel prefs` runs them: import JSONL, export
// JSONL, describe a buffer, mine a rollout log. Each writes its output atomically or not at all.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "core/jsonl.h"
#include "core/sft_data.h"
#include "core/tokenizer.h"
#include "replay/pair_mining.h"

namespace keel {

struct PreferenceImportOptions {
  std::string input;  // JSONL (replay/preference_jsonl.h)
  std::string out;    // preference buffer to write
  PromptTemplate prompt_template = PromptTemplate::kChat;
  BadLinePolicy bad_lines = BadLinePolicy::kFail;
  bool store_text = true;  // keep the original text beside the tokens
};
struct PreferenceImportReport {
  int64_t pairs = 0, lines = 0, skipped = 0;
};
// Throws KeelError when the input holds no usable pair.
PreferenceImportReport import_preferences(const PreferenceImportOptions& o, const Tokenizer& tok);

// Writes `buffer` as JSONL to `out` (through a temporary file). `tok` decodes buffers that store
// no text (null: such a buffer is an error naming --tokenizer). Returns the pairs written.
int64_t export_preferences(const std::string& buffer, const Tokenizer* tok, const std::string& out);

// Counts, length statistics (prompt, chosen, rejected), reward ordering and the first `show`
// pairs, decoded with the stored text or `tok`.
void describe_preferences(const std::string& buffer, const Tokenizer* tok, int64_t show, std::ostream& os);

// Mines pairs from the rollout log at `log` into a new buffer at `out`. Throws KeelError when no
// prompt has two responses with different scores.
MineReport mine_rollout_log(const std::string& log, const std::string& out, const MineOptions& o);

}  // namespace keel
