#include "core/decode_ops.h"

#include <cmath>

#include "core/error.h"
#include "core/linear.h"

namespace keel {

bool decode_ops_apply(int64_t rows, std::initializer_list<torch::Tensor> tensors) {
  if (rows > kMaxSmallRows) return false;
  const bool grad = torch::autograd::GradMode::is_enabled();
  for (const auto& t : tensors)
    if (!t.defined() || !t.device().is_cpu() || t.scalar_type() != torch::kFloat32 || !t.is_contiguous() ||
        (grad && t.requires_grad()))
      return false;
  return true;
}

void rms_norm_into(const float* x, int64_t rows, int64_t d, const float* weight, double eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float ss = 0.0f;
    for (int64_t i = 0; i < d; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + static_cast<float>(eps));
    for (int64_t i = 0; i < d; ++i) yr[i] = weight[i] * (xr[i] * inv);
  }
}

void layer_norm_into(const float* x, int64_t rows, int64_t d, const float* weight, const float* bias, double eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    // The moments in double: a float sum of d terms drifts by up to d rounding steps.
    double sum = 0.0, ss = 0.0;
    for (int64_t i = 0; i < d; ++i) sum += xr[i];
    const auto mean = static_cast<float>(sum / static_cast<double>(d));
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i] - mean) * (xr[i] - mean);
    const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] - mean) * inv * weight[i] + bias[i];
  }
}

void rotary_into(float* x, int64_t rows, int64_t heads, int64_t hd, const float* cos, const float* sin) {
  const int64_t half = hd / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = cos + r * hd;
    const float* s = sin + r * hd;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i + half] + a * s[i + half];
      }
    }
  }
}

torch::Tensor rms_norm_rows(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const int64_t d = x.size(-1);
  KEEL_CHECK(x.is_contiguous() && weight.is_contiguous() && weight.numel() == d,
             "rms_norm_rows: contiguous x [..., " << d << "] and weight [" << d << "], got weight " << weight.sizes());
  auto y = torch::empty_like(x);
  rms_norm_into(x.data_ptr<float>(), x.numel() / d, d, weight.data_ptr<float>(), eps, y.data_ptr<float>());
  return y;
}

torch::Tensor rotary_rows_(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin) {
  KEEL_CHECK(x.dim() == 4 && x.is_contiguous() && cos.is_contiguous() && sin.is_contiguous() && cos.sizes().equals(sin.sizes()),
             "rotary_rows_: contiguous x [B, T, heads, hd] and cos, sin [B, 1, T, hd]");
  const int64_t B = x.size(0), T = x.size(1), hd = x.size(3);
  KEEL_CHECK(cos.dim() == 4 && cos.size(0) == B && cos.size(1) == 1 && cos.size(2) == T && cos.size(3) == hd && hd % 2 == 0,
             "rotary_rows_: cos " << cos.sizes() << " does not fit x " << x.sizes());
  rotary_into(x.data_ptr<float>(), B * T, x.size(2), hd, cos.data_ptr<float>(), sin.data_ptr<float>());
  return x;
}

}  // namespace keel
