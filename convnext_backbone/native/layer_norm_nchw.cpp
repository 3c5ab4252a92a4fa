// A stage output of the backbone: LayerNorm over channels of an NHWC tensor, written as
// contiguous NCHW, in one pass, for inference.
//
// The plain ops normalise into a new NHWC tensor and then copy it to NCHW memory (what mmcv's
// ops need), a strided transpose that reads and writes the whole map a second time. Here each
// row (n, h) is read twice while it is in the caches, once for each pixel's mean and variance
// and once to normalise tiles of 16 pixels x 16 channels, transposed in registers and written
// as 16 runs of 16 contiguous values of the NCHW output. Rows are split over ATen's intra-op
// threads. The statistics are float32 whatever the input dtype, as ATen's CPU
// layer_norm computes them; the output has the input's dtype.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vec.h"

namespace {

using namespace convnext_native;  // NOLINT: the vector helpers of vec.h

// Swaps the off-diagonal s x s blocks of each 2s x 2s block of the 16 x 16 matrix r[0..16) (rows
// i and i + s, i & s == 0); after s = 8, 4, 2 and 1 the matrix is transposed.
#define CN_LO(s, l) (((l) & (s)) ? 16 + (l) - (s) : (l))
#define CN_HI(s, l) (((l) & (s)) ? 16 + (l) : (l) + (s))
#define CN_LANES(F, s)                                                                        \
  F(s, 0), F(s, 1), F(s, 2), F(s, 3), F(s, 4), F(s, 5), F(s, 6), F(s, 7), F(s, 8), F(s, 9),    \
      F(s, 10), F(s, 11), F(s, 12), F(s, 13), F(s, 14), F(s, 15)
#define CN_STAGE(s)                                                        \
  for (int i = 0; i < 16; ++i) {                                           \
    if (i & (s)) continue;                                                 \
    const vfloat a = r[i], b = r[i + (s)];                                 \
    r[i] = __builtin_shufflevector(a, b, CN_LANES(CN_LO, s));              \
    r[i + (s)] = __builtin_shufflevector(a, b, CN_LANES(CN_HI, s));        \
  }

inline void transpose16(vfloat* r) {
  CN_STAGE(8)
  CN_STAGE(4)
  CN_STAGE(2)
  CN_STAGE(1)
}

// Per pixel w of a row x (W pixels of C values): mean[w] and rstd[w] = 1 / sqrt(var + eps),
// the variance about the mean, in float32.
template <typename in_t>
TARGETS void row_moments(const in_t* x, int64_t W, int64_t C, float eps, float* mean,
                         float* rstd) {
  const int64_t vec_c = C / kLanes * kLanes;
  for (int64_t w = 0; w < W; ++w) {
    const in_t* p = x + w * C;
    vfloat part = {};
    for (int64_t c = 0; c < vec_c; c += kLanes) part += load_vec(p + c);
    float s = lane_sum(part);
    for (int64_t c = vec_c; c < C; ++c) s += static_cast<float>(p[c]);
    const float m = s / static_cast<float>(C);
    vfloat sq = {};
    for (int64_t c = 0; c < vec_c; c += kLanes) {
      const vfloat d = load_vec(p + c) - m;
      sq += d * d;
    }
    float var = lane_sum(sq);
    for (int64_t c = vec_c; c < C; ++c) {
      const float d = static_cast<float>(p[c]) - m;
      var += d * d;
    }
    mean[w] = m;
    rstd[w] = 1.f / std::sqrt(var / static_cast<float>(C) + eps);
  }
}

// out[c * HW + w] = (x[w * C + c] - mean[w]) * rstd[w] * gamma[c] + beta[c] for one row: tiles
// of 16 pixels x 16 channels are transposed in registers and stored as 16 runs of 16 pixels;
// the pixels and channels beyond the last full tile one by one.
template <typename in_t, typename out_t>
TARGETS void row_to_nchw(const in_t* x, const float* mean, const float* rstd, const float* gamma,
                         const float* beta, int64_t W, int64_t C, int64_t HW, out_t* out) {
  const int64_t vec_c = C / kLanes * kLanes, vec_w = W / kLanes * kLanes;
  for (int64_t w0 = 0; w0 < vec_w; w0 += kLanes) {
    const vfloat m = load_vec(mean + w0), s = load_vec(rstd + w0);
    for (int64_t c0 = 0; c0 < vec_c; c0 += kLanes) {
      vfloat r[16];
      for (int j = 0; j < 16; ++j) r[j] = load_vec(x + (w0 + j) * C + c0);
      transpose16(r);
      for (int k = 0; k < 16; ++k)
        store_vec(out + (c0 + k) * HW + w0, (r[k] - m) * s * gamma[c0 + k] + beta[c0 + k]);
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    const int64_t w_begin = c < vec_c ? vec_w : 0;
    for (int64_t w = w_begin; w < W; ++w)
      store_one(out + c * HW + w,
                (static_cast<float>(x[w * C + c]) - mean[w]) * rstd[w] * gamma[c] + beta[c]);
  }
}

template <typename scalar_t>
void run(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, double eps,
         at::Tensor& out) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const scalar_t* xp = static_cast<const scalar_t*>(x.data_ptr());
  const float* gp = gamma.data_ptr<float>();
  const float* bp = beta.data_ptr<float>();
  scalar_t* op = static_cast<scalar_t*>(out.data_ptr());
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> mean(W), rstd(W);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, h = r % H;
      const scalar_t* row = xp + r * W * C;
      row_moments<scalar_t>(row, W, C, static_cast<float>(eps), mean.data(), rstd.data());
      row_to_nchw<scalar_t, scalar_t>(row, mean.data(), rstd.data(), gp, bp, W, C, H * W,
                                      op + (n * C * H + h) * W);  // out[n, 0, h, 0]
    }
  });
}

// x: (N, H, W, C) float32 or bfloat16, contiguous. gamma, beta: (C,) float32.
// Returns (N, C, H, W), contiguous, of x's dtype.
at::Tensor layer_norm_nchw(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                           double eps) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu(),
              "layer_norm_nchw: x must be a contiguous (N, H, W, C) CPU tensor");
  const int64_t C = x.size(3);
  for (const at::Tensor* t : {&gamma, &beta}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == C && t->scalar_type() == at::kFloat &&
                    t->is_contiguous(),
                "layer_norm_nchw: gamma and beta must be contiguous float32 (C,)");
  }
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "layer_norm_nchw: x must be float32 or bfloat16");
  at::Tensor out = at::empty({x.size(0), C, x.size(1), x.size(2)}, x.options());
  if (x.scalar_type() == at::kFloat)
    run<float>(x, gamma, beta, eps, out);
  else
    run<c10::BFloat16>(x, gamma, beta, eps, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(convnext_backbone, m) {
  m.def("layer_norm_nchw(Tensor x, Tensor gamma, Tensor beta, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(convnext_backbone, CPU, m) {
  m.impl("layer_norm_nchw", &layer_norm_nchw);
}
