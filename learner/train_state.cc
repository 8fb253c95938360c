#include "learner/train_state.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/safetensors_file.h"

namespace keel {

namespace fs = std::filesystem;

namespace {

// LibTorch 1.x keys optimizer state by a string of the TensorImpl pointer, 2.x by the pointer.
template <typename Map>
typename Map::key_type state_key(const Map&, const torch::Tensor& p) {
  using K = typename Map::key_type;
  if constexpr (std::is_same_v<K, std::string>) {
    std::ostringstream key;  // what 1.x's c10::guts::to_string wrote; 2.x dropped that function
    key << p.unsafeGetTensorImpl();
    return key.str();
  } else {
    return static_cast<K>(p.unsafeGetTensorImpl());
  }
}

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace

CheckpointSnapshot snapshot_training_state(Transformer& model, torch::optim::AdamW& opt, const TrainerState& state,
                                           const std::string& run_config, const std::string& tokenizer_file,
                                           const std::string& objective_state, const std::vector<Companion>& companions,
                                           bool copy, CheckpointSnapshot reuse) {
  torch::NoGradGuard ng;
  // `t` itself, or its copy: into old[key] when that fits, else new CPU memory.
  auto keep = [copy](const torch::Tensor& t, TensorMap* old, const std::string& key) {
    if (!copy) return t;
    if (old) {
      auto it = old->find(key);
      if (it != old->end() && it->second.sizes() == t.sizes() && it->second.scalar_type() == t.scalar_type() &&
          it->second.device().is_cpu())
        return it->second.copy_(t);
    }
    return t.to(t.options().device(torch::kCPU), /*non_blocking=*/false, /*copy=*/true);
  };
  CheckpointSnapshot s{state, {}, {}, run_config, tokenizer_file, objective_state};
  auto& st = opt.state();
  auto add = [&](Transformer& m, const std::string& name) {
    CheckpointSnapshot::Model out{name, m->config(), {}};
    TensorMap* old = nullptr;
    for (auto& r : reuse.models)
      if (r.name == name) old = &r.tensors;
    for (const auto& [k, t] : model_tensors(m)) out.tensors[k] = keep(t, old, k);
    s.models.push_back(std::move(out));
    const std::string prefix = name.empty() ? "" : name + "/";
    for (const auto& p : m->named_parameters()) {
      auto it = st.find(state_key(st, p.value()));
      if (it == st.end()) continue;
      auto& ps = static_cast<torch::optim::AdamWParamState&>(*it->second);
      const std::pair<const char*, torch::Tensor> moments[] = {{".exp_avg", ps.exp_avg()}, {".exp_avg_sq", ps.exp_avg_sq()}};
      for (const auto& [suffix, t] : moments) {
        const std::string key = prefix + p.key() + suffix;
        s.optimizer[key] = keep(t, &reuse.optimizer, key);
      }
      s.optimizer[prefix + p.key() + ".step"] = torch::tensor(static_cast<int64_t>(ps.step()));
    }
  };
  add(model, "");
  for (auto c : companions) add(c.model, c.name);
  s.optimizer["rng.cpu"] = at::detail::getDefaultCPUGenerator().get_state();
  return s;
}

std::string checkpoint_dir(const std::string& run_dir, int64_t step) { return run_dir + "/checkpoints/" + step_dir_name(step); }

std::string write_training_checkpoint(const std::string& run_dir, const CheckpointSnapshot& s, int64_t keep) {
  const std::string root = run_dir + "/checkpoints";
  const std::string name = step_dir_name(s.state.step);
  const std::string tmp = root + "/." + name + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  for (const auto& m : s.models)
    save_model(m.name.empty() ? tmp : tmp + "/" + m.name, m.config, m.tensors, m.name.empty() ? s.tokenizer_file : "");
  save_safetensors(tmp + "/optimizer.safetensors", s.optimizer);
  nlohmann::json j = {{"step", s.state.step}, {"tokens_seen", s.state.tokens_seen}, {"format_version", 1}};
  write_file_atomic(tmp + "/trainer_state.json", j.dump(2) + "\n");
  write_file_atomic(tmp + "/run_config.ini", s.run_config);
  if (!s.objective_state.empty()) write_file_atomic(tmp + "/objective_state.json", s.objective_state);

  const std::string final_dir = root + "/" + name;
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  write_file_atomic(root + "/latest", name + "\n");

  // Keep the newest `keep` checkpoints.
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) all.push_back(e.path().string());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; keep > 0 && i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove_all(all[i]);
  return final_dir;
}

std::string save_training_checkpoint(const std::string& run_dir, Transformer& model, torch::optim::AdamW& opt,
                                     const TrainerState& state, const std::string& run_config, const std::string& tokenizer_file,
                                     int64_t keep, const std::string& objective_state, const std::vector<Companion>& companions) {
  return write_training_checkpoint(
      run_dir, snapshot_training_state(model, opt, state, run_config, tokenizer_file, objective_state, companions, false), keep);
}

std::string latest_checkpoint(const std::string& run_dir) {
  const std::string latest = run_dir + "/checkpoints/latest";
  if (!fs::exists(latest)) return "";
  std::string name = read_file(latest);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  const std::string dir = run_dir + "/checkpoints/" + name;
  KEEL_CHECK(fs::exists(dir + "/trainer_state.json"), latest << " names " << dir << ", which is incomplete or missing");
  return dir;
}

TrainerState load_training_checkpoint(const std::string& dir, Transformer& model, torch::optim::AdamW& opt,
                                      std::string* objective_state, const std::vector<Companion>& companions) {
  const std::string wpath = model_weights_path(dir);
  load_weights(model, SafetensorsFile(wpath), false);
  const auto moments = load_safetensors(dir + "/optimizer.safetensors");
  auto& st = opt.state();
  auto restore_moments = [&](Transformer& m, const std::string& prefix) {
    for (const auto& p : m->named_parameters()) {
      auto a = moments.find(prefix + p.key() + ".exp_avg");
      if (a == moments.end()) continue;
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      s->step(moments.at(prefix + p.key() + ".step").item<int64_t>());
      // Each read into memory of its own (load_safetensors), moved to the parameter's device.
      s->exp_avg(a->second.to(p.value().device()));
      s->exp_avg_sq(moments.at(prefix + p.key() + ".exp_avg_sq").to(p.value().device()));
      st[state_key(st, p.value())] = std::move(s);
    }
  };
  restore_moments(model, "");
  for (auto c : companions) {
    const std::string cpath = model_weights_path(dir + "/" + c.name);
    KEEL_CHECK(fs::exists(cpath),
               dir << " holds no " << c.name << " model (" << cpath << "); was the run started with a different configuration?");
    load_weights(c.model, SafetensorsFile(cpath), false);
    restore_moments(c.model, c.name + "/");
  }
  if (moments.count("rng.cpu")) {
    auto gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(moments.at("rng.cpu"));
  }
  if (objective_state)
    *objective_state = fs::exists(dir + "/objective_state.json") ? read_file(dir + "/objective_state.json") : "";
  const auto j = nlohmann::json::parse(read_file(dir + "/trainer_state.json"));
  TrainerState ts;
  ts.step = j.at("step").get<int64_t>();
  ts.tokens_seen = j.value("tokens_seen", int64_t{0});
  return ts;
}

}  // namespace keel
