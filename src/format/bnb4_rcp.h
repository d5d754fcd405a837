/* bnb4_rcp.h -- CPU emulation of the NVIDIA approximate reciprocal rcp.approx.ftz.f32 (MUFU.RCP).
 *
 * (encoding description: see bnb4_rcp.c)
 */
#ifndef BNB4_RCP_H
#define BNB4_RCP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bit-exact rcp.approx.ftz.f32(x). */
float bnb4_rcp_approx_f32(float x);

/* bits(rcp_hw(1.m)) - bits(RN(1/1.m)) for the 23-bit mantissa m: -1, 0 or +1. */
int bnb4_rcp_approx_diff(uint32_t mantissa23);

/* Bytes of compiled-in data the emulation uses (for tests and docs). */
size_t bnb4_rcp_encoding_size_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* BNB4_RCP_H */
