#include "core/jsonl.h"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

BadLinePolicy parse_bad_line_policy(const std::string& s) {
  if (s == "fail") return BadLinePolicy::kFail;
  if (s == "skip") return BadLinePolicy::kSkip;
  KEEL_FAIL("bad-line policy must be 'fail' or 'skip', got '" << s << "'");
}

JsonlReport read_jsonl(const std::string& path, BadLinePolicy policy, const std::function<void(const nlohmann::json&)>& handle) {
  std::ifstream f(path);
  KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot open " << path);
  JsonlReport r;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++r.lines;
    std::string reason;
    try {
      handle(nlohmann::json::parse(line));
      ++r.accepted;
      continue;
    } catch (const nlohmann::json::parse_error& e) {
      reason = std::string("not valid JSON: ") + e.what();
    } catch (const nlohmann::json::exception& e) {
      reason = std::string("wrong field type: ") + e.what();
    } catch (const KeelError& e) {
      // A line the handler rejects is bad data; any other failure (a full disk, a bug) is not.
      if (e.kind() != ErrorKind::kInvalidArgument && e.kind() != ErrorKind::kCorruptData) throw;
      reason = e.what();
    }
    const std::string where = path + ":" + std::to_string(lineno) + ": " + reason;
    if (policy == BadLinePolicy::kFail)
      throw KeelError(where + " (use --bad-lines skip to skip such lines)", ErrorKind::kCorruptData);
    std::cerr << "warning: skipped " << where << "\n";
    r.problems.push_back(where);
  }
  return r;
}

void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& rows) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot write " << tmp);
    for (const auto& r : rows) f << r.dump() << "\n";
    f.close();
    KEEL_CHECK_KIND(io_error_kind(errno), f, "write to " << tmp << " failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  KEEL_CHECK_KIND(ErrorKind::kIo, !ec, "cannot rename " << tmp << " to " << path << ": " << ec.message());
}

}  // namespace keel
