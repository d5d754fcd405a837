#include "bnb4_rcp.h"

#include <string.h>

extern const uint32_t bnb4_rcp_diff_packed[1u << 19];

int bnb4_rcp_approx_diff(uint32_t mantissa23)
{
    uint32_t m = mantissa23 & 0x7fffffu;
    uint32_t code = (bnb4_rcp_diff_packed[m >> 4] >> (2u * (m & 15u))) & 3u;
    return code == 3u ? -1 : (int)code;
}

static uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static float bits_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

/* Bits of rcp_hw(1.m): a float in (0.5, 1]. */
static uint32_t rcp_mantissa_bits(uint32_t m)
{
    if (m == 0)
        return 0x3f800000u; /* 1/1.0 is exact */
    /* 2^24 / 1.m = 2^47 / (2^23 + m) lies in (2^23, 2^24): an exponent-126 float's
     * significand in units of its ulp (2^-24). Round to nearest (no ties possible). */
    uint64_t den = (1ull << 23) + m;
    uint64_t q = (1ull << 47) / den;
    uint64_t r = (1ull << 47) - q * den;
    if (2 * r >= den) q++;
    int32_t sig = (int32_t)q + bnb4_rcp_approx_diff(m);
    return (126u << 23) | ((uint32_t)sig & 0x7fffffu);
}

float bnb4_rcp_approx_f32(float x)
{
    uint32_t u = float_bits(x);
    uint32_t sign = u & 0x80000000u;
    uint32_t exp_field = (u >> 23) & 0xffu;
    uint32_t m = u & 0x7fffffu;
    if (exp_field == 0) /* zero or subnormal, flushed: signed infinity */
        return bits_float(sign | 0x7f800000u);
    if (exp_field == 255)
        return m ? bits_float(0x7fffffffu) /* NVIDIA canonical NaN */ : bits_float(sign);
    uint32_t t = rcp_mantissa_bits(m);
    /* 1/(1.m * 2^(e-127)) = t * 2^-(e-127); t's exponent is 126 or 127 and e >= 1, so the
     * result exponent is at most 253: no overflow, only underflow (flushed to zero). */
    int32_t exp_out = (int32_t)(t >> 23) - ((int32_t)exp_field - 127);
    if (exp_out <= 0)
        return bits_float(sign);
    return bits_float(sign | ((uint32_t)exp_out << 23) | (t & 0x7fffffu));
}

size_t bnb4_rcp_encoding_size_bytes(void) { return sizeof bnb4_rcp_diff_packed; }
