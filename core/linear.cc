#include "core/linear.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/kernel_isa.h"
#include "core/linear_group.h"
#include "core/linear_kernels.h"

namespace keel {

namespace {

namespace F = torch::nn::functional;
using namespace linear_kernels;

thread_local const DecodeWeights* current_decode_weights = nullptr;

// The kernels compiled for each instruction set; the set is picked once from the CPU. Float32
// weights take panels (W [K, N]), register tiles (W [N, K] or [K, N] against more rows) or one
// output at a time (W [N, K], a single row); bfloat16 decoding copies, kept [N, K], always go one
// output at a time (goes_by_outputs).
struct Kernels {
  int64_t lanes, nk_cols;
  void (*kn_panel)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, const float*, float*, int64_t, int64_t,
                   int64_t);
  void (*nk)(const float*, int64_t, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t, int64_t);
  void (*nk_outputs)(const float*, int64_t, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t, int64_t);
  void (*nk_outputs_bf16)(const float*, int64_t, int64_t, const Bf16*, int64_t, const float*, float*, int64_t, int64_t, int64_t);
  void (*kn_tiled)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, const float*, float*, int64_t, int64_t,
                   int64_t);
};
#define KEEL_KERNELS(NAME, TARGET, L)                                                                                           \
  TARGET void NAME##_kn_panel(const float* x, int64_t ldx, int64_t M, const float* w, int64_t N, int64_t K, const float* bias,  \
                              float* y, int64_t ldy, int64_t n0, int64_t width) {                                               \
    kn_panel<L>(x, ldx, M, w, N, K, bias, y, ldy, n0, width);                                                                   \
  }                                                                                                                             \
  TARGET void NAME##_nk(const float* x, int64_t ldx, int64_t M, const float* w, int64_t K, const float* bias, float* y,         \
                        int64_t ldy, int64_t t0, int64_t t1) {                                                                  \
    nk_tiles<L>(x, ldx, M, w, K, bias, y, ldy, t0, t1);                                                                         \
  }                                                                                                                             \
  TARGET void NAME##_nk_outputs(const float* x, int64_t ldx, int64_t M, const float* w, int64_t K, const float* bias, float* y, \
                                int64_t ldy, int64_t n0, int64_t n1) {                                                          \
    nk_outputs<L>(x, ldx, M, w, K, bias, y, ldy, n0, n1);                                                                       \
  }                                                                                                                             \
  TARGET void NAME##_nk_outputs_bf16(const float* x, int64_t ldx, int64_t M, const Bf16* w, int64_t K, const float* bias,       \
                                     float* y, int64_t ldy, int64_t n0, int64_t n1) {                                           \
    nk_outputs<L>(x, ldx, M, w, K, bias, y, ldy, n0, n1);                                                                       \
  }                                                                                                                             \
  TARGET void NAME##_kn_tiled(const float* x, int64_t ldx, int64_t M, const float* w, int64_t N, int64_t K, const float* bias,  \
                              float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {                                          \
    kn_tiled<L>(x, ldx, M, w, N, K, bias, y, ldy, n_begin, n_end);                                                              \
  }                                                                                                                             \
  constexpr Kernels NAME = {                                                                                                    \
      L, nk_cols<L>(), NAME##_kn_panel, NAME##_nk, NAME##_nk_outputs, NAME##_nk_outputs_bf16, NAME##_kn_tiled};
#if defined(__x86_64__)
KEEL_KERNELS(kAvx512Kernels, __attribute__((target("avx512f,fma"))), 16)
KEEL_KERNELS(kAvx2Kernels, __attribute__((target("avx2,fma"))), 8)
#endif
KEEL_KERNELS(kGenericKernels, , 4)
#undef KEEL_KERNELS

const Kernels& kernels_for(KernelIsa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case KernelIsa::kAvx512:
      return kAvx512Kernels;
    case KernelIsa::kAvx2:
      return kAvx2Kernels;
#endif
    default:
      return kGenericKernels;
  }
}

