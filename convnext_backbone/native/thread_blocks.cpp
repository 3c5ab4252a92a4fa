// The block's MLP and residual tail for inference, each block of rows computed whole by one
// thread: shortcut + scale * fc2(gelu(fc1(x))) with oneDNN's products
// (mkldnn::_linear_pointwise, the op ops.blocked_residual_mlp calls from Python).
//
// ops.blocked_residual_mlp runs its blocks one after another, each product split over all the
// threads: a thread's rows of the hidden block are then written by one core and read by the
// other in the next product, and every product ends at a barrier. Here the blocks are shared out
// among the threads (at::parallel_for) and each thread runs fc1 + GELU, fc2 and the tail of its
// blocks on its own (oneDNN runs single-threaded inside the parallel region): the hidden block
// stays in the L2 of the core that made it and no thread waits for another until the end. The
// products and the tail are the same ops on the same rows, so the result is the same, bit for
// bit, whichever thread computes a block.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/InferenceMode.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <string>

namespace {

// mkldnn::_linear_pointwise(x, weight, bias, attr, [], algorithm), called boxed: its C++
// signature differs between torch versions, its schema does not.
at::Tensor linear_pointwise(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            const std::string& attr, const std::string& algorithm) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack{x, weight, bias, attr, c10::List<c10::optional<at::Scalar>>(),
                          algorithm};
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

// x: (R, C) and the weights in the compute dtype (weights possibly packed, see ops.packed);
// shortcut: (R, C); scale: (C,) or undefined. Returns (R, C) of out_dtype.
at::Tensor thread_blocked_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                              const at::Tensor& w2, const at::Tensor& b2,
                              const at::Tensor& shortcut, const c10::optional<at::Tensor>& scale,
                              int64_t rows, at::ScalarType out_dtype) {
  TORCH_CHECK(x.dim() == 2 && shortcut.dim() == 2 && x.size(0) == shortcut.size(0),
              "thread_blocked_mlp: x and shortcut must be (rows, C)");
  TORCH_CHECK(rows >= 1, "thread_blocked_mlp: rows must be >= 1");
  const int64_t R = x.size(0);
  at::Tensor out = at::empty(shortcut.sizes(), shortcut.options().dtype(out_dtype));
  const int64_t blocks = (R + rows - 1) / rows;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    c10::InferenceMode inference;  // no autograd here, on whichever thread runs this
    for (int64_t block = begin; block < end; ++block) {
      const int64_t r0 = block * rows, r1 = std::min(R, r0 + rows);
      const at::Tensor hidden = linear_pointwise(x.slice(0, r0, r1), w1, b1, "gelu", "none");
      const at::Tensor y = linear_pointwise(hidden, w2, b2, "none", "");
      at::Tensor o = out.slice(0, r0, r1);
      if (scale.has_value())
        at::addcmul_out(o, shortcut.slice(0, r0, r1), y, *scale);
      else
        at::add_out(o, shortcut.slice(0, r0, r1), y);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(convnext_backbone, m) {
  m.def("thread_blocked_mlp(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, "
        "Tensor shortcut, Tensor? scale, int rows, ScalarType out_dtype) -> Tensor");
}

// Composite: the packed weights are oneDNN tensors (another dispatch key than CPU).
TORCH_LIBRARY_IMPL(convnext_backbone, CompositeExplicitAutograd, m) {
  m.impl("thread_blocked_mlp", &thread_blocked_mlp);
}
