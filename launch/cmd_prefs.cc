// Preference-buffer commands: import JSONL, export JSONL, inspect, mine pairs from a rollout log.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/tokenizer.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "replay/pair_mining.h"
#include "replay/preference_buffer.h"
#include "replay/preference_jsonl.h"

namespace keel {

int cmd_prefs_import(const Args& args) {
  std::string input, tokenizer, out, tmpl = "chat", bad_lines = "fail";
  bool no_text = false;
  po::options_description d("keel prefs import");
  // clang-format off
  d.add_options()("input", po::value(&input)->required(), "JSONL: {prompt, chosen, rejected} strings or chat message lists")(
      "tokenizer", po::value(&tokenizer)->required(), "tokenizer file, or a model directory (its tokenizer)")(
      "out", po::value(&out)->required(), "preference buffer (HDF5) to write")(
      "template", po::value(&tmpl)->default_value(tmpl), "prompt template: chat | none")(
      "bad-lines", po::value(&bad_lines)->default_value(bad_lines), "malformed lines: fail | skip")(
      "no-text", po::bool_switch(&no_text), "do not store the original text beside the tokens");
  // clang-format on
  if (parse_options(args, "prefs import",
                    "Tokenizes preference JSONL into an HDF5 preference buffer (replay/preference_buffer.h).", d)
          .help)
    return 0;
  auto tok = load_tokenizer(tokenizer);
  PreferenceWriter writer(out, tok->identity(), {!no_text, true});
  auto report =
      read_preference_jsonl(input, *tok, parse_prompt_template(tmpl), parse_bad_line_policy(bad_lines), [&](PreferencePair&& p) {
        if (no_text) p.prompt_text = p.chosen_text = p.rejected_text = "";
        writer.append(p);
      });
  KEEL_CHECK(writer.size() > 0, input << " holds no usable preference pairs");
  writer.finish();
  std::cout << out << ": " << writer.size() << " pairs from " << report.lines << " lines (" << report.problems.size()
            << " skipped)\n";
  return 0;
}

int cmd_prefs_export(const Args& args) {
  std::string buffer, tokenizer, out;
  po::options_description d("keel prefs export");
  // clang-format off
  d.add_options()("buffer", po::value(&buffer)->required(), "preference buffer (HDF5)")(
      "out", po::value(&out)->required(), "JSONL to write")(
      "tokenizer", po::value(&tokenizer), "tokenizer or model directory, to decode buffers that store no text");
  // clang-format on
  if (parse_options(args, "prefs export", "Writes a preference buffer back as JSONL.", d).help) return 0;
  PreferenceReader reader(buffer);
  std::unique_ptr<Tokenizer> tok;
  if (!tokenizer.empty()) tok = load_tokenizer(tokenizer);
  KEEL_CHECK(reader.info().text || tok, buffer << " stores no text: pass --tokenizer to decode its tokens");
  std::ofstream f(out + ".tmp");
  KEEL_CHECK(f, "cannot write " << out);
  for (int64_t i = 0; i < reader.size(); i += 4096)
    for (const auto& p : reader.read(i, std::min(reader.size(), i + 4096)))
      f << preference_to_json(p, reader.info().text ? nullptr : tok.get()).dump() << "\n";
  f.close();
  KEEL_CHECK(f, "write to " << out << " failed");
  std::filesystem::rename(out + ".tmp", out);
  std::cout << out << ": " << reader.size() << " pairs\n";
  return 0;
}

namespace {
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
}  // namespace

int cmd_prefs_inspect(const Args& args) {
  std::string buffer, tokenizer;
  int64_t show = 3;
  po::options_description d("keel prefs inspect");
  // clang-format off
  d.add_options()("buffer", po::value(&buffer)->required(), "preference buffer (HDF5)")(
      "show", po::value(&show)->default_value(show), "pairs to print decoded")(
      "tokenizer", po::value(&tokenizer), "tokenizer or model directory, to decode buffers that store no text");
  // clang-format on
  if (parse_options(args, "prefs inspect", "Counts, length statistics and a few decoded pairs of a preference buffer.", d).help)
    return 0;
  PreferenceReader reader(buffer);
  const auto& info = reader.info();
  std::unique_ptr<Tokenizer> tok;
  if (!tokenizer.empty()) tok = load_tokenizer(tokenizer);
  std::cout << buffer << "\n  pairs: " << info.pairs
            << "\n  tokenizer: " << (info.tokenizer.empty() ? "(unknown)" : info.tokenizer)
            << (tok && !info.tokenizer.empty() && tok->identity() != info.tokenizer ? "  (differs from --tokenizer!)" : "")
            << "\n  text: " << (info.text ? "yes" : "no") << "   metadata: " << (info.meta ? "yes" : "no")
            << "   reference log-probs: "
            << (info.ref ? "yes (model " + info.ref_model + ", max_len " + std::to_string(info.ref_max_len) + ")" : "no") << "\n";
  LengthStats lp, lc, lr;
  int64_t reward_pairs = 0, reward_ordered = 0;
  for (int64_t i = 0; i < reader.size(); i += 4096)
    for (const auto& p : reader.read(i, std::min(reader.size(), i + 4096))) {
      lp.v.push_back(static_cast<int64_t>(p.prompt.size()));
      lc.v.push_back(static_cast<int64_t>(p.chosen.size()));
      lr.v.push_back(static_cast<int64_t>(p.rejected.size()));
      if (!std::isnan(p.chosen_reward) && !std::isnan(p.rejected_reward)) {
        ++reward_pairs;
        reward_ordered += p.chosen_reward > p.rejected_reward;
      }
    }
  std::cout << "  prompt tokens:   " << lp.line() << "\n  chosen tokens:   " << lc.line() << "\n  rejected tokens: " << lr.line()
            << "\n";
  if (reward_pairs > 0)
    std::cout << "  pairs with rewards: " << reward_pairs << " (chosen reward above rejected: " << reward_ordered << ")\n";
  const auto shown = reader.read(0, std::min(show, reader.size()));
  for (size_t i = 0; i < shown.size(); ++i) {
    auto j = info.text || tok
                 ? preference_to_json(shown[i], info.text ? nullptr : tok.get())
                 : nlohmann::json{
                       {"prompt_ids", shown[i].prompt}, {"chosen_ids", shown[i].chosen}, {"rejected_ids", shown[i].rejected}};
    std::cout << "  [" << i << "] " << j.dump() << "\n";
  }
  return 0;
}

int cmd_prefs_mine(const Args& args) {
  std::string log, out, mode = "best-worst";
  MineOptions o;
  po::options_description d("keel prefs mine");
  // clang-format off
  d.add_options()("log", po::value(&log)->required(), "rollout log (HDF5) written by keel ppo --rollout-log")(
      "out", po::value(&out)->required(), "preference buffer to write")(
      "mode", po::value(&mode)->default_value(mode), "best-worst: one pair per prompt | all: every pair above the margin")(
      "margin", po::value(&o.margin)->default_value(o.margin), "minimum score gap between chosen and rejected")(
      "finished-only", po::bool_switch(&o.finished_only), "ignore rollouts that did not end with EOS")(
      "max-pairs-per-prompt", po::value(&o.max_pairs_per_prompt)->default_value(o.max_pairs_per_prompt),
      "mode all: at most this many pairs per prompt (0 = no limit)");
  // clang-format on
  if (parse_options(args, "prefs mine", "Turns a rollout log into preference pairs: responses to one prompt ranked by score.", d)
          .help)
    return 0;
  o.mode = parse_mine_mode(mode);
  const auto contents = read_rollout_log(log);
  MineReport rep;
  const auto pairs = mine_pairs(contents.rows, o, &rep);
  KEEL_CHECK(!pairs.empty(), log << ": no prompt has two responses with different scores (" << rep.rollouts << " rollouts, "
                                 << rep.prompts << " prompts)");
  PreferenceWriter writer(out, contents.tokenizer, {false, true});
  for (const auto& p : pairs) writer.append(p);
  writer.finish();
  std::cout << out << ": " << rep.pairs << " pairs from " << rep.rollouts << " rollouts of " << rep.prompts << " prompts ("
            << rep.prompts_with_pairs << " with pairs, " << rep.skipped_close << " skipped: scores within the margin)\n";
  return 0;
}

}  // namespace keel
