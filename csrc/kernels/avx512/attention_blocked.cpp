// Attention of many query tokens at once (a prompt, an encoder's sequence) on AVX-512.
//
// The one-token kernel (attention.cpp) takes each score as a dot product over head_dim and a
// horizontal sum, and reads every value row once per query row: right for decoding, where the
// keys and values are read once anyway, but about a third of the FMA rate for a prompt. Here a
// thread transposes its kv head's keys once (kt[d][j]), so eight query rows times 32 keys are a
// run of broadcast FMAs over d, and the probability-weighted sum reads each value row once for
// four query rows. Each score and each output element is summed in the same order whichever
// rows share a block, and the shares are fixed blocks of tokens: bits do not depend on threads.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/avx512/avx512.h"
#include "kernels/avx512/exp.h"

namespace infermode::avx512 {
namespace {

constexpr int64_t kShareTokens = 16;  // query tokens of one share, with one kv head's group
constexpr int kScoreRows = 8;         // query rows whose scores are computed together
constexpr int kValueRows = 4;         // query rows whose outputs are accumulated together

int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }
__mmask16 mask_upto(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// kt[d * ld + j] = k[j * hd + d] for keys [from, to), and zeros up to the next multiple of 32
// (the score loop reads whole 32-key columns; those scores are masked away).
void transpose_keys(const float* k, int64_t hd, int64_t from, int64_t to, float* kt,
                    int64_t ld) {
  for (int64_t j = from; j < to; ++j)
    for (int64_t d = 0; d < hd; ++d) kt[d * ld + j] = k[j * hd + d];
  for (int64_t d = 0; d < hd; ++d)
    std::fill(kt + d * ld + to, kt + d * ld + round_up(to, 32), 0.0f);
}

// sc[r * ld + j] = (q[r] . k[j]) * scale + key_bias[j] for R rows and keys [0, cols), cols a
// multiple of 32 within kt's zero padding.
template <int R>
void score_rows(const float* const* q, const float* kt, int64_t ld, int64_t hd, int64_t cols,
                float scale, const float* key_bias, int64_t keys, float* sc) {
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < cols; j += 32) {
    __m512 a0[R], a1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    const float* kd = kt + j;
    for (int64_t d = 0; d < hd; ++d, kd += ld) {
      const __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 qv = _mm512_set1_ps(q[r][d]);
        a0[r] = _mm512_fmadd_ps(qv, k0, a0[r]);
        a1[r] = _mm512_fmadd_ps(qv, k1, a1[r]);
      }
    }
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    if (key_bias) {
      b0 = _mm512_maskz_loadu_ps(mask_upto(keys - j), key_bias + j);
      b1 = _mm512_maskz_loadu_ps(mask_upto(keys - j - 16), key_bias + j + 16);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm512_storeu_ps(sc + r * ld + j, _mm512_add_ps(_mm512_mul_ps(a0[r], vscale), b0));
      _mm512_storeu_ps(sc + r * ld + j + 16, _mm512_add_ps(_mm512_mul_ps(a1[r], vscale), b1));
    }
  }
}

void score_rows(int rows, const float* const* q, const float* kt, int64_t ld, int64_t hd,
                int64_t cols, float scale, const float* key_bias, int64_t keys, float* sc) {
  switch (rows) {
    case 1: return score_rows<1>(q, kt, ld, hd, cols, scale, key_bias, keys, sc);
    case 2: return score_rows<2>(q, kt, ld, hd, cols, scale, key_bias, keys, sc);
    case 3: return score_rows<3>(q, kt, ld, hd, cols, scale, key_bias, keys, sc);
    case 4: return score_rows<4>(q, kt, ld, hd, cols, scale, key_bias, keys, sc);
    case 5: return score_rows<5>(q, kt, ld, hd, cols, scale, key_bias, keys, sc);
    case 6: return score_rows<6>(q, kt, ld, hd, cols, scale, key_bias, keys, sc);
    case 7: return score_rows<7>(q, kt, ld, hd, cols, scale, key_bias, keys, sc);
    default: return score_rows<8>(q, kt, ld, hd, cols, scale, key_bias, keys, sc);
  }
}

// Turns a row of n scores into unnormalised probabilities, zero from n up to `upto` (a multiple
// of 16); returns 1 / their sum, or 0 when every key is hidden (the row's output is then zero).
float softmax_row(float* sc, int64_t n, int64_t upto) {
  __m512 peak = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = mask_upto(n - j);
    peak = _mm512_mask_max_ps(peak, m, peak, _mm512_maskz_loadu_ps(m, sc + j));
  }
  const float top1 = _mm512_reduce_max_ps(peak);
  if (!(top1 > -INFINITY)) {
    std::fill(sc, sc + upto, 0.0f);
    return 0.0f;
  }
  const __m512 top = _mm512_set1_ps(top1);
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < upto; j += 16) {
    const __mmask16 m = mask_upto(n - j);
    const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_loadu_ps(sc + j), top)));
    _mm512_storeu_ps(sc + j, e);
    total = _mm512_add_ps(total, e);
  }
  return 1.0f / _mm512_reduce_add_ps(total);
}

