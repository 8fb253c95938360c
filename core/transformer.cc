#include "core/transformer.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/activation_checkpoint.h"
#include "core/decode_attention.h"
#include "core/decode_ops.h"
#include "core/linear_group.h"
#include "core/fused_cross_entropy.h"
#include "core/error.h"
#include "core/linear.h"
#include "core/gpt2_decode_block.h"
#include "core/llama_decode_block.h"

namespace keel {

// A weight matrix stored [out, in], torch::nn::Linear's layout and name, without a bias; keel's
// kernels multiply by it (linear_nk). Its weight is allocated, not drawn (as the lookup tables' and
// Conv1D's are): init_weights or a load gives every value, where LibTorch's modules would first
// draw values of their own (kaiming, normal) only to have them overwritten.
struct ProjectionImpl : torch::nn::Module {
  ProjectionImpl(int64_t in, int64_t out) { weight = register_parameter("weight", torch::empty({out, in})); }
  torch::Tensor weight;
};

namespace {

namespace F = torch::nn::functional;

// A lookup table [rows, d] under torch::nn::Embedding's name; forward is its lookup.
struct LookupTableImpl : torch::nn::Module {
  LookupTableImpl(int64_t rows, int64_t d) { weight = register_parameter("weight", torch::empty({rows, d})); }
  torch::Tensor forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }
  torch::Tensor weight;
};
TORCH_MODULE(LookupTable);

std::shared_ptr<ProjectionImpl> projection(int64_t in, int64_t out) { return std::make_shared<ProjectionImpl>(in, out); }

// GPT-2's Conv1D: weight stored [in, out], y = x W + b.
struct Conv1DImpl : torch::nn::Module {
  Conv1DImpl(int64_t in, int64_t out) {
    weight = register_parameter("weight", torch::empty({in, out}));
    bias = register_parameter("bias", torch::zeros({out}));
  }
  torch::Tensor forward(const torch::Tensor& x) { return linear_kn(x, weight, bias); }
  torch::Tensor weight, bias;
};
TORCH_MODULE(Conv1D);

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t d, double eps) : eps(eps) { weight = register_parameter("weight", torch::ones({d})); }
  torch::Tensor forward(const torch::Tensor& x) {
    if (decode_ops_apply(x.numel() / x.size(-1), {x, weight})) return rms_norm_rows(x, weight, eps);
    auto xf = x.to(torch::kFloat32);
    auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
    return weight * y.to(x.scalar_type());
  }
  double eps;
  torch::Tensor weight;
};
TORCH_MODULE(RMSNorm);

