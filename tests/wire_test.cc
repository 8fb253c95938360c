// Wire messages: every kind round-trips; bad input (garbage, truncation, wrong version, sizes that
// disagree, oversize) is rejected with a reason and counted, and the receiver goes on.
#include <gtest/gtest.h>

#include <random>

#include "tests/support/test_support.h"
#include "wire/channel.h"
#include "wire/codec.h"
#include "wire/heartbeat.h"

namespace keel::wire {
namespace {

Rollout sample_rollout() {
  Rollout r;
  r.prompt_tokens = {1, 5, 9};
  r.response_tokens = {7, 8, 2};
  r.logprobs = {-0.5f, -1.25f, -0.1f};
  r.policy_version = 42;
  r.actor_id = 3;
  r.seed = 99;
  r.score = 1.5f;
  r.score_parts = {{"task", 2.0f}, {"eos_penalty", -0.5f}};
  r.finished = true;
  r.prompt = "Compute 1 + 1.";
  r.response = "2";
  r.group_id = 17;
  return r;
}

TEST(Wire, EveryMessageKindRoundTrips) {
  std::vector<Body> bodies = {
      Hello{"actor", 2, "host-a", 1234},
      Heartbeat{123456789, 7},
      RolloutBatch{{sample_rollout(), sample_rollout()}, 0.7f},
      ScoreRequest{5, {ScoreItem{"p", "r", {1, 2}, {3}, true}}},
      ScoreReply{5, {1.0f, 0.0f}, {{{"task", 1.0f}}, {{"task", 0.0f}}}, ""},
      WeightAnnounce{9, 1000, "/dev/shm/x", 4, 0xabcdef},
      WeightRequest{9, 3},
      WeightChunk{9, 3, 4, std::string("\0\1\2\3", 4), 16, 77},
      Stats{{{"rollouts_per_s", 12.5f}}},
      Shutdown{"done"},
      CreditRequest{3, 7, 16},
      CreditGrant{3, true, 11, 7, 0},
  };
  for (const auto& b : bodies) {
    const auto bytes = encode({"tester", b});
    auto d = decode(bytes.data(), bytes.size());
    ASSERT_TRUE(d.message) << body_name(b) << ": " << d.error;
    EXPECT_EQ(d.message->sender, "tester");
    EXPECT_EQ(d.message->body.index(), b.index());
  }
  {
    const auto cb = encode({"a", WeightChunk{9, 3, 4, std::string("\0\1\2\3", 4), 16, 77}});
    auto cd = decode(cb.data(), cb.size());
    const auto& c = std::get<WeightChunk>(cd.message->body);
    EXPECT_EQ(c.total_bytes, 16u);
    EXPECT_EQ(c.checksum, 77u);
    EXPECT_EQ(c.data, std::string("\0\1\2\3", 4));
    // A chunk larger than the blob it claims to be part of is refused.
    const auto big = encode({"a", WeightChunk{9, 0, 1, std::string(32, 'x'), 16, 77}});
    EXPECT_NE(decode(big.data(), big.size()).error.find("in a blob of 16"), std::string::npos);
  }
  const auto bytes = encode({"a", RolloutBatch{{sample_rollout()}, 0.7f}});
  auto d = decode(bytes.data(), bytes.size());
  const auto& r = std::get<RolloutBatch>(d.message->body).rollouts.at(0);
  const auto e = sample_rollout();
  EXPECT_EQ(r.prompt_tokens, e.prompt_tokens);
  EXPECT_EQ(r.response_tokens, e.response_tokens);
  EXPECT_EQ(r.logprobs, e.logprobs);
  EXPECT_EQ(r.policy_version, 42u);
  EXPECT_EQ(r.score_parts, e.score_parts);
  EXPECT_EQ(r.group_id, 17u);
  EXPECT_FLOAT_EQ(std::get<RolloutBatch>(d.message->body).temperature, 0.7f);
}

// Weight chunks of every size round-trip, whether their bytes are copied into the message (small,
// empty, not whole words) or referenced (large runs of whole words), and from a view of a blob.
TEST(Wire, WeightChunksOfEverySizeRoundTrip) {
  std::string blob((1 << 17) + 16, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>(i * 7 + 3);
  for (size_t n : {size_t{0}, size_t{5}, size_t{1} << 17, (size_t{1} << 17) + 3})
    for (size_t offset : {size_t{0}, size_t{8}, size_t{3}}) {
      SCOPED_TRACE("size " + std::to_string(n) + " offset " + std::to_string(offset));
      const std::string data = blob.substr(offset, n);
      const WeightChunk c{4, 1, 2, data, 2 * n + 1, 99};
      for (const auto& bytes : {encode({"learner", c}), encode_weight_chunk("learner", {4, 1, 2, "ignored", 2 * n + 1, 99},
                                                                            std::string_view(blob).substr(offset, n))}) {
        const auto d = decode(bytes.data(), bytes.size());
        ASSERT_TRUE(d.message) << d.error;
        const auto* got = std::get_if<WeightChunk>(&d.message->body);
        ASSERT_NE(got, nullptr);
        EXPECT_EQ(got->data, data);
        EXPECT_EQ(got->total_bytes, 2 * n + 1);
        EXPECT_EQ(got->checksum, 99u);
        // Decoded in place: the same header, and the bytes as a view into the message.
        std::string error;
        int calls = 0;
        EXPECT_TRUE(decode_weight_chunk(
            bytes.data(), bytes.size(),
            [&](const WeightChunk& h, std::string_view view) {
              ++calls;
              EXPECT_EQ(view, data);
              EXPECT_TRUE(n == 0 || (view.data() >= bytes.data() && view.data() + n <= bytes.data() + bytes.size()));
              EXPECT_EQ(h.policy_version, 4u);
              EXPECT_EQ(h.index, 1u);
              EXPECT_EQ(h.count, 2u);
              EXPECT_EQ(h.total_bytes, 2 * n + 1);
              EXPECT_TRUE(h.data.empty());
            },
            &error))
            << error;
        EXPECT_EQ(calls, 1);
      }
    }
  // Another kind of message, a bad chunk and garbage are refused with a reason, `use` not called.
  std::string error;
  const auto never = [](const WeightChunk&, std::string_view) { ADD_FAILURE() << "called for a refused message"; };
  const auto announce = encode({"learner", WeightAnnounce{3, 10, "", 1, 7}});
  EXPECT_FALSE(decode_weight_chunk(announce.data(), announce.size(), never, &error));
  EXPECT_EQ(error, "not a weight chunk");
  const auto outside = encode({"learner", WeightChunk{4, 2, 2, "abc", 10, 1}});
  EXPECT_FALSE(decode_weight_chunk(outside.data(), outside.size(), never, &error));
  EXPECT_NE(error.find("outside count"), std::string::npos) << error;
  EXPECT_FALSE(decode_weight_chunk(outside.data(), outside.size() - 8, never, &error));
  EXPECT_FALSE(error.empty());
}

// A chunk split for sending from where its data lies: the head and the data are the flat message,
// the two frames decode to the chunk with its bytes read in place, and frames not split at the
// data's segment are refused with a reason.
TEST(Wire, ASplitWeightChunkIsTheFlatMessageInTwoFrames) {
  std::vector<uint64_t> words((1 << 17) / 8 + 2);
  for (size_t i = 0; i < words.size(); ++i) words[i] = i * 0x9e3779b97f4a7c15ull;
  const std::string_view blob(reinterpret_cast<const char*>(words.data()), words.size() * 8);
  const WeightChunk header{4, 1, 3, "", 3 * blob.size(), 99};
  for (size_t n : {size_t{1} << 16, blob.size() - 8}) {
    const auto data = blob.substr(8, n);
    const auto split = encode_weight_chunk_split("learner", header, data);
    ASSERT_TRUE(split);
    EXPECT_EQ(split->tail.data(), data.data()) << "the data is not copied";
    EXPECT_EQ(split->head + std::string(split->tail), encode_weight_chunk("learner", header, data));
    EXPECT_LT(split->head.size(), 256u) << "the head is the header, not the data";
    std::string error;
    int calls = 0;
    ASSERT_TRUE(decode_weight_chunk(
        std::vector<std::string_view>{split->head, split->tail},
        [&](const WeightChunk& h, std::string_view view) {
          ++calls;
          EXPECT_EQ(view.data(), data.data()) << "read in place";
          EXPECT_EQ(view.size(), n);
          EXPECT_EQ(h.index, 1u);
          EXPECT_EQ(h.total_bytes, 3 * blob.size());
          EXPECT_EQ(h.checksum, 99u);
        },
        &error))
        << error;
    EXPECT_EQ(calls, 1);
    // The head itself split after its segment table is three frames of whole segments: read too.
    const std::string table = split->head.substr(0, 16), seg0 = split->head.substr(16);
    EXPECT_TRUE(decode_weight_chunk(
        std::vector<std::string_view>{table, seg0, split->tail},
        [&](const WeightChunk&, std::string_view v) { EXPECT_EQ(v, data); }, &error))
        << error;
    // An unaligned frame is read from an aligned copy.
    std::string shifted = " " + split->head;
    EXPECT_TRUE(decode_weight_chunk(
        std::vector<std::string_view>{std::string_view(shifted).substr(1), split->tail},
        [&](const WeightChunk&, std::string_view v) { EXPECT_EQ(v, data); }, &error))
        << error;
  }
  // Data that cannot be a segment of its own is not split (the caller sends it flat).
  EXPECT_FALSE(encode_weight_chunk_split("learner", header, blob.substr(8, (1 << 16) - 3)));
  EXPECT_FALSE(encode_weight_chunk_split("learner", header, blob.substr(3, 1 << 16)));
  EXPECT_FALSE(encode_weight_chunk_split("learner", header, blob.substr(8, 4096)));

  const auto split = encode_weight_chunk_split("learner", header, blob.substr(8, 1 << 16));
  const std::string_view head = split->head, tail = split->tail;
  const auto never = [](const WeightChunk&, std::string_view) { ADD_FAILURE() << "called for refused frames"; };
  auto refused = [&](std::vector<std::string_view> frames, const std::string& reason) {
    std::string error;
    EXPECT_FALSE(decode_weight_chunk(frames, never, &error)) << reason;
    EXPECT_NE(error.find(reason), std::string::npos) << error;
  };
  const std::string longer = std::string(tail) + std::string(8, 'x');
  refused({head, longer}, "frames do not end where");
  refused({head, tail, tail.substr(0, 8)}, "frames do not end where");
  refused({head, tail.substr(0, tail.size() - 8)}, "overruns frame 1");
  refused({head.substr(0, head.size() - 8), std::string(head.substr(head.size() - 8)) + std::string(tail)}, "overruns frame");
  refused({head, std::string_view()}, "frame 1 of 0 bytes");
  const std::string rest = std::string(head.substr(head.size() - 3)) + std::string(tail);
  refused({head.substr(0, head.size() - 3), rest}, "bytes is not whole words");
  refused({head, tail.substr(0, 13)}, "not a whole Cap'n Proto message");
  refused({}, "no frames");
  std::string many_segments(head);
  many_segments[0] = static_cast<char>(0xff), many_segments[1] = static_cast<char>(0xff);
  refused({many_segments, tail}, "segment table of 65536 segments");
}

// Found by the fuzzer: a weight chunk whose envelope's sender is malformed. decode() refuses it;
// the in-place chunk decoder must refuse it too (it once skipped the sender).
TEST(Wire, AChunkWithAMalformedSenderIsRefusedByBothDecoders) {
  const std::string bytes(
      "\x00\x00\x00\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x01\x00\x02\x00\x02\x00\x07\x00\x00\x00\x00\x00"
      "\x05\x00\x01\x00\x2a\x00\x00\x00\x04\x00\x00\x00\x04\x00\x00\x00\x00\x4d\x00\x00\x00\x00\xff\xff"
      "\xff\xff\xff\xff\xff\x17\x17\x17\x17\x17\x17\x17\x17\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      "\xff\xda\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00"
      "\x01\x00\x00\x00\xe7\xff\xff\xff\xff\xfe\xfd\xfc\x00\x00\x00\x00",
      160);
  const auto d = decode(bytes.data(), bytes.size());
  EXPECT_FALSE(d.message);
  std::string error;
  EXPECT_FALSE(decode_weight_chunk(
      bytes.data(), bytes.size(), [](const WeightChunk&, std::string_view) { ADD_FAILURE() << "accepted"; }, &error));
  EXPECT_EQ(error, d.error);
}

TEST(Wire, BadBuffersAreRejectedWithAReason) {
  const auto good = encode({"a", RolloutBatch{{sample_rollout()}, 1.0f}});
  // Truncated.
  auto d = decode(good.data(), good.size() - 8);
  EXPECT_FALSE(d.message);
  EXPECT_FALSE(d.error.empty());
  d = decode(good.data(), 5);
  EXPECT_NE(d.error.find("not a whole"), std::string::npos) << d.error;
  // Garbage of every length up to 256 bytes never crashes and never decodes into a rollout batch.
  std::mt19937 rng(1);
  for (int n = 0; n < 300; ++n) {
    std::string junk(static_cast<size_t>(rng() % 256), '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    auto g = decode(junk.data(), junk.size());
    if (g.message) {
      EXPECT_FALSE(std::holds_alternative<RolloutBatch>(g.message->body) &&
                   !std::get<RolloutBatch>(g.message->body).rollouts.empty());
    }
  }
  // Misaligned input is read from an aligned copy.
  std::string shifted = " " + good;
  d = decode(shifted.data() + 1, good.size());
  EXPECT_TRUE(d.message) << d.error;
  // Oversized input is refused before parsing.
  DecodeLimits small;
  small.max_bytes = 64;
  d = decode(good.data(), good.size(), small);
  EXPECT_NE(d.error.find("exceeds the limit"), std::string::npos) << d.error;
}

TEST(Wire, WrongVersionIsRejected) {
  auto bytes = encode({"a", Heartbeat{1, 2}});
  // The envelope's version is its first data field: patch it in the encoded struct.
  // Find the encoded version (little-endian kWireVersion) right after the root pointer and segment table.
  bool patched = false;
  for (size_t i = 16; i + 2 <= bytes.size() && !patched; i += 8) {
    if (bytes[i] == kWireVersion && bytes[i + 1] == 0) {
      bytes[i] = 7;
      patched = true;
    }
  }
  ASSERT_TRUE(patched);
  auto d = decode(bytes.data(), bytes.size());
  EXPECT_FALSE(d.message);
  EXPECT_NE(d.error.find("wire version 7"), std::string::npos) << d.error;
}

TEST(Wire, RolloutWithMismatchedLogprobsIsRejected) {
  auto r = sample_rollout();
  r.logprobs.pop_back();
  const auto bytes = encode({"a", RolloutBatch{{r}, 1.0f}});
  auto d = decode(bytes.data(), bytes.size());
  EXPECT_FALSE(d.message);
  EXPECT_NE(d.error.find("2 logprobs for 3 response tokens"), std::string::npos) << d.error;
}

TEST(Wire, ReceiverCountsBadMessagesAndGoesOn) {
  for (bool use_zmq : {false, true}) {
    std::unique_ptr<Channel> tx, rx;
    if (use_zmq) {
      rx = zmq_bind(SocketKind::kPull, "inproc://wire-test");
      tx = zmq_connect(SocketKind::kPush, "inproc://wire-test");
    } else {
      std::tie(tx, rx) = inproc_pair();
    }
    ASSERT_TRUE(tx->send("garbage bytes that are not a message"));
    ASSERT_TRUE(send_message(*tx, {"a", RolloutBatch{{sample_rollout()}, 1.0f}}));
    ReceiveStats stats;
    std::optional<Message> got;
    for (int i = 0; i < 10 && !got; ++i) got = receive(*rx, 1000, stats);
    ASSERT_TRUE(got);
    EXPECT_EQ(stats.rejected, 1);
    EXPECT_EQ(stats.accepted, 1);
    EXPECT_TRUE(std::holds_alternative<RolloutBatch>(got->body));
  }
}

TEST(Wire, RouterRepliesReachTheRightDealer) {
  const std::string ep = "tcp://127.0.0.1:" + std::to_string(test::free_port_block(1));
  auto router = zmq_bind(SocketKind::kRouter, ep);
  auto a = zmq_connect(SocketKind::kDealer, ep);
  auto b = zmq_connect(SocketKind::kDealer, ep);
  ASSERT_TRUE(send_message(*a, {"a", ScoreRequest{1, {}}}));
  ASSERT_TRUE(send_message(*b, {"b", ScoreRequest{2, {}}}));
  ReceiveStats stats;
  for (int i = 0; i < 2; ++i) {
    std::string peer;
    auto m = receive(*router, 2000, stats, &peer);
    ASSERT_TRUE(m);
    const auto id = std::get<ScoreRequest>(m->body).request_id;
    ASSERT_TRUE(send_message(*router, {"reward", ScoreReply{id, {static_cast<float>(id)}, {}, ""}}, peer));
  }
  auto ra = receive(*a, 2000, stats), rb = receive(*b, 2000, stats);
  ASSERT_TRUE(ra && rb);
  EXPECT_EQ(std::get<ScoreReply>(ra->body).request_id, 1u);
  EXPECT_EQ(std::get<ScoreReply>(rb->body).request_id, 2u);
}

}  // namespace
}  // namespace keel::wire

namespace keel::wire {
namespace {

TEST(Wire, PeerTrackerReportsSilentPeersAndTheirReturn) {
  using Clock = PeerTracker::Clock;
  PeerTracker t(std::chrono::milliseconds(1000));
  const auto t0 = Clock::now();
  t.heard("actor-0", t0);
  t.heard("actor-1", t0);
  EXPECT_TRUE(t.check(t0 + std::chrono::milliseconds(900)).empty());
  t.heard("actor-0", t0 + std::chrono::milliseconds(900));
  auto c = t.check(t0 + std::chrono::milliseconds(1500));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].peer, "actor-1");
  EXPECT_TRUE(c[0].silent);
  EXPECT_NEAR(c[0].seconds, 1.5, 1e-6);
  EXPECT_EQ(t.alive(), 1);
  EXPECT_EQ(t.silent(), 1);
  EXPECT_TRUE(t.check(t0 + std::chrono::milliseconds(1600)).empty()) << "reported once";
  t.heard("actor-0", t0 + std::chrono::milliseconds(1900));
  t.heard("actor-1", t0 + std::chrono::milliseconds(2000));
  c = t.check(t0 + std::chrono::milliseconds(2000));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_FALSE(c[0].silent);
  EXPECT_EQ(t.silent(), 0);
}

}  // namespace
}  // namespace keel::wire
