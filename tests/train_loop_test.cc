// The shared training loop: schedule, accumulation normalised by the step's total units,
// activation checkpointing that leaves the run unchanged, and checkpoints that hold everything a
// resume needs; the process keeps the memory a step frees for the next one.
#include <gtest/gtest.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/checkpoint.h"
#include "core/malloc_policy.h"
#include "learner/checkpoint_writer.h"
#include "learner/lm_batch.h"
#include "learner/train_loop.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 40;
  c.d_model = 16;
  c.n_layer = 1;
  c.n_head = 2;
  c.max_positions = 32;
  return c;
}

// Fixed data: rows of unequal target counts so that per-micro-batch averaging would differ
// (by about the learning rate, 1e-2); float summation order alone differs by ~1e-6.
class FixedObjective : public Objective {
 public:
  FixedObjective(int64_t micro_per_step) : micro_per_step_(micro_per_step) {
    torch::manual_seed(5);
    tokens_ = torch::randint(0, 40, {4, 12}, torch::kLong);
    targets_ = torch::randint(0, 40, {4, 12}, torch::kLong);
    targets_.index_put_({0, torch::indexing::Slice(0, 10)}, -100);  // row 0 has 2 targets, others 12
  }
  std::unique_ptr<MicroBatch> batch(int64_t, int64_t micro) override {
    const int64_t rows = 4 / micro_per_step_;
    auto b = std::make_unique<LmBatch>();
    b->inputs.tokens = tokens_.narrow(0, micro * rows, rows);
    b->targets = targets_.narrow(0, micro * rows, rows);
    b->units = (b->targets != -100).sum().item<int64_t>();
    b->tokens = b->inputs.tokens.numel();
    return b;
  }
  LossResult loss(Transformer& m, const MicroBatch& b) override { return lm_loss(m, static_cast<const LmBatch&>(b)); }
  Scalars evaluate(Transformer&) override { return {{"eval/loss", 0.0}}; }

 private:
  int64_t micro_per_step_;
  torch::Tensor tokens_, targets_;
};

// A 64 MiB block (the logits of a 2048-token batch over an 8192-word vocabulary) comes from the heap
// and stays there, free, once released: glibc's defaults map it alone and unmap it on free, and the
// next step faults its pages back in.
TEST(MallocPolicy, AStepsFreedBlockStaysInTheProcess) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator replaces glibc's";
#elif defined(__GLIBC__) && __GLIBC_PREREQ(2, 33)
  ASSERT_TRUE(keep_freed_memory());
  const size_t bytes = size_t{64} << 20;
  const auto before = mallinfo2();
  void* block = std::malloc(bytes);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, bytes);
  const auto held = mallinfo2();
  EXPECT_EQ(held.hblkhd, before.hblkhd) << "the block was mapped on its own";
  std::free(block);
  const auto after = mallinfo2();
  EXPECT_GE(after.fordblks, before.fordblks + bytes) << "the freed block went back to the kernel";
#else
  GTEST_SKIP() << "keep_freed_memory() tunes glibc's malloc (mallinfo2 from 2.33) only";
#endif
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  TrainOptions o;
  o.steps = 110;
  o.warmup_steps = 10;
  o.lr = 1.0;
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(lr_at(o, 0), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(o, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(o, 10), 1.0);
  EXPECT_NEAR(lr_at(o, 60), 0.55, 1e-12);
  EXPECT_NEAR(lr_at(o, 110), 0.1, 1e-12);
}

TEST(TrainLoop, AccumulationEqualsOneBigBatch) {
  std::map<int64_t, TensorMap> result;
  for (int64_t accum : {1, 2, 4}) {
    Transformer m(tiny());
    m->init_weights(3);
    FixedObjective obj(accum);
    TrainOptions o;
    o.steps = 3;
    o.grad_accum = accum;
    o.warmup_steps = 0;
    o.lr = 1e-2;
    o.eval_every = 0;
    o.out_dir = test::temp_dir("accum" + std::to_string(accum));
    TrainLoop(o, m, obj, "", "").run();
    result[accum] = model_tensors(m);
  }
  for (const auto& [name, t] : result[1]) {
    EXPECT_LT((t - result[2].at(name)).abs().max().item<double>(), 5e-5) << name;
    EXPECT_LT((t - result[4].at(name)).abs().max().item<double>(), 5e-5) << name;
  }
}

// --activation-checkpointing changes memory, not the run: three steps give the same weights.
TEST(TrainLoop, ActivationCheckpointingGivesTheSameWeights) {
  std::map<bool, TensorMap> result;
  for (bool checkpoint : {false, true}) {
    Transformer m(tiny());
    m->init_weights(3);
    FixedObjective obj(2);
    TrainOptions o;
    o.steps = 3;
    o.grad_accum = 2;
    o.warmup_steps = 0;
    o.lr = 1e-2;
    o.eval_every = 0;
    o.activation_checkpointing = checkpoint;
    o.out_dir = test::temp_dir(std::string("ckpt-") + (checkpoint ? "on" : "off"));
    TrainLoop(o, m, obj, "", "").run();
    EXPECT_EQ(m->activation_checkpointing(), checkpoint);
    result[checkpoint] = model_tensors(m);
  }
  for (const auto& [name, t] : result[false]) EXPECT_LT((t - result[true].at(name)).abs().max().item<double>(), 5e-5) << name;
}