// Scaled dot-product attention. q [B,H,T,hd], k/v [B,KV,S,hd], bias [B|1,1,T,S] additive.
torch::Tensor attend(const torch::Tensor& q, torch::Tensor k, torch::Tensor v, const torch::Tensor& bias) {
  if (decode_attention_applies(q, k, v, bias)) return decode_attention(q, k, v, bias);
  const int64_t rep = q.size(1) / k.size(1);
  if (rep > 1) {  // grouped-query attention: each kv head serves `rep` consecutive query heads
    k = k.repeat_interleave(rep, 1);
    v = v.repeat_interleave(rep, 1);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = torch::matmul(q, k.transpose(-2, -1)).mul_(scale).add_(bias);
  return torch::matmul(torch::softmax(scores, -1), v);
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

}  // namespace

// Shared per-forward context: attention bias and, for Llama, the rotary tables.
struct AttnContext {
  torch::Tensor bias;      // [B|1, 1, T, S]
  torch::Tensor cos, sin;  // [B, 1, T, hd]
  KVCache* cache = nullptr;
  torch::Tensor rows, write_slots;  // per-row cache: row b's new token goes to slot write_slots[b]
  int64_t span = 0;                 // per-row cache: slots attended to after the write
  bool checkpoint_blocks = false;   // activation checkpointing (core/activation_checkpoint.h)
};

namespace {

// One block's forward, checkpointed when asked for and gradients flow into it.
template <class Block>
torch::Tensor run_block(const std::shared_ptr<Block>& block, const torch::Tensor& x, int64_t layer, AttnContext& ctx) {
  if (!ctx.checkpoint_blocks || !torch::GradMode::is_enabled() || !x.requires_grad() || ctx.cache)
    return block->forward(x, layer, ctx);
  // By value: the recomputation runs during backward, after this forward pass has returned.
  return checkpointed([block, layer, saved = ctx](const torch::Tensor& in) mutable { return block->forward(in, layer, saved); },
                      x);
}

}  // namespace

namespace {

// Appends k/v of the new tokens to the cache and returns all filled slots.
std::pair<torch::Tensor, torch::Tensor> cache_append(AttnContext& ctx, int64_t layer, torch::Tensor k, torch::Tensor v) {
  KVCache* cache = ctx.cache;
  if (!cache) return {k, v};
  if (ctx.write_slots.defined()) {  // one token per row, each at its own slot: k [B, KV, 1, hd]
    cache->k[layer].transpose(1, 2).index_put_({ctx.rows, ctx.write_slots}, k.select(2, 0));
    cache->v[layer].transpose(1, 2).index_put_({ctx.rows, ctx.write_slots}, v.select(2, 0));
    return {cache->k[layer].narrow(2, 0, ctx.span), cache->v[layer].narrow(2, 0, ctx.span)};
  }
  const int64_t past = cache->length, t = k.size(2);
  cache->k[layer].narrow(2, past, t).copy_(k);
  cache->v[layer].narrow(2, past, t).copy_(v);
  return {cache->k[layer].narrow(2, 0, past + t), cache->v[layer].narrow(2, 0, past + t)};
}

// A CPU decoding step's slots for a fused block: per-row caches write each row's own slot, the
// shared layout every row's slot `length`.
DecodeSlots decode_slots(const AttnContext& ctx, int64_t layer) {
  const KVCache& cache = *ctx.cache;
  DecodeSlots s{cache.k[layer], cache.v[layer], {}, 0, ctx.bias, ctx.cos, ctx.sin};
  if (ctx.write_slots.defined()) {
    const auto slots = ctx.write_slots.contiguous();
    s.write.assign(slots.data_ptr<int64_t>(), slots.data_ptr<int64_t>() + slots.numel());
    s.span = ctx.span;
  } else {
    s.write.assign(static_cast<size_t>(cache.k[layer].size(0)), cache.length);
    s.span = cache.length + 1;
  }
  return s;
}

}  // namespace

class TransformerBody : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& positions, AttnContext& ctx) = 0;
  virtual torch::Tensor embedding_weight() = 0;
  virtual void init_weights(const ModelConfig& c) = 0;
};

namespace {

struct Gpt2Block : torch::nn::Module {
  explicit Gpt2Block(const ModelConfig& c) : c(c) {
    ln_1 = register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model}).eps(c.norm_eps)));
    attn = register_module("attn", std::make_shared<torch::nn::Module>());
    c_attn = attn->register_module("c_attn", Conv1D(c.d_model, 3 * c.d_model));
    attn_proj = attn->register_module("c_proj", Conv1D(c.d_model, c.d_model));
    ln_2 = register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model}).eps(c.norm_eps)));
    mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    c_fc = mlp->register_module("c_fc", Conv1D(c.d_model, c.ffn_dim()));
    mlp_proj = mlp->register_module("c_proj", Conv1D(c.ffn_dim(), c.d_model));
  }
  torch::Tensor forward(torch::Tensor x, int64_t layer, AttnContext& ctx) {
    if (ctx.cache && x.size(1) == 1 && x.device().is_cpu()) {  // a decoding step: fused when it can be
      const auto w = weights();
      const auto slots = decode_slots(ctx, layer);
      if (gpt2_decode_block_applies(x, w, slots)) return gpt2_decode_block(x, w, slots);
    }
    const int64_t B = x.size(0), T = x.size(1), H = c.n_head, hd = c.head_dim();
    auto qkv = c_attn(ln_1(x)).view({B, T, 3, H, hd}).permute({2, 0, 3, 1, 4});
    auto [k, v] = cache_append(ctx, layer, qkv[1], qkv[2]);
    auto a = attend(qkv[0], k, v, ctx.bias).transpose(1, 2).reshape({B, T, c.d_model});
    x = x + attn_proj(a);
    return x + mlp_proj(torch::gelu(c_fc(ln_2(x)), "tanh"));
  }
  Gpt2BlockWeights weights() const {
    return {ln_1->weight,    ln_1->bias,   ln_2->weight, ln_2->bias,       c_attn->weight, c_attn->bias, attn_proj->weight,
            attn_proj->bias, c_fc->weight, c_fc->bias,   mlp_proj->weight, mlp_proj->bias, c.norm_eps,   c.n_head};
  }
  const ModelConfig c;
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  std::shared_ptr<torch::nn::Module> attn, mlp;
  Conv1D c_attn{nullptr}, attn_proj{nullptr}, c_fc{nullptr}, mlp_proj{nullptr};
};

