// e^z in plain arithmetic that the compiler vectorises, shared by qkv's kernels (gelu.cpp, attention.cpp):
// a loop calling std::exp stays scalar, one calling this runs 16 lanes at a time.

#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

namespace qkv {

// e^z to within a few units in the last place, in plain arithmetic so that the loops calling it vectorise:
// z = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to r^7 (error below 1e-8 relative),
// and 2^n added straight into the exponent bits. Below -87 the result is 0; above 88, infinity.
inline float exp_approx(float z) {
  const float zc = z < -87.0f ? -87.0f : (z > 88.0f ? 88.0f : z);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (round-to-nearest)
  const float n = (zc * 1.4426950408889634f + kRound) - kRound;
  float r = zc - n * 0.693145751953125f;  // ln 2 in two parts (Cody & Waite), so that r stays exact
  r = r - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += static_cast<int32_t>(n) << 23;
  float e;
  std::memcpy(&e, &bits, sizeof e);
  e = z < -87.0f ? 0.0f : e;
  return z > 88.0f ? std::numeric_limits<float>::infinity() : e;
}

}  // namespace qkv
