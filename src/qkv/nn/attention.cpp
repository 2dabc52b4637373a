// Scaled dot-product attention, softmax(Q K^T / sqrt(d_k)) V (sec 3.2.1, eq. 1), forward and backward,
// for short sequences: one (sentence, head) pair at a time, its whole score matrix in cache.
//
// Why qkv carries this: PyTorch's CPU kernel (the "flash" one) cuts keys and queries into blocks sized
// for long sequences. At the Multi30k model's training shape (64 sentences x 8 heads, 24 positions,
// d_k = 32) it ran forward at about 12 GFLOP/s on session 26's AMD EPYC, 3 ms a layer, and its backward
// took 5 ms: together some 10% of the training step. Here a pair's keys are transposed once into a
// small buffer, so that the scores of one query against 16 keys are one vector multiply-add per
// dimension, and the softmax and the weighted sum of values stay in registers (docs/PERFORMANCE.md,
// levers table). The backward pass recomputes the weights from the saved log-sum-exp of each query's
// scores (as FlashAttention does, Dao et al. 2022, sec 3.1), so no T_q x T_k matrix is stored.
// Built with qkv's other kernels by qkv/nn/native.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <utility>
#include <vector>

#include "exp_approx.h"

namespace {

constexpr int kLanes = 16;  // keys scored at once: one 512-bit vector of float32
constexpr int kSplit = 4;   // independent partial sums in a dot product
constexpr float kInf = std::numeric_limits<float>::infinity();

// The rows of one (sentence, head) pair in a (B, H, T, D) tensor whose last dimension is contiguous.
struct Rows {
  float* data;
  int64_t sb, sh, st;
  float* pair(int64_t b, int64_t h) const { return data + b * sb + h * sh; }
};

Rows rows_of(const at::Tensor& t) { return {t.data_ptr<float>(), t.stride(0), t.stride(1), t.stride(2)}; }

// A boolean mask expanded to (B, H, T_q, T_k), True = may attend (qkv/nn/masks.py); data null for none.
struct Mask {
  const bool* data;
  int64_t sb, sh, sq, sk;
};

// Everything one pair needs besides its rows: sizes, masking and the factor on Q K^T.
struct Problem {
  int64_t tq, tk, tkp;  // tkp: T_k rounded up to whole vectors of keys
  bool causal;          // query i sees keys 0..i (top-left, as SDPA's is_causal)
  float scale;
  Mask mask;
  int64_t end(int64_t i) const { return causal ? std::min(tk, i + 1) : tk; }  // keys from here on are hidden
};

// 16 floats as one value (GCC's vector extension): one 512-bit register with AVX-512, two 256-bit
// ones with AVX2. Written out because the compiler's own vectorisation of these short loops kept a
// single chain of multiply-adds, each waiting on the last one's latency.
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t Lanes __attribute__((vector_size(kLanes * sizeof(int32_t))));  // shuffle indices

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, const Vec& v) { std::memcpy(p, &v, sizeof v); }

// Shuffle indices as a constant: lane l of the result takes lane index(l) of the first source (0-15)
// or of the second (16-31).
template <typename F, int... L>
constexpr Lanes lanes_from(F index, std::integer_sequence<int, L...>) {
  return Lanes{index(L)...};
}

template <typename F>
constexpr Lanes lanes_from(F index) {
  return lanes_from(index, std::make_integer_sequence<int, kLanes>{});
}

// Swaps the off-diagonal W x W blocks of each 2W x 2W block of the 16 x 16 tile x (16 rows of 16
// lanes): after W = 8, 4, 2, 1 the tile is transposed. Two-source shuffles, 64 in all for a tile.
template <int W>
inline void swap_blocks(Vec* x) {
  // row i takes its W-blocks at odd positions from row i + W's even ones, and row i + W the reverse
  constexpr Lanes kLow = lanes_from([](int l) { return l & W ? kLanes + l - W : l; });
  constexpr Lanes kHigh = lanes_from([](int l) { return l & W ? kLanes + l : l + W; });
#pragma GCC unroll 16
  for (int i = 0; i < kLanes; ++i)
    if (!(i & W)) {
      const Vec a = x[i], b = x[i + W];
      x[i] = __builtin_shuffle(a, b, kLow);
      x[i + W] = __builtin_shuffle(a, b, kHigh);
    }
}

