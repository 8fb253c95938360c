// keel_bench: speed of keel's model on this machine, printed as one JSON line per measurement.
//   keel_bench sgemm                  measured float32 matrix-product peak (GFLOP/s)
//   keel_bench train    [d L T B V C] pretrain step (forward, backward, AdamW): tokens/s, model GFLOP/s, peak RSS;
//                                     C = 1: with activation checkpointing
//   keel_bench linear [M [small|gpt2|llama]]  the decoding step's products with M rows: LibTorch against keel's kernels
//   keel_bench generate [d L B N]     KV-cached sampling of N new tokens for B prompts: tokens/s
//   keel_bench weights  [d L P V A]   publish policy versions to A (2) actor processes (P: shm | shm-copy | chunks), vs memcpy;
//                                     how long an actor's load takes (its pause in generation)
//   keel_bench learner_scaling [W d L T B]  the training loop on W Gloo ranks: tokens/s, all-reduce wait share
//   keel_bench transport [R T]        R rollouts of T tokens: encode, send, receive, decode over loopback TCP
//   keel_bench loopback [MB A]        MB megabytes in 4 MiB ZeroMQ messages to each of A (2) processes over loopback
//                                     TCP: the transport's own rate, the ceiling of `weights ... chunks`
//   keel_bench bandwidth | read_widths [MB ROUNDS] | decode DIR [B N DTYPE] | decode_pair DIR [B ROUNDS] | continuous DIR [S P G] | check DIR INPUTS REF | load DIR
//                                     at real model sizes (bench/size_bench.h)
//   keel_bench stream PATH [B K]      one shuffled epoch (blocks of K pairs) of a preference buffer in batches of B pairs:
//                                     pairs/s, tokens/s, peak RSS (bench/stream_larger_than_ram.sh)
// bench/reference_bench.py measures the same in Python PyTorch eager; bench/run.sh compares.
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ATen/CPUGeneratorImpl.h>
#include <thread>

#include "actors/sampler.h"
#include "bench/read_widths.h"
#include "bench/size_bench.h"
#include "wire/weights/receiver.h"
#include "core/checkpoint.h"
#include "core/kernel_isa.h"
#include "core/linear.h"
#include "core/malloc_policy.h"
#include "core/safetensors.h"
#include "learner/data_parallel.h"
#include "learner/lm_batch.h"
#include "learner/rollout_service.h"
#include "learner/train_loop.h"
#include "replay/preference_stream.h"
#include "wire/channel.h"
#include "core/threads.h"
#include "core/transformer.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
double max_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}
// The benchmarks' GPT-2 shape: width d, L layers, heads of 64, context T, vocabulary V.
keel::ModelConfig gpt2_config(int64_t d, int64_t L, int64_t T, int64_t V) {
  keel::ModelConfig c;
  c.vocab_size = V;
  c.d_model = d;
  c.n_layer = L;
  c.n_head = d / 64;
  c.max_positions = T;
  return c;
}
int64_t arg(int argc, char** argv, int i, int64_t dflt) { return argc > i ? std::atoll(argv[i]) : dflt; }

void sgemm() {
  const int64_t n = 2048;
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  for (int i = 0; i < 2; ++i) torch::mm(a, b);
  const int reps = 10;
  auto t = Clock::now();
  for (int i = 0; i < reps; ++i) torch::mm(a, b);
  const double s = seconds_since(t);
  std::printf("{\"bench\": \"sgemm\", \"impl\": \"keel\", \"gflops\": %.1f}\n", 2.0 * n * n * n * reps / s / 1e9);
}

