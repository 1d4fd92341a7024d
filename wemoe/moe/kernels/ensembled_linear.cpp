// Fused forward of WEMoE's per-sample linear layer on CPU (float32):
//
//     y[b, n, o] = bias[b, o] + sum_i x[b, n, i] * W_b[o, i],    W_b = sum_t coef[b, t] * stack[t]
//
// where stack is [T + 1, out, in] (the task vectors, then W_0) and coef is [B, T + 1] (the routing weights, then 1).
// With torch ops, W_b costs two passes over memory: one GEMM writes every sample's weights (151 MB per ViT-B/32 MLP
// matrix at batch 16), then a batched GEMM reads them again and packs them for only N (= 50) rows of work each.
// Here the weights are built one tile at a time (32 output rows x a chunk of the inputs, for every sample) straight
// into the layout the matmul kernel reads, in a buffer that stays in the core's L2 cache; no per-sample weight ever
// reaches memory, and the stack itself is read once per call. Threads split the output rows; each walks the input
// chunks in turn, and within a chunk its tiles, keeping one running sum per tile in the caller's scratch.
//
// Compiled on first use by wemoe/fused_kernel.py (g++ -O3 -march=native); plain C ABI, called through ctypes.
// Vector code uses GCC vector extensions (16 floats: one AVX-512 register, or two AVX2 ones).

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

typedef float vf __attribute__((vector_size(64), aligned(4)));  // aligned(4): loads from any float address
typedef int vi __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
constexpr int64_t kCols = 2 * kLanes;  // output rows per tile: two vectors wide
constexpr int kMaxTokenBlock = 12;     // 12 x 2 accumulators + 2 weight vectors + 1 broadcast < 32 registers

inline float* aligned(float* p) {  // the first 64-byte boundary at or after p
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}
inline vf load(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }

// One level of the butterfly transpose: swaps bit H of the row index with bit H of the lane index.
template <int H>
inline void butterfly(vf* m) {
  vi lo, hi;
  for (int l = 0; l < kLanes; ++l) {
    lo[l] = (l & H) ? kLanes + l - H : l;
    hi[l] = (l & H) ? kLanes + l : l + H;
  }
#pragma GCC unroll 16
  for (int r = 0; r < kLanes; ++r) {
    if (r & H) continue;
    const vf a = m[r], b = m[r + H];
    m[r] = __builtin_shuffle(a, b, lo);
    m[r + H] = __builtin_shuffle(a, b, hi);
  }
}

inline void transpose16(vf* m) {
  butterfly<8>(m);
  butterfly<4>(m);
  butterfly<2>(m);
  butterfly<1>(m);
}

struct Problem {
  const float* x;      // [B, N, in], each token block transposed: see pack_tokens
  const float* coef;   // [B, T1]
  const float* stack;  // [T1, out, in]
  const float* bias;   // [B, out]
  float* y;            // [B, N, out]
  int64_t batch, tokens, experts, out, in;
};

// dst[b, k, c] = sum_t coef[b, t] * src[(t * 16 + c) * 16 + k] for k, c < 16, for every sample b: one 16 x 16 block of
// every sample's weights, built row by row in registers, transposed there, stored as columns. src is the block's
// stack values copied together (see build_tile). T1 is a template argument so the expert loop unrolls and every
// sample's coefficients stay in registers.
template <int T1>
void build_block(const Problem& p, const float* src, float* dst, int64_t dst_sample_stride) {
  for (int64_t b = 0; b < p.batch; ++b) {  // innermost: the block's stack vectors stay in L1 for every sample
    vf cb[T1];
    for (int t = 0; t < T1; ++t) cb[t] = vf{} + p.coef[b * T1 + t];
    vf m[kLanes];
#pragma GCC unroll 16
    for (int64_t r = 0; r < kLanes; ++r) {
      vf acc = load(src + r * kLanes) * cb[0];
      for (int t = 1; t < T1; ++t) acc += load(src + (t * kLanes + r) * kLanes) * cb[t];
      m[r] = acc;
    }
    transpose16(m);
#pragma GCC unroll 16
    for (int64_t k = 0; k < kLanes; ++k) store(dst + b * dst_sample_stride + k * kCols, m[k]);
  }
}

// The same for any number of experts (a runtime loop), and for the last columns when kc is not a multiple of 16.
void build_block_any(const Problem& p, const float* src, int64_t nr, int64_t nk, float* dst,
                     int64_t dst_sample_stride) {
  const int64_t step = p.out * p.in, T1 = p.experts;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t k = 0; k < nk; ++k)
      for (int64_t r = 0; r < kLanes; ++r) {
        float acc = 0.f;
        for (int64_t t = 0; r < nr && t < T1; ++t) acc += src[t * step + r * p.in + k] * p.coef[b * T1 + t];
        dst[b * dst_sample_stride + k * kCols + r] = acc;
      }
}

