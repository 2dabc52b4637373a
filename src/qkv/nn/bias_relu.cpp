// The feed-forward network's first half, ReLU(x W1 + b1) (sec 3.3, eq. 2), around a product computed
// without its bias: the bias and the ReLU in one pass over the product, and in the backward pass the
// ReLU's gradient and the bias's gradient in one pass over the incoming gradient.
//
// Why qkv carries this: PyTorch's `addmm` first copies the bias into every row of the result and then
// lets the product add onto it, and `relu` makes one more pass (and a new tensor). Its backward is a
// `threshold_backward` pass and then a column sum for the bias. At the Multi30k training shape (1,536 x
// 1,024 per layer) those passes were about 4% of the step on session 36's Intel Xeon, where MKL's
// products are fast enough that the passes around them show (docs/PERFORMANCE.md, levers table).
// Built with qkv's other kernels by qkv/nn/native.py, for the processor it runs on (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kRowGrain = 16;  // rows per task: a few tasks a thread, each long enough to pay for itself

at::Tensor matrix(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 && t.is_contiguous(),
              "bias_relu: ", name, " must be a contiguous 2-D float32 CPU tensor");
  return t;
}

// One row of relu_bias_backward. __restrict__: the four rows never overlap, which the compiler must
// know to keep the loop in vector registers (without it each store could change what the next load reads).
void masked_row(const float* __restrict__ grad, const float* __restrict__ y, int64_t f, float* __restrict__ out,
                float* __restrict__ sum) {
  for (int64_t j = 0; j < f; ++j) {
    const float v = y[j] > 0.0f ? grad[j] : 0.0f;
    out[j] = v;
    sum[j] += v;
  }
}

}  // namespace

// y (N, F) <- max(y + bias, 0), in place; bias (F,). Returns y.
at::Tensor bias_relu_(at::Tensor y, const at::Tensor& bias) {
  matrix(y, "y");
  const int64_t n = y.size(0), f = y.size(1);
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.numel() == f, "bias_relu: bias must hold ", f, " floats");
  const auto bc = bias.contiguous();
  float* yp = y.data_ptr<float>();
  const float* b = bc.data_ptr<float>();
  at::parallel_for(0, n, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* row = yp + i * f;
      for (int64_t j = 0; j < f; ++j) row[j] = std::max(row[j] + b[j], 0.0f);
    }
  });
  return y;
}

// grad (N, F), y (N, F) the ReLU's output -> [g, db]: g = grad where y > 0, else 0 (the ReLU's
// gradient, on its output as PyTorch's is); db (F,) = g summed over the rows. Each task sums its own
// rows; the tasks' sums are then added in task order, so the result does not depend on which thread
// ran which task.
std::vector<at::Tensor> relu_bias_backward(const at::Tensor& grad, const at::Tensor& y) {
  const auto gc = matrix(grad.contiguous(), "grad");
  matrix(y, "y");
  TORCH_CHECK(gc.sizes() == y.sizes(), "relu_bias_backward: grad and y must have the same shape");
  const int64_t n = y.size(0), f = y.size(1);
  auto g = at::empty_like(y);
  const int64_t tasks = n == 0 ? 0 : (n + kRowGrain * 8 - 1) / (kRowGrain * 8);
  auto partial = at::zeros({std::max<int64_t>(tasks, 1), f}, y.options());
  const float* gp = gc.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  float* out = g.data_ptr<float>();
  float* sums = partial.data_ptr<float>();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t i = t * kRowGrain * 8; i < std::min(n, (t + 1) * kRowGrain * 8); ++i)
        masked_row(gp + i * f, yp + i * f, f, out + i * f, sums + t * f);
  });
  return {g, partial.sum(0)};
}
