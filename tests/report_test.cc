// keel report: one HTML page that a browser renders with the runs' numbers. A run written here
// (metrics lines with gaps and a NaN, a resolved configuration) is reported; headless Chromium
// loads the page, and what it parsed is compared with the file: one plot per metric, one series
// per run in each, as many points as the metrics file has lines with that metric, and a
// screenshot that is not blank.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/support/test_support.h"

namespace keel {
namespace {

// A run directory with `lines` metric lines: train/loss on every line, eval/reward on every
// fifth, and one NaN loss (not a point).
void write_run(const std::string& dir, int lines, double scale) {
  std::filesystem::create_directories(dir + "/checkpoints/step-00000010");
  std::ofstream m(dir + "/metrics.jsonl");
  for (int i = 1; i <= lines; ++i) {
    nlohmann::json j{{"step", i}, {"time", 1000 + i}};
    j["train/loss"] = i == 7 ? std::nan("") : scale * 5.0 / i;
    if (i % 5 == 0) j["eval/reward"] = 0.1 * i;
    m << (i == 7 ? std::string("{\"step\": 7, \"train/loss\": NaN}") : j.dump()) << "\n";
  }
  test::write_text(dir + "/checkpoints/step-00000010/run_config.ini", "# keel sft\nlr = 0.0015\n");
}

std::string chromium(const std::string& args) {
  return "chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run " + args;
}

TEST(ReportInChromium, PlotsCarryEveryMetricLineOfEachRun) {
  const std::string dir = test::temp_dir("report");
  write_run(dir + "/runs/a", 20, 1.0);
  write_run(dir + "/runs/b", 12, 2.0);
  auto r = test::keel("report " + dir + "/runs/a " + dir + "/runs/b --out " + dir + "/report.html");
  ASSERT_EQ(r.code, 0) << r.output;
  r = test::run(chromium("--virtual-time-budget=2000 --dump-dom file://" + dir + "/report.html") + " 2>/dev/null");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string& dom = r.output;
  // Each series: the browser's count of parsed points equals the lines that hold the metric.
  const std::regex series("<polyline data-series=\"([^\"]+)\" data-points=\"([0-9]+)\"[^>]*data-drawn=\"([0-9]+)\"");
  std::map<std::string, int> drawn;
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), series); it != std::sregex_iterator(); ++it) {
    EXPECT_EQ((*it)[2], (*it)[3]) << "the browser parsed another number of points than the report wrote";
    drawn[(*it)[1].str() + " " + std::to_string(drawn.size())] = std::stoi((*it)[3]);
  }
  ASSERT_EQ(drawn.size(), 4u) << "two metrics x two runs\n" << dom.substr(0, 2000);
  std::vector<int> counts;
  for (const auto& [k, n] : drawn) counts.push_back(n);
  std::sort(counts.begin(), counts.end());
  EXPECT_EQ(counts, (std::vector<int>{2, 4, 11, 19})) << "eval/reward: 12/5, 20/5 lines; train/loss: 12-1, 20-1 (a NaN)";
  EXPECT_NE(dom.find("lr = 0.0015"), std::string::npos) << "the resolved configuration is shown";
  // The page renders: a screenshot that is not one flat colour.
  r = test::run(chromium("--window-size=1200,900 --screenshot=" + dir + "/shot.png file://" + dir + "/report.html") +
                " >/dev/null 2>&1");
  ASSERT_TRUE(std::filesystem::exists(dir + "/shot.png")) << r.output;
  r = test::python("reference.py png_colours " + dir + "/shot.png");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_GT(std::stoi(r.output), 3) << "distinct colours in the screenshot";
}

}  // namespace
}  // namespace keel
