// The backward of the block's depthwise 7x7 conv (zero padding 3, stride 1) on NHWC float32
// tensors, for training.
//
// grad_input is the depthwise conv of the output gradient with the 180-degree rotated weights
// (the Python side rotates them), the conv of dwconv.h with no bias: dwconv7x7. grad_weight[kh,
// kw, c] is the sum over every output pixel of x[h + kh - 3, w + kw - 3, c] * g[h, w, c]: for
// each row (n, h), window row kh and vector of 16 channels, the 7 window columns' sums stay in
// registers over the whole row, 8 output columns at a time (their 14 input vectors and 8
// gradient vectors loaded once); each thread sums its rows into its own (7, 7, C) buffer, and
// the buffers are added in a fixed order. oneDNN computes the weight gradient about 10x slower
// than its forward conv (36 ms against 6 ms at 2x96x128x128 on a 2-core Zen 4).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "dwconv.h"
#include "vec.h"

namespace {

using namespace convnext_native;  // NOLINT: the vector helpers of vec.h and the conv of dwconv.h

// acc[kw] += sum over output columns w of row g of x_row[w + kw - 3] * g_row[w], for the 16
// channels at c0 (x_row, g_row: one image row each, W pixels of C values).
TARGETS void weight_grad_row(const float* x_row, const float* g_row, int64_t W, int64_t C,
                             int64_t c0, float* acc_out) {
  vfloat acc[kSize];
#pragma GCC unroll 7
  for (int kw = 0; kw < kSize; ++kw) acc[kw] = load_vec(acc_out + kw * C + c0);
  constexpr int kSpan = kTile + kSize - 1;
  int64_t w0 = 0;
  // columns whose window starts left of the image, one by one
  for (; w0 < std::min<int64_t>(kPad, W); ++w0) {
    const vfloat g = load_vec(g_row + w0 * C + c0);
    for (int kw = 0; kw < kSize; ++kw) {
      const int64_t iw = w0 + kw - kPad;
      if (iw >= 0 && iw < W) acc[kw] += load_vec(x_row + iw * C + c0) * g;
    }
  }
  // kTile columns at a time, every window column inside the image
  for (; w0 + kTile + kPad <= W; w0 += kTile) {
    vfloat in[kSpan], g[kTile];
#pragma GCC unroll 14
    for (int i = 0; i < kSpan; ++i) in[i] = load_vec(x_row + (w0 - kPad + i) * C + c0);
#pragma GCC unroll 8
    for (int j = 0; j < kTile; ++j) g[j] = load_vec(g_row + (w0 + j) * C + c0);
#pragma GCC unroll 7
    for (int kw = 0; kw < kSize; ++kw) {
#pragma GCC unroll 8
      for (int j = 0; j < kTile; ++j) acc[kw] += in[j + kw] * g[j];
    }
  }
  for (; w0 < W; ++w0) {  // the rest, one by one
    const vfloat g = load_vec(g_row + w0 * C + c0);
    for (int kw = 0; kw < kSize; ++kw) {
      const int64_t iw = w0 + kw - kPad;
      if (iw >= 0 && iw < W) acc[kw] += load_vec(x_row + iw * C + c0) * g;
    }
  }
#pragma GCC unroll 7
  for (int kw = 0; kw < kSize; ++kw) store_vec(acc_out + kw * C + c0, acc[kw]);
}

// The same sums for the channels c >= c_begin, one at a time (the remainder of C / 16).
void weight_grad_row_tail(const float* x_row, const float* g_row, int64_t W, int64_t C,
                          int64_t c_begin, float* acc_out) {
  for (int64_t c = c_begin; c < C; ++c) {
    for (int64_t kw = 0; kw < kSize; ++kw) {
      float s = 0.f;
      for (int64_t w = 0; w < W; ++w) {
        const int64_t iw = w + kw - kPad;
        if (iw >= 0 && iw < W) s += x_row[iw * C + c] * g_row[w * C + c];
      }
      acc_out[kw * C + c] += s;
    }
  }
}

// x, grad: (N, H, W, C) float32, contiguous. Returns grad_weight (7, 7, C) float32.
at::Tensor dwconv7x7_weight_grad(const at::Tensor& x, const at::Tensor& grad) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu() &&
                  x.scalar_type() == at::kFloat,
              "dwconv7x7_weight_grad: x must be a contiguous float32 (N, H, W, C) CPU tensor");
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.is_contiguous() &&
                  grad.scalar_type() == at::kFloat,
              "dwconv7x7_weight_grad: grad must be a contiguous float32 tensor of x's shape");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t vec_c = C / kLanes * kLanes;
  const int64_t threads = at::get_num_threads();
  // one (7, 7, C) buffer per range of rows, the rows split evenly: the sum's order depends on
  // the thread count only
  const int64_t ranges = std::max<int64_t>(1, std::min(threads, N * H));
  at::Tensor partial = at::zeros({ranges, kSize, kSize, C}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, ranges, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      float* acc = pp + k * kSize * kSize * C;
      const int64_t r0 = N * H * k / ranges, r1 = N * H * (k + 1) / ranges;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / H, h = r % H;
        const float* g_row = gp + r * W * C;
        for (int64_t kh = 0; kh < kSize; ++kh) {
          const int64_t ih = h + kh - kPad;
          if (ih < 0 || ih >= H) continue;
          const float* x_row = xp + (n * H + ih) * W * C;
          for (int64_t c0 = 0; c0 < vec_c; c0 += kLanes)
            weight_grad_row(x_row, g_row, W, C, c0, acc + kh * kSize * C);
          weight_grad_row_tail(x_row, g_row, W, C, vec_c, acc + kh * kSize * C);
        }
      }
    }
  });
  return partial.sum(0);
}

// x: (N, H, W, C) float32, contiguous; weight: (7, 7, C) float32. Returns the depthwise conv
// (zero padding 3, no bias), (N, H, W, C) float32.
at::Tensor dwconv7x7(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu() &&
                  x.scalar_type() == at::kFloat,
              "dwconv7x7: x must be a contiguous float32 (N, H, W, C) CPU tensor");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == kSize && weight.size(1) == kSize &&
                  weight.size(2) == C && weight.scalar_type() == at::kFloat &&
                  weight.is_contiguous(),
              "dwconv7x7: weight must be a contiguous float32 (7, 7, C)");
  at::Tensor out = at::empty(x.sizes(), x.options());
  const at::Tensor zero = at::zeros({C}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = zero.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, h = r % H;
      const Window win = window_of(xp + n * H * W * C, H, W * C, h);
      for (int64_t w0 = 0; w0 < W; w0 += kTile)  // NHWC: the tile's sums are its output
        conv_tile(win, wp, bp, op + (r * W + w0) * C, W, C, w0, std::min(kTile, W - w0));
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(convnext_backbone, m) {
  m.def("dwconv7x7(Tensor x, Tensor weight) -> Tensor");
  m.def("dwconv7x7_weight_grad(Tensor x, Tensor grad) -> Tensor");
}

TORCH_LIBRARY_IMPL(convnext_backbone, CPU, m) {
  m.impl("dwconv7x7", &dwconv7x7);
  m.impl("dwconv7x7_weight_grad", &dwconv7x7_weight_grad);
}
