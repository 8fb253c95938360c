#include "actors/sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "actors/continuous_sampler.h"
#include "core/error.h"

namespace keel {

void SamplingConfig::validate() const {
  KEEL_CHECK(temperature >= 0, "temperature must be >= 0, got " << temperature);
  KEEL_CHECK(top_k >= 0, "top-k must be >= 0, got " << top_k);
  KEEL_CHECK(top_p > 0 && top_p <= 1, "top-p must be in (0, 1], got " << top_p);
  KEEL_CHECK(max_new_tokens > 0, "max-new-tokens must be positive, got " << max_new_tokens);
  KEEL_CHECK(slots >= 0, "decode-slots must be >= 0 (0 = the whole batch at once), got " << slots);
}

std::vector<int64_t> response_limits(const std::vector<int64_t>& max_new, size_t prompts, const SamplingConfig& cfg) {
  if (max_new.empty()) return std::vector<int64_t>(prompts, cfg.max_new_tokens);
  KEEL_CHECK(max_new.size() == prompts, max_new.size() << " response-length bounds for " << prompts << " prompts");
  for (size_t i = 0; i < max_new.size(); ++i)
    KEEL_CHECK(max_new[i] > 0 && max_new[i] <= cfg.max_new_tokens, "prompt " << i << ": response bound " << max_new[i]
                                                                             << " outside 1.." << cfg.max_new_tokens
                                                                             << " (max-new-tokens)");
  return max_new;
}

std::pair<torch::Tensor, torch::Tensor> choose_tokens(const torch::Tensor& logits, const SamplingConfig& cfg,
                                                      at::Generator& gen) {
  const double temp = cfg.temperature > 0 ? cfg.temperature : 1.0;
  auto logp = torch::log_softmax(logits / temp, -1);
  torch::Tensor next;
  if (cfg.temperature == 0) {
    next = logits.argmax(-1);
  } else {
    auto probs = logp.exp();
    if (cfg.top_k > 0 && cfg.top_k < probs.size(1)) {
      auto kth = std::get<0>(probs.topk(cfg.top_k, -1)).select(1, cfg.top_k - 1).unsqueeze(1);
      probs = probs.masked_fill(probs < kth, 0.0);
    }
    if (cfg.top_p < 1.0) {
      auto [sorted, idx] = probs.sort(-1, /*descending=*/true);
      auto mass_before = sorted.cumsum(-1) - sorted;
      sorted.masked_fill_(mass_before > cfg.top_p * sorted.sum(-1, true), 0.0);
      probs = torch::zeros_like(probs).scatter_(1, idx, sorted);
    }
    next = draw_categorical(probs, gen);
  }
  return {next, logp.gather(1, next.unsqueeze(1)).squeeze(1)};
}

// Inverts each row's cumulative sum at one uniform number. torch::multinomial draws an exponential
// per vocabulary entry instead: 8 x 8192 logarithms per step, more than a small model's forward pass.
torch::Tensor draw_categorical(const torch::Tensor& probs, at::Generator& gen) {
  KEEL_CHECK(probs.dim() == 2 && probs.device().is_cpu() && probs.scalar_type() == torch::kFloat32,
             "draw_categorical: probabilities must be a [B, V] float32 CPU tensor");
  auto p = probs.contiguous();
  const int64_t B = p.size(0), V = p.size(1);
  auto out = torch::empty({B}, torch::kLong);
  auto* impl = at::check_generator<at::CPUGeneratorImpl>(gen);
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto picks = out.accessor<int64_t, 1>();
  constexpr int64_t kBlock = 64;
  std::vector<double> block_sums((V + kBlock - 1) / kBlock);
  for (int64_t b = 0; b < B; ++b) {
    const float* row = p.data_ptr<float>() + b * V;
    // Block sums first (four independent chains), so the walk touches one block of entries.
    double total = 0;
    for (size_t i = 0; i < block_sums.size(); ++i) {
      const int64_t lo = static_cast<int64_t>(i) * kBlock, hi = std::min(V, lo + kBlock);
      float s[4] = {0, 0, 0, 0};
      int64_t j = lo;
      for (; j + 4 <= hi; j += 4)
        for (int l = 0; l < 4; ++l) s[l] += row[j + l];
      for (; j < hi; ++j) s[0] += row[j];
      block_sums[i] = (static_cast<double>(s[0]) + s[1]) + (static_cast<double>(s[2]) + s[3]);
      total += block_sums[i];
    }
    KEEL_CHECK(std::isfinite(total) && total > 0,
               "sampling: row " << b << " has no probability mass (sum " << total << "; NaN or infinite logits?)");
    const double u = static_cast<double>(impl->random64() >> 11) * 0x1.0p-53;  // [0, 1)
    double target = u * total, cum = 0;
    int64_t pick = -1;
    for (size_t i = 0; i < block_sums.size() && pick < 0; ++i) {
      if (cum + block_sums[i] <= target) {
        cum += block_sums[i];
        continue;
      }
      const int64_t lo = static_cast<int64_t>(i) * kBlock, hi = std::min(V, lo + kBlock);
      for (int64_t j = lo; j < hi; ++j) {
        cum += row[j];
        if (row[j] > 0 && cum > target) {
          pick = j;
          break;
        }
      }
    }
    if (pick < 0)  // rounding put the target past the last entry: take the last one with mass
      for (int64_t j = V - 1; j >= 0 && pick < 0; --j)
        if (row[j] > 0) pick = j;
    picks[b] = pick;
  }
  return out;
}

Samples sample(Transformer& model, const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& cfg, int32_t eos,
               int32_t pad, const std::vector<int64_t>& max_new) {
  cfg.validate();
  const auto limits = response_limits(max_new, prompts.size(), cfg);
  if (cfg.slots > 0) return sample_continuous(model, prompts, cfg, eos, pad, limits);
  // Inference mode skips autograd bookkeeping on every op: most of a small model's decoding time.
  c10::InferenceMode inference;
  const bool was_training = model->is_training();
  model->eval();
  const auto dev = model->device();
  const int64_t B = static_cast<int64_t>(prompts.size());
  Samples out;
  out.responses.resize(prompts.size());
  out.logprobs.resize(prompts.size());
  out.finished.assign(prompts.size(), false);
  if (B == 0) return out;

  auto padded = left_pad(prompts, pad >= 0 ? pad : 0);
  auto cache = model->make_cache(B, padded.tokens.size(1) + cfg.max_new_tokens);
  auto h = model->hidden({padded.tokens.to(dev), padded.positions.to(dev), padded.key_mask.to(dev), {}}, &cache);
  out.prefill_rows = B;
  auto logits = model->logits(h.select(1, h.size(1) - 1)).to(torch::kCPU, torch::kFloat32);  // [B, V]
  auto next_pos = padded.positions.select(1, padded.positions.size(1) - 1) + 1;              // [B]
  // Sampling runs on the CPU with its own generator, so results do not depend on the device.
  auto gen = at::detail::createCPUGenerator(cfg.seed);
  std::vector<bool> done(prompts.size(), false);
  for (int64_t step = 0; step < cfg.max_new_tokens; ++step) {
    auto [next, chosen_logp] = choose_tokens(logits, cfg, gen);
    auto nx = next.accessor<int64_t, 1>();
    auto lp = chosen_logp.accessor<float, 1>();
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      out.responses[b].push_back(static_cast<int32_t>(nx[b]));
      out.logprobs[b].push_back(lp[b]);
      if (cfg.stop_at_eos && nx[b] == eos) out.finished[b] = true;
      done[b] = out.finished[b] || static_cast<int64_t>(out.responses[b].size()) >= limits[b];
      all_done = all_done && done[b];
    }
    if (all_done || step + 1 == cfg.max_new_tokens) break;
    h = model->hidden({next.unsqueeze(1).to(dev), next_pos.unsqueeze(1).to(dev), {}, {}}, &cache);
    ++out.steps;
    logits = model->logits(h.select(1, 0)).to(torch::kCPU, torch::kFloat32);
    next_pos = next_pos + 1;
  }
  if (was_training) model->train();
  return out;
}

}  // namespace keel
