#include "core/chat_template.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

namespace {

struct Preset {
  PromptTemplate t;
  const char* name;
  const char* jinja;  // the chat_template string of the models that use it ("" for keel's own)
};

// The chat_template strings of tokenizer_config.json as the models publish them.
const Preset kPresets[] = {
    {PromptTemplate::kChat, "chat",
     "{% for message in messages %}{{ message['role'] | capitalize + ': ' + message['content'] + '\\n\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"},
    {PromptTemplate::kNone, "none", ""},
    {PromptTemplate::kChatMl, "chatml",
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {PromptTemplate::kLlama2, "llama2",
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
     "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
     "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
     "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
     "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
     "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
     "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + "
     "content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"},
    {PromptTemplate::kLlama3, "llama3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
     "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
     "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {PromptTemplate::kZephyr, "zephyr",
     "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
     "{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n{% elif "
     "message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if "
     "loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"},
};

struct Piece {
  enum Kind { kText, kBos, kEot } kind;
  std::string text;
};
using Pieces = std::vector<Piece>;

// Python's str.strip() on ASCII whitespace (jinja2's trim filter).
std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\v\f";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string role_label(const std::string& role) {
  if (role == "system") return "System";
  if (role == "user") return "User";
  if (role == "assistant") return "Assistant";
  KEEL_FAIL("unknown role '" << role << "' (expected system, user or assistant)");
}

Pieces render_llama2(const std::vector<ChatMessage>& c) {
  const bool system = !c.empty() && c[0].role == "system";
  Pieces p;
  for (size_t i = system ? 1 : 0, k = 0; i < c.size(); ++i, ++k) {
    const auto& m = c[i];
    KEEL_CHECK((m.role == "user") == (k % 2 == 0),
               "the llama2 chat format needs roles that alternate user/assistant/user/... after an optional system message");
    const std::string content = k == 0 && system ? "<<SYS>>\n" + c[0].content + "\n<</SYS>>\n\n" + m.content : m.content;
    if (m.role == "user") {
      p.push_back({Piece::kBos, ""});
      p.push_back({Piece::kText, "[INST] " + strip(content) + " [/INST]"});
    } else if (m.role == "assistant") {  // a later system message renders nothing, as in the template
      p.push_back({Piece::kText, " " + strip(content) + " "});
      p.push_back({Piece::kEot, ""});
    }
  }
  return p;
}

Pieces render(const std::vector<ChatMessage>& c, PromptTemplate t, bool add_generation_prompt) {
  for (const auto& m : c) role_label(m.role);
  Pieces p;
  auto text = [&](std::string s) { p.push_back({Piece::kText, std::move(s)}); };
  auto eot = [&] { p.push_back({Piece::kEot, ""}); };
  switch (t) {
    case PromptTemplate::kNone:
      for (const auto& m : c) text(m.content);
      return p;
    case PromptTemplate::kChat:
      for (const auto& m : c) text(role_label(m.role) + ": " + m.content + "\n\n");
      if (add_generation_prompt) text("Assistant: ");
      return p;
    case PromptTemplate::kChatMl:
      for (const auto& m : c) {
        text("<|im_start|>" + m.role + "\n" + m.content);
        eot();
        text("\n");
      }
      if (add_generation_prompt) text("<|im_start|>assistant\n");
      return p;
    case PromptTemplate::kLlama2:
      return render_llama2(c);
    case PromptTemplate::kLlama3:
      for (size_t i = 0; i < c.size(); ++i) {
        if (i == 0) p.push_back({Piece::kBos, ""});
        text("<|start_header_id|>" + c[i].role + "<|end_header_id|>\n\n" + strip(c[i].content));
        eot();
      }
      if (add_generation_prompt) text("<|start_header_id|>assistant<|end_header_id|>\n\n");
      return p;
    case PromptTemplate::kZephyr:
      for (const auto& m : c) {
        text("<|" + m.role + "|>\n" + m.content);
        eot();
        text("\n");
      }
      if (add_generation_prompt && !c.empty()) text("<|assistant|>\n");
      return p;
  }
  KEEL_FAIL_KIND(ErrorKind::kInternal, "unknown prompt template");
}

Pieces render_response(const std::string& content, PromptTemplate t) {
  switch (t) {
    case PromptTemplate::kLlama2:
      return {{Piece::kText, " " + strip(content) + " "}, {Piece::kEot, ""}};
    case PromptTemplate::kLlama3:
      return {{Piece::kText, strip(content)}, {Piece::kEot, ""}};
    default:
      return {{Piece::kText, content}, {Piece::kEot, ""}};
  }
}

// Adjacent text pieces are encoded as one text, as a tokenizer reads the rendered string: keel's
// own format is one text and tokenizes as it always has.
std::vector<int32_t> ids_of(const Pieces& pieces, const Tokenizer& tok) {
  std::vector<int32_t> ids;
  std::string text;
  auto flush = [&] {
    const auto t = tok.encode(text);
    ids.insert(ids.end(), t.begin(), t.end());
    text.clear();
  };
  for (const auto& p : pieces) {
    if (p.kind == Piece::kText) {
      text += p.text;
      continue;
    }
    if (!text.empty()) flush();
    if (p.kind == Piece::kBos) {
      if (tok.specials().bos >= 0) ids.push_back(tok.specials().bos);
    } else {
      KEEL_CHECK(tok.specials().eos >= 0, "the tokenizer has no EOS token to end a turn");
      ids.push_back(tok.specials().eos);
    }
  }
  if (!text.empty()) flush();
  return ids;
}

std::string without_whitespace(const std::string& s) {
  std::string out;
  for (char ch : s)
    if (ch != ' ' && ch != '\n' && ch != '\t' && ch != '\r') out += ch;
  return out;
}

}  // namespace

