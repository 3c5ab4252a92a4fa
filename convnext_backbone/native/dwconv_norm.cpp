// The head of a ConvNeXt block in one pass over memory: depthwise 7x7 conv (zero padding 3,
// stride 1, with bias) -> LayerNorm over channels, on NHWC tensors, for inference.
//
// Each output pixel's C conv outputs are computed into a small buffer that stays in L1 and are
// normalised there, so the conv output is never written to memory and read back by a separate
// LayerNorm pass. Rows (n, h) are split over ATen's intra-op threads (at::parallel_for; the
// OpenMP runtime is torch's own, see native/__init__.py). Vector code is compiled for AVX-512,
// AVX2 and baseline x86-64 and picked at load by the CPU (GCC target_clones).
//
// Under CPU autocast (bfloat16) the Python side passes the input and the conv weight and bias
// rounded to bfloat16, as autocast does for conv2d, and round_conv = true: the conv output is
// rounded to bfloat16 before the LayerNorm, which runs in float32, as autocast runs layer_norm.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dwconv.h"
#include "vec.h"

namespace {

using namespace convnext_native;  // NOLINT: the vector helpers of vec.h

// LayerNorm of the kTile pixels of a tile, acc[j * C ..] (conv_padded_tile computes all kTile,
// past the image's last column too), written to out[j * C ..] for the first `cols`. Each pass
// over the channels runs for all the pixels together, so that their sums are independent chains
// in registers and not one pixel's latency after another's; per pixel the arithmetic is that of
// a LayerNorm in two passes (the mean, then the sum of squared differences), each a sum of
// 16-lane partial sums, then of their lanes, then of the channels beyond the last full vector.
template <typename out_t>
TARGETS void norm_tile(float* acc, int64_t cols, const float* gamma, const float* beta, float eps,
                       int64_t C, bool round_conv, out_t* out) {
  const int64_t vec_c = C / kLanes * kLanes;
  if (round_conv) {
    for (int64_t j = 0; j < kTile; ++j) {
      float* v = acc + j * C;
      for (int64_t c = 0; c < vec_c; c += kLanes) store_vec(v + c, round_vec(load_vec(v + c)));
      for (int64_t c = vec_c; c < C; ++c) v[c] = round_bf16(v[c]);
    }
  }
  vfloat part[kTile];
  float mean[kTile], rstd[kTile];
#pragma GCC unroll 8
  for (int j = 0; j < kTile; ++j) part[j] = vfloat{};
  for (int64_t c = 0; c < vec_c; c += kLanes) {
#pragma GCC unroll 8
    for (int j = 0; j < kTile; ++j) part[j] += load_vec(acc + j * C + c);
  }
  for (int j = 0; j < kTile; ++j) {
    float sum = lane_sum(part[j]);
    for (int64_t c = vec_c; c < C; ++c) sum += acc[j * C + c];
    mean[j] = sum / static_cast<float>(C);
    part[j] = vfloat{};
  }
  for (int64_t c = 0; c < vec_c; c += kLanes) {
#pragma GCC unroll 8
    for (int j = 0; j < kTile; ++j) {
      const vfloat d = load_vec(acc + j * C + c) - mean[j];
      store_vec(acc + j * C + c, d);
      part[j] += d * d;
    }
  }
  for (int j = 0; j < kTile; ++j) {
    float var = lane_sum(part[j]);
    for (int64_t c = vec_c; c < C; ++c) {
      acc[j * C + c] -= mean[j];
      var += acc[j * C + c] * acc[j * C + c];
    }
    rstd[j] = 1.f / std::sqrt(var / static_cast<float>(C) + eps);
  }
  for (int64_t j = 0; j < cols; ++j) {
    const float* v = acc + j * C;
    for (int64_t c = 0; c < vec_c; c += kLanes)
      store_vec(out + j * C + c, load_vec(v + c) * rstd[j] * load_vec(gamma + c) +
                                     load_vec(beta + c));
    for (int64_t c = vec_c; c < C; ++c)
      store_one(out + j * C + c, v[c] * rstd[j] * gamma[c] + beta[c]);
  }
}

// dst[i] = src[i] as ring_t (rounded to nearest even where ring_t is bfloat16).
template <typename in_t, typename ring_t>
TARGETS void convert_row(const in_t* src, ring_t* dst, int64_t len) {
  const int64_t vec_len = len / kLanes * kLanes;
  for (int64_t i = 0; i < vec_len; i += kLanes) store_vec(dst + i, load_vec(src + i));
  for (int64_t i = vec_len; i < len; ++i) store_one(dst + i, load_one(src + i));
}

// Input rows as ring_t, each made once per thread into a ring of 7 rows: the windows of
// consecutive output rows share 6 of their 7 rows. Where the conv computes in bfloat16 the ring
// holds the input rounded to bfloat16 (ring_t bfloat16: each value rounded once, not at each of
// the 7 x 14 / 8 loads of it that conv_interior makes, and half the bytes in the caches: the 7
// rows of stage 2 or 3 of an 800x1216 image fill most of a 1 MiB L2 in float32). Each row of the
// ring has kPad zero columns before the image and kTile - 1 + kPad after it, so that every tile
// is an interior one (conv_padded_tile): at 38 or 76 columns the edge tiles would otherwise be a
// third of the work, at the speed of one column at a time.
template <typename in_t, typename ring_t>
class RowRing {
 public:
  RowRing(const in_t* x, int64_t W, int64_t C)
      : x_(x), W_(W), C_(C), padded_len_((W + kTile - 1 + 2 * kPad) * C),
        rows_(kSize * padded_len_, ring_t(0.f)) {
    std::fill(key_, key_ + kSize, -1);
  }

