// Encoding and validated decoding of wire messages. decode() never throws and never trusts its
// input: a wrong version, a truncated or garbage buffer, sizes that disagree (logprobs vs response
// tokens, Data not a multiple of 4), or a message past the size/traversal limits give an error
// string naming the problem; the caller counts and drops it.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "wire/messages.h"

namespace keel::wire {

struct DecodeLimits {
  size_t max_bytes = 256u << 20;               // larger buffers are refused before parsing
  uint64_t traversal_limit_words = 64u << 20;  // Cap'n Proto: total words a reader may visit...
  uint64_t traversal_per_word = 4;             // ...and at most this many per word of the message
  int nesting_limit = 16;
};

std::string encode(const Message& m);
// A WeightChunk from `sender` whose data is `data`, which is copied once, into the message (the
// header's own data is ignored): a chunk of a blob without a copy of it first.
std::string encode_weight_chunk(const std::string& sender, const WeightChunk& header, std::string_view data);

struct Decoded {
  std::optional<Message> message;  // set on success
  std::string error;               // set on failure
};

// Reads the buffer in place when it is 8-byte aligned, else from an aligned copy.
Decoded decode(const void* data, size_t size, const DecodeLimits& limits = {});

// A WeightChunk decoded in place: `use` gets its header (data left empty) and a view of its
// bytes inside `data`, valid during the call. Checks as decode() does; false (and `error` set)
// for anything else, a message of another kind included.
bool decode_weight_chunk(const void* data, size_t size, const std::function<void(const WeightChunk&, std::string_view)>& use,
                         std::string* error, const DecodeLimits& limits = {});

const char* body_name(const Body& b);

}  // namespace keel::wire