class Gpt2Body : public TransformerBody {
 public:
  explicit Gpt2Body(const ModelConfig& c) {
    wte = register_module("wte", LookupTable(c.vocab_size, c.d_model));
    wpe = register_module("wpe", LookupTable(c.max_positions, c.d_model));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) {
      blocks.push_back(std::make_shared<Gpt2Block>(c));
      h->push_back(blocks.back());
    }
    ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model}).eps(c.norm_eps)));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& positions, AttnContext& ctx) override {
    auto x = wte(tokens) + wpe(positions);
    for (size_t i = 0; i < blocks.size(); ++i) x = run_block(blocks[i], x, static_cast<int64_t>(i), ctx);
    return ln_f(x);
  }
  torch::Tensor embedding_weight() override { return wte->weight; }
  void init_weights(const ModelConfig& c) override {
    torch::NoGradGuard ng;
    const double proj_std = 0.02 / std::sqrt(2.0 * c.n_layer);
    for (auto& p : named_parameters()) {
      const auto& n = p.key();
      auto t = p.value();
      if (n.find("ln_") != std::string::npos) {
        n.size() >= 6 && n.compare(n.size() - 6, 6, "weight") == 0 ? t.fill_(1.0) : t.zero_();
      } else if (n.size() >= 4 && n.compare(n.size() - 4, 4, "bias") == 0) {
        t.zero_();
      } else {
        t.normal_(0.0, n.find("c_proj") != std::string::npos ? proj_std : 0.02);
      }
    }
  }
  LookupTable wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  std::vector<std::shared_ptr<Gpt2Block>> blocks;
  torch::nn::LayerNorm ln_f{nullptr};
};

struct LlamaBlock : torch::nn::Module {
  explicit LlamaBlock(const ModelConfig& c) : c(c) {
    const int64_t d = c.d_model, hd = c.head_dim();
    input_layernorm = register_module("input_layernorm", RMSNorm(d, c.norm_eps));
    self_attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
    q_proj = self_attn->register_module("q_proj", projection(d, c.n_head * hd));
    k_proj = self_attn->register_module("k_proj", projection(d, c.kv_heads() * hd));
    v_proj = self_attn->register_module("v_proj", projection(d, c.kv_heads() * hd));
    o_proj = self_attn->register_module("o_proj", projection(c.n_head * hd, d));
    post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(d, c.norm_eps));
    mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    gate_proj = mlp->register_module("gate_proj", projection(d, c.ffn_dim()));
    up_proj = mlp->register_module("up_proj", projection(d, c.ffn_dim()));
    down_proj = mlp->register_module("down_proj", projection(c.ffn_dim(), d));
  }
  torch::Tensor forward(torch::Tensor x, int64_t layer, AttnContext& ctx) {
    if (ctx.cache && x.size(1) == 1 && x.device().is_cpu()) {  // a decoding step: fused when it can be
      const auto w = weights();
      const auto slots = decode_slots(ctx, layer);
      if (llama_decode_block_applies(x, w, slots)) return llama_decode_block(x, w, slots);
    }
    const int64_t B = x.size(0), T = x.size(1), hd = c.head_dim();
    auto hs = input_layernorm(x);
    auto qkv = linear_nk_group(hs, {q_proj->weight, k_proj->weight, v_proj->weight});
    auto q = qkv[0].view({B, T, c.n_head, hd});
    auto k = qkv[1].view({B, T, c.kv_heads(), hd});
    if (decode_ops_apply(B * T, {q, k, ctx.cos, ctx.sin}) && ctx.cos.size(0) == B && ctx.cos.size(2) == T) {
      q = rotary_rows_(q, ctx.cos, ctx.sin).transpose(1, 2);  // the products' own outputs: rotated in place
      k = rotary_rows_(k, ctx.cos, ctx.sin).transpose(1, 2);
    } else {
      q = q.transpose(1, 2), k = k.transpose(1, 2);
      q = q * ctx.cos + rotate_half(q) * ctx.sin;
      k = k * ctx.cos + rotate_half(k) * ctx.sin;
    }
    auto v = qkv[2].view({B, T, c.kv_heads(), hd}).transpose(1, 2);
    auto [ks, vs] = cache_append(ctx, layer, k, v);
    auto a = attend(q, ks, vs, ctx.bias).transpose(1, 2).reshape({B, T, c.n_head * hd});
    x = x + linear_nk(a, o_proj->weight);
    hs = post_attention_layernorm(x);
    auto gate_up = linear_nk_group(hs, {gate_proj->weight, up_proj->weight});
    return x + linear_nk(torch::silu(gate_up[0]) * gate_up[1], down_proj->weight);
  }
  LlamaBlockWeights weights() const {
    return {input_layernorm->weight,
            post_attention_layernorm->weight,
            q_proj->weight,
            k_proj->weight,
            v_proj->weight,
            o_proj->weight,
            gate_proj->weight,
            up_proj->weight,
            down_proj->weight,
            c.norm_eps,
            c.n_head,
            c.kv_heads()};
  }
  const ModelConfig c;
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  std::shared_ptr<torch::nn::Module> self_attn, mlp;
  std::shared_ptr<ProjectionImpl> q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
};

