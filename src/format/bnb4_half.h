/*
 * bnb4_half.h - exact float16 / bfloat16 <-> float32 conversions and flush-to-zero, in portable C.
 *
 * The CPU reference must round exactly as the GPU does: float32 -> float16/bfloat16 is round to
 * nearest even (cvt.rn), and bitsandbytes' kernels are built with --use_fast_math, so float32
 * subnormal inputs and results of its multiplies count as (sign-preserving) zero. Host-only; CUDA
 * code uses the hardware conversions and .ftz instructions instead.
 */
#ifndef BNB4_HALF_H
#define BNB4_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t bnb4_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bnb4_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float bnb4_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1fu) /* inf / NaN (payload kept) */
        return bnb4_bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0)
            return bnb4_bits_f32(sign);
        /* subnormal float16: normalise; every float16 is a normal float32 */
        exp = 1;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            exp--;
        }
        mant &= 0x3ffu;
    }
    return bnb4_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* float32 -> float16, round to nearest even; overflow gives inf, NaN stays a (quiet) NaN. */
static inline uint16_t bnb4_f32_to_f16(float f) {
    const uint32_t x = bnb4_f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf, NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) { /* normal float16: rebias the exponent, round 13 bits away */
        const uint32_t r = ax - 0x38000000u;
        return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
    }
    if (ax < 0x33000000u) /* below 2^-25 (a tie at 2^-25 itself rounds to even zero) */
        return (uint16_t)sign;
    { /* float16 subnormal: units of 2^-24 */
        const uint32_t e = ax >> 23;
        const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e; /* 14 .. 24 */
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u);
        const uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
}

static inline float bnb4_bf16_to_f32(uint16_t b) { return bnb4_bits_f32((uint32_t)b << 16); }

/* float32 -> bfloat16, round to nearest even; NaN stays a (quiet) NaN. */
static inline uint16_t bnb4_f32_to_bf16(float f) {
    const uint32_t x = bnb4_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* Flush a float32 subnormal to zero of the same sign (the GPU's .ftz behaviour). */
static inline float bnb4_ftz(float f) {
    const uint32_t x = bnb4_f32_bits(f);
    return (x & 0x7f800000u) == 0 ? bnb4_bits_f32(x & 0x80000000u) : f;
}

/* fmaxf as the GPU computes it (max.f32): a NaN operand is ignored, quiet or signaling. C's fmaxf returns a
 * NaN for a signaling one (IEEE 754-2008 maxNum), and a float16 / bfloat16 signaling NaN widens to a float32
 * one: the next element would then restart the running max. */
static inline float bnb4_fmax_gpu(float a, float b) { return b != b ? a : a != a ? b : (b > a ? b : a); }

/* a * b as mul.ftz.f32 computes it: subnormal inputs are flushed, and so is a product that, rounded to 24
 * bits with an unbounded exponent, lies below FLT_MIN (tininess after rounding). IEEE's gradual underflow
 * rounds up to FLT_MIN every product less than half of 2^-149 below it; the GPU keeps only those less than a
 * quarter below (the midpoint with FLT_MIN's 24-bit predecessor 2^-126 - 2^-150; a tie rounds to FLT_MIN, the
 * even one) and flushes the rest to the zero of their sign (measured on the H200: FP4's sign of such products,
 * tests/kernels QuantizeFlushesAsTheGpuRoundsFirst). Two floats' product is exact in double. */
static inline float bnb4_mul_ftz(float a, float b) {
    const double p = (double)bnb4_ftz(a) * (double)bnb4_ftz(b);
    return fabs(p) < 0x1p-126 - 0x1p-151 ? (float)copysign(0.0, p) : (float)p;
}

#endif /* BNB4_HALF_H */