void train(int64_t d, int64_t L, int64_t T, int64_t B, int64_t V, bool checkpointing) {
  const double rss0 = max_rss_mb();
  const auto c = gpt2_config(d, L, T, V);
  keel::Transformer model(c);
  model->set_activation_checkpointing(checkpointing);
  if (checkpointing) keel::return_freed_memory();  // as keel's training loop does
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-4).weight_decay(0.1));
  auto tokens = torch::randint(0, V, {B, T}, torch::kLong), targets = torch::randint(0, V, {B, T}, torch::kLong);
  auto step = [&] {
    opt.zero_grad();
    auto loss = model->summed_cross_entropy_of(model->hidden({tokens, {}, {}, {}}), targets) / (B * T);
    loss.backward();
    opt.step();
  };
  for (int i = 0; i < 2; ++i) step();
  const int reps = 5;
  auto t = Clock::now();
  for (int i = 0; i < reps; ++i) step();
  const double s = seconds_since(t) / reps;
  const double params = static_cast<double>(c.num_parameters() - T * d);  // position lookups are not FLOPs
  const double flops = 6.0 * params * B * T + 12.0 * L * B * T * T * d;
  std::printf(
      "{\"bench\": \"train\", \"impl\": \"keel\", \"d\": %lld, \"layers\": %lld, \"seq\": %lld, \"batch\": %lld, "
      "\"vocab\": %lld, \"step_s\": %.4f, \"tokens_per_s\": %.1f, \"model_gflops\": %.1f, \"peak_rss_mb\": %.1f, "
      "\"rss_growth_mb\": %.1f, \"activation_checkpointing\": %s}\n",
      (long long)d, (long long)L, (long long)T, (long long)B, (long long)V, s, B * T / s, flops / s / 1e9, max_rss_mb(),
      max_rss_mb() - rss0, checkpointing ? "true" : "false");
}

void generate(int64_t d, int64_t L, int64_t B, int64_t N) {
  const auto c = gpt2_config(d, L, 512, 8192);
  keel::Transformer model(c);
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t b = 0; b < B; ++b) prompts.push_back(std::vector<int32_t>(static_cast<size_t>(16 + b), 5));
  keel::SamplingConfig s;
  s.temperature = 1.0;
  s.max_new_tokens = N;
  s.stop_at_eos = false;
  keel::sample(model, prompts, s, -1, 0);
  const int reps = 3;
  auto t = Clock::now();
  for (int i = 0; i < reps; ++i) keel::sample(model, prompts, s, -1, 0);
  const double sec = seconds_since(t) / reps;
  std::printf(
      "{\"bench\": \"generate\", \"impl\": \"keel\", \"d\": %lld, \"layers\": %lld, \"batch\": %lld, "
      "\"new_tokens\": %lld, \"seconds\": %.4f, \"tokens_per_s\": %.1f}\n",
      (long long)d, (long long)L, (long long)B, (long long)N, sec, B * N / sec);
}

