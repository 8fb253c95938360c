#include "bench/size_bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <torch/torch.h>

#include "actors/sampler.h"
#include "core/checkpoint.h"
#include "core/model_loader.h"
#include "core/safetensors.h"

namespace keel::bench {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Reads `path` through a small buffer, so that later reads find it in the page cache without this
// process holding (or, with keel's malloc policy, keeping) a copy.
void warm_page_cache(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return;
  std::vector<char> buf(1 << 20);
  while (std::fread(buf.data(), 1, buf.size(), f) == buf.size()) {
  }
  std::fclose(f);
}

double peak_rss_mb() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// Least of `reps` timings of f: the run least disturbed by the rest of the machine.
template <class F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t = Clock::now();
    f();
    best = std::min(best, seconds_since(t));
  }
  return best;
}

// Bytes a decoding step reads from the weights: every parameter except the rows of lookup tables
// (GPT-2's position table; an embedding table the LM head does not share), of which a step reads
// one row per sequence; weight matrices at 2 bytes an element when decoding reads bfloat16 copies.
double weight_bytes_per_step(Transformer& model) {
  double bytes = 0;
  const bool untied = model->named_parameters().contains("lm_head.weight");
  const bool bf16 = model->decode_dtype() == torch::kBFloat16;
  for (const auto& p : model->named_parameters()) {
    const auto& name = p.key();
    if (name == "transformer.wpe.weight" || (untied && name == "model.embed_tokens.weight")) continue;
    const bool matrix = p.value().dim() == 2;
    bytes += static_cast<double>(p.value().numel()) * (bf16 && matrix ? 2.0 : 4.0);
  }
  return bytes;
}

}  // namespace

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

void bandwidth() {
  const int64_t n = int64_t{1} << 28;  // 1 GiB of float32, far beyond every cache
  auto a = torch::ones({n}), b = torch::empty({n});
  b.copy_(a);
  const double read = best_of(5, [&] { a.sum().item<float>(); });
  const double copy = best_of(5, [&] { b.copy_(a); });
  const double bytes = static_cast<double>(n) * 4;
  std::printf("{\"bench\": \"bandwidth\", \"impl\": \"keel\", \"threads\": %d, \"read_gbs\": %.2f, \"copy_gbs\": %.2f}\n",
              torch::get_num_threads(), bytes / read / 1e9, 2 * bytes / copy / 1e9);
}

namespace {

constexpr int64_t kPromptTokens = 16;

// Random prompts of kPromptTokens tokens, one per row.
std::vector<std::vector<int32_t>> random_prompts(int64_t batch, int64_t vocab) {
  std::mt19937 rng(1);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
  for (auto& p : prompts)
    for (int64_t i = 0; i < kPromptTokens; ++i) p.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
  return prompts;
}

}  // namespace

void decode_pair(const std::string& dir, int64_t batch, int rounds) {
  rounds = std::max(rounds, 1);
  auto model = load_model_as(dir, {});
  const auto prompts = random_prompts(batch, model->config().vocab_size);
  SamplingConfig s;
  s.temperature = 1.0;
  s.stop_at_eos = false;
  // One decoding step's seconds with `dtype`'s weights: 17 tokens less 1 (the prefill's).
  auto step = [&](torch::ScalarType dtype) {
    model->set_decode_dtype(dtype);
    s.max_new_tokens = 1;
    auto t = Clock::now();
    sample(model, prompts, s, -1, 0);
    const double prefill = seconds_since(t);
    s.max_new_tokens = 17;
    t = Clock::now();
    sample(model, prompts, s, -1, 0);
    return (seconds_since(t) - prefill) / 16;
  };
  // Each switch of dtype drops or remakes the bfloat16 copies, outside the timed steps.
  step(torch::kFloat32), step(torch::kBFloat16);  // first touch of the weights and the allocator
  std::vector<double> f32, bf16, ratio;
  for (int r = 0; r < rounds; ++r) {  // the order alternates, so neither always runs second
    const bool f32_first = r % 2 == 0;
    const double a = step(f32_first ? torch::kFloat32 : torch::kBFloat16);
    const double b = step(f32_first ? torch::kBFloat16 : torch::kFloat32);
    f32.push_back(f32_first ? a : b), bf16.push_back(f32_first ? b : a);
    ratio.push_back(f32.back() / bf16.back());
  }
  std::printf(
      "{\"bench\": \"decode_pair\", \"impl\": \"keel\", \"model\": \"%s\", \"batch\": %lld, \"rounds\": %d, "
      "\"float32_step_s\": %.5f, \"bfloat16_step_s\": %.5f, \"speedup_median\": %.3f, \"speedup_q1\": %.3f, "
      "\"speedup_q3\": %.3f}\n",
      dir.c_str(), static_cast<long long>(batch), rounds, quantile(f32, 0.5), quantile(bf16, 0.5), quantile(ratio, 0.5),
      quantile(ratio, 0.25), quantile(ratio, 0.75));
}

