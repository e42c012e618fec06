// Branch-free float math the CPU kernels vectorize: Cephes' expf, on a float or on an 8-lane
// GCC vector (csrc/cpu/attention.cpp runs it on explicit vectors, csrc/cpu/maskgit.cpp on
// scalars in loops the compiler vectorizes).
#pragma once

#include <cstdint>
#include <cstring>

namespace wmk {

// Forced inlining lets the AVX2 clones of the kernels compile their whole call tree for AVX2;
// a helper left out of line would be built for the baseline ISA only.
#define WMK_INLINE inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

// out = 2^k for integral k in [-126, 127], built in the exponent bits (by reference: no
// vector passes through the call ABI).
WMK_INLINE void exp2_int(const float& k, float& out) {
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  std::memcpy(&out, &bits, sizeof(out));
}
WMK_INLINE void exp2_int(const v8f& k, v8f& out) {
  const v8i bits = (__builtin_convertvector(k, v8i) + 127) << 23;
  std::memcpy(&out, &bits, sizeof(out));
}

// exp(x) for x in [-87, 88] (the caller clamps): Cephes' expf polynomial after the range
// reduction x = k ln2 + r, |r| <= ln2 / 2 (relative error ~2e-7), with k rounded by the
// 1.5 * 2^23 trick (no libm call) and 2^k built in the exponent bits. F: float or v8f, in
// place so that no vector passes through the call ABI.
template <typename F>
WMK_INLINE void exp_cephes(F& x) {
  const F k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const F r = x - k * 0.693359375f + k * 2.12194440e-4f;
  F y = F{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  F pow2;
  exp2_int(k, pow2);
  x = y * pow2;
}

}  // namespace wmk