// The decoding step's products (M rows): LibTorch (OpenBLAS) against keel's in-place kernels, with
// the weights in cache (one copy) and cold (copies cycled through 64 MiB or more, as in a model
// whose weights exceed the cache).
void linear(int64_t M, const std::string& size) {
  c10::InferenceMode inference;
  // KEEL_BENCH_ISA=0|1|2 measures the generic, AVX2 or AVX-512 build of the kernels.
  if (const char* isa = std::getenv("KEEL_BENCH_ISA")) keel::limit_kernel_isa(static_cast<keel::KernelIsa>(std::atoi(isa)));
  const char* isa_names[] = {"generic", "avx2", "avx512"};
  struct Shape {
    const char* name;
    int64_t K, N;
    bool kn;
  };
  const std::vector<Shape> small = {{"c_attn", 256, 768, true},    {"attn.c_proj", 256, 256, true},
                                    {"c_fc", 256, 1024, true},     {"mlp.c_proj", 1024, 256, true},
                                    {"lm_head", 256, 8192, false}, {"q_proj", 512, 512, false}};
  // GPT-2 small's products (Conv1D, [K, N]) and SmolLM-135M's (Linear, [N, K]), each with its tied head.
  const std::vector<Shape> gpt2 = {{"c_attn", 768, 2304, true},
                                   {"attn.c_proj", 768, 768, true},
                                   {"c_fc", 768, 3072, true},
                                   {"mlp.c_proj", 3072, 768, true},
                                   {"lm_head", 768, 50257, false}};
  const std::vector<Shape> llama = {{"q_proj", 576, 576, false},
                                    {"k_proj", 576, 192, false},
                                    {"gate_proj", 576, 1536, false},
                                    {"down_proj", 1536, 576, false},
                                    {"lm_head", 576, 49152, false}};
  for (const auto& s : size == "gpt2" ? gpt2 : size == "llama" ? llama : small) {
    auto x = torch::randn({M, s.K});
    auto b = torch::randn({s.N});
    const int64_t copies = std::max<int64_t>(2, (int64_t{64} << 20) / (s.K * s.N * 4));
    std::vector<torch::Tensor> ws;
    for (int64_t i = 0; i < copies; ++i) ws.push_back(s.kn ? torch::randn({s.K, s.N}) : torch::randn({s.N, s.K}));
    // KEEL_BENCH_BF16=1: keel's kernels read bfloat16 copies of the weights (a bf16 actor's decoding).
    keel::DecodeWeights halves;
    if (std::getenv("KEEL_BENCH_BF16")) s.kn ? halves.refresh({}, ws) : halves.refresh(ws);
    keel::DecodeWeightsScope scope(std::getenv("KEEL_BENCH_BF16") ? &halves : nullptr);
    auto ref = [&](const torch::Tensor& w) { return s.kn ? torch::addmm(b, x, w) : torch::nn::functional::linear(x, w, b); };
    auto ours = [&](const torch::Tensor& w) { return s.kn ? keel::linear_kn(x, w, b) : keel::linear_nk(x, w, b); };
    auto time = [&](auto f, int64_t n) {
      for (int64_t i = 0; i < copies; ++i) f(ws[i % n]);
      const int64_t reps = std::max<int64_t>(200, 2 * copies);
      auto t = Clock::now();
      for (int64_t i = 0; i < reps; ++i) f(ws[i % n]);
      return seconds_since(t) / reps * 1e6;
    };
    const double hot_ref = time(ref, 1), hot = time(ours, 1), cold_ref = time(ref, copies), cold = time(ours, copies);
    const double diff = (ref(ws[0]) - ours(ws[0])).abs().max().item<double>();
    std::printf(
        "{\"bench\": \"linear\", \"impl\": \"keel\", \"shape\": \"%s\", \"M\": %lld, \"K\": %lld, \"N\": %lld, "
        "\"hot_libtorch_us\": %.1f, \"hot_keel_us\": %.1f, \"cold_libtorch_us\": %.1f, \"cold_keel_us\": %.1f, "
        "\"cold_keel_GBps\": %.1f, \"max_diff\": %.2g, \"isa\": \"%s\"}\n",
        s.name, (long long)M, (long long)s.K, (long long)s.N, hot_ref, hot, cold_ref, cold,
        s.K * s.N * (std::getenv("KEEL_BENCH_BF16") ? 2 : 4) / cold / 1e3, diff, isa_names[static_cast<int>(keel::kernel_isa())]);
  }
}

double memcpy_seconds(size_t bytes) {
  std::string a(bytes, 'x'), b(bytes, 'y');
  std::memcpy(b.data(), a.data(), bytes);  // warm
  auto t = Clock::now();
  std::memcpy(b.data(), a.data(), bytes);
  return seconds_since(t);
}

// One actor process of weights_run: takes every version up to `versions`, and for each writes
// {version, time it had it, seconds spent in load_newest} to `pipe_fd`. Exits the process.
pid_t bench_pid = 0;  // the bench process, set first thing in main()

// A forked child of the bench ends when the bench does: one that stopped early must not leave its
// children waiting forever (and holding the pipe a script reads the bench's output from).
void die_with_bench() {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != bench_pid) std::_Exit(1);  // the bench ended before the line above
}