  // The window of output row h of image n (H rows); rows[kh] points at column 0 of the image.
  Window<ring_t> window(int64_t n, int64_t H, int64_t h) {
    Window<ring_t> win = window_of<ring_t>(nullptr, H, 0, h);
    for (int64_t kh = win.kh0; kh < win.kh1; ++kh) win.rows[kh] = row(n * H + h + kh - kPad);
    return win;
  }

 private:
  // Input row `key` (n * H + ih), converted if its slot holds another row (7 consecutive keys
  // have 7 different slots); its padding columns stay zero.
  const ring_t* row(int64_t key) {
    ring_t* dst = rows_.data() + key % kSize * padded_len_ + kPad * C_;
    if (key_[key % kSize] != key) {
      convert_row<in_t, ring_t>(x_ + key * W_ * C_, dst, W_ * C_);
      key_[key % kSize] = key;
    }
    return dst;
  }

  const in_t* x_;
  int64_t W_, C_, padded_len_;
  std::vector<ring_t> rows_;
  int64_t key_[kSize];
};

// The conv and LayerNorm of x (in_t) through a RowRing of ring_t per thread.
template <typename in_t, typename ring_t, typename out_t>
void run(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& gamma,
         const at::Tensor& beta, double eps, bool round_conv, at::Tensor& out) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const in_t* xp = static_cast<const in_t*>(x.data_ptr());
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const float* gp = gamma.data_ptr<float>();
  const float* betap = beta.data_ptr<float>();
  out_t* op = out.data_ptr<out_t>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    RowRing<in_t, ring_t> ring(xp, W, C);
    std::vector<float> acc(kTile * C);
    for (int64_t r = begin; r < end; ++r) {
      const Window<ring_t> win = ring.window(r / H, H, r % H);
      for (int64_t w0 = 0; w0 < W; w0 += kTile) {
        conv_padded_tile<ring_t>(win, wp, bp, acc.data(), C, w0);
        norm_tile<out_t>(acc.data(), std::min(kTile, W - w0), gp, betap, e, C, round_conv,
                         op + (r * W + w0) * C);
      }
    }
  });
}

// x: (N, H, W, C) float32 (read as its bfloat16 rounding if round_input) or bfloat16, contiguous. weight: (7, 7, C) float32. bias, gamma,
// beta: (C,) float32. Returns (N, H, W, C) of out_dtype (float32 or bfloat16).
at::Tensor dwconv7x7_layer_norm(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, const at::Tensor& gamma,
                                const at::Tensor& beta, double eps, bool round_input,
                                bool round_conv, at::ScalarType out_dtype) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu(),
              "dwconv7x7_layer_norm: x must be a contiguous (N, H, W, C) CPU tensor");
  const int64_t C = x.size(3);
  for (const at::Tensor* t : {&bias, &gamma, &beta}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == C && t->scalar_type() == at::kFloat &&
                    t->is_contiguous(),
                "dwconv7x7_layer_norm: bias, gamma and beta must be contiguous float32 (C,)");
  }
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == kSize && weight.size(1) == kSize &&
                  weight.size(2) == C && weight.scalar_type() == at::kFloat &&
                  weight.is_contiguous(),
              "dwconv7x7_layer_norm: weight must be a contiguous float32 (7, 7, C)");
  TORCH_CHECK(out_dtype == at::kFloat || out_dtype == at::kBFloat16,
              "dwconv7x7_layer_norm: out_dtype must be float32 or bfloat16");
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  const bool in_f32 = x.scalar_type() == at::kFloat, out_f32 = out_dtype == at::kFloat;
  TORCH_CHECK(in_f32 || x.scalar_type() == at::kBFloat16,
              "dwconv7x7_layer_norm: x must be float32 or bfloat16");
  using BF16 = c10::BFloat16;
  if (in_f32 && !round_input) {
    if (out_f32)
      run<float, float, float>(x, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<float, float, BF16>(x, weight, bias, gamma, beta, eps, round_conv, out);
  } else if (in_f32) {
    if (out_f32)
      run<float, BF16, float>(x, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<float, BF16, BF16>(x, weight, bias, gamma, beta, eps, round_conv, out);
  } else {
    if (out_f32)
      run<BF16, BF16, float>(x, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<BF16, BF16, BF16>(x, weight, bias, gamma, beta, eps, round_conv, out);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(convnext_backbone, m) {
  m.def("dwconv7x7_layer_norm(Tensor x, Tensor weight, Tensor bias, Tensor gamma, Tensor beta, "
        "float eps, bool round_input, bool round_conv, ScalarType out_dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(convnext_backbone, CPU, m) {
  m.impl("dwconv7x7_layer_norm", &dwconv7x7_layer_norm);
}
