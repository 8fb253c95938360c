// libkeel_sentencepiece.so: the only code that links Debian's libsentencepiece.
//
// Why a separate module: libsentencepiece bundles and exports its own protobuf 3.14, while
// LibTorch needs the system protobuf. Linked into one binary, one of the two gets the other's
// symbols (a crash before main, or a protobuf version check failure). Loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND), this module and libsentencepiece resolve protobuf symbols
// to their own copy and nothing leaks into the global scope.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <string>
#include <vector>

extern "C" {

void* keel_sp_load(const std::string* bytes, std::string* err) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto s = sp->LoadFromSerializedProto(*bytes);
  if (!s.ok()) {
    *err = s.ToString();
    delete sp;
    return nullptr;
  }
  return sp;
}

void keel_sp_free(void* h) { delete static_cast<sentencepiece::SentencePieceProcessor*>(h); }

// ids[0..4] = vocab size, bos, eos, pad, unk.
void keel_sp_info(void* h, int* ids) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  ids[0] = sp->GetPieceSize();
  ids[1] = sp->bos_id();
  ids[2] = sp->eos_id();
  ids[3] = sp->pad_id();
  ids[4] = sp->unk_id();
}

int keel_sp_encode(void* h, const std::string* text, std::vector<int>* ids, std::string* err) {
  const auto s = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(*text, ids);
  if (!s.ok()) *err = s.ToString();
  return s.ok() ? 0 : 1;
}

int keel_sp_decode(void* h, const std::vector<int>* ids, std::string* text, std::string* err) {
  const auto s = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Decode(*ids, text);
  if (!s.ok()) *err = s.ToString();
  return s.ok() ? 0 : 1;
}

int keel_sp_train(const std::string* args, std::string* err) {
  const auto s = sentencepiece::SentencePieceTrainer::Train(*args);
  if (!s.ok()) *err = s.ToString();
  return s.ok() ? 0 : 1;
}

}  // extern "C"
