// Dropout (Srivastava et al. 2014; the Transformer's P_drop, sec 5.4) with a mask that is a pure function
// of (seed, element index), so that it costs a few integer operations per element and is never stored:
// the backward pass computes the same mask again from the seed.
//
// Why qkv carries this: PyTorch draws a dropout mask with `bernoulli_`, which on session 26's AMD EPYC
// took about 3 ms for a 1,536 x 256 activation, 53 ms (some 7%) of the Multi30k training step, more
// than the step's attention. Here the mask is murmur3's 32-bit finaliser (Appleby) applied twice to the
// element's index mixed with a 64-bit seed: each element's 24 high bits are uniform for statistical
// purposes, independent of thread count, and the loop vectorises (docs/PERFORMANCE.md, levers table).
// Built with qkv's other kernels by qkv/nn/native.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dropout_mask.h"

namespace {

constexpr int64_t kGrain = 32768;  // elements per task

}  // namespace

// y = x * keep / (1 - p), keep = 1 where the element's draw clears p. The same call with the same seed
// serves the backward pass (dL/dx = dL/dy * keep / (1 - p)), so nothing is saved between the two.
at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t seed) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "dropout: x must be a float32 CPU tensor");
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p);
  const auto xc = x.contiguous();
  auto y = at::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const qkv::DropoutMask mask(p, seed);
  at::parallel_for(0, xc.numel(), kGrain, [&](int64_t begin, int64_t end) {
    // Local copies: read through the closure, every store through yb might change them, and the
    // compiler would not vectorise the loop (it ran 6x slower on two threads than on one).
    const float sc = mask.scale;
    const uint32_t th = mask.threshold, seed_low = mask.seed_low;
    // Blocks of kBlock elements aligned to kBlock never straddle a multiple of 2^32, so within one the
    // index's high half, which goes into the second round with the seed's other half, is constant, and
    // the inner loop is 32-bit arithmetic only, which the compiler vectorises.
    for (int64_t block = begin; block < end;) {
      const int64_t stop = std::min(end, (block / qkv::DropoutMask::kBlock + 1) * qkv::DropoutMask::kBlock);
      const uint32_t high = mask.high(block), low = static_cast<uint32_t>(block);
      const float* xb = xp + block;
      float* yb = yp + block;
      const int64_t n = stop - block;
      for (int64_t j = 0; j < n; ++j)
        yb[j] = xb[j] * qkv::keep_factor(low + static_cast<uint32_t>(j), high, seed_low, th, sc);
      block = stop;
    }
  });
  return y;
}
