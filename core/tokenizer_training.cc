#include "core/tokenizer_training.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace keel {

int64_t train_tokenizer_on_corpus(CorpusOptions corpus, SentencePieceTrainOptions sp, const std::string& out_prefix) {
  corpus.val_fraction = 0;
  const std::string text = out_prefix + ".corpus.txt";
  int64_t docs = 0;
  {
    std::ofstream f(text);
    KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot write " << text);
    for_each_piece(corpus, [&](const CorpusPiece& p) {
      f << p.text << (p.text.empty() || p.text.back() != '\n' ? "\n" : "");
      docs += p.ends_document;
    });
    KEEL_CHECK_KIND(ErrorKind::kIo, f, "write to " << text << " failed");
  }
  if (docs == 0) {
    std::filesystem::remove(text);
    KEEL_FAIL("tokenizer train: the corpus holds no documents");
  }
  sp.inputs = {text};
  sp.model_prefix = out_prefix;
  train_sentencepiece(sp);
  std::filesystem::remove(text);
  return docs;
}

}  // namespace keel
