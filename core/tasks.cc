#include "core/tasks.h"

#include <algorithm>
#include <random>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"

namespace keel {

namespace {

const char* const kWords[] = {
    "apple",  "river",  "stone",   "cloud",   "tiger",  "maple",  "honey",  "piano",  "lemon",  "ocean",  "eagle",   "frost",
    "grape",  "house",  "island",  "jelly",   "kite",   "light",  "mango",  "night",  "olive",  "pearl",  "queen",   "robin",
    "sugar",  "table",  "umbra",   "violet",  "water",  "yellow", "zebra",  "amber",  "bread",  "candle", "dragon",  "ember",
    "forest", "garden", "harbor",  "iron",    "jungle", "kettle", "ladder", "mirror", "needle", "orange", "pepper",  "quiet",
    "rocket", "silver", "thunder", "velvet",  "window", "anchor", "basket", "copper", "desert", "engine", "feather", "glass",
    "hammer", "ivory",  "jacket",  "lantern", "meadow", "nickel", "oyster", "pillow", "rabbit", "saddle", "tunnel",  "valley",
    "wagon",  "cactus", "dolphin", "falcon",  "ginger", "helmet", "marble", "walnut"};
constexpr int kNumWords = sizeof(kWords) / sizeof(kWords[0]);

const char* const kPrefix[] = {"Compute ", "Reverse the words: ", "Sort the words: ", "Count the words: "};

// 1 in 5 prompts (by hash) belongs to the held-out split.
bool is_held_out(const std::string& prompt) { return fnv1a64(prompt) % 5 == 0; }

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream is(s);
  std::vector<std::string> w;
  std::string x;
  while (is >> x) w.push_back(x);
  return w;
}
std::string join(const std::vector<std::string>& w) {
  std::string out;
  for (size_t i = 0; i < w.size(); ++i) out += (i ? " " : "") + w[i];
  return out;
}
std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  s = s.substr(b, e - b + 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

std::string make_prompt(TaskFamily f, std::mt19937_64& rng) {
  if (f == TaskFamily::kArithmetic) {
    std::uniform_int_distribution<int> num(0, 19), op(0, 1);
    int a = num(rng), b = num(rng);
    const bool plus = op(rng) == 0;
    if (!plus && b > a) std::swap(a, b);
    return std::string(kPrefix[0]) + std::to_string(a) + (plus ? " + " : " - ") + std::to_string(b) + ".";
  }
  std::uniform_int_distribution<int> len(3, 5), word(0, kNumWords - 1);
  std::vector<std::string> w(static_cast<size_t>(len(rng)));
  for (auto& x : w) x = kWords[word(rng)];
  return std::string(kPrefix[static_cast<int>(f)]) + join(w);
}

}  // namespace

const char* task_family_name(TaskFamily f) {
  switch (f) {
    case TaskFamily::kArithmetic:
      return "arithmetic";
    case TaskFamily::kReverse:
      return "reverse";
    case TaskFamily::kSort:
      return "sort";
    case TaskFamily::kCount:
      return "count";
  }
  return "?";
}

TaskFamily parse_task_family(const std::string& name) {
  for (auto f : kAllTaskFamilies)
    if (name == task_family_name(f)) return f;
  KEEL_FAIL("unknown task family '" << name << "' (arithmetic, reverse, sort, count)");
}

std::vector<TaskFamily> parse_task_families(const std::vector<std::string>& names) {
  std::vector<TaskFamily> out;
  for (const auto& n : names) out.push_back(parse_task_family(n));
  if (out.empty()) out.assign(std::begin(kAllTaskFamilies), std::end(kAllTaskFamilies));
  return out;
}

std::vector<TaskExample> make_tasks(TaskSplit split, int per_family, uint64_t seed, const std::vector<TaskFamily>& families) {
  std::vector<std::vector<TaskExample>> by_family;
  for (auto f : families) {
    std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(f));
    std::set<std::string> seen;
    std::vector<TaskExample> out;
    int attempts = 0;
    while (static_cast<int>(out.size()) < per_family) {
      KEEL_CHECK(++attempts < per_family * 200 + 1000,
                 "cannot draw " << per_family << " distinct " << task_family_name(f) << " tasks");
      auto p = make_prompt(f, rng);
      if (is_held_out(p) != (split == TaskSplit::kHeldOut)) continue;
      // Held-out prompts are distinct; training prompts are i.i.d. draws, repeats allowed.
      if (split == TaskSplit::kHeldOut && !seen.insert(p).second) continue;
      out.push_back({f, p, *solve_task(p)});
    }
    by_family.push_back(std::move(out));
  }
  std::vector<TaskExample> all;
  for (int i = 0; i < per_family; ++i)
    for (auto& v : by_family) all.push_back(v[static_cast<size_t>(i)]);
  return all;
}

