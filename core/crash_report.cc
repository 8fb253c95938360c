#include "core/crash_report.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <link.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <fcntl.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdint>

namespace keel {
namespace {

constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};

// Set once by install_crash_report(), read by the handler.
char g_executable[4096];          // the executable's full path (dladdr gives argv[0], maybe relative)
int g_probe[2] = {-1, -1};        // a pipe: writing from an address tells whether it can be read
std::atomic<long> g_reporter{0};  // the thread writing the report; any other faulting thread waits

// One line of the report, formatted by hand into a fixed buffer: no stdio and no allocation in a
// signal handler (the heap's lock may be held by the code that faulted).
class Line {
 public:
  Line& str(const char* s) {
    while (s && *s && n_ < sizeof buf_) buf_[n_++] = *s++;
    return *this;
  }
  Line& hex(uintptr_t v) {
    char digits[2 * sizeof v];
    int k = 0;
    do {
      digits[k++] = "0123456789abcdef"[v & 15];
      v >>= 4;
    } while (v);
    str("0x");
    while (k > 0 && n_ < sizeof buf_) buf_[n_++] = digits[--k];
    return *this;
  }
  Line& dec(long v) {
    if (v < 0) {
      str("-");
      v = -v;
    }
    char digits[24];
    int k = 0;
    do {
      digits[k++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v);
    while (k > 0 && n_ < sizeof buf_) buf_[n_++] = digits[--k];
    return *this;
  }
  // Writes the line to stderr and starts an empty one.
  void flush() {
    [[maybe_unused]] auto w = ::write(2, buf_, n_);
    n_ = 0;
  }

 private:
  char buf_[1024];
  size_t n_ = 0;
};

const char* signal_name(int sig) {
  switch (sig) {
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGILL:
      return "SIGILL";
    case SIGFPE:
      return "SIGFPE";
    case SIGABRT:
      return "SIGABRT";
    default:
      return "?";
  }
}

// The interrupted instruction; 0 where this CPU is not known.
uintptr_t instruction_of(const ucontext_t* uc) {
#if defined(__x86_64__)
  return static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return uc->uc_mcontext.pc;
#else
  return 0;
#endif
}

// The word at `addr`, if it can be read: the kernel copies it into the pipe or answers EFAULT,
// where reading it here would fault inside the handler.
bool read_word(uintptr_t addr, uintptr_t& word) {
  if (g_probe[0] < 0 || ::write(g_probe[1], reinterpret_cast<const void*>(addr), sizeof word) != sizeof word) return false;
  return ::read(g_probe[0], &word, sizeof word) == sizeof word;
}

// Where a call to the interrupted instruction came from: x86-64 pushes the return address on the
// stack, AArch64 keeps it in the link register. Only a call leaves it there, so the report says
// "if a call brought it there".
uintptr_t caller_of(const ucontext_t* uc) {
#if defined(__x86_64__)
  uintptr_t word = 0;
  return read_word(static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]), word) ? word : 0;
#elif defined(__aarch64__)
  return uc->uc_mcontext.regs[30];
#else
  return 0;
#endif
}

// Appends "MODULE(+0xOFFSET) SYMBOL+0xOFF" for a code address; false where no loaded module holds
// it. The offset is from the module's load bias (0 for an executable not built as PIE), the
// address addr2line takes; the symbol is the nearest one the module exports, where one spans it.
bool describe(Line& line, uintptr_t addr) {
  Dl_info info{};
  link_map* module = nullptr;
  if (dladdr1(reinterpret_cast<void*>(addr), &info, reinterpret_cast<void**>(&module), RTLD_DL_LINKMAP) == 0 ||
      info.dli_fname == nullptr || module == nullptr) {
    line.str("in no module (").hex(addr).str(")");
    return false;
  }
  const char* name = module->l_name[0] != '\0' ? module->l_name : g_executable[0] ? g_executable : info.dli_fname;
  line.str(name).str("(+").hex(addr - module->l_addr).str(")");
  if (info.dli_sname) line.str(" ").str(info.dli_sname).str("+").hex(addr - reinterpret_cast<uintptr_t>(info.dli_saddr));
  return true;
}

void report_crash(int sig, siginfo_t* info, void* context) {
  const long tid = syscall(SYS_gettid);
  // Threads of one parallel loop often fault together: one reports whole, the others wait for the
  // process to end (which its report ends with).
  long none = 0;
  if (!g_reporter.compare_exchange_strong(none, tid))
    for (;;) pause();
  // dladdr and the unwinder take the loader's lock; if the fault came while it was held, the
  // alarm ends the process rather than leaving it hung.
  std::signal(SIGALRM, SIG_DFL);
  alarm(10);
  Line line;
  line.str("keel: fatal signal ").dec(sig).str(" (").str(signal_name(sig)).str(") in thread ").dec(tid);
  if (tid == getpid()) line.str(" (main)");
  if (info && info->si_code > 0) line.str(", address ").hex(reinterpret_cast<uintptr_t>(info->si_addr));
  line.str("\n").flush();
  const auto* uc = static_cast<const ucontext_t*>(context);
  if (const uintptr_t pc = instruction_of(uc); pc != 0) {
    const bool known = describe(line.str("  at "), pc);
    line.str("\n").flush();
    if (const uintptr_t caller = known ? 0 : caller_of(uc); caller != 0) {
      describe(line.str("  called from (if a call brought it there) "), caller);
      line.str("\n").flush();
    }
  }
  line.str("keel: stack:\n").flush();
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
  // With the default action back, the signal (pending until the handler returns, or met again when
  // the faulting instruction reruns) ends the process with its own status.
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

void install_crash_report() {
#if defined(__SANITIZE_ADDRESS__)
  return;  // AddressSanitizer's own report says more, and its handler is installed before main()
#endif
  const ssize_t n = readlink("/proc/self/exe", g_executable, sizeof g_executable - 1);
  g_executable[n > 0 ? n : 0] = '\0';
  if (pipe2(g_probe, O_CLOEXEC | O_NONBLOCK) != 0) g_probe[0] = g_probe[1] = -1;
  // Load libgcc's unwinder and bind dladdr1 now, not first inside the handler.
  void* warm[1];
  backtrace(warm, 1);
  Dl_info info{};
  link_map* module = nullptr;
  dladdr1(reinterpret_cast<void*>(&install_crash_report), &info, reinterpret_cast<void**>(&module), RTLD_DL_LINKMAP);
  static char alternate_stack[1 << 16];
  stack_t ss{};
  ss.ss_sp = alternate_stack;
  ss.ss_size = sizeof alternate_stack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = report_crash;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  // Every fatal signal blocked while the report is written: a second fault in the handler itself
  // ends the process at once instead of nesting.
  sigemptyset(&sa.sa_mask);
  for (int sig : kFatalSignals) sigaddset(&sa.sa_mask, sig);
  for (int sig : kFatalSignals) sigaction(sig, &sa, nullptr);
}

}  // namespace keel
