/*
 * kernels_avx512.c - AVX-512 (F/BW/VL) kernels, plus AVX512-BF16 dot products where the CPU has them.
 * Compiled with only this level's flags (cpu.cmake); called only after dispatch saw the features
 * (the bfloat16 ones only when cpu_features.c found AVX512-BF16).
 *
 * Decoding: the 16-entry codebook lives in one zmm and vpermps looks codes up, using only the low 4
 * bits of each 32-bit index, so nibbles need shifting but never masking.
 *
 *  - quantize_*__avx512: absmax by vmaxps (ignores NaN like fmaxf), the GPU reciprocal once per block
 *    (bnb4_rcp_approx_f32, for 16 blocks at a time in 16 lanes), then the code by a 4-step binary search over the kernel's float32
 *    thresholds (equal to counting them, bnb4_format.h); FTZ needs no per-element work when absmax is
 *    normal (argued at the fast path), else compare-and-zero. Nibble pairs packed by 64-bit shifts,
 *    vpermt2d and vpmovdb. Byte-exact with the reference.
 *  - quantize_nested_8bit__avx512: the reference's 7-step search of the 256-entry signed map in 16
 *    lanes, map entries looked up from 16 registers (lookup256). Byte-exact.
 *  - dequantize_*__avx512: f32(code * scale) with RNE conversions; a block whose scale could make a
 *    product subnormal (|scale| < 2^-118, NaN) goes to the scalar FTZ path, so the fast path needs no
 *    per-element flush. Bit-exact.
 *  - gemv/gemm "direct" (m <= 8, K a multiple of 128 and of the blocksize): streams the packed weight
 *    once, 4 rows at a time, prefetching a few row groups ahead into L2. A 64-byte load holds 128 codes;
 *    lane l of nibble plane k (shift 4k) is element 8l + (k^1), so X is pre-permuted to that order and
 *    each plane costs one shift + one vpermps + one FMA per X row. The block scales are applied once
 *    per 128-element chunk as a per-lane vector. bfloat16 activations: the same walk in 16-bit lanes
 *    with vpermw + vdpbf16ps (half the vector work; see direct_dot_bf16).
 *  - gemm "panel" (float32/float16 activations, m > 8, K a multiple of 128 and of the blocksize): weights
 *    decoded once per 32 columns x 128 K, X packed k-major, a 32-row x 8-column broadcast-FMA
 *    micro-kernel (see the section).
 *  - gemm "tile" (any other shape): the shared driver (cpu_gemm_tile.c) with a 4x4 float32
 *    FMA micro-kernel, or for bfloat16 activations a 4x4 vdpbf16ps micro-kernel on weights rounded to
 *    bfloat16 (what bitsandbytes computes with for bfloat16: dequantize to bfloat16, then matmul).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "bnb4_format.h"
#include "bnb4_half.h"
#include "bnb4_rcp.h"
#include "bnb4_ref.h"
#include "col_panel.h"
#include "cpu_internal.h"
#include "direct_scales.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ---- conversions ----------------------------------------------------------------------------------------- */

ALWAYS_INLINE __m512 load16_f32(const void *src, bnb4_dtype dt, size_t i) {
    if (dt == BNB4_F32)
        return _mm512_loadu_ps((const float *)src + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)src + i));
    if (dt == BNB4_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* float32 -> bfloat16 round-to-nearest-even, NaN -> quiet NaN: bnb4_f32_to_bf16 in 16 lanes. */
ALWAYS_INLINE __m256i f32_to_bf16_rne(__m512 v) {
    const __m512i x = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

ALWAYS_INLINE void store16(void *dst, bnb4_dtype dt, size_t i, __m512 v) {
    if (dt == BNB4_F32)
        _mm512_storeu_ps((float *)dst + i, v);
    else if (dt == BNB4_F16)
        _mm256_storeu_si256((__m256i *)((uint16_t *)dst + i), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    else
        _mm256_storeu_si256((__m256i *)((uint16_t *)dst + i), f32_to_bf16_rne(v));
}

/* ---- quantize ----------------------------------------------------------------------------------------------- */

static const float nf4_thresholds[16] = {BNB4_NF4_T0,  BNB4_NF4_T1,  BNB4_NF4_T2,  BNB4_NF4_T3,
                                         BNB4_NF4_T4,  BNB4_NF4_T5,  BNB4_NF4_T6,  BNB4_NF4_T7,
                                         BNB4_NF4_T8,  BNB4_NF4_T9,  BNB4_NF4_T10, BNB4_NF4_T11,
                                         BNB4_NF4_T12, BNB4_NF4_T13, BNB4_NF4_T14, INFINITY};
static const float fp4_thresholds[16] = {BNB4_FP4_U0, BNB4_FP4_U1, BNB4_FP4_U2, BNB4_FP4_U3, BNB4_FP4_U4,
                                         BNB4_FP4_U5, BNB4_FP4_U6, INFINITY,    INFINITY,    INFINITY,
                                         INFINITY,    INFINITY,    INFINITY,    INFINITY,    INFINITY,
                                         INFINITY};
static const int32_t fp4_rank_to_code[16] = {BNB4_FP4_RANK_TO_CODE, 0, 0, 0, 0, 0, 0, 0, 0};

/* ---- rcp.approx in 16 lanes --------------------------------------------------------------------------------
 * bnb4_rcp_approx_f32 (src/format/bnb4_rcp.c, the GPU reciprocal) step for step: the per-segment
 * coefficients looked up from registers (lookup128), the hardware's truncated squarer as its 15 partial
 * product rows, the sum in 64-bit lanes, then the same exponent, flush and special-value handling.
 * Bit-exact with the scalar function for every input (tests/kernels: all mantissas, the exponents
 * around the flush boundaries, specials). */
extern const uint32_t bnb4_rcp_c0[128];
extern const uint16_t bnb4_rcp_c1[128];
extern const uint16_t bnb4_rcp_c2[128];

typedef struct {
    __m512i c0[8], c12[8]; /* c0 and (c1 | c2 << 16) per segment, 16 segments a register */
} rcp_tables;

static void rcp_tables_load(rcp_tables *t) {
    uint32_t c12[128];
    for (int i = 0; i < 128; i++)
        c12[i] = (uint32_t)bnb4_rcp_c1[i] | (uint32_t)bnb4_rcp_c2[i] << 16;
    for (int i = 0; i < 8; i++) {
        t->c0[i] = _mm512_loadu_si512(bnb4_rcp_c0 + 16 * i);
        t->c12[i] = _mm512_loadu_si512(c12 + 16 * i);
    }
}

/* table[idx] for idx in 0..127: vpermt2d by the low 5 bits, bits 5 and 6 pick among the 4 results. */
ALWAYS_INLINE __m512i lookup128(const __m512i table[8], __m512i idx) {
    const __m512i r0 = _mm512_permutex2var_epi32(table[0], idx, table[1]);
    const __m512i r1 = _mm512_permutex2var_epi32(table[2], idx, table[3]);
    const __m512i r2 = _mm512_permutex2var_epi32(table[4], idx, table[5]);
    const __m512i r3 = _mm512_permutex2var_epi32(table[6], idx, table[7]);
    const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
    const __mmask16 b6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
    return _mm512_mask_blend_epi32(b6, _mm512_mask_blend_epi32(b5, r0, r1), _mm512_mask_blend_epi32(b5, r2, r3));
}

/* (c0 << 13) + 2023 + c2 * sq - c1 * off, >> 15, for the 8 lanes of one half (64-bit arithmetic). */
ALWAYS_INLINE __m512i rcp_sum_half(__m256i c0, __m256i c12, __m256i sq, __m256i off) {
    const __m512i c0q = _mm512_cvtepu32_epi64(c0), c12q = _mm512_cvtepu32_epi64(c12);
    const __m512i c1q = _mm512_and_si512(c12q, _mm512_set1_epi64(0xffff)), c2q = _mm512_srli_epi64(c12q, 16);
    __m512i sum = _mm512_add_epi64(_mm512_slli_epi64(c0q, 13), _mm512_set1_epi64(2023));
    sum = _mm512_add_epi64(sum, _mm512_mul_epu32(c2q, _mm512_cvtepu32_epi64(sq)));
    sum = _mm512_sub_epi64(sum, _mm512_mul_epu32(c1q, _mm512_cvtepu32_epi64(off)));
    return _mm512_srli_epi64(sum, 15);
}

ALWAYS_INLINE __m512 rcp_approx16(const rcp_tables *t, __m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i sign = _mm512_and_si512(u, _mm512_set1_epi32((int)0x80000000u));
    const __m512i e = _mm512_and_si512(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(0xff));
    const __m512i m = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffff));
    const __m512i seg = _mm512_srli_epi32(m, 16), off = _mm512_and_si512(m, _mm512_set1_epi32(0xffff));
    /* truncated_square_high(off) */
    __m512i sq = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int a = 1; a < 16; a++)
        sq = _mm512_mask_add_epi32(sq, _mm512_test_epi32_mask(off, _mm512_set1_epi32(1 << a)), sq,
                                   _mm512_srl_epi32(off, _mm_cvtsi32_si128(16 - a)));
    sq = _mm512_sub_epi32(sq, _mm512_and_si512(_mm512_srli_epi32(off, 8), _mm512_set1_epi32(1)));
    sq = _mm512_srli_epi32(sq, 1);
    const __m512i c0 = lookup128(t->c0, seg), c12 = lookup128(t->c12, seg);
    const __m512i lo = rcp_sum_half(_mm512_castsi512_si256(c0), _mm512_castsi512_si256(c12), _mm512_castsi512_si256(sq),
                                    _mm512_castsi512_si256(off));
    const __m512i hi = rcp_sum_half(_mm512_extracti64x4_epi64(c0, 1), _mm512_extracti64x4_epi64(c12, 1),
                                    _mm512_extracti64x4_epi64(sq, 1), _mm512_extracti64x4_epi64(off, 1));
    const __m512i sig = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo)), _mm512_cvtepi64_epi32(hi), 1);
    /* t = rcp_hw(1.m) in (0.5, 1]: exponent field 126, or 127 for exactly 1.0 */
    const __m512i tv = _mm512_mask_mov_epi32(
        _mm512_or_si512(_mm512_set1_epi32(126 << 23), _mm512_and_si512(sig, _mm512_set1_epi32(0x7fffff))),
        _mm512_cmpeq_epi32_mask(sig, _mm512_set1_epi32(1 << 24)), _mm512_set1_epi32(0x3f800000));
    const __m512i exp_out = _mm512_sub_epi32(_mm512_srli_epi32(tv, 23), _mm512_sub_epi32(e, _mm512_set1_epi32(127)));
    __m512i r = _mm512_or_si512(sign, _mm512_or_si512(_mm512_slli_epi32(exp_out, 23), _mm512_and_si512(tv, _mm512_set1_epi32(0x7fffff))));
    r = _mm512_mask_mov_epi32(r, _mm512_cmple_epi32_mask(exp_out, _mm512_setzero_si512()), sign); /* flushed */
    r = _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512()),              /* 0, subnormal */
                              _mm512_or_si512(sign, _mm512_set1_epi32(0x7f800000)));
    const __mmask16 special = _mm512_cmpeq_epi32_mask(e, _mm512_set1_epi32(255));                 /* inf, NaN */
    r = _mm512_mask_mov_epi32(r, special, _mm512_mask_mov_epi32(sign, _mm512_test_epi32_mask(m, m), _mm512_set1_epi32(0x7fffffff)));
    return _mm512_castsi512_ps(r);
}