// kt (D x tkp) = the pair's T_k rows of x transposed, zero beyond T_k: the keys' c-th components lie
// side by side, so that one query's scores are a sum over c of q[c] times a contiguous row. Tiles of
// 16 keys x 16 components are loaded row by row and transposed in registers; element by element, the
// copy had been a fifth of the backward pass (which transposes K and V) in one profile.
template <int D>
void transpose(const float* x, int64_t stride, const Problem& p, float* kt) {
  for (int64_t j0 = 0; j0 < p.tkp; j0 += kLanes)
#pragma GCC unroll 4
    for (int c0 = 0; c0 < D; c0 += kLanes) {
      Vec tile[kLanes];
#pragma GCC unroll 16
      for (int u = 0; u < kLanes; ++u) tile[u] = j0 + u < p.tk ? load(x + (j0 + u) * stride + c0) : Vec{};
      swap_blocks<8>(tile);
      swap_blocks<4>(tile);
      swap_blocks<2>(tile);
      swap_blocks<1>(tile);
#pragma GCC unroll 16
      for (int c = 0; c < kLanes; ++c) store(kt + (c0 + c) * p.tkp + j0, tile[c]);
    }
}

// s[j] = scale * (a . column j of kt) for j < n (a multiple of 16; kt's rows are tkp long), 16 keys per
// vector. The sum over the D components runs in kSplit independent partial sums, so that the
// multiply-adds overlap.
template <int D>
inline void dots_general(const float* a, const float* kt, int64_t n, int64_t tkp, float scale, float* s) {
  static_assert(D % kSplit == 0, "the head size must be a multiple of kSplit");
  for (int64_t j0 = 0; j0 < n; j0 += kLanes) {
    Vec acc[kSplit] = {};
#pragma GCC unroll 64
    for (int c = 0; c < D; ++c) acc[c % kSplit] += a[c] * load(kt + c * tkp + j0);
    store(s + j0, ((acc[0] + acc[1]) + (acc[2] + acc[3])) * scale);
  }
}

// The same for all of a pair's keys at once when they fill NC vectors (up to 64 keys): every row of kt
// sits at a fixed offset and each a[c] is loaded once for all NC vectors, which is where short
// sequences spend their time.
template <int D, int NC>
inline void dots_fixed(const float* a, const float* kt, float scale, float* s) {
  constexpr int kRow = NC * kLanes;
  constexpr int kWays = NC >= 2 ? 2 : kSplit;  // NC * kWays chains of multiply-adds in flight
  Vec acc[kWays][NC] = {};
#pragma GCC unroll 64
  for (int c = 0; c < D; ++c) {
    const float ac = a[c];
#pragma GCC unroll 4
    for (int r = 0; r < NC; ++r) acc[c % kWays][r] += ac * load(kt + c * kRow + r * kLanes);
  }
#pragma GCC unroll 4
  for (int r = 0; r < NC; ++r) {
    Vec total = acc[0][r];
#pragma GCC unroll 4
    for (int u = 1; u < kWays; ++u) total += acc[u][r];
    store(s + r * kLanes, total * scale);
  }
}

template <int D>
inline void dots(const float* a, const float* kt, int64_t n, int64_t tkp, float scale, float* s) {
  switch (tkp / kLanes) {
    case 1: return dots_fixed<D, 1>(a, kt, scale, s);
    case 2: return dots_fixed<D, 2>(a, kt, scale, s);
    case 3: return dots_fixed<D, 3>(a, kt, scale, s);
    case 4: return dots_fixed<D, 4>(a, kt, scale, s);
    default: return dots_general<D>(a, kt, n, tkp, scale, s);
  }
}

