// __half and __nv_bfloat16 of the SIMT emulation (tests/cuda_sim/simt.h): storage types
// with the CUDA conversion functions, bit-exact: round to nearest even, overflow to
// infinity, subnormals kept, any NaN to the canonical NaN 0x7fff that the GPU produces.
#pragma once

#include <stdint.h>

#include <bit>

namespace wmk_sim {

// std::bit_cast is the one bit cast of the emulation (simt.h's __float_as_uint too); torch's
// extension build compiles it as C++20.
inline uint32_t f32_bits(float f) { return std::bit_cast<uint32_t>(f); }
inline float f32_from(uint32_t u) { return std::bit_cast<float>(u); }

// F. Giesen's float_to_half_fast3_rtne: the subnormal range rounds through one float add
// (the FPU's round-to-nearest-even), the normal range by adding half an ulp plus the odd bit.
inline uint16_t f32_to_f16(float f) {
  const uint32_t f16_overflow = (127 + 16) << 23;             // 65536.0f
  const uint32_t denorm_magic = ((127 - 15) + (23 - 10) + 1) << 23;  // 0.5f
  uint32_t x = f32_bits(f);
  const uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint16_t h;
  if (x > 0x7f800000u) return 0x7fff;
  if (x >= f16_overflow) {
    h = 0x7c00;
  } else if (x < (113u << 23)) {  // below 2^-14: an fp16 subnormal or zero
    h = static_cast<uint16_t>(f32_bits(f32_from(x) + f32_from(denorm_magic)) - denorm_magic);
  } else {
    const uint32_t odd = (x >> 13) & 1u;
    x += ((15u - 127u) << 23) + 0xfffu + odd;
    h = static_cast<uint16_t>(x >> 13);
  }
  return static_cast<uint16_t>(h | (sign >> 16));
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return f32_from(sign | 0x7f800000u | (man << 13));
  if (exp != 0) return f32_from(sign | ((exp + 112u) << 23) | (man << 13));
  return (sign ? -1.0f : 1.0f) * static_cast<float>(man) * 5.9604644775390625e-8f;  // 2^-24
}

inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_to_f32(uint16_t b) { return f32_from(static_cast<uint32_t>(b) << 16); }

}  // namespace wmk_sim

struct __half {
  uint16_t x;
};

struct __nv_bfloat16 {
  uint16_t x;
};

inline float __half2float(__half h) { return wmk_sim::f16_to_f32(h.x); }
inline __half __float2half_rn(float f) { return __half{wmk_sim::f32_to_f16(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return wmk_sim::bf16_to_f32(b.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  return __nv_bfloat16{wmk_sim::f32_to_bf16(f)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
