// Data commands: tokenizer training and encoding, corpus tokenization, task export.
#include <iostream>

#include "actors/task_export.h"
#include "core/corpus.h"
#include "core/tokenizer.h"
#include "core/tokenizer_training.h"
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
  std::cerr << "tokenizer train: " << train_tokenizer_on_corpus(corpus, sp, out) << " documents\n";
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
  std::string bad_lines = "fail", tokenizer, out, split = "auto";
  po::options_description d("keel data tokenize");
  add_corpus_options(d, corpus, bad_lines);
  // clang-format off
  d.add_options()("tokenizer", po::value(&tokenizer)->required(), "tokenizer file or directory")(
      "out", po::value(&out)->required(), "output directory (train.bin, val.bin)")(
      "val-fraction", po::value(&corpus.val_fraction)->default_value(corpus.val_fraction),
      "share held out: of documents, of pieces (paragraph, block), or of each document's text (tail)")(
      "split", po::value(&split)->default_value(split),
      "how the held-out part is cut: document | paragraph | block | tail | auto (document; a plain-text file "
      "without --doc-separator in blocks, so one big file splits as it is)")(
      "block-chars", po::value(&corpus.block_chars)->default_value(corpus.block_chars),
      "characters per block (--split block or auto), cut at the next line end")(
      "seed", po::value(&corpus.seed)->default_value(corpus.seed), "seed of the held-out choice");
  // clang-format on
  if (parse_options(args, "data tokenize", "Tokenizes a corpus into memory-mappable token files.", d).help) return 0;
  corpus.bad_lines = parse_bad_line_policy(bad_lines);
  corpus.split = parse_corpus_split(split);
  auto tok = load_tokenizer(tokenizer);
  const auto s = tokenize_corpus(corpus, *tok, out);
  std::cout << "files " << s.files << " | train " << s.docs_train << " pieces " << s.tokens_train << " tokens | val "
            << s.docs_val << " pieces " << s.tokens_val << " tokens\n";
  std::cout << "unigram cross-entropy of val under train (nats/token): "
            << unigram_cross_entropy(out + "/train.bin", out + "/val.bin") << "\n";
  return 0;
}

int cmd_tasks_export(const Args& args) {
  TaskExportOptions o;
  std::string out, device = "cpu";
  int threads = 0;
  po::options_description d("keel tasks export");
  // clang-format off
  d.add_options()("split", po::value(&o.split)->default_value(o.split), "train | held-out")(
      "per-family", po::value(&o.per_family)->default_value(o.per_family), "examples of each family")(
      "families", po::value(&o.families)->multitoken(), "families (default all): arithmetic reverse sort count")(
      "seed", po::value(&o.seed)->default_value(o.seed), "generation seed")(
      "pairs", po::bool_switch(&o.pairs), "write preference pairs {prompt, chosen, rejected, family}: the right answer against a wrong one")(
      "wrong", po::value(&o.wrong)->default_value(o.wrong),
      "--pairs: wrong answers that are near misses (near), random answers of the same shape (random), either (mixed), "
      "or the --model's own wrong answers (sampled; a near miss where all its samples were right)")(
      "model", po::value(&o.model_dir), "--wrong sampled: the model whose answers are sampled (an SFT model directory)")(
      "samples", po::value(&o.samples)->default_value(o.samples), "--wrong sampled: draws per prompt")(
      "temperature", po::value(&o.temperature)->default_value(o.temperature), "--wrong sampled: sampling temperature")(
      "threads", po::value(&threads)->default_value(threads), "--wrong sampled: LibTorch threads (0 = all cores)")(
      "out", po::value(&out)->required(), "output JSONL ({prompt, response, family})");
  // clang-format on
  if (parse_options(args, "tasks export", "Writes built-in tasks as SFT JSONL.", d).help) return 0;
  const auto dev = o.pairs && o.wrong == "sampled" ? apply_runtime(threads, device) : torch::Device(torch::kCPU);
  std::cout << export_tasks(o, dev, out, std::cout) << " tasks written to " << out << "\n";
  return 0;
}

}  // namespace keel
