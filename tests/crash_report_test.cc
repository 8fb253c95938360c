// The crash report (core/crash_report.h), each in a child process that dies of its signal: a write
// through a null pointer names the signal, the address and the instruction's place, an offset that
// addr2line turns back into the faulting function; a call through a bad pointer, where the unwinder
// stops, names the caller it came from; a stack overflow still reports (the handler's own stack);
// threads faulting together give one whole report; abort() names no address.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <algorithm>
#include <functional>
#include <regex>
#include <string>

#include "core/crash_report.h"

namespace keel {
namespace {

int* volatile g_null = nullptr;
volatile int g_calls = 0;
volatile int g_never = -1;

[[gnu::noinline]] void write_through_null() { *g_null = 1; }

[[gnu::noinline]] void call_through_bad_pointer() {
  using Function = void (*)();
  Function volatile f = reinterpret_cast<Function>(uintptr_t{0x10});
  f();
  g_calls = g_calls + 1;  // work after the call: a call, not a tail jump that would leave no return address here
}

[[gnu::noinline]] int recurse(int depth) {
  if (depth == g_never) return 0;
  volatile char frame[512];
  frame[0] = static_cast<char>(depth);
  return recurse(depth + 1) + frame[0];  // not a tail call: every level keeps its frame
}

// AddressSanitizer reports crashes itself: keel installs no handler under it.
#if defined(__SANITIZE_ADDRESS__)
#define KEEL_SKIP_UNDER_ASAN() GTEST_SKIP() << "built with AddressSanitizer, which reports crashes itself"
#else
#define KEEL_SKIP_UNDER_ASAN() (void)0
#endif

struct Crash {
  int signal = 0;      // the signal the child died of; 0 if it exited
  std::string report;  // what it wrote to stderr
};

// Runs `body` in a child process with the crash report installed and collects its stderr.
Crash crash_of(const std::function<void()>& body) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    install_crash_report();
    body();
    _exit(0);
  }
  close(fds[1]);
  Crash c;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) c.report.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) c.signal = WTERMSIG(status);
  return c;
}

bool have_addr2line() { return std::system("command -v addr2line >/dev/null 2>&1") == 0; }

// The function addr2line names at `offset` of this test's executable ("??" where it cannot).
std::string function_at(const std::string& offset) {
  const std::string cmd = "addr2line -f -e /proc/" + std::to_string(getpid()) + "/exe " + offset + " 2>/dev/null";
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[512];
    if (fgets(buf, sizeof buf, p)) out = buf;
    pclose(p);
  }
  return out;
}

// The offset of the report's line starting with `prefix` ("  at ", "  called from "), if it names
// this test's executable.
std::string offset_in_line(const std::string& report, const std::string& prefix) {
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").filename();
  std::smatch m;
  const std::regex line(prefix + "[^\n]*" + exe + "\\(\\+(0x[0-9a-f]+)\\)");
  return std::regex_search(report, m, line) ? m[1].str() : "";
}

// The report's line starting with `prefix` names this executable at an offset addr2line maps back
// into `function` (the check skipped where binutils is missing).
void expect_line_names(const std::string& report, const std::string& prefix, const std::string& function) {
  const std::string offset = offset_in_line(report, prefix);
  ASSERT_FALSE(offset.empty()) << prefix << "\n" << report.substr(0, 2000);
  if (!have_addr2line()) GTEST_SKIP() << "no addr2line (binutils) to check the offset with";
  EXPECT_NE(function_at(offset).find(function), std::string::npos) << offset << "\n" << report.substr(0, 2000);
}

TEST(CrashReport, NullWriteNamesSignalAddressAndTheFaultingFunction) {
  KEEL_SKIP_UNDER_ASAN();
  const Crash c = crash_of([] { write_through_null(); });
  EXPECT_EQ(c.signal, SIGSEGV) << c.report;
  EXPECT_TRUE(std::regex_search(c.report, std::regex("^keel: fatal signal 11 \\(SIGSEGV\\) in thread [0-9]+ "
                                                     "\\(main\\), address 0x0\n  at ")))
      << c.report;
  EXPECT_NE(c.report.find("\nkeel: stack:\n"), std::string::npos) << c.report;
  expect_line_names(c.report, "  at ", "write_through_null");
}

TEST(CrashReport, CallThroughBadPointerNamesItsCaller) {
  KEEL_SKIP_UNDER_ASAN();
  const Crash c = crash_of([] { call_through_bad_pointer(); });
  EXPECT_EQ(c.signal, SIGSEGV) << c.report;
  EXPECT_NE(c.report.find("address 0x10\n  at in no module (0x10)\n  called from "), std::string::npos) << c.report;
  expect_line_names(c.report, "  called from ", "call_through_bad_pointer");
}

TEST(CrashReport, StackOverflowStillReports) {
  KEEL_SKIP_UNDER_ASAN();
  const Crash c = crash_of([] {
    rlimit stack{};
    getrlimit(RLIMIT_STACK, &stack);  // an unlimited stack would take the machine's memory first
    stack.rlim_cur = std::min<rlim_t>(stack.rlim_max, rlim_t{8} << 20);
    setrlimit(RLIMIT_STACK, &stack);
    std::exit(recurse(0));
  });
  EXPECT_EQ(c.signal, SIGSEGV) << c.report;
  expect_line_names(c.report, "  at ", "recurse");
}

// Four threads fault at once: one report, whole, and the process dies of the signal.
TEST(CrashReport, ThreadsFaultingTogetherGiveOneWholeReport) {
  KEEL_SKIP_UNDER_ASAN();
  const Crash c = crash_of([] {
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) threads.emplace_back([] { write_through_null(); });
    for (auto& t : threads) t.join();
  });
  EXPECT_EQ(c.signal, SIGSEGV) << c.report;
  size_t reports = 0;
  for (size_t at = c.report.find("keel: fatal signal"); at != std::string::npos; at = c.report.find("keel: fatal signal", at + 1))
    ++reports;
  EXPECT_EQ(reports, 1u) << c.report;
  const size_t stack = c.report.find("keel: stack:\n");
  ASSERT_NE(stack, std::string::npos) << c.report;
  EXPECT_GE(std::count(c.report.begin() + static_cast<long>(stack), c.report.end(), '\n'), 5)
      << c.report;  // unwound to the thread's start
  expect_line_names(c.report, "  at ", "write_through_null");
}

TEST(CrashReport, AbortNamesNoAddress) {
  KEEL_SKIP_UNDER_ASAN();
  const Crash c = crash_of([] { std::abort(); });
  EXPECT_EQ(c.signal, SIGABRT) << c.report;
  EXPECT_TRUE(std::regex_search(c.report, std::regex("^keel: fatal signal 6 \\(SIGABRT\\) in thread [0-9]+ "
                                                     "\\(main\\)\n  at ")))
      << c.report;
}

}  // namespace
}  // namespace keel
