#include "learner/preference_learners.h"

#include <cmath>
#include <iostream>
#include <memory>
#include <optional>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/model_loader.h"
#include "core/tokenizer.h"
#include "learner/algos/reward_loss.h"
#include "learner/pair_batch.h"
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

RewardTrainRunOptions::RewardTrainRunOptions() {
  train.out_dir = "runs/reward";
  train.lr = 1e-4;
  train.warmup_steps = 20;
  train.weight_decay = 0.0;
}

namespace {

// Gain and bias so that the held-out rewards have mean 0 and std 1, written into the run's model.
void normalize_rewards(Transformer& model, const RewardTrainRunOptions& o, const std::vector<PreferencePair>& eval,
                       const std::string& tok_file) {
  KEEL_CHECK(!eval.empty(), "--normalize needs held-out pairs (--eval-buffer or --eval-pairs)");
  model->eval();
  const auto raw = pair_reward_values(model, eval, o.reward.max_len, o.reward.batch_pairs);
  const auto n = fit_reward_norm(raw);
  model->set_reward_norm(n.gain, n.bias);
  save_model(o.train.out_dir + "/model", model, tok_file);
  std::cerr << "reward normalisation on " << raw.size(0) << " held-out rewards: gain " << n.gain << ", bias " << n.bias << "\n";
}

}  // namespace

int run_reward_training(RewardTrainRunOptions o) {
  const torch::Device dev(o.device);
  auto lo = ModelLoadOptions::on(dev);
  lo.reward_head = true;
  lo.head_seed = o.train.seed;
  auto [model, tok_file, tok] = load_model_dir(o.init, lo);
  auto pd = open_preference_data(o.data, *tok, o.train.seed);
  o.reward.batch_pairs = o.data.batch_pairs;
  auto dp = make_data_parallel(dev, o.train);
  o.reward.grad_accum = global_micro_batches(o.train, dp);
  RewardObjective objective(o.reward, source_of(pd), pd.eval, model->config().pad_id, model->config().vocab_size, dev);
  TrainLoop loop(o.train, model, objective, o.run_config, tok_file);
  loop.set_data_parallel(dp);
  const auto r = loop.run();
  if (r.interrupted) return 3;
  if (o.normalize && (!dp || dp->rank() == 0)) normalize_rewards(model, o, pd.eval, tok_file);
  if (r.last_eval.count("eval/accuracy")) std::cout << "held-out pairwise accuracy: " << r.last_eval.at("eval/accuracy") << "\n";
  return 0;
}

ReferenceMode parse_reference_mode(const std::string& s) {
  if (s == "auto") return ReferenceMode::kAuto;
  if (s == "cached") return ReferenceMode::kCached;
  if (s == "online") return ReferenceMode::kOnline;
  KEEL_FAIL("--ref-mode must be auto, cached or online, not '" << s << "'");
}

DpoRunOptions::DpoRunOptions() {
  train.out_dir = "runs/dpo";
  train.lr = 5e-6;
  train.warmup_steps = 10;
  train.weight_decay = 0.0;
}

