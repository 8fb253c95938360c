// Weights to actors: the shared-memory region's slots and seqlock, its checks on a bad file, and
// actors that bind to it, copy from it, or fetch chunks all holding exactly the published version.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "wire/weights/chunk_fetcher.h"
#include "wire/weights/receiver.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "wire/weights/region.h"
#include "wire/weights/weights.h"
#include "learner/rollout_service.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

TensorMap sample_tensors(double base) {
  return {{"a", torch::full({3, 4}, base)}, {"b", torch::arange(5, torch::kLong) + static_cast<int64_t>(base)}};
}

TEST(SharedWeights, TwoSlotsAndASequenceCounterPerSlot) {
  const auto path = test::temp_dir("shared_weights") + "/w.weights";
  auto w = SharedWeights::create(path, sample_tensors(0));
  uint64_t newest = 99;
  EXPECT_FALSE(w->newest(&newest));
  w->write(0, sample_tensors(0));
  auto r = SharedWeights::open(path);
  ASSERT_TRUE(r->newest(&newest));
  EXPECT_EQ(newest, 0u);
  TensorMap got;
  EXPECT_TRUE(r->read(0, [&](const TensorMap& t) {
    for (const auto& [k, v] : t) got[k] = v.clone();
  }));
  EXPECT_TRUE(torch::equal(got["a"], sample_tensors(0)["a"]));
  EXPECT_TRUE(torch::equal(got["b"], sample_tensors(0)["b"]));
  EXPECT_FALSE(r->read(1, [](const TensorMap&) {})) << "version 1 was never written";

  w->write(1, sample_tensors(1));
  TensorMap views;
  uint64_t token = 0;
  ASSERT_TRUE(r->views(1, &views, &token));
  EXPECT_EQ(views["a"][0][0].item<float>(), 1.0f);
  w->write(2, sample_tensors(2));  // the other slot: version 1 is untouched
  EXPECT_TRUE(r->unchanged(1, token));
  EXPECT_FALSE(r->read(0, [](const TensorMap&) {})) << "slot 0 now holds version 2";
  w->write(3, sample_tensors(3));  // version 1's slot
  EXPECT_FALSE(r->unchanged(1, token));
  EXPECT_EQ(views["a"][0][0].item<float>(), 3.0f) << "the views are the slot itself";

  // A read during which the writer rewrites the slot reports it.
  bool called = false;
  EXPECT_FALSE(r->read(3, [&](const TensorMap&) {
    called = true;
    w->write(5, sample_tensors(5));
  }));
  EXPECT_TRUE(called);
  ASSERT_TRUE(r->newest(&newest));
  EXPECT_EQ(newest, 5u);
  // A layout mismatch is refused before anything is written.
  EXPECT_NE(test::keel_error_of([&] {
              w->write(6, {{"a", torch::zeros({2, 2})}});
            }).find("differ from the file's layout"),
            std::string::npos);
  // The creator removes the file.
  r.reset();
  w.reset();
  EXPECT_FALSE(fs::exists(path));
}

TEST(SharedWeights, ABadFileIsRefusedNamingTheDefect) {
  const auto dir = test::temp_dir("shared_weights_bad");
  EXPECT_NE(test::keel_error_of([&] { SharedWeights::open(dir + "/none.weights"); }).find("cannot open shared weights"),
            std::string::npos);
  test::write_text(dir + "/junk.weights", std::string(4096, 'x'));
  EXPECT_NE(test::keel_error_of([&] { SharedWeights::open(dir + "/junk.weights"); }).find("bad magic"), std::string::npos);
  test::write_text(dir + "/short.weights", "KEELSHW1");
  EXPECT_NE(test::keel_error_of([&] { SharedWeights::open(dir + "/short.weights"); }).find("too short"), std::string::npos);
  // A real file cut after its header: the slots lie outside it.
  auto w = SharedWeights::create(dir + "/real.weights", sample_tensors(0));
  std::ifstream in(dir + "/real.weights", std::ios::binary);
  std::string head(1024, '\0');
  in.read(head.data(), 1024);
  test::write_text(dir + "/cut.weights", head);
  EXPECT_NE(test::keel_error_of([&] { SharedWeights::open(dir + "/cut.weights"); }).find("outside the file"), std::string::npos);
  EXPECT_NE(test::keel_error_of([&] {
              SharedWeights::create(dir + "/no/such/dir/w.weights", sample_tensors(0));
            }).find("cannot create"),
            std::string::npos);
}

