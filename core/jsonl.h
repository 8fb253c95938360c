// JSONL input with exact error locations. A bad line (not JSON, or rejected by the caller's
// handler) is reported as "<file>:<line>: <reason>"; under kSkip it is counted and logged,
// under kFail the read stops with a KeelError. Nothing is dropped silently.
// JSONL output: write_jsonl.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace keel {

enum class BadLinePolicy { kFail, kSkip };
BadLinePolicy parse_bad_line_policy(const std::string& s);  // "fail" | "skip"

struct JsonlReport {
  int64_t lines = 0;  // non-empty lines seen
  int64_t accepted = 0;
  std::vector<std::string> problems;  // "<file>:<line>: <reason>" for every skipped line
};

// Calls `handle` on each non-empty line's JSON value. `handle` throws KeelError to reject a line
// (its message becomes the reason). Returns what was read; logs skipped lines to stderr.
JsonlReport read_jsonl(const std::string& path, BadLinePolicy policy, const std::function<void(const nlohmann::json&)>& handle);

// Writes one JSON value per line to `path`, atomically (a temporary file renamed into place).
void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& rows);

}  // namespace keel