void decode(const std::string& dir, int64_t batch, int64_t new_tokens, const std::string& dtype) {
  auto model = load_model_as(dir, {});
  if (dtype == "bfloat16") model->set_decode_dtype(torch::kBFloat16);
  const auto& c = model->config();
  const int64_t prompt_len = kPromptTokens;
  const auto prompts = random_prompts(batch, c.vocab_size);
  SamplingConfig s;
  s.temperature = 1.0;
  s.stop_at_eos = false;
  auto run = [&](int64_t n) {
    s.max_new_tokens = n;
    return best_of(n > 1 ? 2 : 3, [&] { sample(model, prompts, s, -1, 0); });
  };
  const double context = static_cast<double>(prompt_len) + static_cast<double>(new_tokens) / 2;  // mean keys per step
  const double kv_bytes = 2.0 * static_cast<double>(c.n_layer * c.kv_heads() * (c.d_model / c.n_head) * batch) * context *
                          static_cast<double>(torch::elementSize(model->parameters().front().scalar_type()));
  const double step_bytes = weight_bytes_per_step(model) + kv_bytes;
  // The roofline's bandwidth is measured in this process just before and after the steps, on as
  // many bytes as a step reads: on a shared VM the bandwidth drifts by a third within minutes, so
  // one measured at another moment says little about this one.
  auto stream = torch::ones({static_cast<int64_t>(step_bytes / 4)});
  auto read = [&] { return best_of(3, [&] { stream.sum().item<float>(); }); };
  const double read_before = read();
  run(2);                                // first touch of the weights and the allocator
  const double prefill = run(1);         // the prompt's forward pass and one sampled token
  const double total = run(new_tokens);  // the same and new_tokens - 1 decoding steps
  const double step = (total - prefill) / static_cast<double>(new_tokens - 1);
  const double read_gbs = step_bytes / std::min(read_before, read()) / 1e9;
  std::printf(
      "{\"bench\": \"decode\", \"impl\": \"keel\", \"model\": \"%s\", \"dtype\": \"%s\", \"batch\": %lld, "
      "\"new_tokens\": %lld, \"seconds\": %.4f, \"tokens_per_s\": %.2f, \"step_s\": %.5f, \"weight_bytes\": %.0f, "
      "\"kv_bytes\": %.0f, \"read_gbs\": %.2f, \"roofline_share\": %.3f}\n",
      dir.c_str(), dtype.c_str(), static_cast<long long>(batch), static_cast<long long>(new_tokens), total,
      static_cast<double>(batch * new_tokens) / total, step, weight_bytes_per_step(model), kv_bytes, read_gbs,
      step_bytes / step / (read_gbs * 1e9));
}

namespace {

// Response bounds with a long tail: round(exp(N(ln 20, 1))) clamped to 1..256 (median 20, mean
// about 33, 1 in 20 above 100), one per response; the responses end there (no EOS).
std::vector<int64_t> long_tailed_lengths(size_t n) {
  std::mt19937 rng(7);
  std::lognormal_distribution<double> len(std::log(20.0), 1.0);
  std::vector<int64_t> out;
  for (size_t i = 0; i < n; ++i) out.push_back(std::clamp<int64_t>(std::llround(len(rng)), 1, 256));
  return out;
}

}  // namespace

void continuous(const std::string& dir, int64_t slots, int64_t prompts, int64_t group) {
  auto model = load_model_as(dir, {});
  const auto& c = model->config();
  std::mt19937 rng(1);
  std::vector<std::vector<int32_t>> work;  // `group` copies of each prompt, consecutive
  for (int64_t i = 0; i < prompts; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < 16; ++j) p.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size)));
    for (int64_t g = 0; g < group; ++g) work.push_back(p);
  }
  const auto limits = long_tailed_lengths(work.size());
  SamplingConfig s;
  s.stop_at_eos = false;
  s.max_new_tokens = *std::max_element(limits.begin(), limits.end());
  int64_t useful = 0, static_steps = 0;
  for (auto l : limits) useful += l;
  auto t = Clock::now();  // static batching: `slots` responses at a time, each batch until its longest ends
  for (size_t i = 0; i < work.size(); i += static_cast<size_t>(slots)) {
    const size_t end = std::min(work.size(), i + static_cast<size_t>(slots));
    std::vector<std::vector<int32_t>> batch(work.begin() + static_cast<long>(i), work.begin() + static_cast<long>(end));
    std::vector<int64_t> bound(limits.begin() + static_cast<long>(i), limits.begin() + static_cast<long>(end));
    static_steps += sample(model, batch, s, -1, 0, bound).steps;
  }
  const double static_s = seconds_since(t);
  s.slots = slots;
  t = Clock::now();
  const auto cont = sample(model, work, s, -1, 0, limits);
  const double cont_s = seconds_since(t);
  auto sorted = limits;
  std::sort(sorted.begin(), sorted.end());
  std::printf(
      "{\"bench\": \"continuous\", \"impl\": \"keel\", \"model\": \"%s\", \"slots\": %lld, \"responses\": %zu, \"group\": %lld, "
      "\"length_mean\": %.1f, \"length_median\": %lld, \"length_p90\": %lld, \"length_max\": %lld, \"useful_tokens\": %lld, "
      "\"static_s\": %.2f, \"static_steps\": %lld, \"static_tokens_per_s\": %.1f, \"continuous_s\": %.2f, "
      "\"continuous_steps\": %lld, \"continuous_prefill_rows\": %lld, \"continuous_tokens_per_s\": %.1f, \"ratio\": %.2f}\n",
      dir.c_str(), static_cast<long long>(slots), work.size(), static_cast<long long>(group),
      static_cast<double>(useful) / static_cast<double>(work.size()), static_cast<long long>(sorted[sorted.size() / 2]),
      static_cast<long long>(sorted[sorted.size() * 9 / 10]), static_cast<long long>(sorted.back()),
      static_cast<long long>(useful), static_s, static_cast<long long>(static_steps), static_cast<double>(useful) / static_s,
      cont_s, static_cast<long long>(cont.steps), static_cast<long long>(cont.prefill_rows), static_cast<double>(useful) / cont_s,
      static_s / cont_s);
}