// out[c] = sum_j w[j] x_j[c] over keys j < end, for rows x_j of stride xs, in kSplit partial sums by j.
template <int D>
inline void weighted_rows(const float* w, const float* x, int64_t xs, int64_t end, float* out) {
  constexpr int kVecs = D / kLanes;  // vectors per row
  static_assert(D % kLanes == 0, "the head size must be a multiple of kLanes");
  Vec acc[kSplit][kVecs] = {};
  int64_t j = 0;
  for (; j + kSplit <= end; j += kSplit)
#pragma GCC unroll 4
    for (int u = 0; u < kSplit; ++u)
#pragma GCC unroll 4
      for (int r = 0; r < kVecs; ++r) acc[u][r] += w[j + u] * load(x + (j + u) * xs + r * kLanes);
  for (; j < end; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < kVecs; ++r) acc[0][r] += w[j] * load(x + j * xs + r * kLanes);
#pragma GCC unroll 4
  for (int r = 0; r < kVecs; ++r) store(out + r * kLanes, (acc[0][r] + acc[1][r]) + (acc[2][r] + acc[3][r]));
}

// Asks for a row of D floats ahead of its use: consecutive queries' rows are 3 x H x D floats apart in
// the layers' packed layout, a stride the hardware prefetcher does not follow, and without this every
// row's second cache line was a stall (in one profile, an eighth of the backward pass's samples at one load).
template <int D>
inline void prefetch_row(const float* row) {
  for (int c = 0; c < D; c += 64 / static_cast<int>(sizeof(float))) __builtin_prefetch(row + c);
}

// Asks for the rows of the next (sentence, head) pair, into the second-level cache, while this pair
// runs. In training the rows come from the fused projections' outputs, which the products before wrote
// long ago: one pair's row is 32 floats out of every 3 x H x D, so no hardware prefetcher finds them,
// and each row's first use waited on memory. (A cold backward pass at 64 x 8 x 24 x 32 took 1.35 ms
// against 0.78 with its rows already in cache.)
template <int D>
inline void prefetch_rows(const float* x, int64_t stride, int64_t rows) {
  for (int64_t t = 0; t < rows; ++t)
    for (int c = 0; c < D; c += 64 / static_cast<int>(sizeof(float))) __builtin_prefetch(x + t * stride + c, 0, 2);
}

// The additive mask of query i's scores: 0 where it may attend, -inf at hidden keys and at the lanes
// beyond T_k. A padding mask is the same for every query (its stride sq is 0): one row serves them all.
inline void key_bias(const Problem& p, const bool* mask, int64_t i, float* bias) {
  for (int64_t j = 0; j < p.tkp; ++j)
    bias[j] = j < p.tk && (mask == nullptr || mask[i * p.mask.sq + j * p.mask.sk]) ? 0.0f : -kInf;
}

inline bool bias_per_query(const Problem& p, const bool* mask) { return mask != nullptr && p.mask.sq != 0; }