// tile[b, k, c] = W_b[row0 + c, i0 + k] for k < kc, c < kCols (columns past `rows` are 0), for every sample b.
// The stack rows of the tile are first copied into `scratch` ([k block][t][row][16], zero past `rows`): read in
// place, the T1 x 16 rows of one block lie a multiple of 1 KiB apart, fall into a few L1 sets and evict each other
// (ViT-B/32's c_fc, one thread: 25 ms for the build read in place, 19 ms with the copy).
void build_tile(const Problem& p, int64_t row0, int64_t rows, int64_t i0, int64_t kc, float* tile, float* scratch) {
  const int64_t vec_kc = kc - kc % kLanes, stride = kc * kCols, T1 = p.experts, step = p.out * p.in;
  const int64_t block = T1 * kLanes * kLanes;  // floats per k block in scratch
  for (int64_t c0 = 0; c0 < kCols; c0 += kLanes) {
    const int64_t nr = std::clamp<int64_t>(rows - c0, 0, kLanes);
    const float* src = p.stack + (row0 + std::min(c0, rows)) * p.in + i0;  // rows past `rows` are never read
    if (vec_kc > 0 && p.experts <= 17) {
      for (int64_t t = 0; t < T1; ++t)
        for (int64_t r = 0; r < kLanes; ++r) {
          const float* row = src + t * step + r * p.in;
          for (int64_t k0 = 0; k0 < vec_kc; k0 += kLanes)
            store(scratch + k0 / kLanes * block + (t * kLanes + r) * kLanes, r < nr ? load(row + k0) : vf{});
        }
    }
    for (int64_t k0 = 0; k0 < vec_kc; k0 += kLanes) {
      float* dst = tile + k0 * kCols + c0;
      const float* blk = scratch + k0 / kLanes * block;
      switch (p.experts) {
#define WEMOE_CASE(T) \
  case T: build_block<T>(p, blk, dst, stride); break;
        WEMOE_CASE(2) WEMOE_CASE(3) WEMOE_CASE(4) WEMOE_CASE(5) WEMOE_CASE(6) WEMOE_CASE(7) WEMOE_CASE(8) WEMOE_CASE(9)
        WEMOE_CASE(10) WEMOE_CASE(11) WEMOE_CASE(12) WEMOE_CASE(13) WEMOE_CASE(14) WEMOE_CASE(15) WEMOE_CASE(16)
        WEMOE_CASE(17)
#undef WEMOE_CASE
        default: build_block_any(p, src + k0, nr, kLanes, dst, stride);
      }
    }
    if (vec_kc < kc) build_block_any(p, src + vec_kc, nr, kc - vec_kc, tile + vec_kc * kCols + c0, stride);
  }
}

// The next tile's stack rows, fetched into L2 a few lines at a time while the current tile is applied, so that
// reading the stack (85 MB per ViT-B/32 MLP matrix at T = 8, once per call) overlaps with the matmul (measured:
// 3-8% faster than without; 2 lines every 8 steps beat every 4 or 16 steps).
struct Prefetch {
  std::vector<const float*> rows;  // start of each row segment
  int64_t lines = 0;               // cache lines per segment
  size_t row = 0;
  int64_t line = 0;

  void reset(int64_t lines_per_row) {
    rows.clear();
    lines = lines_per_row;
    row = 0;
    line = 0;
  }
  inline void issue(int count) {
    for (int c = 0; c < count && row < rows.size(); ++c) {
      __builtin_prefetch(rows[row] + line * kLanes, 0, 2);
      if (++line == lines) line = 0, ++row;
    }
  }
};