// Chunks arrive in the background (load_newest without waiting, as an asynchronous actor calls
// it between batches): the seconds are those of every call until the version was in the model,
// which is how long the actor stops generating for it.
[[noreturn]] void weights_actor(const keel::ModelConfig& c, bool bind, int ports, int i, int versions, int pipe_fd) {
  die_with_bench();
  keel::set_threads(1);
  keel::Transformer model(c);
  keel::WeightReceiver r("tcp://127.0.0.1:" + std::to_string(ports + 1), "tcp://127.0.0.1:" + std::to_string(ports + 2),
                         "bench-actor-" + std::to_string(i), bind);
  uint64_t have = 0;
  bool any = false;
  int64_t paused_ns = 0;
  while (!any || have < static_cast<uint64_t>(versions)) {
    r.poll(any ? 1 : 100);
    if ((any && !r.has_newer(have)) || (!any && r.poll(0) == 0 && !r.has_newer(0))) continue;
    uint64_t v = 0;
    const auto load0 = Clock::now();
    const bool loaded = r.load_newest(model, &v, /*wait_for_chunks=*/false);
    const auto now = Clock::now();
    paused_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(now - load0).count();
    if (!loaded) continue;
    have = v;
    any = true;
    const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
    int64_t msg[3] = {static_cast<int64_t>(v), ns, paused_ns};
    paused_ns = 0;
    if (::write(pipe_fd, msg, sizeof msg) != sizeof msg) std::abort();
  }
  std::_Exit(0);
}