class LlamaBody : public TransformerBody {
 public:
  explicit LlamaBody(const ModelConfig& c) : c(c) {
    embed_tokens = register_module("embed_tokens", LookupTable(c.vocab_size, c.d_model));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) {
      blocks.push_back(std::make_shared<LlamaBlock>(c));
      layers->push_back(blocks.back());
    }
    norm = register_module("norm", RMSNorm(c.d_model, c.norm_eps));
  }
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& positions, AttnContext& ctx) override {
    const int64_t hd = c.head_dim();
    auto inv_freq =
        1.0 / torch::pow(c.rope_theta, torch::arange(0, hd, 2, torch::dtype(torch::kFloat32).device(tokens.device())) / hd);
    auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [B, T, hd/2]
    auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);               // [B, 1, T, hd]
    auto x = embed_tokens(tokens);
    ctx.cos = emb.cos().to(x.scalar_type());
    ctx.sin = emb.sin().to(x.scalar_type());
    for (size_t i = 0; i < blocks.size(); ++i) x = run_block(blocks[i], x, static_cast<int64_t>(i), ctx);
    return norm(x);
  }
  torch::Tensor embedding_weight() override { return embed_tokens->weight; }
  void init_weights(const ModelConfig&) override {
    torch::NoGradGuard ng;
    for (auto& p : named_parameters()) {
      const auto& n = p.key();
      if (n.find("norm") != std::string::npos)
        p.value().fill_(1.0);
      else
        p.value().normal_(0.0, 0.02);
    }
  }
  const ModelConfig c;
  LookupTable embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<std::shared_ptr<LlamaBlock>> blocks;
  RMSNorm norm{nullptr};
};

}  // namespace

TransformerImpl::TransformerImpl(const ModelConfig& config, WeightsInit init) : config_(config) {
  config_.validate();
  if (config_.family == Family::kGpt2) {
    body_ = register_module("transformer", std::make_shared<Gpt2Body>(config_));
  } else {
    body_ = register_module("model", std::make_shared<LlamaBody>(config_));
    if (!config_.tie_embeddings) lm_head_ = register_module("lm_head", projection(config_.d_model, config_.vocab_size));
  }
  if (config_.value_head) value_head_ = register_module("value_head", torch::nn::Linear(config_.d_model, 1));
  if (config_.reward_head)
    score_ = register_module("score", torch::nn::Linear(torch::nn::LinearOptions(config_.d_model, 1).bias(false)));
  if (init == WeightsInit::kSeedZero) init_weights(0);
}

