#include "reward/task_reward.h"

#include "core/tasks.h"

namespace keel {

std::optional<double> task_reward(const std::string& prompt, const std::string& response) {
  if (!task_family_of(prompt)) return std::nullopt;
  return check_task(prompt, response) ? 1.0 : 0.0;
}

}  // namespace keel