// x as [M, K] rows with unit stride along K.
torch::Tensor rows_of(const torch::Tensor& x, int64_t K) {
  auto x2 = x.reshape({-1, K});
  return x2.stride(1) == 1 ? x2 : x2.contiguous();
}

// Output columns [0, whole) of W [K, N] when M rows of them fit one panel: kRowBlocks blocks of
// consecutive rows of W, each read as one run front to back into sums of its own, added in block
// order after. The blocks do not depend on the thread count, so neither do the bits; a thread
// takes consecutive blocks. (Panels side by side read each row's width / threads floats, then
// jump a row: GPT-2 small's mlp.c_proj, 3072 x 768, streamed at 13-15 GB/s that way and at
// 36-37 GB/s by rows, on 2 threads of an AVX-512 EPYC.)
inline constexpr int64_t kRowBlocks = 8;
// Rows of W [K, N] a block holds at least when the product is split by rows (fewer: by panels).
inline constexpr int64_t kMinBlockRows = 16;
// Whether M rows against W [K, N] go by blocks of rows: the M rows' sums of the `whole` columns
// the kernels cover fit one panel, and W has rows enough.
bool by_rows(int64_t M, int64_t whole, int64_t K) {
  return whole > 0 && M * whole <= kPanelFloats && K >= kRowBlocks * kMinBlockRows;
}
void kn_product_by_rows(const float* xp, int64_t ldx, int64_t M, const float* wp, int64_t N, int64_t K, const float* bp,
                        float* yp, const Kernels& k, int64_t whole) {
  const int64_t rows = (K + 4 * kRowBlocks - 1) / (4 * kRowBlocks) * 4;  // runs of 4 rows stay whole
  const int64_t blocks = (K + rows - 1) / rows, block = M * whole;       // the last block may be short
  // The calling thread's sums, kept between steps; each block's kn_panel writes all of its part.
  thread_local std::vector<float> sums;
  sums.resize(static_cast<size_t>(kRowBlocks * kPanelFloats));
  float* s = sums.data();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t k0 = b * rows, k1 = std::min(K, k0 + rows);
      k.kn_panel(xp + k0, ldx, M, wp + k0 * N, N, k1 - k0, b == 0 ? bp : nullptr, s + b * block, whole, 0, whole);
    }
  });
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < whole; ++j) {
      float v = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) v += s[b * block + m * whole + j];
      yp[m * N + j] = v;
    }
}

// Output columns [0, whole) of W [K, N]: by blocks of rows when M rows of them fit one panel and
// W has rows enough, else in panels side by side, as many per thread, so the threads finish
// together. Neither gives bits that depend on the thread count.
void kn_product(const float* xp, int64_t ldx, int64_t M, const float* wp, int64_t N, int64_t K, const float* bp, float* yp,
                const Kernels& k, int64_t whole) {
  if (by_rows(M, whole, K)) return kn_product_by_rows(xp, ldx, M, wp, N, K, bp, yp, k, whole);
  const int64_t lanes = k.lanes;
  const int64_t threads = at::get_num_threads();
  const int64_t panels = threads * std::max<int64_t>(1, (whole + threads * kPanelColumns - 1) / (threads * kPanelColumns));
  const int64_t width = ((whole + panels - 1) / panels + lanes - 1) / lanes * lanes;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = p * width, w = std::min(width, whole - n0);
      if (w > 0) k.kn_panel(xp, ldx, M, wp, N, K, bp, yp, N, n0, w);
    }
  });
}

// One product with W [N, K] for nk_products: y [M, N] = x · Wᵀ (+ bias).
template <class W>
struct NkOperand {
  const W* w;
  const float* bias;  // or null
  float* y;
  int64_t N;
};

