// Plain C++ forms of keel's wire messages (wire/keel.capnp). Codec: wire/codec.h.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace keel::wire {

// Bumped when a change to keel.capnp alters the meaning of existing fields.
constexpr uint16_t kWireVersion = 4;  // 4: weight chunks may come as two frames split at a segment; 3: 4-lane checksum

using ScoreParts = std::vector<std::pair<std::string, float>>;

struct Hello {
  std::string role;
  uint32_t id = 0;
  std::string host;
  uint32_t pid = 0;
};

struct Heartbeat {
  uint64_t time_ms = 0;
  uint64_t policy_version = 0;
};

struct Rollout {
  std::vector<int32_t> prompt_tokens, response_tokens;
  std::vector<float> logprobs;  // one per response token
  uint64_t policy_version = 0;
  uint32_t actor_id = 0;
  uint64_t seed = 0;
  float score = 0;
  ScoreParts score_parts;
  bool finished = false;
  std::string prompt, response;
  uint64_t group_id = 0;
  uint64_t uid = 0;  // unique per rollout; see keel.capnp
};

struct RolloutBatch {
  std::vector<Rollout> rollouts;
  float temperature = 1;
  uint64_t credit_id = 0;  // the grant it was generated under; 0 = none
  // The sampling contract (keel.capnp): truncation, grouping and tokenizer of the batch.
  uint32_t top_k = 0;
  float top_p = 1;
  uint32_t group_size = 0;  // 0 = unknown
  std::string tokenizer{};  // identity; "" = unknown
};

struct ScoreItem {
  std::string prompt, response;
  std::vector<int32_t> prompt_tokens, response_tokens;
  bool finished = false;
  std::string fields = {};  // the prompt line's own fields, a JSON object ("" = none)
};

struct ScoreRequest {
  uint64_t request_id = 0;
  std::vector<ScoreItem> items;
};

struct ScoreReply {
  uint64_t request_id = 0;
  std::vector<float> scores;
  std::vector<ScoreParts> parts;
  std::string error;
};

struct WeightAnnounce {
  uint64_t policy_version = 0;
  uint64_t total_bytes = 0;
  std::string shared_path;
  uint32_t chunk_count = 0;
  uint64_t checksum = 0;
};

struct WeightRequest {
  uint64_t policy_version = 0;
  uint32_t chunk = 0;
};

struct WeightChunk {
  uint64_t policy_version = 0;
  uint32_t index = 0, count = 0;
  std::string data;
  uint64_t total_bytes = 0, checksum = 0;  // of the whole blob
};

struct Stats {
  ScoreParts entries;
};

struct Shutdown {
  std::string reason;
};

struct CreditRequest {
  uint64_t request_id = 0;
  uint64_t policy_version = 0;  // held by the actor
  uint32_t rollouts = 0;        // in one batch of the actor
};

struct CreditGrant {
  uint64_t request_id = 0;
  bool granted = false;
  uint64_t credit_id = 0;
  uint64_t min_version = 0;  // generate with at least this version
  uint32_t retry_ms = 0;     // when refused: ask again after this long
};

using Body = std::variant<Hello, Heartbeat, RolloutBatch, ScoreRequest, ScoreReply, WeightAnnounce, WeightRequest, WeightChunk,
                          Stats, Shutdown, CreditRequest, CreditGrant>;

struct Message {
  std::string sender;
  Body body;
};

}  // namespace keel::wire
