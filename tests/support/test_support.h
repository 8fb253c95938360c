// Helpers shared by keel's tests: temporary directories, the source tree, and running the
// independent references (Debian's /usr/bin/python3 with torch, node) and the keel binary.
#pragma once

#include <functional>
#include <string>

namespace keel::test {

std::string source_dir();            // KEEL_SOURCE_DIR
std::string keel_bin();              // KEEL_BIN: the built keel executable
std::string temp_dir(const std::string& name);  // a fresh, empty directory for this test
std::string temp_path(const std::string& name); // where temp_dir(name) is, left as it is

struct RunResult {
  int code = -1;
  std::string output;  // stdout and stderr together
};
// Runs a shell command, capturing its output.
RunResult run(const std::string& command);
// Runs tests/reference/<script> with /usr/bin/python3.
RunResult python(const std::string& script_and_args);
// Runs the keel binary with `args`.
RunResult keel(const std::string& args);

std::string shell_quote(const std::string& s);
std::string read_text(const std::string& path);
void write_text(const std::string& path, const std::string& text);
// Runs `f` and returns the message of the KeelError it throws ("" when it throws none; any other
// exception escapes and fails the test).
std::string keel_error_of(const std::function<void()>& f);

}  // namespace keel::test
