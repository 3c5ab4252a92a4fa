// A transposed copy of a 2-D float32 tensor, by 16 x 16 tiles transposed in registers and shared
// out among the threads: the training MLP's fc2 weight gradient (ops._MLP) hands oneDNN
// grad^T as a contiguous input.
//
// ATen's copy of a transposed 2-D view (aten/src/ATen/native/Copy.cpp,
// copy_same_type_transpose_) is scalar and runs on one thread. A copy: the same values, bit for
// bit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "vec.h"

namespace {

using convnext_native::kLanes;
using convnext_native::load_vec;
using convnext_native::store_vec;
using convnext_native::vfloat;

// Rows i and i + s of a tile exchange their off-diagonal s x s blocks: after s = 8, 4, 2, 1 the
// tile is transposed.
#define INDICES(...) __VA_ARGS__
#define SWAP_BLOCKS(s, lo, hi)                                           \
  for (int i = 0; i < 16; ++i) {                                         \
    if (i & (s)) continue;                                               \
    const vfloat a = v[i], b = v[i + (s)];                               \
    v[i] = __builtin_shufflevector(a, b, INDICES lo);                    \
    v[i + (s)] = __builtin_shufflevector(a, b, INDICES hi);              \
  }

TARGETS void transpose_tile(const float* in, int64_t in_stride, float* out,
                            int64_t out_stride) {
  vfloat v[16];
  for (int i = 0; i < 16; ++i) v[i] = load_vec(in + i * in_stride);
  SWAP_BLOCKS(8, (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
              (8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
  SWAP_BLOCKS(4, (0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
              (4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
  SWAP_BLOCKS(2, (0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
              (2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
  SWAP_BLOCKS(1, (0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
              (1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))
  for (int i = 0; i < 16; ++i) store_vec(out + i * out_stride, v[i]);
}
#undef SWAP_BLOCKS
#undef INDICES

// Tiles [t0, t1), numbered column tile first, so that a thread writes whole output rows.
void transpose_tiles(const float* in, float* out, int64_t rows, int64_t cols, int64_t t0,
                     int64_t t1, int64_t down) {
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t c0 = t / down * kLanes, r0 = t % down * kLanes;
    const int64_t r1 = std::min(rows, r0 + kLanes), c1 = std::min(cols, c0 + kLanes);
    if (r1 - r0 == kLanes && c1 - c0 == kLanes) {
      transpose_tile(in + r0 * cols + c0, cols, out + c0 * rows + r0, rows);
      continue;
    }
    for (int64_t c = c0; c < c1; ++c)  // an edge tile
      for (int64_t r = r0; r < r1; ++r) out[c * rows + r] = in[r * cols + c];
  }
}

// x: (R, C) contiguous float32. Returns x^T as a contiguous (C, R) tensor.
at::Tensor transposed(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat &&
                  x.device().is_cpu(),
              "convnext_backbone transposed: x must be a contiguous 2-D float32 CPU tensor");
  const int64_t rows = x.size(0), cols = x.size(1);
  at::Tensor out = at::empty({cols, rows}, x.options());
  const int64_t down = (rows + kLanes - 1) / kLanes, across = (cols + kLanes - 1) / kLanes;
  const float* in = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, across * down, 64, [&](int64_t begin, int64_t end) {
    transpose_tiles(in, o, rows, cols, begin, end, down);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(convnext_backbone, m) { m.def("transposed(Tensor x) -> Tensor"); }

TORCH_LIBRARY_IMPL(convnext_backbone, CPU, m) { m.impl("transposed", &transposed); }
