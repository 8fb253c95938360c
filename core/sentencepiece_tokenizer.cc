// SentencePiece behind the Tokenizer interface, and its trainer, through libkeel_sentencepiece.so
// (see sentencepiece_shim.cc for why it is loaded with RTLD_DEEPBIND instead of linked).
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"
#include "core/safetensors.h"
#include "core/tokenizer.h"

namespace keel {

std::string fingerprint(const std::string& bytes) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(fnv1a64(bytes)));
  return buf;
}

namespace {

struct Shim {
  void* (*load)(const std::string*, std::string*);
  void (*free)(void*);
  void (*info)(void*, int*);
  int (*encode)(void*, const std::string*, std::vector<int>*, std::string*);
  int (*decode)(void*, const std::vector<int>*, std::string*, std::string*);
  int (*train)(const std::string*, std::string*);
};

std::string exe_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

const Shim& shim() {
  static const Shim s = [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("KEEL_SENTENCEPIECE_SHIM")) candidates.push_back(env);
    candidates.push_back(exe_dir() + "/libkeel_sentencepiece.so");
    candidates.push_back(exe_dir() + "/../lib/libkeel_sentencepiece.so");
    candidates.push_back(KEEL_SP_SHIM_DEFAULT);
    void* h = nullptr;
    std::string errors;
    for (const auto& c : candidates) {
      if (::access(c.c_str(), R_OK) != 0) continue;
      h = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (h) break;
      errors += std::string(" ") + ::dlerror();
    }
    KEEL_CHECK(h, "cannot load libkeel_sentencepiece.so (set KEEL_SENTENCEPIECE_SHIM):" << errors);
    auto sym = [&](const char* name) {
      void* f = ::dlsym(h, name);
      KEEL_CHECK(f, "libkeel_sentencepiece.so lacks " << name);
      return f;
    };
    Shim r;
    r.load = reinterpret_cast<decltype(r.load)>(sym("keel_sp_load"));
    r.free = reinterpret_cast<decltype(r.free)>(sym("keel_sp_free"));
    r.info = reinterpret_cast<decltype(r.info)>(sym("keel_sp_info"));
    r.encode = reinterpret_cast<decltype(r.encode)>(sym("keel_sp_encode"));
    r.decode = reinterpret_cast<decltype(r.decode)>(sym("keel_sp_decode"));
    r.train = reinterpret_cast<decltype(r.train)>(sym("keel_sp_train"));
    return r;
  }();
  return s;
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const std::string bytes = read_file(path);
    std::string err;
    handle_ = shim().load(&bytes, &err);
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, handle_, path << ": not a SentencePiece model: " << err);
    int ids[5];
    shim().info(handle_, ids);
    size_ = ids[0];
    specials_.bos = ids[1];
    specials_.eos = ids[2];
    // Models without a pad piece (Llama 2) pad with unk: it is never a target and never EOS.
    specials_.pad = ids[3] >= 0 ? ids[3] : ids[4];
    identity_ = "sentencepiece:" + fingerprint(bytes);
  }
  ~SentencePieceTokenizer() override { shim().free(handle_); }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    std::string err;
    KEEL_CHECK(shim().encode(handle_, &text, &ids, &err) == 0, "sentencepiece encode failed: " << err);
    return {ids.begin(), ids.end()};
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> v;
    v.reserve(ids.size());
    for (int32_t id : ids) {
      KEEL_CHECK(id >= 0 && id < size_, "token id " << id << " outside the vocabulary of " << size_);
      if (id != specials_.pad) v.push_back(id);
    }
    std::string out, err;
    KEEL_CHECK(shim().decode(handle_, &v, &out, &err) == 0, "sentencepiece decode failed: " << err);
    return out;
  }
  int64_t vocab_size() const override { return size_; }

 private:
  void* handle_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

void train_sentencepiece(const SentencePieceTrainOptions& o) {
  KEEL_CHECK(!o.inputs.empty(), "tokenizer train: no input files");
  for (const auto& f : o.inputs)
    KEEL_CHECK_KIND(ErrorKind::kIo, std::filesystem::exists(f), "tokenizer train: input " << f << " is missing");
  std::ostringstream args;
  args << "--input=";
  for (size_t i = 0; i < o.inputs.size(); ++i) args << (i ? "," : "") << o.inputs[i];
  args << " --model_prefix=" << o.model_prefix << " --vocab_size=" << o.vocab_size << " --model_type=" << o.model_type
       << " --character_coverage=" << o.character_coverage << " --input_sentence_size=" << o.max_sentences
       << " --shuffle_input_sentence=false"
       << " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=3 --split_digits=true --byte_fallback=true"
       << " --max_sentence_length=16384 --num_threads=2 --minloglevel=1";
  const std::string a = args.str();
  std::string err;
  KEEL_CHECK(shim().train(&a, &err) == 0, "sentencepiece training failed: " << err);
}

}  // namespace keel
