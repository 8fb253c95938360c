#include "wire/codec.h"

#include <cmath>

#include <algorithm>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <cstring>
#include <memory>

#include "wire/keel.capnp.h"

namespace keel::wire {

namespace cs = capnp_schema;

namespace {

template <typename T>
capnp::Data::Reader as_data(const std::vector<T>& v) {
  return capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
bool from_data(capnp::Data::Reader d, std::vector<T>& out, const char* field, std::string& err) {
  if (d.size() % sizeof(T) != 0) {
    err = std::string(field) + ": " + std::to_string(d.size()) + " bytes is not a whole number of elements";
    return false;
  }
  out.resize(d.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), d.begin(), d.size());
  return true;
}

// A weight chunk's bytes. Large word-aligned runs of whole words are referenced, not copied (they
// are copied once, when the message is flattened); Cap'n Proto reads an external blob to its next
// word boundary and makes it a segment of its own, which an empty blob must not be.
bool can_reference(std::string_view data) {
  return data.size() >= (64u << 10) && data.size() % 8 == 0 && reinterpret_cast<uintptr_t>(data.data()) % 8 == 0;
}

void put_chunk_data(cs::WeightChunk::Builder b, std::string_view data) {
  const capnp::Data::Reader bytes(reinterpret_cast<const capnp::byte*>(data.data()), data.size());
  if (can_reference(data))
    b.adoptData(capnp::Orphanage::getForMessageContaining(b).referenceExternalData(bytes));
  else
    b.setData(bytes);
}

void put_parts(capnp::List<cs::ScorePart>::Builder b, const ScoreParts& parts) {
  for (size_t i = 0; i < parts.size(); ++i) {
    b[static_cast<unsigned>(i)].setName(parts[i].first);
    b[static_cast<unsigned>(i)].setValue(parts[i].second);
  }
}
ScoreParts get_parts(capnp::List<cs::ScorePart>::Reader r) {
  ScoreParts out;
  for (auto p : r) out.emplace_back(p.getName().cStr(), p.getValue());
  return out;
}

struct Encoder {
  cs::Envelope::Builder e;
  void operator()(const Hello& m) {
    auto b = e.initHello();
    b.setRole(m.role);
    b.setId(m.id);
    b.setHost(m.host);
    b.setPid(m.pid);
  }
  void operator()(const Heartbeat& m) {
    auto b = e.initHeartbeat();
    b.setTimeMs(m.time_ms);
    b.setPolicyVersion(m.policy_version);
  }
  void operator()(const RolloutBatch& m) {
    auto b = e.initRollouts();
    b.setTemperature(m.temperature);
    b.setCreditId(m.credit_id);
    b.setTopK(m.top_k);
    b.setTopP(m.top_p);
    b.setGroupSize(m.group_size);
    b.setTokenizer(m.tokenizer);
    auto list = b.initRollouts(static_cast<unsigned>(m.rollouts.size()));
    for (size_t i = 0; i < m.rollouts.size(); ++i) {
      const auto& r = m.rollouts[i];
      auto o = list[static_cast<unsigned>(i)];
      o.setPromptTokens(as_data(r.prompt_tokens));
      o.setResponseTokens(as_data(r.response_tokens));
      o.setLogprobs(as_data(r.logprobs));
      o.setPolicyVersion(r.policy_version);
      o.setActorId(r.actor_id);
      o.setSeed(r.seed);
      o.setScore(r.score);
      put_parts(o.initScoreParts(static_cast<unsigned>(r.score_parts.size())), r.score_parts);
      o.setFinished(r.finished);
      o.setPrompt(r.prompt);
      o.setResponse(r.response);
      o.setGroupId(r.group_id);
      o.setUid(r.uid);
    }
  }
  void operator()(const ScoreRequest& m) {
    auto b = e.initScoreRequest();
    b.setRequestId(m.request_id);
    auto items = b.initItems(static_cast<unsigned>(m.items.size()));
    for (size_t i = 0; i < m.items.size(); ++i) {
      auto o = items[static_cast<unsigned>(i)];
      o.setPrompt(m.items[i].prompt);
      o.setResponse(m.items[i].response);
      o.setPromptTokens(as_data(m.items[i].prompt_tokens));
      o.setResponseTokens(as_data(m.items[i].response_tokens));
      o.setFinished(m.items[i].finished);
      o.setFields(m.items[i].fields);
    }
  }
  void operator()(const ScoreReply& m) {
    auto b = e.initScoreReply();
    b.setRequestId(m.request_id);
    auto s = b.initScores(static_cast<unsigned>(m.scores.size()));
    for (size_t i = 0; i < m.scores.size(); ++i) s.set(static_cast<unsigned>(i), m.scores[i]);
    auto p = b.initParts(static_cast<unsigned>(m.parts.size()));
    for (size_t i = 0; i < m.parts.size(); ++i)
      put_parts(p.init(static_cast<unsigned>(i), static_cast<unsigned>(m.parts[i].size())), m.parts[i]);
    b.setError(m.error);
  }
  void operator()(const WeightAnnounce& m) {
    auto b = e.initWeightAnnounce();
    b.setPolicyVersion(m.policy_version);
    b.setTotalBytes(m.total_bytes);
    b.setSharedPath(m.shared_path);
    b.setChunkCount(m.chunk_count);
    b.setChecksum(m.checksum);
  }
  void operator()(const WeightRequest& m) {
    auto b = e.initWeightRequest();
    b.setPolicyVersion(m.policy_version);
    b.setChunk(m.chunk);
  }
  void operator()(const WeightChunk& m) {
    auto b = e.initWeightChunk();
    b.setPolicyVersion(m.policy_version);
    b.setIndex(m.index);
    b.setCount(m.count);
    put_chunk_data(b, m.data);
    b.setTotalBytes(m.total_bytes);
    b.setChecksum(m.checksum);
  }
  void operator()(const Stats& m) { put_parts(e.initStats().initEntries(static_cast<unsigned>(m.entries.size())), m.entries); }
  void operator()(const Shutdown& m) { e.initShutdown().setReason(m.reason); }
  void operator()(const CreditRequest& m) {
    auto b = e.initCreditRequest();
    b.setRequestId(m.request_id);
    b.setPolicyVersion(m.policy_version);
    b.setRollouts(m.rollouts);
  }
  void operator()(const CreditGrant& m) {
    auto b = e.initCreditGrant();
    b.setRequestId(m.request_id);
    b.setGranted(m.granted);
    b.setCreditId(m.credit_id);
    b.setMinVersion(m.min_version);
    b.setRetryMs(m.retry_ms);
  }
};

bool read_rollout(cs::Rollout::Reader o, Rollout& r, std::string& err) {
  if (!from_data(o.getPromptTokens(), r.prompt_tokens, "promptTokens", err) ||
      !from_data(o.getResponseTokens(), r.response_tokens, "responseTokens", err) ||
      !from_data(o.getLogprobs(), r.logprobs, "logprobs", err))
    return false;
  if (r.logprobs.size() != r.response_tokens.size()) {
    err = "rollout has " + std::to_string(r.logprobs.size()) + " logprobs for " + std::to_string(r.response_tokens.size()) +
          " response tokens";
    return false;
  }
  if (r.response_tokens.empty()) {
    err = "rollout has an empty response";
    return false;
  }
  for (float lp : r.logprobs)
    if (!std::isfinite(lp) || lp > 1e-3f) return err = "rollout has a log-prob that is not finite or is above 0", false;
  for (int32_t t : r.prompt_tokens)
    if (t < 0) return err = "negative prompt token id", false;
  for (int32_t t : r.response_tokens)
    if (t < 0) return err = "negative response token id", false;
  r.policy_version = o.getPolicyVersion();
  r.actor_id = o.getActorId();
  r.seed = o.getSeed();
  r.score = o.getScore();
  if (!std::isfinite(r.score)) return err = "rollout score is not finite", false;
  r.score_parts = get_parts(o.getScoreParts());
  r.finished = o.getFinished();
  r.prompt = o.getPrompt().cStr();
  r.response = o.getResponse().cStr();
  r.group_id = o.getGroupId();
  r.uid = o.getUid();
  return true;
}

bool read_rollouts(cs::Envelope::Reader e, Body& body, std::string& err) {
  RolloutBatch b;
  const auto in = e.getRollouts();
  b.temperature = in.getTemperature();
  b.credit_id = in.getCreditId();
  b.top_k = in.getTopK();
  b.top_p = in.getTopP();
  b.group_size = in.getGroupSize();
  b.tokenizer = in.getTokenizer().cStr();
  if (!std::isfinite(b.temperature) || b.temperature < 0)
    return err = "rollout batch temperature is not a finite value >= 0", false;
  if (!(b.top_p > 0 && b.top_p <= 1)) return err = "rollout batch top-p is not in (0, 1]", false;
  for (auto o : in.getRollouts()) {
    Rollout r;
    if (!read_rollout(o, r, err)) return false;
    b.rollouts.push_back(std::move(r));
  }
  if (b.group_size > 0 && b.rollouts.size() % b.group_size != 0)
    return err = "rollout batch of " + std::to_string(b.rollouts.size()) + " is not whole groups of " +
                 std::to_string(b.group_size),
           false;
  body = std::move(b);
  return true;
}

bool read_score_request(cs::Envelope::Reader e, Body& body, std::string& err) {
  ScoreRequest q;
  q.request_id = e.getScoreRequest().getRequestId();
  for (auto o : e.getScoreRequest().getItems()) {
    ScoreItem it;
    it.prompt = o.getPrompt().cStr();
    it.response = o.getResponse().cStr();
    if (!from_data(o.getPromptTokens(), it.prompt_tokens, "promptTokens", err) ||
        !from_data(o.getResponseTokens(), it.response_tokens, "responseTokens", err))
      return false;
    it.finished = o.getFinished();
    it.fields = o.getFields().cStr();
    q.items.push_back(std::move(it));
  }
  body = std::move(q);
  return true;
}

bool read_score_reply(cs::Envelope::Reader e, Body& body, std::string& err) {
  auto r = e.getScoreReply();
  ScoreReply s;
  s.request_id = r.getRequestId();
  for (float v : r.getScores()) s.scores.push_back(v);
  for (auto p : r.getParts()) s.parts.push_back(get_parts(p));
  s.error = r.getError().cStr();
  if (s.error.empty() && !s.parts.empty() && s.parts.size() != s.scores.size()) {
    err = "score reply has " + std::to_string(s.parts.size()) + " part lists for " + std::to_string(s.scores.size()) + " scores";
    return false;
  }
  body = std::move(s);
  return true;
}

// A weight chunk's header, and its bytes as a view into the message.
bool read_weight_chunk_view(cs::Envelope::Reader e, WeightChunk& header, std::string_view& data, std::string& err) {
  auto r = e.getWeightChunk();
  if (r.getCount() == 0 || r.getIndex() >= r.getCount()) {
    err = "weight chunk index " + std::to_string(r.getIndex()) + " outside count " + std::to_string(r.getCount());
    return false;
  }
  auto d = r.getData();
  if (d.size() > r.getTotalBytes()) {
    err = "weight chunk of " + std::to_string(d.size()) + " bytes in a blob of " + std::to_string(r.getTotalBytes());
    return false;
  }
  header = WeightChunk{r.getPolicyVersion(), r.getIndex(), r.getCount(), {}, r.getTotalBytes(), r.getChecksum()};
  data = std::string_view(reinterpret_cast<const char*>(d.begin()), d.size());
  return true;
}

bool read_weight_chunk(cs::Envelope::Reader e, Body& body, std::string& err) {
  WeightChunk c;
  std::string_view data;
  if (!read_weight_chunk_view(e, c, data, err)) return false;
  c.data = std::string(data);
  body = std::move(c);
  return true;
}

bool read_body(cs::Envelope::Reader e, Body& body, std::string& err) {
  switch (e.which()) {
    case cs::Envelope::HELLO: {
      auto r = e.getHello();
      body = Hello{r.getRole().cStr(), r.getId(), r.getHost().cStr(), r.getPid()};
      return true;
    }
    case cs::Envelope::HEARTBEAT: {
      auto r = e.getHeartbeat();
      body = Heartbeat{r.getTimeMs(), r.getPolicyVersion()};
      return true;
    }
    case cs::Envelope::ROLLOUTS:
      return read_rollouts(e, body, err);
    case cs::Envelope::SCORE_REQUEST:
      return read_score_request(e, body, err);
    case cs::Envelope::SCORE_REPLY:
      return read_score_reply(e, body, err);
    case cs::Envelope::WEIGHT_ANNOUNCE: {
      auto r = e.getWeightAnnounce();
      body =
          WeightAnnounce{r.getPolicyVersion(), r.getTotalBytes(), r.getSharedPath().cStr(), r.getChunkCount(), r.getChecksum()};
      return true;
    }
    case cs::Envelope::WEIGHT_REQUEST: {
      auto r = e.getWeightRequest();
      body = WeightRequest{r.getPolicyVersion(), r.getChunk()};
      return true;
    }
    case cs::Envelope::WEIGHT_CHUNK:
      return read_weight_chunk(e, body, err);
    case cs::Envelope::STATS:
      body = Stats{get_parts(e.getStats().getEntries())};
      return true;
    case cs::Envelope::SHUTDOWN:
      body = Shutdown{e.getShutdown().getReason().cStr()};
      return true;
    case cs::Envelope::CREDIT_REQUEST: {
      auto r = e.getCreditRequest();
      body = CreditRequest{r.getRequestId(), r.getPolicyVersion(), r.getRollouts()};
      return true;
    }
    case cs::Envelope::CREDIT_GRANT: {
      auto r = e.getCreditGrant();
      body = CreditGrant{r.getRequestId(), r.getGranted(), r.getCreditId(), r.getMinVersion(), r.getRetryMs()};
      return true;
    }
  }
  err = "unknown message kind " + std::to_string(static_cast<int>(e.which()));
  return false;
}

}  // namespace

const char* body_name(const Body& b) {
  static const char* kNames[] = {"hello",       "heartbeat",       "rollouts",       "score_request",
                                 "score_reply", "weight_announce", "weight_request", "weight_chunk",
                                 "stats",       "shutdown",        "credit_request", "credit_grant"};
  return kNames[b.index()];
}

namespace {

// The message as one flat array, written straight into the string that carries it.
std::string flatten(capnp::MessageBuilder& builder) {
  const auto segments = builder.getSegmentsForOutput();
  std::string out(capnp::computeSerializedSizeInWords(segments) * sizeof(capnp::word), '\0');
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(out.data()), out.size()));
  capnp::writeMessage(stream, segments);
  return out;
}