void bnb4_avx512_rcp_approx(const float *x, size_t n, float *out) {
    rcp_tables t;
    rcp_tables_load(&t);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 live = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(out + i, live, rcp_approx16(&t, _mm512_maskz_loadu_ps(live, x + i)));
    }
}

/* Constants of the code search, loaded once per call (kept in registers across the block loop). */
typedef struct {
    __m512 t;                 /* thresholds, padded with +inf */
    __m512i rank_to_code;     /* FP4 rank -> bit pattern */
    __m512i one, two, three, four, seven, eight;
    __m512 fmin, nfmin;       /* +-FLT_MIN: below it in magnitude a value is subnormal (flushed) */
} code_consts;

/* #{k : xn > t[k]} for ascending t[0..14] as a binary search (NaN fails every compare: 0); measured
 * faster than 15 independent compares on Zen 4. */
ALWAYS_INLINE __m512i nf4_codes(__m512 xn, const code_consts *k) {
    __m512i c = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(xn, _mm512_permutexvar_ps(k->seven, k->t), _CMP_GT_OQ), k->eight);
    c = _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(xn, _mm512_permutexvar_ps(_mm512_add_epi32(c, k->three), k->t), _CMP_GT_OQ),
                              c, k->four);
    c = _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(xn, _mm512_permutexvar_ps(_mm512_add_epi32(c, k->one), k->t), _CMP_GT_OQ),
                              c, k->two);
    return _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(xn, _mm512_permutexvar_ps(c, k->t), _CMP_GT_OQ), c, k->one);
}

/* bnb4_fp4_encode for a given sign mask: rank of |xn| among u[0..6], rank -> bit pattern by table. */
ALWAYS_INLINE __m512i fp4_codes_signed(__m512 xn, __mmask16 neg, const code_consts *k) {
    const __m512 a = _mm512_abs_ps(xn);
    __m512i r = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(a, _mm512_permutexvar_ps(k->three, k->t), _CMP_GT_OQ), k->four);
    r = _mm512_mask_add_epi32(r, _mm512_cmp_ps_mask(a, _mm512_permutexvar_ps(_mm512_add_epi32(r, k->one), k->t), _CMP_GT_OQ),
                              r, k->two);
    r = _mm512_mask_add_epi32(r, _mm512_cmp_ps_mask(a, _mm512_permutexvar_ps(r, k->t), _CMP_GT_OQ), r, k->one);
    const __m512i code = _mm512_permutexvar_epi32(r, k->rank_to_code);
    return _mm512_mask_or_epi32(code, neg, code, k->eight);
}

/* bnb4_fp4_encode: the sign is xn < 0 (so -0.0 and NaN are positive). */
ALWAYS_INLINE __m512i fp4_codes(__m512 xn, const code_consts *k) {
    return fp4_codes_signed(xn, _mm512_cmp_ps_mask(xn, _mm512_setzero_ps(), _CMP_LT_OQ), k);
}

/* bnb4_ftz: a subnormal becomes the zero of its sign. */
ALWAYS_INLINE __m512 ftz_signed(__m512 v, __m512 fmin) {
    const __mmask16 sub = _mm512_cmp_ps_mask(_mm512_abs_ps(v), fmin, _CMP_LT_OQ);
    return _mm512_mask_mov_ps(v, sub, _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
}

/* p = x * y's lanes at +-FLT_MIN through bnb4_cpu_ftz_edge_lanes (the GPU may flush them). */
ALWAYS_INLINE __m512 ftz_edge_fixup(__m512 p, __m512 x, __m512 y, __m512 fmin) {
    const __mmask16 edge = _mm512_cmp_ps_mask(_mm512_abs_ps(p), fmin, _CMP_EQ_OQ);
    if (__builtin_expect(edge == 0, 1))
        return p;
    float pv[16], xv[16], yv[16];
    _mm512_storeu_ps(pv, p), _mm512_storeu_ps(xv, x), _mm512_storeu_ps(yv, y);
    bnb4_cpu_ftz_edge_lanes(pv, xv, yv, edge, 16);
    return _mm512_loadu_ps(pv);
}

/* bnb4_mul_ftz in 16 lanes: inputs and product flushed to the zero of their sign. */
ALWAYS_INLINE __m512 mul_ftz_signed(__m512 x, __m512 y, __m512 fmin) {
    const __m512 p = ftz_signed(_mm512_mul_ps(ftz_signed(x, fmin), ftz_signed(y, fmin)), fmin);
    return ftz_edge_fixup(p, x, y, fmin);
}

/* x * inv as mul.ftz.f32: subnormal x counts as 0 (so 0 * inf = NaN stays), subnormal products flush. */
ALWAYS_INLINE __m512 mul_ftz(__m512 x, __m512 inv, __m512 fmin) {
    const __m512 xf = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(x), fmin, _CMP_NLT_UQ), x);
    const __m512 p = _mm512_mul_ps(xf, inv);
    return ftz_edge_fixup(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(p), fmin, _CMP_NLT_UQ), p), x, inv, fmin);
}

/* 32 codes (two vectors of dwords, element 2i in the low dword of each qword) -> 16 packed bytes. */
ALWAYS_INLINE __m128i pack_codes(__m512i c0, __m512i c1) {
    const __m512i t0 = _mm512_or_si512(_mm512_slli_epi64(c0, 4), _mm512_srli_epi64(c0, 32));
    const __m512i t1 = _mm512_or_si512(_mm512_slli_epi64(c1, 4), _mm512_srli_epi64(c1, 32));
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    return _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(t0, even, t1));
}

ALWAYS_INLINE void quantize_blocks_impl(const void *src, bnb4_dtype dt, size_t bs, int nf4, size_t b0, size_t b1,
                                        uint8_t *packed, float *absmax) {
    code_consts k;
    k.t = _mm512_loadu_ps(nf4 ? nf4_thresholds : fp4_thresholds);
    k.rank_to_code = _mm512_loadu_si512(fp4_rank_to_code);
    k.one = _mm512_set1_epi32(1), k.two = _mm512_set1_epi32(2), k.three = _mm512_set1_epi32(3);
    k.four = _mm512_set1_epi32(4), k.seven = _mm512_set1_epi32(7), k.eight = _mm512_set1_epi32(8);
    k.fmin = _mm512_set1_ps(0x1p-126f), k.nfmin = _mm512_set1_ps(-0x1p-126f);
    const __m512 lowest = _mm512_set1_ps(-0x1.fffffep+127f); /* the kernel's running max starts at -FLT_MAX */
    /* absmax of 16 blocks first, then their reciprocals in one 16-lane rcp.approx (rcp_approx16 returns
     * no subnormals: the ftz of the reference's ftz(rcp(absmax)) has nothing to do) */
    enum { GROUP = 16 };
    float invs[GROUP];
    rcp_tables rt;
    rcp_tables_load(&rt);
    for (size_t b = b0; b < b1; b++) {
        const size_t e0 = b * bs;
        if ((b - b0) % GROUP == 0) {
            const size_t g1 = b1 - b < GROUP ? b1 : b + GROUP;
            for (size_t g = b; g < g1; g++) {
                __m512 m0 = lowest, m1 = lowest;
                for (size_t i = 0; i < bs; i += 32) { /* NaN operand -> vmaxps keeps m */
                    m0 = _mm512_max_ps(_mm512_abs_ps(load16_f32(src, dt, g * bs + i)), m0);
                    m1 = _mm512_max_ps(_mm512_abs_ps(load16_f32(src, dt, g * bs + i + 16)), m1);
                }
                /* max of ftz(|x|) == ftz(max |x|): flushing is monotone */
                absmax[g] = bnb4_ftz(_mm512_reduce_max_ps(_mm512_max_ps(m0, m1)));
            }
            const __mmask16 live = (__mmask16)((1u << (g1 - b)) - 1u);
            _mm512_storeu_ps(invs, rcp_approx16(&rt, _mm512_maskz_loadu_ps(live, absmax + b)));
        }
        const float amax = absmax[b];
        const __m512 inv = _mm512_set1_ps(invs[(b - b0) % GROUP]);
        uint8_t *out = packed + e0 / 2;
        if (amax >= 0x1p-110f) {
            /* Common case: inv <= 2^110, so a flushed input would only have given |xn| < 2^-16, which encodes
             * like 0 (NF4: code 7; FP4: rank 0) as does a subnormal product; only FP4's sign needs both the
             * input and the product to be normal negatives (<= -FLT_MIN: -FLT_MIN itself is normal; a product
             * IEEE rounds to it, the GPU may flush: ftz_edge_fixup). No other flushing needed. */
            for (size_t i = 0; i < bs; i += 32) {
                const __m512 x0 = load16_f32(src, dt, e0 + i), x1 = load16_f32(src, dt, e0 + i + 16);
                const __m512 n0 = _mm512_mul_ps(x0, inv), n1 = _mm512_mul_ps(x1, inv);
                __m512i c0, c1;
                if (nf4) {
                    c0 = nf4_codes(n0, &k), c1 = nf4_codes(n1, &k);
                } else {
                    const __m512 s0 = ftz_edge_fixup(n0, x0, inv, k.fmin), s1 = ftz_edge_fixup(n1, x1, inv, k.fmin);
                    c0 = fp4_codes_signed(n0, _mm512_cmp_ps_mask(x0, k.nfmin, _CMP_LE_OQ) &
                                                  _mm512_cmp_ps_mask(s0, k.nfmin, _CMP_LE_OQ), &k);
                    c1 = fp4_codes_signed(n1, _mm512_cmp_ps_mask(x1, k.nfmin, _CMP_LE_OQ) &
                                                  _mm512_cmp_ps_mask(s1, k.nfmin, _CMP_LE_OQ), &k);
                }
                _mm_storeu_si128((__m128i *)(out + i / 2), pack_codes(c0, c1));
            }
            continue;
        }
        for (size_t i = 0; i < bs; i += 32) { /* tiny or zero absmax: flush exactly as mul.ftz does */
            const __m512 x0 = mul_ftz(load16_f32(src, dt, e0 + i), inv, k.fmin);
            const __m512 x1 = mul_ftz(load16_f32(src, dt, e0 + i + 16), inv, k.fmin);
            const __m512i c0 = nf4 ? nf4_codes(x0, &k) : fp4_codes(x0, &k);
            const __m512i c1 = nf4 ? nf4_codes(x1, &k) : fp4_codes(x1, &k);
            _mm_storeu_si128((__m128i *)(out + i / 2), pack_codes(c0, c1));
        }
    }
}

