// Tokenizers: SentencePiece (.model files, e.g. Llama 2's or one trained by `keel tokenizer train`)
// and byte-level BPE (Hugging Face tokenizer.json, or GPT-2's vocab.json + merges.txt).
// Special tokens are explicit; encode() never adds BOS/EOS by itself.
// Thread safety: encode/decode are const and safe to call from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace keel {

struct SpecialTokens {
  int32_t bos = -1;  // -1: the tokenizer has none
  int32_t eos = -1;
  int32_t pad = -1;  // distinct from eos when present
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // Ids outside the vocabulary are an error; special tokens are dropped from the text.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // "sentencepiece:<hash of the model file>" or "bpe:<hash>": two files with equal identity encode alike.
  const std::string& identity() const { return identity_; }
  const SpecialTokens& specials() const { return specials_; }

 protected:
  SpecialTokens specials_;
  std::string identity_;
};

// Loads by path: *.model -> SentencePiece; *.json -> tokenizer.json; a directory -> its
// tokenizer.model, tokenizer.json, or vocab.json + merges.txt. Errors name the file and the problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

struct SentencePieceTrainOptions {
  std::vector<std::string> inputs;  // plain-text files, one sentence/paragraph per line
  std::string model_prefix;         // writes <prefix>.model and <prefix>.vocab
  int vocab_size = 8192;
  std::string model_type = "bpe";  // bpe | unigram
  double character_coverage = 0.9995;
  int64_t max_sentences = 2000000;  // input_sentence_size
};
// Trains a SentencePiece model with ids unk=0, bos=1, eos=2, pad=3, digits split, byte fallback.
void train_sentencepiece(const SentencePieceTrainOptions& options);

// 64-bit FNV-1a of bytes, as hex.
std::string fingerprint(const std::string& bytes);

}  // namespace keel
