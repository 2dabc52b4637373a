// LayerNorm(x + Dropout(y + c)), the post-LN residual connection of sec 3.1 with the dropout of sec 5.4
// ("applied to the output of each sub-layer, before it is added to the sub-layer input and
// normalized"), as one pass over each row forward and one backward, for training. c is the bias of the
// sub-layer's last projection, optional: added here, the projection is a plain product, without
// `addmm`'s copy of the bias into its output or the separate column sum for the bias's gradient.
//
// Why qkv carries this: as three operations (qkv's dropout, an add, PyTorch's layer_norm) the forward
// reads and writes the (N, D) activations three times, and the backward makes two more passes (the
// norm's gradient, then the dropout's mask on it). The Multi30k training step has 15 such connections.
// The mask is qkv's (dropout_mask.h): with the same seed, the same elements are dropped as by
// qkv.nn.dropout, so the fused and unfused paths agree to rounding (tests/test_layer_norm.py).
// Built with qkv's other kernels by qkv/nn/native.py, for the processor it runs on (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "dropout_mask.h"

namespace {

constexpr int64_t kRowGrain = 64;  // rows per task

// f[j] = the dropout multiplier of element start + j, j < n, across kBlock boundaries.
void row_factors(const qkv::DropoutMask& mask, int64_t start, int64_t n, float* f) {
  for (int64_t j = 0; j < n;) {
    const int64_t at = start + j;
    const int64_t stop = std::min(n, (at / qkv::DropoutMask::kBlock + 1) * qkv::DropoutMask::kBlock - start);
    mask.factors(at, stop - j, f + j);
    j = stop;
  }
}

constexpr int kLanes = 16;  // independent partial sums: the compiler keeps them in one vector register

// The sum of x[j] over j < d in kLanes partial sums (a single running sum would keep the loop scalar:
// the compiler may not reorder a float sum itself).
template <typename F>
inline float lane_sum(int64_t d, F x) {
  float part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += x(j + l);
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += part[l];
  for (; j < d; ++j) total += x(j);
  return total;
}

// One row forward: s = skip + (y + c) * f, then out = LayerNorm(s); returns {mean, rstd}. __restrict__:
// the rows never overlap, which the compiler must know to vectorise the loops.
inline std::pair<float, float> forward_row(const float* __restrict__ y, const float* __restrict__ skip,
                                           const float* __restrict__ c, const float* __restrict__ f,
                                           const float* __restrict__ w, const float* __restrict__ b, int64_t d,
                                           float eps, float* __restrict__ s, float* __restrict__ out) {
  for (int64_t j = 0; j < d; ++j) s[j] = skip[j] + (y[j] + c[j]) * f[j];
  const float m = lane_sum(d, [&](int64_t j) { return s[j]; }) / d;
  const float var = lane_sum(d, [&](int64_t j) { return (s[j] - m) * (s[j] - m); }) / d;
  const float rs = 1.0f / std::sqrt(var + eps);
  for (int64_t j = 0; j < d; ++j) out[j] = (s[j] - m) * rs * w[j] + b[j];
  return {m, rs};
}

// One row backward (see dropout_layer_norm_backward), adding into the task's column sums dw and db,
// and into dc (dy's) where that is not null.
inline void backward_row(const float* __restrict__ grad, const float* __restrict__ s, const float* __restrict__ w,
                         const float* __restrict__ f, float m, float rs, int64_t d, float* __restrict__ xhat,
                         float* __restrict__ ds, float* __restrict__ dy, float* __restrict__ dw,
                         float* __restrict__ db, float* __restrict__ dc) {
  for (int64_t j = 0; j < d; ++j) {
    xhat[j] = (s[j] - m) * rs;
    dw[j] += grad[j] * xhat[j];
    db[j] += grad[j];
  }
  const float mg = lane_sum(d, [&](int64_t j) { return grad[j] * w[j]; }) / d;
  const float mgx = lane_sum(d, [&](int64_t j) { return grad[j] * w[j] * xhat[j]; }) / d;
  for (int64_t j = 0; j < d; ++j) {
    ds[j] = rs * (grad[j] * w[j] - mg - xhat[j] * mgx);
    dy[j] = ds[j] * f[j];
  }
  if (dc != nullptr)
    for (int64_t j = 0; j < d; ++j) dc[j] += dy[j];
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "dropout_layer_norm: ",
              name, " must be a contiguous float32 CPU tensor");
}

}  // namespace

