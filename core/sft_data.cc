#include "core/sft_data.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

PromptTemplate parse_prompt_template(const std::string& s) {
  if (s == "chat") return PromptTemplate::kChat;
  if (s == "none") return PromptTemplate::kNone;
  KEEL_FAIL("prompt template must be 'chat' or 'none', got '" << s << "'");
}

namespace {
std::string role_label(const std::string& role) {
  if (role == "system") return "System";
  if (role == "user") return "User";
  if (role == "assistant") return "Assistant";
  KEEL_FAIL("unknown role '" << role << "' (expected system, user or assistant)");
}
}  // namespace

std::string render_prompt(const std::vector<ChatMessage>& history, PromptTemplate tmpl) {
  std::string out;
  if (tmpl == PromptTemplate::kNone) {
    for (const auto& m : history) out += m.content;
    return out;
  }
  for (const auto& m : history) out += role_label(m.role) + ": " + m.content + "\n\n";
  return out + "Assistant: ";
}

std::string render_prompt(const std::string& user_text, PromptTemplate tmpl) {
  return render_prompt(std::vector<ChatMessage>{{"user", user_text}}, tmpl);
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
    role_label(history.back().role);
  }
  return history;
}
}  // namespace

std::vector<std::vector<ChatMessage>> load_prompt_jsonl(const std::string& path, BadLinePolicy policy, JsonlReport* report) {
  std::vector<std::vector<ChatMessage>> out;
  auto r = read_jsonl(path, policy, [&](const nlohmann::json& j) {
    KEEL_CHECK(j.is_object(), "line is not a JSON object");
    if (j.contains("messages")) {
      auto history = parse_messages(j["messages"]);
      KEEL_CHECK(history.back().role != "assistant", "the last message of a prompt must not be the assistant's");
      out.push_back(std::move(history));
      return;
    }
    KEEL_CHECK(j.contains("prompt") && j["prompt"].is_string(), "missing string field 'prompt' (or a 'messages' list)");
    out.push_back({{"user", j["prompt"].get<std::string>()}});
  });
  KEEL_CHECK(!out.empty(), path << " holds no usable prompts");
  if (report) *report = std::move(r);
  return out;
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
      out.push_back(make_sft_example(render_prompt(history, tmpl), response, tok));
      return;
    }
    KEEL_CHECK(j.contains("prompt") && j["prompt"].is_string(), "missing string field 'prompt'");
    KEEL_CHECK(j.contains("response") && j["response"].is_string(), "missing string field 'response'");
    out.push_back(make_sft_example(render_prompt(j["prompt"].get<std::string>(), tmpl), j["response"].get<std::string>(), tok));
  });
  KEEL_CHECK(!out.empty(), path << " holds no usable examples");
  if (report) *report = std::move(r);
  return out;
}

}  // namespace keel