void build_weight_chunk(capnp::MessageBuilder& builder, const std::string& sender, const WeightChunk& header,
                        std::string_view data) {
  auto e = builder.initRoot<cs::Envelope>();
  e.setVersion(kWireVersion);
  e.setSender(sender);
  Encoder{e}(header);
  put_chunk_data(e.getWeightChunk(), data);
}

// Cap'n Proto's segment table: 32-bit little-endian words, segment count - 1 then each segment's
// size in words, padded to a whole 8-byte word.
size_t table_words(size_t segments) { return (segments + 2) / 2; }
void put_u32(std::string& out, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>(v >> (8 * i));
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

}  // namespace

std::string encode(const Message& m) {
  capnp::MallocMessageBuilder builder;
  auto e = builder.initRoot<cs::Envelope>();
  e.setVersion(kWireVersion);
  e.setSender(m.sender);
  std::visit(Encoder{e}, m.body);
  return flatten(builder);
}

std::string encode_weight_chunk(const std::string& sender, const WeightChunk& header, std::string_view data) {
  capnp::MallocMessageBuilder builder;
  build_weight_chunk(builder, sender, header, data);
  return flatten(builder);
}

std::optional<SplitMessage> encode_weight_chunk_split(const std::string& sender, const WeightChunk& header,
                                                      std::string_view data) {
  if (!can_reference(data)) return std::nullopt;
  capnp::MallocMessageBuilder builder;
  build_weight_chunk(builder, sender, header, data);
  const auto segments = builder.getSegmentsForOutput();
  const size_t count = segments.size();
  // The referenced data became the message's last segment (Cap'n Proto appends an external blob
  // as a segment of its own); anything else is a layout this code does not know.
  if (count < 2 || reinterpret_cast<const char*>(segments[count - 1].begin()) != data.data() ||
      segments[count - 1].size() * sizeof(capnp::word) != data.size())
    return std::nullopt;
  size_t words = table_words(count);
  for (size_t i = 0; i + 1 < count; ++i) words += segments[i].size();
  SplitMessage m{std::string(words * sizeof(capnp::word), '\0'), data};
  put_u32(m.head, 0, static_cast<uint32_t>(count - 1));
  for (size_t i = 0; i < count; ++i) put_u32(m.head, 4 * (i + 1), static_cast<uint32_t>(segments[i].size()));
  size_t at = table_words(count) * sizeof(capnp::word);
  for (size_t i = 0; i + 1 < count; ++i) {
    std::memcpy(m.head.data() + at, segments[i].begin(), segments[i].size() * sizeof(capnp::word));
    at += segments[i].size() * sizeof(capnp::word);
  }
  return m;
}

