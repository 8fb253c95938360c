#include "learner/run_status.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace keel {

namespace {
const char* const kFile = "/status.json";

void put(nlohmann::json& j, const char* key, double v) {
  if (!std::isnan(v)) j[key] = v;
}
double get(const nlohmann::json& j, const char* key) { return j.contains(key) ? j[key].get<double>() : NAN; }
}  // namespace

void write_run_status(const std::string& out_dir, const RunStatus& s) {
  nlohmann::json j{{"version", s.version}, {"step", s.step}, {"steps", s.steps}};
  put(j, "score", s.score);
  put(j, "kl", s.kl);
  put(j, "rollouts_per_s", s.rollouts_per_s);
  put(j, "staleness", s.staleness);
  put(j, "trained_share", s.trained_share);
  put(j, "held_out_reward", s.held_out_reward);
  const std::string path = out_dir + kFile, tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    f << j.dump() << "\n";
    if (!f) return;  // a status file is a courtesy: a full disk must not stop training
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
}

std::optional<RunStatus> read_run_status(const std::string& out_dir) {
  std::ifstream f(out_dir + kFile);
  if (!f) return std::nullopt;
  try {
    nlohmann::json j;
    f >> j;
    RunStatus s;
    s.version = j.at("version").get<uint64_t>();
    s.step = j.at("step").get<int64_t>();
    s.steps = j.at("steps").get<int64_t>();
    s.score = get(j, "score");
    s.kl = get(j, "kl");
    s.rollouts_per_s = get(j, "rollouts_per_s");
    s.staleness = get(j, "staleness");
    s.trained_share = get(j, "trained_share");
    s.held_out_reward = get(j, "held_out_reward");
    return s;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string format_run_status(const RunStatus& s) {
  std::string out = "version " + std::to_string(s.version);
  char buf[64];
  auto add = [&](const char* fmt, double v) {
    if (std::isnan(v)) return;
    std::snprintf(buf, sizeof buf, fmt, v);
    out += buf;
  };
  add(" | score %.3f", s.score);
  add(" | KL %.3f", s.kl);
  add(" | %.1f rollouts/s", s.rollouts_per_s);
  add(" | staleness %.2f", s.staleness);
  add(" | trained %.0f%%", 100 * s.trained_share);
  add(" | held-out reward %.3f", s.held_out_reward);
  return out;
}

}  // namespace keel
