// Data commands: tokenizer training and encoding, corpus tokenization, task export.
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/model_loader.h"
#include "core/corpus.h"
#include "core/error.h"
#include "actors/task_eval.h"
#include "core/checkpoint.h"
#include "core/tasks.h"
#include "core/tokenizer.h"
#include "launch/commands.h"
#include "launch/options.h"

namespace keel {

namespace {
void add_corpus_options(po::options_description& d, CorpusOptions& c, std::string& bad_lines) {
  // clang-format off
  d.add_options()("input", po::value(&c.inputs)->multitoken()->required(), "corpus files or directories")(
      "doc-separator", po::value(&c.doc_separator)->default_value(c.doc_separator),
      "a line equal to this ends a plain-text document (e.g. % for fortune files)")(
      "bad-lines", po::value(&bad_lines)->default_value(bad_lines), "JSONL lines that are not valid: fail | skip");
  // clang-format on
}
}  // namespace

int cmd_tokenizer_train(const Args& args) {
  CorpusOptions corpus;
  SentencePieceTrainOptions sp;
  std::string bad_lines = "fail", out;
  po::options_description d("keel tokenizer train");
  add_corpus_options(d, corpus, bad_lines);
  // clang-format off
  d.add_options()("out", po::value(&out)->required(), "output path prefix: writes <out>.model and <out>.vocab")(
      "vocab-size", po::value(&sp.vocab_size)->default_value(sp.vocab_size), "vocabulary size")(
      "model-type", po::value(&sp.model_type)->default_value(sp.model_type), "bpe | unigram");
  // clang-format on
  if (parse_options(args, "tokenizer train", "Trains a SentencePiece model (unk 0, bos 1, eos 2, pad 3).", d).help) return 0;
  corpus.bad_lines = parse_bad_line_policy(bad_lines);
  corpus.val_fraction = 0;
  const std::string text = out + ".corpus.txt";
  {
    std::ofstream f(text);
    int64_t docs = 0;
    for_each_document(corpus, [&](const std::string& doc, bool) {
      f << doc << (doc.empty() || doc.back() != '\n' ? "\n" : "");
      ++docs;
    });
    KEEL_CHECK(docs > 0, "tokenizer train: the corpus holds no documents");
    std::cerr << "tokenizer train: " << docs << " documents\n";
  }
  sp.inputs = {text};
  sp.model_prefix = out;
  train_sentencepiece(sp);
  std::filesystem::remove(text);
  std::cout << out << ".model\n";
  return 0;
}

int cmd_tokenizer_encode(const Args& args) {
  std::string tokenizer, text;
  po::options_description d("keel tokenizer encode");
  // clang-format off
  d.add_options()("tokenizer", po::value(&tokenizer)->required(), "tokenizer file or directory")(
      "text", po::value(&text)->required(), "text to encode");
  // clang-format on
  if (parse_options(args, "tokenizer encode", "Prints the ids of --text, space separated.", d).help) return 0;
  auto tok = load_tokenizer(tokenizer);
  const auto ids = tok->encode(text);
  for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
  std::cout << "\n";
  return 0;
}

int cmd_data_tokenize(const Args& args) {
  CorpusOptions corpus;
  std::string bad_lines = "fail", tokenizer, out;
  po::options_description d("keel data tokenize");
  add_corpus_options(d, corpus, bad_lines);
  // clang-format off
  d.add_options()("tokenizer", po::value(&tokenizer)->required(), "tokenizer file or directory")(
      "out", po::value(&out)->required(), "output directory (train.bin, val.bin)")(
      "val-fraction", po::value(&corpus.val_fraction)->default_value(corpus.val_fraction), "share of documents held out")(
      "seed", po::value(&corpus.seed)->default_value(corpus.seed), "seed of the held-out choice");
  // clang-format on
  if (parse_options(args, "data tokenize", "Tokenizes a corpus into memory-mappable token files.", d).help) return 0;
  corpus.bad_lines = parse_bad_line_policy(bad_lines);
  auto tok = load_tokenizer(tokenizer);
  const auto s = tokenize_corpus(corpus, *tok, out);
  std::cout << "files " << s.files << " | train " << s.docs_train << " docs " << s.tokens_train << " tokens | val " << s.docs_val
            << " docs " << s.tokens_val << " tokens\n";
  std::cout << "unigram cross-entropy of val under train (nats/token): "
            << unigram_cross_entropy(out + "/train.bin", out + "/val.bin") << "\n";
  return 0;
}

int cmd_tasks_export(const Args& args) {
  std::string split = "train", out;
  int per_family = 1000;
  bool pairs = false;
  std::string wrong = "mixed";
  uint64_t seed = 1;
  std::vector<std::string> families;
  std::string model_dir, device = "cpu";
  int samples = 4, threads = 0;
  double temperature = 1.0;
  po::options_description d("keel tasks export");
  // clang-format off
  d.add_options()("split", po::value(&split)->default_value(split), "train | held-out")(
      "per-family", po::value(&per_family)->default_value(per_family), "examples of each family")(
      "families", po::value(&families)->multitoken(), "families (default all): arithmetic reverse sort count")(
      "seed", po::value(&seed)->default_value(seed), "generation seed")(
      "pairs", po::bool_switch(&pairs), "write preference pairs {prompt, chosen, rejected, family}: the right answer against a wrong one")(
      "wrong", po::value(&wrong)->default_value(wrong),
      "--pairs: wrong answers that are near misses (near), random answers of the same shape (random), either (mixed), "
      "or the --model's own wrong answers (sampled; a near miss where all its samples were right)")(
      "model", po::value(&model_dir), "--wrong sampled: the model whose answers are sampled (an SFT model directory)")(
      "samples", po::value(&samples)->default_value(samples), "--wrong sampled: draws per prompt")(
      "temperature", po::value(&temperature)->default_value(temperature), "--wrong sampled: sampling temperature")(
      "threads", po::value(&threads)->default_value(threads), "--wrong sampled: LibTorch threads (0 = all cores)")(
      "out", po::value(&out)->required(), "output JSONL ({prompt, response, family})");
  // clang-format on
  if (parse_options(args, "tasks export", "Writes built-in tasks as SFT JSONL.", d).help) return 0;
  KEEL_CHECK(split == "train" || split == "held-out", "--split must be train or held-out");
  std::vector<TaskFamily> fams;
  for (const auto& f : families) fams.push_back(parse_task_family(f));
  if (fams.empty()) fams.assign(std::begin(kAllTaskFamilies), std::end(kAllTaskFamilies));
  const auto tasks = make_tasks(split == "train" ? TaskSplit::kTrain : TaskSplit::kHeldOut, per_family, seed, fams);
  std::ofstream f(out);
  KEEL_CHECK(f, "cannot write " << out);
  uint64_t i = 0;
  const bool sampled = wrong == "sampled";
  const auto kind = sampled ? WrongAnswerKind::kNear : parse_wrong_answer_kind(wrong);
  std::vector<std::string> own;
  if (pairs && sampled) {
    KEEL_CHECK(!model_dir.empty(), "--wrong sampled needs --model");
    KEEL_CHECK(samples >= 1 && temperature > 0, "--wrong sampled needs --samples >= 1 and --temperature > 0");
    apply_runtime(threads, device);
    auto [model, tok_file, tok] = load_model_dir(model_dir);
    model->eval();
    torch::NoGradGuard ng;
    own = sample_wrong_answers(model, *tok, tasks, PromptTemplate::kChat, samples, temperature, seed);
    const auto found = std::count_if(own.begin(), own.end(), [](const std::string& s) { return !s.empty(); });
    std::cout << found << " of " << tasks.size() << " prompts got a sampled wrong answer; the rest a near miss\n";
  }
  for (const auto& t : tasks) {
    std::string rejected = sampled && !own[i].empty() ? own[i] : wrong_answer(t.prompt, seed * 7919 + i, kind);
    ++i;
    if (pairs)
      f << nlohmann::json{{"prompt", t.prompt},
                          {"chosen", t.answer},
                          {"rejected", rejected},
                          {"family", task_family_name(t.family)}}
               .dump()
        << "\n";
    else
      f << nlohmann::json{{"prompt", t.prompt}, {"response", t.answer}, {"family", task_family_name(t.family)}}.dump() << "\n";
  }
  std::cout << tasks.size() << " tasks written to " << out << "\n";
  return 0;
}

}  // namespace keel