torch::Device TransformerImpl::device() const { return body_->parameters().front().device(); }

void TransformerImpl::init_weights(uint64_t seed) {
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  body_->init_weights(config_);
  if (lm_head_) lm_head_->weight.normal_(0.0, 0.02);
  init_value_head();
  if (score_) score_->weight.normal_(0.0, 1.0 / std::sqrt(config_.d_model + 1.0));
}

void TransformerImpl::init_value_head() {
  if (!value_head_) return;
  torch::NoGradGuard ng;
  value_head_->weight.zero_();
  value_head_->bias.zero_();
}

void TransformerImpl::set_decode_dtype(torch::ScalarType dtype) {
  KEEL_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16, "decoding weights are float32 or bfloat16, not " << dtype);
  if (dtype == torch::kFloat32) {
    decode_weights_.reset();
    return;
  }
  // Every matrix a decoding step multiplies by; lookup tables (positions, an untied embedding)
  // are read a row at a time and stay float32, as do the training heads.
  std::vector<torch::Tensor> nk, kn;
  std::unordered_set<const void*> conv1d;  // GPT-2's [K, N] weights
  for (const auto& m : modules(/*include_self=*/false))
    if (const auto* c = m->as<Conv1DImpl>()) conv1d.insert(c->weight.unsafeGetTensorImpl());
  for (const auto& p : named_parameters()) {
    const auto& name = p.key();
    const bool lookup = name == "transformer.wpe.weight" || (lm_head_ && name == "model.embed_tokens.weight");
    const bool head = name.rfind("value_head.", 0) == 0 || name.rfind("score.", 0) == 0;
    if (p.value().dim() == 2 && !lookup && !head) (conv1d.count(p.value().unsafeGetTensorImpl()) ? kn : nk).push_back(p.value());
  }
  if (!decode_weights_) decode_weights_ = std::make_shared<DecodeWeights>();
  decode_weights_->refresh(nk, kn);
}

KVCache TransformerImpl::make_cache(int64_t batch, int64_t capacity, bool per_row) const {
  KEEL_CHECK(capacity <= config_.max_positions || config_.family == Family::kLlama,
             "cache capacity " << capacity << " exceeds max positions " << config_.max_positions);
  auto w = body_->parameters().front();
  KVCache c;
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    c.k.push_back(torch::zeros({batch, config_.kv_heads(), capacity, config_.head_dim()}, w.options()));
    c.v.push_back(torch::zeros({batch, config_.kv_heads(), capacity, config_.head_dim()}, w.options()));
  }
  c.key_mask = torch::zeros({batch, capacity}, torch::dtype(torch::kBool).device(w.device()));
  if (per_row) c.row_length.assign(static_cast<size_t>(batch), 0);
  return c;
}

void cache_take_prefix(KVCache& cache, int64_t row, const KVCache& prefix, int64_t src_row, int64_t from, int64_t n) {
  KEEL_CHECK(cache.per_row() && !prefix.per_row(), "cache_take_prefix copies a shared-layout prefill into a per-row cache");
  KEEL_CHECK(row >= 0 && row < static_cast<int64_t>(cache.row_length.size()), "cache row " << row << " out of range");
  KEEL_CHECK(n > 0 && n <= cache.capacity() && from >= 0 && from + n <= prefix.length,
             "prefix of " << n << " tokens from slot " << from << " does not fit (prefix " << prefix.length << " slots, cache "
                          << cache.capacity() << ")");
  for (size_t l = 0; l < cache.k.size(); ++l) {
    cache.k[l][row].narrow(1, 0, n).copy_(prefix.k[l][src_row].narrow(1, from, n));
    cache.v[l][row].narrow(1, 0, n).copy_(prefix.v[l][src_row].narrow(1, from, n));
  }
  cache.key_mask[row].fill_(false);
  cache.key_mask[row].narrow(0, 0, n).fill_(true);
  cache.row_length[static_cast<size_t>(row)] = n;
  cache.length = *std::max_element(cache.row_length.begin(), cache.row_length.end());
}

