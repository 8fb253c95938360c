#include "learner/lm_learners.h"

#include <algorithm>
#include <iostream>

#include "core/checkpoint.h"
#include "core/corpus.h"
#include "core/error.h"
#include "core/model_loader.h"
#include "core/tokenizer.h"

namespace keel {

namespace {

ModelConfig config_for(ModelConfig c, const std::string& family, const Tokenizer& tok) {
  c.family = ModelConfig::parse_family(family);
  c.vocab_size = tok.vocab_size();
  c.bos_id = tok.specials().bos;
  c.eos_id = tok.specials().eos;
  c.pad_id = tok.specials().pad;
  c.tie_embeddings = c.family == Family::kGpt2 ? true : c.tie_embeddings;
  c.validate();
  return c;
}

}  // namespace

int run_model_init(const ModelInitOptions& o) {
  auto tok = load_tokenizer(o.tokenizer);
  Transformer model(config_for(o.config, o.family, *tok));
  model->init_weights(o.seed);
  save_model(o.out, model, o.tokenizer);
  std::cout << o.out << ": " << model->config().num_parameters() << " parameters\n";
  return 0;
}

PretrainRunOptions::PretrainRunOptions() { train.out_dir = "runs/pretrain"; }

int run_pretrain(PretrainRunOptions o) {
  const torch::Device dev(o.device);
  auto tok = load_tokenizer(o.tokenizer);
  o.pretrain.seed = o.train.seed;
  PretrainObjective objective(o.pretrain, dev);
  KEEL_CHECK(objective.train().vocab_size() == tok->vocab_size(), "token files were made with a vocabulary of "
                                                                      << objective.train().vocab_size() << ", the tokenizer has "
                                                                      << tok->vocab_size());
  o.config.max_positions = std::max(o.config.max_positions, o.pretrain.seq_len);
  Transformer model(config_for(o.config, o.family, *tok));
  model->init_weights(o.train.seed);
  model->to(dev);
  std::cerr << "model: " << family_name(model->config().family) << ", " << model->config().num_parameters()
            << " parameters\nunigram baseline (val cross-entropy, nats/token): "
            << unigram_cross_entropy(o.pretrain.data_dir + "/train.bin", o.pretrain.data_dir + "/val.bin") << "\n";
  TrainLoop loop(o.train, model, objective, o.run_config, o.tokenizer);
  loop.set_data_parallel(make_data_parallel(dev, o.train));
  return loop.run().interrupted ? 3 : 0;
}

SftRunOptions::SftRunOptions() {
  train.out_dir = "runs/sft";
  train.lr = 1e-4;
  train.warmup_steps = 20;
  train.weight_decay = 0.0;
}

int run_sft(SftRunOptions o) {
  const torch::Device dev(o.device);
  auto [model, tok_file, tok] = load_model_dir(o.init, ModelLoadOptions::on(dev));
  KEEL_CHECK(model->config().vocab_size == tok->vocab_size(), "tokenizer and model vocabularies differ");
  const auto t = resolve_prompt_template(o.prompt_template, o.init);
  const auto policy = parse_bad_line_policy(o.bad_lines);
  auto train_ex = load_sft_jsonl(o.train_file, *tok, t, policy);
  std::vector<SftExample> eval_ex;
  if (!o.eval_file.empty()) eval_ex = load_sft_jsonl(o.eval_file, *tok, t, policy);
  std::cerr << "sft: " << train_ex.size() << " training examples, " << eval_ex.size() << " held-out\n";
  o.sft.seed = o.train.seed;
  auto dp = make_data_parallel(dev, o.train);
  o.sft.grad_accum = global_micro_batches(o.train, dp);  // rows are indexed by global micro-batch
  KEEL_CHECK(o.sft.seq_len <= model->config().max_positions || model->config().family == Family::kLlama,
             "--seq-len " << o.sft.seq_len << " exceeds the model's max positions " << model->config().max_positions);
  SftObjective objective(o.sft, std::move(train_ex), std::move(eval_ex), dev);
  if (objective.truncated() > 0) std::cerr << "sft: " << objective.truncated() << " examples truncated to --seq-len\n";
  TrainLoop loop(o.train, model, objective, o.run_config, tok_file);
  loop.set_data_parallel(dp);
  return loop.run().interrupted ? 3 : 0;
}

}  // namespace keel