// Products of x [M, K] with several [N_i, K] weights of one element type in one pass over the
// threads: the tiles (or outputs, goes_by_outputs) of every weight are numbered one after the
// other and split together.
template <class W>
void nk_products(const float* xp, int64_t ldx, int64_t M, int64_t K, const std::vector<NkOperand<W>>& ops, const Kernels& k) {
  const bool by_outputs = goes_by_outputs<W>(M);
  const int64_t cols = by_outputs ? 1 : k.nk_cols;
  std::vector<int64_t> first(ops.size() + 1, 0);  // first tile (or output) of each weight
  for (size_t i = 0; i < ops.size(); ++i) first[i + 1] = first[i] + ops[i].N / cols;
  // Enough multiply-adds per task (~64k) that handing work to another thread pays.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, M * K * cols));
  at::parallel_for(0, first.back(), grain, [&](int64_t begin, int64_t end) {
    for (size_t i = 0; i < ops.size(); ++i) {
      const int64_t b = std::max(begin, first[i]) - first[i], e = std::min(end, first[i + 1]) - first[i];
      if (b >= e) continue;
      const auto& o = ops[i];
      if constexpr (std::is_same_v<W, Bf16>)
        k.nk_outputs_bf16(xp, ldx, M, o.w, K, o.bias, o.y, o.N, b, e);
      else if (by_outputs)
        k.nk_outputs(xp, ldx, M, o.w, K, o.bias, o.y, o.N, b, e);
      else
        k.nk(xp, ldx, M, o.w, K, o.bias, o.y, o.N, b, e);
    }
  });
  for (const auto& o : ops) {
    const int64_t whole = o.N / cols * cols;  // the rest are edge columns
    if (whole < o.N) edge_columns(xp, ldx, M, o.w, o.N, K, /*w_is_kn=*/false, o.bias, o.y, o.N, whole, o.N);
  }
}

// y [M, N] = x · W (+ bias) with W's elements of type W (float32, or bfloat16 bits kept [N, K]).
template <class W>
void small_product_into(const float* xp, int64_t ldx, int64_t M, int64_t K, const W* wp, int64_t N, const float* bp, bool kn,
                        float* yp, const Kernels& k) {
  if constexpr (std::is_same_v<W, float>)
    if (kn) {
      const int64_t whole = N / k.lanes * k.lanes;  // columns the panels cover; the rest are edge columns
      kn_product(xp, ldx, M, wp, N, K, bp, yp, k, whole);
      if (whole < N) edge_columns(xp, ldx, M, wp, N, K, /*w_is_kn=*/true, bp, yp, N, whole, N);
      return;
    }
  nk_products<W>(xp, ldx, M, K, {{wp, bp, yp, N}}, k);
}

// y [M, N] = x · W (+ bias), W [K, N], for 2 to kMaxTiledRows rows of x in register tiles: blocks of
// output columns over the threads (bits independent of their number), float32 weights.
void tiled_kn_into(const float* xp, int64_t ldx, int64_t M, int64_t K, const float* wp, int64_t N, const float* bp, float* yp,
                   const Kernels& k) {
  const int64_t whole = N / k.lanes * k.lanes, block = (k.lanes >= 16 ? 4 : 2) * k.lanes;  // kTiledVectors
  at::parallel_for(0, (whole + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
    k.kn_tiled(xp, ldx, M, wp, N, K, bp, yp, N, begin * block, std::min(whole, end * block));
  });
  if (whole < N) edge_columns(xp, ldx, M, wp, N, K, /*w_is_kn=*/true, bp, yp, N, whole, N);
}