inline int64_t whole_vectors(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Lane l of the result = lane l + W of v (lanes l < W; the others are don't-cares): one step of a
// reduction kept in registers. Through an array on the stack instead, each 16-float store followed by
// single-float loads of it stalled (a wide store cannot feed narrow loads at once): about a tenth of
// the forward pass's samples in one profile.
template <int W>
inline Vec upper(const Vec& v) {
  static_assert(W == 8 || W == 4 || W == 2 || W == 1, "a reduction step halves 16 lanes");
  constexpr Lanes kFrom = lanes_from([](int l) { return (l + W) % kLanes; });
  return __builtin_shuffle(v, kFrom);
}

inline float lanes_max(Vec v) {
  v = v > upper<8>(v) ? v : upper<8>(v);
  v = v > upper<4>(v) ? v : upper<4>(v);
  v = v > upper<2>(v) ? v : upper<2>(v);
  v = v > upper<1>(v) ? v : upper<1>(v);
  return v[0];
}

inline float lanes_sum(Vec v) {  // pairwise: four rounds of independent adds, not one chain of 15
  v += upper<8>(v);
  v += upper<4>(v);
  v += upper<2>(v);
  v += upper<1>(v);
  return v[0];
}

// a . b over D floats, one vector of products per 16 components summed pairwise: not a chain of D
// multiply-adds each waiting on the last (the compiler may not reorder a float sum itself).
template <int D>
inline float row_dot(const float* a, const float* b) {
  Vec acc = load(a) * load(b);
#pragma GCC unroll 4
  for (int c = kLanes; c < D; c += kLanes) acc += load(a + c) * load(b + c);
  return lanes_sum(acc);
}

// Query i's scores s[0, n) with the keys from end on (after query i, when causal) and the hidden ones
// (bias) at -inf; returns the largest (-inf when every key is hidden). n = end rounded up to whole vectors.
// The keys from end on are hidden lane by lane inside the vector rather than by single-float stores of
// -inf into s first: a 16-float load just after such stores cannot take its data from them and waits
// for them to reach the cache. (Interleaved with the previous build at 64 x 8 x 24 x 32 with a
// padding mask, forward+backward: 2.75 against 2.44 ms in one run, 1-12% faster in four others.)
inline float mask_scores(const float* bias, int64_t end, int64_t n, float* s) {
  const Lanes lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const Vec hidden = Vec{} - kInf;
  Vec m = hidden;
  for (int64_t j0 = 0; j0 < n; j0 += kLanes) {
    Vec x = load(s + j0) + load(bias + j0);
    if (j0 + kLanes > end) x = lane < static_cast<int32_t>(end - j0) ? x : hidden;
    store(s + j0, x);
    m = x > m ? x : m;
  }
  return lanes_max(m);
}

// w[0, n) = e^(s - shift) in place: 0 at the hidden keys' -inf.
inline void exp_shifted(float* w, int64_t n, float shift) {
  for (int64_t j = 0; j < n; ++j) w[j] = qkv::exp_approx(w[j] - shift);
}

// Query i's output from its masked scores s[0, n) (largest m): o_i = softmax(s) V over keys j < end,
// and lse_i, the log-sum-exp of its scores. A query that sees no key gets zeros, as SDPA gives, and an
// infinite lse that the backward pass reads as "no gradient".
template <int D>
inline void finish_query(float* s, int64_t n, int64_t end, float m, const float* v, int64_t vs, float* oi,
                         float* lse_i) {
  if (m == -kInf) {
    for (int c = 0; c < D; ++c) oi[c] = 0.0f;
    *lse_i = kInf;
    return;
  }
  exp_shifted(s, n, m);
  Vec total = {};
  for (int64_t j0 = 0; j0 < n; j0 += kLanes) total += load(s + j0);
  const float sum = lanes_sum(total);
  float acc[D];
  weighted_rows<D>(s, v, vs, end, acc);
  const float inv = 1.0f / sum;
  for (int c = 0; c < D; ++c) oi[c] = acc[c] * inv;
  *lse_i = m + std::log(sum);
}

// One pair's forward pass: o (T_q x D) and each query's log-sum-exp of its scores (lse, T_q).
template <int D>
void forward_pair(const float* q, int64_t qs, const float* k, int64_t ks, const float* v, int64_t vs, float* o,
                  int64_t os, float* lse, const bool* mask, const Problem p, float* kt, float* s, float* bias) {
  transpose<D>(k, ks, p, kt);
  if (!bias_per_query(p, mask)) key_bias(p, mask, 0, bias);
  for (int64_t i = 0; i < p.tq; ++i) {
    if (bias_per_query(p, mask)) key_bias(p, mask, i, bias);
    if (i + 1 < p.tq) prefetch_row<D>(q + (i + 1) * qs);
    const int64_t end = p.end(i), n = whole_vectors(end);
    dots<D>(q + i * qs, kt, n, p.tkp, p.scale, s);
    finish_query<D>(s, n, end, mask_scores(bias, end, n, s), v, vs, o + i * os, lse + i);
  }
}

// Lane j of the result = the sum of x[j]'s 16 lanes. Four rounds, each adding two vectors' halves
// side by side (vector shuffles): 15 adds and 30 shuffles for 16 sums, where summing each vector
// alone would take a chain of adds through memory per vector.
inline Vec sum_each(Vec* x) {
  // before round r a vector holds 1 << r keys' partial sums, 16 >> r lanes each, key by key; lo takes
  // the first half of each key's lanes (a's keys, then b's), hi the second half: their sum is one
  // vector of twice the keys with half the lanes each, in order
  const Lanes lo[4] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                       {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
                       {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
                       {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}};
  const Lanes hi[4] = {{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
                       {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31},
                       {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31},
                       {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}};
#pragma GCC unroll 4
  for (int r = 0, count = kLanes; r < 4; ++r, count /= 2)
#pragma GCC unroll 8
    for (int i = 0; i < count / 2; ++i)
      x[i] = __builtin_shuffle(x[2 * i], x[2 * i + 1], lo[r]) + __builtin_shuffle(x[2 * i], x[2 * i + 1], hi[r]);
  return x[0];
}

// s[j] = scale * (q . k_j) for j < n (a multiple of 16; keys from `end` on score 0), straight from the
// key rows: one query has no use for transposed keys, whose making would cost more than its scores.
template <int D>
inline void dots_one(const float* q, const float* k, int64_t ks, int64_t end, int64_t n, float scale, float* s) {
  constexpr int kVecs = D / kLanes;
  Vec qv[kVecs];
#pragma GCC unroll 4
  for (int r = 0; r < kVecs; ++r) qv[r] = load(q + r * kLanes);
  for (int64_t j0 = 0; j0 < n; j0 += kLanes) {
    Vec x[kLanes];
#pragma GCC unroll 16
    for (int u = 0; u < kLanes; ++u) {
      x[u] = Vec{};
      if (j0 + u < end)
#pragma GCC unroll 4
        for (int r = 0; r < kVecs; ++r) x[u] += qv[r] * load(k + (j0 + u) * ks + r * kLanes);
    }
    store(s + j0, sum_each(x) * scale);
  }
}

// A pair's forward pass for a single query (T_q = 1: each step of decoding).
template <int D>
void forward_one(const float* q, const float* k, int64_t ks, const float* v, int64_t vs, float* o, float* lse,
                 const bool* mask, const Problem p, float* s, float* bias) {
  key_bias(p, mask, 0, bias);
  const int64_t end = p.end(0), n = whole_vectors(end);
  dots_one<D>(q, k, ks, end, n, p.scale, s);
  finish_query<D>(s, n, end, mask_scores(bias, end, n, s), v, vs, o, lse);
}

// Key j's gradients once every query's weights are known: dK_j = scale sum_i dS_ij q_i and
// dV_j = sum_i P_ij dO_i, summed in registers over the queries (in two halves, so that two chains of
// multiply-adds overlap) and written once. P and dS are the pair's (T_q x tkp) weights and their
// gradients, 0 at hidden keys. Adding each query's share into rows in memory instead was a load and a
// store per vector per (query, key), and those stores were a quarter of the backward pass's samples.
template <int D>
inline void key_gradients(const float* P, const float* dS, int64_t tkp, int64_t first, int64_t tq, const float* q,
                          int64_t qs, const float* go, int64_t gos, float scale, float* dkj, float* dvj) {
  constexpr int kVecs = D / kLanes;
  Vec dk[2][kVecs] = {}, dv[2][kVecs] = {};
  int64_t i = first;
  for (; i + 2 <= tq; i += 2)
#pragma GCC unroll 2
    for (int u = 0; u < 2; ++u) {
      const float ds = dS[(i + u) * tkp], pj = P[(i + u) * tkp];
#pragma GCC unroll 4
      for (int r = 0; r < kVecs; ++r) {
        dk[u][r] += ds * load(q + (i + u) * qs + r * kLanes);
        dv[u][r] += pj * load(go + (i + u) * gos + r * kLanes);
      }
    }
  for (; i < tq; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < kVecs; ++r) {
      dk[0][r] += dS[i * tkp] * load(q + i * qs + r * kLanes);
      dv[0][r] += P[i * tkp] * load(go + i * gos + r * kLanes);
    }
#pragma GCC unroll 4
  for (int r = 0; r < kVecs; ++r) {
    store(dkj + r * kLanes, (dk[0][r] + dk[1][r]) * scale);
    store(dvj + r * kLanes, dv[0][r] + dv[1][r]);
  }
}

// The gradients one pair needs (FlashAttention's backward, Dao et al. 2022, Algorithm 4, one block):
// P = exp(S - lse), dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)), dQ = scale dS K,
// dK = scale dS^T Q.
template <int D>
void backward_pair(const float* q, int64_t qs, const float* k, int64_t ks, const float* v, int64_t vs,
                   const float* o, int64_t os, const float* go, int64_t gos, const float* lse, float* dq,
                   int64_t dqs, float* dk, int64_t dks, float* dv, int64_t dvs, const bool* mask,
                   const Problem p, float* kt, float* vt, float* P, float* dS, float* bias) {
  transpose<D>(k, ks, p, kt);
  transpose<D>(v, vs, p, vt);
  if (!bias_per_query(p, mask)) key_bias(p, mask, 0, bias);
  for (int64_t i = 0; i < p.tq; ++i) {
    const float* qi = q + i * qs;
    const float* goi = go + i * gos;
    float* dqi = dq + i * dqs;
    float* w = P + i * p.tkp;    // query i's weights,
    float* dw = dS + i * p.tkp;  // and their gradients
    if (lse[i] == kInf) {  // the query saw no key: nothing flows back through it
      for (int c = 0; c < D; ++c) dqi[c] = 0.0f;
      std::fill(w, w + p.tkp, 0.0f);
      std::fill(dw, dw + p.tkp, 0.0f);
      continue;
    }
    if (bias_per_query(p, mask)) key_bias(p, mask, i, bias);
    if (i + 1 < p.tq) {
      prefetch_row<D>(qi + qs);
      prefetch_row<D>(goi + gos);
      prefetch_row<D>(o + (i + 1) * os);
    }
    const int64_t end = p.end(i), n = whole_vectors(end);
    dots<D>(qi, kt, n, p.tkp, p.scale, w);
    mask_scores(bias, end, n, w);
    exp_shifted(w, n, lse[i]);  // the forward pass's weights
    dots<D>(goi, vt, n, p.tkp, 1.0f, dw);  // dP[i, j] = dO_i . v_j
    const float* oi = o + i * os;
    const float delta = row_dot<D>(goi, oi);  // rowsum(dO * O): the weights' own share of dP
    for (int64_t j = 0; j < n; ++j) dw[j] = w[j] * (dw[j] - delta);  // dS (0 at hidden keys)
    float acc[D];
    weighted_rows<D>(dw, k, ks, end, acc);  // dQ_i / scale = sum_j dS_ij k_j
    for (int c = 0; c < D; ++c) dqi[c] = acc[c] * p.scale;
  }
  // Key j is seen by every query, or under a causal mask by queries j on (whose rows were written up to
  // whole vectors past j; the entries of hidden keys are 0).
  for (int64_t j = 0; j < p.tk; ++j)
    key_gradients<D>(P + j, dS + j, p.tkp, p.causal ? j : 0, p.tq, q, qs, go, gos, p.scale, dk + j * dks, dv + j * dvs);
}

at::Tensor rows_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4, "attention: ", name,
              " must be a (B, H, T, D) float32 CPU tensor");
  return t.stride(3) == 1 ? t : t.contiguous();
}

// A (B, H, T, D) result laid out as (B, T, H, D) in memory: the heads' concatenation that follows
// (sec 3.2.2) is then a view, not a copy.
at::Tensor heads_last(int64_t b, int64_t h, int64_t t, int64_t d) {
  return at::empty({b, t, h, d}, at::TensorOptions().dtype(at::kFloat)).permute({0, 2, 1, 3});
}

Problem problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const c10::optional<at::Tensor>& mask,
                at::Tensor& expanded, bool causal, double scale) {
  const int64_t b = q.size(0), h = q.size(1), tq = q.size(2), d = q.size(3), tk = k.size(2);
  TORCH_CHECK(k.size(0) == b && k.size(1) == h && k.size(3) == d && v.sizes() == k.sizes(),
              "attention: q, k and v must agree in B, H and D, and k and v in T");
  Problem p{tq, tk, (tk + kLanes - 1) / kLanes * kLanes, causal, static_cast<float>(scale), {nullptr, 0, 0, 0, 0}};
  if (mask.has_value()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool, "attention: the mask must be boolean (True = may attend)");
    expanded = mask->expand({b, h, tq, tk});
    p.mask = {expanded.data_ptr<bool>(), expanded.stride(0), expanded.stride(1), expanded.stride(2),
              expanded.stride(3)};
  }
  return p;
}

