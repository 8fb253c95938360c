// Rule reward from the built-in task checker: 1 for an exact answer, 0 otherwise,
// and nothing for prompts outside the built-in families (the caller decides what that means).
#pragma once

#include <optional>
#include <string>

namespace keel {

std::optional<double> task_reward(const std::string& prompt, const std::string& response);

}  // namespace keel