// y [M, N] = x [M, K] · W (+ bias) with `weight` ([N, K], or [K, N] when kn), or with its decoding
// copy when the thread has one (at most kMaxSmallRows rows; more read the float32 weight), at most
// kMaxTiledRows rows. Float32 W [K, N] against 2 or more rows takes the register tiles unless it
// goes by blocks of rows: the panels load and store each row's sums once per 4 multiply-adds, the
// tiles keep 16 in registers (GPT-2 small's step at batch 8 on an AVX-512 EPYC: 31.4-36.6 ms
// against 34.2-41.7, builds alternating; the bits are the same, each output summing its bias then
// k in order in both).
void product_into(const float* xp, int64_t ldx, int64_t M, int64_t K, const torch::Tensor& weight, const float* bp, bool kn,
                  float* yp) {
  const Kernels& k = kernels_for(kernel_isa());
  const int64_t N = kn ? weight.size(1) : weight.size(0);
  const float* wp = weight.data_ptr<float>();
  if (M > kMaxSmallRows) {
    if (kn) return tiled_kn_into(xp, ldx, M, K, wp, N, bp, yp, k);
    return small_product_into(xp, ldx, M, K, wp, N, bp, /*kn=*/false, yp, k);
  }
  const torch::Tensor copy = current_decode_weights ? current_decode_weights->find(weight) : torch::Tensor();
  if (copy.defined()) {  // [N, K] whatever the weight's layout
    const auto* cp = reinterpret_cast<const Bf16*>(copy.data_ptr<at::BFloat16>());
    return small_product_into(xp, ldx, M, K, cp, N, bp, /*kn=*/false, yp, k);
  }
  if (kn && M >= 2 && !by_rows(M, N / k.lanes * k.lanes, K)) return tiled_kn_into(xp, ldx, M, K, wp, N, bp, yp, k);
  small_product_into(xp, ldx, M, K, wp, N, bp, kn, yp, k);
}

// product_into on tensors: x [..., K] gives y [..., N].
torch::Tensor small_product(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, bool kn) {
  const int64_t K = x.size(-1), N = kn ? weight.size(1) : weight.size(0);
  auto x2 = rows_of(x, K);
  auto y = torch::empty({x2.size(0), N}, x.options());
  product_into(x2.data_ptr<float>(), x2.stride(0), x2.size(0), K, weight, bias.defined() ? bias.data_ptr<float>() : nullptr, kn,
               y.data_ptr<float>());
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  return y.view(out_shape);
}

// Whether x · weight (+ bias) can take keel's kernels with at most max_rows rows of x.
bool takes_kernels(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, int64_t max_rows) {
  // The generic build (SSE, NEON) is not faster than OpenBLAS's own kernels: it runs only when a
  // test limits a better CPU to it.
  if (kernel_isa() == KernelIsa::kGeneric && best_kernel_isa() == KernelIsa::kGeneric) return false;
  if (!x.defined() || x.dim() < 1 || x.device().type() != torch::kCPU || x.scalar_type() != torch::kFloat32) return false;
  if (weight.scalar_type() != torch::kFloat32 || weight.dim() != 2 || !weight.is_contiguous() || !weight.device().is_cpu())
    return false;
  if (bias.defined() &&
      (bias.scalar_type() != torch::kFloat32 || !bias.is_contiguous() || !bias.device().is_cpu() || bias.dim() != 1))
    return false;
  if (x.numel() / std::max<int64_t>(1, x.size(-1)) > max_rows || x.numel() == 0) return false;
  // Autograd needs LibTorch's ops; decoding runs in inference mode or without grad.
  if (torch::autograd::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad())))
    return false;
  return true;
}

}  // namespace

void DecodeWeights::refresh(const std::vector<torch::Tensor>& nk, const std::vector<torch::Tensor>& kn) {
  torch::NoGradGuard no_grad;
  std::unordered_map<const void*, Copy> copies;
  for (const auto* list : {&nk, &kn})
    for (const auto& w : *list) {
      KEEL_CHECK(w.dim() == 2 && w.scalar_type() == torch::kFloat32,
                 "decoding copies are made of float32 weight matrices, got " << w.sizes() << " " << w.scalar_type());
      const auto nk_view = list == &kn ? w.detach().t() : w.detach();
      copies[w.unsafeGetTensorImpl()] = {w, nk_view.to(torch::kBFloat16).contiguous()};
    }
  copies_ = std::move(copies);
}

