// The exact (erf) GELU of the training MLP's hidden activations, forward and backward, float32:
// gelu(x) = x * Phi(x), Phi(x) = (1 + erf(x / sqrt(2))) / 2, and the backward
// grad * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi), written in place over the
// incoming gradient with its column sums (fc1's bias gradient) in the same pass.
//
// erf is ATen's vectorized one (aten/src/ATen/cpu/vec/vec512/vec512_float.h, erf():
// Abramowitz & Stegun 7.1.26, 1 - t * r(t) * exp(-u^2), t = 1 / (1 + p |u|)), with the same
// constants; exp is Cephes' expf (a degree-7 polynomial after the reduction by ln 2), about
// 1 ulp as Sleef's expf_u10 that ATen calls. The backward reuses exp(-u^2) = exp(-x^2 / 2) for
// phi, where ATen's gelu_backward computes both exps (aten/src/ATen/native/cpu/Activation.cpp,
// GeluBackwardKernelImpl). The values agree with ATen's gelu and gelu_backward to float rounding
// (tests/test_native_gelu.py), not bit for bit.
//
// The backward shares out blocks of kSumRows rows among the threads (each reads the rows it
// wrote in the product before, mostly), and sums each column over a block's rows, then over the
// blocks in order: one fixed order whatever the thread count.
#pragma GCC optimize("fp-contract=fast")  // a * b + c as one FMA where the target has it

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "vec.h"

namespace {

using convnext_native::bits_as;
using convnext_native::kLanes;
using convnext_native::load_vec;
using convnext_native::store_vec;
using convnext_native::vfloat;

typedef int32_t vint __attribute__((vector_size(kLanes * sizeof(int32_t))));

constexpr int64_t kSumRows = 64;  // rows summed into a block sum before the column total

// v with the sign bit of s flipped in (a XOR of the sign bits).
inline vfloat flip_sign(vfloat v, vfloat s) {
  return bits_as<vfloat>(bits_as<vint>(v) ^ (bits_as<vint>(s) & static_cast<int32_t>(0x80000000u)));
}

// exp(x) for x <= 0 (Cephes expf); 0 below -87, where float32 has no normal number for it.
// Only integer and float arithmetic, no vector comparison: GCC lowers a comparison of 16 floats
// to scalar code where the target's vectors are narrower (AVX2), which made this 3x slower
// than ATen's there.
inline vfloat exp_nonpositive(vfloat arg) {
  // |arg| and 87 as bits order as the numbers do (NaN above both): min by the sign of b - c
  const vint b = bits_as<vint>(arg) & 0x7FFFFFFF;
  const int32_t c = 0x42AE0000;  // 87.0f
  const vint over = (c - b) >> 31;  // all ones where |arg| > 87 (or NaN)
  const vfloat x = -bits_as<vfloat>(vint(b - ((b - c) & over)));
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an int
  const vfloat n = (x * 1.44269504088896341f + magic) - magic;
  vfloat r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vfloat y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const vfloat scale = bits_as<vfloat>(vint((__builtin_convertvector(n, vint) + 127) << 23));
  return bits_as<vfloat>(vint(bits_as<vint>(y * scale) & ~over));  // 0 where over
}

struct Phi {
  vfloat cdf;  // Phi(x)
  vfloat e;    // exp(-x^2 / 2)
};

// Phi(x) by ATen's erf of u = x / sqrt(2), and exp(-u^2) it used.
inline Phi phi_of(vfloat x) {
  const vfloat u = x * 0.70710678118654752f;
  const vfloat a = flip_sign(u, u);  // |u|
  const vfloat t = 1.0f / (a * 0.3275911f + 1.0f);
  vfloat r = t * 1.061405429f + -1.453152027f;
  r = r * t + 1.421413741f;
  r = r * t + -0.284496736f;
  r = r * t + 0.254829592f;
  const vfloat e = exp_nonpositive(-(u * u));
  const vfloat erf_abs = (-e * t) * r + 1.0f;
  const vfloat erf = flip_sign(erf_abs, u);
  return {(erf + 1.0f) * 0.5f, e};
}

// grad * (Phi(x) + x phi(x)), and gelu(x) = x Phi(x) into *gelu.
inline vfloat gelu_grad(vfloat grad, vfloat x, vfloat* gelu) {
  const Phi p = phi_of(x);
  *gelu = x * p.cdf;
  return grad * (p.cdf + x * (p.e * 0.3989422804014327f));  // 1 / sqrt(2 pi)
}

// grad[r, :] *= Phi(x) + x phi(x) for the rows [r0, r1); sums (cols,) gets the column sums of
// the result; gelu (or nullptr) gets gelu(x).
TARGETS void gelu_grad_rows(float* grad, const float* x, float* gelu, int64_t r0, int64_t r1,
                            int64_t cols, float* sums) {
  const int64_t full = cols / kLanes * kLanes;
  std::fill(sums, sums + cols, 0.0f);
  for (int64_t r = r0; r < r1; ++r) {
    float* g = grad + r * cols;
    const float* xr = x + r * cols;
    float* out = gelu == nullptr ? nullptr : gelu + r * cols;
    for (int64_t c = 0; c < full; c += kLanes) {
      vfloat act;
      const vfloat d = gelu_grad(load_vec(g + c), load_vec(xr + c), &act);
      store_vec(g + c, d);
      if (out != nullptr) store_vec(out + c, act);
      store_vec(sums + c, load_vec(sums + c) + d);
    }
    if (full < cols) {  // the last partial vector of a row through zero-padded copies
      const int64_t k = cols - full;
      float gin[kLanes] = {}, xin[kLanes] = {}, res[kLanes], act_out[kLanes];
      std::memcpy(gin, g + full, k * sizeof(float));
      std::memcpy(xin, xr + full, k * sizeof(float));
      vfloat act;
      store_vec(res, gelu_grad(load_vec(gin), load_vec(xin), &act));
      store_vec(act_out, act);
      std::memcpy(g + full, res, k * sizeof(float));
      if (out != nullptr) std::memcpy(out + full, act_out, k * sizeof(float));
      for (int64_t j = 0; j < k; ++j) sums[full + j] += res[j];
    }
  }
}

void check_2d(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous() && t.scalar_type() == at::kFloat &&
                  t.device().is_cpu(),
              "convnext_backbone GELU: ", what, " must be a contiguous 2-D float32 CPU tensor");
}

