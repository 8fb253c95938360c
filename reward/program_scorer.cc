// A reward written as a program: keel writes one JSON object per line to its stdin and reads one
// JSON object per line from its stdout (docs/reward_protocol.md). Every item carries an id; a
// program that echoes it has its answers matched by id, so a missing, extra or reordered answer
// fails that batch instead of moving a score onto another response. Writing and reading run
// together under one deadline per batch; a program that breaks the protocol is stopped (SIGTERM,
// then SIGKILL to its process group) and started again for the next batch.
#include <algorithm>
#include <cfloat>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "reward/child_process.h"
#include "reward/scorer.h"

namespace keel {

namespace {

using Clock = std::chrono::steady_clock;

size_t count_lines(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream is(s);
  for (std::string l; std::getline(is, l);) lines.push_back(l);
  return lines;
}

// One answer line: its id (if echoed) and its result. Throws KeelError (kPeer) naming the line.
std::pair<std::optional<uint64_t>, ScoreResult> parse_answer(const std::string& line, size_t at) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const std::exception&) {
    KEEL_FAIL_KIND(ErrorKind::kPeer, "reward program answered line " << at + 1 << " of the batch with '" << line.substr(0, 200)
                                                                     << "', not a JSON object with a number 'score'");
  }
  KEEL_CHECK_KIND(ErrorKind::kPeer, j.is_object() && j.contains("score") && j["score"].is_number(),
                  "reward program answer '" << line.substr(0, 200) << "' lacks a number 'score'");
  const double v = j["score"].get<double>();
  KEEL_CHECK_KIND(ErrorKind::kPeer, std::isfinite(v) && std::fabs(v) <= FLT_MAX,
                  "reward program answer " << at + 1 << " has score " << line.substr(0, 200) << ": not a finite 32-bit number");
  std::optional<uint64_t> id;
  if (j.contains("id")) {
    KEEL_CHECK_KIND(ErrorKind::kPeer, j["id"].is_number_unsigned(), "reward program answer " << at + 1 << " has a bad 'id'");
    id = j["id"].get<uint64_t>();
  }
  ScoreResult r;
  r.score = static_cast<float>(v);
  if (j.contains("parts") && j["parts"].is_object())
    for (auto p = j["parts"].begin(); p != j["parts"].end(); ++p)
      if (p.value().is_number() && std::isfinite(p.value().get<double>())) r.parts.emplace_back(p.key(), p.value().get<float>());
  if (r.parts.empty()) r.parts.emplace_back("program", r.score);
  return {id, std::move(r)};
}

// One item as the program reads it; the prompt line's own fields, when the actor sent them, under
// "fields" (so that they never collide with keel's keys).
std::string item_line(const wire::ScoreItem& it, uint64_t id) {
  nlohmann::json j{{"id", id}, {"prompt", it.prompt}, {"response", it.response}, {"finished", it.finished}};
  if (!it.fields.empty()) {
    auto fields = nlohmann::json::parse(it.fields, nullptr, /*allow_exceptions=*/false);
    KEEL_CHECK(fields.is_object(), "an item's prompt fields are not a JSON object: " << it.fields.substr(0, 80));
    j["fields"] = std::move(fields);
  }
  return j.dump();
}

class ProgramScorer : public Scorer {
 public:
  ProgramScorer(std::string command, int timeout_ms) : command_(std::move(command)), timeout_ms_(timeout_ms) {
    char path[] = "/tmp/keel-reward-stderr-XXXXXX";
    const int fd = ::mkstemp(path);
    KEEL_CHECK_KIND(io_error_kind(errno), fd >= 0, "cannot create a file for the reward program's stderr in /tmp");
    ::close(fd);
    stderr_path_ = path;
  }
  ~ProgramScorer() override {
    child_.reset();
    forward_stderr();
    std::remove(stderr_path_.c_str());
  }

  std::vector<ScoreResult> score(const std::vector<wire::ScoreItem>& items) override {
    if (child_ && child_->running() && !child_->pending_output().empty()) {
      // Lines nobody asked for (after the last batch was answered): start clean.
      std::cerr << "reward: program '" << command_ << "' printed lines after its last answer; restarted\n";
      child_.reset();
    }
    if (child_ && !child_->running()) child_.reset();  // stopped (and reaped) before another starts
    const uint64_t first = next_id_;
    next_id_ += items.size();
    std::string in;  // built first: an item keel cannot write fails its batch without touching the program
    for (size_t i = 0; i < items.size(); ++i) in += item_line(items[i], first + i) + "\n";
    if (!child_) child_ = std::make_unique<ChildProcess>(command_, stderr_path_);
    try {
      auto results = exchange(in, items.size(), first);
      forward_stderr();
      return results;
    } catch (const KeelError& e) {
      child_.reset();  // stopped: SIGTERM, then SIGKILL to its group
      forward_stderr();
      if (last_stderr_.empty()) throw;
      // What the program said before it failed (a traceback naming a missing field) is the reason.
      throw KeelError(std::string(e.what()) + "; its stderr ended with: " + last_stderr_, e.kind(), e.where());
    }
  }