// A task's working arrays, each starting on a 64-byte boundary. The kernels store 16-float vectors
// into them and load them back at once; where such a store straddles two cache lines the load cannot
// take its data from it and waits for the store to reach the cache. With std::vector's 16-byte
// alignment that happened or not by where malloc put them: one build's backward pass spent an eighth
// of its samples on that wait and ran 1.5x slower than the build before it, which had been lucky.
class Scratch {
 public:
  explicit Scratch(std::initializer_list<int64_t> sizes) {
    int64_t total = 0;
    for (int64_t n : sizes) total += whole_vectors(n);
    memory_.resize(total + kLanes);
    float* at = memory_.data();
    at += (kLanes - reinterpret_cast<uintptr_t>(at) / sizeof(float) % kLanes) % kLanes;
    for (int64_t n : sizes) {
      starts_.push_back(at);
      at += whole_vectors(n);
    }
  }
  float* operator[](size_t i) const { return starts_[i]; }

 private:
  std::vector<float> memory_;
  std::vector<float*> starts_;
};

int64_t grain(const Problem& p, int64_t d) {  // pairs per task: enough work to be worth a thread
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.tq * p.tk * d));
}

template <int D>
void forward_all(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Problem& p, at::Tensor& out,
                 at::Tensor& lse) {
  const Rows Q = rows_of(q), K = rows_of(k), V = rows_of(v), O = rows_of(out);
  const int64_t heads = q.size(1);
  float* L = lse.data_ptr<float>();
  at::parallel_for(0, q.size(0) * heads, grain(p, D), [&](int64_t begin, int64_t end) {
    Scratch scratch({p.tq == 1 ? 0 : D * p.tkp, p.tkp, p.tkp});
    float *kt = scratch[0], *s = scratch[1], *bias = scratch[2];
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / heads, h = n % heads;
      const bool* m = p.mask.data == nullptr ? nullptr : p.mask.data + b * p.mask.sb + h * p.mask.sh;
      if (n + 1 < end && p.tq > 1) {
        const int64_t nb = (n + 1) / heads, nh = (n + 1) % heads;
        prefetch_rows<D>(Q.pair(nb, nh), Q.st, p.tq);
        prefetch_rows<D>(K.pair(nb, nh), K.st, p.tk);
        prefetch_rows<D>(V.pair(nb, nh), V.st, p.tk);
      }
      if (p.tq == 1)
        forward_one<D>(Q.pair(b, h), K.pair(b, h), K.st, V.pair(b, h), V.st, O.pair(b, h), L + n, m, p, s, bias);
      else
        forward_pair<D>(Q.pair(b, h), Q.st, K.pair(b, h), K.st, V.pair(b, h), V.st, O.pair(b, h), O.st,
                        L + n * p.tq, m, p, kt, s, bias);
    }
  });
}

