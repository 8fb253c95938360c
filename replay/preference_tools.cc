#include "replay/preference_tools.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "replay/preference_buffer.h"
#include "replay/preference_jsonl.h"
#include "replay/rollout_log.h"

namespace keel {

namespace {

constexpr int64_t kReadChunk = 4096;

void for_each_pair(PreferenceReader& reader, const std::function<void(const PreferencePair&)>& fn) {
  for (int64_t i = 0; i < reader.size(); i += kReadChunk)
    for (const auto& p : reader.read(i, std::min(reader.size(), i + kReadChunk))) fn(p);
}

struct LengthStats {
  std::vector<int64_t> v;
  std::string line() {
    if (v.empty()) return "-";
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (auto x : v) sum += static_cast<double>(x);
    std::ostringstream os;
    os << "mean " << std::fixed << std::setprecision(1) << sum / static_cast<double>(v.size()) << "  min " << v.front()
       << "  median " << v[v.size() / 2] << "  p95 " << v[std::min(v.size() - 1, v.size() * 95 / 100)] << "  max " << v.back();
    return os.str();
  }
};

void describe_header(const std::string& buffer, const PreferenceInfo& info, const Tokenizer* tok, std::ostream& os) {
  os << buffer << "\n  pairs: " << info.pairs << "\n  tokenizer: " << (info.tokenizer.empty() ? "(unknown)" : info.tokenizer)
     << (tok && !info.tokenizer.empty() && tok->identity() != info.tokenizer ? "  (differs from --tokenizer!)" : "")
     << "\n  text: " << (info.text ? "yes" : "no") << "   metadata: " << (info.meta ? "yes" : "no") << "   reference log-probs: "
     << (info.ref ? "yes (model " + info.ref_model + ", max_len " + std::to_string(info.ref_max_len) + ")" : "no") << "\n";
}

}  // namespace

PreferenceImportReport import_preferences(const PreferenceImportOptions& o, const Tokenizer& tok) {
  PreferenceWriter writer(o.out, tok.identity(), {o.store_text, true});
  const auto report = read_preference_jsonl(o.input, tok, o.prompt_template, o.bad_lines, [&](PreferencePair&& p) {
    if (!o.store_text) p.prompt_text = p.chosen_text = p.rejected_text = "";
    writer.append(p);
  });
  KEEL_CHECK(writer.size() > 0, o.input << " holds no usable preference pairs");
  writer.finish();
  return {writer.size(), report.lines, static_cast<int64_t>(report.problems.size())};
}

int64_t export_preferences(const std::string& buffer, const Tokenizer* tok, const std::string& out) {
  PreferenceReader reader(buffer);
  KEEL_CHECK(reader.info().text || tok, buffer << " stores no text: pass --tokenizer to decode its tokens");
  const Tokenizer* decode = reader.info().text ? nullptr : tok;
  std::ofstream f(out + ".tmp");
  KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot write " << out);
  for_each_pair(reader, [&](const PreferencePair& p) { f << preference_to_json(p, decode).dump() << "\n"; });
  f.close();
  KEEL_CHECK_KIND(ErrorKind::kIo, f, "write to " << out << " failed");
  std::filesystem::rename(out + ".tmp", out);
  return reader.size();
}

void describe_preferences(const std::string& buffer, const Tokenizer* tok, int64_t show, std::ostream& os) {
  PreferenceReader reader(buffer);
  const auto& info = reader.info();
  describe_header(buffer, info, tok, os);
  LengthStats lp, lc, lr;
  int64_t reward_pairs = 0, reward_ordered = 0;
  for_each_pair(reader, [&](const PreferencePair& p) {
    lp.v.push_back(static_cast<int64_t>(p.prompt.size()));
    lc.v.push_back(static_cast<int64_t>(p.chosen.size()));
    lr.v.push_back(static_cast<int64_t>(p.rejected.size()));
    if (!std::isnan(p.chosen_reward) && !std::isnan(p.rejected_reward)) {
      ++reward_pairs;
      reward_ordered += p.chosen_reward > p.rejected_reward;
    }
  });
  os << "  prompt tokens:   " << lp.line() << "\n  chosen tokens:   " << lc.line() << "\n  rejected tokens: " << lr.line()
     << "\n";
  if (reward_pairs > 0)
    os << "  pairs with rewards: " << reward_pairs << " (chosen reward above rejected: " << reward_ordered << ")\n";
  const auto shown = reader.read(0, std::min(show, reader.size()));
  for (size_t i = 0; i < shown.size(); ++i) {
    const auto& p = shown[i];
    auto j = info.text || tok ? preference_to_json(p, info.text ? nullptr : tok)
                              : nlohmann::json{{"prompt_ids", p.prompt}, {"chosen_ids", p.chosen}, {"rejected_ids", p.rejected}};
    os << "  [" << i << "] " << j.dump() << "\n";
  }
}

MineReport mine_rollout_log(const std::string& log, const std::string& out, const MineOptions& o) {
  const auto contents = read_rollout_log(log);
  MineReport rep;
  const auto pairs = mine_pairs(contents.rows, o, &rep);
  KEEL_CHECK(!pairs.empty(), log << ": no prompt has two responses with different scores (" << rep.rollouts << " rollouts, "
                                 << rep.prompts << " prompts)");
  PreferenceWriter writer(out, contents.tokenizer, {false, true});
  for (const auto& p : pairs) writer.append(p);
  writer.finish();
  return rep;
}

}  // namespace keel
