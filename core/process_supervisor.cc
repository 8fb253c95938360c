#include "core/process_supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <thread>

#include "core/error.h"

namespace keel {

std::string self_executable() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  KEEL_CHECK_KIND(ErrorKind::kIo, n > 0, "cannot find the keel executable (/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

int exit_code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

CapturedRun run_captured(const std::string& exe, const std::vector<std::string>& args) {
  int fds[2];
  KEEL_CHECK_KIND(io_error_kind(errno), ::pipe2(fds, O_CLOEXEC) == 0, "pipe failed running " << exe);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    KEEL_FAIL_KIND(io_error_kind(errno), "fork failed running " << exe);
  }
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    _exit(127);
  }
  ::close(fds[1]);
  CapturedRun r;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    r.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.code = exit_code_of(status);
  return r;
}

ProcessSupervisor::ProcessSupervisor(std::string exe, std::string log_dir) : exe_(std::move(exe)), log_dir_(std::move(log_dir)) {}

ProcessSupervisor::~ProcessSupervisor() { shutdown(std::chrono::seconds(10)); }

void ProcessSupervisor::add(ChildSpec c) {
  Child child;
  child.spec = std::move(c);
  children_.push_back(std::move(child));
}

void ProcessSupervisor::start(Child& c) {
  if (c.spec.incarnation_arg >= 0) c.spec.args[static_cast<size_t>(c.spec.incarnation_arg)] = std::to_string(c.restarts);
  const std::string log = log_dir_ + "/" + c.spec.name + ".log";
  const pid_t pid = ::fork();
  KEEL_CHECK_KIND(io_error_kind(errno), pid >= 0, "fork failed starting " << c.spec.name);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> argv{const_cast<char*>(exe_.c_str())};
    for (const auto& a : c.spec.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe_.c_str(), argv.data());
    _exit(127);
  }
  c.pid = pid;
}

int ProcessSupervisor::on_exit(Child& c, int code) {
  c.pid = -1;
  const bool bounded = c.spec.max_restarts >= 0 && c.restarts >= c.spec.max_restarts;
  if (c.spec.lead && (code == 0 || bounded)) return code;  // finished, or out of restarts
  const int backoff = std::min(30, 1 << std::min(c.restarts, 5));
  std::cerr << (::isatty(2) ? "\n" : "") << "launch: " << c.spec.name << " exited (" << code << "); restart in " << backoff
            << " s\n";
  c.restart_at = std::chrono::steady_clock::now() + std::chrono::seconds(backoff);
  ++c.restarts;
  return -1;
}

int ProcessSupervisor::run(const std::atomic<bool>& stop, const std::function<void()>& tick) {
  for (auto& c : children_) start(c);
  while (!stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto now = std::chrono::steady_clock::now();
    for (auto& c : children_) {
      int status = 0;
      if (c.pid > 0 && ::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        const int lead_code = on_exit(c, exit_code_of(status));
        if (lead_code >= 0) return lead_code;
      } else if (c.pid <= 0 && now >= c.restart_at) {
        start(c);
      }
    }
    if (tick) tick();
  }
  return -1;
}

int ProcessSupervisor::shutdown(std::chrono::seconds grace) {
  int lead_code = -1;
  for (auto& c : children_)
    if (c.pid > 0) ::kill(c.pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (auto& c : children_) {
    while (c.pid > 0) {
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        if (c.spec.lead) lead_code = exit_code_of(status);
        c.pid = -1;
      } else if (std::chrono::steady_clock::now() > deadline) {
        ::kill(c.pid, SIGKILL);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  return lead_code;
}

}  // namespace keel