namespace {

using ReadEnvelope = std::function<bool(cs::Envelope::Reader, std::string sender)>;

capnp::ReaderOptions reader_options(size_t bytes, const DecodeLimits& limits) {
  capnp::ReaderOptions opts;
  // An honest message is read about once; a hostile one whose pointers all alias one large blob
  // would make the copy out of it grow without bound. Capping the words visited at a small
  // multiple of the message's own size bounds what decoding allocates.
  opts.traversalLimitInWords = std::min<uint64_t>(limits.traversal_limit_words, limits.traversal_per_word * (bytes / 8) + 1024);
  opts.nestingLimit = limits.nesting_limit;
  return opts;
}

// Hands the reader's envelope and sender to `read` if its wire version is this process's; a
// malformed message (Cap'n Proto throws while reading it) sets `error`.
template <class MakeReader>
bool read_root(MakeReader make_reader, std::string& error, const ReadEnvelope& read) {
  try {
    auto reader = make_reader();
    auto e = reader->template getRoot<cs::Envelope>();
    if (e.getVersion() != kWireVersion) {
      error = "wire version " + std::to_string(e.getVersion()) + " (this process speaks " + std::to_string(kWireVersion) + ")";
      return false;
    }
    return read(e, e.getSender().cStr());
  } catch (const kj::Exception& ex) {
    error = std::string("malformed message: ") + ex.getDescription().cStr();
  } catch (const std::exception& ex) {
    error = std::string("malformed message: ") + ex.what();
  }
  return false;
}

bool size_refused(size_t size, const DecodeLimits& limits, std::string& error) {
  if (size > limits.max_bytes) {
    error = "message of " + std::to_string(size) + " bytes exceeds the limit of " + std::to_string(limits.max_bytes);
    return true;
  }
  if (size < 8 || size % 8 != 0) {
    error = "message of " + std::to_string(size) + " bytes is not a whole Cap'n Proto message (truncated or garbage)";
    return true;
  }
  return false;
}

// `bytes` as words: in place when 8-byte aligned, else an aligned copy kept in `copy`.
const capnp::word* aligned_words(std::string_view bytes, kj::Array<capnp::word>& copy) {
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) == 0)
    return reinterpret_cast<const capnp::word*>(bytes.data());
  copy = kj::heapArray<capnp::word>(bytes.size() / 8);
  std::memcpy(copy.begin(), bytes.data(), bytes.size());
  return copy.begin();
}

