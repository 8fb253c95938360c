// A reward written as a program: keel writes one JSON object per line to its stdin and reads one
// JSON object per line from its stdout (docs/reward_protocol.md).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "reward/scorer.h"

namespace keel {

namespace {

class ProgramScorer : public Scorer {
 public:
  ProgramScorer(std::string command, int timeout_ms) : command_(std::move(command)), timeout_ms_(timeout_ms) {
    ::signal(SIGPIPE, SIG_IGN);  // a dead program must not kill the service
  }
  ~ProgramScorer() override { stop(); }

  std::vector<ScoreResult> score(const std::vector<wire::ScoreItem>& items) override {
    if (pid_ <= 0 || ::waitpid(pid_, nullptr, WNOHANG) != 0) start();
    std::string out;
    for (const auto& it : items)
      out += nlohmann::json{{"prompt", it.prompt}, {"response", it.response}, {"finished", it.finished}}.dump() + "\n";
    if (!write_all(out)) {
      stop();
      KEEL_FAIL_KIND(ErrorKind::kPeer, "reward program '" << command_ << "' is not reading its input (did it exit?)");
    }
    std::vector<ScoreResult> results;
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string line = read_line();
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception&) {
        stop();
        KEEL_FAIL_KIND(ErrorKind::kPeer, "reward program answered line " << i + 1 << " of the batch with '" << line.substr(0, 200)
                                                                         << "', not a JSON object with a number 'score'");
      }
      KEEL_CHECK_KIND(ErrorKind::kPeer, j.is_object() && j.contains("score") && j["score"].is_number(),
                      "reward program answer '" << line.substr(0, 200) << "' lacks a number 'score'");
      ScoreResult r;
      r.score = j["score"].get<float>();
      if (j.contains("parts") && j["parts"].is_object())
        for (auto p = j["parts"].begin(); p != j["parts"].end(); ++p)
          if (p.value().is_number()) r.parts.emplace_back(p.key(), p.value().get<float>());
      if (r.parts.empty()) r.parts.emplace_back("program", r.score);
      results.push_back(std::move(r));
    }
    return results;
  }

 private:
  void start() {
    stop();
    int in[2], out[2];
    KEEL_CHECK_KIND(io_error_kind(errno), ::pipe(in) == 0 && ::pipe(out) == 0, "pipe: " << std::strerror(errno));
    pid_ = ::fork();
    KEEL_CHECK_KIND(io_error_kind(errno), pid_ >= 0, "fork: " << std::strerror(errno));
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::close(in[1]);
      ::close(out[0]);
      ::execl("/bin/sh", "sh", "-c", command_.c_str(), nullptr);
      _exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = in[1];
    from_ = out[0];
    buffer_.clear();
  }
  void stop() {
    if (to_ >= 0) ::close(to_);
    if (from_ >= 0) ::close(from_);
    to_ = from_ = -1;
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  bool write_all(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::write(to_, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  std::string read_line() {
    while (true) {
      const auto nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      pollfd p{from_, POLLIN, 0};
      const int r = ::poll(&p, 1, timeout_ms_);
      if (r <= 0) {
        stop();
        KEEL_FAIL_KIND(ErrorKind::kPeer, "reward program '" << command_ << "' gave no answer within " << timeout_ms_ << " ms");
      }
      char buf[65536];
      const ssize_t n = ::read(from_, buf, sizeof buf);
      if (n <= 0) {
        stop();
        KEEL_FAIL_KIND(ErrorKind::kPeer, "reward program '" << command_ << "' closed its output (exited?)");
      }
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }

  std::string command_;
  int timeout_ms_;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string buffer_;
};

}  // namespace

std::unique_ptr<Scorer> make_program_scorer(const std::string& command, int timeout_ms) {
  return std::make_unique<ProgramScorer>(command, timeout_ms);
}

}  // namespace keel