// x[b, n0 + j, i0 : i0 + kc] @ tile[b] for j < NB, added to the running sums of the tile's earlier input chunks
// (`sums`: [B, N, 32] per tile, contiguous; the bias starts them), written to y after the last chunk. Accumulating in
// y itself would revisit rows `out` floats apart, which for ViT-B/32's c_fc (12 KiB) all fall in one L1 cache set.
template <int NB>
void apply_block(const Problem& p, const float* tile, int64_t b, int64_t n0, int64_t row0, int64_t rows, int64_t i0,
                 int64_t kc, bool first, bool last, float* sums, Prefetch& prefetch) {
  const float* xb = p.x + (b * p.tokens + n0) * p.in + i0 * NB;  // packed: xb[k * NB + j] = x[b, n0 + j, i0 + k]
  const float* w = tile + b * kc * kCols;
  vf acc[NB][2];
  for (int j = 0; j < NB; ++j) acc[j][0] = acc[j][1] = vf{};
  for (int64_t k = 0; k < kc; ++k) {
    if ((k & 7) == 0) prefetch.issue(2);
    const vf w0 = load(w + k * kCols), w1 = load(w + k * kCols + kLanes);
    for (int j = 0; j < NB; ++j) {
      const float xs = xb[k * NB + j];
      acc[j][0] += xs * w0;
      acc[j][1] += xs * w1;
    }
  }
  const float* bias = p.bias + b * p.out + row0;
  vf bias0 = vf{}, bias1 = vf{};
  if (first && rows == kCols) {
    bias0 = load(bias);
    bias1 = load(bias + kLanes);
  } else if (first) {
    for (int64_t c = 0; c < rows; ++c) {
      if (c < kLanes) bias0[c] = bias[c]; else bias1[c - kLanes] = bias[c];
    }
  }
  for (int j = 0; j < NB; ++j) {
    float* srow = sums + (b * p.tokens + n0 + j) * kCols;
    const vf s0 = acc[j][0] + (first ? bias0 : load(srow));
    const vf s1 = acc[j][1] + (first ? bias1 : load(srow + kLanes));
    if (!last) {
      store(srow, s0);
      store(srow + kLanes, s1);
      continue;
    }
    float* yrow = p.y + (b * p.tokens + n0 + j) * p.out + row0;
    if (rows == kCols) {
      store(yrow, s0);
      store(yrow + kLanes, s1);
    } else {
      for (int64_t c = 0; c < rows; ++c) yrow[c] = c < kLanes ? s0[c] : s1[c - kLanes];
    }
  }
}

// Token blocks of near-equal size (50 tokens: 5 x 10), so no block is a small, slow tail; block q is
// [q * tokens / blocks, (q + 1) * tokens / blocks).
inline int64_t token_blocks(int64_t tokens) { return (tokens + kMaxTokenBlock - 1) / kMaxTokenBlock; }

// packed[b, n0 + ..][k * nb + j] = x[b, n0 + j, k] for every token block [n0, n0 + nb) of sample b: the matmul kernel
// then reads one block's inputs through one pointer (10 row pointers do not fit in the CPU's general registers).
void pack_tokens(const float* x, float* packed, int64_t b, int64_t tokens, int64_t in) {
  const int64_t blocks = token_blocks(tokens);
  for (int64_t q = 0; q < blocks; ++q) {
    const int64_t n0 = q * tokens / blocks, nb = (q + 1) * tokens / blocks - n0;
    const float* src = x + (b * tokens + n0) * in;
    float* dst = packed + (b * tokens + n0) * in;
    for (int64_t k = 0; k < in; ++k)  // written in order; read as nb sequential streams
      for (int64_t j = 0; j < nb; ++j) dst[k * nb + j] = src[j * in + k];
  }
}

void apply_tile(const Problem& p, const float* tile, int64_t b, int64_t row0, int64_t rows, int64_t i0, int64_t kc,
                float* sums, Prefetch& prefetch) {
  const bool first = i0 == 0, last = i0 + kc >= p.in;
  const int64_t blocks = token_blocks(p.tokens);
  for (int64_t q = 0; q < blocks; ++q) {
    if (last) {
      // The last chunk writes the tile's output rows: 128 bytes every `out` floats, a pattern the hardware prefetcher
      // does not follow. Ask for the next block's rows (for writing) while this block computes.
      // (measured: 0-3% per matrix)
      const int64_t next_q = q + 1 < blocks ? q + 1 : 0, next_b = q + 1 < blocks ? b : b + 1;
      const int64_t next = next_b * p.tokens + next_q * p.tokens / blocks;
      const int64_t end = std::min(next_b * p.tokens + (next_q + 1) * p.tokens / blocks, p.batch * p.tokens);
      for (int64_t n = next; n < end; ++n) {
        __builtin_prefetch(p.y + n * p.out + row0, 1, 3);
        __builtin_prefetch(p.y + n * p.out + row0 + kLanes, 1, 3);
      }
    }
    const int64_t n0 = q * p.tokens / blocks, nb = (q + 1) * p.tokens / blocks - n0;
    switch (nb) {
#define WEMOE_CASE(N) \
  case N: apply_block<N>(p, tile, b, n0, row0, rows, i0, kc, first, last, sums, prefetch); break;
      WEMOE_CASE(1) WEMOE_CASE(2) WEMOE_CASE(3) WEMOE_CASE(4) WEMOE_CASE(5) WEMOE_CASE(6)
      WEMOE_CASE(7) WEMOE_CASE(8) WEMOE_CASE(9) WEMOE_CASE(10) WEMOE_CASE(11) WEMOE_CASE(12)
#undef WEMOE_CASE
      default: break;
    }
  }
}

}  // namespace

