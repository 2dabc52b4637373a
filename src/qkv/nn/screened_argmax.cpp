// The index of each row's largest score z = x W^T + b, found from 8-bit integer scores and a bound on
// their error: greedy decoding's output layer at about a third of the cost of computing every score
// in float32. qkv/decoding/argmax.py quantizes W once, multiplies the integers (`torch._int_mm`), and
// says why the result is the float32 argmax; the bound is derived here, next to the code that uses it.
//
// Per row: every float32 score is within a slack e of its integer estimate (one bound for the whole
// row), so only the scores whose estimate is within 2e of the largest estimate can be the largest;
// those few (1.8 a row on average for the Multi30k model) are computed again in float32, and the first
// largest wins, as in `argmax`. Two vectorised passes over the row's estimates: their maximum, then the
// candidates.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "dot.h"
#include "vec.h"

namespace {

using qkv::Ints, qkv::kLanes, qkv::load, qkv::magnitude, qkv::Vec;

// Whether any lane of v is >= floor: one mask test with AVX-512, where the generic loop would take the
// 16 lanes one by one (the candidates pass spent most of its time there).
inline bool any_reaches(Vec v, float floor) {
#ifdef __AVX512F__
  return _mm512_cmp_ps_mask(v, _mm512_set1_ps(floor), _CMP_GE_OQ) != 0;
#else
  bool any = false;
  for (int l = 0; l < kLanes; ++l) any |= v[l] >= floor;
  return any;
#endif
}

// Rounding slack of the float32 arithmetic on an estimate: the int -> float conversion, the product and
// the bias add, each within 2^-24 of its result; 2^-20 of |value| + |bias| covers them all.
constexpr double kArithmetic = 0x1p-20;

// One row of the problem: value_j = acc_j * k + b_j estimates the float32 score z_j, within the row's
// bound e (`row_argmax`).
struct Row {
  const int32_t* acc;  // (V,) sum_i q_i p_ji, exact
  const float* x;      // (D,) the input row
  const float* w;      // (V, D) float32 weight
  const float* bias;   // (V,) or nullptr
  int64_t v, d;
  float k;  // the row's scale times the weight's
};

template <bool Bias>
inline Vec estimate(const Row& r, int64_t j) {
  const Vec value = __builtin_convertvector(load<Ints>(r.acc + j), Vec) * r.k;
  return Bias ? value + load<Vec>(r.bias + j) : value;
}

template <bool Bias>
inline float estimate_one(const Row& r, int64_t j) {
  return float(r.acc[j]) * r.k + (Bias ? r.bias[j] : 0.0f);
}

inline float exact(const Row& r, int64_t j) {
  const float s = qkv::dot(r.w + j * r.d, r.x, r.d);
  return r.bias ? s + r.bias[j] : s;
}

// The row's largest estimate. NaN estimates drop out of the maximum.
template <bool Bias>
float top_of(const Row& r) {
  const float inf = std::numeric_limits<float>::infinity();
  Vec tops = Vec{} - inf;
  int64_t j = 0;
  for (; j + kLanes <= r.v; j += kLanes) {
    const Vec value = estimate<Bias>(r, j);
    tops = value > tops ? value : tops;
  }
  float top = -inf;
  for (int l = 0; l < kLanes; ++l) top = tops[l] > top ? tops[l] : top;
  for (; j < r.v; ++j) top = estimate_one<Bias>(r, j) > top ? estimate_one<Bias>(r, j) : top;
  return top;
}

// The first index of the largest float32 score among those whose estimate reaches `floor`; -1 if none
// does (a NaN bound: a NaN or infinite input row).
template <bool Bias>
int64_t best_candidate(const Row& r, float floor) {
  int64_t best = -1;
  float top = 0;
  auto consider = [&](int64_t j) {
    const float z = exact(r, j);
    if (best < 0 || z > top) best = j, top = z;
  };
  int64_t j = 0;
  for (; j + kLanes <= r.v; j += kLanes) {
    const Vec value = estimate<Bias>(r, j);
    if (any_reaches(value, floor))
      for (int l = 0; l < kLanes; ++l)
        if (value[l] >= floor) consider(j + l);
  }
  for (; j < r.v; ++j)
    if (estimate_one<Bias>(r, j) >= floor) consider(j);
  return best;
}

// The bound. With s the row's scale and t the weight's, x~_i = s q_i and w~_ji = t p_ji the rounded
// numbers, |x_i - x~_i| <= s/2 and |w_ji - w~_ji| <= t/2 (rounding to nearest; 2^-11 more for the float32
// arithmetic before it):
//   |x . w_j - x~ . w~_j| <= sum |x_i - x~_i| |w_ji| + sum |x~_i| |w_ji - w~_ji| <= (s/2) |w_j|_1 + (t/2) |x~|_1.
// A float32 dot product z_j is within g sum |x_i w_ji| of x . w_j, with g = d 2^-24 / (1 - d 2^-24)
// (Higham, Accuracy and Stability of Numerical Algorithms, sec 3.1), and sum |x_i w_ji| <= |x|_1 128 t,
// |x|_1 <= |x~|_1 + d s/2. The integer sum is exact (|acc_j| <= 127 |q|_1); the float32 steps after it are
// kArithmetic. So every z_j is within e of value_j, and a value below top - 2e is below the float32
// score of the top estimate's index: it cannot be the largest.
template <bool Bias>
int64_t row_argmax(const Row& r, const int8_t* q, float s, float t, float l1, float b_max) {
  int64_t q1 = 0;
  for (int64_t i = 0; i < r.d; ++i) q1 += q[i] < 0 ? -q[i] : q[i];
  const double half = 0.5 + 0x1p-11, g = r.d * 0x1p-24 / (1 - r.d * 0x1p-24);
  const double x1 = double(s) * q1;  // |x~|_1
  const double e = half * s * l1 + half * t * x1 + g * 128 * t * (x1 + r.d * half * s) +
                   kArithmetic * (127 * q1 * double(r.k) + 2 * b_max) + 1e-30;  // 1e-30: flushed denormals
  const float top = top_of<Bias>(r);
  const float floor = std::nextafter(float(top - 2 * e), -std::numeric_limits<float>::infinity());  // rounded down
  const int64_t best = best_candidate<Bias>(r, floor);
  if (best >= 0) return best;
  // No candidate (a NaN or infinite input row): every score in float32, the first NaN if there is one,
  // as `argmax` picks.
  int64_t first = 0;
  float most = exact(r, 0);
  for (int64_t j = 0; j < r.v; ++j) {
    const float z = exact(r, j);
    if (std::isnan(z)) return j;
    if (z > most) first = j, most = z;
  }
  return first;
}

}  // namespace

