// y = W x + b for a single input row: the product behind every layer of batch-1 decoding.
//
// Why qkv carries this: a batch-1 decoding step reads every weight once and does two flops per weight,
// so it runs at the speed the weights stream from memory. On x86 processors that are not Intel's,
// MKL's matrix-vector product (PyTorch's default) runs generic code and reads weights at about a
// third of the rate this loop reaches; oneDNN's at about 60% of it (docs/PERFORMANCE.md, levers table).
// On Intel processors MKL reads at the memory's rate, and this loop takes only weights that stay in
// cache, where it costs less per call (qkv/nn/linear.py, takes_matvec).
// Each thread reads its own block of W's rows front to back, one stream the hardware prefetcher follows.
// Built with qkv's other kernels by qkv/nn/native.py, for the processor it runs on (-march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "dot.h"

namespace {

constexpr int64_t kRows = 8;  // rows per group: one 8-float vector of results
// Below this many multiply-adds one thread is faster: waking the second costs about as much as the
// work (session 34, 4 x 128 GPT shapes: 128 x 384 at 3.1 us alone).
constexpr int64_t kParallelMin = 1 << 16;

#if defined(__AVX2__) && defined(__FMA__)
// Rows o..o+8 of W times x into out[0..8). Each row is read front to back in turn, as in the plain loop
// (reading the 8 rows side by side ran 0.70x on matrices streamed from memory), into 4 vector sums; the
// 8 rows' sums are then reduced together, 8 lanes each, by one tree of horizontal adds. The one-row
// loop ends each row with 32 sequential additions, which for short rows cost more than the products:
// a 128 x 384 product 5.4 -> 3.2 us, a 4 x 128 GPT's 17 products of a token 97 -> 58 us, and a 124M
// GPT's matrices streamed at the same rate (docs/PERFORMANCE.md, session 34).
void rows8(const float* __restrict w, int64_t n, const float* __restrict x, float* out) {
  __m256 sums[kRows];
  const int64_t n8 = n & ~int64_t(7);
  for (int64_t r = 0; r < kRows; ++r) {
    const float* row = w + r * n;
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;  // four chains: a multiply-add waits on its own only
    int64_t i = 0;
    for (; i + 32 <= n8; i += 32) {
      a = _mm256_fmadd_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(x + i), a);
      b = _mm256_fmadd_ps(_mm256_loadu_ps(row + i + 8), _mm256_loadu_ps(x + i + 8), b);
      c = _mm256_fmadd_ps(_mm256_loadu_ps(row + i + 16), _mm256_loadu_ps(x + i + 16), c);
      d = _mm256_fmadd_ps(_mm256_loadu_ps(row + i + 24), _mm256_loadu_ps(x + i + 24), d);
    }
    for (; i < n8; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(x + i), a);
    sums[r] = _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d));
  }
  // hadd(p, q) = [p0+p1, p2+p3, q0+q1, q2+q3 | p4+p5, p6+p7, q4+q5, q6+q7]: two levels leave, in each
  // 128-bit half, rows 0-3 (u) and 4-7 (v) summed over that half's lanes; the halves then add
  const __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(sums[0], sums[1]), _mm256_hadd_ps(sums[2], sums[3]));
  const __m256 v = _mm256_hadd_ps(_mm256_hadd_ps(sums[4], sums[5]), _mm256_hadd_ps(sums[6], sums[7]));
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(u, v, 0x20), _mm256_permute2f128_ps(u, v, 0x31)));
  for (int64_t i = n8; i < n; ++i)
    for (int64_t r = 0; r < kRows; ++r) out[r] += w[r * n + i] * x[i];
}
constexpr bool kGroups = true;
#else
void rows8(const float*, int64_t, const float*, float*) {}
constexpr bool kGroups = false;  // no AVX2: every row through qkv::dot
#endif

}  // namespace

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
  // The work in units, groups of 8 rows and then single rows (those left over, or all rows without AVX2),
  // split into contiguous blocks, one per thread (PyTorch's intra-op pool, so torch.set_num_threads
  // applies); each thread streams its block of W in order, which the hardware prefetcher follows.
  // A row's result does not depend on the split.
  const int64_t groups = kGroups ? out_f / kRows : 0, first_single = groups * kRows;
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      if (u < groups) {
        float* o = out + u * kRows;
        rows8(w + u * kRows * in_f, in_f, xv, o);
        if (b)
          for (int64_t r = 0; r < kRows; ++r) o[r] += b[u * kRows + r];
      } else {
        const int64_t o = first_single + (u - groups);
        const float s = qkv::dot(w + o * in_f, xv, in_f);
        out[o] = b ? s + b[o] : s;
      }
    }
  };
  const int64_t units = groups + (out_f - first_single);
  if (out_f * in_f < kParallelMin) body(0, units);
  else at::parallel_for(0, units, 1, body);
  return y;
}
