#include "core/crash_report.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <link.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <csignal>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace keel {
namespace {

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

// Where a call to the interrupted instruction came from: x86-64 pushes the return address on the
// stack, AArch64 keeps it in the link register. Read only where the instruction is in no module:
// after a stack overflow the top of the stack cannot be read.
uintptr_t caller_of(const ucontext_t* uc) {
#if defined(__x86_64__)
  return *reinterpret_cast<const uintptr_t*>(uc->uc_mcontext.gregs[REG_RSP]);
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
  line.str(*info.dli_fname ? info.dli_fname : "(the executable)").str("(+").hex(addr - module->l_addr).str(")");
  if (info.dli_sname) line.str(" ").str(info.dli_sname).str("+").hex(addr - reinterpret_cast<uintptr_t>(info.dli_saddr));
  return true;
}

void report_crash(int sig, siginfo_t* info, void* context) {
  // dladdr and the unwinder take the loader's lock; if the fault came while it was held, the
  // alarm ends the process rather than leaving it hung.
  std::signal(SIGALRM, SIG_DFL);
  alarm(10);
  const long tid = syscall(SYS_gettid);
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
      describe(line.str("  called from "), caller);
      line.str("\n").flush();
    }
  }
  line.str("keel: stack:\n").flush();
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
  // SA_RESETHAND restored the default action: the signal, raised again or met again when the
  // faulting instruction reruns, ends the process with its own status.
  std::raise(sig);
}

}  // namespace

void install_crash_report() {
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
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) sigaction(sig, &sa, nullptr);
}

}  // namespace keel