PromptTemplate parse_prompt_template(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return p.t;
  KEEL_FAIL(
      "the prompt template must be one of chat, none, chatml, llama2, llama3, zephyr (or auto: from the model's "
      "tokenizer_config.json), not '"
      << name << "'");
}

const char* prompt_template_name(PromptTemplate t) {
  for (const auto& p : kPresets)
    if (p.t == t) return p.name;
  return "?";
}

PromptTemplate resolve_prompt_template(const std::string& name, const std::string& model_dir) {
  if (name != "auto") return parse_prompt_template(name);
  const std::string path = model_dir + "/tokenizer_config.json";
  if (model_dir.empty() || !std::filesystem::exists(path)) return PromptTemplate::kChat;
  std::ifstream f(path);
  const auto j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, !j.is_discarded(), path << " is not valid JSON");
  if (!j.is_object() || !j.contains("chat_template") || j["chat_template"].is_null()) return PromptTemplate::kChat;
  KEEL_CHECK(j["chat_template"].is_string(), "the chat_template in "
                                                 << path
                                                 << " is not one template string (a list of named "
                                                    "templates?); give --template with the model's chat format");
  const std::string jinja = without_whitespace(j["chat_template"].get<std::string>());
  for (const auto& p : kPresets)
    if (*p.jinja && without_whitespace(p.jinja) == jinja) return p.t;
  KEEL_FAIL("the chat_template in " << path
                                    << " is none of keel's chat formats (chat, chatml, llama2, llama3, zephyr); give --template "
                                       "with the one the model was trained with");
}

std::string render_chat_text(const std::vector<ChatMessage>& conversation, PromptTemplate t, bool add_generation_prompt,
                             const std::string& bos_token, const std::string& eos_token) {
  const std::string eot = t == PromptTemplate::kChatMl ? "<|im_end|>" : t == PromptTemplate::kLlama3 ? "<|eot_id|>" : eos_token;
  std::string out;
  for (const auto& p : render(conversation, t, add_generation_prompt))
    out += p.kind == Piece::kText ? p.text : p.kind == Piece::kBos ? bos_token : eot;
  return out;
}

std::string render_prompt(const std::vector<ChatMessage>& history, PromptTemplate t) {
  return render_chat_text(history, t, /*add_generation_prompt=*/true);
}

std::string render_prompt(const std::string& user_text, PromptTemplate t) {
  return render_prompt(std::vector<ChatMessage>{{"user", user_text}}, t);
}

std::vector<int32_t> prompt_ids(const std::vector<ChatMessage>& history, PromptTemplate t, const Tokenizer& tok) {
  auto pieces = render(history, t, /*add_generation_prompt=*/true);
  if (pieces.empty() || pieces.front().kind != Piece::kBos) pieces.insert(pieces.begin(), {Piece::kBos, ""});
  return ids_of(pieces, tok);
}

std::vector<int32_t> response_ids(const std::string& content, PromptTemplate t, const Tokenizer& tok) {
  return ids_of(render_response(content, t), tok);
}

}  // namespace keel