TEST(TrainLoop, CheckpointHoldsModelOptimizerStateAndConfig) {
  Transformer m(tiny());
  FixedObjective obj(1);
  TrainOptions o;
  o.steps = 4;
  o.checkpoint_every = 2;
  o.eval_every = 0;
  o.out_dir = test::temp_dir("ckpt_contents");
  TrainLoop(o, m, obj, "lr = 0.0003\n", "").run();
  const std::string dir = o.out_dir + "/checkpoints/step-00000004";
  for (const char* f : {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json", "run_config.ini"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  EXPECT_TRUE(std::filesystem::exists(o.out_dir + "/model/model.safetensors"));
  const auto moments = load_safetensors(dir + "/optimizer.safetensors");
  EXPECT_EQ(moments.at("transformer.wte.weight.step").item<int64_t>(), 4);
  EXPECT_TRUE(moments.count("rng.cpu"));
  EXPECT_EQ(test::read_text(dir + "/run_config.ini"), "lr = 0.0003\n");
  EXPECT_EQ(test::read_text(o.out_dir + "/checkpoints/latest"), "step-00000004\n");
  // No temporary directory is left behind.
  for (const auto& e : std::filesystem::directory_iterator(o.out_dir + "/checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

// A checkpoint written in the background holds the step it was taken at, byte for byte what the
// same checkpoint written at once holds, though training went on while it was written.
TEST(TrainLoop, BackgroundCheckpointsHoldTheirStepWhileTrainingGoesOn) {
  std::map<bool, std::string> dirs;
  for (bool background : {false, true}) {
    Transformer m(tiny());
    m->init_weights(3);
    FixedObjective obj(1);
    TrainOptions o;
    o.steps = 7;
    o.checkpoint_every = 2;
    o.keep_checkpoints = 10;
    o.eval_every = 0;
    o.lr = 1e-2;
    o.background_checkpoints = background;
    o.out_dir = dirs[background] = test::temp_dir(std::string("ckpt-bg-") + (background ? "on" : "off"));
    TrainLoop(o, m, obj, "lr = 0.01\n", "").run();
  }
  for (const char* step : {"step-00000002", "step-00000004", "step-00000006", "step-00000007"})
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json"}) {
      const std::string a = dirs[false] + "/checkpoints/" + step + "/" + f, b = dirs[true] + "/checkpoints/" + step + "/" + f;
      ASSERT_TRUE(std::filesystem::exists(b)) << b;
      EXPECT_EQ(read_file(a), read_file(b)) << step << "/" << f;
    }
  EXPECT_NE(read_file(dirs[true] + "/checkpoints/step-00000002/model.safetensors"),
            read_file(dirs[true] + "/checkpoints/step-00000004/model.safetensors"));
  EXPECT_EQ(test::read_text(dirs[true] + "/checkpoints/latest"), "step-00000007\n");
}

// A write that fails is reported by the writer's next call, and what waits on it is not called.
TEST(CheckpointWriter, AFailedWriteIsRethrownAndNothingIsPublished) {
  Transformer m(tiny());
  auto opt = torch::optim::AdamW(m->parameters());
  const std::string file = test::temp_dir("ckpt-writer-fail") + "/a-file";
  test::write_text(file, "not a directory");
  CheckpointWriter w(file, 2);  // the run directory is a file: the write fails
  bool called = false;
  std::string failure;
  w.write(
      snapshot_training_state(m, opt, TrainerState{3, 0}, "", "", "", {}, true),
      [&](const CheckpointSnapshot&) { called = true; }, [&](const std::string& what) { failure = what; });
  EXPECT_ANY_THROW(w.wait());
  EXPECT_FALSE(called);
  EXPECT_FALSE(failure.empty()) << "the failure is reported at once too";
  w.wait();  // reported once
  const std::string dir = test::temp_dir("ckpt-writer-ok");
  CheckpointWriter ok(dir, 2);
  ok.write(snapshot_training_state(m, opt, TrainerState{3, 0}, "", "", "", {}, true),
           [&](const CheckpointSnapshot& s) { called = s.state.step == 3 && latest_checkpoint(dir) == checkpoint_dir(dir, 3); });
  ok.wait();
  EXPECT_TRUE(called) << "called once the checkpoint is the latest";
  EXPECT_GT(ok.last_write_seconds(), 0.0);
  EXPECT_EQ(w.last_write_seconds(), 0.0) << "no write of the failing writer finished";
  EXPECT_TRUE(w.take_spare().models.empty()) << "a failed write leaves nothing to reuse";
  // The next snapshot copies into the last one's memory.
  auto spare = ok.take_spare();
  ASSERT_EQ(spare.models.size(), 1u);
  const auto& wte = spare.models[0].tensors.at("transformer.wte.weight");
  const void* memory = wte.data_ptr();
  {
    torch::NoGradGuard ng;
    m->parameters()[0].add_(1.0);
  }
  const auto next = snapshot_training_state(m, opt, TrainerState{4, 0}, "", "", "", {}, true, std::move(spare));
  EXPECT_EQ(next.models[0].tensors.at("transformer.wte.weight").data_ptr(), memory);
  for (const auto& [k, t] : model_tensors(m)) EXPECT_TRUE(torch::equal(next.models[0].tensors.at(k), t)) << k;
}

}  // namespace
}  // namespace keel
