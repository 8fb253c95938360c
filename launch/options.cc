#include "launch/options.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/error.h"
#include "core/threads.h"
#include "learner/data_parallel.h"
#include "wire/curve.h"

namespace keel {

namespace {

std::string value_text(const boost::any& v) {
  std::ostringstream os;
  if (auto* p = boost::any_cast<std::string>(&v))
    os << *p;
  else if (auto* p = boost::any_cast<int64_t>(&v))
    os << *p;
  else if (auto* p = boost::any_cast<uint64_t>(&v))
    os << *p;
  else if (auto* p = boost::any_cast<int>(&v))
    os << *p;
  else if (auto* p = boost::any_cast<double>(&v))
    os << *p;
  else if (auto* p = boost::any_cast<bool>(&v))
    os << (*p ? "true" : "false");
  else if (auto* p = boost::any_cast<std::vector<std::string>>(&v)) {
    for (size_t i = 0; i < p->size(); ++i) os << (i ? " " : "") << (*p)[i];
  } else
    os << "?";
  return os.str();
}

}  // namespace

namespace {

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "[" : ", [") + n + "]";
  return out;
}

// Stores a config file's options; with `sections`, the options under [name] headers go to
// (*sections)[name] as command-line words instead.
void read_config_file(const std::string& path, const std::string& command, po::options_description& desc,
                      const std::vector<std::string>& names, ConfigSections* sections, po::variables_map& vm) {
  std::ifstream f(path);
  KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot open config file " << path);
  const auto parsed = po::parse_config_file(f, desc, /*allow_unregistered=*/sections != nullptr);
  for (const auto& opt : parsed.options) {
    if (!opt.unregistered) continue;
    const auto dot = opt.string_key.find('.');
    KEEL_CHECK(dot != std::string::npos,
               "config file " << path << ": unknown option '" << opt.string_key << "' (see keel " << command << " --help)");
    const std::string section = opt.string_key.substr(0, dot);
    KEEL_CHECK(std::find(names.begin(), names.end(), section) != names.end(),
               "config file " << path << ": [" << section << "] is not a section of keel " << command << "; its sections are "
                              << joined(names));
    auto& words = (*sections)[section];  // "--key", "value": one pair per line of the section
    words.push_back("--" + opt.string_key.substr(dot + 1));
    words.push_back(opt.value.empty() ? "" : opt.value.front());
  }
  po::store(parsed, vm);
}

std::string resolved_text(const std::string& command, const po::options_description& desc, const po::variables_map& vm) {
  std::ostringstream os;
  os << "# keel " << command << "\n";
  for (const auto& opt : desc.options()) {
    const auto& name = opt->long_name();
    if (vm.count(name)) os << name << " = " << value_text(vm[name].value()) << "\n";
  }
  return os.str();
}

}  // namespace

ParsedOptions parse_options(const std::vector<std::string>& args, const std::string& command, const std::string& summary,
                            po::options_description& desc, const std::vector<std::string>& section_names,
                            ConfigSections* sections, const po::positional_options_description* positional) {
  std::string config_file;
  bool check = false;
  po::options_description common("Common options");
  // clang-format off
  common.add_options()("help,h", "show this help")(
      "config", po::value(&config_file), "INI file of option = value lines (command-line options win)")(
      "check-config", po::bool_switch(&check),
      "check the options (and the --config file), print the resolved configuration and exit without running");
  // clang-format on
  po::options_description all;
  all.add(desc).add(common);
  po::variables_map vm;
  ParsedOptions out;
  try {
    po::command_line_parser parser(args);
    parser.options(all);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: keel " << command << " [options]\n\n" << summary << "\n\n" << all << "\n";
      out.help = true;
      return out;
    }
    if (vm.count("config")) read_config_file(vm["config"].as<std::string>(), command, desc, section_names, sections, vm);
    po::notify(vm);
  } catch (const po::error& e) {
    KEEL_FAIL("keel " << command << ": " << e.what() << " (see keel " << command << " --help)");
  }
  out.resolved = resolved_text(command, desc, vm);
  if (sections)
    for (const auto& [name, words] : *sections) {
      out.resolved += "[" + name + "]\n";
      for (size_t i = 0; i + 1 < words.size(); i += 2) out.resolved += words[i].substr(2) + " = " + words[i + 1] + "\n";
    }
  if (check) {
    std::cout << out.resolved;
    out.help = out.check = true;
    return out;
  }
  std::cerr << out.resolved;
  return out;
}