template <int D>
void backward_all(const at::Tensor& go, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& out, const at::Tensor& lse, const Problem& p, at::Tensor& dq, at::Tensor& dk,
                  at::Tensor& dv) {
  const Rows GO = rows_of(go), Q = rows_of(q), K = rows_of(k), V = rows_of(v), O = rows_of(out);
  const Rows DQ = rows_of(dq), DK = rows_of(dk), DV = rows_of(dv);
  const int64_t heads = q.size(1);
  const float* L = lse.data_ptr<float>();
  at::parallel_for(0, q.size(0) * heads, grain(p, D), [&](int64_t begin, int64_t end) {
    Scratch scratch({D * p.tkp, D * p.tkp, p.tq * p.tkp, p.tq * p.tkp, p.tkp});
    float *kt = scratch[0], *vt = scratch[1], *P = scratch[2], *dS = scratch[3], *bias = scratch[4];
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / heads, h = n % heads;
      const bool* m = p.mask.data == nullptr ? nullptr : p.mask.data + b * p.mask.sb + h * p.mask.sh;
      if (n + 1 < end) {
        const int64_t nb = (n + 1) / heads, nh = (n + 1) % heads;
        prefetch_rows<D>(Q.pair(nb, nh), Q.st, p.tq);
        prefetch_rows<D>(K.pair(nb, nh), K.st, p.tk);
        prefetch_rows<D>(V.pair(nb, nh), V.st, p.tk);
        prefetch_rows<D>(O.pair(nb, nh), O.st, p.tq);
        prefetch_rows<D>(GO.pair(nb, nh), GO.st, p.tq);
      }
      backward_pair<D>(Q.pair(b, h), Q.st, K.pair(b, h), K.st, V.pair(b, h), V.st, O.pair(b, h), O.st,
                       GO.pair(b, h), GO.st, L + n * p.tq, DQ.pair(b, h), DQ.st, DK.pair(b, h), DK.st,
                       DV.pair(b, h), DV.st, m, p, kt, vt, P, dS, bias);
    }
  });
}

}  // namespace

