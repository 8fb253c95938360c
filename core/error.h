// Errors: KEEL_CHECK for broken invariants and bad input alike. The message names the problem
// (and the file or field concerned); KeelError is caught at the process edge and printed.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace keel {

class KeelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] inline void fail(const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  os << msg << " [" << file << ":" << line << "]";
  throw KeelError(os.str());
}
}  // namespace detail

}  // namespace keel

// KEEL_CHECK(cond, "text " << value): throws KeelError with the streamed message when cond is false.
#define KEEL_CHECK(cond, msg)                                   \
  do {                                                          \
    if (!(cond)) {                                              \
      std::ostringstream keel_os_;                              \
      keel_os_ << msg;                                          \
      ::keel::detail::fail(__FILE__, __LINE__, keel_os_.str()); \
    }                                                           \
  } while (0)

#define KEEL_FAIL(msg) KEEL_CHECK(false, msg)
