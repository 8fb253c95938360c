#include "learner/data_parallel.h"
#include "learner/train_loop.h"

#include <iostream>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#if defined(KEEL_USE_CUDA) && defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdlib>
#include <utility>
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

int default_cuda_index(const DistributedEnv& env, int gpus) { return env.enabled() && gpus > 0 ? env.local_rank % gpus : 0; }

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

  using WorkPtr = decltype(std::declval<CollectiveGroup&>().allreduce(std::declval<std::vector<at::Tensor>&>()));

  // Issues one collective; on failure names the ranks that never reached it.
  template <typename F>
  std::pair<WorkPtr, int64_t> issue(const char* what, F&& start) {
    const int64_t seq = ++sequence;
    try {
      return {start(), seq};
    } catch (const std::exception& e) {
      fail(what, seq, e);
    }
  }
  void wait(const char* what, const std::pair<WorkPtr, int64_t>& w) {
    try {
      w.first->wait(timeout);
    } catch (const std::exception& e) {
      fail(what, w.second, e);
    }
  }
  template <typename F>
  void run(const char* what, F&& start) {
    wait(what, issue(what, std::forward<F>(start)));
  }

  [[noreturn]] void fail(const char* what, int64_t seq, const std::exception& e) {
    // Every rank that sees this collective fail checks in under its sequence number; ranks that
    // do not check in within a few seconds are the dead or stuck ones.
    std::ostringstream missing;
    try {
      const std::string prefix = "checkin/" + std::to_string(seq) + "/";
      store->set(prefix + std::to_string(env.rank), std::vector<uint8_t>{1});
      std::vector<int> absent;
      const auto deadline =
          std::chrono::steady_clock::now() + std::min<std::chrono::milliseconds>(timeout, std::chrono::seconds(5));
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
    KEEL_FAIL_KIND(ErrorKind::kPeer, "data-parallel "
                                         << what << " #" << seq << " failed on rank " << env.rank << " within the "
                                         << timeout.count() / 1000.0 << " s timeout; rank(s) that did not take part: "
                                         << (missing.tellp() > 0 ? missing.str() : "unknown") << " [" << e.what() << "]");
  }

  // Gradient buckets of the armed models, shared with the parameters' hooks (which hold it weakly).
  struct GradientSync {
    struct Slot {
      torch::Tensor param;
      size_t bucket = 0;
      int64_t offset = 0;
      bool ready = false;
    };
    struct Bucket {
      torch::Tensor flat;
      std::vector<size_t> slots;
      size_t pending = 0;
      std::pair<WorkPtr, int64_t> work;
      bool launched = false;
    };
    Impl* owner = nullptr;
    std::vector<const void*> models;  // the layout is for these models, in this order
    std::vector<Slot> slots;
    std::vector<Bucket> buckets;
    size_t next_launch = 0;
    bool armed = false;

    void launch_ready() {
      while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
        auto& b = buckets[next_launch++];
        std::vector<at::Tensor> v{b.flat};
        b.work = owner->issue("gradient all-reduce", [&] { return owner->pg->allreduce(v); });
        b.launched = true;
      }
    }
    // The gradient of slot i is `final` (this step's accumulated value).
    void put(size_t i, const torch::Tensor& final) {
      auto& s = slots[i];
      auto& b = buckets[s.bucket];
      KEEL_CHECK_KIND(ErrorKind::kInternal, !s.ready && !b.launched,
                      "a gradient arrived twice in one backward pass (parameter used by two graphs?)");
      b.flat.narrow(0, s.offset, s.param.numel()).copy_(final.reshape(-1));
      s.ready = true;
      --b.pending;
    }
  };
  std::shared_ptr<GradientSync> grads;
  double gradient_wait_seconds = 0;
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
    KEEL_FAIL_KIND(ErrorKind::kPeer, "rank " << env.rank << ": rendezvous at " << env.master_addr << ":" << env.master_port
                                             << " failed: " << e.what());
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
  m.pg = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", m.store), env.rank, env.world,
                                                     opts);
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
  begin_gradient_sync({model});
  finish_gradient_sync();
}

