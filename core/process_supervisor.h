// Runs child processes of this same binary, each with its own log file, and keeps them running:
// a child that exits is started again after a backoff (1, 2, 4 ... 30 s), up to its restart
// bound; an actor-like child gets a new incarnation number on every start. The run ends when the
// lead child (the learner) finishes or runs out of restarts, or when stop is set; shutdown() then
// ends every child: SIGTERM first (the learner checkpoints), SIGKILL after a grace period.
// Single-threaded; the owner calls run() from one thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace keel {

struct ChildSpec {
  std::string name;               // also its log: <log_dir>/<name>.log
  std::vector<std::string> args;  // after the executable
  int max_restarts = -1;          // -1: no bound
  bool lead = false;              // its exit ends the run (0: finished)
  int incarnation_arg = -1;       // index in args of a value set to the number of earlier starts
};

class ProcessSupervisor {
 public:
  ProcessSupervisor(std::string exe, std::string log_dir);
  ~ProcessSupervisor();
  void add(ChildSpec c);
  // Starts every child and supervises them until the lead child ends for good or `stop` is set;
  // `tick` runs about every 200 ms. Returns the lead child's exit code (128 + signal when killed),
  // or -1 when stopped first.
  int run(const std::atomic<bool>& stop, const std::function<void()>& tick);
  // Ends every child still running; returns the lead child's exit code when it ended now.
  int shutdown(std::chrono::seconds grace);

 private:
  struct Child {
    ChildSpec spec;
    pid_t pid = -1;
    int restarts = 0;
    std::chrono::steady_clock::time_point restart_at;
  };
  void start(Child& c);
  // A reaped child: restart it, or end the run. Returns the lead's exit code, or -1.
  int on_exit(Child& c, int code);

  std::string exe_, log_dir_;
  std::vector<Child> children_;
};

// Runs `exe args...` to completion with stdout and stderr captured together (for short checks,
// such as a role's options before a job starts). `code` as exit_code_of.
struct CapturedRun {
  int code = -1;
  std::string output;
};
CapturedRun run_captured(const std::string& exe, const std::vector<std::string>& args);

// The path of the running executable (/proc/self/exe).
std::string self_executable();
// The exit code of a waitpid status: the code, or 128 + the signal.
int exit_code_of(int wait_status);

}  // namespace keel
