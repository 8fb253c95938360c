// Supervised fine-tuning data: JSONL with {"prompt": str, "response": str} or the chat form
// {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]} ending in an
// assistant turn. The chat template (docs/formats.md) renders every turn as
//   "System: ...\n\n" | "User: ...\n\n" | "Assistant: ...\n\n"
// and the last assistant turn is the response: prompt = BOS + rendered history + "Assistant: ",
// response = content + EOS. A prompt/response pair is the chat [user, assistant].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/jsonl.h"
#include "core/tokenizer.h"

namespace keel {

enum class PromptTemplate { kChat, kNone };                  // kNone: the prompt text is used as is
PromptTemplate parse_prompt_template(const std::string& s);  // "chat" | "none"

struct ChatMessage {
  std::string role, content;
};

// The prompt text for a conversation whose next turn is the assistant's.
std::string render_prompt(const std::vector<ChatMessage>& history, PromptTemplate tmpl);
// Shorthand for a single user turn.
std::string render_prompt(const std::string& user_text, PromptTemplate tmpl);

struct SftExample {
  std::vector<int32_t> prompt;    // BOS (if any) + prompt tokens; no loss here
  std::vector<int32_t> response;  // response tokens + EOS; the loss is on these
};

// Tokenizes `path`; lines that are not JSON, lack fields or have the wrong roles follow `policy`.
std::vector<SftExample> load_sft_jsonl(const std::string& path, const Tokenizer& tok, PromptTemplate tmpl, BadLinePolicy policy,
                                       JsonlReport* report = nullptr);

// Reads prompts for generation: JSONL of {"prompt": text} (one user turn) or {"messages": [...]}
// (a conversation that does not end with the assistant's turn). Bad lines follow `policy`.
std::vector<std::vector<ChatMessage>> load_prompt_jsonl(const std::string& path, BadLinePolicy policy,
                                                        JsonlReport* report = nullptr);

// Tokenizes one prompt/response pair the same way.
SftExample make_sft_example(const std::string& prompt_text, const std::string& response, const Tokenizer& tok);

}  // namespace keel
