// `keel reward train` and `keel dpo`: flags bound to learner/preference_learners.h.
#include "launch/commands.h"
#include "launch/options.h"
#include "learner/preference_learners.h"

namespace keel {

namespace {

void add_preference_data_options(po::options_description& d, PreferenceDataOptions& o) {
  // clang-format off
  d.add_options()("train", po::value(&o.train)->required(), "preference buffer (HDF5) to train on")(
      "eval-buffer", po::value(&o.eval_buffer), "held-out preference buffer")(
      "eval-pairs", po::value(&o.eval_pairs)->default_value(o.eval_pairs),
      "without --eval-buffer: hold out the training buffer's last N pairs (-1 = 10%, at most 512; 0 = none)")(
      "batch-size", po::value(&o.batch_pairs)->default_value(o.batch_pairs), "pairs per micro-batch")(
      "shuffle-window", po::value(&o.shuffle_window)->default_value(o.shuffle_window),
      "blocks of 64 pairs shuffled together (memory holds one window)");
  // clang-format on
}

}  // namespace

int cmd_reward_train(const Args& args) {
  RewardTrainRunOptions o;
  int threads = 0;
  auto& rt = o.reward;
  po::options_description d("keel reward train");
  add_train_options(d, o.train);
  add_runtime_options(d, threads, o.device);
  add_preference_data_options(d, o.data);
  // clang-format off
  d.add_options()("init", po::value(&o.init)->required(), "model directory to start from (e.g. the SFT model)")(
      "max-len", po::value(&rt.max_len)->default_value(rt.max_len), "prompt + response tokens per row")(
      "margin-scale", po::value(&rt.margin_scale)->default_value(rt.margin_scale),
      "Bradley-Terry margin = scale * (chosen_reward - rejected_reward) from the buffer's metadata (0 = off)")(
      "center-coef", po::value(&rt.center_coef)->default_value(rt.center_coef), "coef * mean((r_c + r_r)^2) (0 = off)")(
      "normalize", po::bool_switch(&o.normalize), "after training, fit gain and bias so held-out rewards have mean 0, std 1");
  // clang-format on
  const auto parsed = parse_options(args, "reward train", "Trains a reward model (Bradley-Terry) on a preference buffer.", d);
  if (parsed.help) return 0;
  o.device = apply_runtime(threads, o.device).str();
  install_stop_signal_handlers();
  o.run_config = parsed.resolved;
  return run_reward_training(std::move(o));
}

int cmd_dpo(const Args& args) {
  DpoRunOptions o;
  std::string loss_type = "sigmoid", ref_mode = "auto";
  int threads = 0;
  auto& dpo = o.dpo;
  po::options_description d("keel dpo");
  add_train_options(d, o.train);
  add_runtime_options(d, threads, o.device);
  add_preference_data_options(d, o.data);
  // clang-format off
  d.add_options()("init", po::value(&o.init)->required(), "policy to start from (e.g. the SFT model)")(
      "ref", po::value(&o.reference), "reference model (default: --init)")(
      "loss", po::value(&loss_type)->default_value(loss_type), "sigmoid | cdpo | robust | hinge | ipo | simpo")(
      "beta", po::value(&dpo.loss.beta)->default_value(dpo.loss.beta), "DPO beta")(
      "label-smoothing", po::value(&dpo.loss.label_smoothing)->default_value(dpo.loss.label_smoothing),
      "cdpo / robust: assumed share of flipped labels")(
      "simpo-gamma", po::value(&dpo.loss.simpo_gamma)->default_value(dpo.loss.simpo_gamma), "simpo target margin")(
      "sft-weight", po::value(&dpo.sft_weight)->default_value(dpo.sft_weight), "RPO: weight of the chosen response's NLL")(
      "max-len", po::value(&dpo.max_len)->default_value(dpo.max_len), "prompt + response tokens per row")(
      "ref-mode", po::value(&ref_mode)->default_value(ref_mode),
      "auto: cached reference log-probs when the buffers have them, else the reference model | cached | online")(
      "precompute-ref", po::bool_switch(&o.precompute_reference),
      "compute the reference log-probs of every pair of --train (and --eval-buffer), store them in the buffers, exit");
  // clang-format on
  const auto parsed = parse_options(args, "dpo", "Direct preference optimisation from preference buffers.", d);
  if (parsed.help) return 0;
  dpo.loss.type = parse_dpo_loss_type(loss_type);
  o.reference_mode = parse_reference_mode(ref_mode);
  o.device = apply_runtime(threads, o.device).str();
  if (!o.precompute_reference) install_stop_signal_handlers();
  o.run_config = parsed.resolved;
  return run_dpo(std::move(o));
}

}  // namespace keel
