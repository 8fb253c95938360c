// The subcommands of the keel binary. Each takes the arguments after its name and returns
// the process exit code; errors are thrown as KeelError and printed by main().
#pragma once

#include <string>
#include <vector>

namespace keel {

using Args = std::vector<std::string>;

int cmd_tokenizer_train(const Args& args);
int cmd_tokenizer_encode(const Args& args);
int cmd_data_tokenize(const Args& args);
int cmd_tasks_export(const Args& args);
int cmd_pretrain(const Args& args);
int cmd_sft(const Args& args);
int cmd_generate(const Args& args);
int cmd_eval_tasks(const Args& args);
int cmd_eval_prompts(const Args& args);
int cmd_model_init(const Args& args);
int cmd_actor(const Args& args);
int cmd_reward_serve(const Args& args);
int cmd_ppo(const Args& args);
int cmd_launch(const Args& args);
int cmd_prefs_import(const Args& args);
int cmd_prefs_export(const Args& args);
int cmd_prefs_inspect(const Args& args);
int cmd_prefs_mine(const Args& args);
int cmd_reward_train(const Args& args);
int cmd_dpo(const Args& args);
int cmd_keys_generate(const Args& args);
int cmd_dpo_online(const Args& args);
int cmd_report(const Args& args);

}  // namespace keel