// Checks the buffer's size, reads it (in place when 8-byte aligned, else from an aligned copy)
// and hands its envelope and sender to `read` if its wire version is this process's. False, with
// `error` set, for anything that is not such a message; `read` sets `error` for a body it refuses.
bool read_envelope(const void* data, size_t size, const DecodeLimits& limits, std::string& error, const ReadEnvelope& read) {
  if (size_refused(size, limits, error)) return false;
  kj::Array<capnp::word> copy;
  const capnp::word* words = aligned_words(std::string_view(static_cast<const char*>(data), size), copy);
  return read_root(
      [&] {
        return std::make_unique<capnp::FlatArrayMessageReader>(kj::ArrayPtr<const capnp::word>(words, size / 8),
                                                               reader_options(size, limits));
      },
      error, read);
}

constexpr size_t kMaxSegments = 512;  // what Cap'n Proto's flat reader accepts

// The segments of a message split into frames at segment boundaries (see decode_weight_chunk).
bool split_segments(const std::vector<std::string_view>& frames, std::vector<kj::Array<capnp::word>>& copies,
                    std::vector<kj::ArrayPtr<const capnp::word>>& segments, std::string& error) {
  std::vector<const capnp::word*> base;
  for (size_t f = 0; f < frames.size(); ++f) {
    if (frames[f].empty() || frames[f].size() % 8 != 0) {
      error = "frame " + std::to_string(f) + " of " + std::to_string(frames[f].size()) + " bytes is not whole words";
      return false;
    }
    copies.emplace_back();
    base.push_back(aligned_words(frames[f], copies.back()));
  }
  const size_t count = size_t{get_u32(frames[0].data())} + 1;
  if (count > kMaxSegments || table_words(count) * 8 > frames[0].size()) {
    error = "a segment table of " + std::to_string(count) + " segments does not fit the first frame";
    return false;
  }
  size_t f = 0, at = table_words(count);  // in words, within frame f
  for (size_t i = 0; i < count; ++i) {
    const size_t words = get_u32(frames[0].data() + 4 * (i + 1));
    if (at == frames[f].size() / 8 && f + 1 < frames.size()) ++f, at = 0;
    if (words > frames[f].size() / 8 - at) {
      error = "segment " + std::to_string(i) + " of " + std::to_string(words) + " words overruns frame " + std::to_string(f);
      return false;
    }
    segments.emplace_back(base[f] + at, words);
    at += words;
  }
  if (f + 1 != frames.size() || at != frames[f].size() / 8) {
    error = "the frames do not end where the message's segments do";
    return false;
  }
  return true;
}