static void quantize_blocks_avx512(const void *src, bnb4_dtype dt, size_t bs, bnb4_quant_type qt, size_t b0,
                                   size_t b1, uint8_t *packed, float *absmax) {
    /* one specialised copy per (dtype, quant type): no branches in the inner loops */
    const int nf4 = qt == BNB4_NF4;
    if (dt == BNB4_F32)
        nf4 ? quantize_blocks_impl(src, BNB4_F32, bs, 1, b0, b1, packed, absmax)
            : quantize_blocks_impl(src, BNB4_F32, bs, 0, b0, b1, packed, absmax);
    else if (dt == BNB4_F16)
        nf4 ? quantize_blocks_impl(src, BNB4_F16, bs, 1, b0, b1, packed, absmax)
            : quantize_blocks_impl(src, BNB4_F16, bs, 0, b0, b1, packed, absmax);
    else
        nf4 ? quantize_blocks_impl(src, BNB4_BF16, bs, 1, b0, b1, packed, absmax)
            : quantize_blocks_impl(src, BNB4_BF16, bs, 0, b0, b1, packed, absmax);
}

/* ---- dequantize --------------------------------------------------------------------------------------------- */

/* 32 codes from 16 bytes in element order: w0 = elements 0..15, w1 = 16..31. */
ALWAYS_INLINE void decode32(const uint8_t *p, __m512 cb, __m512 *w0, __m512 *w1) {
    const __m128i b = _mm_loadu_si128((const __m128i *)p);
    const __m128i hi = _mm_srli_epi16(b, 4); /* low 4 bits of each byte = its high nibble */
    *w0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, b)), cb);
    *w1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, b)), cb);
}

static void dequantize_blocks_avx512(const uint8_t *packed, const float *scales, const float *codebook, size_t bs,
                                     size_t nblocks, bnb4_dtype dt, void *dst) {
    const __m512 cb = _mm512_loadu_ps(codebook);
    const int bf16_hw = bnb4_cpu_info_get()->has_avx512bf16;
    for (size_t b = 0; b < nblocks; b++) {
        const float s = scales[b];
        const uint8_t *p = packed + b * bs / 2;
        const size_t e0 = b * bs;
        if (!(fabsf(s) >= 0x1p-118f)) { /* products may be subnormal (or s is NaN): exact scalar path */
            for (size_t i = 0; i < bs; i++)
                bnb4_ref_store(dst, dt, e0 + i, bnb4_mul_ftz(codebook[bnb4_nibble_at(p, i)], s));
            continue;
        }
        const __m512 vs = _mm512_set1_ps(s);
        if (dt == BNB4_BF16 && bf16_hw) {
            /* vcvtne2ps2bf16 rounds to nearest even and quiets NaN exactly as bnb4_f32_to_bf16; its
             * flushing of subnormals never applies here (no product is subnormal on this path) */
            for (size_t i = 0; i < bs; i += 32) {
                __m512 w0, w1;
                decode32(p + i / 2, cb, &w0, &w1);
                _mm512_storeu_si512((uint16_t *)dst + e0 + i,
                                    (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(w1, vs), _mm512_mul_ps(w0, vs)));
            }
            continue;
        }
        for (size_t i = 0; i < bs; i += 32) {
            __m512 w0, w1;
            decode32(p + i / 2, cb, &w0, &w1);
            store16(dst, dt, e0 + i, _mm512_mul_ps(w0, vs));
            store16(dst, dt, e0 + i + 16, _mm512_mul_ps(w1, vs));
        }
    }
}

/* ---- nested scales ------------------------------------------------------------------------------------------ */

/* table[idx] for a 256-entry float table held in 16 registers, idx in 0..255: vpermt2ps looks up 32
 * entries by the low 5 bits, then bits 5, 6 and 7 pick among the 8 results (cheaper than a gather on
 * Zen 4). */
ALWAYS_INLINE __m512 lookup256(const __m512 table[16], __m512i idx) {
    __m512 r[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        r[i] = _mm512_permutex2var_ps(table[2 * i], idx, table[2 * i + 1]);
    const __mmask16 m5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
    const __mmask16 m6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
    const __mmask16 m7 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(128));
    const __m512 s0 = _mm512_mask_blend_ps(m6, _mm512_mask_blend_ps(m5, r[0], r[1]), _mm512_mask_blend_ps(m5, r[2], r[3]));
    const __m512 s1 = _mm512_mask_blend_ps(m6, _mm512_mask_blend_ps(m5, r[4], r[5]), _mm512_mask_blend_ps(m5, r[6], r[7]));
    return _mm512_mask_blend_ps(m7, s0, s1);
}

/* f32(ftz(code[c] * nested_absmax) + offset) for 16 blocks at a time: a gather of the 256-entry map, FTZ by
 * compare-and-zero (inputs and product, mul_ftz_signed), then the plain addition, as bnb4_ref_block_scale. */
static void nested_scales_avx512(const bnb4_qtensor *q, size_t b0, size_t b1, float *out) {
    const uint8_t *codes = q->nested.codes;
    const float *code = q->nested.code, *nabs = q->nested.absmax;
    const size_t nbs = q->nested.blocksize;
    const __m512 fmin = _mm512_set1_ps(0x1p-126f), offset = _mm512_set1_ps(q->nested.offset);
    size_t b = b0;
    if (nbs >= 64) {
        /* Within one nested block every scale is one of 256 values, f32(ftz(code[c] * nabs_j) + offset):
         * build those once per nested block, then each block's scale is a single lookup. */
        while (b < b1) {
            const size_t j = b / nbs, jend = (j + 1) * nbs < b1 ? (j + 1) * nbs : b1;
            const __m512 nv = ftz_signed(_mm512_set1_ps(nabs[j]), fmin);
            __m512 table[16];
            for (int i = 0; i < 16; i++)
                table[i] = _mm512_add_ps(mul_ftz_signed(_mm512_loadu_ps(code + 16 * i), nv, fmin), offset);
            for (; b + 16 <= jend; b += 16)
                _mm512_storeu_ps(out + (b - b0),
                                 lookup256(table, _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + b)))));
            for (; b < jend; b++)
                out[b - b0] = bnb4_ref_block_scale(q, b);
        }
        return;
    }
    __m512 table[16]; /* the 256-entry map */
    for (int i = 0; i < 16; i++)
        table[i] = _mm512_loadu_ps(code + 16 * i);
    for (; b + 16 <= b1; b += 16) {
        const __m512 cv = lookup256(table, _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + b))));
        __m512 nv;
        if (b / nbs == (b + 15) / nbs) {
            nv = _mm512_set1_ps(nabs[b / nbs]);
        } else {
            float t[16];
            for (int i = 0; i < 16; i++)
                t[i] = nabs[(b + (size_t)i) / nbs];
            nv = _mm512_loadu_ps(t);
        }
        const __m512 p = mul_ftz_signed(cv, nv, fmin);
        _mm512_storeu_ps(out + (b - b0), _mm512_add_ps(p, offset));
    }
    for (; b < b1; b++)
        out[b - b0] = bnb4_ref_block_scale(q, b);
}

/* ---- nested quantize ------------------------------------------------------------------------------------------ */

/* bnb4_ref_quantize_nested_blocks in 16 lanes: the same 7-step search over the 256-entry signed map
 * (dQuantize<0>: the pivot walks down on "not greater", so NaN walks down too) remembering the last
 * entries seen below and above, each step's entry fetched by lookup256, then the same FTZ midpoint test
 * between the final pivot and the bracketing entry on x's side. Tails of a nested block are masked
 * lanes. */