void DataParallel::begin_gradient_sync(const std::vector<Transformer>& models) {
  auto& m = *impl_;
  std::vector<const void*> ids;
  for (const auto& model : models) ids.push_back(model.get());
  if (!m.grads || m.grads->models != ids) {
    // Lay out buckets of about 25 MB over the parameters in reverse order, and hook each one.
    constexpr int64_t kBucketElements = (25 << 20) / 4;
    auto g = std::make_shared<Impl::GradientSync>();
    g->owner = &m;
    g->models = ids;
    std::vector<torch::Tensor> params;
    for (const auto& model : models)
      for (auto& p : model->parameters())
        if (p.requires_grad()) params.push_back(p);
    std::reverse(params.begin(), params.end());
    int64_t filled = 0;
    for (auto& p : params) {
      if (g->buckets.empty() || filled >= kBucketElements) {
        g->buckets.emplace_back();
        filled = 0;
      }
      const size_t i = g->slots.size();
      g->slots.push_back({p, g->buckets.size() - 1, filled, false});
      g->buckets.back().slots.push_back(i);
      filled += p.numel();
      std::weak_ptr<Impl::GradientSync> weak = g;
      p.register_hook([weak, i](torch::Tensor grad) {
        auto s = weak.lock();
        if (!s || !s->armed || !grad.defined()) return grad;
        torch::NoGradGuard ng;
        const auto& param = s->slots[i].param;
        s->put(i, param.grad().defined() ? param.grad() + grad : grad);
        s->launch_ready();
        return grad;
      });
    }
    for (auto& b : g->buckets) {
      int64_t n = 0;
      for (size_t i : b.slots) n += g->slots[i].param.numel();
      b.flat = torch::empty({n}, params.front().options());
    }
    m.grads = g;
  }
  auto& g = *m.grads;
  for (auto& s : g.slots) s.ready = false;
  for (auto& b : g.buckets) {
    b.pending = b.slots.size();
    b.launched = false;
  }
  g.next_launch = 0;
  g.armed = true;
}

void DataParallel::finish_gradient_sync() {
  auto& m = *impl_;
  KEEL_CHECK_KIND(ErrorKind::kInternal, m.grads && m.grads->armed, "finish_gradient_sync without begin_gradient_sync");
  const auto t0 = std::chrono::steady_clock::now();
  auto& g = *m.grads;
  g.armed = false;
  torch::NoGradGuard ng;
  // What backward left: parameters without a gradient in the last micro-batch keep the one they
  // have (earlier micro-batches) or count as zero, so that every rank sends the same buckets.
  for (size_t i = 0; i < g.slots.size(); ++i)
    if (!g.slots[i].ready) {
      const auto& p = g.slots[i].param;
      g.put(i, p.grad().defined() ? p.grad() : torch::zeros_like(p));
    }
  g.launch_ready();
  for (auto& b : g.buckets) {
    m.wait("gradient all-reduce", b.work);
    for (size_t i : b.slots) {
      auto& s = g.slots[i];
      auto sum = b.flat.narrow(0, s.offset, s.param.numel()).view_as(s.param);
      if (s.param.grad().defined())
        s.param.mutable_grad().copy_(sum);
      else
        s.param.mutable_grad() = sum.clone();
    }
    b.work.first.reset();
  }
  m.gradient_wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double DataParallel::take_gradient_wait_seconds() {
  const double s = impl_->gradient_wait_seconds;
  impl_->gradient_wait_seconds = 0;
  return s;
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

std::shared_ptr<DataParallel> make_data_parallel(torch::Device device, const TrainOptions& train) {
  const auto env = distributed_env_from_environment();
  if (!env.enabled()) return nullptr;
  std::cerr << "data parallel: rank " << env.rank << " of " << env.world << ", rendezvous " << env.master_addr << ":"
            << env.master_port << "\n";
  return std::make_shared<DataParallel>(env, std::chrono::milliseconds(static_cast<int64_t>(train.collective_timeout_s * 1000)),
                                        device);
}

}  // namespace keel
