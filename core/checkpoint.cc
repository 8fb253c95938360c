#include "core/checkpoint.h"

#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/safetensors_file.h"

namespace keel {

std::string model_weights_path(const std::string& dir) { return dir + "/" + kModelWeightsFile; }
std::string model_config_path(const std::string& dir) { return dir + "/" + kModelConfigFile; }

namespace fs = std::filesystem;

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
// Tensors some Hugging Face exports carry that are buffers, not weights.
bool ignorable(const std::string& name, const ModelConfig& c) {
  if (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias")) return c.family == Family::kGpt2;
  if (ends_with(name, "rotary_emb.inv_freq")) return true;
  return name == "lm_head.weight" && c.tie_embeddings;
}
bool is_head(const std::string& name) { return name.rfind("value_head.", 0) == 0 || name.rfind("score.", 0) == 0; }
}  // namespace

TensorMap model_tensors(Transformer& model) {
  TensorMap out;
  for (const auto& p : model->named_parameters()) out[p.key()] = p.value().detach();
  return out;
}

namespace {

// The files a tokenizer path stands for (load_tokenizer, core/tokenizer.h), each with its name in
// a model directory: a file itself, or a directory's tokenizer.model, tokenizer.json, or
// vocab.json + merges.txt; and the tokenizer_config.json beside them, if any.
std::vector<std::pair<fs::path, std::string>> tokenizer_files(const std::string& path) {
  std::vector<std::pair<fs::path, std::string>> out;
  fs::path dir = fs::path(path).parent_path();
  if (fs::is_directory(path)) {
    dir = path;
    for (const char* n : {"tokenizer.model", "tokenizer.json"})
      if (out.empty() && fs::exists(dir / n)) out.push_back({dir / n, n});
    if (out.empty())
      for (const char* n : {"vocab.json", "merges.txt"}) out.push_back({dir / n, n});
  } else {
    out.push_back({path, ends_with(path, ".json") ? "tokenizer.json" : "tokenizer.model"});
  }
  // The chat format (and special tokens) the tokenizer is used with travel with it, so that a
  // model fine-tuned from a chat model is still rendered in that model's format.
  if (fs::exists(dir / "tokenizer_config.json")) out.push_back({dir / "tokenizer_config.json", "tokenizer_config.json"});
  return out;
}

void copy_tokenizer(const std::string& tokenizer, const std::string& dir) {
  for (const auto& [from, name] : tokenizer_files(tokenizer))
    if (fs::absolute(from) != fs::absolute(dir + "/" + name)) write_file_atomic(dir + "/" + name, read_file(from.string()));
}

}  // namespace

void save_model(const std::string& dir, Transformer& model, const std::string& tokenizer_file) {
  save_model(dir, model->config(), model_tensors(model), tokenizer_file);
}

void save_model(const std::string& dir, const ModelConfig& config, const TensorMap& tensors, const std::string& tokenizer_file) {
  fs::create_directories(dir);
  save_safetensors(model_weights_path(dir), tensors, {{"format", "pt"}});
  write_file_atomic(model_config_path(dir), config.to_hf_json());
  if (!tokenizer_file.empty()) copy_tokenizer(tokenizer_file, dir);
}

ModelConfig load_model_config(const std::string& dir) {
  const std::string path = model_config_path(dir);
  KEEL_CHECK_KIND(ErrorKind::kIo, fs::exists(path), "model directory " << dir << " has no config.json");
  return ModelConfig::from_hf_json(read_file(path), path);
}

namespace {

// load_weights's checks and copy for any source of named tensors: `names` are the source's,
// shape(name) a tensor's shape, and fill(name, parameter) copies it into the parameter.
template <class Shape, class Fill>
void fill_parameters(Transformer& model, const std::vector<std::string>& names, const std::string& origin, bool allow_new_heads,
                     Shape shape, Fill fill) {
  torch::NoGradGuard ng;
  auto params = model->named_parameters();
  for (const auto& name : names) {
    if (params.contains(name) || ignorable(name, model->config())) continue;
    if (is_head(name)) continue;  // a head this config does not use (e.g. SFT policy from a value model)
    KEEL_FAIL(origin << ": unexpected tensor '" << name << "' for a " << family_name(model->config().family)
                     << " model with this config");
  }
  const std::set<std::string> have(names.begin(), names.end());
  for (auto& p : params) {
    if (!have.count(p.key())) {
      KEEL_CHECK(allow_new_heads && is_head(p.key()), origin << ": missing tensor '" << p.key() << "'");
      continue;
    }
    const std::vector<int64_t> s = shape(p.key());
    KEEL_CHECK(p.value().sizes() == c10::IntArrayRef(s),
               origin << ": tensor '" << p.key() << "' has shape " << c10::IntArrayRef(s) << " but the config needs "
                      << p.value().sizes() << " (config.json does not match the weights)");
    fill(p.key(), p.value());
  }
}

}  // namespace

void load_weights(Transformer& model, const TensorMap& tensors, const std::string& origin, bool allow_new_heads) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) names.push_back(name);
  fill_parameters(
      model, names, origin, allow_new_heads, [&](const std::string& n) { return tensors.at(n).sizes().vec(); },
      [&](const std::string& n, torch::Tensor& p) { p.copy_(tensors.at(n).to(p.scalar_type())); });
}

