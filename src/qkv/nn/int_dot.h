// The dot product of 16-bit integers with 8-bit ones (AVX512-VNNI vpdpwssd), shared by int8_matvec
// (integer_scores.cpp: greedy decoding's integer scores) and draft_matvec (draft_matvec.cpp: a
// speculative draft's products); each reduces the lanes its own way.

#pragma once

#include <cstdint>
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>

namespace qkv {

// 32 weights widened to 16 bits.
inline __m512i widened(const int8_t* w) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
}

// q[i] w[i] for i below the returned end (d rounded down to 32) multiplied and added in pairs into the 16
// int32 lanes of a0..a3: four independent sums, so that the adds do not wait on each other; each lane
// adds at most d / 64 pairs. The row is read front to back, one stream the prefetcher follows.
inline int64_t dot_lanes(const int16_t* q, const int8_t* w, int64_t d, __m512i& a0, __m512i& a1, __m512i& a2,
                         __m512i& a3) {
  a0 = a1 = a2 = a3 = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 128 <= d; i += 128) {
    a0 = _mm512_dpwssd_epi32(a0, _mm512_loadu_si512(q + i), widened(w + i));
    a1 = _mm512_dpwssd_epi32(a1, _mm512_loadu_si512(q + i + 32), widened(w + i + 32));
    a2 = _mm512_dpwssd_epi32(a2, _mm512_loadu_si512(q + i + 64), widened(w + i + 64));
    a3 = _mm512_dpwssd_epi32(a3, _mm512_loadu_si512(q + i + 96), widened(w + i + 96));
  }
  for (; i + 32 <= d; i += 32) a0 = _mm512_dpwssd_epi32(a0, _mm512_loadu_si512(q + i), widened(w + i));
  return i;
}

}  // namespace qkv
#endif