// x: (R, D) float32 -> [q (R, D) int8, scale (R,) float32] with x_i ~ scale q_i: scale = max_i |x_i| / 127,
// q_i = x_i / scale rounded to nearest. A row of zeros gets scale 1; a row with a NaN or infinity gets
// q = 0 and scale NaN, which makes screened_argmax score that row in float32.
std::vector<at::Tensor> quantize_rows(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2, "quantize_rows: x must be a (R, D) float32 tensor");
  const auto xc = x.contiguous();
  const int64_t rows = x.size(0), d = x.size(1);
  auto q = at::empty({rows, d}, x.options().dtype(at::kChar));
  auto scale = at::empty({rows}, x.options());
  const float* xp = xc.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  float* sp = scale.data_ptr<float>();
  // One thread for decoding's rows (64 rows of 256 take a few microseconds, less than waking a second
  // thread); a weight's rows (a speculative draft's, qkv/decoding/speculative.py) split across threads.
  const int64_t grain = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(d, 1));
  at::parallel_for(0, rows, grain, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      // __restrict locals: through the captured pointers an int8 store may alias anything
      const float* __restrict xr = xp + r * d;
      int8_t* __restrict qr = qp + r * d;
      Vec most = {}, probe = {};  // probe: 0 unless an entry is NaN or infinite (0 * x is NaN for those)
      int64_t i = 0;
      for (; i + kLanes <= d; i += kLanes) {
        const Vec v = load<Vec>(xr + i), a = magnitude(v);
        most = a > most ? a : most;
        probe += v * 0.0f;
      }
      float m = 0, p = 0;
      for (int l = 0; l < kLanes; ++l) m = most[l] > m ? most[l] : m, p += probe[l];
      for (; i < d; ++i) m = std::fabs(xr[i]) > m ? std::fabs(xr[i]) : m, p += xr[i] * 0.0f;
      const bool finite = p == 0;
      const float s = !finite ? std::numeric_limits<float>::quiet_NaN() : m == 0 ? 1.0f : m / 127;
      // x_i / s (as x_i times 1/s, within 2^-23 of it relatively) rounded to nearest, half to even: |x_i / s - q_i|
      // <= 1/2 + 2^-16, inside the bound's 2^-11 margin. In this form (rint, then the clamp) the loop
      // vectorises; rounding half away from zero kept it scalar (a 124M model's layers 260 ms to round)
      const float inv = finite ? 1 / s : 0.0f;
      for (i = 0; i < d && finite; ++i) {
        float y = __builtin_rintf(xr[i] * inv);
        y = y >= -127.0f ? y : -127.0f;
        y = y <= 127.0f ? y : 127.0f;
        qr[i] = int8_t(int32_t(y));
      }
      if (!finite) std::fill(qr, qr + d, int8_t(0));
      sp[r] = s;
    }
  });
  return {q, scale};
}

