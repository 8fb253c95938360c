#include "core/fused_cross_entropy.h"

#include "core/error.h"

namespace keel {

namespace {

struct FusedLinearCrossEntropy : torch::autograd::Function<FusedLinearCrossEntropy> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& weight,
                               const torch::Tensor& targets, int64_t block_rows) {
    const int64_t n = hidden.size(0);
    auto grad_h = torch::zeros_like(hidden);
    auto grad_w = torch::zeros_like(weight);
    auto loss = torch::zeros({}, hidden.options());
    for (int64_t start = 0; start < n; start += block_rows) {
      const int64_t rows = std::min(block_rows, n - start);
      const auto h = hidden.narrow(0, start, rows);
      const auto t = targets.narrow(0, start, rows);
      const auto valid = (t != -100).to(hidden.scalar_type()).unsqueeze(1);  // [rows, 1]
      const auto target = t.clamp_min(0).unsqueeze(1);
      auto z = h.matmul(weight.t());  // [rows, V]
      const auto lse = z.logsumexp(-1, true);
      loss += ((lse - z.gather(1, target)) * valid).sum();
      // d loss / d z = softmax(z) - one-hot(target), on rows with a target.
      z.sub_(lse).exp_();
      z.scatter_add_(1, target, torch::full({rows, 1}, -1.0, z.options()));
      z.mul_(valid);
      grad_h.narrow(0, start, rows).copy_(z.matmul(weight));
      grad_w.addmm_(z.t(), h);
    }
    ctx->save_for_backward({grad_h, grad_w});
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto& g = grad_out[0];
    return {saved[0] * g, saved[1] * g, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_linear_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                                         int64_t block_rows) {
  KEEL_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1) && targets.dim() == 1 &&
                 targets.size(0) == hidden.size(0) && block_rows > 0,
             "fused_linear_cross_entropy: hidden [N, d], weight [V, d], targets [N], block_rows > 0");
  return FusedLinearCrossEntropy::apply(hidden, weight, targets, block_rows);
}

}  // namespace keel
