// A child process with pipes to its standard input and output, in a process group of its own, so
// that stopping it reaches everything it started. A reward program is a user's code: it may
// ignore SIGTERM, fork, stop reading or flood its output; none of that may block the service.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>

namespace keel {

class ChildProcess {
 public:
  // Starts `command` under /bin/sh -c, its stderr appended to `stderr_path` (inherited when "").
  // Throws KeelError (kIo) when pipes or fork fail.
  explicit ChildProcess(const std::string& command, const std::string& stderr_path = "");
  ~ChildProcess();  // stop()
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // True while the process has not exited.
  bool running();
  // Writes `in` and collects output until `done(output)` says so, `deadline` passes or 64 MiB
  // were read, both
  // concurrently (a program that answers before reading all its input cannot deadlock on full
  // pipes). Returns what was read ("" included). Sets *eof when the child closed its output.
  // Throws nothing; failures show as a short result.
  std::string exchange(const std::string& in, const std::function<bool(const std::string&)>& done,
                       std::chrono::steady_clock::time_point deadline, bool* eof);
  // Output already waiting now, without blocking ("" when none).
  std::string pending_output();
  // SIGTERM to the process group, then SIGKILL after `grace`; reaps the child.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(1000));

 private:
  pid_t pid_ = -1;
  bool exited_ = false;  // seen by running(), not yet reaped
  int to_ = -1, from_ = -1;
};

}  // namespace keel
