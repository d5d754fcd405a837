/* bnb4_rcp.h -- bit-exact CPU emulation of the NVIDIA approximate reciprocal rcp.approx.ftz.f32
 * (SASS MUFU.RCP), which bitsandbytes' fast-math kernels use for 1.0f / absmax.
 *
 * Encoding: not a table of results but the hardware's own algorithm, recovered from the measured
 * data (shared/spec/rcp-approx.md). For x = 1.m the 23-bit mantissa splits into a segment s (top 7
 * bits) and an offset i (low 16 bits); the unit evaluates the quadratic
 *     C0[s] - C1[s]*i + C2[s]*sq(i)      (fixed point, 15 bits below the result's ulp, plus a
 *                                          constant; truncated to 24 bits)
 * where sq(i) comes from a truncated squarer that drops the partial-product columns below 2^17.
 * C0/C1/C2 are 26/16/10-bit per-segment coefficients (128 segments, the widths of Oberman & Siu's
 * multifunction interpolator), 1024 bytes in all. The model reproduces all 2^23 measured mantissas
 * exactly (tests/unit/test_rcp.c proves it against tests/data/rcp_approx_diff.i8.gz), so it is both
 * exact and ~2000x smaller than a 2-bit table, needs no initialisation and is thread-safe (pure
 * function of constant data). The result of 1.m only depends on the mantissa; the exponent is
 * negated around it, with flush-to-zero of results that would be subnormal. bnb4_rcp_approx_f32 was
 * also compared with rcp.approx.ftz.f32 on an H100 (sm_90, CUDA 13.0) for all 2^32 input bit
 * patterns, negative inputs, zeros, subnormals, infinities and NaNs included: no difference.
 */
#ifndef BNB4_RCP_H
#define BNB4_RCP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bit-exact rcp.approx.ftz.f32(x):
 *   +-0 and +-subnormal (flushed) -> +-inf;  +-inf -> +-0;  NaN -> NaN (0x7fffffff);
 *   normal x -> the hardware reciprocal of its magnitude, sign of x (the unit is sign-symmetric);
 *   results below FLT_MIN (|x| > 2^126, except 2^126 itself) are flushed to a signed zero. */
float bnb4_rcp_approx_f32(float x);

/* bits(rcp_hw(1.m)) - bits(RN(1/1.m)) for the 23-bit mantissa m (higher bits ignored): -1, 0, +1. */
int bnb4_rcp_approx_diff(uint32_t mantissa23);

/* Bytes of compiled-in data the emulation uses (for tests and docs). */
size_t bnb4_rcp_encoding_size_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* BNB4_RCP_H */