// The checksum as weights.h defines it, one word at a time: the reference the fast one must equal.
uint64_t checksum_by_definition(std::string_view b) {
  const uint64_t offset = 1469598103934665603ull, prime = 1099511628211ull;
  uint64_t lane[4] = {offset, offset, offset, offset};
  const size_t words = b.size() / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w = 0;
    for (int k = 7; k >= 0; --k) w = (w << 8) | static_cast<unsigned char>(b[8 * i + static_cast<size_t>(k)]);  // little-endian
    lane[i % 4] = (lane[i % 4] ^ w) * prime;
  }
  uint64_t h = offset;
  for (uint64_t l : lane) h = (h ^ l) * prime;
  for (size_t i = 8 * words; i < b.size(); ++i) h = (h ^ static_cast<unsigned char>(b[i])) * prime;
  return h;
}

// The checksum taken as chunks arrive equals the checksum of the whole blob and the definition,
// whatever the sizes and whichever lane a piece starts in; any one changed word changes it.
TEST(WeightsChecksum, PiecesOfWholeWordsThenTheLastGiveTheWholeBlobsChecksum) {  // hashed alone or while copied
  std::string blob(203, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>(i * 13 + 1);
  for (size_t n : {0, 5, 8, 24, 29, 75, 203})
    for (size_t piece : {8, 16, 24, 40, 64}) {
      SCOPED_TRACE("size " + std::to_string(n) + " pieces of " + std::to_string(piece));
      const std::string_view b(blob.data(), n);
      WeightsChecksum sum, copying;  // copying: every other piece stored elsewhere as it is hashed
      std::string stored(n, '\0');
      size_t off = 0;
      for (int k = 0; off + piece < n; off += piece, ++k) {
        sum.add_words(b.substr(off, piece));
        k % 2 ? copying.add_words(b.substr(off, piece)) : copying.add_words_copying(b.substr(off, piece), stored.data() + off);
        if (k % 2) stored.replace(off, piece, b.substr(off, piece));
      }
      EXPECT_EQ(sum.finish(b.substr(off)), weights_checksum(std::string(b)));
      EXPECT_EQ(copying.finish(b.substr(off)), weights_checksum(std::string(b)));
      EXPECT_EQ(std::string_view(stored).substr(0, off), b.substr(0, off));
      EXPECT_EQ(weights_checksum(std::string(b)), checksum_by_definition(b));
    }
  EXPECT_NE(weights_checksum(blob), weights_checksum(blob.substr(0, 202)));
  for (size_t i = 0; i < blob.size(); i += 7) {
    std::string changed = blob;
    changed[i] = static_cast<char>(changed[i] ^ 0x10);
    EXPECT_NE(weights_checksum(changed), weights_checksum(blob)) << "byte " << i;
  }
  std::string swapped = blob;  // two words of one lane exchanged
  std::swap_ranges(swapped.begin(), swapped.begin() + 8, swapped.begin() + 32);
  EXPECT_NE(weights_checksum(swapped), weights_checksum(blob));
  EXPECT_THROW(WeightsChecksum().add_words("abc"), KeelError);
}

// The blob a learner sends is the safetensors file of its tensors, and the checksum taken while
// writing it is the blob's, whatever the pieces' sizes (tensors of 3 floats, 5 bytes, 1 half).
TEST(WeightsChecksum, TheBlobIsWrittenAndHashedInOnePass) {
  torch::manual_seed(2);
  std::vector<TensorMap> sets{
      {{"a", torch::randn({3})},
       {"b", torch::randint(0, 100, {5}, torch::kUInt8)},
       {"c", torch::randn({1}).to(torch::kHalf)},
       {"d", torch::randn({7, 9})},
       {"e", torch::randn({0})}},
      {{"w", torch::randn({64, 33})}},
      {{"x", torch::randint(0, 9, {13}, torch::kUInt8)}, {"y", torch::randn({2, 2}).to(torch::kBFloat16)}}};
  std::string out;  // reused from set to set, as a sender reuses the last version's memory
  for (size_t i = 0; i < sets.size(); ++i) {
    const Metadata meta{{"policy_version", std::to_string(i)}};
    const uint64_t sum = weights_blob_into(out, sets[i], meta);
    EXPECT_EQ(out, safetensors_bytes(sets[i], meta)) << "set " << i;
    EXPECT_EQ(sum, weights_checksum(out)) << "set " << i;
    EXPECT_EQ(sum, checksum_by_definition(out)) << "set " << i;
  }
}

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 32;
  c.d_model = 16;
  c.n_layer = 1;
  c.n_head = 2;
  c.max_positions = 16;
  return c;
}