void add_model_options(po::options_description& d, ModelConfig& c, std::string& family) {
  // clang-format off
  d.add_options()("family", po::value(&family)->default_value(family), "model family: gpt2 | llama")(
      "d-model", po::value(&c.d_model)->default_value(c.d_model), "model width")(
      "n-layer", po::value(&c.n_layer)->default_value(c.n_layer), "transformer blocks")(
      "n-head", po::value(&c.n_head)->default_value(c.n_head), "attention heads")(
      "n-kv-head", po::value(&c.n_kv_head)->default_value(c.n_kv_head), "key/value heads (llama GQA; 0 = n-head)")(
      "d-ff", po::value(&c.d_ff)->default_value(c.d_ff), "MLP width (0 = family default)")(
      "max-positions", po::value(&c.max_positions)->default_value(c.max_positions), "longest sequence");
  // clang-format on
}

void add_train_options(po::options_description& d, TrainOptions& o) {
  // clang-format off
  d.add_options()("out", po::value(&o.out_dir)->default_value(o.out_dir), "run directory (checkpoints, metrics, model/)")(
      "steps", po::value(&o.steps)->default_value(o.steps), "optimizer steps")(
      "grad-accum", po::value(&o.grad_accum)->default_value(o.grad_accum), "micro-batches per step")(
      "lr", po::value(&o.lr)->default_value(o.lr), "peak learning rate")(
      "min-lr-ratio", po::value(&o.min_lr_ratio)->default_value(o.min_lr_ratio), "final lr / peak lr (cosine)")(
      "warmup-steps", po::value(&o.warmup_steps)->default_value(o.warmup_steps), "linear warmup steps")(
      "weight-decay", po::value(&o.weight_decay)->default_value(o.weight_decay), "AdamW weight decay (matrices)")(
      "beta1", po::value(&o.beta1)->default_value(o.beta1), "AdamW beta1")(
      "beta2", po::value(&o.beta2)->default_value(o.beta2), "AdamW beta2")(
      "grad-clip", po::value(&o.grad_clip)->default_value(o.grad_clip), "max gradient norm (0 = off)")(
      "eval-every", po::value(&o.eval_every)->default_value(o.eval_every), "steps between evaluations")(
      "eval-at-start", po::value(&o.eval_at_start)->default_value(o.eval_at_start), "also evaluate before the first step")(
      "checkpoint-every", po::value(&o.checkpoint_every)->default_value(o.checkpoint_every), "steps between checkpoints")(
      "keep-checkpoints", po::value(&o.keep_checkpoints)->default_value(o.keep_checkpoints), "checkpoints kept")(
      "background-checkpoints", po::value(&o.background_checkpoints)->default_value(o.background_checkpoints),
      "write checkpoints on a thread of their own while training goes on (a copy of the weights and optimizer state "
      "held meanwhile); RL learners publish each version once its checkpoint is on disk")(
      "log-every", po::value(&o.log_every)->default_value(o.log_every), "steps between metric lines")(
      "seed", po::value(&o.seed)->default_value(o.seed), "seed of initialisation and data order")(
      "activation-checkpointing", po::value(&o.activation_checkpointing)->default_value(o.activation_checkpointing),
      "keep only each block's input in the forward pass and recompute the block in backward: less memory, about a "
      "quarter more time")(
      "resume", po::value(&o.resume)->default_value(o.resume), "resume from the run directory's latest checkpoint")(
      "collective-timeout", po::value(&o.collective_timeout_s)->default_value(o.collective_timeout_s),
      "data-parallel runs (WORLD_SIZE > 1): seconds before a collective waiting on a rank fails");
  // clang-format on
}

