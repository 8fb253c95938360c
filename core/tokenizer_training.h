// Trains a SentencePiece tokenizer on a corpus (`keel tokenizer train`): the corpus's documents
// (core/corpus.h, every reader and bad-line policy) go through a temporary text file that is
// removed afterwards.
#pragma once

#include <cstdint>
#include <string>

#include "core/corpus.h"
#include "core/tokenizer.h"

namespace keel {

// Writes <out_prefix>.model and <out_prefix>.vocab. Throws KeelError when the corpus holds no
// document. Returns the documents read.
int64_t train_tokenizer_on_corpus(CorpusOptions corpus, SentencePieceTrainOptions sp, const std::string& out_prefix);

}  // namespace keel
