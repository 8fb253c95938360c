// `keel model init`, `keel pretrain` and `keel sft`: flags bound to learner/lm_learners.h.
#include "launch/commands.h"
#include "launch/options.h"
#include "learner/lm_learners.h"

namespace keel {

int cmd_model_init(const Args& args) {
  ModelInitOptions o;
  po::options_description d("keel model init");
  add_model_options(d, o.config, o.family);
  // clang-format off
  d.add_options()("tokenizer", po::value(&o.tokenizer)->required(), "tokenizer (sets vocabulary and special ids)")(
      "out", po::value(&o.out)->required(), "model directory to write")("seed", po::value(&o.seed)->default_value(o.seed), "init seed");
  // clang-format on
  if (parse_options(args, "model init", "Writes a freshly initialised model directory.", d).help) return 0;
  return run_model_init(o);
}

int cmd_pretrain(const Args& args) {
  PretrainRunOptions o;
  auto& pre = o.pretrain;
  int threads = 0;
  po::options_description d("keel pretrain");
  add_model_options(d, o.config, o.family);
  add_train_options(d, o.train);
  add_runtime_options(d, threads, o.device);
  // clang-format off
  d.add_options()("data", po::value(&pre.data_dir)->required(), "directory with train.bin and val.bin")(
      "tokenizer", po::value(&o.tokenizer)->required(), "the tokenizer of the token files (copied into the model)")(
      "seq-len", po::value(&pre.seq_len)->default_value(pre.seq_len), "tokens per row")(
      "batch-size", po::value(&pre.batch_size)->default_value(pre.batch_size), "rows per micro-batch")(
      "eval-batches", po::value(&pre.eval_batches)->default_value(pre.eval_batches), "held-out micro-batches per evaluation");
  // clang-format on
  const auto parsed = parse_options(args, "pretrain", "Packed next-token prediction over a token file.", d);
  if (parsed.help) return 0;
  o.device = apply_runtime(threads, o.device).str();
  install_stop_signal_handlers();
  o.run_config = parsed.resolved;
  return run_pretrain(std::move(o));
}

int cmd_sft(const Args& args) {
  SftRunOptions o;
  auto& sft = o.sft;
  int threads = 0;
  po::options_description d("keel sft");
  add_train_options(d, o.train);
  add_runtime_options(d, threads, o.device);
  // clang-format off
  d.add_options()("init", po::value(&o.init)->required(), "model directory to start from (e.g. a pretrain run's model/)")(
      "train-file", po::value(&o.train_file)->required(), "JSONL: {prompt, response} or {messages}")(
      "eval-file", po::value(&o.eval_file), "held-out JSONL of the same form")(
      "template", po::value(&o.prompt_template)->default_value(o.prompt_template), "chat format: auto (the model's tokenizer_config.json, else chat) | chat | chatml | llama2 | llama3 | zephyr | none")(
      "bad-lines", po::value(&o.bad_lines)->default_value(o.bad_lines), "malformed JSONL lines: fail | skip")(
      "packing", po::value(&sft.packing)->default_value(sft.packing), "pack several examples per row")(
      "seq-len", po::value(&sft.seq_len)->default_value(sft.seq_len), "row length")(
      "batch-size", po::value(&sft.batch_size)->default_value(sft.batch_size), "rows per micro-batch");
  // clang-format on
  const auto parsed = parse_options(args, "sft", "Supervised fine-tuning; loss on response tokens only.", d);
  if (parsed.help) return 0;
  o.device = apply_runtime(threads, o.device).str();
  install_stop_signal_handlers();
  o.run_config = parsed.resolved;
  return run_sft(std::move(o));
}

}  // namespace keel