void add_runtime_options(po::options_description& d, int& threads, std::string& device) {
  // clang-format off
  d.add_options()("threads", po::value(&threads)->default_value(threads), "LibTorch threads (0 = all cores)")(
      "device", po::value(&device)->default_value(device), "cpu | cuda | cuda:N");
  // clang-format on
}

void add_sampling_options(po::options_description& d, SamplingConfig& s) {
  // clang-format off
  d.add_options()("temperature", po::value(&s.temperature)->default_value(s.temperature), "sampling temperature (0 = greedy)")(
      "top-k", po::value(&s.top_k)->default_value(s.top_k), "keep the k likeliest tokens (0 = off)")(
      "top-p", po::value(&s.top_p)->default_value(s.top_p), "nucleus mass (1 = off)")(
      "max-new-tokens", po::value(&s.max_new_tokens)->default_value(s.max_new_tokens), "response length bound")(
      "stop-at-eos", po::value(&s.stop_at_eos)->default_value(s.stop_at_eos), "end a response at EOS")(
      "decode-slots", po::value(&s.slots)->default_value(s.slots),
      "rows decoded at once (0 = the whole batch until its longest response ends); fewer rows than responses "
      "turns on continuous batching: a row whose response ends takes the next prompt")(
      "seed", po::value(&s.seed)->default_value(s.seed), "sampling seed");
  // clang-format on
}

void add_transport_options(po::options_description& d, TransportOptions& t) {
  // clang-format off
  d.add_options()("curve-key", po::value(&t.key), "this process's CURVE key pair (NAME.secret from keel keys generate); "
                                                   "turns on CURVE for every TCP socket, required to bind beyond loopback")(
      "curve-server-key", po::value(&t.server_key), "public key (NAME.pub) of the servers this process connects to")(
      "curve-allow", po::value(&t.allow), "client public keys admitted by the sockets this process binds: a file of keys "
                                          "or a directory of *.pub");
  // clang-format on
}

std::vector<std::string> TransportOptions::as_args() const {
  std::vector<std::string> a;
  if (!key.empty()) a.insert(a.end(), {"--curve-key", key});
  if (!server_key.empty()) a.insert(a.end(), {"--curve-server-key", server_key});
  if (!allow.empty()) a.insert(a.end(), {"--curve-allow", allow});
  return a;
}

void apply_transport(const TransportOptions& t) {
  wire::TransportSecurity s;
  if (!t.key.empty()) s.own = wire::read_curve_secret(t.key);
  if (!t.server_key.empty()) s.server_public_key = wire::read_curve_public(t.server_key);
  if (!t.allow.empty()) s.allowed = wire::read_curve_allowed(t.allow);
  wire::set_transport_security(s);
  if (s.curve())
    std::cerr << "transport: CURVE, " << s.allowed.size() << " allowed client key(s)"
              << (s.server_public_key.empty() ? "" : ", server key set") << "\n";
}

torch::Device apply_runtime(int threads, const std::string& device) {
  const int n = set_threads(threads);
  std::cerr << "threads = " << n << "\n";
  torch::Device dev(torch::kCPU);
  try {
    dev = torch::Device(device);
  } catch (const std::exception&) {
    KEEL_FAIL("bad --device '" << device << "' (cpu, cuda or cuda:N)");
  }
  KEEL_CHECK(!dev.is_cuda() || torch::cuda::is_available(), "--device " << device << ": this LibTorch has no CUDA device");
  if (dev.is_cuda() && !dev.has_index()) {
    // Data-parallel ranks on one node each take their own GPU (LOCAL_RANK, or Slurm's SLURM_LOCALID).
    const auto env = distributed_env_from_environment();
    const auto gpus = static_cast<int>(torch::cuda::device_count());
    if (env.enabled()) dev = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(default_cuda_index(env, gpus)));
  }
  if (dev.is_cuda() && dev.has_index()) {
    KEEL_CHECK(dev.index() < static_cast<int>(torch::cuda::device_count()),
               "--device " << device << ": this machine has " << torch::cuda::device_count() << " CUDA device(s)");
    c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->setDevice(dev);
    std::cerr << "computing on " << dev << "\n";
  }
  return dev;
}

}  // namespace keel

namespace keel {}  // namespace keel