void cache_keep_rows(KVCache& cache, const std::vector<int64_t>& rows) {
  KEEL_CHECK(cache.per_row() && !rows.empty(), "cache_keep_rows keeps some rows of a per-row cache");
  auto idx = torch::tensor(rows, torch::kLong).to(cache.key_mask.device());
  for (size_t l = 0; l < cache.k.size(); ++l) {
    cache.k[l] = cache.k[l].index_select(0, idx);
    cache.v[l] = cache.v[l].index_select(0, idx);
  }
  cache.key_mask = cache.key_mask.index_select(0, idx);
  std::vector<int64_t> kept;
  for (int64_t r : rows) kept.push_back(cache.row_length.at(static_cast<size_t>(r)));
  cache.row_length = kept;
  cache.length = *std::max_element(kept.begin(), kept.end());
}

// One decoding step on a per-row cache: row b writes slot row_length[b] and attends to its own
// filled slots; the span is the longest row's, shorter rows mask the rest.
torch::Tensor TransformerImpl::per_row_step(const ForwardInputs& in, KVCache& cache) {
  const int64_t B = in.tokens.size(0);
  const auto dev = in.tokens.device();
  KEEL_CHECK(in.tokens.size(1) == 1 && in.positions.defined() && !in.key_mask.defined(),
             "a per-row KV cache takes one token per row with its position ids and no key mask");
  const int64_t S = *std::max_element(cache.row_length.begin(), cache.row_length.end()) + 1;
  KEEL_CHECK(S <= cache.capacity(), "KV cache overflow: a row needs slot " << S - 1 << " of capacity " << cache.capacity());
  if (config_.family == Family::kGpt2)
    KEEL_CHECK(in.positions.max().item<int64_t>() < config_.max_positions,
               "position " << in.positions.max().item<int64_t>() << " beyond n_positions " << config_.max_positions);
  AttnContext ctx;
  ctx.cache = &cache;
  ctx.rows = torch::arange(B, torch::dtype(torch::kLong).device(dev));
  ctx.write_slots = torch::tensor(cache.row_length, torch::kLong).to(dev);
  ctx.span = S;
  cache.key_mask.index_put_({ctx.rows, ctx.write_slots}, true);
  const auto wdtype = body_->embedding_weight().scalar_type();
  const double neg = (wdtype == torch::kHalf) ? -1e4 : -1e9;
  ctx.bias = torch::zeros({B, 1, 1, S}, torch::dtype(wdtype).device(dev))
                 .masked_fill_(cache.key_mask.narrow(1, 0, S).logical_not().view({B, 1, 1, S}), neg);
  auto h = body_->forward(in.tokens, in.positions, ctx);
  for (auto& n : cache.row_length) ++n;
  cache.length = S;
  return h;
}