static void quantize_nested_blocks_avx512(const float *absmax, size_t nblocks, float offset, size_t nbs,
                                          size_t j0, size_t j1, uint8_t *codes, float *nested_absmax) {
    static const float map[256] = {BNB4_NESTED_CODE_VALUES};
    __m512 table[16];
    for (int i = 0; i < 16; i++)
        table[i] = _mm512_loadu_ps(map + 16 * i);
    const __m512 fmin = _mm512_set1_ps(0x1p-126f), voff = _mm512_set1_ps(offset);
    for (size_t j = j0; j < j1; j++) {
        const size_t begin = j * nbs, end = nblocks - begin < nbs ? nblocks : begin + nbs;
        /* absmax - offset in IEEE float32 (torch), loaded with FTZ; fmaxf ignores NaN (vmaxps keeps m) */
        __m512 m = _mm512_set1_ps(end - begin < nbs ? 0.0f : -0x1.fffffep+127f);
        for (size_t i = begin; i < end; i += 16) {
            const __mmask16 live = end - i >= 16 ? 0xffff : (__mmask16)((1u << (end - i)) - 1u);
            const __m512 d = ftz_signed(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, absmax + i), voff), fmin);
            m = _mm512_mask_max_ps(m, live, _mm512_abs_ps(d), m);
        }
        const float amax = _mm512_reduce_max_ps(m);
        nested_absmax[j] = amax;
        const __m512 inv = _mm512_set1_ps(bnb4_rcp_approx_f32(amax));
        for (size_t i = begin; i < end; i += 16) {
            const __mmask16 live = end - i >= 16 ? 0xffff : (__mmask16)((1u << (end - i)) - 1u);
            const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, absmax + i), voff);
            const __m512 x = mul_ftz_signed(d, inv, fmin);
            __m512i pivot = _mm512_set1_epi32(127), upper_pivot = _mm512_set1_epi32(255);
            __m512i lower_pivot = _mm512_setzero_si512();
            __m512 lower = _mm512_set1_ps(-1.0f), upper = _mm512_set1_ps(1.0f), val = _mm512_set1_ps(map[127]);
            for (int step = 64; step > 0; step >>= 1) {
                const __mmask16 gt = _mm512_cmp_ps_mask(x, val, _CMP_GT_OQ);
                lower_pivot = _mm512_mask_mov_epi32(lower_pivot, gt, pivot);
                lower = _mm512_mask_mov_ps(lower, gt, val);
                upper_pivot = _mm512_mask_mov_epi32(pivot, gt, upper_pivot);
                upper = _mm512_mask_mov_ps(val, gt, upper);
                pivot = _mm512_mask_add_epi32(_mm512_sub_epi32(pivot, _mm512_set1_epi32(step)), gt, pivot,
                                              _mm512_set1_epi32(step));
                val = lookup256(table, pivot);
            }
            upper = _mm512_mask_mov_ps(upper, _mm512_cmpeq_epi32_mask(upper_pivot, _mm512_set1_epi32(255)),
                                       _mm512_set1_ps(map[255]));
            lower = _mm512_mask_mov_ps(lower, _mm512_cmpeq_epi32_mask(lower_pivot, _mm512_setzero_si512()),
                                       _mm512_set1_ps(map[0]));
            /* midpoints as the kernel rounds them: mul.ftz(add.ftz(a, val), 0.5) */
            const __m512 half = _mm512_set1_ps(0.5f);
            const __m512 mid_up = ftz_signed(
                _mm512_mul_ps(ftz_signed(_mm512_add_ps(ftz_signed(upper, fmin), ftz_signed(val, fmin)), fmin), half), fmin);
            const __m512 mid_lo = ftz_signed(
                _mm512_mul_ps(ftz_signed(_mm512_add_ps(ftz_signed(lower, fmin), ftz_signed(val, fmin)), fmin), half), fmin);
            const __mmask16 above = _mm512_cmp_ps_mask(x, val, _CMP_GT_OQ);
            const __mmask16 take_up = above & _mm512_cmp_ps_mask(x, mid_up, _CMP_GT_OQ);
            const __mmask16 take_lo = (__mmask16)~above & _mm512_cmp_ps_mask(x, mid_lo, _CMP_LT_OQ);
            __m512i q = _mm512_mask_mov_epi32(pivot, take_up, upper_pivot);
            q = _mm512_mask_mov_epi32(q, take_lo, lower_pivot);
            _mm_mask_storeu_epi8(codes + i, live, _mm512_cvtepi32_epi8(q));
        }
    }
}

/* Prefetch [addr, addr + bytes) into L2, one request per cache line (an address only: never faults).
 * L2, not L1: PF_GROUPS row groups ahead is more than L1 holds (measured: T1 at 4 groups is fastest). */
ALWAYS_INLINE void prefetch_bytes(uintptr_t addr, size_t bytes) {
    for (uintptr_t a = addr & ~(uintptr_t)63; a < addr + bytes; a += 64)
        _mm_prefetch((const char *)a, _MM_HINT_T1);
}

/* ---- gemm: direct kernel (m <= 8) ----------------------------------------------------------------------------- */

enum { DIRECT_MAX_M = 8, DIRECT_COLS = 16, PF_GROUPS = 4 };

/* Row stride of prepared X, in elements: K plus one cache line more per row, so that rows 16 KiB apart
 * (K = 4096) do not all map to the same L1 sets. */
static size_t xstride(size_t K, size_t elem_bytes) { return K + 64 / elem_bytes * 2; }

/* x[i] as float32 (the preps run on one thread: float32 inputs skip the generic loader's dtype switch). */
ALWAYS_INLINE float x_at(const void *x, bnb4_dtype dt, size_t i) {
    return dt == BNB4_F32 ? ((const float *)x)[i] : bnb4_ref_load(x, dt, i);
}

/* X[i][c*128 + 16k + l] = x[i][c*128 + 8l + (k^1)], as float32. */
static size_t direct_prep_bytes(const bnb4_gemm_args *a) { return a->m * xstride(a->w->cols, 4) * sizeof(float); }

static void direct_prep(bnb4_gemm_args *a) {
    const size_t K = a->w->cols;
    float *xp = (float *)a->xp;
    for (size_t i = 0; i < a->m; i++)
        for (size_t c = 0; c < K; c += 128)
            for (size_t k = 0; k < 8; k++)
                for (size_t l = 0; l < 16; l++)
                    xp[i * xstride(K, 4) + c + 16 * k + l] = x_at(a->x, a->dt, i * K + c + 8 * l + (k ^ 1));
}

static size_t direct_scratch_bytes(const bnb4_gemm_args *a) { return direct_scales_bytes(a->w, DIRECT_COLS); }

/* Tables of the nested blocks that blocks [b0, b1) lie in (the first one at tab), and each block's index. */
static void nested_tabs_build(const bnb4_qtensor *q, size_t b0, size_t b1, float *tab, uint32_t *ix) {
    const size_t nbs = q->nested.blocksize, t0 = b0 / nbs, t1 = (b1 - 1) / nbs;
    const __m512 fmin = _mm512_set1_ps(0x1p-126f), offset = _mm512_set1_ps(q->nested.offset);
    /* ftz(code) once, and its smallest nonzero magnitude: a nested absmax whose products with it stay
     * normal needs no flushing of the products (the common case: one multiply and one add per entry) */
    float fc[256] __attribute__((aligned(64)));
    __m512 vmin = _mm512_set1_ps(INFINITY);
    for (int i = 0; i < 16; i++) {
        const __m512 c = ftz_signed(_mm512_loadu_ps(q->nested.code + 16 * i), fmin);
        _mm512_store_ps(fc + 16 * i, c);
        const __m512 a = _mm512_abs_ps(c);
        vmin = _mm512_mask_min_ps(vmin, _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ), a, vmin);
    }
    const double cmin = _mm512_reduce_min_ps(vmin);
    for (size_t t = t0; t <= t1; t++) {
        const float n = bnb4_ftz(q->nested.absmax[t]), an = fabsf(n);
        const __m512 nv = _mm512_set1_ps(n);
        float *tt = tab + (t - t0) * 256;
        if (an == 0.0f || an != an || cmin * an >= 0x1p-126) { /* exact products are 0, NaN or >= FLT_MIN */
            for (int i = 0; i < 16; i++)
                _mm512_storeu_ps(tt + 16 * i, _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(fc + 16 * i), nv), offset));
        } else {
            for (int i = 0; i < 16; i++)
                _mm512_storeu_ps(tt + 16 * i, _mm512_add_ps(mul_ftz_signed(_mm512_load_ps(fc + 16 * i), nv, fmin), offset));
        }
        const size_t e0 = t * nbs < b0 ? b0 : t * nbs, e1 = (t + 1) * nbs < b1 ? (t + 1) * nbs : b1;
        const uint32_t base = (uint32_t)((t - t0) * 256);
        size_t b = e0;
        for (; b + 16 <= e1; b += 16)
            _mm512_storeu_si512(ix + (b - b0), _mm512_add_epi32(_mm512_set1_epi32((int)base),
                                                                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q->nested.codes + b)))));
        for (; b < e1; b++)
            ix[b - b0] = base + q->nested.codes[b];
    }
}

/* Lane l's scale for the 128-element chunk at c of row r (lane l holds elements 8l..8l+7). */
ALWAYS_INLINE __m512 scale_vec(const scale_rows *sr, int r, size_t c, size_t bs, const int tabs) {
    const __m512i lane_block = bs >= 128 ? _mm512_setzero_si512()
                               : bs == 64 ? _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
                                          : _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    if (!tabs) {
        const __mmask16 scale_mask = bs >= 128 ? 1 : bs == 64 ? 3 : 15;
        return _mm512_permutexvar_ps(lane_block, _mm512_maskz_loadu_ps(scale_mask, sr->s[r] + c / bs));
    }
    const uint32_t *ix = sr->ix[r] + c / bs;
    const float *t = sr->tab;
    if (bs >= 128)
        return _mm512_set1_ps(t[ix[0]]);
    if (bs == 64)
        return _mm512_permutexvar_ps(lane_block,
                                     _mm512_castps128_ps512(_mm_unpacklo_ps(_mm_load_ss(t + ix[0]), _mm_load_ss(t + ix[1]))));
    return _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(_mm_setr_ps(t[ix[0]], t[ix[1]], t[ix[2]], t[ix[3]])));
}

/* d >> 4k for a constant k (after unrolling), written so that unoptimized builds compile too. */
ALWAYS_INLINE __m512i nibble_plane(__m512i d, int k) {
    switch (k) {
    case 0: return d;
    case 1: return _mm512_srli_epi32(d, 4);
    case 2: return _mm512_srli_epi32(d, 8);
    case 3: return _mm512_srli_epi32(d, 12);
    case 4: return _mm512_srli_epi32(d, 16);
    case 5: return _mm512_srli_epi32(d, 20);
    case 6: return _mm512_srli_epi32(d, 24);
    default: return _mm512_srli_epi32(d, 28);
    }
}

