# keel's wire: every message between processes is one Envelope. Fields are never renumbered;
# new fields are appended. `version` is the sender's kWireVersion; a receiver drops (and counts)
# envelopes of another version. Token ids travel as little-endian int32 arrays in Data fields,
# log-probs as little-endian float32 arrays.
@0xb9ca9de751bfe0ba;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("keel::wire::capnp_schema");

struct Envelope {
  version @0 :UInt16;
  sender @1 :Text;            # "actor-3", "learner", "reward", ...
  union {
    hello @2 :Hello;
    heartbeat @3 :Heartbeat;
    rollouts @4 :RolloutBatch;
    scoreRequest @5 :ScoreRequest;
    scoreReply @6 :ScoreReply;
    weightAnnounce @7 :WeightAnnounce;
    weightRequest @8 :WeightRequest;
    weightChunk @9 :WeightChunk;
    stats @10 :Stats;
    shutdown @11 :Shutdown;
    creditRequest @12 :CreditRequest;
    creditGrant @13 :CreditGrant;
  }
}

struct Hello {
  role @0 :Text;              # actor | learner | reward
  id @1 :UInt32;              # actor rank
  host @2 :Text;
  pid @3 :UInt32;
}

struct Heartbeat {
  timeMs @0 :UInt64;          # sender's wall clock, milliseconds since the epoch
  policyVersion @1 :UInt64;   # the version the sender holds
}

struct ScorePart {
  name @0 :Text;              # "task", "eos_penalty", "model", ...
  value @1 :Float32;
}

struct Rollout {
  promptTokens @0 :Data;      # int32[P]
  responseTokens @1 :Data;    # int32[R]
  logprobs @2 :Data;          # float32[R]: behaviour log-probs under softmax(logits / temperature)
  policyVersion @3 :UInt64;   # weights version that generated the whole response
  actorId @4 :UInt32;
  seed @5 :UInt64;            # sampling seed of the batch
  score @6 :Float32;          # total sequence reward
  scoreParts @7 :List(ScorePart);
  finished @8 :Bool;          # the response ends with EOS
  prompt @9 :Text;            # prompt text as the actor rendered it
  response @10 :Text;         # decoded response
  groupId @11 :UInt64;        # responses sampled for the same prompt share this id
  uid @12 :UInt64;            # unique per rollout (actor rank, incarnation, batch, index): audits of what was trained
}

struct RolloutBatch {
  rollouts @0 :List(Rollout);
  temperature @1 :Float32;
  creditId @2 :UInt64;        # the CreditGrant this batch was generated under; 0 = none
  # The sampling contract: the distribution the log-probs are under, and how the batch is grouped.
  topK @3 :UInt32;            # 0 = no top-k truncation
  topP @4 :Float32 = 1.0;     # 1 = no nucleus truncation
  groupSize @5 :UInt32;       # responses per prompt; consecutive rollouts of one group share groupId; 0 = unknown
  tokenizer @6 :Text;         # the actor's tokenizer identity ("" = unknown)
}

struct ScoreItem {
  prompt @0 :Text;            # the task prompt (without chat template)
  response @1 :Text;
  promptTokens @2 :Data;      # int32[P], full prompt as the policy saw it
  responseTokens @3 :Data;    # int32[R]
  finished @4 :Bool;
  fields @5 :Text;            # the prompt line's own fields as a JSON object ("" = none), for reward programs
}

struct ScoreRequest {
  requestId @0 :UInt64;
  items @1 :List(ScoreItem);
}

struct ScoreReply {
  requestId @0 :UInt64;
  scores @1 :List(Float32);
  parts @2 :List(List(ScorePart));
  error @3 :Text;             # non-empty: the request could not be scored
}

struct WeightAnnounce {
  policyVersion @0 :UInt64;
  totalBytes @1 :UInt64;      # size of the safetensors blob; 0 = not built yet (ask for chunk 0)
  sharedPath @2 :Text;        # same-host readers copy from this shared-memory region; empty if none
  chunkCount @3 :UInt32;      # otherwise fetch this many chunks with WeightRequest (0: see chunk 0)
  checksum @4 :UInt64;        # weights_checksum of the blob: FNV-1a 64, 4 lanes of 64-bit words (when totalBytes > 0)
}

struct WeightRequest {
  policyVersion @0 :UInt64;
  chunk @1 :UInt32;
}

struct WeightChunk {
  policyVersion @0 :UInt64;
  index @1 :UInt32;
  count @2 :UInt32;
  data @3 :Data;
  totalBytes @4 :UInt64;      # the whole blob, so that a chunk describes what to fetch
  checksum @5 :UInt64;        # weights_checksum of the whole blob (FNV-1a 64, 4 lanes of 64-bit words)
}

struct Stats {
  entries @0 :List(ScorePart);
}

struct Shutdown {
  reason @0 :Text;
}

# Flow control: an actor asks the learner (on its ROUTER socket) before it generates a batch, and
# generates only when granted, so that the learner's pace sets the actors' (docs/life_of_an_update.md).
struct CreditRequest {
  requestId @0 :UInt64;       # echoed in the grant
  policyVersion @1 :UInt64;   # the weights version the actor holds
  rollouts @2 :UInt32;        # rollouts in one batch of this actor (prompts x group size)
}

struct CreditGrant {
  requestId @0 :UInt64;
  granted @1 :Bool;           # false: not now; ask again after retryMs
  creditId @2 :UInt64;        # when granted: carried back in the RolloutBatch
  minVersion @3 :UInt64;      # generate with weights of at least this version (load newer ones first)
  retryMs @4 :UInt32;
}
