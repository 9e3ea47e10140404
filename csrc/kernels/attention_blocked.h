#pragma once
// Attention of many query tokens at once (a prompt, an encoder's sequence): the driver shared by
// the ISA folders.
//
// The one-token kernels take each score as a dot product over head_dim and a horizontal sum, and
// read every value row once per query row: right for decoding, where keys and values are read
// once anyway, but a fraction of the FMA rate for a prompt. Here a thread transposes its kv
// head's keys once (kt[d][j]), so a few query rows times a few vectors of keys are a run of
// broadcast FMAs over d, and the probability-weighted sum reads each value row once for several
// query rows. Every score and output element is summed in the same order whichever rows share a
// block, and the shares are fixed blocks of tokens: bits do not depend on the threads.
//
// Micro (one per ISA folder) gives kScoreRows (<= 8) and kColumns (<= 32, a multiple of its
// vector width kLanes) and three steps, the first and last for R rows at once:
//   score_rows<R>(q, kt, ld, hd, cols, scale, key_bias, keys, sc)
//       sc[r * ld + j] = (q[r] . k[j]) * scale + key_bias[j] for j in [0, cols);
//   softmax_row(sc, n, upto) -> 1 / sum (0 when every key is hidden)
//       exp(sc[j] - max) for j < n, zero on [n, upto);
//   weigh_values<R>(p, ld, v, hd, n, inv, out)
//       out[r] = inv[r] * sum_{j < n} p[r * ld + j] v[j], R <= kValueRows.
// Only ISA folders include this file, each compiled with its own flags, so everything here has
// internal linkage: two folders' copies must never be merged by the linker.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/thread_pool.h"
#include "kernels/dispatch.h"

namespace infermode {
namespace {

constexpr int64_t kShareTokens = 16;  // query tokens of one share, with one kv head's group

inline int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// kt[d * ld + j] = k[j * hd + d] for keys [from, to), then zeros up to a multiple of 32 (the
// score step reads whole columns of keys; those scores are masked away).
inline void transpose_keys(const float* k, int64_t hd, int64_t from, int64_t to, float* kt,
                           int64_t ld) {
  for (int64_t j = from; j < to; ++j)
    for (int64_t d = 0; d < hd; ++d) kt[d * ld + j] = k[j * hd + d];
  for (int64_t d = 0; d < hd; ++d)
    std::fill(kt + d * ld + to, kt + d * ld + round_up(to, 32), 0.0f);
}

// Thread ith's shares: a contiguous run of (kv head, block of tokens) pairs, kv head major, cut
// where the work so far (a causal block's grows with its position) crosses ith / nth of all.
inline Range attention_shares(const AttentionShape& s, int64_t blocks, int ith, int nth) {
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

// f(std::integral_constant<int, rows>{}) for rows in [1, Max]: a step's row count as a template
// argument, so its accumulators stay in registers.
template <int Max, typename F>
void with_rows(int rows, F&& f) {
  if constexpr (Max > 1) {
    if (rows < Max) return with_rows<Max - 1>(rows, f);
  }
  f(std::integral_constant<int, Max>{});
}

// The kernel: thread ith of nth; scratch as AttentionShape::scratch_floats() says.
template <typename Micro>
void blocked_attention(const float* q, const float* k, const float* v, float* out,
                       const AttentionShape& s, float* scratch, int ith, int nth) {
  constexpr int R = Micro::kScoreRows;
  static_assert(R <= 8 && Micro::kColumns <= 32, "scratch_floats() holds 8 rows, 32-key columns");
  const int64_t group = s.heads / s.kv_heads, hd = s.head_dim;
  const int64_t ld = round_up(s.context(), 32);
  float* kt = scratch + int64_t(ith) * s.scratch_floats();  // [hd, ld]
  float* sc = kt + hd * ld;                                 // [R, ld]
  const int64_t blocks = (s.tokens + kShareTokens - 1) / kShareTokens;
  const Range shares = attention_shares(s, blocks, ith, nth);
  int64_t kv = -1, transposed = 0;  // whose keys kt holds, and how many
  for (int64_t share = shares.begin; share < shares.end; ++share) {
    const int64_t g = share / blocks, t0 = share % blocks * kShareTokens;
    const int64_t t1 = std::min(s.tokens, t0 + kShareTokens);
    const float* vg = v + g * s.capacity * hd;
    if (g != kv) kv = g, transposed = 0;
    if (s.visible(t1 - 1) > transposed) {
      transpose_keys(k + g * s.capacity * hd, hd, transposed, s.visible(t1 - 1), kt, ld);
      transposed = s.visible(t1 - 1);
    }
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      for (int64_t t = t0; t < t1; t += R) {
        const int rows = int(std::min<int64_t>(R, t1 - t));
        const float* qr[R];
        float* outr[R];
        float inv[R];
        for (int r = 0; r < rows; ++r) {
          qr[r] = q + (t + r) * s.q_stride + h * hd;
          outr[r] = out + ((t + r) * s.heads + h) * hd;
        }
        const int64_t most = s.visible(t + rows - 1);  // the last row sees the most keys
        const int64_t cols = round_up(most, Micro::kColumns);
        with_rows<R>(rows, [&](auto r) {
          constexpr int rows_now = decltype(r)::value;
          Micro::template score_rows<rows_now>(qr, kt, ld, hd, cols, s.scale, s.key_bias, s.keys,
                                               sc);
        });
        for (int r = 0; r < rows; ++r)
          inv[r] = Micro::softmax_row(sc + r * ld, s.visible(t + r),
                                      round_up(most, Micro::kLanes));
        for (int r = 0; r < rows; r += Micro::kValueRows) {
          const int n = std::min(Micro::kValueRows, rows - r);
          const int64_t keys = s.visible(t + r + n - 1);
          with_rows<Micro::kValueRows>(n, [&](auto m) {
            constexpr int rows_now = decltype(m)::value;
            Micro::template weigh_values<rows_now>(sc + r * ld, ld, vg, hd, keys, inv + r,
                                                   outr + r);
          });
        }
      }
    }
  }
}

}  // namespace
}  // namespace infermode
