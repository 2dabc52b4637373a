// The dropout mask as a pure function of (seed, element index), shared by dropout.cpp and
// dropout_layer_norm.cpp so that both draw the same mask from the same seed.

#pragma once

#include <cmath>
#include <cstdint>

namespace qkv {

// murmur3's finaliser (Appleby): a bijection of 32-bit words in which every input bit flips each output
// bit with probability close to 1/2.
inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// The multiplier of one element: sc (kept) or 0 (dropped), from the low half of its index plus the
// offset in its block (`low`), its block's second-round word (`high`), and the call's seed_low and
// threshold. Every argument a value, so that the loops calling it vectorise.
inline float keep_factor(uint32_t low, uint32_t high, uint32_t seed_low, uint32_t threshold, float sc) {
  return (fmix32(fmix32(low ^ seed_low) ^ high) >> 8) >= threshold ? sc : 0.0f;
}

// One call's dropout: element i is kept, and scaled by 1 / (1 - p), when the 24 high bits of
// fmix32(fmix32(low(i) ^ seed_low) ^ (high(i) * golden + seed_high)) clear p * 2^24 (probability p to
// within 2^-24).
struct DropoutMask {
  static constexpr int64_t kBlock = 4096;  // divides 2^32: a block's indices share their high half
  uint32_t threshold, seed_low, seed_high;
  float scale;

  DropoutMask(double p, int64_t seed)
      : threshold(static_cast<uint32_t>(std::llround(p * 16777216.0))),
        seed_low(static_cast<uint32_t>(static_cast<uint64_t>(seed))),
        seed_high(static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32)),
        scale(static_cast<float>(1.0 / (1.0 - p))) {}

  // The second round's word for the block holding index `start`.
  uint32_t high(int64_t start) const {
    return static_cast<uint32_t>(static_cast<uint64_t>(start) >> 32) * 0x9e3779b9u + seed_high;
  }

  // factor[j] = the multiplier (scale or 0) of element start + j, for j < n, with start .. start + n
  // inside one kBlock-aligned block. 32-bit arithmetic only, which the compiler vectorises.
  void factors(int64_t start, int64_t n, float* factor) const {
    const uint32_t hi = high(start), lo = static_cast<uint32_t>(start), sl = seed_low, th = threshold;
    const float sc = scale;  // locals: stores through factor cannot change them
    for (int64_t j = 0; j < n; ++j) factor[j] = keep_factor(lo + static_cast<uint32_t>(j), hi, sl, th, sc);
  }
};

}  // namespace qkv
