#include "replay/run_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/tokenizer.h"
#include "replay/rollout_log.h"

namespace keel {

namespace fs = std::filesystem;

namespace {

struct Series {
  std::string name, dir;
  std::map<std::string, std::vector<std::pair<double, double>>> points;  // key -> (step, value)
  int64_t lines = 0;
};

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Series read_series(const fs::path& metrics, std::string name) {
  Series s;
  s.name = std::move(name);
  s.dir = metrics.parent_path().string();
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) continue;  // a torn last line
    ++s.lines;
    const double step = j["step"].get<double>();
    for (const auto& [k, v] : j.items())
      if (k != "step" && k != "time" && v.is_number() && std::isfinite(v.get<double>()))
        s.points[k].emplace_back(step, v.get<double>());
  }
  return s;
}

std::vector<Series> find_series(const std::vector<std::string>& runs) {
  std::vector<Series> out;
  for (const auto& run : runs) {
    KEEL_CHECK_KIND(ErrorKind::kIo, fs::is_directory(run), "run directory " << run << " does not exist");
    std::vector<fs::path> found;
    for (auto it = fs::recursive_directory_iterator(run); it != fs::recursive_directory_iterator(); ++it) {
      if (it.depth() >= 3) it.disable_recursion_pending();
      if (it->is_regular_file() && it->path().filename() == "metrics.jsonl") found.push_back(it->path());
    }
    std::sort(found.begin(), found.end());
    const std::string base = fs::path(run).lexically_normal().filename().string();
    for (const auto& m : found) {
      std::string rel = fs::relative(m.parent_path(), run).string();
      std::string name = rel == "." ? base : (runs.size() > 1 ? base + "/" + rel : rel);
      out.push_back(read_series(m, name));
    }
  }
  KEEL_CHECK(!out.empty(), "no metrics.jsonl under " << runs.front() << (runs.size() > 1 ? " (or the other runs)" : "")
                                                     << ": give run directories that keel commands wrote");
  return out;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string fmt(double v) {
  std::ostringstream os;
  os.precision(4);
  os << v;
  return os.str();
}

// One metric's plot: every series that has it, on shared axes.
std::string plot(const std::string& key, const std::vector<Series>& series) {
  const double W = 340, H = 190, L = 52, R = 8, T = 22, B = 24;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    if (auto it = s.points.find(key); it != s.points.end())
      for (const auto& [x, y] : it->second) {
        x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
      }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + (y0 == 0 ? 1 : std::fabs(y0) * 0.1);
  std::ostringstream os;
  os << "<svg class=\"plot\" data-metric=\"" << escape(key) << "\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 "
     << W << " " << H << "\">\n<text x=\"" << L << "\" y=\"14\" class=\"t\">" << escape(key) << "</text>\n"
     << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
     << "\" class=\"frame\"/>\n"
     << "<text x=\"" << L - 4 << "\" y=\"" << T + 8 << "\" class=\"yl\">" << fmt(y1) << "</text><text x=\"" << L - 4 << "\" y=\""
     << H - B << "\" class=\"yl\">" << fmt(y0) << "</text>\n<text x=\"" << L << "\" y=\"" << H - 8 << "\" class=\"xl\">"
     << fmt(x0) << "</text><text x=\"" << W - R << "\" y=\"" << H - 8 << "\" class=\"xl end\">step " << fmt(x1) << "</text>\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const auto it = series[i].points.find(key);
    if (it == series[i].points.end()) continue;
    os << "<polyline data-series=\"" << escape(series[i].name) << "\" data-points=\"" << it->second.size() << "\" stroke=\""
       << kColors[i % 8] << "\" points=\"";
    for (const auto& [x, y] : it->second)
      os << fmt(L + (x - x0) / (x1 - x0) * (W - L - R)) << "," << fmt(H - B - (y - y0) / (y1 - y0) * (H - T - B)) << " ";
    os << "\"/>\n";
    if (it->second.size() == 1) {
      const auto [x, y] = it->second[0];
      os << "<circle r=\"3\" fill=\"" << kColors[i % 8] << "\" cx=\"" << fmt(L + (x - x0) / (x1 - x0) * (W - L - R)) << "\" cy=\""
         << fmt(H - B - (y - y0) / (y1 - y0) * (H - T - B)) << "\"/>\n";
    }
  }
  os << "</svg>\n";
  return os.str();
}

std::string family_of(const std::string& key) {
  const auto slash = key.find('/');
  return slash == std::string::npos ? "other" : key.substr(0, slash);
}

// Families in the order a reader looks for them: losses, held-out results, the RL update, then
// the plumbing; any other family after these, alphabetically.
int family_rank(const std::string& family) {
  static const char* order[] = {"train", "eval", "ppo", "online", "pairs", "replay", "credits", "actors", "wire"};
  for (int i = 0; i < 9; ++i)
    if (family == order[i]) return i;
  return 9;
}

// The newest checkpoint's resolved configuration, and the launcher's when the run is a job's learner.
std::string configuration(const Series& s) {
  std::string out;
  std::vector<fs::path> configs;
  if (fs::is_directory(s.dir + "/checkpoints"))
    for (const auto& e : fs::directory_iterator(s.dir + "/checkpoints"))
      if (fs::exists(e.path() / "run_config.ini")) configs.push_back(e.path() / "run_config.ini");
  std::sort(configs.begin(), configs.end());
  if (!configs.empty()) out += read_file(configs.back());
  for (const auto& launch : {fs::path(s.dir) / "launch.ini", fs::path(s.dir).parent_path() / "launch.ini"})
    if (fs::exists(launch)) out += (out.empty() ? "" : "\n") + read_file(launch);
  return out.empty() ? "(no resolved configuration found)" : out;
}