// grad (R, H) becomes grad * gelu'(x), in place; returns its column sums (H,). gelu_out, where
// given, gets gelu(x) (the blocked MLP's backward needs it for fc2's weight gradient).
at::Tensor gelu_backward_sum_(at::Tensor& grad, const at::Tensor& x,
                              const c10::optional<at::Tensor>& gelu_out) {
  check_2d(grad, "grad");
  check_2d(x, "x");
  TORCH_CHECK(grad.sizes() == x.sizes(), "convnext_backbone GELU: grad and x differ in shape");
  float* act = nullptr;
  if (gelu_out.has_value()) {
    check_2d(*gelu_out, "gelu_out");
    TORCH_CHECK(gelu_out->sizes() == x.sizes(),
                "convnext_backbone GELU: gelu_out and x differ in shape");
    act = gelu_out->data_ptr<float>();
  }
  const int64_t rows = x.size(0), cols = x.size(1);
  const int64_t blocks = (rows + kSumRows - 1) / kSumRows;
  if (blocks == 0) return at::zeros({cols}, x.options());
  // one row of column sums per block of kSumRows rows, whichever thread computes it
  at::Tensor partial = at::empty({blocks, cols}, x.options());
  float* g = grad.data_ptr<float>();
  const float* in = x.data_ptr<float>();
  float* p = partial.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      gelu_grad_rows(g, in, act, b * kSumRows, std::min(rows, (b + 1) * kSumRows), cols,
                     p + b * cols);
  });
  at::Tensor sums = partial[0].clone();
  float* s = sums.data_ptr<float>();
  for (int64_t b = 1; b < blocks; ++b)  // the blocks' sums in order
    for (int64_t c = 0; c < cols; ++c) s[c] += p[b * cols + c];
  return sums;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(convnext_backbone, m) {
  m.def("gelu_backward_sum_(Tensor(a!) grad, Tensor x, Tensor(b!)? gelu_out) -> Tensor");
}

TORCH_LIBRARY_IMPL(convnext_backbone, CPU, m) {
  m.impl("gelu_backward_sum_", &gelu_backward_sum_);
}