namespace {

// Reference log-probs of every pair of the training (and held-out) buffer, stored in the buffers.
void precompute_reference(const DpoRunOptions& o, const Tokenizer& tok, const std::string& ref_id, torch::Device dev) {
  auto reference = load_model_as(o.reference, ModelLoadOptions::on(dev));
  for (const auto& path : {o.data.train, o.data.eval_buffer}) {
    if (path.empty()) continue;
    std::vector<float> chosen, rejected;
    {
      PreferenceReader r(path);
      check_tokenizer(r, tok);
      for (int64_t i = 0; i < r.size(); i += 1024) {
        auto part =
            compute_reference_logprobs(reference, r.read(i, std::min(r.size(), i + 1024)), o.dpo.max_len, o.data.batch_pairs);
        chosen.insert(chosen.end(), part.first.begin(), part.first.end());
        rejected.insert(rejected.end(), part.second.begin(), part.second.end());
        std::cerr << "\rprecompute-ref " << path << ": " << chosen.size() << "/" << r.size() << std::flush;
      }
      std::cerr << "\n";
    }
    write_reference_logprobs(path, chosen, rejected, ref_id, o.dpo.max_len);
    std::cout << path << ": reference log-probs of " << chosen.size() << " pairs stored (model " << ref_id << ")\n";
  }
}

// True when every buffer caches reference log-probs of this reference at this truncation. A cache
// of another reference is ignored (kAuto) or an error (kCached).
bool use_reference_cache(const DpoRunOptions& o, const PreferenceReader& train, const std::string& ref_id) {
  if (o.reference_mode == ReferenceMode::kOnline) return false;
  auto usable = [&](const PreferenceReader& r) {
    const auto& i = r.info();
    if (!i.ref) return false;
    const bool same = i.ref_model == ref_id && i.ref_max_len == o.dpo.max_len;
    KEEL_CHECK(same || o.reference_mode != ReferenceMode::kCached,
               r.path() << " caches reference log-probs of model " << i.ref_model << " at max_len " << i.ref_max_len
                        << "; this run's reference is " << ref_id << " at max_len " << o.dpo.max_len
                        << ": rerun --precompute-ref");
    return same;
  };
  bool cached = usable(train);
  if (!o.data.eval_buffer.empty()) cached = cached && usable(PreferenceReader(o.data.eval_buffer));
  KEEL_CHECK(cached || o.reference_mode != ReferenceMode::kCached,
             "--ref-mode cached: the buffers hold no reference log-probs (run --precompute-ref)");
  return cached;
}

// Stale or unwanted caches are stripped so that every batch goes to the reference model.
PairSource without_cache(PairSource inner, std::vector<PreferencePair>& eval) {
  for (auto& p : eval) p.ref_chosen = p.ref_rejected = NAN;
  return [inner = std::move(inner)](int64_t k) {
    auto pairs = inner(k);
    for (auto& p : pairs) p.ref_chosen = p.ref_rejected = NAN;
    return pairs;
  };
}

}  // namespace

int run_dpo(DpoRunOptions o) {
  const torch::Device dev(o.device);
  if (o.reference.empty()) o.reference = o.init;
  const auto tok_file = require_tokenizer_file(o.init);
  auto tok = load_tokenizer(tok_file);
  const std::string ref_id = reference_cache_key(o.reference);
  if (o.precompute_reference) {
    precompute_reference(o, *tok, ref_id, dev);
    return 0;
  }
  auto pd = open_preference_data(o.data, *tok, o.train.seed);
  const bool cached = use_reference_cache(o, *pd.train, ref_id);
  PairSource source = cached ? source_of(pd) : without_cache(source_of(pd), pd.eval);
  const bool simpo = o.dpo.loss.type == DpoLossType::kSimpo;
  std::optional<Transformer> reference;
  if (!cached && !simpo) reference = load_model_as(o.reference, ModelLoadOptions::on(dev));
  std::cerr << "dpo: loss " << dpo_loss_type_name(o.dpo.loss.type) << ", beta " << o.dpo.loss.beta << ", reference log-probs "
            << (simpo    ? "not used (simpo)"
                : cached ? "from the buffer cache"
                         : "computed on the fly")
            << "\n";
  auto model = load_model_as(o.init, ModelLoadOptions::on(dev));
  o.dpo.batch_pairs = o.data.batch_pairs;
  auto dp = make_data_parallel(dev, o.train);
  o.dpo.grad_accum = global_micro_batches(o.train, dp);
  DpoObjective objective(o.dpo, source, pd.eval, reference, model->config().pad_id, model->config().vocab_size, dev);
  TrainLoop loop(o.train, model, objective, o.run_config, tok_file);
  loop.set_data_parallel(dp);
  const auto r = loop.run();
  if (r.last_eval.count("eval/accuracy"))
    std::cout << "held-out preference accuracy: " << r.last_eval.at("eval/accuracy") << "\n";
  return r.interrupted ? 3 : 0;
}

}  // namespace keel
