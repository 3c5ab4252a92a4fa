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

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dwconv.h"
#include "vec.h"

namespace {

using namespace convnext_native;  // NOLINT: the vector helpers of vec.h

// LayerNorm of one pixel's C values (two passes over the L1-resident buffer), written to out.
template <typename out_t>
TARGETS void norm_pixel(float* v, const float* gamma, const float* beta, float eps, int64_t C,
                        bool round_conv, out_t* out) {
  const int64_t vec_c = C / kLanes * kLanes;
  if (round_conv) {
    for (int64_t c = 0; c < vec_c; c += kLanes) store_vec(v + c, round_vec(load_vec(v + c)));
    for (int64_t c = vec_c; c < C; ++c) v[c] = round_bf16(v[c]);
  }
  const float mean = sum_of(v, C) / static_cast<float>(C);
  for (int64_t c = 0; c < C; ++c) v[c] -= mean;
  vfloat part = {};
  for (int64_t c = 0; c < vec_c; c += kLanes) {
    const vfloat d = load_vec(v + c);
    part += d * d;
  }
  float var = lane_sum(part);
  for (int64_t c = vec_c; c < C; ++c) var += v[c] * v[c];
  const float rstd = 1.f / std::sqrt(var / static_cast<float>(C) + eps);
  for (int64_t c = 0; c < vec_c; c += kLanes)
    store_vec(out + c, load_vec(v + c) * rstd * load_vec(gamma + c) + load_vec(beta + c));
  for (int64_t c = vec_c; c < C; ++c) store_one(out + c, v[c] * rstd * gamma[c] + beta[c]);
}

template <typename in_t, typename out_t>
void run(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& gamma,
         const at::Tensor& beta, double eps, bool round_conv, at::Tensor& out) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const in_t* xp = static_cast<const in_t*>(x.data_ptr());
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const float* gp = gamma.data_ptr<float>();
  const float* betap = beta.data_ptr<float>();
  out_t* op = out.data_ptr<out_t>();
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(kTile * C);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, h = r % H;
      const in_t* image = xp + n * H * W * C;
      for (int64_t w0 = 0; w0 < W; w0 += kTile) {
        const int64_t cols = std::min(kTile, W - w0);
        conv_tile<in_t>(image, wp, bp, acc.data(), H, W, C, h, w0, cols);
        for (int64_t j = 0; j < cols; ++j)
          norm_pixel<out_t>(acc.data() + j * C, gp, betap, static_cast<float>(eps), C, round_conv,
                            op + (r * W + w0 + j) * C);
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
  if (in_f32 && round_input) {
    const at::Tensor& xr = x;  // the same memory, read through RoundedFloat
    if (out_f32)
      run<RoundedFloat, float>(xr, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<RoundedFloat, c10::BFloat16>(xr, weight, bias, gamma, beta, eps, round_conv, out);
  } else if (in_f32) {
    if (out_f32)
      run<float, float>(x, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<float, c10::BFloat16>(x, weight, bias, gamma, beta, eps, round_conv, out);
  } else {
    if (out_f32)
      run<c10::BFloat16, float>(x, weight, bias, gamma, beta, eps, round_conv, out);
    else
      run<c10::BFloat16, c10::BFloat16>(x, weight, bias, gamma, beta, eps, round_conv, out);
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
