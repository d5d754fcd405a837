/*
 * bnb4_format.h - the bitsandbytes 4-bit format, defined once for C, C++ and CUDA.
 *
 * Everything that decides a byte lives here: the NF4/FP4 codebooks, the float32 decision thresholds
 * of bitsandbytes' CUDA quantizer, the signed dynamic map used for nested absmax, nibble order and
 * block geometry. All constants are hexadecimal float literals copied from the bit patterns the CUDA
 * kernels use (../shared/spec/format.md sections 1, 2.3, 2.4 and Appendix A): decimal literals would
 * round 1 ulp differently for four NF4 thresholds. Tables are macros so each backend can place them
 * where it wants (static const arrays on the CPU, registers or __constant__ memory on the GPU).
 *
 * Depends on nothing (dependency rule: format/ <- ref/ <- cpu/, cuda/ <- core/).
 */
#ifndef BNB4_FORMAT_H
#define BNB4_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define BNB4_HD __host__ __device__ __forceinline__
#else
#define BNB4_HD static inline
#endif

/* Blocksizes bitsandbytes' quantize_4bit accepts. */
#define BNB4_MIN_BLOCKSIZE 32
#define BNB4_MAX_BLOCKSIZE 4096
/* bitsandbytes always double-quantizes absmax in blocks of 256. */
#define BNB4_DEFAULT_NESTED_BLOCKSIZE 256

/* Decoded value of each 4-bit code, as bitsandbytes' CUDA dequantize kernel computes it.
 * FP4: bit 3 is the sign, code 8 decodes to -0.0 (the stored quant_map has +0.0 there). */
#define BNB4_NF4_CODEBOOK_VALUES \
    -0x1p+0f, -0x1.647362p-1f, -0x1.0cd66p-1f, -0x1.94654p-2f, \
    -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0.0f, \
    0x1.45f5fep-4f, 0x1.4995c6p-3f, 0x1.f809bap-3f, 0x1.5a0674p-2f, \
    0x1.c3497p-2f, 0x1.200f56p-1f, 0x1.722766p-1f, 0x1p+0f
#define BNB4_FP4_CODEBOOK_VALUES \
    0.0f, 0x1.555556p-8f, 0x1.555556p-1f, 0x1p+0f, \
    0x1.555556p-2f, 0x1p-1f, 0x1.555556p-3f, 0x1p-2f, \
    -0.0f, -0x1.555556p-8f, -0x1.555556p-1f, -0x1p+0f, \
    -0x1.555556p-2f, -0x1p-1f, -0x1.555556p-3f, -0x1p-2f
