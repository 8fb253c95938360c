// Learners on preference buffers: `keel reward train` (Bradley-Terry reward model) and `keel dpo`
// (the DPO family, with reference log-probs cached in the buffer or computed on the fly). Both run
// on the shared training loop and read the training buffer through a shuffled prefetching stream.
#include <iostream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/tokenizer.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "learner/algos/reward_loss.h"
#include "learner/dpo.h"
#include "learner/reward_model.h"
#include "learner/train_loop.h"
#include "replay/preference_stream.h"

namespace keel {

namespace {

// The buffers a preference learner reads: a shuffled stream over the training pairs and the
// held-out pairs in memory (a separate buffer, or the last --eval-pairs of the training buffer).
struct PreferenceData {
  std::shared_ptr<PreferenceReader> train;
  std::shared_ptr<PreferenceStream> stream;
  std::vector<PreferencePair> eval;
};

struct PreferenceDataOptions {
  std::string train, eval_buffer;
  int64_t eval_pairs = -1;  // -1: 10% of the training buffer, at most 512, when there is no --eval-buffer
  int64_t batch_pairs = 8;
  int64_t shuffle_window = 64;
};

void add_preference_data_options(po::options_description& d, PreferenceDataOptions& o) {
  d.add_options()("train", po::value(&o.train)->required(), "preference buffer (HDF5) to train on")(
      "eval-buffer", po::value(&o.eval_buffer), "held-out preference buffer")(
      "eval-pairs", po::value(&o.eval_pairs)->default_value(o.eval_pairs),
      "without --eval-buffer: hold out the training buffer's last N pairs (-1 = 10%, at most 512; 0 = none)")(
      "batch-size", po::value(&o.batch_pairs)->default_value(o.batch_pairs), "pairs per micro-batch")(
      "shuffle-window", po::value(&o.shuffle_window)->default_value(o.shuffle_window),
      "blocks of 64 pairs shuffled together (memory holds one window)");
}

void check_tokenizer(const PreferenceReader& r, const Tokenizer& tok) {
  const auto& id = r.info().tokenizer;
  KEEL_CHECK(id.empty() || id == tok.identity(), r.path() << " was tokenized with " << id << ", the model's tokenizer is "
                                                          << tok.identity() << ": re-import it with this model's tokenizer");
}

PreferenceData open_preference_data(const PreferenceDataOptions& o, const Tokenizer& tok, uint64_t seed) {
  PreferenceData d;
  d.train = std::make_shared<PreferenceReader>(o.train);
  check_tokenizer(*d.train, tok);
  int64_t end = d.train->size();
  if (!o.eval_buffer.empty()) {
    PreferenceReader ev(o.eval_buffer);
    check_tokenizer(ev, tok);
    d.eval = ev.read(0, ev.size());
  } else {
    const int64_t n = o.eval_pairs >= 0 ? o.eval_pairs : std::min<int64_t>(512, end / 10);
    KEEL_CHECK(n < end, "--eval-pairs " << n << " leaves no training pairs in " << o.train);
    d.eval = d.train->read(end - n, end);
    end -= n;
  }
  PreferenceStreamOptions so;
  so.batch_pairs = o.batch_pairs;
  so.window_blocks = o.shuffle_window;
  so.seed = seed;
  so.end = end;
  d.stream = std::make_shared<PreferenceStream>(d.train, so);
  std::cerr << "preferences: " << end << " training pairs (" << o.train << "), " << d.eval.size() << " held-out\n";
  return d;
}

PairSource source_of(const PreferenceData& d) {
  auto s = d.stream;
  return [s](int64_t k) { return s->batch(k); };
}

}  // namespace

int cmd_reward_train(const Args& args) {
  std::string init, device = "cpu";
  int threads = 0;
  bool normalize = false;
  TrainOptions train;
  train.out_dir = "runs/reward";
  train.lr = 1e-4;
  train.warmup_steps = 20;
  train.weight_decay = 0.0;
  RewardTrainOptions rt;
  PreferenceDataOptions data;
  po::options_description d("keel reward train");
  add_train_options(d, train);
  add_runtime_options(d, threads, device);
  add_preference_data_options(d, data);
  d.add_options()("init", po::value(&init)->required(), "model directory to start from (e.g. the SFT model)")(
      "max-len", po::value(&rt.max_len)->default_value(rt.max_len), "prompt + response tokens per row")(
      "margin-scale", po::value(&rt.margin_scale)->default_value(rt.margin_scale),
      "Bradley-Terry margin = scale * (chosen_reward - rejected_reward) from the buffer's metadata (0 = off)")(
      "center-coef", po::value(&rt.center_coef)->default_value(rt.center_coef), "coef * mean((r_c + r_r)^2) (0 = off)")(
      "normalize", po::bool_switch(&normalize), "after training, fit gain and bias so held-out rewards have mean 0, std 1");
  const auto parsed = parse_options(args, "reward train", "Trains a reward model (Bradley-Terry) on a preference buffer.", d);
  if (parsed.help) return 0;
  const auto dev = apply_runtime(threads, device);
  install_stop_signal_handlers();
  const auto tok_file = model_tokenizer_file(init);
  KEEL_CHECK(!tok_file.empty(), "model directory " << init << " holds no tokenizer");
  auto tok = load_tokenizer(tok_file);
  auto config = load_model_config(init);
  config.reward_head = true;
  Transformer model(config);
  model->init_weights(train.seed);  // the reward head; the body is overwritten next
  load_weights(model, load_safetensors(init + "/model.safetensors"), init, /*allow_new_heads=*/true);
  model->to(dev);
  auto pd = open_preference_data(data, *tok, train.seed);
  rt.batch_pairs = data.batch_pairs;
  auto dp = make_data_parallel(dev, train);
  rt.grad_accum = train.grad_accum * (dp ? dp->world() : 1);
  RewardObjective objective(rt, source_of(pd), pd.eval, config.pad_id, config.vocab_size, dev);
  TrainLoop loop(train, model, objective, parsed.resolved, tok_file);
  loop.set_data_parallel(dp);
  const auto r = loop.run();
  if (r.interrupted) return 3;
  if (normalize && (!dp || dp->rank() == 0)) {
    KEEL_CHECK(!pd.eval.empty(), "--normalize needs held-out pairs (--eval-buffer or --eval-pairs)");
    model->eval();
    const auto raw = pair_reward_values(model, pd.eval, rt.max_len, rt.batch_pairs);
    const auto n = fit_reward_norm(raw);
    model->set_reward_norm(n.gain, n.bias);
    save_model(train.out_dir + "/model", model, tok_file);
    std::cerr << "reward normalisation on " << raw.size(0) << " held-out rewards: gain " << n.gain << ", bias " << n.bias << "\n";
  }
  if (r.last_eval.count("eval/accuracy"))
    std::cout << "held-out pairwise accuracy: " << r.last_eval.at("eval/accuracy") << "\n";
  return 0;
}

int cmd_dpo(const Args& args) {
  std::string init, ref, device = "cpu", loss_type = "sigmoid", ref_mode = "auto";
  int threads = 0;
  bool precompute = false;
  TrainOptions train;
  train.out_dir = "runs/dpo";
  train.lr = 5e-6;
  train.warmup_steps = 10;
  train.weight_decay = 0.0;
  DpoOptions dpo;
  PreferenceDataOptions data;
  po::options_description d("keel dpo");
  add_train_options(d, train);
  add_runtime_options(d, threads, device);
  add_preference_data_options(d, data);
  d.add_options()("init", po::value(&init)->required(), "policy to start from (e.g. the SFT model)")(
      "ref", po::value(&ref), "reference model (default: --init)")(
      "loss", po::value(&loss_type)->default_value(loss_type), "sigmoid | cdpo | robust | hinge | ipo | simpo")(
      "beta", po::value(&dpo.loss.beta)->default_value(dpo.loss.beta), "DPO beta")(
      "label-smoothing", po::value(&dpo.loss.label_smoothing)->default_value(dpo.loss.label_smoothing),
      "cdpo / robust: assumed share of flipped labels")(
      "simpo-gamma", po::value(&dpo.loss.simpo_gamma)->default_value(dpo.loss.simpo_gamma), "simpo target margin")(
      "sft-weight", po::value(&dpo.sft_weight)->default_value(dpo.sft_weight), "RPO: weight of the chosen response's NLL")(
      "max-len", po::value(&dpo.max_len)->default_value(dpo.max_len), "prompt + response tokens per row")(
      "ref-mode", po::value(&ref_mode)->default_value(ref_mode),
      "auto: cached reference log-probs when the buffers have them, else the reference model | cached | online")(
      "precompute-ref", po::bool_switch(&precompute),
      "compute the reference log-probs of every pair of --train (and --eval-buffer), store them in the buffers, exit");
  const auto parsed = parse_options(args, "dpo", "Direct preference optimisation from preference buffers.", d);
  if (parsed.help) return 0;
  dpo.loss.type = parse_dpo_loss_type(loss_type);
  KEEL_CHECK(ref_mode == "auto" || ref_mode == "cached" || ref_mode == "online", "--ref-mode must be auto, cached or online");
  if (ref.empty()) ref = init;
  const auto dev = apply_runtime(threads, device);
  const auto tok_file = model_tokenizer_file(init);
  KEEL_CHECK(!tok_file.empty(), "model directory " << init << " holds no tokenizer");
  auto tok = load_tokenizer(tok_file);
  const std::string ref_id = model_identity(ref);

  if (precompute) {
    auto reference = load_model(ref);
    reference->to(dev);
    for (const auto& path : {data.train, data.eval_buffer}) {
      if (path.empty()) continue;
      std::vector<float> chosen, rejected;
      {
        PreferenceReader r(path);
        check_tokenizer(r, *tok);
        for (int64_t i = 0; i < r.size(); i += 1024) {
          auto part = compute_reference_logprobs(reference, r.read(i, std::min(r.size(), i + 1024)), dpo.max_len, data.batch_pairs);
          chosen.insert(chosen.end(), part.first.begin(), part.first.end());
          rejected.insert(rejected.end(), part.second.begin(), part.second.end());
          std::cerr << "\rprecompute-ref " << path << ": " << chosen.size() << "/" << r.size() << std::flush;
        }
        std::cerr << "\n";
      }
      write_reference_logprobs(path, chosen, rejected, ref_id, dpo.max_len);
      std::cout << path << ": reference log-probs of " << chosen.size() << " pairs stored (model " << ref_id << ")\n";
    }
    return 0;
  }

  install_stop_signal_handlers();
  auto pd = open_preference_data(data, *tok, train.seed);
  // Use the cache only when it was computed by this reference at this truncation.
  auto cache_usable = [&](const PreferenceReader& r) {
    const auto& i = r.info();
    if (!i.ref) return false;
    const bool same = i.ref_model == ref_id && i.ref_max_len == dpo.max_len;
    KEEL_CHECK(same || ref_mode != "cached", r.path() << " caches reference log-probs of model " << i.ref_model << " at max_len "
                                                      << i.ref_max_len << "; this run's reference is " << ref_id << " at max_len "
                                                      << dpo.max_len << ": rerun --precompute-ref");
    return same;
  };
  bool cached = ref_mode != "online" && cache_usable(*pd.train);
  if (!data.eval_buffer.empty() && ref_mode != "online") cached = cached && cache_usable(PreferenceReader(data.eval_buffer));
  KEEL_CHECK(cached || ref_mode != "cached", "--ref-mode cached: the buffers hold no reference log-probs (run --precompute-ref)");
  PairSource source = source_of(pd);
  if (!cached) {
    // Stale or unwanted caches are ignored: strip them so every batch goes to the reference model.
    source = [inner = source](int64_t k) {
      auto pairs = inner(k);
      for (auto& p : pairs) p.ref_chosen = p.ref_rejected = NAN;
      return pairs;
    };
    for (auto& p : pd.eval) p.ref_chosen = p.ref_rejected = NAN;
  }
  std::optional<Transformer> reference;
  if (!cached && dpo.loss.type != DpoLossType::kSimpo) {
    reference = load_model(ref);
    (*reference)->to(dev);
  }
  std::cerr << "dpo: loss " << loss_type << ", beta " << dpo.loss.beta << ", reference log-probs "
            << (dpo.loss.type == DpoLossType::kSimpo ? "not used (simpo)" : cached ? "from the buffer cache" : "computed on the fly")
            << "\n";
  auto model = load_model(init);
  model->to(dev);
  dpo.batch_pairs = data.batch_pairs;
  auto dp = make_data_parallel(dev, train);
  dpo.grad_accum = train.grad_accum * (dp ? dp->world() : 1);
  DpoObjective objective(dpo, source, pd.eval, reference, model->config().pad_id, model->config().vocab_size, dev);
  TrainLoop loop(train, model, objective, parsed.resolved, tok_file);
  loop.set_data_parallel(dp);
  const auto r = loop.run();
  if (r.last_eval.count("eval/accuracy"))
    std::cout << "held-out preference accuracy: " << r.last_eval.at("eval/accuracy") << "\n";
  return r.interrupted ? 3 : 0;
}

}  // namespace keel