// acc: (R, V) int32, q p^T; q, scale: quantize_rows(x); x: (R, D) float32; weight: (V, D) float32; bias:
// (V,) or None; w_scale: the scale t of p = W / t rounded; w_l1: the largest |w_j|_1, rounded up -> (R,) int64.
at::Tensor screened_argmax(const at::Tensor& acc, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& x,
                           const at::Tensor& weight, const c10::optional<at::Tensor>& bias, double w_scale,
                           double w_l1) {
  TORCH_CHECK(acc.scalar_type() == at::kInt && acc.dim() == 2, "screened_argmax: acc must be a (R, V) int32 tensor");
  TORCH_CHECK(q.scalar_type() == at::kChar && scale.scalar_type() == at::kFloat,
              "screened_argmax: q and scale must come from quantize_rows");
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "screened_argmax: x and weight must be float32");
  const int64_t rows = acc.size(0), v = acc.size(1), d = weight.size(1);
  TORCH_CHECK(x.dim() == 2 && x.size(0) == rows && x.size(1) == d && q.sizes() == x.sizes() && scale.numel() == rows &&
                  weight.size(0) == v,
              "screened_argmax: shapes do not match: acc (R, V), q and x (R, D), scale (R,), weight (V, D)");
  const auto ac = acc.contiguous(), qc = q.contiguous(), sc = scale.contiguous(), xc = x.contiguous();
  const auto wc = weight.contiguous();
  c10::optional<at::Tensor> bc;
  float b_max = 0;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == v, "screened_argmax: bias must hold ", v,
                " floats");
    bc = bias->contiguous();
    const float* b = bc->data_ptr<float>();
    for (int64_t j = 0; j < v; ++j) b_max = std::fabs(b[j]) > b_max ? std::fabs(b[j]) : b_max;
  }
  auto out = at::empty({rows}, acc.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  const float t = float(w_scale), l1 = float(w_l1);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float s = sc.data_ptr<float>()[i];
      const Row r{ac.data_ptr<int32_t>() + i * v, xc.data_ptr<float>() + i * d, wc.data_ptr<float>(),
                  bc ? bc->data_ptr<float>() : nullptr, v, d, s * t};
      const int8_t* qi = qc.data_ptr<int8_t>() + i * d;
      o[i] = bc ? row_argmax<true>(r, qi, s, t, l1, b_max) : row_argmax<false>(r, qi, s, t, l1, b_max);
    }
  });
  return out;
}
