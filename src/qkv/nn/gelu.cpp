// GPT-2's GELU, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), and its derivative, as one
// pass over the tensor each (Hendrycks & Gimpel 2016, sec 2; the tanh form is the one GPT-2 trained with).
//
// Why qkv carries this: PyTorch's fused kernel for this form spends its time in a vectorised tanh. At
// the 4 x 128 GPT's training shape (12 x 64 x 512) it took 361 us forward and 394 backward on session
// 25's AMD EPYC, where a plain multiply of the tensor takes 22, and the two were about 8% of the
// training step. Here the same function is written as x * sigmoid(2u) (0.5 (1 + tanh(u)) = sigmoid(2u)
// exactly) with a polynomial exp that the compiler vectorises: 116 and 130 us (docs/PERFORMANCE.md,
// levers table).
// Built with qkv's other kernels by qkv/nn/native.py, for the processor it runs on (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

#include "exp_approx.h"

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
constexpr int64_t kGrain = 16384;  // elements per task: below this one thread does the whole tensor

// 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + e^(-2u)): 0 for very negative x (e^(-2u) = inf), 1 for
// very positive x.
inline float half_one_plus_tanh(float x) {
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  return 1.0f / (1.0f + qkv::exp_approx(-2.0f * u));
}

at::Tensor float_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "gelu_tanh: ", name, " must be a float32 CPU tensor");
  return t.contiguous();
}

}  // namespace

// y = gelu_tanh(x), any shape.
at::Tensor gelu_tanh(const at::Tensor& x) {
  const auto xc = float_cpu(x, "x");
  auto y = at::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, xc.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) yp[i] = xp[i] * half_one_plus_tanh(xp[i]);
  });
  return y;
}

// dL/dx = dL/dy * (s + x s (1 - s) 2 du/dx) with s = sigmoid(2u), du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
at::Tensor gelu_tanh_backward(const at::Tensor& grad, const at::Tensor& x) {
  const auto xc = float_cpu(x, "x");
  const auto gc = float_cpu(grad, "grad");
  TORCH_CHECK(gc.sizes() == xc.sizes(), "gelu_tanh_backward: grad and x must have the same shape");
  auto dx = at::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  const float* gp = gc.data_ptr<float>();
  float* dp = dx.data_ptr<float>();
  at::parallel_for(0, xc.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = xp[i];
      const float s = half_one_plus_tanh(v);
      const float du = 2.0f * kSqrt2OverPi * (1.0f + 3.0f * kCubic * v * v);
      dp[i] = gp[i] * (s + v * s * (1.0f - s) * du);
    }
  });
  return dx;
}