std::optional<TaskFamily> task_family_of(const std::string& prompt) {
  for (auto f : kAllTaskFamilies)
    if (prompt.rfind(kPrefix[static_cast<int>(f)], 0) == 0) return f;
  return std::nullopt;
}

std::optional<std::string> solve_task(const std::string& prompt) {
  const auto f = task_family_of(prompt);
  if (!f) return std::nullopt;
  const std::string body = prompt.substr(std::string(kPrefix[static_cast<int>(*f)]).size());
  auto words = split_words(body);
  switch (*f) {
    case TaskFamily::kArithmetic: {
      long a = 0, b = 0;
      char op = 0, dot = 0;
      std::istringstream is(body);
      if (!(is >> a >> op >> b) || (op != '+' && op != '-')) return std::nullopt;
      if (is >> dot && dot != '.') return std::nullopt;
      return std::to_string(op == '+' ? a + b : a - b);
    }
    case TaskFamily::kReverse:
      std::reverse(words.begin(), words.end());
      return join(words);
    case TaskFamily::kSort:
      std::sort(words.begin(), words.end());
      return join(words);
    case TaskFamily::kCount:
      return std::to_string(words.size());
  }
  return std::nullopt;
}

WrongAnswerKind parse_wrong_answer_kind(const std::string& s) {
  if (s == "mixed") return WrongAnswerKind::kMixed;
  if (s == "near") return WrongAnswerKind::kNear;
  if (s == "random") return WrongAnswerKind::kRandom;
  KEEL_FAIL("wrong-answer kind must be mixed, near or random, got '" << s << "'");
}

std::string wrong_answer(const std::string& prompt, uint64_t seed, WrongAnswerKind kind) {
  const auto f = task_family_of(prompt);
  const auto answer = solve_task(prompt);
  KEEL_CHECK(f && answer, "not a built-in task prompt: " << prompt);
  std::mt19937_64 rng(seed ^ fnv1a64(prompt));
  std::uniform_int_distribution<int> coin(0, 1);
  const bool toss = coin(rng) == 0;
  const bool near = kind == WrongAnswerKind::kNear || (kind == WrongAnswerKind::kMixed && toss);
  if (*f == TaskFamily::kArithmetic || *f == TaskFamily::kCount) {
    const long right = std::stol(*answer);
    std::uniform_int_distribution<int> small(1, *f == TaskFamily::kCount ? 2 : 3), wide(0, *f == TaskFamily::kCount ? 9 : 38);
    long wrong = right;
    while (wrong == right || wrong < 0) wrong = near ? right + (coin(rng) ? 1 : -1) * small(rng) : wide(rng);
    return std::to_string(wrong);
  }
  const std::string body = prompt.substr(std::string(kPrefix[static_cast<int>(*f)]).size());
  auto words = split_words(*answer);
  const auto original = split_words(body);
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::vector<std::string> w = words;
    if (near) {
      std::uniform_int_distribution<size_t> at(0, w.size() - 2);
      if (coin(rng) && original != words) {
        w = original;  // the words left as given
      } else {
        const size_t i = at(rng);
        std::swap(w[i], w[i + 1]);
      }
    } else {
      std::shuffle(w.begin(), w.end(), rng);
    }
    if (join(w) != *answer) return join(w);
  }
  // Every arrangement equals the answer (all words the same): drop a word instead.
  words.pop_back();
  return join(words);
}

bool check_task(const std::string& prompt, const std::string& response) {
  const auto answer = solve_task(prompt);
  return answer && trim(response) == *answer;
}

}  // namespace keel
