// Any bytes given to the wire decoder: a message or an error string, never a crash. A message that
// decodes re-encodes into bytes that decode to the same kind of message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "tests/fuzz/fuzz_seeds.h"
#include "wire/codec.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace keel::wire;
  Rollout r;
  r.prompt_tokens = {1, 5, 9};
  r.response_tokens = {7, 2};
  r.logprobs = {-0.5f, -0.1f};
  r.score_parts = {{"task", 1.0f}};
  r.prompt = "Sort the words: b a";
  r.response = "a b";
  const Body bodies[] = {Hello{"actor", 2, "host-a", 1234},
                         Heartbeat{123456789, 7},
                         RolloutBatch{{r, r}, 0.7f},
                         ScoreRequest{5, {ScoreItem{"p", "r", {1, 2}, {3}, true}}},
                         ScoreReply{5, {1.0f, 0.0f}, {{{"task", 1.0f}}, {{"task", 0.0f}}}, ""},
                         WeightAnnounce{9, 1000, "/dev/shm/x", 4, 0xabcdef},
                         WeightRequest{9, 3},
                         WeightChunk{9, 3, 4, std::string("\0\1\2\3", 4), 16, 77},
                         Stats{{{"rollouts_per_s", 12.5f}}},
                         Shutdown{"done"},
                         CreditRequest{3, 7, 16},
                         CreditGrant{3, true, 11, 7, 0}};
  int i = 0;
  for (const auto& b : bodies) keel::fuzz::write_seed("seed-" + std::to_string(i++), encode({"seed", b}));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace keel::wire;
  DecodeLimits limits;
  limits.max_bytes = 1 << 20;
  const auto d = decode(data, size, limits);
  FUZZ_ASSERT(d.message.has_value() != !d.error.empty(), "decode gives exactly one of a message and an error");
  if (d.message) {
    const auto again = encode(*d.message);
    const auto d2 = decode(again.data(), again.size());
    FUZZ_ASSERT(d2.message && d2.message->body.index() == d.message->body.index(),
                "a decoded message re-encodes to the same kind");
  }
  // In-place decoding of weight chunks accepts exactly what decode() reads as a weight chunk,
  // with the same bytes.
  const auto* chunk = d.message ? std::get_if<WeightChunk>(&d.message->body) : nullptr;
  bool same = false;
  std::string error;
  const bool in_place = decode_weight_chunk(
      data, size, [&](const WeightChunk&, std::string_view bytes) { same = chunk && bytes == chunk->data; }, &error, limits);
  FUZZ_ASSERT(in_place == (chunk != nullptr) && (!in_place || same), "in-place chunk decoding agrees with decode()");
  // The same bytes as two frames, split at a word chosen by the input: a split the framed reader
  // accepts is one at a segment boundary, so the flat message reads as the same chunk.
  if (size >= 16 && size % 8 == 0) {
    const size_t cut = 8 * (1 + data[size - 1] % (size / 8 - 1));
    const std::string_view all(reinterpret_cast<const char*>(data), size);
    std::string split_bytes;
    const bool framed = decode_weight_chunk(
        std::vector<std::string_view>{all.substr(0, cut), all.substr(cut)},
        [&](const WeightChunk&, std::string_view bytes) { split_bytes = bytes; }, &error, limits);
    FUZZ_ASSERT(!framed || (chunk && split_bytes == chunk->data), "a chunk read from frames is the flat message's chunk");
  }
  return 0;
}
