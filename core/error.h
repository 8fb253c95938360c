// Errors: KEEL_CHECK for broken invariants and bad input alike. The message names the problem
// (and the file or field concerned); KeelError is caught at the process edge and printed.
//
// Every KeelError carries an ErrorKind so that a catch site can tell an expected failure it can
// work around (a full disk, a missing file, a peer that went away) from a bug, without matching
// on message text (as leveldb's Status::IsIOError() / IsCorruption()). Plain KEEL_CHECK /
// KEEL_FAIL throw kInvalidArgument; throw sites that mean something else say so with
// KEEL_CHECK_KIND / KEEL_FAIL_KIND. A catch site should branch on the kinds it handles and let
// every other kind propagate.
#pragma once

#include <cerrno>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace keel {

enum class ErrorKind {
  kInvalidArgument,  // bad input or configuration, or a broken invariant (the default)
  kCorruptData,      // a file or message that exists but is malformed, truncated or inconsistent
  kIo,               // a file or device that cannot be opened, read or written (missing, permissions)
  kOutOfSpace,       // no room: a full file system, shared-memory region or allocation (ENOSPC, ENOMEM)
  kPeer,             // another process misbehaved or went away (timeouts, protocol violations)
  kInternal,         // keel's own bug: a state that should be unreachable
};

// A stable lower-case name for logs and tests: "invalid_argument", "corrupt_data", "io", ...
constexpr const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "invalid_argument";
    case ErrorKind::kCorruptData:
      return "corrupt_data";
    case ErrorKind::kIo:
      return "io";
    case ErrorKind::kOutOfSpace:
      return "out_of_space";
    case ErrorKind::kPeer:
      return "peer";
    case ErrorKind::kInternal:
      return "internal";
  }
  return "unknown";
}

// The kind of a failed system call from its errno: kOutOfSpace when there was no room (ENOSPC,
// EDQUOT, ENOMEM), kIo otherwise.
constexpr ErrorKind io_error_kind(int err) {
  return err == ENOSPC || err == EDQUOT || err == ENOMEM ? ErrorKind::kOutOfSpace : ErrorKind::kIo;
}

// what() is the message for the user; where() is the source location of the check that threw
// ("core/corpus.cc:108"), for a developer: keel prints it only with KEEL_DEBUG=1 in the environment.
class KeelError : public std::runtime_error {
 public:
  explicit KeelError(const std::string& what, ErrorKind kind = ErrorKind::kInvalidArgument, std::string where = "")
      : std::runtime_error(what), kind_(kind), where_(std::move(where)) {}
  explicit KeelError(const char* what, ErrorKind kind = ErrorKind::kInvalidArgument) : std::runtime_error(what), kind_(kind) {}

  ErrorKind kind() const noexcept { return kind_; }
  const std::string& where() const noexcept { return where_; }

 private:
  ErrorKind kind_;
  std::string where_;
};

namespace detail {
// The path below the source tree's top folder: "/src/keel/core/corpus.cc" -> "core/corpus.cc".
inline std::string source_path(const char* file) {
  const std::string f = file;
  for (const char* top :
       {"/core/", "/learner/", "/actors/", "/reward/", "/replay/", "/wire/", "/launch/", "/tests/", "/bench/"}) {
    const auto at = f.rfind(top);
    if (at != std::string::npos) return f.substr(at + 1);
  }
  return f;
}

[[noreturn]] inline void fail(const char* file, int line, const std::string& msg, ErrorKind kind = ErrorKind::kInvalidArgument) {
  throw KeelError(msg, kind, source_path(file) + ":" + std::to_string(line));
}
}  // namespace detail

}  // namespace keel

// KEEL_CHECK_KIND(kind, cond, "text " << value): throws KeelError of `kind` (an ErrorKind, e.g.
// ::keel::ErrorKind::kIo or io_error_kind(errno)) with the streamed message, and the check's
// file:line as where(), when cond is false. `kind` is evaluated before the message, so it may read errno.
#define KEEL_CHECK_KIND(kind, cond, msg)                                    \
  do {                                                                      \
    if (!(cond)) {                                                          \
      const ::keel::ErrorKind keel_kind_ = (kind);                          \
      std::ostringstream keel_os_;                                          \
      keel_os_ << msg;                                                      \
      ::keel::detail::fail(__FILE__, __LINE__, keel_os_.str(), keel_kind_); \
    }                                                                       \
  } while (0)

#define KEEL_FAIL_KIND(kind, msg) KEEL_CHECK_KIND(kind, false, msg)

// KEEL_CHECK(cond, "text " << value): as KEEL_CHECK_KIND with kind kInvalidArgument.
#define KEEL_CHECK(cond, msg) KEEL_CHECK_KIND(::keel::ErrorKind::kInvalidArgument, cond, msg)

#define KEEL_FAIL(msg) KEEL_CHECK(false, msg)