#define BNB4_NESTED_CODE_VALUES \
    -0x1.fc6666p-1f, -0x1.f53334p-1f, -0x1.eep-1f, -0x1.e6ccccp-1f, -0x1.df999ap-1f, -0x1.d86666p-1f, \
    -0x1.d13334p-1f, -0x1.cap-1f, -0x1.c2ccccp-1f, -0x1.bb999ap-1f, -0x1.b46666p-1f, -0x1.ad3334p-1f, \
    -0x1.a6p-1f, -0x1.9eccccp-1f, -0x1.97999ap-1f, -0x1.906666p-1f, -0x1.893334p-1f, -0x1.82p-1f, \
    -0x1.7accccp-1f, -0x1.73999ap-1f, -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5ep-1f, -0x1.56ccccp-1f, \
    -0x1.4f999ap-1f, -0x1.486668p-1f, -0x1.413334p-1f, -0x1.3ap-1f, -0x1.32ccccp-1f, -0x1.2b999ap-1f, \
    -0x1.246668p-1f, -0x1.1d3334p-1f, -0x1.16p-1f, -0x1.0eccccp-1f, -0x1.079998p-1f, -0x1.006666p-1f, \
    -0x1.f26664p-2f, -0x1.e4p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f, -0x1.b8ccccp-2f, -0x1.aa6666p-2f, \
    -0x1.9cp-2f, -0x1.8d9998p-2f, -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626666p-2f, -0x1.54p-2f, \
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f, -0x1.0cp-2f, -0x1.fb3332p-3f, \
    -0x1.de6666p-3f, -0x1.c1999ap-3f, -0x1.a4ccccp-3f, -0x1.88p-3f, -0x1.6b3334p-3f, -0x1.4e6666p-3f, \
    -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.fp-4f, -0x1.b66668p-4f, -0x1.93d70ap-4f, -0x1.8851eep-4f, \
    -0x1.7ccccep-4f, -0x1.7147aep-4f, -0x1.65c29p-4f, -0x1.5a3d7p-4f, -0x1.4eb854p-4f, -0x1.433334p-4f, \
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f, -0x1.09999ap-4f, -0x1.fc28f6p-5f, \
    -0x1.e51ebap-5f, -0x1.ce147ap-5f, -0x1.b70a3ep-5f, -0x1.ap-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f, \
    -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c29p-5f, -0x1.fd70a4p-6f, -0x1.cf5c2ap-6f, \
    -0x1.a147aep-6f, -0x1.733334p-6f, -0x1.451ebap-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c29p-7f, \
    -0x1.3e76c8p-7f, -0x1.2c083p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f, -0x1.e978d4p-8f, -0x1.c49ba6p-8f, \
    -0x1.9fbe76p-8f, -0x1.7ae148p-8f, -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f, \
    -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f, -0x1.eecbfep-11f, -0x1.b3d07cp-11f, \
    -0x1.78d5p-11f, -0x1.3dd982p-11f, -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f, \
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f, -0x1.040bfep-17f, -0x1.b43528p-19f, \
    -0x1.27476ep-21f, 0.0f, 0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f, \
    0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f, 0x1.19ce0ap-12f, 0x1.8fc506p-12f, \
    0x1.02de02p-11f, 0x1.3dd982p-11f, 0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f, \
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f, 0x1.0c49bap-8f, 0x1.3126e8p-8f, \
    0x1.56041ap-8f, 0x1.7ae148p-8f, 0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f, \
    0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f, 0x1.d1eb86p-7f, 0x1.170a3ep-6f, \
    0x1.451ebap-6f, 0x1.733334p-6f, 0x1.a147aep-6f, 0x1.cf5c2ap-6f, 0x1.fd70a4p-6f, 0x1.15c29p-5f, \
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f, 0x1.88f5c2p-5f, 0x1.ap-5f, \
    0x1.b70a3ep-5f, 0x1.ce147ap-5f, 0x1.e51ebap-5f, 0x1.fc28f6p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f, \
    0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f, 0x1.4eb854p-4f, 0x1.5a3d7p-4f, \
    0x1.65c29p-4f, 0x1.7147aep-4f, 0x1.7ccccep-4f, 0x1.8851eep-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f, \
    0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f, 0x1.6b3334p-3f, 0x1.88p-3f, \
    0x1.a4ccccp-3f, 0x1.c1999ap-3f, 0x1.de6666p-3f, 0x1.fb3332p-3f, 0x1.0cp-2f, 0x1.1a6668p-2f, \
    0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f, 0x1.626666p-2f, 0x1.70ccccp-2f, \
    0x1.7f3334p-2f, 0x1.8d9998p-2f, 0x1.9cp-2f, 0x1.aa6666p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f, \
    0x1.d59998p-2f, 0x1.e4p-2f, 0x1.f26664p-2f, 0x1.006666p-1f, 0x1.079998p-1f, 0x1.0eccccp-1f, \
    0x1.16p-1f, 0x1.1d3334p-1f, 0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f, \
    0x1.413334p-1f, 0x1.486668p-1f, 0x1.4f999ap-1f, 0x1.56ccccp-1f, 0x1.5ep-1f, 0x1.653334p-1f, \
    0x1.6c6668p-1f, 0x1.73999ap-1f, 0x1.7accccp-1f, 0x1.82p-1f, 0x1.893334p-1f, 0x1.906666p-1f, \
    0x1.97999ap-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3334p-1f, 0x1.b46666p-1f, 0x1.bb999ap-1f, \
    0x1.c2ccccp-1f, 0x1.cap-1f, 0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df999ap-1f, 0x1.e6ccccp-1f, \
    0x1.eep-1f, 0x1.f53334p-1f, 0x1.fc6666p-1f, 0x1p+0f

/* FP4's stored quant_map (bitsandbytes' Python table): identical except +0.0 at index 8. */
#define BNB4_FP4_QUANT_MAP_VALUES \
    0.0f, 0x1.555556p-8f, 0x1.555556p-1f, 0x1p+0f, \
    0x1.555556p-2f, 0x1p-1f, 0x1.555556p-3f, 0x1p-2f, \
    0.0f, -0x1.555556p-8f, -0x1.555556p-1f, -0x1p+0f, \
    -0x1.555556p-2f, -0x1p-1f, -0x1.555556p-3f, -0x1p-2f

/* NF4 thresholds t[0..14] exactly as nvcc rounds the literals in dQuantizeNF4 (ascending).
 * code = #{k : xn > t[k]}; equal to the kernel's decision tree for every non-NaN xn, and NaN
 * fails every comparison, giving code 0 as the tree does. */
