#include "replay/preference_jsonl.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

namespace {

std::vector<ChatMessage> messages(const nlohmann::json& j, const char* field) {
  KEEL_CHECK(j.is_array(), "'" << field << "' must be a string or a list of messages");
  std::vector<ChatMessage> out;
  for (const auto& m : j) {
    KEEL_CHECK(m.is_object() && m.contains("role") && m.contains("content") && m["role"].is_string() && m["content"].is_string(),
               "a message of '" << field << "' lacks string 'role' or 'content'");
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    KEEL_CHECK(out.back().role == "system" || out.back().role == "user" || out.back().role == "assistant",
               "unknown role '" << out.back().role << "' in '" << field << "'");
  }
  return out;
}

nlohmann::json to_json(const std::vector<ChatMessage>& msgs) {
  auto a = nlohmann::json::array();
  for (const auto& m : msgs) a.push_back({{"role", m.role}, {"content", m.content}});
  return a;
}

// The final assistant turn of a response given as messages (after the prompt).
std::string response_of(const std::vector<ChatMessage>& rest, const char* field) {
  KEEL_CHECK(rest.size() == 1 && rest[0].role == "assistant",
             "'" << field << "' must end in exactly one assistant turn after the prompt, found " << rest.size() << " message(s)");
  return rest[0].content;
}

}  // namespace

PreferencePair parse_preference_json(const nlohmann::json& j, const Tokenizer& tok, PromptTemplate tmpl) {
  KEEL_CHECK(j.is_object(), "line is not a JSON object");
  KEEL_CHECK(j.contains("chosen"), "missing field 'chosen'");
  KEEL_CHECK(j.contains("rejected"), "missing field 'rejected'");
  const auto& jc = j["chosen"];
  const auto& jr = j["rejected"];
  std::string chosen, rejected;
  std::vector<ChatMessage> prompt;
  PreferencePair p;
  if (jc.is_string() && jr.is_string()) {
    KEEL_CHECK(j.contains("prompt") && j["prompt"].is_string(), "missing string field 'prompt' (chosen/rejected are strings)");
    p.prompt_text = j["prompt"].get<std::string>();
    prompt = {{"user", p.prompt_text}};
    chosen = jc.get<std::string>();
    rejected = jr.get<std::string>();
  } else {
    auto c = messages(jc, "chosen"), r = messages(jr, "rejected");
    if (j.contains("prompt")) {
      if (j["prompt"].is_string())
        prompt = {{"user", j["prompt"].get<std::string>()}};
      else
        prompt = messages(j["prompt"], "prompt");
      // TRL's explicit form gives only the responses; some writers repeat the prompt in them.
      auto strip = [&](std::vector<ChatMessage>& v) {
        if (v.size() > prompt.size() && std::equal(prompt.begin(), prompt.end(), v.begin(),
                                                   [](auto& a, auto& b) { return a.role == b.role && a.content == b.content; }))
          v.erase(v.begin(), v.begin() + static_cast<long>(prompt.size()));
      };
      strip(c);
      strip(r);
    } else {
      size_t k = 0;
      while (k + 1 < c.size() && k + 1 < r.size() && c[k].role == r[k].role && c[k].content == r[k].content) ++k;
      KEEL_CHECK(k > 0, "'chosen' and 'rejected' share no prompt turns and there is no 'prompt' field");
      prompt.assign(c.begin(), c.begin() + static_cast<long>(k));
      c.erase(c.begin(), c.begin() + static_cast<long>(k));
      r.erase(r.begin(), r.begin() + static_cast<long>(k));
    }
    KEEL_CHECK(!prompt.empty(), "the prompt has no turns");
    chosen = response_of(c, "chosen");
    rejected = response_of(r, "rejected");
    p.prompt_text = to_json(prompt).dump();
  }
  p.prompt = prompt_ids(prompt, tmpl, tok);
  p.chosen = response_ids(chosen, tmpl, tok);
  p.rejected = response_ids(rejected, tmpl, tok);
  p.chosen_text = chosen;
  p.rejected_text = rejected;
  auto number = [&](const char* f, float& dst) {
    if (!j.contains(f) || j[f].is_null()) return;
    KEEL_CHECK(j[f].is_number(), "'" << f << "' must be a number");
    dst = j[f].get<float>();
  };
  number("chosen_reward", p.chosen_reward);
  number("rejected_reward", p.rejected_reward);
  if (j.contains("policy_version") && !j["policy_version"].is_null()) {
    KEEL_CHECK(j["policy_version"].is_number_integer(), "'policy_version' must be an integer");
    p.policy_version = j["policy_version"].get<int64_t>();
  }
  if (j.contains("source") && !j["source"].is_null()) {
    KEEL_CHECK(j["source"].is_string(), "'source' must be a string");
    p.source = j["source"].get<std::string>();
  }
  return p;
}

JsonlReport read_preference_jsonl(const std::string& path, const Tokenizer& tok, PromptTemplate tmpl, BadLinePolicy policy,
                                  const std::function<void(PreferencePair&&)>& sink) {
  return read_jsonl(path, policy, [&](const nlohmann::json& j) { sink(parse_preference_json(j, tok, tmpl)); });
}

nlohmann::json preference_to_json(const PreferencePair& p, const Tokenizer* tok) {
  nlohmann::json j;
  const bool text = !p.chosen_text.empty() || !p.rejected_text.empty() || !p.prompt_text.empty();
  if (text) {
    nlohmann::json prompt = p.prompt_text;
    if (!p.prompt_text.empty() && p.prompt_text.front() == '[') {
      auto parsed = nlohmann::json::parse(p.prompt_text, nullptr, false);
      bool chat = parsed.is_array() && !parsed.empty();
      if (chat)
        for (const auto& m : parsed) chat = chat && m.is_object() && m.contains("role") && m.contains("content");
      if (chat) prompt = parsed;
    }
    j["prompt"] = prompt;
    if (prompt.is_array()) {
      j["chosen"] = nlohmann::json::array({{{"role", "assistant"}, {"content", p.chosen_text}}});
      j["rejected"] = nlohmann::json::array({{{"role", "assistant"}, {"content", p.rejected_text}}});
    } else {
      j["chosen"] = p.chosen_text;
      j["rejected"] = p.rejected_text;
    }
  } else {
    KEEL_CHECK(tok, "the buffer stores no text; a tokenizer is needed to decode it");
    auto decode = [&](const std::vector<int32_t>& ids) {
      std::vector<int32_t> keep;
      for (int32_t t : ids)
        if (t != tok->specials().bos && t != tok->specials().eos && t != tok->specials().pad) keep.push_back(t);
      return tok->decode(keep);
    };
    j["prompt"] = decode(p.prompt);
    j["chosen"] = decode(p.chosen);
    j["rejected"] = decode(p.rejected);
  }
  if (!std::isnan(p.chosen_reward)) j["chosen_reward"] = p.chosen_reward;
  if (!std::isnan(p.rejected_reward)) j["rejected_reward"] = p.rejected_reward;
  if (p.policy_version >= 0) j["policy_version"] = p.policy_version;
  if (!p.source.empty()) j["source"] = p.source;
  return j;
}

}  // namespace keel
