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
#include <vector>

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

// The same message in two pieces, for a socket that sends `data` where it lies: `head` is the
// message up to its last segment (the segment table, then every segment but the last) and the
// last segment is `data` itself, so head + data is the flat message. Only data of whole 8-byte
// words at an 8-byte aligned address, 64 KiB or more, can be a segment; for other data nullopt.
struct SplitMessage {
  std::string head;
  std::string_view tail;
};
std::optional<SplitMessage> encode_weight_chunk_split(const std::string& sender, const WeightChunk& header,
                                                      std::string_view data);

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
// The same for a message that arrived as frames: one flat message, or the pieces of one split at
// segment boundaries (frame 0 opens with the segment table; each frame holds whole segments, the
// frames end where the segments do). Frames not 8-byte aligned are read from aligned copies.
bool decode_weight_chunk(const std::vector<std::string_view>& frames,
                         const std::function<void(const WeightChunk&, std::string_view)>& use, std::string* error,
                         const DecodeLimits& limits = {});

const char* body_name(const Body& b);

}  // namespace keel::wire