std::string rollout_samples(const Series& s, int n, int& logs) {
  fs::path log;
  for (const auto& p : {fs::path(s.dir) / "rollouts.h5", fs::path(s.dir).parent_path() / "rollouts.h5"})
    if (fs::exists(p)) log = p;
  if (log.empty() || !fs::exists(fs::path(s.dir) / "model")) return "";
  const auto contents = read_rollout_log(log.string());
  const auto tok = load_tokenizer(s.dir + "/model");
  ++logs;
  std::ostringstream os;
  os << "<h3>" << escape(s.name) << ": the last " << std::min<size_t>(contents.rows.size(), static_cast<size_t>(n)) << " of "
     << contents.rows.size() << " logged rollouts (" << escape(log.string()) << ")</h3>\n<table class=\"rollouts\">"
     << "<tr><th>prompt</th><th>response</th><th>score</th><th>policy version</th><th>learner version</th></tr>\n";
  const size_t from = contents.rows.size() > static_cast<size_t>(n) ? contents.rows.size() - static_cast<size_t>(n) : 0;
  for (size_t i = from; i < contents.rows.size(); ++i) {
    const auto& r = contents.rows[i];
    os << "<tr><td><pre>" << escape(tok->decode(r.prompt)) << "</pre></td><td><pre>" << escape(tok->decode(r.response))
       << "</pre></td><td>" << fmt(r.score) << "</td><td>" << r.policy_version << "</td><td>" << r.learner_version
       << "</td></tr>\n";
  }
  os << "</table>\n";
  return os.str();
}

const char* kStyle =
    "body{font-family:sans-serif;margin:1.5em;color:#222}h2{border-bottom:1px solid #ccc}"
    ".plots{display:flex;flex-wrap:wrap;gap:10px}svg.plot{background:#fff;border:1px solid #ddd}"
    "polyline{fill:none;stroke-width:1.5}.frame{fill:none;stroke:#999}.t{font-size:12px;font-weight:bold}"
    ".yl{font-size:10px;text-anchor:end}.xl{font-size:10px}.end{text-anchor:end}.legend span{margin-right:1.2em}"
    "pre{white-space:pre-wrap;margin:0}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
    "vertical-align:top;font-size:12px}";

}  // namespace

ReportSummary write_run_report(const ReportOptions& o) {
  KEEL_CHECK(!o.runs.empty(), "keel report needs at least one run directory");
  KEEL_CHECK(!o.out.empty(), "keel report needs --out (the HTML file to write)");
  const auto series = find_series(o.runs);
  ReportSummary sum;
  sum.series = static_cast<int>(series.size());
  std::map<std::string, std::vector<std::string>> families;  // family -> keys
  for (const auto& s : series)
    for (const auto& [k, v] : s.points) {
      auto& keys = families[family_of(k)];
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    }
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" << escape(o.title) << "</title><style>" << kStyle
       << "</style></head><body>\n<h1>" << escape(o.title) << "</h1>\n<p class=\"legend\">";
  for (size_t i = 0; i < series.size(); ++i)
    html << "<span style=\"color:" << kColors[i % 8] << "\">&#9632; " << escape(series[i].name) << " (" << series[i].lines
         << " metric lines)</span>";
  html << "</p>\n";
  std::vector<std::pair<std::string, std::vector<std::string>>> ordered(families.begin(), families.end());
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const auto& a, const auto& b) { return family_rank(a.first) < family_rank(b.first); });
  for (auto& [family, keys] : ordered) {
    std::sort(keys.begin(), keys.end());
    html << "<h2>" << escape(family) << "</h2>\n<div class=\"plots\">\n";
    for (const auto& k : keys) html << plot(k, series);
    sum.plots += static_cast<int>(keys.size());
    html << "</div>\n";
  }
  html << "<h2>configuration</h2>\n";
  for (const auto& s : series)
    html << "<h3>" << escape(s.name) << "</h3>\n<pre class=\"config\">" << escape(configuration(s)) << "</pre>\n";
  std::string samples;
  for (const auto& s : series) {
    try {
      samples += rollout_samples(s, o.rollout_samples, sum.rollout_logs);
    } catch (const KeelError& e) {  // a log being written, or damaged: the rest of the report stands
      samples += "<p>" + escape(s.name) + ": the rollout log could not be read: " + escape(e.what()) + "</p>\n";
    }
  }
  if (!samples.empty()) html << "<h2>rollouts</h2>\n" << samples;
  // The browser's own parse of each series (what a test with a headless browser reads back).
  html << "<script>document.querySelectorAll('polyline').forEach(function(p){p.setAttribute('data-drawn', "
          "p.points.numberOfItems);});</script>\n</body></html>\n";
  const std::string tmp = o.out + ".tmp";
  {
    std::ofstream f(tmp);
    KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot write " << tmp);
    f << html.str();
    f.close();
    KEEL_CHECK_KIND(io_error_kind(errno), f, "write to " << tmp << " failed");
  }
  fs::rename(tmp, o.out);
  return sum;
}

}  // namespace keel