// out[r] = inv[r] * sum_j p[r][j] v[j] for R rows over keys [0, n); p is zero past a row's own
// keys, so the rows can share the loop.
template <int R>
void weigh_values(const float* p, int64_t ld, const float* v, int64_t hd, int64_t n,
                  const float* inv, float* const* out) {
  for (int64_t d = 0; d < hd; d += 64) {
    __mmask16 m[4];
    for (int q4 = 0; q4 < 4; ++q4) m[q4] = mask_upto(hd - d - 16 * q4);
    __m512 acc[R][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      for (int q4 = 0; q4 < 4; ++q4) acc[r][q4] = _mm512_setzero_ps();
    const float* vj = v + d;
    for (int64_t j = 0; j < n; ++j, vj += hd) {
      __m512 vv[4];
      for (int q4 = 0; q4 < 4; ++q4) vv[q4] = _mm512_maskz_loadu_ps(m[q4], vj + 16 * q4);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 pr = _mm512_set1_ps(p[r * ld + j]);
        for (int q4 = 0; q4 < 4; ++q4) acc[r][q4] = _mm512_fmadd_ps(pr, vv[q4], acc[r][q4]);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 scale = _mm512_set1_ps(inv[r]);
      for (int q4 = 0; q4 < 4; ++q4)
        _mm512_mask_storeu_ps(out[r] + d + 16 * q4, m[q4], _mm512_mul_ps(acc[r][q4], scale));
    }
  }
}

void weigh_values(int rows, const float* p, int64_t ld, const float* v, int64_t hd, int64_t n,
                  const float* inv, float* const* out) {
  switch (rows) {
    case 1: return weigh_values<1>(p, ld, v, hd, n, inv, out);
    case 2: return weigh_values<2>(p, ld, v, hd, n, inv, out);
    case 3: return weigh_values<3>(p, ld, v, hd, n, inv, out);
    default: return weigh_values<4>(p, ld, v, hd, n, inv, out);
  }
}

// Thread ith's shares: a contiguous run of (kv head, block of tokens) pairs, kv head major, cut
// where the work so far (a causal block's grows with its position) crosses ith / nth of all.
Range my_shares(const AttentionShape& s, int64_t blocks, int ith, int nth) {
  auto work = [&](int64_t share) {
    const int64_t t0 = share % blocks * kShareTokens;
    const int64_t t1 = std::min(s.tokens, t0 + kShareTokens);
    return double(t1 - t0) * double(s.visible(t0) + s.visible(t1 - 1));
  };
  const int64_t shares = blocks * s.kv_heads;
  double total = 0.0;
  for (int64_t i = 0; i < shares; ++i) total += work(i);
  double before = 0.0;
  int64_t begin = shares, end = shares;
  for (int64_t i = 0; i < shares; ++i) {
    const double w = work(i);
    const int owner = std::min(nth - 1, int((before + 0.5 * w) / total * nth));
    if (owner >= ith && begin == shares) begin = i;
    if (owner > ith) {
      end = i;
      break;
    }
    before += w;
  }
  return {std::min(begin, end), end};
}

}  // namespace

void attention_blocked(const float* q, const float* k, const float* v, float* out,
                       const AttentionShape& s, float* scratch, int ith, int nth) {
  const int64_t group = s.heads / s.kv_heads, hd = s.head_dim;
  const int64_t ld = round_up(s.context(), 32);
  float* kt = scratch + int64_t(ith) * s.scratch_floats();  // [hd, ld]
  float* sc = kt + hd * ld;                                 // [kScoreRows, ld]
  const int64_t blocks = (s.tokens + kShareTokens - 1) / kShareTokens;
  const Range shares = my_shares(s, blocks, ith, nth);
  int64_t kv = -1, transposed = 0;  // whose keys kt holds, and how many
  for (int64_t share = shares.begin; share < shares.end; ++share) {
    const int64_t g = share / blocks, t0 = share % blocks * kShareTokens;
    const int64_t t1 = std::min(s.tokens, t0 + kShareTokens);
    const float* kg = k + g * s.capacity * hd;
    const float* vg = v + g * s.capacity * hd;
    if (g != kv) kv = g, transposed = 0;
    if (s.visible(t1 - 1) > transposed) {
      transpose_keys(kg, hd, transposed, s.visible(t1 - 1), kt, ld);
      transposed = s.visible(t1 - 1);
    }
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      for (int64_t t = t0; t < t1; t += kScoreRows) {
        const int rows = int(std::min<int64_t>(kScoreRows, t1 - t));
        const float* qr[kScoreRows];
        float* outr[kScoreRows];
        float inv[kScoreRows];
        for (int r = 0; r < rows; ++r) {
          qr[r] = q + (t + r) * s.q_stride + h * hd;
          outr[r] = out + ((t + r) * s.heads + h) * hd;
        }
        const int64_t most = s.visible(t + rows - 1);  // the last row sees the most keys
        score_rows(rows, qr, kt, ld, hd, round_up(most, 32), s.scale, s.key_bias, s.keys, sc);
        for (int r = 0; r < rows; ++r)
          inv[r] = softmax_row(sc + r * ld, s.visible(t + r), round_up(most, 16));
        for (int r = 0; r < rows; r += kValueRows) {
          const int n = std::min(kValueRows, rows - r);
          weigh_values(n, sc + r * ld, ld, vg, hd, s.visible(t + r + n - 1), inv + r, outr + r);
        }
      }
    }
  }
}

}  // namespace infermode::avx512