/* The 64 packed bytes (128 codes) at k = c of each of the RB weight rows, and a prefetch of the next row
 * group: one line per row per chunk, exactly its size over the K loop. */
ALWAYS_INLINE void direct_load_chunk(const uint8_t *const *wrow, size_t c, const int RB, uintptr_t pf,
                                     __m512i d[4]) {
    #pragma GCC unroll 8
    for (int r = 0; r < RB; r++) {
        d[r] = _mm512_loadu_si512(wrow[r] + c / 2);
        _mm_prefetch((const char *)(pf + (c / 128 * (size_t)RB + (size_t)r) * 64), _MM_HINT_T1);
    }
}

/* out[i][r] = sum_k X[i][k] W[r][k] for MR rows of X and RB weight rows. */
ALWAYS_INLINE void direct_dot(const float *xp, size_t K, size_t bs, const int MR, const int RB,
                              const uint8_t *const *wrow, uintptr_t pf, const scale_rows *sr, const int tabs, __m512 cb,
                              float (*out)[4]) {
    const size_t xs = xstride(K, 4);
    __m512 acc[DIRECT_MAX_M][4];
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++)
            acc[i][r] = _mm512_setzero_ps();
    for (size_t c = 0; c < K; c += 128) {
        __m512i d[4];
        __m512 p[DIRECT_MAX_M][4];
        direct_load_chunk(wrow, c, RB, pf, d);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m512 w[4];
            #pragma GCC unroll 8
            for (int r = 0; r < RB; r++)
                w[r] = _mm512_permutexvar_ps(nibble_plane(d[r], k), cb);
            #pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                const __m512 xv = _mm512_loadu_ps(xp + (size_t)i * xs + c + 16 * (size_t)k);
                #pragma GCC unroll 8
                for (int r = 0; r < RB; r++)
                    p[i][r] = k == 0 ? _mm512_mul_ps(xv, w[r]) : _mm512_fmadd_ps(xv, w[r], p[i][r]);
            }
        }
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++) {
            const __m512 sv = scale_vec(sr, r, c, bs, tabs);
            #pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                acc[i][r] = _mm512_fmadd_ps(p[i][r], sv, acc[i][r]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++)
            out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
}

/* m = 3..8: 4 weight rows x up to 4 rows of X per pass. Each decoded plane is scaled first (one multiply
 * per weight vector, shared by the X rows), so the accumulators need no per-chunk partial sums and 16 fit
 * in registers; every X vector loaded (from L2 when m*K is large) feeds 4 FMAs. */
ALWAYS_INLINE void direct_dot_scaled(const float *xp, size_t xs, size_t K, size_t bs, const int MR,
                                     const uint8_t *const *wrow, uintptr_t pf, const scale_rows *sr, const int tabs,
                                     __m512 cb, float (*out)[4]) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            acc[i][r] = _mm512_setzero_ps();
    for (size_t c = 0; c < K; c += 128) {
        __m512i d[4];
        __m512 sv[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            d[r] = _mm512_loadu_si512(wrow[r] + c / 2);
            _mm_prefetch((const char *)(pf + (c / 128 * 4 + (size_t)r) * 64), _MM_HINT_T1);
            sv[r] = scale_vec(sr, r, c, bs, tabs);
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m512 w[4];
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
                w[r] = _mm512_mul_ps(_mm512_permutexvar_ps(nibble_plane(d[r], k), cb), sv[r]);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) {
                const __m512 xv = _mm512_loadu_ps(xp + (size_t)i * xs + c + 16 * (size_t)k);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
                    acc[i][r] = _mm512_fmadd_ps(xv, w[r], acc[i][r]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
}

ALWAYS_INLINE void direct_run_block_impl(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch, const int tabs) {
    const bnb4_qtensor *w = a->w;
    const size_t K = w->cols, bs = w->blocksize, bpr = K / bs, m = a->m;
    const __m512 cb = _mm512_loadu_ps(a->codebook);
    const float *xp = (const float *)a->xp;
    scale_rows sr;
    const float *scales;
    const uint32_t *ix;
    direct_unit_scales(w, DIRECT_COLS, j0, j1, scratch, tabs, nested_tabs_build, &sr, &scales, &ix);
    const size_t xs = xstride(K, 4);
    const int RB = m == 1 ? 4 : m == 2 ? 2 : 4;
    for (size_t j = j0; j < j1; j += (size_t)RB) {
        const int rb = j1 - j < (size_t)RB ? (int)(j1 - j) : RB;
        const uint8_t *wrow[4];
        float out[DIRECT_MAX_M][4];
        direct_group_rows(w, j, rb, j0, scales, ix, wrow, &sr);
        /* a later row group, prefetched while this one is computed: only an address (integer arithmetic,
         * a prefetch past the tensor's end is harmless and never faults) */
        const uintptr_t pf = (uintptr_t)w->packed + (j + PF_GROUPS * (size_t)RB) * K / 2;
        if (w->absmax) /* and its float32 scales: RB * K / 16 bytes, 1/8 of its codes */
            prefetch_bytes((uintptr_t)(w->absmax + (j + PF_GROUPS * (size_t)RB) * bpr), (size_t)RB * bpr * 4);
        if (m == 1) {
            direct_dot(xp, K, bs, 1, 4, wrow, pf, &sr, tabs, cb, out);
        } else if (m == 2) {
            direct_dot(xp, K, bs, 2, 2, wrow, pf, &sr, tabs, cb, out);
        } else {
            for (size_t i0 = 0; i0 < m; i0 += 4) {
                const float *x0 = xp + i0 * xs;
                switch (m - i0 < 4 ? m - i0 : 4) {
                case 1: direct_dot_scaled(x0, xs, K, bs, 1, wrow, pf, &sr, tabs, cb, out + i0); break;
                case 2: direct_dot_scaled(x0, xs, K, bs, 2, wrow, pf, &sr, tabs, cb, out + i0); break;
                case 3: direct_dot_scaled(x0, xs, K, bs, 3, wrow, pf, &sr, tabs, cb, out + i0); break;
                default: direct_dot_scaled(x0, xs, K, bs, 4, wrow, pf, &sr, tabs, cb, out + i0); break;
                }
            }
        }
        bnb4_cpu_store_rows_x4(a, j, m, rb, (const float (*)[4])out);
    }
}

static void direct_run_block(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    if (nested_tabs_used(a->w))
        direct_run_block_impl(a, j0, j1, scratch, 1);
    else
        direct_run_block_impl(a, j0, j1, scratch, 0);
}

/* Any column range: DIRECT_COLS columns at a time (the nested scales scratch holds that many rows). */
static void direct_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    for (size_t j = j0; j < j1; j += DIRECT_COLS)
        direct_run_block(a, j, j1 - j < DIRECT_COLS ? j1 : j + DIRECT_COLS, scratch);
}

/* ---- gemv/gemm: direct kernel on bfloat16 dot products (bfloat16 activations, m <= 8) ------------------------
 * Codes are looked up as bfloat16 in 16-bit lanes (vpermw on a 32-entry table: the 16 values twice, so
 * the nibble above the code is ignored) and multiplied by vdpbf16ps, 32 products per instruction: half
 * the vector work of the float32 path, which makes the gemv memory-bound. Word l of nibble plane k
 * (shift 4k) is element 4l + (k^1), and float32 lane i again sums elements 8i..8i+7 of a 128-code
 * chunk, so the per-lane block scales are the float32 path's. As bitsandbytes computes a bfloat16 layer
 * (weights dequantized to bfloat16), each codebook value is rounded to bfloat16; scales stay float32. */

/* X[i][c*128 + 32k + l] = x[i][c*128 + 4l + (k^1)], bfloat16 (x is bfloat16 already). */
static size_t direct_bf16_prep_bytes(const bnb4_gemm_args *a) { return a->m * xstride(a->w->cols, 2) * sizeof(uint16_t); }

static void direct_bf16_prep(bnb4_gemm_args *a) {
    const size_t K = a->w->cols;
    const uint16_t *x = (const uint16_t *)a->x;
    uint16_t *xp = (uint16_t *)a->xp;
    for (size_t i = 0; i < a->m; i++)
        for (size_t c = 0; c < K; c += 128)
            for (size_t k = 0; k < 4; k++)
                for (size_t l = 0; l < 32; l++)
                    xp[i * xstride(K, 2) + c + 32 * k + l] = x[i * K + c + 4 * l + (k ^ 1)];
}

ALWAYS_INLINE __m512i nibble_plane16(__m512i d, int k) {
    switch (k) {
    case 0: return d;
    case 1: return _mm512_srli_epi16(d, 4);
    case 2: return _mm512_srli_epi16(d, 8);
    default: return _mm512_srli_epi16(d, 12);
    }
}

ALWAYS_INLINE void direct_dot_bf16(const uint16_t *xp, size_t K, size_t bs, const int MR, const int RB,
                                   const uint8_t *const *wrow, uintptr_t pf, const scale_rows *sr, const int tabs,
                                   __m512i cbw, float (*out)[4]) {
    const size_t xs = xstride(K, 2);
    __m512 acc[DIRECT_MAX_M][4];
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++)
            acc[i][r] = _mm512_setzero_ps();
    for (size_t c = 0; c < K; c += 128) {
        __m512i d[4];
        __m512 p[DIRECT_MAX_M][4];
        direct_load_chunk(wrow, c, RB, pf, d);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m512bh w[4];
            #pragma GCC unroll 8
            for (int r = 0; r < RB; r++)
                w[r] = (__m512bh)_mm512_permutexvar_epi16(nibble_plane16(d[r], k), cbw);
            #pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                const __m512bh xv = (__m512bh)_mm512_loadu_si512(xp + (size_t)i * xs + c + 32 * (size_t)k);
                #pragma GCC unroll 8
                for (int r = 0; r < RB; r++)
                    p[i][r] = _mm512_dpbf16_ps(k == 0 ? _mm512_setzero_ps() : p[i][r], xv, w[r]);
            }
        }
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++) {
            const __m512 sv = scale_vec(sr, r, c, bs, tabs);
            #pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                acc[i][r] = _mm512_fmadd_ps(p[i][r], sv, acc[i][r]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++)
            out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
}

