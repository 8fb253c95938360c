// Text corpora -> token files. A corpus is files or directories (searched recursively):
// *.jsonl files give one document per line from the "text" field; any other text file is
// plain text, one document per file, or several when `doc_separator` lines split it.
// Binary files (a NUL byte in the first 4 KiB) and second paths to the same file are skipped and reported.
//
// The held-out part is chosen per piece, and a piece is never in both parts. How documents are cut
// into pieces (CorpusSplit):
//   document   each document is one piece; a hash of (seed, path, index) holds out val_fraction
//              of them (many documents: a directory of files, JSONL, fortune files).
//   paragraph  a document is cut at blank lines; block: at the first line end after block_chars
//              characters. Within each document the held-out pieces are a systematic sample with a
//              seeded offset, so a document of n pieces holds out floor(n * val_fraction) or one more,
//              spread over the text (one book: some of its pages held out).
//   tail       the last val_fraction of each document's characters (from a line start) is held
//              out (one book: its last pages), as nanoGPT splits Shakespeare.
//   auto       document, except that a plain-text file read without doc_separator is cut into
//              blocks: one big file splits without being rewritten.
// Every choice is deterministic from the seed. Token files get an EOS at the end of each document
// and wherever the text of one part is interrupted by the other, so no training sequence joins text
// across a held-out gap.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/jsonl.h"
#include "core/tokenizer.h"

namespace keel {

enum class CorpusSplit { kAuto, kDocument, kParagraph, kBlock, kTail };

// "auto" | "document" | "paragraph" | "block" | "tail"; anything else is an error naming the choices.
CorpusSplit parse_corpus_split(const std::string& name);

struct CorpusOptions {
  std::vector<std::string> inputs;  // files or directories
  std::string doc_separator;        // a line equal to this ends a plain-text document ("" = whole file)
  double val_fraction = 0.02;       // share of the text held out (of pieces, or of characters for tail)
  CorpusSplit split = CorpusSplit::kAuto;
  int64_t block_chars = 8192;  // piece size of block splitting (cut at the next line end)
  uint64_t seed = 1;
  BadLinePolicy bad_lines = BadLinePolicy::kFail;
  void validate() const;
};

// One piece of a document: the unit of the held-out choice.
struct CorpusPiece {
  const std::string& text;
  bool held_out;
  bool ends_document;
};

struct CorpusStats {
  int64_t files = 0, docs_train = 0, docs_val = 0, tokens_train = 0, tokens_val = 0;  // docs: pieces of each part
};

// Calls `fn` for every piece of every document, in text order (deterministic).
void for_each_piece(const CorpusOptions& options, const std::function<void(const CorpusPiece&)>& fn);

// Tokenizes every document, appends EOS, writes <out_dir>/train.bin and <out_dir>/val.bin.
CorpusStats tokenize_corpus(const CorpusOptions& options, const Tokenizer& tokenizer, const std::string& out_dir);

// Cross-entropy in nats/token of `eval_file` under the unigram distribution of `train_file`
// (add-one smoothed): the loss a model that ignores context would reach.
double unigram_cross_entropy(const std::string& train_file, const std::string& eval_file);

}  // namespace keel
