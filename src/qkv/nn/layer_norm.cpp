// LayerNorm(x + y): the residual connection and the norm that follows it (sec 3.1, post-LN), as one pass
// over each row, for inference. In a decoding step each of the 9 such pairs of the Multi30k model
// (64 rows of 256) took PyTorch about 15 us as two calls, an add and a layer_norm, most of it fixed
// cost per call; this takes one call and a few microseconds (docs/PERFORMANCE.md, levers table).
// Without y, LayerNorm(x): a pre-LN block's norms (GPT), 1 us for a decoding step's one row of 128
// against 6 through nn.LayerNorm.
// Built with qkv's other kernels by qkv/nn/native.py, for the processor it runs on (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <algorithm>

namespace {

constexpr int kLanes = 16;  // independent partial sums: the compiler keeps them in one vector register

// out = (s - mean) / sqrt(var + eps) * w + b over one row, s = x + y (s = x where y is null); the mean
// and the (biased) variance in two passes over s, as the textbook formula, summed in 16 float lanes.
// kAdd: whether there is a y (a template argument, so that each loop compiles to vector code: a test of
// y inside it made the 64 x 256 case 1.5x slower).
template <bool kAdd>
void row(const float* x, const float* y, const float* w, const float* b, float eps, int64_t d, float* out) {
  float sum[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      out[i + l] = kAdd ? x[i + l] + y[i + l] : x[i + l];
      sum[l] += out[i + l];
    }
  float total = 0;
  for (int l = 0; l < kLanes; ++l) total += sum[l];
  for (; i < d; ++i) out[i] = kAdd ? x[i] + y[i] : x[i], total += out[i];
  const float mean = total / d;
  float sq[kLanes] = {0};
  for (i = 0; i + kLanes <= d; i += kLanes)
    for (int l = 0; l < kLanes; ++l) sq[l] += (out[i + l] - mean) * (out[i + l] - mean);
  float var = 0;
  for (int l = 0; l < kLanes; ++l) var += sq[l];
  for (; i < d; ++i) var += (out[i] - mean) * (out[i] - mean);
  const float rstd = 1.0f / std::sqrt(var / d + eps);
  for (i = 0; i < d; ++i) out[i] = (out[i] - mean) * rstd * w[i] + b[i];
}

}  // namespace

// x, y: (..., D) float32, the same shape, or y None; weight, bias: (D,) -> LayerNorm(x + y), or
// LayerNorm(x), over the last dimension.
at::Tensor add_layer_norm(const at::Tensor& x, const c10::optional<at::Tensor>& y, const at::Tensor& weight,
                          const at::Tensor& bias, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && (!y || y->scalar_type() == at::kFloat) &&
                  weight.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat,
              "add_layer_norm: float32 tensors only");
  TORCH_CHECK(!y || x.sizes() == y->sizes(), "add_layer_norm: x and y must have the same shape");
  const int64_t d = x.size(-1);
  TORCH_CHECK(weight.numel() == d && bias.numel() == d, "add_layer_norm: weight and bias must hold ", d, " numbers");
  const auto xc = x.contiguous(), wc = weight.contiguous(), bc = bias.contiguous();
  const auto yc = y ? y->contiguous() : at::Tensor();
  auto out = at::empty_like(xc);
  const int64_t rows = d ? x.numel() / d : 0;
  const float *xp = xc.data_ptr<float>(), *yp = y ? yc.data_ptr<float>() : nullptr;
  const float *wp = wc.data_ptr<float>(), *bp = bc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // a second thread only for more than 32K numbers: a decoding step's 64 x 256 takes a few microseconds
  at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(d, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (yp) row<true>(xp + r * d, yp + r * d, wp, bp, float(eps), d, op + r * d);
      else row<false>(xp + r * d, nullptr, wp, bp, float(eps), d, op + r * d);
    }
  });
  return out;
}