namespace {

// Continuous batching at this size: 6 prompts (prefixes of the input rows, two of them twice)
// through 2 rows with unequal bounds; each response's behaviour log-probs against a full
// recomputation of its prompt and response. Max |difference|.
double continuous_vs_full(Transformer& model, const torch::Tensor& tokens) {
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t len : {5, 5, 17, 9, 9, 30}) {
    auto row = tokens[len % tokens.size(0)].narrow(0, 0, len).contiguous();
    prompts.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + len);
  }
  SamplingConfig s;
  s.stop_at_eos = false;
  s.max_new_tokens = 12;
  s.slots = 2;
  const auto out = sample(model, prompts, s, -1, 0, {12, 3, 7, 12, 1, 5});
  double worst = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> seq(prompts[i].begin(), prompts[i].end());
    seq.insert(seq.end(), out.responses[i].begin(), out.responses[i].end());
    const auto P = static_cast<int64_t>(prompts[i].size()), n = static_cast<int64_t>(out.responses[i].size());
    auto ids = torch::tensor(seq).unsqueeze(0);
    auto lp = token_logprobs(model->logits(model->hidden({ids, {}, {}, {}})).narrow(1, P - 1, n), ids.narrow(1, P, n));
    auto got = torch::tensor(out.logprobs[i]);
    worst = std::max(worst, (lp.squeeze(0) - got).abs().max().item<double>());
  }
  return worst;
}

}  // namespace

void check(const std::string& dir, const std::string& inputs, const std::string& ref) {
  torch::NoGradGuard no_grad;
  auto model = load_model_as(dir, {});
  model->eval();
  const auto tokens = load_safetensors(inputs).at("tokens").to(torch::kLong);
  const auto want = load_safetensors(ref).at("logits");
  const auto full = model->logits(model->hidden({tokens, {}, {}, {}}));
  const int64_t T = tokens.size(1), half = T / 2;
  auto cache = model->make_cache(tokens.size(0), T);
  double cached = (model->logits(model->hidden({tokens.slice(1, 0, half), {}, {}, {}}, &cache)) - full.slice(1, 0, half))
                      .abs()
                      .max()
                      .item<double>();
  for (int64_t t = half; t < T; ++t) {
    const auto step = model->logits(model->hidden({tokens.slice(1, t, t + 1), {}, {}, {}}, &cache));
    cached = std::max(cached, (step - full.slice(1, t, t + 1)).abs().max().item<double>());
  }
  std::printf(
      "{\"bench\": \"check\", \"impl\": \"keel\", \"model\": \"%s\", \"max_abs_vs_python\": %.3g, "
      "\"max_abs_cached_vs_full\": %.3g, \"max_abs_continuous_logp_vs_full\": %.3g, \"max_abs_logit\": %.3g}\n",
      dir.c_str(), (full - want).abs().max().item<double>(), cached, continuous_vs_full(model, tokens),
      want.abs().max().item<double>());
}

}  // namespace keel::bench

namespace keel::bench {

void load(const std::string& dir) {
  warm_page_cache(model_weights_path(dir));  // both timings below read the file from the page cache
  auto t = Clock::now();
  Transformer(load_model_config(dir), WeightsInit::kForLoad);
  const double build_s = seconds_since(t);
  const double rss0 = peak_rss_mb();
  t = Clock::now();
  auto model = load_model_as(dir, {});
  const double load_s = seconds_since(t);
  const double growth = peak_rss_mb() - rss0;
  model = nullptr;
  t = Clock::now();
  const auto bytes = read_file(model_weights_path(dir));  // the baseline: one read of the file into fresh memory
  const double read_s = seconds_since(t);
  std::printf(
      "{\"bench\": \"load\", \"model\": \"%s\", \"file_mb\": %.1f, \"load_s\": %.3f, \"build_alone_s\": %.3f, \"read_file_s\": "
      "%.3f, "
      "\"load_over_read\": %.2f, \"load_peak_rss_growth_mb\": %.1f}\n",
      dir.c_str(), static_cast<double>(bytes.size()) / 1e6, load_s, build_s, read_s, load_s / read_s, growth);
}

}  // namespace keel::bench
