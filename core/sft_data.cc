#include "core/sft_data.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

SftExample make_chat_example(const std::vector<ChatMessage>& history, const std::string& response, PromptTemplate tmpl,
                             const Tokenizer& tok) {
  return {prompt_ids(history, tmpl, tok), response_ids(response, tmpl, tok)};
}

SftExample make_sft_example(const std::string& prompt_text, const std::string& response, const Tokenizer& tok) {
  SftExample ex;
  if (tok.specials().bos >= 0) ex.prompt.push_back(tok.specials().bos);
  const auto p = tok.encode(prompt_text);
  ex.prompt.insert(ex.prompt.end(), p.begin(), p.end());
  ex.response = tok.encode(response);
  KEEL_CHECK(tok.specials().eos >= 0, "the tokenizer has no EOS token");
  ex.response.push_back(tok.specials().eos);
  return ex;
}

namespace {
// A JSONL record's "messages": a non-empty list of {role, content}, roles checked.
std::vector<ChatMessage> parse_messages(const nlohmann::json& msgs) {
  KEEL_CHECK(msgs.is_array() && !msgs.empty(), "'messages' must be a non-empty list");
  std::vector<ChatMessage> history;
  for (const auto& m : msgs) {
    KEEL_CHECK(m.is_object() && m.contains("role") && m["role"].is_string() && m.contains("content") && m["content"].is_string(),
               "a message lacks a string 'role' or 'content'");
    history.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    KEEL_CHECK(history.back().role == "system" || history.back().role == "user" || history.back().role == "assistant",
               "unknown role '" << history.back().role << "' (expected system, user or assistant)");
  }
  return history;
}
}  // namespace

std::vector<PromptRecord> load_prompt_records(const std::string& path, BadLinePolicy policy, JsonlReport* report) {
  std::vector<PromptRecord> out;
  auto r = read_jsonl(path, policy, [&](const nlohmann::json& j) {
    KEEL_CHECK(j.is_object(), "line is not a JSON object");
    PromptRecord rec;
    if (j.contains("messages")) {
      rec.conversation = parse_messages(j["messages"]);
      KEEL_CHECK(rec.conversation.back().role != "assistant", "the last message of a prompt must not be the assistant's");
    } else {
      KEEL_CHECK(j.contains("prompt") && j["prompt"].is_string(), "missing string field 'prompt' (or a 'messages' list)");
      rec.conversation = {{"user", j["prompt"].get<std::string>()}};
    }
    rec.line = j.dump();
    if (j.contains("tag") && j["tag"].is_string()) rec.tag = j["tag"].get<std::string>();
    out.push_back(std::move(rec));
  });
  KEEL_CHECK(!out.empty(), path << " holds no usable prompts");
  if (report) *report = std::move(r);
  return out;
}

std::vector<std::vector<ChatMessage>> load_prompt_jsonl(const std::string& path, BadLinePolicy policy, JsonlReport* report) {
  std::vector<std::vector<ChatMessage>> out;
  for (auto& rec : load_prompt_records(path, policy, report)) out.push_back(std::move(rec.conversation));
  return out;
}

std::string prompt_fields(const PromptRecord& record) {
  auto j = nlohmann::json::parse(record.line);
  j.erase("prompt");
  return j.dump();
}

std::vector<SftExample> load_sft_jsonl(const std::string& path, const Tokenizer& tok, PromptTemplate tmpl, BadLinePolicy policy,
                                       JsonlReport* report) {
  std::vector<SftExample> out;
  auto r = read_jsonl(path, policy, [&](const nlohmann::json& j) {
    KEEL_CHECK(j.is_object(), "line is not a JSON object");
    if (j.contains("messages")) {
      auto history = parse_messages(j["messages"]);
      KEEL_CHECK(history.back().role == "assistant", "the last message must be the assistant's");
      const std::string response = history.back().content;
      history.pop_back();
      out.push_back(make_chat_example(history, response, tmpl, tok));
      return;
    }
    KEEL_CHECK(j.contains("prompt") && j["prompt"].is_string(), "missing string field 'prompt'");
    KEEL_CHECK(j.contains("response") && j["response"].is_string(), "missing string field 'response'");
    out.push_back(make_chat_example({{"user", j["prompt"].get<std::string>()}}, j["response"].get<std::string>(), tmpl, tok));
  });
  KEEL_CHECK(!out.empty(), path << " holds no usable examples");
  if (report) *report = std::move(r);
  return out;
}

}  // namespace keel