torch::Tensor logits_of(Transformer& m) {
  torch::NoGradGuard ng;
  auto t = torch::arange(8, torch::kLong).unsqueeze(0);
  return m->logits(m->hidden({t, {}, {}, {}}));
}

// Polls until `r` has heard `version`, then loads it.
void receive(WeightReceiver& r, Transformer& m, uint64_t version) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (r.poll(100) < version)
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "version " << version << " never announced";
  uint64_t v = 0;
  ASSERT_TRUE(r.load_newest(m, &v));
  EXPECT_EQ(v, version);
}

TEST(WeightsToActors, BoundCopiedAndChunkedActorsHoldThePublishedVersion) {
  auto options = [](int port, const std::string& shared_dir) {
    RolloutServiceOptions o;
    o.rollouts_endpoint = "tcp://127.0.0.1:" + std::to_string(port);
    o.weights_endpoint = "tcp://127.0.0.1:" + std::to_string(port + 1);
    o.chunks_endpoint = "tcp://127.0.0.1:" + std::to_string(port + 2);
    o.shared_dir = shared_dir;
    o.run_name = "keel-test-" + std::to_string(port);
    o.chunk_bytes = 1000;  // several chunks
    return o;
  };
  const int local_port = test::free_port_block(3), remote_port = test::free_port_block(3);
  const std::string local_weights = "tcp://127.0.0.1:" + std::to_string(local_port + 1),
                    local_chunks = "tcp://127.0.0.1:" + std::to_string(local_port + 2);
  RolloutService local(options(local_port, test::temp_dir("weights_to_actors")), {});
  RolloutService remote(options(remote_port, ""), {});
  Transformer policy(tiny()), bound(tiny()), copied(tiny()), chunked(tiny());
  policy->init_weights(1);
  WeightReceiver rb(local_weights, local_chunks, "bound");
  WeightReceiver rc(local_weights, local_chunks, "copied", /*bind=*/false);
  WeightReceiver rn("tcp://127.0.0.1:" + std::to_string(remote_port + 1), "tcp://127.0.0.1:" + std::to_string(remote_port + 2),
                    "chunked");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // subscriptions
  auto publish = [&](uint64_t v) {
    local.publish(v, policy);
    remote.publish(v, policy);
  };
  publish(1);
  receive(rb, bound, 1);
  receive(rc, copied, 1);
  receive(rn, chunked, 1);
  const auto expected = logits_of(policy);
  EXPECT_TRUE(torch::equal(logits_of(bound), expected));
  EXPECT_TRUE(torch::equal(logits_of(copied), expected));
  EXPECT_TRUE(torch::equal(logits_of(chunked), expected));
  EXPECT_EQ(rb.bound_loads(), 1);
  EXPECT_EQ(rc.copied_loads(), 1);
  EXPECT_EQ(rn.chunk_loads(), 1);
  EXPECT_EQ(local.stats().weights.blobs_built, 0) << "no actor asked for chunks: no blob built";

  // Two more versions: the bound actor's slot is rewritten under it, and it notices.
  auto step = [&] {
    torch::NoGradGuard ng;
    for (auto& p : policy->parameters()) p.add_(0.01);
  };
  step();
  publish(2);
  EXPECT_TRUE(rb.unchanged_since_load()) << "version 2 goes to the other slot";
  step();
  publish(3);
  EXPECT_FALSE(rb.unchanged_since_load()) << "version 3 rewrote version 1's slot";
  receive(rb, bound, 3);
  EXPECT_TRUE(torch::equal(logits_of(bound), logits_of(policy)));
  EXPECT_EQ(rb.copied_loads(), 1) << "after a rewrite in use the actor copies";
  EXPECT_TRUE(rb.unchanged_since_load());
  receive(rn, chunked, 3);
  EXPECT_TRUE(torch::equal(logits_of(chunked), logits_of(policy)));
  EXPECT_EQ(rn.chunk_loads(), 2);

  // An announcement overtaken before it is read (the copying actor heard version 1; its slot now
  // holds 5): the actor takes the newer announcement from shared memory at once instead
  // of asking for chunks of a version the learner no longer serves.
  step();
  publish(4);
  // The chunked actor receives into the buffer of version 1, which its model no longer uses, then
  // into version 3's: each version whole although the buffers are reused.
  receive(rn, chunked, 4);
  EXPECT_TRUE(torch::equal(logits_of(chunked), logits_of(policy)));
  step();
  publish(5);
  receive(rn, chunked, 5);
  EXPECT_TRUE(torch::equal(logits_of(chunked), logits_of(policy)));
  EXPECT_EQ(rn.chunk_loads(), 4);
  EXPECT_EQ(rn.reused_buffers(), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // both announced (rc does not listen yet)
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t v5 = 0;
  ASSERT_TRUE(rc.load_newest(copied, &v5));  // rc last heard version 1, whose slot now holds 5
  EXPECT_EQ(v5, 5u);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  EXPECT_EQ(rc.copied_loads(), 2);
  EXPECT_EQ(rc.chunk_loads(), 0);
  EXPECT_TRUE(torch::equal(logits_of(copied), logits_of(policy)));

  // An actor on another host asking this learner for chunks gets a blob built from the region.
  WeightReceiver far(local_weights, local_chunks, "far");
  Transformer far_model(tiny());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  wire::WeightAnnounce a;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (far.poll(100) < 5) ASSERT_LT(std::chrono::steady_clock::now(), deadline);
  fs::remove_all(test::temp_path("weights_to_actors"));  // the region's name no longer resolves: as on another host
  uint64_t v = 0;
  ASSERT_TRUE(far.load_newest(far_model, &v));
  EXPECT_EQ(v, 5u);
  EXPECT_EQ(far.chunk_loads(), 1);
  EXPECT_TRUE(torch::equal(logits_of(far_model), logits_of(policy)));
  EXPECT_EQ(local.stats().weights.blobs_built, 1);
}

// Chunks of 64 KiB and more go to the socket from the learner's blob, as two frames each actor
// reads as one message, version after version.
TEST(WeightsToActors, LargeChunksAreSentFromTheBlobWithoutACopy) {
  const int port = test::free_port_block(3);
  RolloutServiceOptions o;
  o.rollouts_endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  o.weights_endpoint = "tcp://127.0.0.1:" + std::to_string(port + 1);
  o.chunks_endpoint = "tcp://127.0.0.1:" + std::to_string(port + 2);
  o.chunk_bytes = 64u << 10;
  o.shared_dir = "";
  o.run_name = "keel-test-" + std::to_string(port);
  RolloutService service(o, {});
  ModelConfig c = tiny();
  c.vocab_size = 1024, c.d_model = 64, c.n_head = 4;  // about 0.5 MB: 8 chunks, the last one partial
  Transformer policy(c), a(c), b(c);
  policy->init_weights(5);
  WeightReceiver ra(o.weights_endpoint, o.chunks_endpoint, "a"), rb(o.weights_endpoint, o.chunks_endpoint, "b");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // subscriptions
  for (uint64_t v = 1; v <= 3; ++v) {
    {
      torch::NoGradGuard ng;
      for (auto& p : policy->parameters()) p.mul_(1.01);
    }
    service.publish(v, policy);
    receive(ra, a, v);
    receive(rb, b, v);
    EXPECT_TRUE(torch::equal(logits_of(a), logits_of(policy))) << "version " << v;
    EXPECT_TRUE(torch::equal(logits_of(b), logits_of(policy))) << "version " << v;
  }
  const auto st = service.stats().weights;
  const int64_t chunks = static_cast<int64_t>(ra.latest().chunk_count);
  EXPECT_GE(chunks, 4);
  EXPECT_EQ(st.chunks_served, 3 * 2 * chunks);
  // Every chunk but the last (a partial word may end it) is a segment of its own.
  EXPECT_GE(st.chunks_from_blob, 3 * 2 * (chunks - 1));
}

// An actor on another host goes on generating with the version it holds while the next one
// arrives in chunks in the background, and takes it whole once it is there, even when a newer
// one has been announced meanwhile; a fetch of a version the learner no longer serves is
// abandoned as soon as a newer one is wanted.
TEST(WeightsToActors, ChunksArriveInTheBackgroundWhileTheModelKeepsItsVersion) {
  const int port = test::free_port_block(3);
  RolloutServiceOptions o;
  o.rollouts_endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  o.weights_endpoint = "tcp://127.0.0.1:" + std::to_string(port + 1);
  o.chunks_endpoint = "tcp://127.0.0.1:" + std::to_string(port + 2);
  o.chunk_bytes = 1000;
  o.shared_dir = "";  // as on another host: chunks only
  o.run_name = "keel-test-" + std::to_string(port);
  RolloutService service(o, {});
  Transformer policy(tiny()), actor(tiny());
  policy->init_weights(3);
  const auto before = logits_of(actor);
  WeightReceiver r(o.weights_endpoint, o.chunks_endpoint, "background");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // subscription
  service.publish(1, policy);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (r.poll(100) < 1) ASSERT_LT(std::chrono::steady_clock::now(), deadline);
  uint64_t v = 0;
  EXPECT_FALSE(r.load_newest(actor, &v, /*wait_for_chunks=*/false)) << "the first call only starts the fetch";
  EXPECT_TRUE(torch::equal(logits_of(actor), before)) << "the model keeps its weights meanwhile";
  int calls = 1;
  while (!r.load_newest(actor, &v, /*wait_for_chunks=*/false)) {
    ++calls;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GT(calls, 1);
  EXPECT_EQ(v, 1u);
  EXPECT_EQ(r.chunk_loads(), 1);
  EXPECT_TRUE(torch::equal(logits_of(actor), logits_of(policy)));

  // Version 2 arrives whole while the actor generates; version 3 is announced before the actor
  // asks again: it takes 2 at once rather than chasing 3 with nothing new in hand.
  auto step = [&] {
    torch::NoGradGuard ng;
    for (auto& p : policy->parameters()) p.add_(0.01);
  };
  step();
  service.publish(2, policy);
  while (r.poll(100) < 2) ASSERT_LT(std::chrono::steady_clock::now(), deadline + std::chrono::seconds(10));
  EXPECT_FALSE(r.load_newest(actor, &v, /*wait_for_chunks=*/false));  // starts fetching 2
  std::this_thread::sleep_for(std::chrono::seconds(1));               // a few kilobytes: long since whole
  const auto logits_v2 = logits_of(policy);
  step();
  service.publish(3, policy);
  while (r.poll(100) < 3) ASSERT_LT(std::chrono::steady_clock::now(), deadline + std::chrono::seconds(10));
  ASSERT_TRUE(r.load_newest(actor, &v, /*wait_for_chunks=*/false));
  EXPECT_EQ(v, 2u);
  EXPECT_TRUE(torch::equal(logits_of(actor), logits_v2));
  while (!r.load_newest(actor, &v, /*wait_for_chunks=*/false))
    ASSERT_LT(std::chrono::steady_clock::now(), deadline + std::chrono::seconds(10));
  EXPECT_EQ(v, 3u);
  EXPECT_TRUE(torch::equal(logits_of(actor), logits_of(policy)));

  // A fetch of version 2 after the learner moved on to 3 is never answered; wanting 3 abandons it.
  ChunkFetcher fetcher(o.chunks_endpoint, "fetcher");
  wire::WeightAnnounce stale = r.latest();
  stale.policy_version = 2;
  fetcher.want(stale);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(fetcher.ready(2), nullptr);
  EXPECT_FALSE(fetcher.newest_ready());
  const auto t0 = std::chrono::steady_clock::now();
  fetcher.want(r.latest());
  const auto blob = fetcher.wait(3);
  ASSERT_NE(blob, nullptr);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3.0)
      << "not after the stale fetch's three 5-second timeouts";
  EXPECT_EQ(fetcher.ready(2), nullptr);
  ASSERT_TRUE(fetcher.newest_ready());
  EXPECT_EQ(fetcher.newest_ready()->first, 3u);
  Transformer fetched(tiny());
  load_weights(fetched, safetensors_views(blob, "v3"), "v3", /*allow_new_heads=*/true);
  EXPECT_TRUE(torch::equal(logits_of(fetched), logits_of(policy)));
}

}  // namespace
}  // namespace keel
