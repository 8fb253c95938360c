#include "core/model_loader.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/padded_batch.h"
#include "reward/scorer.h"

namespace keel {

namespace {

class ModelScorer : public Scorer {
 public:
  ModelScorer(const std::string& dir, const std::string& device) : model_(load_model_as(dir, {})), device_(device) {
    KEEL_CHECK(model_->config().reward_head,
               dir << " has no reward head (config keel.reward_head); train one with keel reward train");
    model_->to(device_);
    model_->eval();
  }
  std::vector<ScoreResult> score(const std::vector<wire::ScoreItem>& items) override {
    torch::NoGradGuard ng;
    std::vector<std::vector<int32_t>> seqs;
    for (const auto& it : items) {
      KEEL_CHECK(!it.prompt_tokens.empty() || !it.response_tokens.empty(), "a score item has no tokens");
      std::vector<int32_t> s(it.prompt_tokens);
      s.insert(s.end(), it.response_tokens.begin(), it.response_tokens.end());
      for (int32_t t : s) KEEL_CHECK(t < model_->config().vocab_size, "token " << t << " outside the reward model's vocabulary");
      seqs.push_back(std::move(s));
    }
    // Left padding puts every sequence's last token, where the reward is read, in the last column.
    auto b = left_pad(seqs, std::max<int32_t>(0, static_cast<int32_t>(model_->config().pad_id)));
    auto h = model_->hidden({b.tokens.to(device_), b.positions.to(device_), b.key_mask.to(device_), {}});
    auto r = model_->reward(h).to(torch::kCPU).select(1, -1);
    std::vector<ScoreResult> out;
    for (int64_t i = 0; i < r.size(0); ++i) out.push_back({r[i].item<float>(), {{"model", r[i].item<float>()}}});
    return out;
  }

 private:
  Transformer model_;
  torch::Device device_;
};

}  // namespace

std::unique_ptr<Scorer> make_model_scorer(const std::string& model_dir, const std::string& device) {
  return std::make_unique<ModelScorer>(model_dir, device);
}

}  // namespace keel
