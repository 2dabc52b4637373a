// The 8-bit integer side of greedy decoding's screened argmax (screened_argmax.cpp, decoding/argmax.py):
// the output layer's weight rounded to integers once, and the integer scores of a single input row.
//
// Why a single-row product of qkv's own: batch-1 generation from a GPT-2-sized model reads its whole
// output layer every token (50,257 x 768 floats, 154 MB, about a fifth of the 124M model's bytes), and
// reading is the cost. As 8-bit integers it is a quarter of that. With the weight out of cache, as in
// generation, `torch._int_mm` multiplies one row by it in 3.0-3.8 ms and the loop below in 2.1 ms,
// against 5.9-6.0 ms for the float32 scores (session 38's Xeon, medians of 11 one-off timings, a 256 MB
// sweep before each). Built with qkv's other kernels by qkv/nn/native.py (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>
#include "int_dot.h"
#include "vec.h"

namespace {

// out = sum_i q16[i] w[i] over one row w of p, exact in int32 (|sum| <= d 127^2).
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
// One weight row at a time, in memory order: reading 8 rows side by side (one load of the input for 8
// rows) ran 2.5 against 1.7 ms with the weight out of cache (GPT-2's head, one-off timings), the
// prefetcher following one stream better than eight. The int32 lanes' total is exact: q holds 8-bit values.
inline int32_t row_dot(const int16_t* q16, const int8_t* w, int64_t d) {
  __m512i a0, a1, a2, a3;
  int64_t i = qkv::dot_lanes(q16, w, d, a0, a1, a2, a3);
  int32_t s = _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
  for (; i < d; ++i) s += int32_t(q16[i]) * w[i];
  return s;
}
#else
// Elsewhere, 64 partial sums, which the compiler vectorises as it can.
inline int32_t row_dot(const int16_t* q16, const int8_t* w, int64_t d) {
  constexpr int kParts = 64;
  int32_t acc[kParts] = {};
  int64_t i = 0;
  for (; i + kParts <= d; i += kParts)
    for (int l = 0; l < kParts; ++l) acc[l] += int32_t(q16[i + l]) * w[i + l];
  int32_t s = 0;
  for (int l = 0; l < kParts; ++l) s += acc[l];
  for (; i < d; ++i) s += int32_t(q16[i]) * w[i];
  return s;
}
#endif

using qkv::kLanes, qkv::load, qkv::magnitude, qkv::Vec;

}  // namespace

// q: (R, D) int8 (quantize_rows), p: (V, D) int8 -> (R, V) int32, q p^T exactly (as torch._int_mm). Each
// weight row is read from memory once for the R input rows (a speculative draft's check has up to 16:
// qkv/decoding/speculative.py); the later rows find it in the core's cache.
at::Tensor int8_matvec(const at::Tensor& q, const at::Tensor& p) {
  TORCH_CHECK(q.scalar_type() == at::kChar && p.scalar_type() == at::kChar && q.dim() == 2 && p.dim() == 2,
              "int8_matvec: q (R, D) and p (V, D) must be int8 matrices");
  TORCH_CHECK(q.size(1) == p.size(1), "int8_matvec: q's rows must be as wide as p's");
  const auto qc = q.contiguous(), pc = p.contiguous();
  const int64_t rows = q.size(0), v = p.size(0), d = p.size(1);
  auto out = at::empty({rows, v}, q.options().dtype(at::kInt));
  // widened once, read per weight row
  std::vector<int16_t> q16(qc.data_ptr<int8_t>(), qc.data_ptr<int8_t>() + rows * d);
  const int8_t* pp = pc.data_ptr<int8_t>();
  int32_t* o = out.data_ptr<int32_t>();
  auto one = [&](int64_t j) {
    for (int64_t r = 0; r < rows; ++r) o[r * v + j] = row_dot(q16.data() + r * d, pp + j * d, d);
  };
  // each thread's block read as two streams, from its start and from its middle (as draft_matvec.cpp)
  at::parallel_for(0, v, 256, [&](int64_t begin, int64_t end) {
    const int64_t half = (end - begin) / 2;
    for (int64_t k = 0; k < half; ++k) one(begin + k), one(begin + half + k);
    if ((end - begin) % 2) one(end - 1);
  });
  return out;
}

// weight: (V, D) float32 -> (p (V, D) int8, t, l1): p = weight / t rounded to nearest (half to even), with
// t = max |w| / 127 as a float32 (1 for a zero weight), and l1 = the largest row sum |w_j|_1 raised by
// 2^-10: the float32 partial sums are within d 2^-24 of the true sum, and screened_argmax's bound reads
// l1 as an upper bound. A NaN becomes -127 in p and makes l1 NaN, and screened_argmax then scores every row
// in float32. Two passes over the weight, both parallel and vectorised.
std::tuple<at::Tensor, double, double> quantize_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 2, "quantize_weight: weight must be (V, D) float32");
  const auto wc = weight.contiguous();
  const int64_t v = weight.size(0), d = weight.size(1);
  const float* w = wc.data_ptr<float>();
  std::vector<float> row_max(v), row_l1(v);
  float *maxima = row_max.data(), *sums = row_l1.data();
  // Pointers captured by value (and in the second pass read through __restrict locals): through captured
  // references the compiler must reload them after each store (an int8 store may alias anything), and
  // GCC 12 kept both loops scalar.
  at::parallel_for(0, v, 64, [w, d, maxima, sums](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const float* row = w + j * d;
      Vec most = {}, sum = {};  // 16 partial maxima and sums, in vector registers
      int64_t i = 0;
      for (; i + kLanes <= d; i += kLanes) {
        const Vec a = magnitude(load<Vec>(row + i));
        most = a > most ? a : most;  // a NaN drops out here; the sum keeps it
        sum += a;
      }
      float m = 0, total = 0;
      for (int l = 0; l < kLanes; ++l) m = std::max(m, most[l]), total += sum[l];
      for (; i < d; ++i) m = std::max(m, std::fabs(row[i])), total += std::fabs(row[i]);
      maxima[j] = m, sums[j] = total;
    }
  });
  float top = 0, l1 = 0;
  for (int64_t j = 0; j < v; ++j) top = std::max(top, row_max[j]), l1 = std::isnan(l1) ? l1 : std::max(row_l1[j], l1);
  const float t = top > 0 ? float(double(top) / 127) : 1.0f;
  const float inv = float(1.0 / double(t));  // w times 1/t: within 2^-15 of w / t, inside the bound's 2^-11
  auto p = at::empty({v, d}, weight.options().dtype(at::kChar));
  int8_t* pp = p.data_ptr<int8_t>();
  at::parallel_for(0, v * d, 1 << 16, [w, pp, inv](int64_t begin, int64_t end) {
    const float* __restrict src = w;
    int8_t* __restrict dst = pp;
    for (int64_t k = begin; k < end; ++k) {
      float y = __builtin_rintf(src[k] * inv);  // to nearest, half to even (the default mode), as torch.round
      y = y >= -127.0f ? y : -127.0f;  // in this form the loop vectorises; a NaN becomes -127
      y = y <= 127.0f ? y : 127.0f;
      dst[k] = int8_t(int32_t(y));
    }
  });
  return {p, double(t), double(l1) * (1 + 0x1p-10)};
}
