// Reading a PPO run's metrics for the tests.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace keel::test {

struct PpoRun {
  std::vector<double> eval_reward;  // eval/task_reward in order (the first is before training)
  std::vector<double> expected;     // eval/expected_reward in order
  std::vector<double> kl;           // ppo/kl per update
  std::vector<double> version;      // ppo/version per update
  double rejected = 0;              // wire/rejected at the last evaluation
};

inline PpoRun read_ppo_run(const std::string& metrics) {
  PpoRun r;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval/task_reward")) {
      r.eval_reward.push_back(j["eval/task_reward"].get<double>());
      if (j.contains("eval/expected_reward")) r.expected.push_back(j["eval/expected_reward"].get<double>());
      r.rejected = j.value("wire/rejected", 0.0);
    }
    if (j.contains("ppo/version")) {
      r.kl.push_back(j["ppo/kl"].get<double>());
      r.version.push_back(j["ppo/version"].get<double>());
    }
  }
  return r;
}

}  // namespace keel::test
