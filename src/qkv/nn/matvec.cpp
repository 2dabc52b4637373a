// y = W x + b for a single input row: the product behind every layer of batch-1 decoding.
//
// Why qkv carries this: a batch-1 decoding step reads every weight once and does two flops per weight,
// so it runs at the speed the weights stream from memory. On x86 processors that are not Intel's,
// MKL's matrix-vector product (PyTorch's default) runs generic code and reads weights at about a
// third of the rate this loop reaches; oneDNN's at about 60% of it (docs/PERFORMANCE.md, levers table).
// Each thread reads its own block of W's rows front to back, one stream the hardware prefetcher follows.
// Built with qkv's other kernels by qkv/nn/native.py, for the processor it runs on (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "dot.h"

// x: (..., in) holding one row in all; weight: (out, in); bias: (out,) or None -> (..., out).
at::Tensor matvec(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "matvec: x must be a float32 CPU tensor");
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.dim() == 2,
              "matvec: weight must be a 2-D float32 CPU tensor");
  const int64_t out_f = weight.size(0), in_f = weight.size(1);
  TORCH_CHECK(x.size(-1) == in_f && x.numel() == in_f, "matvec: x must be one row of ", in_f, " numbers");
  const auto xc = x.contiguous();
  const auto wc = weight.contiguous();
  c10::optional<at::Tensor> bc;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == out_f, "matvec: bias must hold ", out_f, " floats");
    bc = bias->contiguous();
  }
  auto sizes = x.sizes().vec();
  sizes.back() = out_f;
  auto y = at::empty(sizes, x.options());

  const float* w = wc.data_ptr<float>();
  const float* xv = xc.data_ptr<float>();
  const float* b = bc.has_value() ? bc->data_ptr<float>() : nullptr;
  float* out = y.data_ptr<float>();
  // Rows split into contiguous blocks, one per thread (PyTorch's intra-op pool, so torch.set_num_threads
  // applies); each thread streams its block of W in order, which the hardware prefetcher follows.
  at::parallel_for(0, out_f, 16, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const float s = qkv::dot(w + o * in_f, xv, in_f);
      out[o] = b ? s + b[o] : s;
    }
  });
  return y;
}
