// What a keel process prints when it dies of a fatal signal: enough to find the faulting code from
// the log alone, since a crash seen once on a lent machine may not be seen again.
#pragma once

namespace keel {

// Installs handlers for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT. On such a signal the handler
// writes to stderr, in order:
//   keel: fatal signal 11 (SIGSEGV) in thread 1234 (main), address 0x0
//     at MODULE(+0xOFFSET) SYMBOL+0xOFF   the instruction it stopped at ("in no module" otherwise)
//     called from (if a call brought it there) MODULE(+0xOFFSET) ...
//                                         the word on top of the stack (AArch64: the link
//                                         register), printed only where the instruction is in no
//                                         module (a call through a bad pointer), which is exactly
//                                         where the unwinder stops
//   keel: stack:                          then glibc's unwound frames, one a line
// MODULE is a full path (the executable's read from /proc/self/exe at installation); offsets are
// from the module's load bias, as `addr2line -f -C -e MODULE 0xOFFSET` takes them; symbols are
// mangled (`c++filt`). The address is the faulting one for SIGSEGV/SIGBUS and the instruction's
// for SIGILL/SIGFPE; it is left out for a signal another process sent.
// Then the process dies of the same signal (exit status 128 + N, a core where the system keeps
// one). Where several threads fault at once, the first reports and the others wait for the end. A
// handler that hangs (the loader's lock held at the fault) is ended by SIGALRM after 10 s. The
// main thread's handler runs on a stack of its own, so a stack overflow there still reports; one
// in another thread ends the process with no report. Under AddressSanitizer nothing is installed
// (its own report says more).
// Call once at the start of main(), before threads start; later threads inherit the handlers.
void install_crash_report();

}  // namespace keel
