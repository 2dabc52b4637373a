// y = (s * P) x + b for a single float32 input row, with the weight held as 8-bit integers P and a float32
// scale s per output row: the products of a speculative draft (qkv/decoding/speculative.py).
//
// Why: batch-1 generation from a GPT-2-sized model reads every weight once per token, and reading is the
// cost (MKL streams float32 at the memory's rate). A draft that only proposes tokens, which the float32
// model then checks several at a time, can read a quarter of the bytes. The input row stays float32: GPT-2's
// activations have a few very large components, which one 8-bit scale per row would crush.
// Built with qkv's other kernels by qkv/nn/native.py (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "int_dot.h"

namespace {

// The input row as 16-bit integers, x ~ s q (s = max |x| / 32767): at most 2^-16 of the row's largest
// component off per entry, far below the weight's 8-bit rounding, and products of 16-bit by 8-bit
// integers take one instruction per 32 weights where float32 takes three per 16 (widen, convert,
// multiply-add), which made the float32 form compute-bound at 13 GB/s.
constexpr float kInt16 = 32767.0f;

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
// sum_i q[i] w[i] over one row (int_dot.h); each lane adds at most d / 64 products of 32767 * 127, exact in
// int32 for d below 2^15, and the four sums meet in float32, where their total cannot overflow.
inline float row_dot(const int16_t* q, const int8_t* w, int64_t d) {
  __m512i a0, a1, a2, a3;
  int64_t i = qkv::dot_lanes(q, w, d, a0, a1, a2, a3);
  const __m512 f = _mm512_add_ps(_mm512_add_ps(_mm512_cvtepi32_ps(a0), _mm512_cvtepi32_ps(a1)),
                                 _mm512_add_ps(_mm512_cvtepi32_ps(a2), _mm512_cvtepi32_ps(a3)));
  float s = _mm512_reduce_add_ps(f);
  for (; i < d; ++i) s += float(int32_t(q[i]) * w[i]);
  return s;
}
#else
// Elsewhere, 16 partial sums, which the compiler vectorises as it can.
inline float row_dot(const int16_t* q, const int8_t* w, int64_t d) {
  constexpr int kParts = 16;
  int32_t acc[kParts] = {};
  int64_t i = 0;
  for (; i + kParts <= d; i += kParts)
    for (int l = 0; l < kParts; ++l) acc[l] += int32_t(q[i + l]) * w[i + l];
  float s = 0;
  for (int l = 0; l < kParts; ++l) s += float(acc[l]);
  for (; i < d; ++i) s += float(int32_t(q[i]) * w[i]);
  return s;
}
#endif

}  // namespace

// x: (..., in) holding one row, float32; p: (out, in) int8; scale: (out,) float32; bias: (out,) or None
// -> (..., out) float32, y_j = scale_j (p_j . x) + b_j. p and scale as quantize_rows gives them for the weight.
at::Tensor draft_matvec(const at::Tensor& x, const at::Tensor& p, const at::Tensor& scale,
                        const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "draft_matvec: x must be a float32 CPU tensor");
  TORCH_CHECK(p.scalar_type() == at::kChar && p.dim() == 2, "draft_matvec: p must be an (out, in) int8 matrix");
  const int64_t out_f = p.size(0), in_f = p.size(1);
  TORCH_CHECK(x.size(-1) == in_f && x.numel() == in_f, "draft_matvec: x must be one row of ", in_f, " numbers");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == out_f, "draft_matvec: scale must hold ", out_f,
              " floats");
  const auto xc = x.contiguous(), pc = p.contiguous(), sc = scale.contiguous();
  c10::optional<at::Tensor> bc;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == out_f, "draft_matvec: bias must hold ", out_f,
                " floats");
    bc = bias->contiguous();
  }
  auto sizes = x.sizes().vec();
  sizes.back() = out_f;
  auto y = at::empty(sizes, x.options());
  const float* xv = xc.data_ptr<float>();
  float most = 0;
  bool finite = true;
  for (int64_t i = 0; i < in_f; ++i) most = std::max(most, std::fabs(xv[i])), finite &= std::isfinite(xv[i]);
  if (!finite) return y.fill_(std::numeric_limits<float>::quiet_NaN());  // no scale would represent it
  const float xs = most > 0 ? most / kInt16 : 1.0f, inv = 1 / xs;
  std::vector<int16_t> q(in_f);
  for (int64_t i = 0; i < in_f; ++i) q[i] = int16_t(std::lrintf(std::clamp(xv[i] * inv, -kInt16, kInt16)));
  const int8_t* w = pc.data_ptr<int8_t>();
  const float* s = sc.data_ptr<float>();
  const float* b = bc.has_value() ? bc->data_ptr<float>() : nullptr;
  float* out = y.data_ptr<float>();
  // contiguous blocks of rows, one per thread, each read as two streams, from its start and from its middle:
  // the 124M model's 48 layer products 5.3 -> 4.3 ms, 16 -> 20 GB/s (one stream left the memory idle
  // between the prefetcher's requests; four did no better than two; session 39's Xeon, one-off timings)
  auto one = [&](int64_t j) {
    const float v = s[j] * xs * row_dot(q.data(), w + j * in_f, in_f);
    out[j] = b ? v + b[j] : v;
  };
  at::parallel_for(0, out_f, 64, [&](int64_t begin, int64_t end) {
    const int64_t half = (end - begin) / 2;
    for (int64_t k = 0; k < half; ++k) one(begin + k), one(begin + half + k);
    if ((end - begin) % 2) one(end - 1);
  });
  return y;
}
