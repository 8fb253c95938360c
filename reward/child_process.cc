#include "reward/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace keel {

namespace {
constexpr size_t kMaxOutputBytes = size_t{64} << 20;  // a flooding program fails its batch, not the service's memory
}  // namespace

ChildProcess::ChildProcess(const std::string& command, const std::string& stderr_path) {
  ::signal(SIGPIPE, SIG_IGN);  // a dead program must not kill the service
  int in[2], out[2];
  // Close-on-exec: neither this program nor any other child inherits the other's pipes.
  KEEL_CHECK_KIND(io_error_kind(errno), ::pipe2(in, O_CLOEXEC) == 0, "pipe: " << std::strerror(errno));
  if (::pipe2(out, O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(in[0]);
    ::close(in[1]);
    KEEL_FAIL_KIND(io_error_kind(e), "pipe: " << std::strerror(e));
  }
  pid_ = ::fork();
  if (pid_ == 0) {
    ::setpgid(0, 0);
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    if (!stderr_path.empty()) {
      const int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (err >= 0) ::dup2(err, 2);
    }
    ::close_range(3, ~0U, 0);  // nothing of the service (sockets, other pipes) reaches the program
    ::execl("/bin/sh", "sh", "-c", command.c_str(), nullptr);
    _exit(127);
  }
  const int e = errno;
  ::close(in[0]);
  ::close(out[1]);
  to_ = in[1];
  from_ = out[0];
  if (pid_ < 0) {
    stop();
    KEEL_FAIL_KIND(io_error_kind(e), "fork: " << std::strerror(e));
  }
  ::setpgid(pid_, pid_);  // also here: the child may not have run yet
  ::fcntl(to_, F_SETFL, ::fcntl(to_, F_GETFL) | O_NONBLOCK);
  ::fcntl(from_, F_SETFL, ::fcntl(from_, F_GETFL) | O_NONBLOCK);
}

ChildProcess::~ChildProcess() { stop(); }

bool ChildProcess::running() {
  if (pid_ <= 0 || exited_) return false;
  // WNOWAIT leaves an exited child a zombie until stop() reaps it: its pid, and so its process
  // group id, cannot be reused by another process before stop() signals the group.
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != 0) exited_ = true;
  return !exited_;
}

std::string ChildProcess::exchange(const std::string& in, const std::function<bool(const std::string&)>& done,
                                   std::chrono::steady_clock::time_point deadline, bool* eof) {
  std::string out;
  size_t written = 0;
  *eof = false;
  char buf[65536];
  while (!done(out) && out.size() < kMaxOutputBytes) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p[2] = {{from_, POLLIN, 0}, {to_, POLLOUT, 0}};
    const nfds_t n = written < in.size() && to_ >= 0 ? 2 : 1;
    const int r = ::poll(p, n, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    if (n == 2 && (p[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t w = ::write(to_, in.data() + written, in.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN && errno != EINTR) written = in.size();  // it stopped reading: its answers tell
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t got = ::read(from_, buf, sizeof buf);
      if (got > 0) out.append(buf, static_cast<size_t>(got));
      if (got == 0) {
        *eof = true;
        break;
      }
    }
  }
  return out;
}

std::string ChildProcess::pending_output() {
  std::string out;
  char buf[65536];
  while (out.size() < kMaxOutputBytes) {
    const ssize_t got = from_ >= 0 ? ::read(from_, buf, sizeof buf) : -1;
    if (got <= 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  return out;
}

void ChildProcess::stop(std::chrono::milliseconds grace) {
  if (to_ >= 0) ::close(to_);
  if (from_ >= 0) ::close(from_);
  to_ = from_ = -1;
  if (pid_ <= 0) return;
  // The leader is not reaped before the group is signalled (it stays at least a zombie), so -pid_
  // is still this program's group.
  ::kill(-pid_, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + grace;
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0 &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ::kill(-pid_, SIGKILL);  // it ignored SIGTERM, or left children behind in its group
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  exited_ = false;
}

}  // namespace keel
