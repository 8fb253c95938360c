// Text corpora -> token files. A corpus is files or directories (searched recursively):
// *.jsonl files give one document per line from the "text" field; any other text file is
// plain text, one document per file, or several when `doc_separator` lines split it.
// Binary files (a NUL byte in the first 4 KiB) and second paths to the same file are skipped and reported.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/jsonl.h"
#include "core/tokenizer.h"

namespace keel {

struct CorpusOptions {
  std::vector<std::string> inputs;  // files or directories
  std::string doc_separator;        // a line equal to this ends a plain-text document ("" = whole file)
  double val_fraction = 0.02;       // share of documents held out, chosen by a hash of (seed, path, index)
  uint64_t seed = 1;
  BadLinePolicy bad_lines = BadLinePolicy::kFail;
};

struct CorpusStats {
  int64_t files = 0, docs_train = 0, docs_val = 0, tokens_train = 0, tokens_val = 0;
};

// Calls `fn(document, held_out)` for every document in a stable order.
void for_each_document(const CorpusOptions& options, const std::function<void(const std::string&, bool)>& fn);

// Tokenizes every document, appends EOS, writes <out_dir>/train.bin and <out_dir>/val.bin.
CorpusStats tokenize_corpus(const CorpusOptions& options, const Tokenizer& tokenizer, const std::string& out_dir);

// Cross-entropy in nats/token of `eval_file` under the unigram distribution of `train_file`
// (add-one smoothed): the loss a model that ignores context would reach.
double unigram_cross_entropy(const std::string& train_file, const std::string& eval_file);

}  // namespace keel