torch::Tensor TransformerImpl::hidden(const ForwardInputs& in, KVCache* cache) {
  DecodeWeightsScope decode_weights(decode_weights_.get());
  KEEL_CHECK(in.tokens.defined() && in.tokens.dim() == 2, "tokens must be [B, T]");
  const int64_t B = in.tokens.size(0), T = in.tokens.size(1);
  const int64_t past = cache ? cache->length : 0;
  const auto dev = in.tokens.device();
  KEEL_CHECK(!cache || cache->key_mask.size(0) == B, "KV cache batch " << cache->key_mask.size(0) << " != " << B);
  KEEL_CHECK(!(cache && in.segments.defined()), "packed segments cannot be combined with a KV cache");
  if (cache && cache->per_row()) return per_row_step(in, *cache);
  KEEL_CHECK(!cache || past + T <= cache->capacity(),
             "KV cache overflow: " << past << " + " << T << " > capacity " << cache->capacity());

  auto positions = in.positions.defined()
                       ? in.positions
                       : torch::arange(past, past + T, torch::dtype(torch::kLong).device(dev)).unsqueeze(0).expand({B, T});
  if (config_.family == Family::kGpt2 && (!cache || in.positions.defined())) {
    KEEL_CHECK(positions.max().item<int64_t>() < config_.max_positions,
               "position " << positions.max().item<int64_t>() << " beyond n_positions " << config_.max_positions);
  }

  const int64_t S = past + T;
  auto wdtype = body_->embedding_weight().scalar_type();
  const double neg = (wdtype == torch::kHalf) ? -1e4 : -1e9;  // finite: a fully padded row stays NaN-free
  AttnContext ctx;
  ctx.cache = cache;
  ctx.checkpoint_blocks = activation_checkpointing_;
  if (cache && T == 1 && !in.key_mask.defined()) {
    // One decoding step: every filled slot is in the past; only padding is masked.
    cache->key_mask.select(1, past).fill_(true);
    ctx.bias = torch::zeros({B, 1, 1, S}, torch::dtype(wdtype).device(dev))
                   .masked_fill_(cache->key_mask.narrow(1, 0, S).logical_not().view({B, 1, 1, S}), neg);
    auto h = body_->forward(in.tokens, positions, ctx);
    cache->length += T;
    return h;
  }
  // allowed[b, t, s]: query t may attend to key slot s.
  auto qslot = torch::arange(past, S, torch::dtype(torch::kLong).device(dev)).unsqueeze(1);
  auto kslot = torch::arange(0, S, torch::dtype(torch::kLong).device(dev)).unsqueeze(0);
  auto allowed = (kslot <= qslot).unsqueeze(0);  // [1, T, S]
  torch::Tensor key_mask;
  if (cache) {
    auto m = in.key_mask.defined() ? in.key_mask.to(torch::kBool) : torch::ones({B, T}, torch::dtype(torch::kBool).device(dev));
    cache->key_mask.narrow(1, past, T).copy_(m);
    key_mask = cache->key_mask.narrow(1, 0, S);
  } else if (in.key_mask.defined()) {
    key_mask = in.key_mask.to(torch::kBool);
  }
  if (key_mask.defined()) allowed = allowed & key_mask.unsqueeze(1);
  if (in.segments.defined()) allowed = allowed & (in.segments.unsqueeze(2) == in.segments.unsqueeze(1));
  ctx.bias =
      torch::zeros(allowed.sizes(), torch::dtype(wdtype).device(dev)).masked_fill_(allowed.logical_not(), neg).unsqueeze(1);
  auto h = body_->forward(in.tokens, positions, ctx);
  if (cache) cache->length += T;
  return h;
}

torch::Tensor TransformerImpl::logits(const torch::Tensor& hidden) {
  DecodeWeightsScope decode_weights(decode_weights_.get());
  return linear_nk(hidden, lm_head_ ? lm_head_->weight : body_->embedding_weight());
}

torch::Tensor TransformerImpl::summed_cross_entropy_of(const torch::Tensor& hidden, const torch::Tensor& targets,
                                                       int64_t block_rows) {
  if (!activation_checkpointing_ || !torch::GradMode::is_enabled() || !hidden.requires_grad())
    return summed_cross_entropy(logits(hidden), targets);
  const int64_t rows = block_rows > 0 ? block_rows : std::max<int64_t>(1, (int64_t{1} << 24) / config_.vocab_size);
  return fused_linear_cross_entropy(hidden.reshape({-1, hidden.size(-1)}),
                                    lm_head_ ? lm_head_->weight : body_->embedding_weight(), targets.reshape({-1}), rows);
}

torch::Tensor TransformerImpl::value(const torch::Tensor& hidden) {
  KEEL_CHECK(value_head_, "this model has no value head (config keel.value_head)");
  return value_head_(hidden).squeeze(-1);
}

torch::Tensor TransformerImpl::reward(const torch::Tensor& hidden) {
  KEEL_CHECK(score_, "this model has no reward head (config keel.reward_head)");
  auto r = score_(hidden).squeeze(-1);
  if (config_.reward_gain != 1.0 || config_.reward_bias != 0.0) r = r * config_.reward_gain + config_.reward_bias;
  return r;
}

void TransformerImpl::set_reward_norm(double gain, double bias) {
  config_.reward_gain = gain;
  config_.reward_bias = bias;
}

torch::Tensor summed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets) {
  const int64_t V = logits.size(-1);
  return F::cross_entropy(logits.reshape({-1, V}).to(torch::kFloat32), targets.reshape({-1}),
                          F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

torch::Tensor token_logprobs(const torch::Tensor& logits, const torch::Tensor& targets, double temperature) {
  auto z = logits.to(torch::kFloat32);
  if (temperature != 1.0) z = z / temperature;
  return torch::log_softmax(z, -1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1);
}

}  // namespace keel
