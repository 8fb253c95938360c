// Chat formats: how a conversation becomes the text (and tokens) a model reads. Presets:
//   chat     keel's own: "System: ...\n\n" "User: ...\n\n" "Assistant: ...\n\n", then "Assistant: "
//   none     the contents concatenated, no markup (raw prompts)
//   chatml   <|im_start|>ROLE\nCONTENT<|im_end|>\n ... <|im_start|>assistant\n   (Qwen, OpenHermes, ...)
//   llama2   <s>[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] ANSWER </s><s>[INST] ...   (Llama 2 chat)
//   llama3   <|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|> ...
//   zephyr   <|ROLE|>\nCONTENT</s>\n ... <|assistant|>\n   (Zephyr, TinyLlama chat)
// The external presets render exactly what Hugging Face's apply_chat_template renders from those
// models' chat_template strings (jinja2 with trim_blocks and lstrip_blocks), checked in a test.
//
// Tokens: a rendered conversation is text pieces, BOS and end-of-turn markers. BOS becomes the
// tokenizer's BOS id; every end-of-turn marker (<|im_end|>, <|eot_id|>, </s>) becomes its EOS id,
// so a response ends where generation stops: a chat model's EOS is its end-of-turn token. The
// prompt of a template that does not start with BOS itself gets the BOS id first (when the
// tokenizer has one). SFT, preference pairs, actors, evaluation and generate all tokenize through
// prompt_ids / response_ids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tokenizer.h"

namespace keel {

enum class PromptTemplate { kChat, kNone, kChatMl, kLlama2, kLlama3, kZephyr };

// A preset by name ("chat", "none", "chatml", "llama2", "llama3", "zephyr"); anything else is an
// error naming the choices. "auto" is resolve_prompt_template's.
PromptTemplate parse_prompt_template(const std::string& name);
const char* prompt_template_name(PromptTemplate t);

// `name`, or for "auto": the preset whose template string is the chat_template of
// <model_dir>/tokenizer_config.json (whitespace aside), keel's chat when the model has none, and
// an error naming the presets when it has another one.
PromptTemplate resolve_prompt_template(const std::string& name, const std::string& model_dir);

struct ChatMessage {
  std::string role, content;  // role: system | user | assistant
};

// The conversation as text, as jinja2 renders the preset's template: bos_token / eos_token stand
// for BOS and the end-of-turn markers that are the tokenizer's EOS (llama2, zephyr).
std::string render_chat_text(const std::vector<ChatMessage>& conversation, PromptTemplate t, bool add_generation_prompt,
                             const std::string& bos_token = "<s>", const std::string& eos_token = "</s>");

// The prompt text for a conversation whose next turn is the assistant's (for display and for the
// reward service's view of a rendered prompt).
std::string render_prompt(const std::vector<ChatMessage>& history, PromptTemplate t);
std::string render_prompt(const std::string& user_text, PromptTemplate t);  // one user turn

// The prompt's token ids: BOS first, the rendered history, the generation prompt.
std::vector<int32_t> prompt_ids(const std::vector<ChatMessage>& history, PromptTemplate t, const Tokenizer& tok);
// The assistant's answer as the model must produce it, ending with the EOS id.
std::vector<int32_t> response_ids(const std::string& content, PromptTemplate t, const Tokenizer& tok);

}  // namespace keel
