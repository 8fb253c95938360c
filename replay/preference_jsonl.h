// Preference pairs from and to JSONL, in the conventions other tools use:
//   {"prompt": str, "chosen": str, "rejected": str}
//   {"chosen": [messages], "rejected": [messages]}            the prompt is their common prefix
//   {"prompt": [messages], "chosen": [messages], "rejected": [messages]}   TRL's explicit-prompt form
// where messages are {"role": "system"|"user"|"assistant", "content": str} and chosen/rejected end
// in one assistant turn. The prompt is rendered with the chat template of docs/formats.md (as SFT
// does) and tokenized with BOS; responses get EOS. Optional numeric fields chosen_reward,
// rejected_reward, policy_version and a string source are kept as metadata.
#pragma once

#include <functional>
#include <string>

#include "core/jsonl.h"
#include "core/sft_data.h"
#include "core/tokenizer.h"
#include "replay/preference_buffer.h"

namespace keel {

// Parses one JSONL value into a pair (tokens, text as given, metadata). Throws KeelError naming
// the problem (the caller adds file and line).
PreferencePair parse_preference_json(const nlohmann::json& j, const Tokenizer& tok, PromptTemplate tmpl);

// Calls `sink` for every usable line of `path`; bad lines follow `policy`.
JsonlReport read_preference_jsonl(const std::string& path, const Tokenizer& tok, PromptTemplate tmpl, BadLinePolicy policy,
                                  const std::function<void(PreferencePair&&)>& sink);

// The JSONL value of a pair: the stored text when the buffer has it (a prompt stored as a
// messages list comes back as one), else the decoded tokens (the prompt then includes the
// rendered template: re-import it with --template none).
nlohmann::json preference_to_json(const PreferencePair& p, const Tokenizer* tok);

}  // namespace keel