extern "C" {

// y = the per-sample linear layer above. All arrays contiguous float32. threads <= 1 runs on the calling thread.
// scratch_x: wemoe_ensembled_linear_scratch_floats(...) floats.
int wemoe_ensembled_linear_forward(const float* x, const float* coef, const float* stack, const float* bias, float* y,
                                   float* scratch_x, int64_t batch, int64_t tokens, int64_t experts, int64_t out,
                                   int64_t in, int64_t threads) {
  {
    const int64_t workers = std::clamp<int64_t>(threads, 1, batch);
    auto pack = [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) pack_tokens(x, scratch_x, b, tokens, in);
    };
    std::vector<std::thread> pool;
    for (int64_t w = 1; w < workers; ++w) pool.emplace_back(pack, w * batch / workers, (w + 1) * batch / workers);
    pack(0, batch / workers);
    for (auto& th : pool) th.join();
  }
  const Problem p{scratch_x, coef, stack, bias, y, batch, tokens, experts, out, in};
  // input chunk: every sample's tile (batch x kc x 32 floats) fills at most 256 KiB of L2, one sample's 16 KiB of L1
  // (ViT-B/32, batch 16, 2 threads: kc = 128 measured best of 64-768, 5% ahead of 256)
  const int64_t budget = (int64_t{256} << 10) / static_cast<int64_t>(sizeof(float));
  const int64_t fit = budget / (batch * kCols) / kLanes * kLanes;
  const int64_t kc = std::min<int64_t>(in, std::clamp<int64_t>(fit, kLanes, 128));
  const int64_t tiles = (out + kCols - 1) / kCols, tile_sums = batch * tokens * kCols;
  float* all_sums = aligned(scratch_x + batch * tokens * in);  // every tile's running sums (scratch_floats below)
  auto worker = [&](int64_t first, int64_t last) {
    // cache-line aligned: a vector load or store that straddles two lines costs two
    std::vector<float> tile_memory(static_cast<size_t>(batch * kc * kCols + kLanes));
    std::vector<float> scratch_memory(static_cast<size_t>(experts * kLanes * kc + kLanes));
    float* tile = aligned(tile_memory.data());
    float* scratch = aligned(scratch_memory.data());
    Prefetch prefetch;
    // Input chunks outermost: one chunk of every sample's inputs (800 KB for ViT-B/32 at batch 16) stays in L2 for
    // all of this thread's tiles, instead of all the inputs streaming past once per tile.
    for (int64_t i0 = 0; i0 < in; i0 += kc) {
      const int64_t n = std::min(kc, in - i0);
      for (int64_t t = first; t < last; ++t) {
        const int64_t row0 = t * kCols, rows = std::min(kCols, out - row0);
        build_tile(p, row0, rows, i0, n, tile, scratch);
        // the next tile's stack rows: the next rows at this chunk, or the first rows at the next chunk
        const bool same_chunk = t + 1 < last;
        const int64_t next_i0 = same_chunk ? i0 : i0 + kc, next_row0 = same_chunk ? row0 + kCols : first * kCols;
        prefetch.reset((std::min(kc, std::max<int64_t>(in - next_i0, 0)) + kLanes - 1) / kLanes);
        if (next_i0 < in)
          for (int64_t e = 0; e < experts; ++e)
            for (int64_t r = next_row0; r < std::min(out, next_row0 + kCols); ++r)
              prefetch.rows.push_back(stack + (e * out + r) * in + next_i0);
        float* sums = all_sums + t * tile_sums;
        for (int64_t b = 0; b < batch; ++b) apply_tile(p, tile, b, row0, rows, i0, n, sums, prefetch);
      }
    }
  };
  const int64_t workers = std::clamp<int64_t>(threads, 1, tiles);
  std::vector<std::thread> pool;
  for (int64_t w = 1; w < workers; ++w) pool.emplace_back(worker, w * tiles / workers, (w + 1) * tiles / workers);
  worker(0, tiles / workers);
  for (auto& th : pool) th.join();
  return 0;
}

// Floats of scratch the caller passes: the reordered inputs (x's size) and every tile's running sums, plus alignment.
int64_t wemoe_ensembled_linear_scratch_floats(int64_t batch, int64_t tokens, int64_t out, int64_t in) {
  return batch * tokens * in + kLanes + batch * tokens * ((out + kCols - 1) / kCols) * kCols;
}

}  // extern "C"
