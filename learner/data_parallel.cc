#include "learner/data_parallel.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#if defined(KEEL_USE_CUDA) && defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <thread>
#include <sstream>

#include "core/error.h"

namespace keel {

namespace {
// LibTorch 2 split the process group from its backends: ProcessGroupGloo and ProcessGroupNCCL are
// c10d::Backend there, c10d::ProcessGroup before. Both offer the collectives used here.
#if TORCH_VERSION_MAJOR >= 2
using CollectiveGroup = c10d::Backend;
#else
using CollectiveGroup = c10d::ProcessGroup;
#endif

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}
int env_int(const char* name, int fallback) {
  const char* v = env(name);
  if (!v) return fallback;
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    KEEL_FAIL("environment variable " << name << "='" << v << "' is not an integer");
  }
}
}  // namespace

DistributedEnv distributed_env_from_environment() {
  DistributedEnv e;
  const bool torch_style = env("WORLD_SIZE") || env("RANK");
  e.world = torch_style ? env_int("WORLD_SIZE", 1) : env_int("SLURM_NTASKS", 1);
  e.rank = torch_style ? env_int("RANK", 0) : env_int("SLURM_PROCID", 0);
  e.local_rank = env_int("LOCAL_RANK", env_int("SLURM_LOCALID", 0));
  if (const char* a = env("MASTER_ADDR")) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", e.master_port);
  KEEL_CHECK(e.world >= 1, "WORLD_SIZE must be at least 1, got " << e.world);
  KEEL_CHECK(e.rank >= 0 && e.rank < e.world, "RANK " << e.rank << " is outside [0, " << e.world << ")");
  KEEL_CHECK(e.master_port > 0 && e.master_port < 65536, "MASTER_PORT " << e.master_port << " is not a port");
  return e;
}

struct DataParallel::Impl {
  DistributedEnv env;
  std::chrono::milliseconds timeout;
  torch::Device device = torch::kCPU;  // where collectives run: NCCL takes CUDA tensors only
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<CollectiveGroup> pg;
  int64_t sequence = 0;  // collectives issued by this rank

  // Runs one collective; on failure names the ranks that never reached it.
  template <typename F>
  void run(const char* what, F&& issue) {
    ++sequence;
    try {
      auto work = issue();
      work->wait(timeout);
    } catch (const std::exception& e) {
      // Every rank that sees this collective fail checks in under its sequence number; ranks that
      // do not check in within a few seconds are the dead or stuck ones.
      std::ostringstream missing;
      try {
        const std::string prefix = "checkin/" + std::to_string(sequence) + "/";
        store->set(prefix + std::to_string(env.rank), std::vector<uint8_t>{1});
        std::vector<int> absent;
        const auto deadline = std::chrono::steady_clock::now() + std::min<std::chrono::milliseconds>(timeout, std::chrono::seconds(5));
        do {
          absent.clear();
          for (int r = 0; r < env.world; ++r)
            if (!store->check({prefix + std::to_string(r)})) absent.push_back(r);
          if (absent.empty()) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        } while (std::chrono::steady_clock::now() < deadline);
        for (int r : absent) missing << (missing.tellp() > 0 ? ", " : "") << r;
      } catch (const std::exception&) {
        missing << "0 (the rendezvous store on " << env.master_addr << ":" << env.master_port << " is gone)";
      }
      KEEL_FAIL("data-parallel " << what << " #" << sequence << " failed on rank " << env.rank << " within the "
                                 << timeout.count() / 1000.0 << " s timeout; rank(s) that did not take part: "
                                 << (missing.tellp() > 0 ? missing.str() : "unknown") << " [" << e.what() << "]");
    }
  }
};

DataParallel::DataParallel(const DistributedEnv& env, std::chrono::milliseconds timeout, torch::Device device)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.env = env;
  m.timeout = timeout;
  c10d::TCPStoreOptions so;
  m.device = device;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = env.world;
  so.waitWorkers = true;
  so.timeout = timeout;
  try {
    m.store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    KEEL_FAIL("rank " << env.rank << ": rendezvous at " << env.master_addr << ":" << env.master_port << " failed: " << e.what());
  }
  if (device.is_cuda()) {
#if defined(KEEL_USE_CUDA) && defined(USE_C10D_NCCL)
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    m.pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", m.store), env.rank,
                                                       env.world, opts);
    return;
#else
    KEEL_FAIL("a CUDA data-parallel group needs keel built with KEEL_USE_CUDA against a LibTorch with NCCL");
#endif
  }
  auto opts = c10d::ProcessGroupGloo::Options::create();
  opts->timeout = timeout;
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost")
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  m.pg = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", m.store), env.rank,
                                                     env.world, opts);
}

DataParallel::~DataParallel() = default;
int DataParallel::rank() const { return impl_->env.rank; }
int DataParallel::world() const { return impl_->env.world; }

void DataParallel::broadcast_parameters(Transformer& model) {
  torch::NoGradGuard ng;
  for (auto& p : model->parameters()) {
    std::vector<at::Tensor> v{p.data()};
    impl_->run("broadcast", [&] { return impl_->pg->broadcast(v); });
  }
}

void DataParallel::allreduce_gradients(Transformer& model) {
  torch::NoGradGuard ng;
  constexpr int64_t kBucketElements = (25 << 20) / 4;
  std::vector<torch::Tensor> bucket;
  int64_t n = 0;
  auto flush = [&] {
    if (bucket.empty()) return;
    std::vector<torch::Tensor> flat_grads;
    for (auto& g : bucket) flat_grads.push_back(g.reshape(-1));
    std::vector<at::Tensor> v{torch::cat(flat_grads)};
    impl_->run("gradient all-reduce", [&] { return impl_->pg->allreduce(v); });
    int64_t at = 0;
    for (auto& g : bucket) {
      g.copy_(v[0].narrow(0, at, g.numel()).view_as(g));
      at += g.numel();
    }
    bucket.clear();
    n = 0;
  };
  for (auto& p : model->parameters()) {
    if (!p.requires_grad()) continue;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);  // every rank must send the same buckets
    bucket.push_back(p.grad());
    n += p.numel();
    if (n >= kBucketElements) flush();
  }
  flush();
}

torch::Tensor DataParallel::allreduce_sum(torch::Tensor t) {
  std::vector<at::Tensor> v{t.to(impl_->device)};
  impl_->run("all-reduce", [&] { return impl_->pg->allreduce(v); });
  t.copy_(v[0].cpu());
  return t;
}

std::string DataParallel::broadcast_bytes(const std::string& bytes) {
  auto size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64).to(impl_->device);
  {
    std::vector<at::Tensor> v{size};
    impl_->run("broadcast", [&] { return impl_->pg->broadcast(v); });
  }
  const int64_t n = size.cpu().item<int64_t>();
  auto data = rank() == 0 ? torch::from_blob(const_cast<char*>(bytes.data()), {n}, torch::kUInt8).clone()
                          : torch::empty({n}, torch::kUInt8);
  std::vector<at::Tensor> v{data.to(impl_->device)};
  impl_->run("broadcast", [&] { return impl_->pg->broadcast(v); });
  data = v[0].cpu().contiguous();
  return std::string(reinterpret_cast<const char*>(data.data_ptr<uint8_t>()), static_cast<size_t>(n));
}

void DataParallel::barrier() {
  auto t = torch::zeros({1}, torch::kFloat64);
  allreduce_sum(t);
}

}  // namespace keel
