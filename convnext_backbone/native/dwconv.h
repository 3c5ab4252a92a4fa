// The depthwise 7x7 conv (zero padding 3, stride 1) of float32 NHWC rows read in place, 8 output
// columns at a time: the conv of the conv's backward (dwconv_grad.cpp). Its size and padding are
// also those of the block's head (dwconv_norm.cpp), which reads its rows from a ring of its own.
// Needs vec.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "vec.h"

namespace convnext_native {
namespace {  // each includer compiles its own clones (target_clones)

constexpr int64_t kSize = 7, kPad = 3;
constexpr int64_t kTile = 8;    // output columns computed together (one accumulator each)

// The input rows a window of output row h reads: rows[kh] is input row h + kh - 3 (W pixels of C
// float32 values) for kh0 <= kh < kh1, the window rows inside the image.
struct Window {
  const float* rows[kSize];
  int64_t kh0, kh1;
};

// The window of output row h of an image of H rows, each of row_len values, read in place.
Window window_of(const float* image, int64_t H, int64_t row_len, int64_t h) {
  Window win;
  win.kh0 = std::max<int64_t>(0, kPad - h);
  win.kh1 = std::min<int64_t>(kSize, H + kPad - h);
  for (int64_t kh = 0; kh < kSize; ++kh)
    win.rows[kh] = kh >= win.kh0 && kh < win.kh1 ? image + (h + kh - kPad) * row_len : nullptr;
  return win;
}

// acc[j * C + c0 ..] for the kTile output columns w0 .. w0 + kTile - 1, every window column
// inside the image: per window row, its kTile + 6 input vectors are loaded once and each weight
// vector once, into kTile accumulators (the loops unroll into registers).
TARGETS void conv_interior(const Window& win, const float* w, const float* bias, float* acc,
                           int64_t C, int64_t w0, int64_t c0) {
  constexpr int kSpan = kTile + kSize - 1;
  vfloat sum[kTile];
  const vfloat b = load_vec(bias + c0);
#pragma GCC unroll 8
  for (int j = 0; j < kTile; ++j) sum[j] = b;
  for (int64_t kh = win.kh0; kh < win.kh1; ++kh) {
    const float* px = win.rows[kh] + (w0 - kPad) * C + c0;
    const float* pw = w + kh * kSize * C + c0;
    vfloat in[kSpan];
#pragma GCC unroll 14
    for (int i = 0; i < kSpan; ++i) in[i] = load_vec(px + i * C);
#pragma GCC unroll 7
    for (int kw = 0; kw < kSize; ++kw) {
      const vfloat wv = load_vec(pw + kw * C);
#pragma GCC unroll 8
      for (int j = 0; j < kTile; ++j) sum[j] += in[j + kw] * wv;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kTile; ++j) std::memcpy(acc + j * C + c0, &sum[j], sizeof(vfloat));
}

// acc[c0 ..] for one output column wo, window columns outside the image skipped (the zero
// padding).
TARGETS void conv_column(const Window& win, const float* w, const float* bias, float* acc,
                         int64_t W, int64_t C, int64_t wo, int64_t c0) {
  vfloat s = load_vec(bias + c0);
  const int64_t kw0 = std::max<int64_t>(0, kPad - wo);
  const int64_t kw1 = std::min<int64_t>(kSize, W + kPad - wo);
  for (int64_t kh = win.kh0; kh < win.kh1; ++kh) {
    const float* row = win.rows[kh];
    for (int64_t kw = kw0; kw < kw1; ++kw)
      s += load_vec(row + (wo + kw - kPad) * C + c0) * load_vec(w + (kh * kSize + kw) * C + c0);
  }
  std::memcpy(acc + c0, &s, sizeof(vfloat));
}

// acc[j * C + c] = bias[c] + the sum over the 7x7 window of x * w, for the `cols` (<= kTile)
// output columns w0 .. w0 + cols - 1 of the output row whose window is win.
inline void conv_tile(const Window& win, const float* w, const float* bias, float* acc,
                      int64_t W, int64_t C, int64_t w0, int64_t cols) {
  const int64_t vec_c = C / kLanes * kLanes;
  const bool interior = cols == kTile && w0 >= kPad && w0 + kTile + kPad <= W;
  for (int64_t c0 = 0; c0 < vec_c; c0 += kLanes) {
    if (interior) {
      conv_interior(win, w, bias, acc, C, w0, c0);
    } else {
      for (int64_t j = 0; j < cols; ++j) conv_column(win, w, bias, acc + j * C, W, C, w0 + j, c0);
    }
  }
  for (int64_t c = vec_c; c < C; ++c) {  // channels beyond the last full vector
    for (int64_t j = 0; j < cols; ++j) {
      float s = bias[c];
      for (int64_t kh = win.kh0; kh < win.kh1; ++kh) {
        for (int64_t kw = 0; kw < kSize; ++kw) {
          const int64_t iw = w0 + j + kw - kPad;
          if (iw >= 0 && iw < W) s += win.rows[kh][iw * C + c] * w[(kh * kSize + kw) * C + c];
        }
      }
      acc[j * C + c] = s;
    }
  }
}

}  // namespace
}  // namespace convnext_native