// `actors` actor processes (one thread each; 2 on this 2-core machine) wait for announcements and load
// every new version; the learner (this process) publishes versions 1..N. Time per version: from the
// start of publish() to the moment the slower actor has the version in its parameters.
// `shared_dir` "" measures the chunk path that actors on other hosts use, over loopback TCP.
// KEEL_BENCH_VERSIONS (default 6, at least 2) publishes more versions, for a profile of the steady state.
void weights_run(const keel::ModelConfig& c, const std::string& shared_dir, bool bind, int ports, int actors) {
  const int versions = std::max(2, std::getenv("KEEL_BENCH_VERSIONS") ? std::atoi(std::getenv("KEEL_BENCH_VERSIONS")) : 6);
  std::vector<std::array<int, 2>> pipes(static_cast<size_t>(actors));
  for (int i = 0; i < actors; ++i) {
    if (::pipe(pipes[i].data()) != 0) std::abort();
    if (::fork() == 0) weights_actor(c, bind, ports, i, versions, pipes[i][1]);  // never returns
  }
  keel::Transformer policy(c);
  keel::RolloutServiceOptions o;
  o.rollouts_endpoint = "tcp://127.0.0.1:" + std::to_string(ports);
  o.weights_endpoint = "tcp://127.0.0.1:" + std::to_string(ports + 1);
  o.chunks_endpoint = "tcp://127.0.0.1:" + std::to_string(ports + 2);
  o.shared_dir = shared_dir;
  o.run_name = "keel-" + std::to_string(::getpid());
  keel::RolloutService service(o, {});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // subscribers connected
  std::vector<double> total, publish, load, after_publish;
  auto wait_for = [&](uint64_t version) {
    int64_t last = 0, slowest_load = 0;
    for (int i = 0; i < actors; ++i) {
      int64_t msg[3] = {0, 0, 0};
      do {
        if (::read(pipes[i][0], msg, sizeof msg) != sizeof msg) std::abort();
      } while (msg[0] < static_cast<int64_t>(version));
      last = std::max(last, msg[1]);
      slowest_load = std::max(slowest_load, msg[2]);
    }
    load.push_back(static_cast<double>(slowest_load) / 1e9);
    return last;
  };
  for (int v = 1; v <= versions; ++v) {
    {
      torch::NoGradGuard ng;
      for (auto& p : policy->parameters()) p.add_(1e-3);  // a new version differs
    }
    const auto t0 = Clock::now();
    service.publish(static_cast<uint64_t>(v), policy);
    publish.push_back(seconds_since(t0));
    const int64_t done = wait_for(static_cast<uint64_t>(v));
    total.push_back((done - std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count()) / 1e9);
    after_publish.push_back(total.back() - publish.back());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  for (int i = 0; i < actors; ++i) ::wait(nullptr);
  // The first version maps fresh pages in every process; later ones are the steady state.
  std::sort(total.begin() + 1, total.end());
  std::sort(publish.begin() + 1, publish.end());
  std::sort(load.begin() + 1, load.end());
  std::sort(after_publish.begin() + 1, after_publish.end());
  size_t bytes = 0;
  for (const auto& [k, t] : keel::model_tensors(policy)) bytes += t.numel() * t.element_size();
  const double copy = memcpy_seconds(bytes), median = total[1 + (total.size() - 1) / 2],
               publish_median = publish[1 + (publish.size() - 1) / 2];
  std::printf(
      "{\"bench\": \"weights\", \"impl\": \"keel\", \"path\": \"%s\", \"params\": %lld, \"bytes\": %zu, "
      "\"first_version_s\": %.4f, \"publish_s\": %.4f, \"actors\": %d, \"publish_to_actors_s\": %.4f, \"actor_load_s\": %.4f, "
      "\"memcpy_s\": %.5f, \"ratio_to_memcpy\": %.2f, \"actor_load_to_memcpy\": %.2f, \"gb_per_s\": %.2f, "
      "\"gb_per_s_after_publish\": %.2f}\n",
      shared_dir.empty() ? "chunks over loopback TCP"
      : bind             ? "shared memory, actors bound to it"
                         : "shared memory, actors copy",
      (long long)c.num_parameters(), bytes, total[0], publish_median, actors, median, load[1 + (load.size() - 1) / 2], copy,
      median / copy, load[1 + (load.size() - 1) / 2] / copy, static_cast<double>(bytes) / median / 1e9,
      static_cast<double>(bytes) / after_publish[1 + (after_publish.size() - 1) / 2] / 1e9);
}

void weights(int64_t d, int64_t L, const std::string& path, int64_t V, int actors) {
  const auto c = gpt2_config(d, L, 256, V);
  weights_run(c, path == "chunks" ? "" : "/dev/shm", path == "shm", 47501, actors);
}

// One receiving process of loopback(): takes `count` messages of `chunk` bytes (the sender's
// greeting is smaller) from a PULL socket without copying them out of ZeroMQ's buffers, then writes
// the time the last arrived to `pipe_fd`. Exits.
[[noreturn]] void loopback_receiver(int port, int64_t count, size_t chunk, int pipe_fd) {
  die_with_bench();
  auto pull = keel::wire::zmq_connect(keel::wire::SocketKind::kPull, "tcp://127.0.0.1:" + std::to_string(port));
  int64_t got = 0;
  while (got < count) pull->recv_lent(1000, [&](const auto& frames) { got += frames.size() == 1 && frames[0].size() == chunk; });
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  if (::write(pipe_fd, &ns, sizeof ns) != sizeof ns) std::abort();
  std::_Exit(0);
}

// The transport alone, the ceiling of the chunked weights path: `bytes` in 4 MiB ZeroMQ messages
// (copied once into the socket, as keel's chunks are) from this process to each of `receivers`
// processes over loopback TCP, no encoding, no checksum. Best of 3.
void loopback(int64_t bytes, int receivers) {
  const size_t chunk = size_t{4} << 20;
  const int64_t count = std::max<int64_t>(1, bytes / static_cast<int64_t>(chunk));
  const int reps = 3, port = 47531;
  // Every receiver is forked before this process starts ZeroMQ's threads (a forked child cannot use them).
  std::vector<std::array<int, 2>> pipes(static_cast<size_t>(reps * receivers));
  for (int i = 0; i < reps * receivers; ++i) {
    if (::pipe(pipes[i].data()) != 0) std::abort();
    if (::fork() == 0) loopback_receiver(port + i, count, chunk, pipes[i][1]);
  }
  const std::string payload(chunk, 'x');
  double best = 1e9;
  for (int rep = 0; rep < reps; ++rep) {
    std::vector<std::unique_ptr<keel::wire::Channel>> push;
    for (int i = 0; i < receivers; ++i) {
      keel::wire::SocketOptions o;
      o.high_water_mark = static_cast<int>(count) + 1;
      push.push_back(keel::wire::zmq_bind(keel::wire::SocketKind::kPush,
                                          "tcp://127.0.0.1:" + std::to_string(port + rep * receivers + i), o));
    }
    // Connected: ZeroMQ refuses a send before its peer connects; a loaded machine may take seconds.
    for (auto& p : push)
      for (const auto deadline = Clock::now() + std::chrono::seconds(30); !p->send("hello");) {
        if (Clock::now() > deadline) {
          std::fprintf(stderr, "loopback: a receiver did not connect within 30 s\n");
          std::exit(1);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    const auto t0 = Clock::now();
    for (int64_t k = 0; k < count; ++k)
      for (auto& p : push)
        if (!p->send(payload)) {
          std::fprintf(stderr, "loopback: a receiver is not connected\n");
          std::abort();
        }
    int64_t last = 0;
    for (int i = 0; i < receivers; ++i) {
      int64_t ns = 0;
      if (::read(pipes[rep * receivers + i][0], &ns, sizeof ns) != sizeof ns) std::abort();
      last = std::max(last, ns);
    }
    best = std::min(best, (last - std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count()) / 1e9);
  }
  for (int i = 0; i < reps * receivers; ++i) ::wait(nullptr);
  const double sent = static_cast<double>(count) * static_cast<double>(chunk);
  std::printf(
      "{\"bench\": \"loopback\", \"impl\": \"zeromq\", \"receivers\": %d, \"bytes_each\": %.0f, \"seconds\": %.4f, "
      "\"gb_per_s_each\": %.2f}\n",
      receivers, sent, best, sent / best / 1e9);
}

// Random next-token batches: rank r's micro-batch m of step s is the same whatever the world size.
class RandomLm : public keel::Objective {
 public:
  RandomLm(int64_t rows, int64_t T, int64_t V) : rows_(rows), T_(T), V_(V) {}
  std::unique_ptr<keel::MicroBatch> batch(int64_t step, int64_t micro) override {
    auto g = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(step * 1000 + micro));
    auto b = std::make_unique<keel::LmBatch>();
    b->inputs.tokens = torch::randint(0, V_, {rows_, T_}, g, torch::kLong);
    b->targets = torch::randint(0, V_, {rows_, T_}, g, torch::kLong);
    b->units = b->tokens = rows_ * T_;
    return b;
  }
  keel::LossResult loss(keel::Transformer& m, const keel::MicroBatch& b) override {
    return keel::lm_loss(m, static_cast<const keel::LmBatch&>(b));
  }
  keel::Scalars evaluate(keel::Transformer&) override { return {}; }

 private:
  int64_t rows_, T_, V_;
};

// The training loop with `world` Gloo ranks on this machine (cores / world threads each), global
// batch B x T: tokens/s and the share of step time spent waiting for the gradient all-reduce.
void learner_scaling(int world, int64_t d, int64_t L, int64_t T, int64_t B, int64_t V, bool overlap) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const std::string dir = "/tmp/keel-bench-scaling-" + std::to_string(::getpid());
  const int64_t steps = 8;
  std::vector<pid_t> kids;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = ::fork();
    if (pid != 0) {
      kids.push_back(pid);
      continue;
    }
    ::setenv("RANK", std::to_string(r).c_str(), 1);
    ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    ::setenv("MASTER_ADDR", "127.0.0.1", 1);
    ::setenv("MASTER_PORT", "47591", 1);
    keel::set_threads(std::max(1, cores / world));
    const auto c = gpt2_config(d, L, T, V);
    keel::Transformer model(c);
    model->init_weights(1);
    RandomLm objective(B / world, T, V);
    keel::TrainOptions o;
    o.steps = steps;
    o.warmup_steps = 0;
    o.log_every = 1;
    o.eval_every = 0;
    o.checkpoint_every = 0;
    o.out_dir = dir;
    o.resume = false;
    o.overlap_allreduce = overlap;
    keel::TrainLoop loop(o, model, objective, "", "");
    if (world > 1)
      loop.set_data_parallel(
          std::make_shared<keel::DataParallel>(keel::distributed_env_from_environment(), std::chrono::seconds(300), torch::kCPU));
    loop.run();
    std::_Exit(0);
  }
  for (auto k : kids) ::waitpid(k, nullptr, 0);
  // Steps 3..N (the first ones warm caches and the allocator).
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  double tok = 0, share = 0;
  int n = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (!j.contains("train/tokens_per_s") || j["step"].get<int64_t>() <= 2) continue;
    tok += j["train/tokens_per_s"].get<double>();
    share += j.value("train/allreduce_wait_share", 0.0);
    ++n;
  }
  std::filesystem::remove_all(dir);
  std::printf(
      "{\"bench\": \"learner_scaling\", \"impl\": \"keel\", \"ranks\": %d, \"threads_per_rank\": %d, \"d\": %lld, "
      "\"layers\": %lld, \"seq\": %lld, \"global_batch\": %lld, \"overlap\": %s, \"tokens_per_s\": %.1f, "
      "\"allreduce_wait_share\": %.3f}\n",
      world, std::max(1, cores / world), (long long)d, (long long)L, (long long)T, (long long)B, overlap ? "true" : "false",
      tok / std::max(n, 1), share / std::max(n, 1));
}

