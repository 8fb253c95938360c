#include "tests/support/test_support.h"

#include "core/error.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace keel::test {

namespace fs = std::filesystem;

static std::string env_or(const char* name, const std::string& dflt) {
  const char* v = std::getenv(name);
  return v ? v : dflt;
}

std::string source_dir() { return env_or("KEEL_SOURCE_DIR", "."); }
std::string keel_bin() { return env_or("KEEL_BIN", "keel"); }

std::string temp_path(const std::string& name) {
  return env_or("KEEL_TEST_TMP", fs::temp_directory_path().string() + "/keel-tests") + "/" + name;
}

std::string temp_dir(const std::string& name) {
  const std::string dir = temp_path(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

RunResult run(const std::string& command) {
  RunResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + command);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

RunResult python(const std::string& script_and_args) {
  return run("/usr/bin/python3 " + source_dir() + "/tests/reference/" + script_and_args);
}

RunResult keel(const std::string& args) { return run(keel_bin() + " " + args); }

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

std::string keel_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const KeelError& e) {
    return e.what();
  }
  return "";
}

}  // namespace keel::test
