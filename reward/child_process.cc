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

ChildProcess::ChildProcess(const std::string& command) {
  ::signal(SIGPIPE, SIG_IGN);  // a dead program must not kill the service
  int in[2], out[2];
  KEEL_CHECK_KIND(io_error_kind(errno), ::pipe(in) == 0, "pipe: " << std::strerror(errno));
  if (::pipe(out) != 0) {
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
    ::close(in[0]);
    ::close(in[1]);
    ::close(out[0]);
    ::close(out[1]);
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
  if (::waitpid(pid_, nullptr, WNOHANG) != 0) exited_ = true;
  return !exited_;
}

std::string ChildProcess::exchange(const std::string& in, const std::function<bool(const std::string&)>& done,
                                   std::chrono::steady_clock::time_point deadline, bool* eof) {
  std::string out;
  size_t written = 0;
  *eof = false;
  char buf[65536];
  while (!done(out)) {
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
  while (true) {
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
  ::kill(-pid_, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + grace;
  while (!exited_ && ::waitpid(pid_, nullptr, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= until) {
      ::kill(-pid_, SIGKILL);  // it ignored SIGTERM: the whole group goes
      ::waitpid(pid_, nullptr, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(-pid_, SIGKILL);  // anything it left behind in its group
  pid_ = -1;
  exited_ = false;
}

}  // namespace keel
