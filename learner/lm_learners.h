// The composition roots of the language-model learners: `keel model init` (a fresh model
// directory), `keel pretrain` (packed next-token prediction over token files, from a fresh model)
// and `keel sft` (loss on response tokens, from a model directory). Commands bind flags to these
// structs and call one function; each returns the process exit code (3: stopped by a signal).
#pragma once

#include <cstdint>
#include <string>

#include "core/model_config.h"
#include "learner/pretrain.h"
#include "learner/sft.h"
#include "learner/train_loop.h"

namespace keel {

struct ModelInitOptions {
  ModelConfig config;          // shape; vocabulary and special ids come from the tokenizer
  std::string family = "gpt2";
  std::string tokenizer;       // copied into the model directory
  std::string out;             // the model directory to write
  uint64_t seed = 1;
};
int run_model_init(const ModelInitOptions& o);

struct PretrainRunOptions {
  ModelConfig config;
  std::string family = "gpt2";
  std::string tokenizer;       // the token files' tokenizer (copied into the model)
  std::string device = "cpu";
  TrainOptions train;
  PretrainOptions pretrain;
  std::string run_config;
  PretrainRunOptions();
};
int run_pretrain(PretrainRunOptions o);

struct SftRunOptions {
  std::string init;            // model directory to start from
  std::string train_file, eval_file;  // JSONL {prompt, response} or {messages}
  std::string prompt_template = "auto";  // core/chat_template.h: a preset, or auto (the model's own)
  std::string bad_lines = "fail";     // fail | skip
  std::string device = "cpu";
  TrainOptions train;
  SftOptions sft;
  std::string run_config;
  SftRunOptions();
};
int run_sft(SftRunOptions o);

}  // namespace keel
