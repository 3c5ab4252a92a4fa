// The head of a ConvNeXt block in one pass over memory: depthwise 7x7 conv (zero padding 3,
// stride 1, with bias) -> LayerNorm over channels, on NHWC tensors, for inference.
//
// Each output pixel's C conv outputs are computed into a small buffer that stays in L1 and are
// normalised there, so the conv output is never written to memory and read back by a separate
// LayerNorm pass. Rows (n, h) are split over ATen's intra-op threads (at::parallel_for; the
// OpenMP runtime is torch's own, see native/__init__.py). Vector code is compiled for AVX-512,
// AVX2 and baseline x86-64 and picked at load by the CPU (GCC target_clones).
//
// The input rows a window reads are copied once per thread into a ring of 7 rows laid out in
// blocks of 16 channels ([C/16][columns][16], float32, 64-byte aligned): the 16-channel vectors
// of consecutive columns are then 64 bytes apart, so the conv reads each block as one stream at
// constant offsets from one pointer, every load inside one cache line. Read in place from NHWC
// rows (C floats apart, from a buffer of any alignment) the same loads took 1.2-1.5x longer on a
// Zen 5.
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

#include "dwconv.h"
#include "vec.h"

namespace {

using namespace convnext_native;  // NOLINT: the vector helpers of vec.h, kSize and kPad

constexpr int kWide = 16, kNarrow = 8;  // output columns per tile: 16, 8 for a row's last few
constexpr int kGroup = 8;              // pixels normalised together

// The conv of kCols output columns for one block of 16 channels. rows[kh] (kh0 <= kh < kh1, the
// window rows inside the image) points at the block's column of the tile's first window column;
// w: the block's (7, 7, 16) weights; bias: its 16. Writes the sums (rounded to bfloat16 where
// kRound) to acc[j * ld ..] and adds them to sums[j * 16 ..], the per-pixel partial sums of the
// LayerNorm's mean.
//
// The 7 weight vectors of a window row and the kCols sums stay in registers; each input vector
// is loaded once per window row and used by the (up to) 7 output columns it falls in.
//
// Note: never inlined, and takes no vector by value: its callers are compiled for baseline
// x86-64 and reach the clone for this CPU through the resolver (an inlined copy would be the
// baseline code; a vector argument would be passed as the baseline ABI passes it).
template <int kCols, bool kRound>
__attribute__((noinline)) TARGETS void conv_block(const float* const* rows, int64_t kh0,
                                                  int64_t kh1, const float* w, const float* bias,
                                                  float* acc, int64_t ld, float* sums) {
  vfloat sum[kCols];
  const vfloat b = load_vec(bias);
#pragma GCC unroll 16
  for (int j = 0; j < kCols; ++j) sum[j] = b;
  for (int64_t kh = kh0; kh < kh1; ++kh) {
    const float* px = rows[kh];
    vfloat wv[kSize];
#pragma GCC unroll 7
    for (int kw = 0; kw < kSize; ++kw) wv[kw] = load_vec(w + (kh * kSize + kw) * kLanes);
#pragma GCC unroll 22
    for (int i = 0; i < kCols + kSize - 1; ++i) {
      const vfloat v = load_vec(px + i * kLanes);
#pragma GCC unroll 7
      for (int kw = 0; kw < kSize; ++kw) {
        const int j = i - kw;
        if (j >= 0 && j < kCols) sum[j] += v * wv[kw];
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < kCols; ++j) {
    const vfloat v = kRound ? round_vec(sum[j]) : sum[j];
    store_vec(acc + j * ld, v);
    store_vec(sums + j * kLanes, load_vec(sums + j * kLanes) + v);
  }
}

// LayerNorm of the kGroup pixels acc[j * ld ..] (C values each) whose channel sums conv_block
// left in sums[j * 16 ..], written to out[j * C ..] for the first `cols`. Per pixel the
// arithmetic is that of a LayerNorm in two passes (the mean, then the sum of squared
// differences), each a sum of 16-lane partial sums, then of their lanes; the pixels' sums run
// together, as independent chains in registers, not one pixel's latency after another's.
template <typename out_t>
TARGETS void norm_group(const float* acc, const float* sums, int64_t ld, int64_t cols,
                        const float* gamma, const float* beta, float eps, int64_t C,
                        out_t* out) {
  const int64_t vec_c = C / kLanes * kLanes;
  vfloat part[kGroup];
  float mean[kGroup], rstd[kGroup];
#pragma GCC unroll 8
  for (int j = 0; j < kGroup; ++j) {
    mean[j] = lane_sum(load_vec(sums + j * kLanes)) / static_cast<float>(C);
    part[j] = vfloat{};
  }
  for (int64_t c = 0; c < vec_c; c += kLanes) {
#pragma GCC unroll 8
    for (int j = 0; j < kGroup; ++j) {
      const vfloat d = load_vec(acc + j * ld + c) - mean[j];
      part[j] += d * d;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kGroup; ++j) {
    float var = lane_sum(part[j]);
    for (int64_t c = vec_c; c < C; ++c) {  // channels beyond the last full vector
      const float d = acc[j * ld + c] - mean[j];
      var += d * d;
    }
    rstd[j] = 1.f / std::sqrt(var / static_cast<float>(C) + eps);
  }
  for (int64_t j = 0; j < cols; ++j) {
    const float* v = acc + j * ld;
    for (int64_t c = 0; c < vec_c; c += kLanes)
      store_vec(out + j * C + c, (load_vec(v + c) - mean[j]) * rstd[j] * load_vec(gamma + c) +
                                     load_vec(beta + c));
    for (int64_t c = vec_c; c < C; ++c)
      store_one(out + j * C + c, (v[c] - mean[j]) * rstd[j] * gamma[c] + beta[c]);
  }
}

// An NHWC row of W pixels (C values of in_t) into a ring row of `blocks` blocks of `cols`
// columns of 16 channels, at column kPad on: as float32, rounded to bfloat16 first where
// kRoundIn. The last block's channels past C stay zero.
template <typename in_t, bool kRoundIn>
TARGETS void block_row(const in_t* src, int64_t W, int64_t C, int64_t cols, float* dst) {
  const int64_t full = C / kLanes;
  for (int64_t w = 0; w < W; ++w) {
    const in_t* s = src + w * C;
    float* d = dst + (kPad + w) * kLanes;
    for (int64_t k = 0; k < full; ++k) {
      const vfloat v = load_vec(s + k * kLanes);
      store_vec(d + k * cols * kLanes, kRoundIn ? round_vec(v) : v);
    }
    for (int64_t c = full * kLanes; c < C; ++c) {
      const float v = load_one(s + c);
      d[full * cols * kLanes + c - full * kLanes] = kRoundIn ? round_bf16(v) : v;
    }
  }
}

// The input rows the windows read, each made once per thread into a ring of 7 rows (the windows
// of consecutive output rows share 6 of their 7 rows), in blocks of 16 channels. Each block row
// has kPad zero columns before the image and kWide - 1 + kPad after it, so that every tile is
// computed whole, with no bounds to check: at 38 or 76 columns the edge tiles would otherwise
// be a third of the work. Where the conv computes in bfloat16 the ring holds the input rounded
// to bfloat16, each value rounded once and widened once (not at each of its loads).
template <typename in_t, bool kRoundIn>
class RowRing {
 public:
  RowRing(const in_t* x, int64_t W, int64_t C)
      : x_(x), W_(W), C_(C), cols_(W + kWide - 1 + 2 * kPad),
        row_len_((C + kLanes - 1) / kLanes * cols_ * kLanes), rows_(kSize * row_len_) {
    std::fill(key_, key_ + kSize, -1);
  }

  // Points rows[kh] at block 0, column 0 (the first padding column) of the input row that
  // window row kh of output row h of image n (H rows) reads, for the kh in [kh0, kh1) inside
  // the image.
  void window(int64_t n, int64_t H, int64_t h, const float** rows, int64_t* kh0, int64_t* kh1) {
    *kh0 = std::max<int64_t>(0, kPad - h);
    *kh1 = std::min<int64_t>(kSize, H + kPad - h);
    for (int64_t kh = *kh0; kh < *kh1; ++kh) rows[kh] = row(n * H + h + kh - kPad);
  }

  // Floats from a block row to the next block's.
  int64_t block_stride() const { return cols_ * kLanes; }

 private:
  // Input row `key` (n * H + ih), made if its slot holds another row (7 consecutive keys have 7
  // different slots); its padding columns and channels stay zero.
  const float* row(int64_t key) {
    float* dst = rows_.data() + key % kSize * row_len_;
    if (key_[key % kSize] != key) {
      block_row<in_t, kRoundIn>(x_ + key * W_ * C_, W_, C_, cols_, dst);
      key_[key % kSize] = key;
    }
    return dst;
  }

  const in_t* x_;
  int64_t W_, C_, cols_, row_len_;
  AlignedFloats rows_;
  int64_t key_[kSize];
};

// The conv of the kCols output columns from w0 on, every block of channels, into acc (pixel j
// at acc[j * ld ..]) and their channel sums into sums.
template <int kCols>
void conv_tile(const float* const* rows, int64_t kh0, int64_t kh1, int64_t blocks,
               int64_t block_stride, const float* w, const float* bias, bool round, int64_t w0,
               float* acc, int64_t ld, float* sums) {
  const float* at[kSize];
  std::memset(sums, 0, kCols * kLanes * sizeof(float));
  for (int64_t k = 0; k < blocks; ++k) {
    for (int64_t kh = kh0; kh < kh1; ++kh) at[kh] = rows[kh] + k * block_stride + w0 * kLanes;
    const float* wk = w + k * kSize * kSize * kLanes;
    if (round)
      conv_block<kCols, true>(at, kh0, kh1, wk, bias + k * kLanes, acc + k * kLanes, ld, sums);
    else
      conv_block<kCols, false>(at, kh0, kh1, wk, bias + k * kLanes, acc + k * kLanes, ld, sums);
  }
}

// The conv and LayerNorm of x (in_t; read as its bfloat16 rounding where kRoundIn) through a
// RowRing per thread, tiles of kWide columns and a kNarrow one for a row's last few.
template <typename in_t, bool kRoundIn, typename out_t>
void run(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& gamma,
         const at::Tensor& beta, double eps, bool round_conv, at::Tensor& out) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t blocks = w.size(0), ld = blocks * kLanes;
  const in_t* xp = static_cast<const in_t*>(x.data_ptr());
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const float* gp = gamma.data_ptr<float>();
  const float* betap = beta.data_ptr<float>();
  out_t* op = out.data_ptr<out_t>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    RowRing<in_t, kRoundIn> ring(xp, W, C);
    AlignedFloats acc(kWide * ld), sums(kWide * kLanes);
    const float* rows[kSize];
    int64_t kh0, kh1;
    for (int64_t r = begin; r < end; ++r) {
      ring.window(r / H, H, r % H, rows, &kh0, &kh1);
      const int64_t stride = ring.block_stride();
      for (int64_t w0 = 0; w0 < W;) {
        const int64_t width = W - w0 <= kNarrow ? kNarrow : kWide;
        if (width == kNarrow)
          conv_tile<kNarrow>(rows, kh0, kh1, blocks, stride, wp, bp, round_conv, w0, acc.data(),
                             ld, sums.data());
        else
          conv_tile<kWide>(rows, kh0, kh1, blocks, stride, wp, bp, round_conv, w0, acc.data(), ld,
                           sums.data());
        const int64_t cols = std::min(width, W - w0);
        for (int64_t j = 0; j < cols; j += kGroup)
          norm_group<out_t>(acc.data() + j * ld, sums.data() + j * kLanes, ld,
                            std::min<int64_t>(kGroup, cols - j), gp, betap, e, C,
                            op + (r * W + w0 + j) * C);
        w0 += width;
      }
    }
  });
}

// x: (N, H, W, C) float32 (read as its bfloat16 rounding if round_input) or bfloat16,
// contiguous. weight: (B, 7, 7, 16) float32, the conv's weights in B = ceil(C / 16) blocks of 16
// channels, zero past C; bias: (B * 16,) float32, zero past C; gamma, beta: (C,) float32.
// Returns (N, H, W, C) of out_dtype (float32 or bfloat16).
at::Tensor dwconv7x7_layer_norm(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, const at::Tensor& gamma,
                                const at::Tensor& beta, double eps, bool round_input,
                                bool round_conv, at::ScalarType out_dtype) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu(),
              "dwconv7x7_layer_norm: x must be a contiguous (N, H, W, C) CPU tensor");
  const int64_t C = x.size(3), blocks = (C + kLanes - 1) / kLanes;
  for (const at::Tensor* t : {&gamma, &beta}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == C && t->scalar_type() == at::kFloat &&
                    t->is_contiguous(),
                "dwconv7x7_layer_norm: gamma and beta must be contiguous float32 (C,)");
  }
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == blocks && weight.size(1) == kSize &&
                  weight.size(2) == kSize && weight.size(3) == kLanes &&
                  weight.scalar_type() == at::kFloat && weight.is_contiguous(),
              "dwconv7x7_layer_norm: weight must be a contiguous float32 (ceil(C / 16), 7, 7, 16)");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == blocks * kLanes &&
                  bias.scalar_type() == at::kFloat && bias.is_contiguous(),
              "dwconv7x7_layer_norm: bias must be a contiguous float32 (ceil(C / 16) * 16,)");
  TORCH_CHECK(out_dtype == at::kFloat || out_dtype == at::kBFloat16,
              "dwconv7x7_layer_norm: out_dtype must be float32 or bfloat16");
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  const bool in_f32 = x.scalar_type() == at::kFloat, out_f32 = out_dtype == at::kFloat;
  TORCH_CHECK(in_f32 || x.scalar_type() == at::kBFloat16,
              "dwconv7x7_layer_norm: x must be float32 or bfloat16");
  using BF16 = c10::BFloat16;
  if (in_f32 && !round_input) {
    if (out_f32)
      run<float, false, float>(x, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<float, false, BF16>(x, weight, bias, gamma, beta, eps, round_conv, out);
  } else if (in_f32) {
    if (out_f32)
      run<float, true, float>(x, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<float, true, BF16>(x, weight, bias, gamma, beta, eps, round_conv, out);
  } else {
    if (out_f32)
      run<BF16, false, float>(x, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<BF16, false, BF16>(x, weight, bias, gamma, beta, eps, round_conv, out);
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