torch::Tensor DecodeWeights::find(const torch::Tensor& weight) const {
  const auto it = copies_.find(weight.unsafeGetTensorImpl());
  return it == copies_.end() ? torch::Tensor() : it->second.copy;
}

int64_t DecodeWeights::bytes() const {
  int64_t b = 0;
  for (const auto& [key, c] : copies_) b += static_cast<int64_t>(c.copy.nbytes());
  return b;
}

DecodeWeightsScope::DecodeWeightsScope(const DecodeWeights* w) : previous_(current_decode_weights) { current_decode_weights = w; }
DecodeWeightsScope::~DecodeWeightsScope() { current_decode_weights = previous_; }

torch::Tensor decoding_copy_product(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!current_decode_weights || !x.defined() || x.scalar_type() != torch::kFloat32) return {};
  if (torch::autograd::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad())) return {};
  const auto copy = current_decode_weights->find(weight);  // [N, K]
  if (!copy.defined() || copy.device() != x.device()) return {};
  KEEL_CHECK(x.size(-1) == copy.size(1), "linear: input width " << x.size(-1) << " != the decoding copy's " << copy.size(1));
  auto y = F::linear(x.to(torch::kBFloat16), copy).to(torch::kFloat32);
  return bias.defined() ? y + bias : y;
}

bool uses_small_kernel(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return takes_kernels(x, weight, bias, kMaxSmallRows);
}
bool uses_tiled_kernel(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return x.defined() && x.dim() >= 1 && x.numel() / std::max<int64_t>(1, x.size(-1)) > kMaxSmallRows &&
         takes_kernels(x, weight, bias, kMaxTiledRows);
}

torch::Tensor linear_nk(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  KEEL_CHECK(x.size(-1) == weight.size(1),
             "linear: input width " << x.size(-1) << " != weight [" << weight.size(0) << ", " << weight.size(1) << "] columns");
  // A bias of another length is left to LibTorch, which names the mismatch.
  if ((uses_small_kernel(x, weight, bias) || uses_tiled_kernel(x, weight, bias)) &&
      (!bias.defined() || bias.size(0) == weight.size(0)))
    return small_product(x, weight, bias, /*kn=*/false);
  if (!x.device().is_cpu())
    if (auto y = decoding_copy_product(x, weight, bias); y.defined()) return y;
  return F::linear(x, weight, bias);
}

bool linear_nk_group_applies(const torch::Tensor& x, const std::vector<torch::Tensor>& weights) {
  for (const auto& w : weights) {
    KEEL_CHECK(w.dim() == 2 && x.size(-1) == w.size(1),
               "linear: input width " << x.size(-1) << " != weight " << w.sizes() << " columns");
    if (!uses_small_kernel(x, w, {})) return false;
  }
  return true;
}

