// Preference-buffer commands: import JSONL, export JSONL, inspect, mine pairs from a rollout log.
#include <filesystem>
#include <iostream>

#include "core/chat_template.h"
#include "core/tokenizer.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "replay/preference_tools.h"

namespace keel {

int cmd_prefs_import(const Args& args) {
  std::string input, tokenizer, out, tmpl = "auto", bad_lines = "fail";
  bool no_text = false;
  po::options_description d("keel prefs import");
  // clang-format off
  d.add_options()("input", po::value(&input)->required(), "JSONL: {prompt, chosen, rejected} strings or chat message lists")(
      "tokenizer", po::value(&tokenizer)->required(), "tokenizer file, or a model directory (its tokenizer)")(
      "out", po::value(&out)->required(), "preference buffer (HDF5) to write")(
      "template", po::value(&tmpl)->default_value(tmpl), "chat format: auto (the model's tokenizer_config.json, else chat) | chat | chatml | llama2 | llama3 | zephyr | none")(
      "bad-lines", po::value(&bad_lines)->default_value(bad_lines), "malformed lines: fail | skip")(
      "no-text", po::bool_switch(&no_text), "do not store the original text beside the tokens");
  // clang-format on
  if (parse_options(args, "prefs import",
                    "Tokenizes preference JSONL into an HDF5 preference buffer (replay/preference_buffer.h).", d)
          .help)
    return 0;
  const auto tok = load_tokenizer(tokenizer);
  const auto r =
      import_preferences({input, out, resolve_prompt_template(tmpl, std::filesystem::is_directory(tokenizer) ? tokenizer : ""),
                          parse_bad_line_policy(bad_lines), !no_text},
                         *tok);
  std::cout << out << ": " << r.pairs << " pairs from " << r.lines << " lines (" << r.skipped << " skipped)\n";
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
  std::unique_ptr<Tokenizer> tok;
  if (!tokenizer.empty()) tok = load_tokenizer(tokenizer);
  std::cout << out << ": " << export_preferences(buffer, tok.get(), out) << " pairs\n";
  return 0;
}

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
  std::unique_ptr<Tokenizer> tok;
  if (!tokenizer.empty()) tok = load_tokenizer(tokenizer);
  describe_preferences(buffer, tok.get(), show, std::cout);
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
  const auto rep = mine_rollout_log(log, out, o);
  std::cout << out << ": " << rep.pairs << " pairs from " << rep.rollouts << " rollouts of " << rep.prompts << " prompts ("
            << rep.prompts_with_pairs << " with pairs, " << rep.skipped_close << " skipped: scores within the margin)\n";
  return 0;
}

}  // namespace keel
