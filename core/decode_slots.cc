#include "core/decode_slots.h"

#include <cmath>
#include <cstring>

#include "core/decode_ops.h"

namespace keel {

bool decode_slots_fit(const DecodeSlots& s, int64_t B, int64_t KV, int64_t hd) {
  if (!decode_ops_apply(B, {s.k_cache, s.v_cache, s.bias})) return false;
  for (const auto* c : {&s.k_cache, &s.v_cache})
    if (c->dim() != 4 || c->size(0) != B || c->size(1) != KV || c->size(3) != hd || c->size(2) < s.span) return false;
  if (!s.v_cache.sizes().equals(s.k_cache.sizes())) return false;  // one capacity addresses both
  if (s.span < 1 || !s.bias.sizes().equals({B, 1, 1, s.span})) return false;
  if (static_cast<int64_t>(s.write.size()) != B) return false;
  for (const int64_t slot : s.write)
    if (slot < 0 || slot >= s.span) return false;
  return true;
}

void write_decode_slots(const DecodeSlots& s, const float* k, const float* v, int64_t ld, int64_t B, int64_t KV, int64_t hd) {
  const int64_t cap = s.k_cache.size(2);
  float* kc = s.k_cache.data_ptr<float>();
  float* vc = s.v_cache.data_ptr<float>();
  for (int64_t r = 0; r < B; ++r)
    for (int64_t h = 0; h < KV; ++h) {
      const int64_t at = ((r * KV + h) * cap + s.write[static_cast<size_t>(r)]) * hd, from = r * ld + h * hd;
      std::memcpy(kc + at, k + from, static_cast<size_t>(hd) * sizeof(float));
      std::memcpy(vc + at, v + from, static_cast<size_t>(hd) * sizeof(float));
    }
}

DecodeHeads decode_heads(const DecodeSlots& s, const float* q, int64_t ld, int64_t B, int64_t H, int64_t KV, int64_t hd) {
  const int64_t cap = s.k_cache.size(2);
  DecodeHeads a{};
  a.q = q, a.k = s.k_cache.data_ptr<float>(), a.v = s.v_cache.data_ptr<float>(), a.bias = s.bias.data_ptr<float>();
  a.q_b = ld, a.q_h = hd;
  a.k_b = a.v_b = KV * cap * hd, a.k_h = a.v_h = cap * hd, a.k_s = a.v_s = hd;
  a.bias_b = s.span;
  a.B = B, a.H = H, a.rep = H / KV, a.S = s.span, a.hd = hd;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  return a;
}

}  // namespace keel
