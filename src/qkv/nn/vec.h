// 16 floats as one value (GCC's vector extension: one 512-bit register with AVX-512, two 256-bit ones
// with AVX2), shared by screened_argmax.cpp, integer_scores.cpp and smoothed_loss.cpp. Written out where
// GCC 12 leaves the plain loop scalar (a maximum over an array of partial maxima, for one).

#pragma once

#include <cstdint>
#include <cstring>

namespace qkv {

constexpr int kLanes = 16;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t Ints __attribute__((vector_size(kLanes * sizeof(int32_t))));

// A T from the bytes at p (memcpy: no alignment or aliasing assumed; it compiles to one load).
template <typename T>
inline T load(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// |v| lane by lane: the sign bits cleared.
inline Vec magnitude(Vec v) {
  Ints bits = load<Ints>(&v) & 0x7fffffff;
  return load<Vec>(&bits);
}

}  // namespace qkv
