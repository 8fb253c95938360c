// keel: one binary, many roles. `keel <command> --help` explains each.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "core/crash_report.h"
#include "core/error.h"
#include "core/malloc_policy.h"
#include "launch/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(const keel::Args&);
  const char* summary;
};

const Command kCommands[] = {
    {"tokenizer train", keel::cmd_tokenizer_train, "train a SentencePiece tokenizer on a corpus"},
    {"tokenizer encode", keel::cmd_tokenizer_encode, "print the token ids of a text"},
    {"data tokenize", keel::cmd_data_tokenize, "tokenize a text corpus into train.bin / val.bin token files"},
    {"tasks export", keel::cmd_tasks_export, "write the built-in task suite (a split) as SFT JSONL"},
    {"model init", keel::cmd_model_init, "write a freshly initialised model directory"},
    {"pretrain", keel::cmd_pretrain, "pretrain a model: next-token prediction over a token file"},
    {"sft", keel::cmd_sft, "supervised fine-tuning on prompt/response JSONL"},
    {"generate", keel::cmd_generate, "sample responses from a model"},
    {"eval tasks", keel::cmd_eval_tasks, "held-out exact-match accuracy on the built-in tasks"},
    {"eval prompts", keel::cmd_eval_prompts, "mean reward on your own held-out prompts, scored by your reward"},
    {"prefs import", keel::cmd_prefs_import, "tokenize preference JSONL into an HDF5 preference buffer"},
    {"prefs export", keel::cmd_prefs_export, "write a preference buffer back as JSONL"},
    {"prefs inspect", keel::cmd_prefs_inspect, "counts, lengths and a few pairs of a preference buffer"},
    {"prefs mine", keel::cmd_prefs_mine, "preference pairs from a rollout log (responses ranked by score)"},
    {"reward train", keel::cmd_reward_train, "train a reward model (Bradley-Terry) on a preference buffer"},
    {"dpo online", keel::cmd_dpo_online, "online DPO in the actor-learner loop: pairs from fresh rollouts"},
    {"dpo", keel::cmd_dpo, "DPO (and IPO, SimPO, ...) from preference buffers"},
    {"reward serve", keel::cmd_reward_serve, "the reward service: task checker, user program or reward model"},
    {"actor", keel::cmd_actor, "an actor: generates rollouts and sends them to the learner"},
    {"ppo", keel::cmd_ppo, "the PPO learner: trains on rollouts from actors, publishes weights"},
    {"keys generate", keel::cmd_keys_generate, "a CURVE key pair for authenticated, encrypted transport"},
    {"launch", keel::cmd_launch, "learner, reward service and N actors on this machine, from one config"},
    {"report", keel::cmd_report, "one self-contained HTML page of runs: metrics plotted, configs, rollouts"},
};

void usage() {
  std::cout << "usage: keel <command> [options]    (keel <command> --help for its options)\n\ncommands:\n";
  for (const auto& c : kCommands)
    std::cout << "  " << c.name << std::string(20 - std::string(c.name).size(), ' ') << c.summary << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  keel::install_crash_report();
  keel::keep_freed_memory();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    usage();
    return args.empty() ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    const std::string name = c.name;
    const auto sp = name.find(' ');
    size_t words = 1;
    if (sp == std::string::npos) {
      if (args[0] != name) continue;
    } else {
      if (args.size() < 2 || args[0] != name.substr(0, sp) || args[1] != name.substr(sp + 1)) continue;
      words = 2;
    }
    try {
      return c.run(keel::Args(args.begin() + static_cast<long>(words), args.end()));
    } catch (const keel::KeelError& e) {
      std::cerr << "keel " << name << ": error: " << e.what() << "\n";
      if (const char* debug = std::getenv("KEEL_DEBUG"); debug && std::string(debug) == "1" && !e.where().empty())
        std::cerr << "  (" << keel::error_kind_name(e.kind()) << ", raised at " << e.where() << ")\n";
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "keel " << name << ": error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "keel: unknown command '" << args[0] << (args.size() > 1 ? " " + args[1] : "") << "'\n\n";
  usage();
  return 2;
}