void linear_nk_group_into(const float* x, int64_t M, int64_t ldx, int64_t K, const std::vector<torch::Tensor>& weights,
                          const std::vector<float*>& ys) {
  KEEL_CHECK(ys.size() == weights.size() && M >= 1 && M <= kMaxSmallRows,
             "linear_nk_group_into: one output per weight, 1 to " << kMaxSmallRows << " rows");
  for (const auto& w : weights)
    KEEL_CHECK(w.dim() == 2 && w.size(1) == K && w.is_contiguous() && w.scalar_type() == torch::kFloat32,
               "linear_nk_group_into: weights [N, " << K << "] contiguous float32, got " << w.sizes());
  // The weights' decoding copies, all or none: one pass reads one element type.
  std::vector<torch::Tensor> copies;
  for (const auto& w : weights)
    if (current_decode_weights)
      if (auto c = current_decode_weights->find(w); c.defined()) copies.push_back(c);
  const Kernels& k = kernels_for(kernel_isa());
  if (copies.empty()) {
    std::vector<NkOperand<float>> ops;
    for (size_t i = 0; i < weights.size(); ++i) ops.push_back({weights[i].data_ptr<float>(), nullptr, ys[i], weights[i].size(0)});
    nk_products(x, ldx, M, K, ops, k);
  } else if (copies.size() == weights.size()) {
    std::vector<NkOperand<Bf16>> ops;
    for (size_t i = 0; i < weights.size(); ++i)
      ops.push_back({reinterpret_cast<const Bf16*>(copies[i].data_ptr<at::BFloat16>()), nullptr, ys[i], weights[i].size(0)});
    nk_products(x, ldx, M, K, ops, k);
  } else {  // some with copies, some without: one pass each
    for (size_t i = 0; i < weights.size(); ++i) linear_nk_group_into(x, M, ldx, K, {weights[i]}, {ys[i]});
  }
}

std::vector<torch::Tensor> linear_nk_group(const torch::Tensor& x, const std::vector<torch::Tensor>& weights) {
  std::vector<torch::Tensor> ys;
  if (!linear_nk_group_applies(x, weights)) {
    for (const auto& w : weights) ys.push_back(linear_nk(x, w));
    return ys;
  }
  const int64_t K = x.size(-1);
  auto x2 = rows_of(x, K);
  std::vector<float*> outs;
  for (const auto& w : weights) {
    ys.push_back(torch::empty({x2.size(0), w.size(0)}, x.options()));
    outs.push_back(ys.back().data_ptr<float>());
  }
  linear_nk_group_into(x2.data_ptr<float>(), x2.size(0), x2.stride(0), K, weights, outs);
  auto shape = x.sizes().vec();
  for (auto& y : ys) {
    shape.back() = y.size(1);
    y = y.view(shape);
  }
  return ys;
}

void linear_kn_into(const float* x, int64_t M, int64_t ldx, const torch::Tensor& weight, const torch::Tensor& bias, float* y) {
  KEEL_CHECK(M >= 1 && M <= kMaxSmallRows && weight.dim() == 2 && ldx >= weight.size(0) && weight.is_contiguous() &&
                 weight.device().is_cpu() && weight.scalar_type() == torch::kFloat32,
             "linear_kn_into: 1 to " << kMaxSmallRows << " rows of stride >= K and a contiguous float32 CPU weight [K, N], got "
                                     << M << " rows of stride " << ldx << ", weight " << weight.sizes());
  KEEL_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(1) && bias.is_contiguous() &&
                                 bias.device().is_cpu() && bias.scalar_type() == torch::kFloat32),
             "linear_kn_into: bias [" << weight.size(1) << "] contiguous float32, got " << bias.sizes());
  product_into(x, ldx, M, weight.size(0), weight, bias.defined() ? bias.data_ptr<float>() : nullptr, /*kn=*/true, y);
}

torch::Tensor linear_kn(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  KEEL_CHECK(x.size(-1) == weight.size(0),
             "linear: input width " << x.size(-1) << " != weight [" << weight.size(0) << ", " << weight.size(1) << "] rows");
  if ((uses_small_kernel(x, weight, bias) || uses_tiled_kernel(x, weight, bias)) &&
      (!bias.defined() || bias.size(0) == weight.size(1)))
    return small_product(x, weight, bias, /*kn=*/true);
  if (!x.device().is_cpu())
    if (auto y = decoding_copy_product(x, weight, bias); y.defined()) return y;
  // One fused addmm over the flattened tokens instead of a matmul and an add.
  auto x2 = x.reshape({-1, x.size(-1)});
  auto y = bias.defined() ? torch::addmm(bias, x2, weight) : torch::mm(x2, weight);
  auto shape = x.sizes().vec();
  shape.back() = weight.size(1);
  return y.view(shape);
}

}  // namespace keel
