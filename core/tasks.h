// The built-in task suite: instruction-style problems with exact answers a program can check.
// Families: arithmetic on operands 0..19 ("Compute 17 + 8."), reverse ("Reverse the words: a b c"),
// sort ("Sort the words: c a b"), count ("Count the words: a b c").
// Train and held-out splits are disjoint by construction (a hash of the prompt picks the split),
// and generated reproducibly from a seed. Held-out prompts are distinct; training prompts are
// i.i.d. draws from the training side of the split, so a family's training set may repeat a prompt. solve() recomputes the answer from the prompt text
// alone, so a reward service can score any prompt of these families without a lookup table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace keel {

enum class TaskFamily { kArithmetic, kReverse, kSort, kCount };
constexpr TaskFamily kAllTaskFamilies[] = {TaskFamily::kArithmetic, TaskFamily::kReverse, TaskFamily::kSort, TaskFamily::kCount};

const char* task_family_name(TaskFamily f);
TaskFamily parse_task_family(const std::string& name);
// The families named (each checked by parse_task_family); none named: all of them.
std::vector<TaskFamily> parse_task_families(const std::vector<std::string>& names);

enum class TaskSplit { kTrain, kHeldOut };

struct TaskExample {
  TaskFamily family;
  std::string prompt;  // the user's instruction, without any chat template
  std::string answer;  // the exact expected response
};

// `per_family` examples of each requested family in `split`, interleaved, from `seed`.
std::vector<TaskExample> make_tasks(TaskSplit split, int per_family, uint64_t seed,
                                    const std::vector<TaskFamily>& families = {std::begin(kAllTaskFamilies),
                                                                               std::end(kAllTaskFamilies)});

// The family of a task prompt, if it is one.
std::optional<TaskFamily> task_family_of(const std::string& prompt);
// The exact answer to a prompt of a built-in family, or nothing if the prompt is not one.
std::optional<std::string> solve_task(const std::string& prompt);
// A wrong answer of the right form for a prompt of a built-in family, drawn from `seed`: a near miss
// (an answer off by a little, the words in the prompt's order, two words swapped, a count off by
// one) or a random answer of the same shape. Never equal to the right answer. The rejected side of
// the suite's preference pairs.
enum class WrongAnswerKind { kMixed, kNear, kRandom };          // kMixed: near or random, even odds
WrongAnswerKind parse_wrong_answer_kind(const std::string& s);  // "mixed" | "near" | "random"
std::string wrong_answer(const std::string& prompt, uint64_t seed, WrongAnswerKind kind = WrongAnswerKind::kMixed);

// True when `response` (surrounding whitespace and a trailing period ignored) equals the answer.
bool check_task(const std::string& prompt, const std::string& response);

}  // namespace keel
