// Command lines as text, with the POSIX shell's quoting rules: what a user types after
// `--ppo-args` or writes in a config file splits into the words a shell would give the program,
// and a command line printed by keel pastes back into a shell unchanged. Also an option's value
// read from, or replaced in, a command line's words (keel launch passing options to its roles).
#pragma once

#include <string>
#include <vector>

namespace keel {

// Splits at unquoted whitespace. 'single quotes' keep everything literally; "double quotes" keep
// everything but \" \\ \$ \` (backslash escapes them); outside quotes a backslash keeps the next
// character. No expansion of variables, globs or substitutions. An unterminated quote or a trailing
// backslash is an error naming the text.
std::vector<std::string> shell_split(const std::string& text);

// One word quoted so that a shell (and shell_split) gives it back unchanged: left bare when it holds
// only safe characters, in single quotes otherwise.
std::string shell_quote(const std::string& word);

// Words joined by spaces, each quoted as needed.
std::string shell_join(const std::vector<std::string>& words);

// The value of `--name` in a command line's words (`--name v` or `--name=v`), the last one where
// it is given more than once; empty when absent. Names are matched whole (not an abbreviation).
std::string arg_value(const std::vector<std::string>& args, const std::string& name);

// `args` with every `--name v` and `--name=v` removed and `--name value` appended.
std::vector<std::string> with_option(const std::vector<std::string>& args, const std::string& name, const std::string& value);

}  // namespace keel