void transport(int64_t R, int64_t T) {
  keel::wire::RolloutBatch b;
  for (int64_t i = 0; i < R; ++i) {
    keel::wire::Rollout r;
    r.prompt_tokens.assign(static_cast<size_t>(T / 2), 7);
    r.response_tokens.assign(static_cast<size_t>(T / 2), 9);
    r.logprobs.assign(static_cast<size_t>(T / 2), -0.5f);
    r.prompt = std::string(200, 'p');
    r.response = std::string(200, 'r');
    b.rollouts.push_back(std::move(r));
  }
  auto pull = keel::wire::zmq_bind(keel::wire::SocketKind::kPull, "tcp://127.0.0.1:47511");
  auto push = keel::wire::zmq_connect(keel::wire::SocketKind::kPush, "tcp://127.0.0.1:47511");
  keel::wire::ReceiveStats rs;
  size_t bytes = 0;
  double best = 1e9;
  for (int rep = 0; rep < 20; ++rep) {
    auto t = Clock::now();
    const auto enc = keel::wire::encode({"bench", b});
    push->send(enc);
    auto m = keel::wire::receive(*pull, 5000, rs);
    if (!m) std::abort();
    best = std::min(best, seconds_since(t));
    bytes = enc.size();
  }
  const double copy = memcpy_seconds(bytes);
  std::printf(
      "{\"bench\": \"transport\", \"impl\": \"keel\", \"rollouts\": %lld, \"tokens\": %lld, \"bytes\": %zu, "
      "\"seconds\": %.5f, \"mb_per_s\": %.1f, \"memcpy_mb_per_s\": %.1f}\n",
      (long long)R, (long long)T, bytes, best, bytes / best / 1e6, bytes / copy / 1e6);
}

}  // namespace