// q (B, H, T_q, D), k and v (B, H, T_k, D), mask broadcastable to (B, H, T_q, T_k) or None ->
// [out (B, H, T_q, D), lse (B, H, T_q)].
std::vector<at::Tensor> attention_forward(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
                                          const c10::optional<at::Tensor>& mask, bool causal, double scale) {
  const auto q = rows_contiguous(q_, "q"), k = rows_contiguous(k_, "k"), v = rows_contiguous(v_, "v");
  at::Tensor expanded;
  const Problem p = problem(q, k, v, mask, expanded, causal, scale);
  const int64_t d = q.size(3);
  auto out = heads_last(q.size(0), q.size(1), p.tq, d);
  auto lse = at::empty({q.size(0), q.size(1), p.tq}, q.options());
  switch (d) {
    case 16: forward_all<16>(q, k, v, p, out, lse); break;
    case 32: forward_all<32>(q, k, v, p, out, lse); break;
    case 64: forward_all<64>(q, k, v, p, out, lse); break;
    default: TORCH_CHECK(false, "attention: head size ", d, " is not compiled (16, 32, 64)");
  }
  return {out, lse};
}

// A gradient's memory: `into` where given, a (B, H, T, D) view whose rows are contiguous (a slice of the
// fused projection's gradient, qkv/nn/short_attention.py), else a new heads_last tensor.
at::Tensor gradient(const c10::optional<at::Tensor>& into, int64_t b, int64_t h, int64_t t, int64_t d) {
  if (!into.has_value()) return heads_last(b, h, t, d);
  TORCH_CHECK(into->scalar_type() == at::kFloat && into->device().is_cpu() && into->dim() == 4 &&
                  into->size(0) == b && into->size(1) == h && into->size(2) == t && into->size(3) == d &&
                  into->stride(3) == 1,
              "attention_backward: a gradient's memory must be a (B, H, T, D) float32 view with contiguous rows");
  return *into;
}

