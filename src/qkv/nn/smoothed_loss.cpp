// Label-smoothed cross-entropy over a vocabulary (Szegedy et al. 2016; the paper's epsilon_ls = 0.1,
// sec 5.4), forward and backward, one pass over the scores each, or both in one pass.
//
// Why qkv carries this: the loss reads and writes the (N, V) scores, 1,536 x 8,000 floats (49 MB) at the
// Multi30k benchmark's shape. Written with PyTorch operations (qkv/train/losses.py) it makes about nine
// passes over that much memory: max, subtract, exp, sum, divide, mean, and two in the backward pass. Here
// the forward pass reads each row once from memory (a second read of the same row comes from the cache)
// and keeps only each row's log-sum-exp; the backward pass reads the scores once more and writes the
// gradient, softmax - q, in the same pass (docs/PERFORMANCE.md, levers table).
// Built with qkv's other kernels by qkv/nn/native.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "exp_approx.h"
#include "vec.h"

namespace {

constexpr int kParts = 16;  // partial sums per row, so that the loops vectorise and the adds overlap

void check(const at::Tensor& z, const at::Tensor& target) {
  TORCH_CHECK(z.device().is_cpu() && z.scalar_type() == at::kFloat && z.dim() == 2 && z.is_contiguous(),
              "smoothed_loss: the scores must be a contiguous (N, V) float32 CPU tensor");
  TORCH_CHECK(target.scalar_type() == at::kLong && target.dim() == 1 && target.size(0) == z.size(0),
              "smoothed_loss: the targets must be (N,) int64");
}

// The row's maximum, in one vector of kParts partial maxima: GCC 12 leaves the same loop over an array
// of partial maxima scalar (it does vectorise the array of partial sums below). A NaN drops out, as
// from std::max(m, z) with the NaN second.
inline float row_max(const float* z, int64_t v) {
  static_assert(kParts == qkv::kLanes, "one vector of partial maxima");
  qkv::Vec part = qkv::Vec{} - std::numeric_limits<float>::infinity();
  int64_t j = 0;
  for (; j + kParts <= v; j += kParts) {
    const auto x = qkv::load<qkv::Vec>(z + j);
    part = part < x ? x : part;
  }
  float m = part[0];
  for (int l = 1; l < kParts; ++l) m = std::max(m, part[l]);
  for (; j < v; ++j) m = std::max(m, z[j]);
  return m;
}

// One row's log-sum-exp, and in `loss` its loss: lse - (1 - eps) z_t - (eps / V) sum_v z_v, which is
// -(1 - eps) log p_t - (eps / V) sum_v log p_v; 0 where the target is `ignore`.
inline float row_lse(const float* zr, int64_t v, int64_t t, int64_t ignore, double eps, double* loss) {
  const float m = row_max(zr, v);
  float exps[kParts] = {}, sums[kParts] = {};
  int64_t j = 0;
  for (; j + kParts <= v; j += kParts)
    for (int l = 0; l < kParts; ++l) {
      exps[l] += qkv::exp_approx(zr[j + l] - m);
      sums[l] += zr[j + l];
    }
  double e = 0.0, s = 0.0;
  for (int l = 0; l < kParts; ++l) e += exps[l], s += sums[l];
  for (; j < v; ++j) e += qkv::exp_approx(zr[j] - m), s += zr[j];
  const float lse = m + static_cast<float>(std::log(e));
  if (t == ignore) {
    *loss = 0.0;
    return lse;
  }
  TORCH_CHECK(t >= 0 && t < v, "smoothed_loss: target id ", t, " is outside the vocabulary of ", v);
  *loss = static_cast<double>(lse) - (1.0 - eps) * zr[t] - eps * s / static_cast<double>(v);
  return lse;
}

// One row of the gradient, g (softmax(z) - q), into dr (which may be zr: each element is read before it
// is written); zeros where the target is `ignore`.
inline void row_gradient(const float* zr, float* dr, int64_t v, int64_t t, int64_t ignore, float lse, float g,
                         double eps) {
  if (t == ignore) {
    std::fill(dr, dr + v, 0.0f);
    return;
  }
  const float gl = g, ul = static_cast<float>(eps / static_cast<double>(v));  // locals: vectorisation
  for (int64_t j = 0; j < v; ++j) dr[j] = gl * (qkv::exp_approx(zr[j] - lse) - ul);
  dr[t] -= static_cast<float>((1.0 - eps) * g);
}

double in_row_order(const std::vector<double>& rows) {  // the same sum on any number of threads
  double total = 0.0;
  for (double r : rows) total += r;
  return total;
}

}  // namespace

// z (N, V) scores, target (N,) ids -> [the summed loss over rows whose target is not `ignore` (float64
// scalar), each row's log-sum-exp (N,)].
std::vector<at::Tensor> smoothed_loss_forward(const at::Tensor& z, const at::Tensor& target, double eps,
                                              int64_t ignore) {
  check(z, target);
  const int64_t n = z.size(0), v = z.size(1);
  auto lse = at::empty({n}, z.options());
  std::vector<double> rows(n);
  const float* zp = z.data_ptr<float>();
  const int64_t* tp = target.data_ptr<int64_t>();
  float* lp = lse.data_ptr<float>();
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) lp[r] = row_lse(zp + r * v, v, tp[r], ignore, eps, &rows[r]);
  });
  return {at::scalar_tensor(in_row_order(rows), at::TensorOptions().dtype(at::kDouble)), lse};
}

// d(grad * loss) / dz = grad * (softmax(z) - q), q = (1 - eps) at the target + eps / V everywhere; rows
// whose target is `ignore` get zeros. in_place: written over z (each element is read once, before it is
// written), for a caller that owns the scores and needs them no more.
at::Tensor smoothed_loss_backward(const at::Tensor& z, const at::Tensor& target, const at::Tensor& lse, double eps,
                                  int64_t ignore, double grad, bool in_place) {
  check(z, target);
  const int64_t n = z.size(0), v = z.size(1);
  auto dz = in_place ? z : at::empty_like(z);
  const float* zp = z.data_ptr<float>();
  const int64_t* tp = target.data_ptr<int64_t>();
  const float* lp = lse.data_ptr<float>();
  float* dp = dz.data_ptr<float>();
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      row_gradient(zp + r * v, dp + r * v, v, tp[r], ignore, lp[r], static_cast<float>(grad), eps);
  });
  return dz;
}

// Both at once, the gradient (for an incoming gradient of 1) written over z: -> the summed loss as
// smoothed_loss_forward gives it. Each row's gradient is written while the row is still in the core's
// cache from its log-sum-exp, where the two calls read the whole block of scores from memory twice.
at::Tensor smoothed_loss_with_gradient(const at::Tensor& z, const at::Tensor& target, double eps, int64_t ignore) {
  check(z, target);
  const int64_t n = z.size(0), v = z.size(1);
  std::vector<double> rows(n);
  float* zp = z.data_ptr<float>();
  const int64_t* tp = target.data_ptr<int64_t>();
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float lse = row_lse(zp + r * v, v, tp[r], ignore, eps, &rows[r]);
      row_gradient(zp + r * v, zp + r * v, v, tp[r], ignore, lse, 1.0f, eps);
    }
  });
  return at::scalar_tensor(in_row_order(rows), at::TensorOptions().dtype(at::kDouble));
}