void stream(const std::string& path, int64_t batch, int64_t block) {
  auto reader = std::make_shared<const keel::PreferenceReader>(path);
  keel::PreferenceStreamOptions o;
  o.batch_pairs = batch;
  if (block > 0) o.block_pairs = block;
  keel::PreferenceStream s(reader, o);
  const int64_t batches = s.pairs() / batch;
  int64_t tokens = 0, pairs = 0;
  auto t = Clock::now();
  for (int64_t k = 0; k < batches; ++k)
    for (const auto& p : s.batch(k)) {
      tokens += static_cast<int64_t>(p.prompt.size() + p.chosen.size() + p.rejected.size());
      ++pairs;
    }
  const double sec = seconds_since(t);
  std::printf(
      "{\"bench\": \"stream\", \"impl\": \"keel\", \"pairs\": %lld, \"tokens\": %lld, \"seconds\": %.2f, "
      "\"pairs_per_s\": %.0f, \"tokens_per_s\": %.0f, \"token_bytes\": %lld, \"block_pairs\": %lld, \"peak_rss_mb\": %.0f}\n",
      (long long)pairs, (long long)tokens, sec, pairs / sec, tokens / sec, (long long)tokens * 4, (long long)o.block_pairs,
      max_rss_mb());
}

int main(int argc, char** argv) {
  bench_pid = ::getpid();
  keel::keep_freed_memory();
  const std::string mode = argc > 1 ? argv[1] : "train";
  const int threads = std::getenv("KEEL_BENCH_THREADS") ? std::atoi(std::getenv("KEEL_BENCH_THREADS")) : 0;
  keel::set_threads(threads);
  torch::manual_seed(0);
  if (mode == "sgemm")
    sgemm();
  else if (mode == "train")
    train(arg(argc, argv, 2, 512), arg(argc, argv, 3, 8), arg(argc, argv, 4, 256), arg(argc, argv, 5, 8),
          arg(argc, argv, 6, 8192), arg(argc, argv, 7, 0) != 0);
  else if (mode == "linear")
    linear(arg(argc, argv, 2, 8), argc > 3 ? argv[3] : "small");
  else if (mode == "generate")
    generate(arg(argc, argv, 2, 256), arg(argc, argv, 3, 4), arg(argc, argv, 4, 8), arg(argc, argv, 5, 128));
  else if (mode == "weights")
    weights(arg(argc, argv, 2, 512), arg(argc, argv, 3, 8), argc > 4 ? argv[4] : "shm", arg(argc, argv, 5, 8192),
            static_cast<int>(arg(argc, argv, 6, 2)));
  else if (mode == "learner_scaling")
    learner_scaling(static_cast<int>(arg(argc, argv, 2, 2)), arg(argc, argv, 3, 512), arg(argc, argv, 4, 8),
                    arg(argc, argv, 5, 256), arg(argc, argv, 6, 8), 8192, !std::getenv("KEEL_BENCH_NO_OVERLAP"));
  else if (mode == "transport")
    transport(arg(argc, argv, 2, 64), arg(argc, argv, 3, 256));
  else if (mode == "loopback")
    loopback(arg(argc, argv, 2, 495) * 1000000, static_cast<int>(arg(argc, argv, 3, 2)));
  else if (mode == "bandwidth")
    keel::bench::bandwidth();
  else if (mode == "read_widths")
    keel::bench::read_widths(arg(argc, argv, 2, 494), static_cast<int>(arg(argc, argv, 3, 40)));
  else if (mode == "decode" && argc > 2)
    keel::bench::decode(argv[2], arg(argc, argv, 3, 1), arg(argc, argv, 4, 64), argc > 5 ? argv[5] : "float32");
  else if (mode == "decode_pair" && argc > 2)
    keel::bench::decode_pair(argv[2], arg(argc, argv, 3, 1), static_cast<int>(arg(argc, argv, 4, 24)));
  else if (mode == "continuous" && argc > 2)
    keel::bench::continuous(argv[2], arg(argc, argv, 3, 32), arg(argc, argv, 4, 16), arg(argc, argv, 5, 8));
  else if (mode == "load" && argc > 2)
    keel::bench::load(argv[2]);
  else if (mode == "check" && argc > 4)
    keel::bench::check(argv[2], argv[3], argv[4]);
  else if (mode == "stream" && argc > 2)
    stream(argv[2], arg(argc, argv, 3, 64), arg(argc, argv, 4, 0));
  else {
    std::fprintf(stderr,
                 "usage: keel_bench sgemm | train [d L T B V C] | generate [d L B N] | weights [d L shm|shm-copy|chunks V] | "
                 "learner_scaling [W d L T B] | transport [R T] | loopback [MB A] | stream PATH [B K] | "
                 "bandwidth | read_widths [MB ROUNDS] | decode DIR [B N DTYPE] | decode_pair DIR [B ROUNDS] | continuous DIR [S "
                 "P G] | check DIR INPUTS REF | load DIR\n");
    return 2;
  }
  return 0;
}
