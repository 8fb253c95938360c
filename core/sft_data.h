// Supervised fine-tuning data: JSONL with {"prompt": str, "response": str} or the chat form
// {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]} ending in an
// assistant turn. The chat format (core/chat_template.h; keel's own by default:
//   "System: ...\n\n" | "User: ...\n\n" | "Assistant: ...\n\n")
// renders the history and the generation prompt; the last assistant turn is the response, ending
// with EOS. A prompt/response pair is the chat [user, assistant].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/chat_template.h"
#include "core/jsonl.h"
#include "core/tokenizer.h"

namespace keel {

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

// A prompt line with everything it holds: the conversation, and the line's own fields (a reference
// answer, a test case, a tag, an id) as given, for the reward program and for output joined back
// to the input.
struct PromptRecord {
  std::vector<ChatMessage> conversation;
  std::string line;  // the line's JSON object, every field (prompt or messages included)
  std::string tag;   // the line's "tag" field when it is a string ("" otherwise): results per tag
};
// As load_prompt_jsonl, keeping each line's fields.
std::vector<PromptRecord> load_prompt_records(const std::string& path, BadLinePolicy policy, JsonlReport* report = nullptr);

// The fields a reward program gets beside prompt and response: the line without "prompt", as a
// JSON object's text ("{}" when nothing else).
std::string prompt_fields(const PromptRecord& record);

// Tokenizes a conversation whose next turn is the assistant's, and the assistant's answer.
SftExample make_chat_example(const std::vector<ChatMessage>& history, const std::string& response, PromptTemplate tmpl,
                             const Tokenizer& tok);
// Tokenizes an already rendered prompt text: BOS + the text, and response + EOS.
SftExample make_sft_example(const std::string& prompt_text, const std::string& response, const Tokenizer& tok);

}  // namespace keel