// The gradients of attention_forward's output with respect to q, k and v, given its saved results;
// written into dq, dk and dv where they are given.
std::vector<at::Tensor> attention_backward(const at::Tensor& go_, const at::Tensor& q_, const at::Tensor& k_,
                                           const at::Tensor& v_, const at::Tensor& out_, const at::Tensor& lse,
                                           const c10::optional<at::Tensor>& mask, bool causal, double scale,
                                           const c10::optional<at::Tensor>& dq_into,
                                           const c10::optional<at::Tensor>& dk_into,
                                           const c10::optional<at::Tensor>& dv_into) {
  const auto q = rows_contiguous(q_, "q"), k = rows_contiguous(k_, "k"), v = rows_contiguous(v_, "v");
  const auto go = rows_contiguous(go_, "grad"), out = rows_contiguous(out_, "out");
  TORCH_CHECK(lse.is_contiguous() && go.sizes() == q.sizes() && out.sizes() == q.sizes(),
              "attention_backward: grad, out and lse must come from attention_forward on q");
  at::Tensor expanded;
  const Problem p = problem(q, k, v, mask, expanded, causal, scale);
  const int64_t b = q.size(0), h = q.size(1), d = q.size(3);
  auto dq = gradient(dq_into, b, h, p.tq, d), dk = gradient(dk_into, b, h, p.tk, d),
       dv = gradient(dv_into, b, h, p.tk, d);
  switch (d) {
    case 16: backward_all<16>(go, q, k, v, out, lse, p, dq, dk, dv); break;
    case 32: backward_all<32>(go, q, k, v, out, lse, p, dq, dk, dv); break;
    case 64: backward_all<64>(go, q, k, v, out, lse, p, dq, dk, dv); break;
    default: TORCH_CHECK(false, "attention: head size ", d, " is not compiled (16, 32, 64)");
  }
  return {dq, dk, dv};
}