 private:
  // Copies what the program wrote to stderr since the last call to this process's stderr (the
  // service's log), and keeps its last lines for error messages.
  void forward_stderr() {
    std::ifstream f(stderr_path_, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(stderr_read_));
    std::string fresh((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    stderr_read_ += fresh.size();
    if (stderr_read_ > (size_t{1} << 20)) {  // a chatty program's file stays small (a line written meanwhile may be lost)
      ::truncate(stderr_path_.c_str(), 0);
      stderr_read_ = 0;
    }
    last_stderr_.clear();
    if (fresh.empty()) return;
    std::cerr << "reward program stderr: " << fresh << (fresh.back() == '\n' ? "" : "\n");
    while (!fresh.empty() && fresh.back() == '\n') fresh.pop_back();
    last_stderr_ = fresh.size() > 400 ? "..." + fresh.substr(fresh.size() - 400) : fresh;
  }

  std::vector<ScoreResult> exchange(const std::string& in, size_t count, uint64_t first) {
    bool eof = false;
    const auto out = child_->exchange(
        in, [&](const std::string& o) { return count_lines(o) >= count; }, Clock::now() + std::chrono::milliseconds(timeout_ms_),
        &eof);
    const auto lines = split_lines(out.substr(0, out.rfind('\n') + 1));
    if (lines.size() < count) {
      std::ostringstream why;
      why << "reward program '" << command_ << "' answered " << lines.size() << " of " << count << " items";
      if (eof)
        why << " and closed its output (exited?)";
      else
        why << " within the batch deadline of " << timeout_ms_ << " ms";
      KEEL_FAIL_KIND(ErrorKind::kPeer, why.str());
    }
    // A line more than asked for (now or a moment later) means the answers cannot be trusted.
    std::string extra = out.substr(out.rfind('\n') + 1) + settle();
    KEEL_CHECK_KIND(ErrorKind::kPeer, lines.size() == count && extra.empty(),
                    "reward program '" << command_ << "' printed more than one line per item (" << lines.size() << " lines for "
                                       << count << " items, then '" << extra.substr(0, 80) << "'): logs belong on stderr");
    return match(lines, first);
  }

  // Output that arrives within a short settling time after the last expected answer.
  std::string settle() {
    bool eof = false;
    return child_->exchange(
        "", [](const std::string& o) { return !o.empty(); }, Clock::now() + std::chrono::milliseconds(20), &eof);
  }

  // Answers to items by echoed id, or in order when the program echoes none.
  std::vector<ScoreResult> match(const std::vector<std::string>& lines, uint64_t first) {
    std::vector<std::optional<ScoreResult>> by_item(lines.size());
    size_t with_id = 0;
    for (size_t k = 0; k < lines.size(); ++k) {
      auto [id, r] = parse_answer(lines[k], k);
      if (!id) {
        by_item[k] = std::move(r);
        continue;
      }
      ++with_id;
      KEEL_CHECK_KIND(ErrorKind::kPeer, *id >= first && *id < first + lines.size() && !by_item[*id - first],
                      "reward program answered id " << *id << ", which is not an unanswered item of this batch (" << first << ".."
                                                    << first + lines.size() - 1 << ")");
      by_item[*id - first] = std::move(r);
    }
    KEEL_CHECK_KIND(ErrorKind::kPeer, with_id == 0 || with_id == lines.size(),
                    "reward program echoed 'id' in " << with_id << " of " << lines.size() << " answers: all or none");
    std::vector<ScoreResult> out;
    for (auto& r : by_item) out.push_back(std::move(*r));
    return out;
  }

  std::string command_;
  int timeout_ms_;
  std::unique_ptr<ChildProcess> child_;
  uint64_t next_id_ = 0;
  std::string stderr_path_, last_stderr_;
  size_t stderr_read_ = 0;
};

}  // namespace

std::unique_ptr<Scorer> make_program_scorer(const std::string& command, int timeout_ms) {
  return std::make_unique<ProgramScorer>(command, timeout_ms);
}

}  // namespace keel