ALWAYS_INLINE void direct_bf16_run_block_impl(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch,
                                              const int tabs) {
    const bnb4_qtensor *w = a->w;
    const size_t K = w->cols, bs = w->blocksize, bpr = K / bs, m = a->m;
    uint16_t table[32];
    for (int i = 0; i < 32; i++)
        table[i] = bnb4_f32_to_bf16(a->codebook[i & 15]);
    const __m512i cbw = _mm512_loadu_si512(table);
    const uint16_t *xp = (const uint16_t *)a->xp;
    scale_rows sr;
    const float *scales;
    const uint32_t *ix;
    direct_unit_scales(w, DIRECT_COLS, j0, j1, scratch, tabs, nested_tabs_build, &sr, &scales, &ix);
    const int MR = (int)m, RB = m == 1 ? 4 : m == 2 ? 2 : 1;
    for (size_t j = j0; j < j1; j += (size_t)RB) {
        const int rb = j1 - j < (size_t)RB ? (int)(j1 - j) : RB;
        const uint8_t *wrow[4];
        float out[DIRECT_MAX_M][4];
        direct_group_rows(w, j, rb, j0, scales, ix, wrow, &sr);
        /* a later row group, prefetched while this one is computed: only an address (integer arithmetic,
         * a prefetch past the tensor's end is harmless and never faults) */
        const uintptr_t pf = (uintptr_t)w->packed + (j + PF_GROUPS * (size_t)RB) * K / 2;
        if (w->absmax) /* and its float32 scales: RB * K / 16 bytes, 1/8 of its codes */
            prefetch_bytes((uintptr_t)(w->absmax + (j + PF_GROUPS * (size_t)RB) * bpr), (size_t)RB * bpr * 4);
        switch (MR) {
        case 1: direct_dot_bf16(xp, K, bs, 1, 4, wrow, pf, &sr, tabs, cbw, out); break;
        case 2: direct_dot_bf16(xp, K, bs, 2, 2, wrow, pf, &sr, tabs, cbw, out); break;
        case 3: direct_dot_bf16(xp, K, bs, 3, 1, wrow, pf, &sr, tabs, cbw, out); break;
        case 4: direct_dot_bf16(xp, K, bs, 4, 1, wrow, pf, &sr, tabs, cbw, out); break;
        case 5: direct_dot_bf16(xp, K, bs, 5, 1, wrow, pf, &sr, tabs, cbw, out); break;
        case 6: direct_dot_bf16(xp, K, bs, 6, 1, wrow, pf, &sr, tabs, cbw, out); break;
        case 7: direct_dot_bf16(xp, K, bs, 7, 1, wrow, pf, &sr, tabs, cbw, out); break;
        default: direct_dot_bf16(xp, K, bs, 8, 1, wrow, pf, &sr, tabs, cbw, out); break;
        }
        bnb4_cpu_store_rows_x4(a, j, (size_t)MR, rb, (const float (*)[4])out);
    }
}

static void direct_bf16_run_block(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    if (nested_tabs_used(a->w))
        direct_bf16_run_block_impl(a, j0, j1, scratch, 1);
    else
        direct_bf16_run_block_impl(a, j0, j1, scratch, 0);
}

/* Any column range: DIRECT_COLS columns at a time (the nested scales scratch holds that many rows). */
static void direct_bf16_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    for (size_t j = j0; j < j1; j += DIRECT_COLS)
        direct_bf16_run_block(a, j, j1 - j < DIRECT_COLS ? j1 : j + DIRECT_COLS, scratch);
}

/* ---- gemm: tile micro-kernels ------------------------------------------------------------------------------------ */

