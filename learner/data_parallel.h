// Data parallelism on LibTorch's own distributed layer (c10d): a TCPStore rendezvous and a
// ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA builds with KEEL_USE_CUDA). The training loop
// uses it to give rank r the micro-batches r, r + world, ... of each step (so W ranks with
// accumulation A see exactly the micro-batches one rank with accumulation W*A sees), to all-reduce
// the step's loss units and gradients in buckets, and to agree on stopping. Rank 0 alone writes
// checkpoints, metrics and the final model.
//
// Rendezvous comes from the usual variables: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
// LOCAL_RANK, or Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID with MASTER_ADDR (the launch
// script sets it to the first node). Every collective has a timeout; when one fails the error
// names the ranks that did not reach it (from progress counters kept in the store).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/transformer.h"

namespace keel {

struct DistributedEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool enabled() const { return world > 1; }
};

// Reads the environment; world 1 when none of the variables is set. Throws on inconsistent values.
DistributedEnv distributed_env_from_environment();

// The GPU that `--device cuda` (no index) means in a process with this environment, on a machine
// with `gpus` GPUs: a data-parallel rank's own, local rank mod gpus (ranks on one node each take
// a GPU), else 0, LibTorch's current device.
int default_cuda_index(const DistributedEnv& env, int gpus);

class DataParallel {
 public:
  DataParallel(const DistributedEnv& env, std::chrono::milliseconds timeout, torch::Device device);
  ~DataParallel();
  int rank() const;
  int world() const;
  // Copies rank 0's parameters to every rank.
  void broadcast_parameters(Transformer& model);
  // Sums every parameter's gradient over ranks, in buckets of about 25 MB, now.
  void allreduce_gradients(Transformer& model);
  // The same, overlapped with backward: call begin_gradient_sync() before the backward pass of a
  // step's last micro-batch. As backward produces each parameter's gradient, a hook adds it into
  // its bucket, and a complete bucket's all-reduce starts at once (buckets start in one fixed
  // order on every rank; gradients flow from the last layers to the first, so buckets are laid
  // out in reverse parameter order). finish_gradient_sync() starts what backward did not complete
  // (parameters without a gradient this step count as zero), waits, and writes the sums into the
  // gradients.
  void begin_gradient_sync(const std::vector<Transformer>& models);
  void finish_gradient_sync();
  // Seconds spent waiting for gradient all-reduces since the last call (the part not overlapped).
  double take_gradient_wait_seconds();
  // Sums a small float64 CPU tensor over ranks (in place) and returns it.
  torch::Tensor allreduce_sum(torch::Tensor t);
  // Rank 0's `bytes` on every rank (the other ranks' argument is ignored).
  std::string broadcast_bytes(const std::string& bytes);
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The data-parallel group of this process when the environment names one (WORLD_SIZE > 1 or
// SLURM_NTASKS > 1; RANK, MASTER_ADDR, MASTER_PORT or Slurm's variables), else null. Collectives time out
// after train.collective_timeout_s.
struct TrainOptions;
std::shared_ptr<DataParallel> make_data_parallel(torch::Device device, const TrainOptions& train);

}  // namespace keel