void load_weights(Transformer& model, const SafetensorsFile& file, bool allow_new_heads) {
  std::vector<std::string> names;
  for (const auto& [name, e] : file.header().entries) names.push_back(name);
  fill_parameters(
      model, names, file.path(), allow_new_heads, [&](const std::string& n) { return file.entry(n).shape; },
      [&](const std::string& n, torch::Tensor& p) {
        if (file.entry(n).dtype == p.scalar_type() && p.is_cpu() && p.is_contiguous())
          // No copy of the file between it and the model. Unlike copy_, this leaves autograd's
          // version counter alone: no graph holds a parameter while it loads.
          file.read_into(n, p.data_ptr());
        else
          p.copy_(file.read(n).to(p.scalar_type()));
      });
}

Transformer load_model_weights(const ModelConfig& config, const SafetensorsFile& file, bool allow_new_heads, uint64_t init_seed) {
  Transformer model(config, WeightsInit::kForLoad);
  // Heads the file lacks start where a new model's do: a value head at zero, which needs no draws;
  // a reward head where init_weights(init_seed)'s draws put it.
  bool value_head_missing = false, other_missing = false;
  for (const auto& p : model->named_parameters()) {
    if (file.contains(p.key())) continue;
    (p.key().rfind("value_head.", 0) == 0 ? value_head_missing : other_missing) = true;
  }
  if (other_missing) model->init_weights(init_seed);
  load_weights(model, file, allow_new_heads);
  if (value_head_missing) model->init_value_head();
  return model;
}

bool bind_weights(Transformer& model, const TensorMap& tensors) {
  auto params = model->named_parameters();
  for (const auto& [name, t] : tensors)
    if (!params.contains(name) && !ignorable(name, model->config()) && !is_head(name)) return false;
  for (auto& p : params) {
    auto it = tensors.find(p.key());
    if (it == tensors.end()) {
      if (!is_head(p.key())) return false;
      continue;
    }
    const auto& t = it->second;
    if (t.sizes() != p.value().sizes() || t.scalar_type() != p.value().scalar_type() || t.device() != p.value().device())
      return false;
  }
  torch::NoGradGuard ng;
  for (auto& p : params) {
    auto it = tensors.find(p.key());
    if (it != tensors.end()) p.value().set_data(it->second);
  }
  return true;
}

Transformer load_model(const std::string& dir, bool allow_new_heads) {
  const auto config = load_model_config(dir);
  return load_model_weights(config, SafetensorsFile(model_weights_path(dir)), allow_new_heads);
}

std::string model_tokenizer_file(const std::string& dir) {
  for (const char* n : {"tokenizer.model", "tokenizer.json"})
    if (fs::exists(dir + "/" + n)) return dir + "/" + n;
  if (fs::exists(dir + "/vocab.json") && fs::exists(dir + "/merges.txt")) return dir;
  return "";
}

}  // namespace keel