static void micro_f32_4x4(const void *const x[4], const void *wt, size_t kcp, float out[4][4]) {
    const float *w = (const float *)wt;
    __m512 acc[4][4];
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            acc[i][r] = _mm512_setzero_ps();
    for (size_t k = 0; k < kcp; k += 16) {
        __m512 wv[4];
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            wv[r] = _mm512_loadu_ps(w + (size_t)r * kcp + k);
        #pragma GCC unroll 8
        for (int i = 0; i < 4; i++) {
            const __m512 xv = _mm512_loadu_ps((const float *)x[i] + k);
            #pragma GCC unroll 8
            for (int r = 0; r < 4; r++)
                acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
}

static void micro_bf16_4x4(const void *const x[4], const void *wt, size_t kcp, float out[4][4]) {
    const uint16_t *w = (const uint16_t *)wt;
    __m512 acc[4][4];
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            acc[i][r] = _mm512_setzero_ps();
    for (size_t k = 0; k < kcp; k += 32) {
        __m512bh wv[4];
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            wv[r] = (__m512bh)_mm512_loadu_si512(w + (size_t)r * kcp + k);
        #pragma GCC unroll 8
        for (int i = 0; i < 4; i++) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512((const uint16_t *)x[i] + k);
            #pragma GCC unroll 8
            for (int r = 0; r < 4; r++)
                acc[i][r] = _mm512_dpbf16_ps(acc[i][r], xv, wv[r]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
}

/* ---- gemm: what the two float32 panel kernels share ------------------------------------------------------- */

/* The panels' epilogue: Y[i][j + r] = c[i * rs + r * cs] + bias[j + r] in float32, then one rounding to
 * the dtype (store16 rounds as bnb4_ref_store), for i < m and r < nr <= 32. */
static void panel_store(const bnb4_gemm_args *a, size_t j, size_t nr, const float *c, size_t rs, size_t cs) {
    const size_t N = a->w->rows;
    float bias[32] __attribute__((aligned(64))) = {0};
    for (size_t r = 0; a->bias && r < nr; r++)
        bias[r] = bnb4_ref_load(a->bias, a->dt, j + r);
    for (size_t i = 0; i < a->m; i++) {
        float t[32] __attribute__((aligned(64)));
        for (size_t r = 0; r < 32; r++)
            t[r] = c[i * rs + r * cs];
        const __m512 v0 = _mm512_add_ps(_mm512_load_ps(t), _mm512_load_ps(bias));
        const __m512 v1 = _mm512_add_ps(_mm512_load_ps(t + 16), _mm512_load_ps(bias + 16));
        if (nr == 32) {
            store16(a->y, a->dt, i * N + j, v0);
            store16(a->y, a->dt, i * N + j + 16, v1);
        } else {
            _mm512_store_ps(t, v0), _mm512_store_ps(t + 16, v1);
            for (size_t r = 0; r < nr; r++)
                bnb4_ref_store(a->y, a->dt, i * N + j + r, t[r]);
        }
    }
}

/* ---- gemm: float32 column-lane panel kernel (m > 8 not close to a multiple of 16) ---------------------------
 * Lanes are output columns, so no lane is wasted whatever m is (the row-lane kernel below wastes the
 * lanes of a last partial 16-row group). GotoBLAS-style: per 32 output columns and 128-element K chunk, the weights are decoded once into a
 * k-major panel Wt[k][32] (16 KiB, L1), and an 8 x 32 micro-kernel keeps C in 16 accumulators: per k two
 * panel loads, 8 broadcasts of X (packed k-major in 8-row groups by prep, so one pointer serves them all)
 * and 16 FMAs; no horizontal sums. The panel is decoded column-wise without a transpose: one gather
 * takes dword q of 16 rows' 64-byte chunks (lane = weight row), and nibble plane p of it (shift 4p) is
 * element 8q + (p ^ 1) of every row, looked up by vpermps and scaled by the 16 rows' block scales:
 * f32(code * scale) as dequantize writes it (flushed to zero where the scale makes a product subnormal).
 * C of a unit sums its K chunks in order, so results do not depend on the thread split. */

enum { KPANEL_NR = 32, KPANEL_MR = 8, KPANEL_KC = 128 };

static size_t kpanel_groups(size_t m) { return xpanel_groups(m, KPANEL_MR); }

/* Xp[g][k][i] = x[8g + i][k] as float32, rows past m zero (col_panel.h). */
static size_t kpanel_prep_bytes(const bnb4_gemm_args *a) { return xpanel_bytes(a, KPANEL_MR); }
static void kpanel_prep(bnb4_gemm_args *a) { xpanel_pack_kmajor(a, KPANEL_MR); }

/* Scratch: block scales of 32 rows | Wt panel | C (8-row groups x 32). */
static size_t kpanel_scales_floats(const bnb4_qtensor *w) { return col_panel_scales_floats(w, KPANEL_NR, 16); }
static size_t kpanel_scratch_bytes(const bnb4_gemm_args *a) {
    return col_panel_scratch_bytes(a, KPANEL_NR, KPANEL_MR, KPANEL_KC, 16);
}

/* C[i][0..32) += sum_k Xp[k][i] Wt[k][0..32) for i < MR. */
ALWAYS_INLINE void kpanel_micro(const float *xp, const float *wt, const int MR, float *c) {
    __m512 acc[KPANEL_MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (size_t k = 0; k < KPANEL_KC; k++) {
        const __m512 w0 = _mm512_load_ps(wt + k * KPANEL_NR), w1 = _mm512_load_ps(wt + k * KPANEL_NR + 16);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m512 xb = _mm512_set1_ps(xp[k * KPANEL_MR + (size_t)i]);
            acc[i][0] = _mm512_fmadd_ps(xb, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xb, w1, acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        _mm512_store_ps(c + i * KPANEL_NR, _mm512_add_ps(_mm512_load_ps(c + i * KPANEL_NR), acc[i][0]));
        _mm512_store_ps(c + i * KPANEL_NR + 16, _mm512_add_ps(_mm512_load_ps(c + i * KPANEL_NR + 16), acc[i][1]));
    }
}

/* Copies the 32 rows' 64-byte chunks at kc0 to a contiguous stage: rows K/2 bytes apart share few L1 sets
 * (K = 4096: 2 KiB apart, 32 rows in 2 sets of 8 ways), and gathering straight from them missed L1 on
 * most elements. The stage is filled one chunk ahead (double-buffered), so the gathers never wait for
 * the copy's stores, and the chunk after it is prefetched. */
static void kpanel_stage(const uint8_t *const rows[KPANEL_NR], size_t kc0, size_t K, uint8_t *stage) {
    for (int r = 0; r < KPANEL_NR; r++) {
        _mm512_store_si512(stage + 64 * r, _mm512_loadu_si512(rows[r] + kc0 / 2));
        if (kc0 + KPANEL_KC < K)
            _mm_prefetch((const char *)(rows[r] + kc0 / 2 + 64), _MM_HINT_T0);
    }
}

/* Wt[k][h*16 + l] = f32(code(row l of half h, kc0 + k) * scale) for the chunk at kc0, from its stage;
 * soff[h]: the half's 16 rows' offsets in the scales S. */
static void kpanel_decode(const uint8_t *stage, const float *S, const __m512i soff[2], size_t kc0, size_t bs,
                         __m512 cb, float *wt) {
    const __m512 fmin = _mm512_set1_ps(0x1p-126f), smin = _mm512_set1_ps(0x1p-118f);
    const __m512i roff[2] = {_mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi32(64)),
                             _mm512_mullo_epi32(_mm512_set_epi32(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16),
                                                _mm512_set1_epi32(64))};
    __m512 sv[2];
    int flush = 0;
    for (size_t q = 0; q < 16; q++) {
        if (q == 0 || (bs < 128 && (8 * q) % bs == 0)) { /* a new block: the 16 rows' scales */
            const size_t blk = (kc0 + 8 * q) / bs;
            flush = 0;
            for (int h = 0; h < 2; h++) {
                sv[h] = _mm512_i32gather_ps(soff[h], S + blk, 4);
                /* |scale| < 2^-118 (or NaN): products may be subnormal, flush them as dequantize does */
                flush |= _mm512_cmp_ps_mask(_mm512_abs_ps(sv[h]), smin, _CMP_NGE_UQ) != 0;
            }
        }
        for (int h = 0; h < 2; h++) {
            const __m512i g = _mm512_i32gather_epi32(roff[h], stage + 4 * q, 1);
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++) {
                __m512 v = _mm512_mul_ps(_mm512_permutexvar_ps(nibble_plane(g, p), cb), sv[h]);
                if (flush)
                    v = ftz_signed(v, fmin);
                _mm512_store_ps(wt + (8 * q + (size_t)(p ^ 1)) * KPANEL_NR + 16 * (size_t)h, v);
            }
        }
    }
}

static void kpanel_run_one(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    const bnb4_qtensor *w = a->w;
    const size_t K = w->cols, bs = w->blocksize, bpr = K / bs, m = a->m, nr = j1 - j0;
    float *S = (float *)scratch, *wt = S + kpanel_scales_floats(w), *c = wt + KPANEL_KC * KPANEL_NR;
    bnb4_cpu_block_scales(w, j0 * bpr, j1 * bpr, S);
    const uint8_t *rows[KPANEL_NR];
    int32_t so[KPANEL_NR];
    col_panel_unit_rows(w, j0, nr, KPANEL_NR, rows, so);
    const __m512i soff[2] = {_mm512_loadu_si512(so), _mm512_loadu_si512(so + 16)};
    const __m512 cb = _mm512_loadu_ps(a->codebook);
    const size_t groups = kpanel_groups(m);
    memset(c, 0, groups * KPANEL_MR * KPANEL_NR * sizeof(float));
    const float *xp = (const float *)a->xp;
    uint8_t stage[2][KPANEL_NR * 64] __attribute__((aligned(64)));
    kpanel_stage(rows, 0, K, stage[0]);
    for (size_t kc0 = 0; kc0 < K; kc0 += KPANEL_KC) {
        const size_t t = kc0 / KPANEL_KC % 2;
        kpanel_decode(stage[t], S, soff, kc0, bs, cb, wt);
        if (kc0 + KPANEL_KC < K)
            kpanel_stage(rows, kc0 + KPANEL_KC, K, stage[t ^ 1]);
        for (size_t g = 0; g < groups; g++) {
            const float *xg = xp + (g * K + kc0) * KPANEL_MR;
            float *cg = c + g * KPANEL_MR * KPANEL_NR;
            switch (m - g * KPANEL_MR < KPANEL_MR ? m - g * KPANEL_MR : KPANEL_MR) {
            case 1: kpanel_micro(xg, wt, 1, cg); break;
            case 2: kpanel_micro(xg, wt, 2, cg); break;
            case 3: kpanel_micro(xg, wt, 3, cg); break;
            case 4: kpanel_micro(xg, wt, 4, cg); break;
            case 5: kpanel_micro(xg, wt, 5, cg); break;
            case 6: kpanel_micro(xg, wt, 6, cg); break;
            case 7: kpanel_micro(xg, wt, 7, cg); break;
            default: kpanel_micro(xg, wt, 8, cg); break;
            }
        }
    }
    panel_store(a, j0, nr, c, KPANEL_NR, 1);
}

/* Any column range: 32 columns at a time. */
static void kpanel_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    for (size_t j = j0; j < j1; j += KPANEL_NR)
        kpanel_run_one(a, j, j1 - j < KPANEL_NR ? j1 : j + KPANEL_NR, scratch);
}

/* ---- gemm: float32 row-lane panel kernel (m > 8, m a multiple of 16 or nearly) ---------------------------------
 * GotoBLAS-style, with the roles of the operands chosen so that neither needs a transpose: X is packed
 * once by prep into k-major panels of 32 rows (Xp[g][k][32], two vectors per k), the weights of 32 output
 * columns are decoded per 128-element K chunk into row-major Wd[32][128] (16 KiB, L1) exactly as the
 * direct kernels decode a chunk (one load, then per nibble plane a shift, a vpermps and the block
 * scales' multiply), and an 8-column x 32-row micro-kernel keeps C in 16 accumulators: per k two X
 * loads, 8 broadcasts of weights (one pointer, constant displacements) and 16 FMAs, no horizontal
 * sums. Within each 128-element chunk both operands use the direct kernels' element order (plane p,
 * lane l = element 8l + (p ^ 1)), so the decode needs no interleave. Decoded weights equal what
 * dequantize writes (f32(code * scale), products flushed where the scale makes them subnormal). C of a
 * unit sums its K chunks in order: results do not depend on the thread split. */

enum { PANEL_COLS = 32, PANEL_NR = 8, PANEL_MR = 32, PANEL_KC = 128 };

static size_t panel_groups(size_t m) { return (m + PANEL_MR - 1) / PANEL_MR; }

/* Xp[g][c + 16p + l][i] = x[32g + i][c + 8l + (p ^ 1)] as float32 (c a multiple of 128), rows past m zero. */
static size_t panel_prep_bytes(const bnb4_gemm_args *a) { return xpanel_bytes(a, PANEL_MR); }

static void panel_prep(bnb4_gemm_args *a) {
    const size_t K = a->w->cols, m = a->m;
    float *xp = (float *)a->xp;
    for (size_t g = 0; g < panel_groups(m); g++)
        for (size_t c = 0; c < K; c += 128)
            for (size_t p = 0; p < 8; p++)
                for (size_t l = 0; l < 16; l++) {
                    float *dst = xp + (g * K + c + 16 * p + l) * PANEL_MR;
                    for (size_t i = 0; i < PANEL_MR; i++) {
                        const size_t row = g * PANEL_MR + i;
                        dst[i] = row < m ? x_at(a->x, a->dt, row * K + c + 8 * l + (p ^ 1)) : 0.0f;
                    }
                }
}

/* Panels decoded per K chunk before moving on: the chunk of X (32 rows x 128 per group, 64 KiB at
 * m = 128) is read from L2 by all of them instead of from L3 once per panel (a 14336-wide X does not
 * fit L2 whole). Past m = 4096 the X chunk outgrows L2 anyway: one panel, and C^T stays m x 128 bytes. */
enum { PANEL_BLOCK = 4 };

static size_t panel_block(size_t mp) { return mp <= 4096 ? PANEL_BLOCK : 1; }

/* Scratch: nested block scales of the block's rows (plain: read from absmax) | Wd | C^T (128 columns x
 * the padded m). */
static size_t panel_scales_floats(const bnb4_qtensor *w) {
    return w->absmax ? 0 : (PANEL_BLOCK * PANEL_COLS * (w->cols / w->blocksize) + 15) / 16 * 16;
}

static size_t panel_scratch_bytes(const bnb4_gemm_args *a) {
    const size_t mp = panel_groups(a->m) * PANEL_MR;
    if (mp > SIZE_MAX / 4096)
        return SIZE_MAX;
    return (panel_scales_floats(a->w) + PANEL_COLS * PANEL_KC + panel_block(mp) * PANEL_COLS * mp) * sizeof(float);
}

/* ct[j][i] += sum_k Xp[k][i] Wd[j][k] for 8 columns j and 16 * MV rows i (ct rows mp apart). */
ALWAYS_INLINE void panel_micro(const float *xp, const float *wd, const int MV, float *ct, size_t mp) {
    __m512 acc[PANEL_NR][2];
#pragma GCC unroll 8
    for (int j = 0; j < PANEL_NR; j++)
        acc[j][0] = acc[j][1] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (size_t k = 0; k < PANEL_KC; k++) {
        const __m512 x0 = _mm512_load_ps(xp + k * PANEL_MR);
        const __m512 x1 = MV == 2 ? _mm512_load_ps(xp + k * PANEL_MR + 16) : x0;
#pragma GCC unroll 8
        for (int j = 0; j < PANEL_NR; j++) {
            const __m512 wb = _mm512_set1_ps(wd[(size_t)j * PANEL_KC + k]);
            acc[j][0] = _mm512_fmadd_ps(x0, wb, acc[j][0]);
            if (MV == 2)
                acc[j][1] = _mm512_fmadd_ps(x1, wb, acc[j][1]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < PANEL_NR; j++) {
        float *cj = ct + (size_t)j * mp;
        _mm512_storeu_ps(cj, _mm512_add_ps(_mm512_loadu_ps(cj), acc[j][0]));
        if (MV == 2)
            _mm512_storeu_ps(cj + 16, _mm512_add_ps(_mm512_loadu_ps(cj + 16), acc[j][1]));
    }
}

/* Wd[r][16p + l] = f32(code(row r, kc0 + 8l + (p ^ 1)) * scale) for the 32 rows (rows[r]: row r's codes,
 * srows[r]: its block scales), prefetching the next chunk. */
static void panel_decode(const uint8_t *const rows[PANEL_COLS], const float *const srows[PANEL_COLS], size_t kc0,
                         size_t K, size_t bs, __m512 cb, float *wd) {
    const __m512 fmin = _mm512_set1_ps(0x1p-126f), smin = _mm512_set1_ps(0x1p-118f);
    const __m512i lane_block = bs >= 128 ? _mm512_setzero_si512()
                               : bs == 64 ? _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
                                          : _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const __mmask16 scale_mask = bs >= 128 ? 1 : bs == 64 ? 3 : 15;
    for (int r = 0; r < PANEL_COLS; r++) {
        const __m512i d = _mm512_loadu_si512(rows[r] + kc0 / 2);
        if (kc0 + PANEL_KC < K)
            _mm_prefetch((const char *)(rows[r] + kc0 / 2 + 64), _MM_HINT_T0);
        const __m512 sv = _mm512_permutexvar_ps(lane_block, _mm512_maskz_loadu_ps(scale_mask, srows[r] + kc0 / bs));
        float *out = wd + (size_t)r * PANEL_KC;
        /* |scale| < 2^-118 (or NaN): products may be subnormal, flush them as dequantize does */
        if (_mm512_cmp_ps_mask(_mm512_abs_ps(sv), smin, _CMP_NGE_UQ)) {
            for (int p = 0; p < 8; p++)
                _mm512_store_ps(out + 16 * p, mul_ftz_signed(_mm512_permutexvar_ps(nibble_plane(d, p), cb), sv, fmin));
            continue;
        }
#pragma GCC unroll 8
        for (int p = 0; p < 8; p++)
            _mm512_store_ps(out + 16 * p, _mm512_mul_ps(_mm512_permutexvar_ps(nibble_plane(d, p), cb), sv));
    }
}

/* Columns [j0, j1), at most panel_block(mp) panels. */
static void panel_run_block(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    const bnb4_qtensor *w = a->w;
    const size_t K = w->cols, bs = w->blocksize, bpr = K / bs, m = a->m;
    const size_t groups = panel_groups(m), mp = groups * PANEL_MR, panels = (j1 - j0 + PANEL_COLS - 1) / PANEL_COLS;
    float *S = (float *)scratch, *wd = S + panel_scales_floats(w), *ct = wd + PANEL_COLS * PANEL_KC;
    const float *scales = w->absmax ? w->absmax + j0 * bpr : S;
    if (!w->absmax)
        bnb4_cpu_block_scales(w, j0 * bpr, j1 * bpr, S);
    const uint8_t *rows[PANEL_BLOCK][PANEL_COLS];
    const float *srows[PANEL_BLOCK][PANEL_COLS];
    for (size_t p = 0; p < panels; p++)
        for (size_t r = 0; r < PANEL_COLS; r++) { /* rows past j1 repeat the last valid one (results discarded) */
            const size_t jr = j0 + p * PANEL_COLS + r < j1 ? p * PANEL_COLS + r : j1 - 1 - j0;
            rows[p][r] = w->packed + (j0 + jr) * K / 2, srows[p][r] = scales + jr * bpr;
        }
    const __m512 cb = _mm512_loadu_ps(a->codebook);
    memset(ct, 0, panels * PANEL_COLS * mp * sizeof(float));
    const float *xp = (const float *)a->xp;
    for (size_t kc0 = 0; kc0 < K; kc0 += PANEL_KC)
        for (size_t p = 0; p < panels; p++) {
            panel_decode(rows[p], srows[p], kc0, K, bs, cb, wd);
            float *cp = ct + p * PANEL_COLS * mp;
            for (size_t g = 0; g < groups; g++) {
                const float *xg = xp + (g * K + kc0) * PANEL_MR;
                const int two = m - g * PANEL_MR > 16; /* the group's second 16 rows hold any of X */
                for (size_t j = 0; j < PANEL_COLS; j += PANEL_NR) {
                    if (two)
                        panel_micro(xg, wd + j * PANEL_KC, 2, cp + j * mp + g * PANEL_MR, mp);
                    else
                        panel_micro(xg, wd + j * PANEL_KC, 1, cp + j * mp + g * PANEL_MR, mp);
                }
            }
        }
    for (size_t p = 0; p < panels; p++) {
        const size_t pj = j0 + p * PANEL_COLS;
        panel_store(a, pj, j1 - pj < PANEL_COLS ? j1 - pj : PANEL_COLS, ct + p * PANEL_COLS * mp, 1, mp);
    }
}

/* Any column range: panel_block(mp) panels at a time. */
static void panel_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    const size_t step = panel_block(panel_groups(a->m) * PANEL_MR) * PANEL_COLS;
    for (size_t j = j0; j < j1; j += step)
        panel_run_block(a, j, j1 - j < step ? j1 : j + step, scratch);
}

static const bnb4_tile_ops tile_f32 = {16, 4, BNB4_F32, micro_f32_4x4};
static const bnb4_tile_ops tile_bf16 = {32, 2, BNB4_BF16, micro_bf16_4x4};

static size_t tile_f32_prep_bytes(const bnb4_gemm_args *a) { return bnb4_tile_prep_bytes(&tile_f32, a); }
static void tile_f32_prep(bnb4_gemm_args *a) { bnb4_tile_prep(&tile_f32, a); }
static size_t tile_f32_scratch(const bnb4_gemm_args *a) { return bnb4_tile_scratch_bytes(&tile_f32, a); }
static void tile_f32_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *s) {
    bnb4_tile_run(&tile_f32, &bnb4_kernels_avx512, a, j0, j1, s);
}
static size_t tile_bf16_prep_bytes(const bnb4_gemm_args *a) { return bnb4_tile_prep_bytes(&tile_bf16, a); }
static void tile_bf16_prep(bnb4_gemm_args *a) { bnb4_tile_prep(&tile_bf16, a); }
static size_t tile_bf16_scratch(const bnb4_gemm_args *a) { return bnb4_tile_scratch_bytes(&tile_bf16, a); }
static void tile_bf16_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *s) {
    bnb4_tile_run(&tile_bf16, &bnb4_kernels_avx512, a, j0, j1, s);
}

static const bnb4_gemm_kernel gemv_direct = {"gemv_f32acc_4x128__avx512", DIRECT_COLS, direct_prep_bytes, direct_prep,
                                             direct_scratch_bytes, direct_run, 1};
static const bnb4_gemm_kernel gemm_direct = {"gemm_f32acc_8x1x128__avx512", DIRECT_COLS, direct_prep_bytes,
                                             direct_prep, direct_scratch_bytes, direct_run, 1};
static const bnb4_gemm_kernel gemm_panel_f32 = {"gemm_f32_32x8_panel__avx512", PANEL_COLS, panel_prep_bytes, panel_prep,
                                                panel_scratch_bytes, panel_run, 1};
static const bnb4_gemm_kernel gemm_kpanel_f32 = {"gemm_f32_8x32_panel__avx512", KPANEL_NR, kpanel_prep_bytes, kpanel_prep,
                                                 kpanel_scratch_bytes, kpanel_run, 1};
static const bnb4_gemm_kernel gemm_tile_f32 = {"gemm_f32_4x4_tile__avx512", BNB4_TILE_COLS, tile_f32_prep_bytes,
                                               tile_f32_prep, tile_f32_scratch, tile_f32_run, 0};
static const bnb4_gemm_kernel gemm_tile_bf16 = {"gemm_bf16dot_4x4_tile__avx512bf16", BNB4_TILE_COLS,
                                                tile_bf16_prep_bytes, tile_bf16_prep, tile_bf16_scratch,
                                                tile_bf16_run, 0};

static const bnb4_gemm_kernel gemv_direct_bf16 = {"gemv_bf16dot_4x128__avx512bf16", DIRECT_COLS,
                                                  direct_bf16_prep_bytes, direct_bf16_prep, direct_scratch_bytes,
                                                  direct_bf16_run, 1};
static const bnb4_gemm_kernel gemm_direct_bf16 = {"gemm_bf16dot_8x1x128__avx512bf16", DIRECT_COLS,
                                                  direct_bf16_prep_bytes, direct_bf16_prep, direct_scratch_bytes,
                                                  direct_bf16_run, 1};

static const bnb4_gemm_kernel *gemm_select_avx512(bnb4_dtype dt, size_t m, int k_block_aligned) {
    const int bf16dot = dt == BNB4_BF16 && bnb4_cpu_info_get()->has_avx512bf16;
    if (bf16dot && m <= DIRECT_MAX_M && k_block_aligned)
        return m == 1 ? &gemv_direct_bf16 : &gemm_direct_bf16;
    if (bf16dot && m > DIRECT_MAX_M)
        return &gemm_tile_bf16;
    if (m <= DIRECT_MAX_M && k_block_aligned)
        return m == 1 ? &gemv_direct : &gemm_direct;
    if (!k_block_aligned)
        return &gemm_tile_f32;
    /* the row-lane kernel (faster by ~10%) unless its last 16-row group wastes 10% of the lanes or more */
    const size_t mp = (m + 15) / 16 * 16;
    return (mp - m) * 10 < mp ? &gemm_panel_f32 : &gemm_kpanel_f32;
}

const bnb4_cpu_kernels bnb4_kernels_avx512 = {
    BNB4_ISA_AVX512,
    {"quantize_f32__avx512", "quantize_f16__avx512", "quantize_bf16__avx512"},
    {"dequantize_f32__avx512", "dequantize_f16__avx512", "dequantize_bf16__avx512"},
    quantize_blocks_avx512,
    dequantize_blocks_avx512,
    gemm_select_avx512,
    nested_scales_avx512,
    quantize_nested_blocks_avx512,
};