// y, skip (N, D); y_bias (D,) or None; weight, bias (D,) -> [out = LayerNorm(skip + Dropout_p(y + y_bias)),
// s = skip + Dropout_p(y + y_bias), mean (N,), rstd (N,)], the last three for the backward pass. The mean
// and the (biased) variance in two passes over the row, as the textbook formula.
std::vector<at::Tensor> dropout_layer_norm_forward(const at::Tensor& y, const at::Tensor& skip,
                                                   const c10::optional<at::Tensor>& y_bias, const at::Tensor& weight,
                                                   const at::Tensor& bias, double p, int64_t seed, double eps) {
  check(y, "y");
  check(skip, "skip");
  TORCH_CHECK(y.sizes() == skip.sizes() && y.dim() == 2, "dropout_layer_norm: y and skip must be the same (N, D)");
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout_layer_norm: p must be in [0, 1), got ", p);
  const int64_t n = y.size(0), d = y.size(1);
  TORCH_CHECK(weight.numel() == d && bias.numel() == d, "dropout_layer_norm: weight and bias must hold ", d, " numbers");
  const auto wc = weight.contiguous(), bc = bias.contiguous();
  // no y_bias: zeros, so that one loop serves both (y + 0 is y exactly)
  const auto cc = y_bias.has_value() ? y_bias->contiguous() : at::zeros({d}, y.options());
  TORCH_CHECK(cc.numel() == d && cc.scalar_type() == at::kFloat, "dropout_layer_norm: y_bias must hold ", d,
              " float32 numbers");
  auto out = at::empty_like(y), s = at::empty_like(y);
  auto mean = at::empty({n}, y.options()), rstd = at::empty({n}, y.options());
  const float *yp = y.data_ptr<float>(), *kp = skip.data_ptr<float>(), *wp = wc.data_ptr<float>();
  const float *bp = bc.data_ptr<float>(), *cp = cc.data_ptr<float>();
  float *op = out.data_ptr<float>(), *sp = s.data_ptr<float>(), *mp = mean.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  const qkv::DropoutMask mask(p, seed);
  at::parallel_for(0, n, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> f(d);
    for (int64_t r = begin; r < end; ++r) {
      row_factors(mask, r * d, d, f.data());
      const auto [m, rs] = forward_row(yp + r * d, kp + r * d, cp, f.data(), wp, bp, d, static_cast<float>(eps),
                                       sp + r * d, op + r * d);
      mp[r] = m;
      rp[r] = rs;
    }
  });
  return {out, s, mean, rstd};
}

// The gradients given dL/dout (N, D) and the forward's s, mean, rstd -> [dL/dskip (N, D), dL/dy (N, D),
// dL/dweight (D,), dL/dbias (D,)], and dL/dy_bias (D,) after them when `with_y_bias`. With
// x^ = (s - mean) rstd and g = dout * weight: dL/ds = rstd (g - mean(g) - x^ mean(g x^)),
// dL/dskip = dL/ds, dL/dy = dL/ds * the dropout's factors; the weight's, the bias's and y_bias's
// gradients are column sums (of dout x^, dout and dL/dy), per task and then in task order.
std::vector<at::Tensor> dropout_layer_norm_backward(const at::Tensor& grad_, const at::Tensor& s, const at::Tensor& mean,
                                                    const at::Tensor& rstd, const at::Tensor& weight, double p,
                                                    int64_t seed, bool with_y_bias) {
  const auto grad = grad_.contiguous();
  check(grad, "grad");
  check(s, "s");
  TORCH_CHECK(grad.sizes() == s.sizes(), "dropout_layer_norm_backward: grad and s must have the same shape");
  const int64_t n = s.size(0), d = s.size(1);
  const auto wc = weight.contiguous();
  auto ds = at::empty_like(s), dy = at::empty_like(s);
  const int64_t tasks = (n + kRowGrain - 1) / kRowGrain;
  const int64_t sums_kinds = with_y_bias ? 3 : 2;
  auto partial = at::zeros({sums_kinds, std::max<int64_t>(tasks, 1), d}, s.options());  // weight's, bias's, y_bias's
  const float *gp = grad.data_ptr<float>(), *sp = s.data_ptr<float>(), *mp = mean.data_ptr<float>();
  const float *rp = rstd.data_ptr<float>(), *wp = wc.data_ptr<float>();
  float *dsp = ds.data_ptr<float>(), *dyp = dy.data_ptr<float>(), *pp = partial.data_ptr<float>();
  const qkv::DropoutMask mask(p, seed);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> f(d), xhat(d);
    for (int64_t t = begin; t < end; ++t) {
      float *dw = pp + t * d, *db = pp + (tasks + t) * d, *dc = with_y_bias ? pp + (2 * tasks + t) * d : nullptr;
      for (int64_t r = t * kRowGrain; r < std::min(n, (t + 1) * kRowGrain); ++r) {
        row_factors(mask, r * d, d, f.data());
        backward_row(gp + r * d, sp + r * d, wp, f.data(), mp[r], rp[r], d, xhat.data(), dsp + r * d, dyp + r * d, dw,
                     db, dc);
      }
    }
  });
  auto sums = partial.sum(1);  // (2 or 3, D)
  if (with_y_bias) return {ds, dy, sums[0], sums[1], sums[2]};
  return {ds, dy, sums[0], sums[1]};
}
