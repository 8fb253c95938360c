#include "core/activation_checkpoint.h"

#include <ATen/core/ivalue.h>

#include "core/error.h"

namespace keel {

namespace {

// The piece to recompute, kept in the autograd context until backward.
struct Piece : torch::CustomClassHolder {
  explicit Piece(std::function<torch::Tensor(const torch::Tensor&)> f) : run(std::move(f)) {}
  std::function<torch::Tensor(const torch::Tensor&)> run;
};

struct Checkpoint : torch::autograd::Function<Checkpoint> {
  // Autograd is off inside a Function's forward: f records nothing.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, c10::IValue piece) {
    ctx->save_for_backward({x});
    ctx->saved_data["piece"] = piece;
    auto f = c10::static_intrusive_pointer_cast<Piece>(piece.toCapsule());
    return f->run(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grad_out) {
    auto f = c10::static_intrusive_pointer_cast<Piece>(ctx->saved_data["piece"].toCapsule());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode on(true);
      y = f->run(x);
    }
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointed(std::function<torch::Tensor(const torch::Tensor&)> f, const torch::Tensor& x) {
  KEEL_CHECK(x.requires_grad(), "activation checkpointing needs an input that requires grad");
  auto piece = c10::IValue::make_capsule(c10::make_intrusive<Piece>(std::move(f)));
  return Checkpoint::apply(x, piece);
}

}  // namespace keel
