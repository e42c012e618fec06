// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
// counter-based generator torch's own CUDA kernels use, shared by the CPU and CUDA MaskGIT
// kernels. Plain C++ (no torch headers) so that nvcc compiles it on its own.
//
// A draw is a pure function of (key, counter): every logit/position computes its own noise
// with no state to carry, so results do not depend on threads, blocks or launch order.
// Counter layout used by the MaskGIT kernels: (index within the row, row lo, row hi, stream);
// the key is a 64-bit seed drawn from the torch.Generator for each call.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define WMK_HD __host__ __device__ __forceinline__
#else
#define WMK_HD inline
#endif

namespace wmk {
namespace philox {

struct U32x4 {
  uint32_t x, y, z, w;
};

WMK_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Ten rounds of the Philox4x32 bijection (round constants and key schedule from the paper).
WMK_HD U32x4 philox4x32_10(U32x4 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(kM0, c.x, &hi0);
    const uint32_t lo1 = mulhilo(kM1, c.z, &hi1);
    c = U32x4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
    k0 += kW0;
    k1 += kW1;
  }
  return c;
}

// Four draws for (index, row, stream) under a 64-bit key.
WMK_HD U32x4 draw(uint64_t key, uint32_t index, uint64_t row, uint32_t stream) {
  return philox4x32_10(U32x4{index, static_cast<uint32_t>(row),
                             static_cast<uint32_t>(row >> 32), stream},
                       static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
}

// Uniform in the open interval (0, 1) from the top 23 bits: (n + 0.5) / 2^23 needs 24
// significant bits, so it is exact in float32 and lies in [2^-24, 1 - 2^-24]: never 0 or 1,
// so the logarithms of the samplers stay finite (with 24 bits, n + 0.5 would round up to 1).
WMK_HD float uniform(uint32_t bits) {
  return (static_cast<float>(bits >> 9) + 0.5f) * 1.1920928955078125e-7f;
}

// Uniform in (0, 1) with 53 bits from two draws, for the CPU inverse-CDF sampler: its
// resolution is the smallest probability it can tell apart.
WMK_HD double uniform53(uint32_t hi, uint32_t lo) {
  const uint64_t n = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return (static_cast<double>(n) + 0.5) * 1.1102230246251565e-16;
}

}  // namespace philox
}  // namespace wmk