#define BNB4_NF4_T0  -0x1.b239b2p-1f
#define BNB4_NF4_T1  -0x1.38a4ep-1f
#define BNB4_NF4_T2  -0x1.d709p-2f
#define BNB4_NF4_T3  -0x1.5bd4ecp-2f
#define BNB4_NF4_T4  -0x1.e079d8p-3f
#define BNB4_NF4_T5  -0x1.1a7178p-3f
#define BNB4_NF4_T6  -0x1.74f0e2p-5f
#define BNB4_NF4_T7  0x1.45f5fep-5f
#define BNB4_NF4_T8  0x1.ec90c6p-4f
#define BNB4_NF4_T9  0x1.a0cfcp-3f
#define BNB4_NF4_T10 0x1.2b05a8p-2f
#define BNB4_NF4_T11 0x1.8ea7f2p-2f
#define BNB4_NF4_T12 0x1.00da06p-1f
#define BNB4_NF4_T13 0x1.491b5ep-1f
#define BNB4_NF4_T14 0x1.b913b2p-1f

/* FP4 magnitude thresholds u[0..6] of dQuantizeFP4 (ascending); r = #{k : |xn| > u[k]} is then
 * mapped to the bit pattern by BNB4_FP4_RANK_TO_CODE (the format's exponent runs backwards). */
#define BNB4_FP4_U0 0x1.555572p-9f
#define BNB4_FP4_U1 0x1.6p-4f
#define BNB4_FP4_U2 0x1.aaaaaap-3f
#define BNB4_FP4_U3 0x1.2aaaaap-2f
#define BNB4_FP4_U4 0x1.aaaaacp-2f
#define BNB4_FP4_U5 0x1.2aaaap-1f
#define BNB4_FP4_U6 0x1.aaaaaap-1f
#define BNB4_FP4_RANK_TO_CODE 0, 1, 6, 7, 4, 5, 2, 3

/* The 4-bit code of a normalised value xn = x * rcp(absmax), as bitsandbytes' CUDA kernel picks it
 * (strict '>' everywhere, so exact ties go to the lower code). */
BNB4_HD unsigned bnb4_nf4_encode(float xn) {
    return (unsigned)(xn > BNB4_NF4_T0) + (unsigned)(xn > BNB4_NF4_T1) + (unsigned)(xn > BNB4_NF4_T2) +
           (unsigned)(xn > BNB4_NF4_T3) + (unsigned)(xn > BNB4_NF4_T4) + (unsigned)(xn > BNB4_NF4_T5) +
           (unsigned)(xn > BNB4_NF4_T6) + (unsigned)(xn > BNB4_NF4_T7) + (unsigned)(xn > BNB4_NF4_T8) +
           (unsigned)(xn > BNB4_NF4_T9) + (unsigned)(xn > BNB4_NF4_T10) + (unsigned)(xn > BNB4_NF4_T11) +
           (unsigned)(xn > BNB4_NF4_T12) + (unsigned)(xn > BNB4_NF4_T13) + (unsigned)(xn > BNB4_NF4_T14);
}

/* The sign comes from xn < 0, so -0.0 and NaN get sign 0 and a tiny negative value gets code 8. */
BNB4_HD unsigned bnb4_fp4_encode(float xn) {
    const unsigned sign = xn < 0.0f ? 8u : 0u;
    const float a = xn < 0.0f ? -xn : xn; /* NaN stays NaN and fails every comparison below */
    const unsigned rank = (unsigned)(a > BNB4_FP4_U0) + (unsigned)(a > BNB4_FP4_U1) +
                          (unsigned)(a > BNB4_FP4_U2) + (unsigned)(a > BNB4_FP4_U3) +
                          (unsigned)(a > BNB4_FP4_U4) + (unsigned)(a > BNB4_FP4_U5) +
                          (unsigned)(a > BNB4_FP4_U6);
    /* rank -> bit pattern 0,1,6,7,4,5,2,3 without a table (device code has no host arrays):
     * ranks 2..7 hold the exponent field counted down from 3, and the mantissa bit alternates. */
    const unsigned magnitude = rank < 2u ? rank : ((((9u - rank) >> 1) << 1) | (rank & 1u));
    return sign | magnitude;
}

/* Geometry: element i of a flat tensor sits in byte i/2, in the HIGH nibble when i is even. */
BNB4_HD unsigned bnb4_nibble_at(const uint8_t *packed, size_t i) {
    const unsigned byte = packed[i >> 1];
    return (i & 1u) ? (byte & 15u) : (byte >> 4);
}

#endif /* BNB4_FORMAT_H */
