// y = x W^T + b for a few input rows (2 to 16) against a large weight: the float32 check of a speculative
// draft (qkv/decoding/speculative.py), which runs the model over a handful of proposed tokens at once.
//
// Why: batch-1 generation reads every weight for each step; a forward over R tokens reads it once for R of
// them, and should cost about one step. MKL's product does not: on session 39's Xeon a (3,072 x 768)
// weight out of cache took 0.39-0.45 ms for 1 or 2 rows and 0.75 ms for 5, 0.97-0.99 for 9 (oneDNN with the
// weight packed 0.53 and 0.58-0.62). This loop reads each weight row once for all the input rows, which
// stay in the core's cache. Built with qkv's other kernels by qkv/nn/native.py (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>

#include "vec.h"

namespace {

using qkv::kLanes, qkv::load, qkv::Vec;

// The 16 lanes summed as a tree, four adds deep: a plain loop is 16 dependent adds, which at the few
// hundred weights of a GPT-2 row took as long as the products.
inline float total(Vec v) {
  for (int half = kLanes / 2; half > 0; half /= 2)
    for (int l = 0; l < half; ++l) v[l] += v[l + half];
  return v[0];
}

// Two weight rows (w, w + d) against R input rows (x, ldx apart) -> out[r * ldo + 0..1]: 2 R vector sums in
// registers, each weight vector loaded once for the R rows.
template <int R>
void two_rows(const float* __restrict w, int64_t d, const float* __restrict x, int64_t ldx, float* out, int64_t ldo) {
  Vec a[R] = {}, b[R] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    const Vec w0 = load<Vec>(w + i), w1 = load<Vec>(w + d + i);
    for (int r = 0; r < R; ++r) {
      const Vec xv = load<Vec>(x + r * ldx + i);
      a[r] += w0 * xv;
      b[r] += w1 * xv;
    }
  }
  for (int r = 0; r < R; ++r) {
    float s0 = total(a[r]), s1 = total(b[r]);
    for (int64_t k = i; k < d; ++k) s0 += w[k] * x[r * ldx + k], s1 += w[d + k] * x[r * ldx + k];
    out[r * ldo] = s0, out[r * ldo + 1] = s1;
  }
}

// One weight row against R input rows (an odd last row).
template <int R>
void one_row(const float* __restrict w, int64_t d, const float* __restrict x, int64_t ldx, float* out, int64_t ldo) {
  Vec a[R] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    const Vec w0 = load<Vec>(w + i);
    for (int r = 0; r < R; ++r) a[r] += w0 * load<Vec>(x + r * ldx + i);
  }
  for (int r = 0; r < R; ++r) {
    float s = total(a[r]);
    for (int64_t k = i; k < d; ++k) s += w[k] * x[r * ldx + k];
    out[r * ldo] = s;
  }
}

using Kernel = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t);
template <int... R>
constexpr Kernel pick(bool two, int r, std::integer_sequence<int, R...>) {
  Kernel k = nullptr;
  ((r == R + 1 ? (k = two ? two_rows<R + 1> : one_row<R + 1>) : k), ...);
  return k;
}
constexpr int kMaxGroup = 8;
// Requested 12 KB ahead of the pair being read: without it the rows arrive only as they are asked for and
// the products wait on them (5 rows of a 3,072 x 768 weight 0.61 ms, with it 0.42-0.46; 1.5 KB or 24 KB
// ahead did no better; session 39's Xeon, one-off timings).
constexpr int64_t kAhead = 3072;  // input rows per pass over a weight row: 16 sums and 2 weight vectors in registers

}  // namespace

// x: (R, in) float32, 2 <= R <= 16; weight: (out, in) float32; bias: (out,) or None -> (R, out).
at::Tensor few_rows(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2, "few_rows: x must be (R, in) float32");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 2 && weight.size(1) == x.size(1),
              "few_rows: weight must be (out, in) float32 with x's width");
  const int64_t rows = x.size(0), out_f = weight.size(0), in_f = weight.size(1);
  TORCH_CHECK(rows >= 1 && rows <= 2 * kMaxGroup, "few_rows: 1 to ", 2 * kMaxGroup, " rows");
  const auto xc = x.contiguous(), wc = weight.contiguous();
  c10::optional<at::Tensor> bc;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == out_f, "few_rows: bias must hold ", out_f, " floats");
    bc = bias->contiguous();
  }
  auto y = at::empty({rows, out_f}, x.options());
  const float* xp = xc.data_ptr<float>();
  const float* w = wc.data_ptr<float>();
  const float* b = bc.has_value() ? bc->data_ptr<float>() : nullptr;
  float* out = y.data_ptr<float>();
  const int64_t pairs = (out_f + 1) / 2;
  // contiguous blocks of weight-row pairs, one per thread, each streamed in order
  at::parallel_for(0, pairs, 16, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t j = 2 * p;
      const bool two = j + 1 < out_f;
      for (int64_t c = 0; c < 2 * in_f; c += 16) __builtin_prefetch(w + j * in_f + kAhead + c);  // a line is 16 floats
      for (int64_t r0 = 0; r0 < rows; r0 += kMaxGroup) {
        const int group = int(std::min<int64_t>(kMaxGroup, rows - r0));
        pick(two, group, std::make_integer_sequence<int, kMaxGroup>{})(w + j * in_f, in_f, xp + r0 * in_f, in_f,
                                                                       out + r0 * out_f + j, out_f);
      }
      if (b)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t k = j; k < j + (two ? 2 : 1); ++k) out[r * out_f + k] += b[k];
    }
  });
  return y;
}
