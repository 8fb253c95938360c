// Learner commands on the shared training loop: pretrain and SFT; and model init.
#include <iostream>

#include "core/checkpoint.h"
#include "core/corpus.h"
#include "core/error.h"
#include "core/tokenizer.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "learner/pretrain.h"
#include "learner/sft.h"
#include "learner/train_loop.h"

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

int cmd_model_init(const Args& args) {
  ModelConfig c;
  std::string family = "gpt2", tokenizer, out;
  uint64_t seed = 1;
  po::options_description d("keel model init");
  add_model_options(d, c, family);
  d.add_options()("tokenizer", po::value(&tokenizer)->required(), "tokenizer (sets vocabulary and special ids)")(
      "out", po::value(&out)->required(), "model directory to write")("seed", po::value(&seed)->default_value(seed), "init seed");
  if (parse_options(args, "model init", "Writes a freshly initialised model directory.", d).help) return 0;
  auto tok = load_tokenizer(tokenizer);
  Transformer model(config_for(c, family, *tok));
  model->init_weights(seed);
  save_model(out, model, tokenizer);
  std::cout << out << ": " << model->config().num_parameters() << " parameters\n";
  return 0;
}

int cmd_pretrain(const Args& args) {
  ModelConfig c;
  std::string family = "gpt2", tokenizer, device = "cpu";
  int threads = 0;
  TrainOptions train;
  train.out_dir = "runs/pretrain";
  PretrainOptions pre;
  po::options_description d("keel pretrain");
  add_model_options(d, c, family);
  add_train_options(d, train);
  add_runtime_options(d, threads, device);
  d.add_options()("data", po::value(&pre.data_dir)->required(), "directory with train.bin and val.bin")(
      "tokenizer", po::value(&tokenizer)->required(), "the tokenizer of the token files (copied into the model)")(
      "seq-len", po::value(&pre.seq_len)->default_value(pre.seq_len), "tokens per row")(
      "batch-size", po::value(&pre.batch_size)->default_value(pre.batch_size), "rows per micro-batch")(
      "eval-batches", po::value(&pre.eval_batches)->default_value(pre.eval_batches), "held-out micro-batches per evaluation");
  const auto parsed = parse_options(args, "pretrain", "Packed next-token prediction over a token file.", d);
  if (parsed.help) return 0;
  const auto dev = apply_runtime(threads, device);
  install_stop_signal_handlers();
  auto tok = load_tokenizer(tokenizer);
  pre.seed = train.seed;
  PretrainObjective objective(pre, dev);
  KEEL_CHECK(objective.train().vocab_size() == tok->vocab_size(),
             "token files were made with a vocabulary of " << objective.train().vocab_size() << ", the tokenizer has "
                                                           << tok->vocab_size());
  c.max_positions = std::max(c.max_positions, pre.seq_len);
  Transformer model(config_for(c, family, *tok));
  model->init_weights(train.seed);
  model->to(dev);
  std::cerr << "model: " << family_name(model->config().family) << ", " << model->config().num_parameters()
            << " parameters\nunigram baseline (val cross-entropy, nats/token): "
            << unigram_cross_entropy(pre.data_dir + "/train.bin", pre.data_dir + "/val.bin") << "\n";
  TrainLoop loop(train, model, objective, parsed.resolved, tokenizer);
  loop.set_data_parallel(make_data_parallel(dev, train));
  const auto r = loop.run();
  return r.interrupted ? 3 : 0;
}

int cmd_sft(const Args& args) {
  std::string init, train_file, eval_file, tmpl = "chat", bad_lines = "fail", device = "cpu";
  int threads = 0;
  TrainOptions train;
  train.out_dir = "runs/sft";
  train.lr = 1e-4;
  train.warmup_steps = 20;
  train.weight_decay = 0.0;
  SftOptions sft;
  po::options_description d("keel sft");
  add_train_options(d, train);
  add_runtime_options(d, threads, device);
  d.add_options()("init", po::value(&init)->required(), "model directory to start from (e.g. a pretrain run's model/)")(
      "train-file", po::value(&train_file)->required(), "JSONL: {prompt, response} or {messages}")(
      "eval-file", po::value(&eval_file), "held-out JSONL of the same form")(
      "template", po::value(&tmpl)->default_value(tmpl), "prompt template: chat | none")(
      "bad-lines", po::value(&bad_lines)->default_value(bad_lines), "malformed JSONL lines: fail | skip")(
      "packing", po::value(&sft.packing)->default_value(sft.packing), "pack several examples per row")(
      "seq-len", po::value(&sft.seq_len)->default_value(sft.seq_len), "row length")(
      "batch-size", po::value(&sft.batch_size)->default_value(sft.batch_size), "rows per micro-batch");
  const auto parsed = parse_options(args, "sft", "Supervised fine-tuning; loss on response tokens only.", d);
  if (parsed.help) return 0;
  const auto dev = apply_runtime(threads, device);
  install_stop_signal_handlers();
  const auto tok_file = model_tokenizer_file(init);
  KEEL_CHECK(!tok_file.empty(), "model directory " << init << " holds no tokenizer");
  auto tok = load_tokenizer(tok_file);
  auto model = load_model(init);
  KEEL_CHECK(model->config().vocab_size == tok->vocab_size(), "tokenizer and model vocabularies differ");
  const auto t = parse_prompt_template(tmpl);
  const auto policy = parse_bad_line_policy(bad_lines);
  auto train_ex = load_sft_jsonl(train_file, *tok, t, policy);
  std::vector<SftExample> eval_ex;
  if (!eval_file.empty()) eval_ex = load_sft_jsonl(eval_file, *tok, t, policy);
  std::cerr << "sft: " << train_ex.size() << " training examples, " << eval_ex.size() << " held-out\n";
  sft.seed = train.seed;
  auto dp = make_data_parallel(dev, train);
  sft.grad_accum = train.grad_accum * (dp ? dp->world() : 1);  // rows are indexed by global micro-batch
  KEEL_CHECK(sft.seq_len <= model->config().max_positions || model->config().family == Family::kLlama,
             "--seq-len " << sft.seq_len << " exceeds the model's max positions " << model->config().max_positions);
  model->to(dev);
  SftObjective objective(sft, std::move(train_ex), std::move(eval_ex), dev);
  if (objective.truncated() > 0) std::cerr << "sft: " << objective.truncated() << " examples truncated to --seq-len\n";
  TrainLoop loop(train, model, objective, parsed.resolved, tok_file);
  loop.set_data_parallel(dp);
  return loop.run().interrupted ? 3 : 0;
}

}  // namespace keel