bool read_envelope(const std::vector<std::string_view>& frames, const DecodeLimits& limits, std::string& error,
                   const ReadEnvelope& read) {
  if (frames.empty()) {
    error = "a message of no frames";
    return false;
  }
  if (frames.size() == 1) return read_envelope(frames[0].data(), frames[0].size(), limits, error, read);
  size_t size = 0;
  for (auto f : frames) size += f.size();
  if (size_refused(size, limits, error)) return false;
  std::vector<kj::Array<capnp::word>> copies;
  std::vector<kj::ArrayPtr<const capnp::word>> segments;
  if (!split_segments(frames, copies, segments, error)) return false;
  return read_root(
      [&] {
        return std::make_unique<capnp::SegmentArrayMessageReader>(
            kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>(segments.data(), segments.size()), reader_options(size, limits));
      },
      error, read);
}

// The weight chunk in an envelope, handed to `use` with a view of its bytes.
ReadEnvelope chunk_reader(const std::function<void(const WeightChunk&, std::string_view)>& use, std::string& err) {
  return [&use, &err](cs::Envelope::Reader e, const std::string&) {
    if (e.which() != cs::Envelope::WEIGHT_CHUNK) {
      err = "not a weight chunk";
      return false;
    }
    WeightChunk header;
    std::string_view bytes;
    if (!read_weight_chunk_view(e, header, bytes, err)) return false;
    use(header, bytes);
    return true;
  };
}

}  // namespace

Decoded decode(const void* data, size_t size, const DecodeLimits& limits) {
  Decoded out;
  read_envelope(data, size, limits, out.error, [&](cs::Envelope::Reader e, std::string sender) {
    Message m;
    m.sender = std::move(sender);
    if (!read_body(e, m.body, out.error)) return false;
    out.message = std::move(m);
    return true;
  });
  return out;
}

bool decode_weight_chunk(const void* data, size_t size, const std::function<void(const WeightChunk&, std::string_view)>& use,
                         std::string* error, const DecodeLimits& limits) {
  std::string err;
  const bool ok = read_envelope(data, size, limits, err, chunk_reader(use, err));
  if (!ok && error) *error = err;
  return ok;
}

bool decode_weight_chunk(const std::vector<std::string_view>& frames,
                         const std::function<void(const WeightChunk&, std::string_view)>& use, std::string* error,
                         const DecodeLimits& limits) {
  std::string err;
  const bool ok = read_envelope(frames, limits, err, chunk_reader(use, err));
  if (!ok && error) *error = err;
  return ok;
}

}  // namespace keel::wire
