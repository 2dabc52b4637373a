// One float32 dot product, shared by matvec.cpp and screened_argmax.cpp.
#pragma once

#include <cstdint>

namespace qkv {

// 32 independent partial sums: the compiler turns the inner loop into a few vector multiply-adds whose
// loads never wait on the previous add. The summation order differs from MKL's and oneDNN's (as theirs
// differ from each other), so results agree up to rounding.
inline float dot(const float* __restrict w, const float* __restrict x, int64_t n) {
  constexpr int kLanes = 32;
  float acc[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += w[i + j] * x[i + j];
  float s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

}  // namespace qkv
