// Vector helpers of our kernels (dwconv_norm.cpp, layer_norm_nchw.cpp): 16 float32 lanes as GCC
// vector extensions, loads and stores of float32 and bfloat16, bfloat16 rounding (to nearest
// even, NaN kept, as c10::BFloat16 rounds), sums of lanes, and zeroed float buffers aligned to
// a cache line.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

namespace convnext_native {

constexpr int64_t kLanes = 16;  // floats per vector chunk of channels

typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float))));
typedef uint32_t vuint __attribute__((vector_size(kLanes * sizeof(uint32_t))));
typedef uint16_t vhalf __attribute__((vector_size(kLanes * sizeof(uint16_t))));

#define TARGETS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

// The bits of v read as a To of the same size (std::bit_cast, which C++17 lacks).
template <typename To, typename From>
inline To bits_as(const From& v) {
  static_assert(sizeof(To) == sizeof(From), "bits_as: sizes differ");
  To out;
  std::memcpy(&out, &v, sizeof(out));
  return out;
}

inline vfloat load_vec(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline vfloat load_vec(const c10::BFloat16* p) {  // bfloat16 -> float32 is exact: a shift
  vhalf h;
  std::memcpy(&h, p, sizeof(h));
  return bits_as<vfloat>(vuint(__builtin_convertvector(h, vuint) << 16));
}

// v rounded to bfloat16 (round to nearest even, NaN kept), as float32.
inline vuint round_bits(vfloat v) {
  const vuint u = bits_as<vuint>(v);
  const vuint rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  return v != v ? u : rounded;
}

inline vfloat round_vec(vfloat v) { return bits_as<vfloat>(round_bits(v)); }

inline void store_vec(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }

inline void store_vec(c10::BFloat16* p, vfloat v) {
  const vhalf h = __builtin_convertvector(round_bits(v) >> 16, vhalf);
  std::memcpy(p, &h, sizeof(h));
}

inline float load_one(const float* p) { return *p; }
inline float load_one(const c10::BFloat16* p) { return static_cast<float>(*p); }

inline float round_bf16(float v) { return static_cast<float>(c10::BFloat16(v)); }

inline void store_one(float* p, float v) { *p = v; }
inline void store_one(c10::BFloat16* p, float v) { *p = c10::BFloat16(v); }

typedef float vfloat8 __attribute__((vector_size(8 * sizeof(float))));
typedef float vfloat4 __attribute__((vector_size(4 * sizeof(float))));

// The sum of a vector's lanes, as a tree of halves.
inline float lane_sum(vfloat v) {
  const vfloat8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const vfloat4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) +
                    __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// n floats, zeroed, the first at a 64-byte boundary (std::vector's at 16 bytes: a 16-float
// vector load from it at a multiple of 16 floats would then straddle two cache lines).
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t n)
      : data_(static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t(64)))) {
    std::memset(data_.get(), 0, n * sizeof(float));
  }
  float* data() { return data_.get(); }

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  std::unique_ptr<float, Free> data_;
};

}  // namespace convnext_native
