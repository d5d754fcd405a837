/*
 * kernels_avx2.c - AVX2 + FMA + F16C kernels (x86-64 CPUs without AVX-512). Compiled with only this
 * level's flags (cpu.cmake); called only after dispatch saw the features.
 *
 * Same algorithms as kernels_avx512.c in 8 lanes. The 16-entry codebook takes two registers: vpermps
 * looks up the low 3 bits in both halves and bit 3 (moved to the sign bit) picks one by blendvps.
 * Quantize finds a code by a binary search over the thresholds (4 steps for NF4, 3 + a rank table for FP4),
 * each step one vpermps of an 8-lane table, and takes the reciprocals of 8 blocks' absmax in 8 lanes. The direct
 * gemv (and gemm to m = 4) reads 32 bytes = 64 codes of a row at a time and decodes them by vpshufb from the
 * float32 codebook's four byte planes, the activations prepared in that order (decode64_element). Nested
 * absmax scales are looked up inside its dot loop from per-nested-block tables of the 256 possible
 * scales, as kernels_avx512.c does (direct_scales.h). Float16/bfloat16 dequantize looks up each block's
 * 16 rounded products by vpshufb. Past m = 4 the gemm is a column-lane panel kernel (decoded k-major
 * panels, a 4 x 16 broadcast-FMA micro-kernel) where K allows, else the 4x4 tile kernel. Measured on Zen 3:
 * docs/performance.md, CPU version 6.
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

ALWAYS_INLINE __m256 load8_f32(const void *src, bnb4_dtype dt, size_t i) {
    if (dt == BNB4_F32)
        return _mm256_loadu_ps((const float *)src + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)src + i));
    if (dt == BNB4_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

ALWAYS_INLINE __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* bnb4_ftz in 8 lanes: a subnormal becomes the zero of its sign (NaN kept). */
ALWAYS_INLINE __m256 ftz_signed8(__m256 v) {
    const __m256 sub = _mm256_cmp_ps(abs8(v), _mm256_set1_ps(0x1p-126f), _CMP_LT_OQ);
    return _mm256_blendv_ps(v, _mm256_and_ps(v, _mm256_set1_ps(-0.0f)), sub);
}

/* bnb4_f32_to_bf16 in 8 lanes, result in the low 16 bytes. */
ALWAYS_INLINE __m128i f32_to_bf16_rne(__m256 v) {
    const __m256i x = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i q = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    const __m256i b = _mm256_blendv_epi8(r, q, nan);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(b, b), 0x08));
}

ALWAYS_INLINE void store8(void *dst, bnb4_dtype dt, size_t i, __m256 v) {
    if (dt == BNB4_F32)
        _mm256_storeu_ps((float *)dst + i, v);
    else if (dt == BNB4_F16)
        _mm_storeu_si128((__m128i *)((uint16_t *)dst + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    else
        _mm_storeu_si128((__m128i *)((uint16_t *)dst + i), f32_to_bf16_rne(v));
}

/* cb[idx & 15] for 8 lanes; only the low 4 bits of idx matter. */
ALWAYS_INLINE __m256 lookup16(__m256i idx, __m256 cb_lo, __m256 cb_hi) {
    const __m256 lo = _mm256_permutevar8x32_ps(cb_lo, idx), hi = _mm256_permutevar8x32_ps(cb_hi, idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/* ---- quantize ------------------------------------------------------------------------------------------ */

/* ---- rcp.approx in 8 lanes: bnb4_rcp_approx_f32 (src/format/bnb4_rcp.c, the GPU reciprocal) step for step, as
 * kernels_avx512.c's rcp_approx16: the per-segment coefficients gathered, the hardware's truncated squarer as its
 * 15 partial-product rows, the sum in 64-bit lanes (even and odd lanes apart), then the same exponent, flush and
 * special-value handling. Bit-exact with the scalar function for every input (tests/kernels). */
extern const uint32_t bnb4_rcp_c0[128];
extern const uint16_t bnb4_rcp_c1[128];
extern const uint16_t bnb4_rcp_c2[128];

/* c1 | c2 << 16 per segment: one gather for both (the 16-bit tables cannot be gathered from in bounds) */
static void rcp_c12_build(uint32_t c12[128]) {
    for (int i = 0; i < 128; i++)
        c12[i] = (uint32_t)bnb4_rcp_c1[i] | (uint32_t)bnb4_rcp_c2[i] << 16;
}

/* (c0 << 13) + 2023 + c2 * sq - c1 * off, >> 15, for the 4 lanes whose operands are the low dwords of the qwords */
ALWAYS_INLINE __m256i rcp_sum_qwords(__m256i c0, __m256i c12, __m256i sq, __m256i off) {
    const __m256i low = _mm256_set1_epi64x(0xffffffff), low16 = _mm256_set1_epi64x(0xffff);
    __m256i sum = _mm256_add_epi64(_mm256_slli_epi64(_mm256_and_si256(c0, low), 13), _mm256_set1_epi64x(2023));
    sum = _mm256_add_epi64(sum, _mm256_mul_epu32(_mm256_srli_epi64(_mm256_and_si256(c12, low), 16), sq));
    sum = _mm256_sub_epi64(sum, _mm256_mul_epu32(_mm256_and_si256(c12, low16), off));
    return _mm256_srli_epi64(sum, 15);
}

ALWAYS_INLINE __m256 rcp_approx8(const uint32_t c12_table[128], __m256 x) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i sign = _mm256_and_si256(u, _mm256_set1_epi32((int)0x80000000u));
    const __m256i e = _mm256_and_si256(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(0xff));
    const __m256i m = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffff));
    const __m256i seg = _mm256_srli_epi32(m, 16), off = _mm256_and_si256(m, _mm256_set1_epi32(0xffff));
    /* truncated_square_high(off) */
    __m256i sq = _mm256_setzero_si256();
#pragma GCC unroll 16
    for (int a = 1; a < 16; a++) {
        const __m256i bit_clear = _mm256_cmpeq_epi32(_mm256_and_si256(off, _mm256_set1_epi32(1 << a)), _mm256_setzero_si256());
        sq = _mm256_add_epi32(sq, _mm256_andnot_si256(bit_clear, _mm256_srl_epi32(off, _mm_cvtsi32_si128(16 - a))));
    }
    sq = _mm256_sub_epi32(sq, _mm256_and_si256(_mm256_srli_epi32(off, 8), _mm256_set1_epi32(1)));
    sq = _mm256_srli_epi32(sq, 1);
    const __m256i c0 = _mm256_i32gather_epi32((const int *)bnb4_rcp_c0, seg, 4);
    const __m256i c12 = _mm256_i32gather_epi32((const int *)c12_table, seg, 4);
    const __m256i even = rcp_sum_qwords(c0, c12, sq, off);
    const __m256i odd = rcp_sum_qwords(_mm256_srli_epi64(c0, 32), _mm256_srli_epi64(c12, 32), _mm256_srli_epi64(sq, 32),
                                       _mm256_srli_epi64(off, 32));
    const __m256i sig = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xaa);
    /* t = rcp_hw(1.m) in (0.5, 1]: exponent field 126, or 127 for exactly 1.0 */
    const __m256i tv = _mm256_blendv_epi8(
        _mm256_or_si256(_mm256_set1_epi32(126 << 23), _mm256_and_si256(sig, _mm256_set1_epi32(0x7fffff))),
        _mm256_set1_epi32(0x3f800000), _mm256_cmpeq_epi32(sig, _mm256_set1_epi32(1 << 24)));
    const __m256i exp_out = _mm256_sub_epi32(_mm256_srli_epi32(tv, 23), _mm256_sub_epi32(e, _mm256_set1_epi32(127)));
    __m256i r = _mm256_or_si256(sign, _mm256_or_si256(_mm256_slli_epi32(exp_out, 23), _mm256_and_si256(tv, _mm256_set1_epi32(0x7fffff))));
    r = _mm256_blendv_epi8(r, sign, _mm256_cmpgt_epi32(_mm256_set1_epi32(1), exp_out));          /* flushed */
    r = _mm256_blendv_epi8(r, _mm256_or_si256(sign, _mm256_set1_epi32(0x7f800000)),                /* 0, subnormal */
                           _mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
    const __m256i nan_or_zero = _mm256_blendv_epi8(_mm256_set1_epi32(0x7fffffff), sign,            /* NaN; inf -> 0 */
                                                   _mm256_cmpeq_epi32(m, _mm256_setzero_si256()));
    r = _mm256_blendv_epi8(r, nan_or_zero, _mm256_cmpeq_epi32(e, _mm256_set1_epi32(255)));
    return _mm256_castsi256_ps(r);
}

void bnb4_avx2_rcp_approx(const float *x, size_t n, float *out) {
    uint32_t c12[128];
    rcp_c12_build(c12);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, rcp_approx8(c12, _mm256_loadu_ps(x + i)));
    if (i < n) {
        float in[8] = {0}, res[8];
        memcpy(in, x + i, (n - i) * sizeof(float));
        _mm256_storeu_ps(res, rcp_approx8(c12, _mm256_loadu_ps(in)));
        memcpy(out + i, res, (n - i) * sizeof(float));
    }
}

/* The code search's thresholds, one 8-lane table per step of a binary search: a step's table is indexed by the
 * code bits found so far (so each step is one vpermps, one compare and the index doubled plus the new bit). */
typedef struct {
    __m256 t1, t2, t3, t4;    /* NF4: t7; {t3, t11}; {t1, t5, t9, t13}; {t0, t2, ..., t14} */
    __m256 u1, u2, u3;        /* FP4 magnitude ranks: u3; {u1, u5}; {u0, u2, u4, u6} */
    __m256i rank_to_code;     /* FP4 rank -> bit pattern */
    __m256 fmin, nfmin;       /* +-FLT_MIN */
} code_consts8;

static void code_consts8_init(code_consts8 *k) {
    static const float t[15] = {BNB4_NF4_T0, BNB4_NF4_T1,  BNB4_NF4_T2,  BNB4_NF4_T3,  BNB4_NF4_T4,
                                BNB4_NF4_T5, BNB4_NF4_T6,  BNB4_NF4_T7,  BNB4_NF4_T8,  BNB4_NF4_T9,
                                BNB4_NF4_T10, BNB4_NF4_T11, BNB4_NF4_T12, BNB4_NF4_T13, BNB4_NF4_T14};
    static const float u[7] = {BNB4_FP4_U0, BNB4_FP4_U1, BNB4_FP4_U2, BNB4_FP4_U3, BNB4_FP4_U4, BNB4_FP4_U5, BNB4_FP4_U6};
    static const int32_t rank_to_code[8] = {BNB4_FP4_RANK_TO_CODE};
    k->t1 = _mm256_set1_ps(t[7]);
    k->t2 = _mm256_setr_ps(t[3], t[11], 0, 0, 0, 0, 0, 0);
    k->t3 = _mm256_setr_ps(t[1], t[5], t[9], t[13], 0, 0, 0, 0);
    k->t4 = _mm256_setr_ps(t[0], t[2], t[4], t[6], t[8], t[10], t[12], t[14]);
    k->u1 = _mm256_set1_ps(u[3]);
    k->u2 = _mm256_setr_ps(u[1], u[5], 0, 0, 0, 0, 0, 0);
    k->u3 = _mm256_setr_ps(u[0], u[2], u[4], u[6], 0, 0, 0, 0);
    k->rank_to_code = _mm256_loadu_si256((const __m256i *)rank_to_code);
    k->fmin = _mm256_set1_ps(0x1p-126f), k->nfmin = _mm256_set1_ps(-0x1p-126f);
}

/* c -> 2c + [v > table[c]] (a true compare is all ones = -1) */
ALWAYS_INLINE __m256i search_step(__m256i c, __m256 v, __m256 table) {
    return _mm256_sub_epi32(_mm256_add_epi32(c, c), _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_permutevar8x32_ps(table, c), _CMP_GT_OQ)));
}

/* #{k : xn > t[k]} for the ascending NF4 thresholds t[0..14], i.e. the reference's 15 compares (NaN fails every
 * compare: 0); ties go to the lower code. */
ALWAYS_INLINE __m256i nf4_codes8(__m256 xn, const code_consts8 *k) {
    const __m256i c = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_castps_si256(_mm256_cmp_ps(xn, k->t1, _CMP_GT_OQ)));
    return search_step(search_step(search_step(c, xn, k->t2), xn, k->t3), xn, k->t4);
}

/* bnb4_fp4_encode for a given sign mask: rank of |xn| among u[0..6], rank -> bit pattern by table. */
ALWAYS_INLINE __m256i fp4_codes8_signed(__m256 xn, __m256 neg, const code_consts8 *k) {
    const __m256 a = abs8(xn);
    const __m256i r0 = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_castps_si256(_mm256_cmp_ps(a, k->u1, _CMP_GT_OQ)));
    const __m256i code = _mm256_permutevar8x32_epi32(k->rank_to_code, search_step(search_step(r0, a, k->u2), a, k->u3));
    return _mm256_or_si256(code, _mm256_and_si256(_mm256_castps_si256(neg), _mm256_set1_epi32(8)));
}

/* bnb4_fp4_encode: the sign is xn < 0 (so -0.0 and NaN are positive). */
ALWAYS_INLINE __m256i fp4_codes8(__m256 xn, const code_consts8 *k) {
    return fp4_codes8_signed(xn, _mm256_cmp_ps(xn, _mm256_setzero_ps(), _CMP_LT_OQ), k);
}

/* p = x * y's lanes at +-FLT_MIN through bnb4_cpu_ftz_edge_lanes (the GPU may flush them). */
ALWAYS_INLINE __m256 ftz_edge_fixup8(__m256 p, __m256 x, __m256 y) {
    const int edge = _mm256_movemask_ps(_mm256_cmp_ps(abs8(p), _mm256_set1_ps(0x1p-126f), _CMP_EQ_OQ));
    if (__builtin_expect(edge == 0, 1))
        return p;
    float pv[8], xv[8], yv[8];
    _mm256_storeu_ps(pv, p), _mm256_storeu_ps(xv, x), _mm256_storeu_ps(yv, y);
    bnb4_cpu_ftz_edge_lanes(pv, xv, yv, (unsigned)edge, 8);
    return _mm256_loadu_ps(pv);
}

/* x * inv as mul.ftz.f32: subnormal x counts as 0 (so 0 * inf = NaN stays), subnormal products flush. */
ALWAYS_INLINE __m256 mul_ftz(__m256 x, __m256 inv) {
    const __m256 fmin = _mm256_set1_ps(0x1p-126f);
    /* keep lanes where !(|v| < FLT_MIN): NaN is kept, subnormals become +0 (the sign of a zero never
     * changes a code: 0 > every negative threshold and fails "xn < 0") */
    const __m256 xf = _mm256_and_ps(x, _mm256_cmp_ps(abs8(x), fmin, _CMP_NLT_UQ));
    const __m256 p = _mm256_mul_ps(xf, inv);
    return ftz_edge_fixup8(_mm256_and_ps(p, _mm256_cmp_ps(abs8(p), fmin, _CMP_NLT_UQ)), x, inv);
}

/* 32 codes (four vectors of dwords, elements 8v..8v+7) -> 16 packed bytes, high nibble first. */
ALWAYS_INLINE void pack32(uint8_t *out, __m256i c0, __m256i c1, __m256i c2, __m256i c3) {
    /* bytes, in each 128-bit lane: c0, c1, c2, c3's elements 0..3 (lane 0) or 4..7 (lane 1) */
    const __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1), _mm256_packus_epi32(c2, c3));
    /* each 16-bit word holds an element pair (2i, 2i + 1): its low byte becomes code[2i] << 4 | code[2i + 1] */
    const __m256i p = _mm256_or_si256(_mm256_slli_epi16(b, 4), _mm256_srli_epi16(b, 8));
    const __m256i lows = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i q = _mm256_shuffle_epi8(p, lows); /* lane 0: pairs of c0..c3's first halves; lane 1: second */
    _mm_storeu_si128((__m128i *)out, _mm_unpacklo_epi16(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)));
}

/* The absmax pass prefetches this far ahead into L1 (measured on Zen 3: 7 % faster from DRAM than none, 4096 the same) */
enum { QUANT_PREFETCH = 2048 };

ALWAYS_INLINE void quantize_blocks_impl(const void *src, bnb4_dtype dt, size_t bs, int nf4, size_t b0, size_t b1,
                                        uint8_t *packed, float *absmax) {
    code_consts8 k;
    code_consts8_init(&k);
    uint32_t c12[128];
    rcp_c12_build(c12);
    /* absmax of 8 blocks first, then their reciprocals in one 8-lane rcp.approx (rcp_approx8 returns no
     * subnormals: the ftz of the reference's ftz(rcp(absmax)) has nothing to do) */
    enum { GROUP = 8 };
    float invs[GROUP];
    const size_t esize = dt == BNB4_F32 ? 4 : 2;
    for (size_t b = b0; b < b1; b++) {
        const size_t e0 = b * bs;
        if ((b - b0) % GROUP == 0) {
            const size_t g1 = b1 - b < GROUP ? b1 : b + GROUP;
            float am[GROUP] = {0};
            for (size_t g = b; g < g1; g++) {
                __m256 m0 = _mm256_set1_ps(-0x1.fffffep+127f), m1 = m0; /* the kernel's running max starts at -FLT_MAX */
                for (size_t i = 0; i < bs; i += 16) { /* NaN operand -> vmaxps keeps m */
                    _mm_prefetch((const char *)((uintptr_t)src + (g * bs + i) * esize + QUANT_PREFETCH), _MM_HINT_T0);
                    m0 = _mm256_max_ps(abs8(load8_f32(src, dt, g * bs + i)), m0);
                    m1 = _mm256_max_ps(abs8(load8_f32(src, dt, g * bs + i + 8)), m1);
                }
                const __m256 m = _mm256_max_ps(m0, m1);
                __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                h = _mm_max_ps(h, _mm_movehl_ps(h, h));
                h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
                /* max of ftz(|x|) == ftz(max |x|): flushing is monotone */
                am[g - b] = absmax[g] = bnb4_ftz(_mm_cvtss_f32(h));
            }
            _mm256_storeu_ps(invs, rcp_approx8(c12, _mm256_loadu_ps(am)));
        }
        const float amax = absmax[b];
        const __m256 inv = _mm256_set1_ps(invs[(b - b0) % GROUP]);
        uint8_t *out = packed + e0 / 2;
        if (amax >= 0x1p-110f) {
            /* Common case: inv <= 2^110, so a flushed input would only have given |xn| < 2^-16, which encodes
             * like 0 (NF4: code 7; FP4: rank 0) as does a subnormal product; only FP4's sign needs both the
             * input and the product to be normal negatives (<= -FLT_MIN: -FLT_MIN itself is normal; a product
             * IEEE rounds to it, the GPU may flush: ftz_edge_fixup8). No other flushing needed. */
            for (size_t i = 0; i < bs; i += 32) {
                __m256i c[4];
#pragma GCC unroll 4
                for (int v = 0; v < 4; v++) {
                    const __m256 x = load8_f32(src, dt, e0 + i + 8 * (size_t)v), n = _mm256_mul_ps(x, inv);
                    if (nf4) {
                        c[v] = nf4_codes8(n, &k);
                    } else {
                        const __m256 s = ftz_edge_fixup8(n, x, inv);
                        c[v] = fp4_codes8_signed(n, _mm256_and_ps(_mm256_cmp_ps(x, k.nfmin, _CMP_LE_OQ),
                                                                  _mm256_cmp_ps(s, k.nfmin, _CMP_LE_OQ)), &k);
                    }
                }
                pack32(out + i / 2, c[0], c[1], c[2], c[3]);
            }
            continue;
        }
        for (size_t i = 0; i < bs; i += 32) { /* tiny or zero absmax: flush exactly as mul.ftz does */
            __m256i c[4];
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                const __m256 xn = mul_ftz(load8_f32(src, dt, e0 + i + 8 * (size_t)v), inv);
                c[v] = nf4 ? nf4_codes8(xn, &k) : fp4_codes8(xn, &k);
            }
            pack32(out + i / 2, c[0], c[1], c[2], c[3]);
        }
    }
}

static void quantize_blocks_avx2(const void *src, bnb4_dtype dt, size_t bs, bnb4_quant_type qt, size_t b0, size_t b1,
                                 uint8_t *packed, float *absmax) {
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

/* ---- nested quantize ---------------------------------------------------------------------------------------- */

/* bnb4_mul_ftz in 8 lanes: inputs and product flushed to the zero of their sign. */
ALWAYS_INLINE __m256 mul_ftz_signed8(__m256 x, __m256 y) {
    return ftz_edge_fixup8(ftz_signed8(_mm256_mul_ps(ftz_signed8(x), ftz_signed8(y))), x, y);
}

/* Lanes [0, live) set. */
ALWAYS_INLINE __m256i live_lanes(size_t live) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(live < 8 ? live : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* bnb4_ref_quantize_nested_blocks in 8 lanes, as kernels_avx512.c's: the same 7-step search over the 256-entry
 * signed map (dQuantize<0>: the pivot walks down on "not greater", so NaN walks down too) remembering the last
 * entries seen below and above, each step's entry gathered, then the same FTZ midpoint test between the final
 * pivot and the bracketing entry on x's side. Tails of a nested block are masked lanes. */
static void quantize_nested_blocks_avx2(const float *absmax, size_t nblocks, float offset, size_t nbs, size_t j0,
                                        size_t j1, uint8_t *codes, float *nested_absmax) {
    static const float map[256] = {BNB4_NESTED_CODE_VALUES};
    const __m256 voff = _mm256_set1_ps(offset), half = _mm256_set1_ps(0.5f);
    for (size_t j = j0; j < j1; j++) {
        const size_t begin = j * nbs, end = nblocks - begin < nbs ? nblocks : begin + nbs;
        /* absmax - offset in IEEE float32 (torch), loaded with FTZ; fmaxf ignores NaN (vmaxps keeps m) */
        __m256 m = _mm256_set1_ps(end - begin < nbs ? 0.0f : -0x1.fffffep+127f);
        for (size_t i = begin; i < end; i += 8) {
            const __m256i live = live_lanes(end - i);
            const __m256 d = ftz_signed8(_mm256_sub_ps(_mm256_maskload_ps(absmax + i, live), voff));
            m = _mm256_blendv_ps(m, _mm256_max_ps(abs8(d), m), _mm256_castsi256_ps(live));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        const float amax = _mm_cvtss_f32(h);
        nested_absmax[j] = amax;
        const __m256 inv = _mm256_set1_ps(bnb4_rcp_approx_f32(amax));
        for (size_t i = begin; i < end; i += 8) {
            const __m256i live = live_lanes(end - i);
            const __m256 x = mul_ftz_signed8(_mm256_sub_ps(_mm256_maskload_ps(absmax + i, live), voff), inv);
            __m256i pivot = _mm256_set1_epi32(127), upper_pivot = _mm256_set1_epi32(255);
            __m256i lower_pivot = _mm256_setzero_si256();
            __m256 lower = _mm256_set1_ps(-1.0f), upper = _mm256_set1_ps(1.0f), val = _mm256_set1_ps(map[127]);
            for (int step = 64; step > 0; step >>= 1) {
                const __m256 gt = _mm256_cmp_ps(x, val, _CMP_GT_OQ);
                const __m256i gti = _mm256_castps_si256(gt);
                lower_pivot = _mm256_blendv_epi8(lower_pivot, pivot, gti);
                lower = _mm256_blendv_ps(lower, val, gt);
                upper_pivot = _mm256_blendv_epi8(pivot, upper_pivot, gti);
                upper = _mm256_blendv_ps(val, upper, gt);
                /* pivot + step where greater, else pivot - step */
                const __m256i st = _mm256_set1_epi32(step);
                pivot = _mm256_add_epi32(pivot, _mm256_sub_epi32(_mm256_and_si256(gti, _mm256_add_epi32(st, st)), st));
                val = _mm256_i32gather_ps(map, pivot, 4);
            }
            upper = _mm256_blendv_ps(upper, _mm256_set1_ps(map[255]),
                                     _mm256_castsi256_ps(_mm256_cmpeq_epi32(upper_pivot, _mm256_set1_epi32(255))));
            lower = _mm256_blendv_ps(lower, _mm256_set1_ps(map[0]),
                                     _mm256_castsi256_ps(_mm256_cmpeq_epi32(lower_pivot, _mm256_setzero_si256())));
            /* midpoints as the kernel rounds them: mul.ftz(add.ftz(a, val), 0.5) */
            const __m256 mid_up = ftz_signed8(_mm256_mul_ps(ftz_signed8(_mm256_add_ps(ftz_signed8(upper), ftz_signed8(val))), half));
            const __m256 mid_lo = ftz_signed8(_mm256_mul_ps(ftz_signed8(_mm256_add_ps(ftz_signed8(lower), ftz_signed8(val))), half));
            const __m256 above = _mm256_cmp_ps(x, val, _CMP_GT_OQ);
            const __m256 take_up = _mm256_and_ps(above, _mm256_cmp_ps(x, mid_up, _CMP_GT_OQ));
            const __m256 take_lo = _mm256_andnot_ps(above, _mm256_cmp_ps(x, mid_lo, _CMP_LT_OQ));
            __m256i q = _mm256_blendv_epi8(pivot, upper_pivot, _mm256_castps_si256(take_up));
            q = _mm256_blendv_epi8(q, lower_pivot, _mm256_castps_si256(take_lo));
            /* 8 dwords (0..255) -> 8 bytes */
            const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            const uint64_t bytes = (uint64_t)_mm_cvtsi128_si64(_mm_packus_epi16(w, w));
            memcpy(codes + i, &bytes, end - i < 8 ? end - i : 8);
        }
    }
}

/* ---- dequantize --------------------------------------------------------------------------------------- */

/* 16-bit outputs (float16, bfloat16): a block's 16 possible products code[c] * s are rounded once, then its codes
 * look their results up 32 at a time by vpshufb, a table of the results' low bytes and one of their high bytes
 * (each in both 128-bit lanes). The same bits as rounding every product: it is the same product. */
typedef struct {
    __m256i lo, hi;
} half_table;

ALWAYS_INLINE half_table half_table_make(__m256 cb_lo, __m256 cb_hi, __m256 vs, bnb4_dtype dt) {
    const __m256 p0 = _mm256_mul_ps(cb_lo, vs), p1 = _mm256_mul_ps(cb_hi, vs);
    __m128i h0, h1; /* the 16 results, 8 a register */
    if (dt == BNB4_F16) {
        h0 = _mm256_cvtps_ph(p0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        h1 = _mm256_cvtps_ph(p1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
        h0 = f32_to_bf16_rne(p0), h1 = f32_to_bf16_rne(p1);
    }
    const __m128i even = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i odd = _mm_setr_epi8(1, 3, 5, 7, 9, 11, 13, 15, -1, -1, -1, -1, -1, -1, -1, -1);
    half_table t;
    t.lo = _mm256_broadcastsi128_si256(_mm_unpacklo_epi64(_mm_shuffle_epi8(h0, even), _mm_shuffle_epi8(h1, even)));
    t.hi = _mm256_broadcastsi128_si256(_mm_unpacklo_epi64(_mm_shuffle_epi8(h0, odd), _mm_shuffle_epi8(h1, odd)));
    return t;
}

/* 64 codes (32 bytes at p) -> 64 16-bit results at out. */
ALWAYS_INLINE void half_lookup64(const uint8_t *p, half_table t, uint16_t *out) {
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i b = _mm256_loadu_si256((const __m256i *)p);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), nib), lo = _mm256_and_si256(b, nib);
    /* element order: lane 0 holds elements 0..31 (e0: 0..15, e1: 16..31), lane 1 elements 32..63 */
    const __m256i e0 = _mm256_unpacklo_epi8(hi, lo), e1 = _mm256_unpackhi_epi8(hi, lo);
    const __m256i l0 = _mm256_shuffle_epi8(t.lo, e0), h0 = _mm256_shuffle_epi8(t.hi, e0);
    const __m256i l1 = _mm256_shuffle_epi8(t.lo, e1), h1 = _mm256_shuffle_epi8(t.hi, e1);
    const __m256i r0 = _mm256_unpacklo_epi8(l0, h0), r1 = _mm256_unpackhi_epi8(l0, h0); /* 0..7 | 32..39, 8..15 | 40..47 */
    const __m256i r2 = _mm256_unpacklo_epi8(l1, h1), r3 = _mm256_unpackhi_epi8(l1, h1); /* 16..23 | 48..55, 24..31 | 56..63 */
    _mm256_storeu_si256((__m256i *)out, _mm256_permute2x128_si256(r0, r1, 0x20));
    _mm256_storeu_si256((__m256i *)(out + 16), _mm256_permute2x128_si256(r2, r3, 0x20));
    _mm256_storeu_si256((__m256i *)(out + 32), _mm256_permute2x128_si256(r0, r1, 0x31));
    _mm256_storeu_si256((__m256i *)(out + 48), _mm256_permute2x128_si256(r2, r3, 0x31));
}

/* 32 codes (16 bytes at p) -> 32 16-bit results at out (blocksize 32). */
ALWAYS_INLINE void half_lookup32(const uint8_t *p, half_table t, uint16_t *out) {
    const __m128i nib = _mm_set1_epi8(0x0f);
    const __m128i b = _mm_loadu_si128((const __m128i *)p);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), nib), lo = _mm_and_si128(b, nib);
    const __m256i e = _mm256_set_m128i(_mm_unpackhi_epi8(hi, lo), _mm_unpacklo_epi8(hi, lo)); /* 0..15 | 16..31 */
    const __m256i l = _mm256_shuffle_epi8(t.lo, e), h = _mm256_shuffle_epi8(t.hi, e);
    const __m256i r0 = _mm256_unpacklo_epi8(l, h), r1 = _mm256_unpackhi_epi8(l, h); /* 0..7 | 16..23, 8..15 | 24..31 */
    _mm256_storeu_si256((__m256i *)out, _mm256_permute2x128_si256(r0, r1, 0x20));
    _mm256_storeu_si256((__m256i *)(out + 16), _mm256_permute2x128_si256(r0, r1, 0x31));
}

static void dequantize_blocks_avx2(const uint8_t *packed, const float *scales, const float *codebook, size_t bs,
                                   size_t nblocks, bnb4_dtype dt, void *dst) {
    const __m256 cb_lo = _mm256_loadu_ps(codebook), cb_hi = _mm256_loadu_ps(codebook + 8);
    for (size_t b = 0; b < nblocks; b++) {
        const float s = scales[b];
        const uint8_t *p = packed + b * bs / 2;
        const size_t e0 = b * bs;
        /* products may be subnormal, or NaN (s NaN, or infinite times a zero code): exact scalar path */
        if (!(fabsf(s) >= 0x1p-118f && fabsf(s) <= 0x1.fffffep+127f)) {
            for (size_t i = 0; i < bs; i++)
                bnb4_ref_store(dst, dt, e0 + i, bnb4_mul_ftz(codebook[bnb4_nibble_at(p, i)], s));
            continue;
        }
        const __m256 vs = _mm256_set1_ps(s);
        if (dt != BNB4_F32) {
            const half_table t = half_table_make(cb_lo, cb_hi, vs, dt);
            uint16_t *out = (uint16_t *)dst + e0;
            if (bs == 32)
                half_lookup32(p, t, out);
            else
                for (size_t i = 0; i < bs; i += 64)
                    half_lookup64(p + i / 2, t, out + i);
            continue;
        }
        for (size_t i = 0; i < bs; i += 16) {
            const __m128i by = _mm_loadl_epi64((const __m128i *)(p + i / 2)); /* 8 bytes, 16 codes */
            const __m128i e = _mm_unpacklo_epi8(_mm_srli_epi16(by, 4), by);  /* element order */
            const __m256i i0 = _mm256_cvtepu8_epi32(e), i1 = _mm256_cvtepu8_epi32(_mm_srli_si128(e, 8));
            store8(dst, dt, e0 + i, _mm256_mul_ps(lookup16(i0, cb_lo, cb_hi), vs));
            store8(dst, dt, e0 + i + 8, _mm256_mul_ps(lookup16(i1, cb_lo, cb_hi), vs));
        }
    }
}

/* ---- gemm: direct kernel (m <= 4) ---------------------------------------------------------------------- */

enum { DIRECT_MAX_M = 4, DIRECT_COLS = 16, PF_GROUPS = 4 };

/* The element of a 64-code chunk that lane l of decode64's vector v holds: byte 16 (l / 4) + 4 (v % 4) + l % 4 of
 * the chunk, its high nibble (v < 4) or low one. Lanes 0..3 hold elements 0..31, lanes 4..7 elements 32..63. */
static size_t decode64_element(size_t v, size_t l) { return 2 * (16 * (l >> 2) + 4 * (v & 3) + (l & 3)) + (v >> 2); }

/* X[i][c*64 + 8v + l] = x[i][c*64 + decode64_element(v, l)], float32. */
static size_t direct_prep_bytes(const bnb4_gemm_args *a) { return a->m * a->w->cols * sizeof(float); }

static void direct_prep(bnb4_gemm_args *a) {
    const size_t K = a->w->cols;
    float *xp = (float *)a->xp;
    for (size_t i = 0; i < a->m; i++)
        for (size_t c = 0; c < K; c += 64)
            for (size_t v = 0; v < 8; v++)
                for (size_t l = 0; l < 8; l++)
                    xp[i * K + c + 8 * v + l] = bnb4_ref_load(a->x, a->dt, i * K + c + decode64_element(v, l));
}

/* The codebook as 4 byte planes, each 16 bytes in both 128-bit lanes: vpshufb looks up 32 codes' byte j at once. */
typedef struct {
    __m256i b[4];
} code_planes;

static code_planes code_planes_make(const float *codebook) {
    uint8_t t[4][16];
    for (int e = 0; e < 16; e++) {
        uint32_t u;
        memcpy(&u, codebook + e, sizeof u);
        for (int j = 0; j < 4; j++)
            t[j][e] = (uint8_t)(u >> (8 * j));
    }
    code_planes p;
    for (int j = 0; j < 4; j++)
        p.b[j] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)t[j]));
    return p;
}

/* The 32 codes of nibble vector n (a code in each byte) as float32: four byte-plane lookups, their bytes
 * interleaved into dwords. f[t] lane l = the code of byte 16 (l / 4) + 4 t + l % 4. */
ALWAYS_INLINE void decode32_planes(__m256i n, const code_planes *p, __m256 f[4]) {
    const __m256i b0 = _mm256_shuffle_epi8(p->b[0], n), b1 = _mm256_shuffle_epi8(p->b[1], n);
    const __m256i b2 = _mm256_shuffle_epi8(p->b[2], n), b3 = _mm256_shuffle_epi8(p->b[3], n);
    const __m256i w0 = _mm256_unpacklo_epi8(b0, b1), w1 = _mm256_unpackhi_epi8(b0, b1);
    const __m256i w2 = _mm256_unpacklo_epi8(b2, b3), w3 = _mm256_unpackhi_epi8(b2, b3);
    f[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(w0, w2)), f[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(w0, w2));
    f[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(w1, w3)), f[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(w1, w3));
}

static size_t direct_scratch_bytes(const bnb4_gemm_args *a) { return direct_scales_bytes(a->w, DIRECT_COLS); }

/* Tables of the nested blocks that blocks [b0, b1) lie in (the first one at tab), and each block's index. */
static void nested_tabs_build(const bnb4_qtensor *q, size_t b0, size_t b1, float *tab, uint32_t *ix) {
    const size_t nbs = q->nested.blocksize, t0 = b0 / nbs, t1 = (b1 - 1) / nbs;
    const __m256 offset = _mm256_set1_ps(q->nested.offset);
    /* ftz(code) once, and its smallest nonzero magnitude: a nested absmax whose products with it stay
     * normal needs no flushing of the products (the common case: one multiply and one add per entry) */
    float fc[256] __attribute__((aligned(32)));
    __m256 vmin = _mm256_set1_ps(INFINITY);
    for (int i = 0; i < 32; i++) {
        const __m256 c = ftz_signed8(_mm256_loadu_ps(q->nested.code + 8 * i));
        _mm256_store_ps(fc + 8 * i, c);
        const __m256 a = abs8(c);
        vmin = _mm256_blendv_ps(vmin, _mm256_min_ps(a, vmin), _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ));
    }
    __m128 h = _mm_min_ps(_mm256_castps256_ps128(vmin), _mm256_extractf128_ps(vmin, 1));
    h = _mm_min_ps(h, _mm_movehl_ps(h, h));
    h = _mm_min_ss(h, _mm_shuffle_ps(h, h, 1));
    const double cmin = _mm_cvtss_f32(h);
    for (size_t t = t0; t <= t1; t++) {
        const float n = bnb4_ftz(q->nested.absmax[t]), an = fabsf(n);
        const __m256 nv = _mm256_set1_ps(n);
        float *tt = tab + (t - t0) * 256;
        if (an == 0.0f || an != an || cmin * an >= 0x1p-126) { /* exact products are 0, NaN or >= FLT_MIN */
            for (int i = 0; i < 32; i++)
                _mm256_storeu_ps(tt + 8 * i, _mm256_add_ps(_mm256_mul_ps(_mm256_load_ps(fc + 8 * i), nv), offset));
        } else {
            for (int i = 0; i < 32; i++) {
                const __m256 c = _mm256_load_ps(fc + 8 * i);
                _mm256_storeu_ps(tt + 8 * i, _mm256_add_ps(ftz_edge_fixup8(ftz_signed8(_mm256_mul_ps(c, nv)), c, nv), offset));
            }
        }
        const size_t e0 = t * nbs < b0 ? b0 : t * nbs, e1 = (t + 1) * nbs < b1 ? (t + 1) * nbs : b1;
        const uint32_t base = (uint32_t)((t - t0) * 256);
        size_t b = e0;
        for (; b + 8 <= e1; b += 8)
            _mm256_storeu_si256((__m256i *)(ix + (b - b0)),
                                _mm256_add_epi32(_mm256_set1_epi32((int)base),
                                                 _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q->nested.codes + b)))));
        for (; b < e1; b++)
            ix[b - b0] = base + q->nested.codes[b];
    }
}

/* Lane l's scale for the 64-element chunk at c of row r (lane l holds elements 8l..8l+7). */
ALWAYS_INLINE __m256 scale_vec(const scale_rows *sr, int r, size_t c, size_t bs, const int tabs) {
    const __m256i lane_block = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1); /* bs == 32 only */
    if (!tabs) {
        if (bs >= 64)
            return _mm256_broadcast_ss(sr->s[r] + c / bs);
        return _mm256_permutevar8x32_ps(
            _mm256_castps128_ps256(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(sr->s[r] + c / bs)))), lane_block);
    }
    const uint32_t *ix = sr->ix[r] + c / bs;
    const float *t = sr->tab;
    if (bs >= 64)
        return _mm256_broadcast_ss(t + ix[0]);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_unpacklo_ps(_mm_load_ss(t + ix[0]), _mm_load_ss(t + ix[1]))),
                                    lane_block);
}

ALWAYS_INLINE __m256i nibble_plane(__m256i d, int k) {
    switch (k) {
    case 0: return d;
    case 1: return _mm256_srli_epi32(d, 4);
    case 2: return _mm256_srli_epi32(d, 8);
    case 3: return _mm256_srli_epi32(d, 12);
    case 4: return _mm256_srli_epi32(d, 16);
    case 5: return _mm256_srli_epi32(d, 20);
    case 6: return _mm256_srli_epi32(d, 24);
    default: return _mm256_srli_epi32(d, 28);
    }
}

ALWAYS_INLINE void direct_dot(const float *xp, size_t K, size_t bs, const int MR, const int RB,
                              const uint8_t *const *wrow, uintptr_t pf, const scale_rows *sr, const int tabs,
                              const code_planes *planes, float (*out)[4]) {
    const __m256i nib = _mm256_set1_epi8(0x0f);
    __m256 acc[DIRECT_MAX_M][4];
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++)
            acc[i][r] = _mm256_setzero_ps();
    for (size_t c = 0; c < K; c += 64) {
        __m256 p[DIRECT_MAX_M][4];
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++) {
            const __m256i d = _mm256_loadu_si256((const __m256i *)(wrow[r] + c / 2));
            /* a later row group into L2, half a line per row per chunk (see kernels_avx512.c) */
            _mm_prefetch((const char *)(pf + (c / 64 * (size_t)RB + (size_t)r) * 32), _MM_HINT_T1);
            #pragma GCC unroll 2
            for (int h = 0; h < 2; h++) { /* high nibbles (vectors 0..3), then low ones (4..7) */
                __m256 w[4];
                decode32_planes(_mm256_and_si256(h == 0 ? _mm256_srli_epi16(d, 4) : d, nib), planes, w);
                #pragma GCC unroll 8
                for (int i = 0; i < MR; i++)
                    #pragma GCC unroll 4
                    for (int t = 0; t < 4; t++) {
                        const __m256 xv = _mm256_loadu_ps(xp + (size_t)i * K + c + 8 * (size_t)(4 * h + t));
                        p[i][r] = h == 0 && t == 0 ? _mm256_mul_ps(xv, w[t]) : _mm256_fmadd_ps(xv, w[t], p[i][r]);
                    }
            }
        }
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++) {
            const __m256 sv = scale_vec(sr, r, c, bs, tabs);
            #pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                acc[i][r] = _mm256_fmadd_ps(p[i][r], sv, acc[i][r]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++) {
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[i][r]), _mm256_extractf128_ps(acc[i][r], 1));
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
            out[i][r] = _mm_cvtss_f32(h);
        }
}

ALWAYS_INLINE void direct_run_block_impl(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch, const int tabs) {
    const bnb4_qtensor *w = a->w;
    const size_t K = w->cols, bs = w->blocksize, m = a->m;
    const code_planes planes = code_planes_make(a->codebook);
    const float *xp = (const float *)a->xp;
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
        const uintptr_t pf = (uintptr_t)w->packed + (j + PF_GROUPS * (size_t)RB) * K / 2; /* an address only */
        switch (MR) {
        case 1: direct_dot(xp, K, bs, 1, 4, wrow, pf, &sr, tabs, &planes, out); break;
        case 2: direct_dot(xp, K, bs, 2, 2, wrow, pf, &sr, tabs, &planes, out); break;
        case 3: direct_dot(xp, K, bs, 3, 1, wrow, pf, &sr, tabs, &planes, out); break;
        default: direct_dot(xp, K, bs, 4, 1, wrow, pf, &sr, tabs, &planes, out); break;
        }
        bnb4_cpu_store_rows_x4(a, j, (size_t)MR, rb, (const float (*)[4])out);
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

/* ---- gemm: column-lane panel kernel (m > DIRECT_MAX_M) -------------------------------------------------------
 * kernels_avx512.c's column-lane panel in 8 lanes. GotoBLAS-style: per 16 output columns and 128-element K chunk
 * the weights are decoded once into a k-major panel Wt[k][16] (8 KiB, L1), and a 4 x 16 micro-kernel keeps C in 8
 * accumulators: per k two panel loads, 4 broadcasts of X (packed k-major in 4-row groups by prep) and 8 FMAs; no
 * horizontal sums. Decoding: 8 rows' 32-byte pieces (8 dwords each) transposed 8 x 8 give, in vector q, dword q of
 * the 8 rows (lane = weight row), whose nibble plane p (shift 4p) is element 8q + (p ^ 1) of every row, looked up
 * and scaled by the rows' block scales: f32(code * scale) as dequantize writes it (flushed to zero where the scale
 * makes a product subnormal). C of a unit sums its K chunks in order, so results do not depend on the thread split. */

enum { KPANEL_NR = 16, KPANEL_MR = 4, KPANEL_KC = 128 };

static size_t kpanel_groups(size_t m) { return xpanel_groups(m, KPANEL_MR); }

/* Xp[g][k][i] = x[4g + i][k] as float32, rows past m zero (col_panel.h). */
static size_t kpanel_prep_bytes(const bnb4_gemm_args *a) { return xpanel_bytes(a, KPANEL_MR); }
static void kpanel_prep(bnb4_gemm_args *a) { xpanel_pack_kmajor(a, KPANEL_MR); }

/* Scratch: block scales of 16 rows | Wt panel | C (4-row groups x 16). */
static size_t kpanel_scales_floats(const bnb4_qtensor *w) { return col_panel_scales_floats(w, KPANEL_NR, 8); }
static size_t kpanel_scratch_bytes(const bnb4_gemm_args *a) {
    return col_panel_scratch_bytes(a, KPANEL_NR, KPANEL_MR, KPANEL_KC, 8);
}

/* C[i][0..16) += sum_k Xp[k][i] Wt[k][0..16) for i < MR. */
ALWAYS_INLINE void kpanel_micro(const float *xp, const float *wt, const int MR, float *c) {
    __m256 acc[KPANEL_MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (size_t k = 0; k < KPANEL_KC; k++) {
        const __m256 w0 = _mm256_load_ps(wt + k * KPANEL_NR), w1 = _mm256_load_ps(wt + k * KPANEL_NR + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m256 xb = _mm256_broadcast_ss(xp + k * KPANEL_MR + (size_t)i);
            acc[i][0] = _mm256_fmadd_ps(xb, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xb, w1, acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        _mm256_store_ps(c + i * KPANEL_NR, _mm256_add_ps(_mm256_load_ps(c + i * KPANEL_NR), acc[i][0]));
        _mm256_store_ps(c + i * KPANEL_NR + 8, _mm256_add_ps(_mm256_load_ps(c + i * KPANEL_NR + 8), acc[i][1]));
    }
}

/* v[q] = dword q of rows[0..8)'s 32 bytes at off: an 8 x 8 transpose of dwords. */
ALWAYS_INLINE void load_transposed8(const uint8_t *const rows[8], size_t off, __m256i v[8]) {
    __m256i r[8], t[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_si256((const __m256i *)(rows[i] + off));
#pragma GCC unroll 4
    for (int i = 0; i < 8; i += 2) { /* dwords 2j, 2j + 1 of rows i, i + 1 */
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 8; i += 4) { /* 64-bit pairs of rows i..i+3 */
        r[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]), r[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]), r[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* r[j] (j < 4): dword j of rows 0..3 | dword j + 4 of rows 0..3; r[4 + j] the same for rows 4..7 */
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        v[j] = _mm256_permute2x128_si256(r[j], r[4 + j], 0x20);
        v[j + 4] = _mm256_permute2x128_si256(r[j], r[4 + j], 0x31);
    }
}

/* Wt[k][h*8 + l] = f32(code(row l of half h, kc0 + k) * scale) for the chunk at kc0; soff[h]: the half's 8 rows'
 * offsets in the scales S. */
static void kpanel_decode(const uint8_t *const rows[KPANEL_NR], const float *S, const __m256i soff[2], size_t kc0,
                          size_t bs, __m256 cb_lo, __m256 cb_hi, float *wt) {
    const __m256 smin = _mm256_set1_ps(0x1p-118f);
    for (int h = 0; h < 2; h++) {
        __m256 sv = _mm256_setzero_ps();
        int flush = 0;
        for (size_t piece = 0; piece < 2; piece++) { /* 32 bytes = 64 codes of each row */
            __m256i g[8];
            load_transposed8(rows + 8 * h, kc0 / 2 + 32 * piece, g);
            for (size_t qq = 0; qq < 8; qq++) {
                const size_t q = 8 * piece + qq, k = 8 * q;
                if (q == 0 || (bs < 128 && k % bs == 0)) { /* a new block: the 8 rows' scales */
                    sv = _mm256_i32gather_ps(S + (kc0 + k) / bs, soff[h], 4);
                    /* |scale| < 2^-118 (or NaN): products may be subnormal, flush them as dequantize does */
                    flush = _mm256_movemask_ps(_mm256_cmp_ps(abs8(sv), smin, _CMP_NGE_UQ)) != 0;
                }
#pragma GCC unroll 8
                for (int p = 0; p < 8; p++) {
                    __m256 v = _mm256_mul_ps(lookup16(nibble_plane(g[qq], p), cb_lo, cb_hi), sv);
                    if (flush)
                        v = ftz_signed8(v);
                    _mm256_store_ps(wt + (k + (size_t)(p ^ 1)) * KPANEL_NR + 8 * (size_t)h, v);
                }
            }
        }
    }
}

/* Y[i][j + r] = c[i][r] + bias[j + r] in float32, then one rounding to the dtype, for i < m and r < nr <= 16. */
static void kpanel_store(const bnb4_gemm_args *a, size_t j, size_t nr, const float *c) {
    const size_t N = a->w->rows;
    float bias[KPANEL_NR] __attribute__((aligned(32))) = {0};
    for (size_t r = 0; a->bias && r < nr; r++)
        bias[r] = bnb4_ref_load(a->bias, a->dt, j + r);
    for (size_t i = 0; i < a->m; i++) {
        const __m256 v0 = _mm256_add_ps(_mm256_load_ps(c + i * KPANEL_NR), _mm256_load_ps(bias));
        const __m256 v1 = _mm256_add_ps(_mm256_load_ps(c + i * KPANEL_NR + 8), _mm256_load_ps(bias + 8));
        if (nr == KPANEL_NR) {
            store8(a->y, a->dt, i * N + j, v0);
            store8(a->y, a->dt, i * N + j + 8, v1);
        } else {
            float t[KPANEL_NR];
            _mm256_storeu_ps(t, v0), _mm256_storeu_ps(t + 8, v1);
            for (size_t r = 0; r < nr; r++)
                bnb4_ref_store(a->y, a->dt, i * N + j + r, t[r]);
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
    const __m256i soff[2] = {_mm256_loadu_si256((const __m256i *)so), _mm256_loadu_si256((const __m256i *)(so + 8))};
    const __m256 cb_lo = _mm256_loadu_ps(a->codebook), cb_hi = _mm256_loadu_ps(a->codebook + 8);
    const size_t groups = kpanel_groups(m);
    memset(c, 0, groups * KPANEL_MR * KPANEL_NR * sizeof(float));
    const float *xp = (const float *)a->xp;
    for (size_t kc0 = 0; kc0 < K; kc0 += KPANEL_KC) {
        if (kc0 + KPANEL_KC < K)
            for (int r = 0; r < KPANEL_NR; r++)
                _mm_prefetch((const char *)(rows[r] + (kc0 + KPANEL_KC) / 2), _MM_HINT_T0);
        kpanel_decode(rows, S, soff, kc0, bs, cb_lo, cb_hi, wt);
        for (size_t g = 0; g < groups; g++) {
            const float *xg = xp + (g * K + kc0) * KPANEL_MR;
            float *cg = c + g * KPANEL_MR * KPANEL_NR;
            switch (m - g * KPANEL_MR < KPANEL_MR ? m - g * KPANEL_MR : KPANEL_MR) {
            case 1: kpanel_micro(xg, wt, 1, cg); break;
            case 2: kpanel_micro(xg, wt, 2, cg); break;
            case 3: kpanel_micro(xg, wt, 3, cg); break;
            default: kpanel_micro(xg, wt, 4, cg); break;
            }
        }
    }
    kpanel_store(a, j0, nr, c);
}

/* Any column range: 16 columns at a time. */
static void kpanel_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    for (size_t j = j0; j < j1; j += KPANEL_NR)
        kpanel_run_one(a, j, j1 - j < KPANEL_NR ? j1 : j + KPANEL_NR, scratch);
}

/* ---- gemm: tile micro-kernel ------------------------------------------------------------------------------ */

static void micro_f32_4x4(const void *const x[4], const void *wt, size_t kcp, float out[4][4]) {
    const float *w = (const float *)wt;
    __m256 acc[4][4];
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            acc[i][r] = _mm256_setzero_ps();
    for (size_t k = 0; k < kcp; k += 8) {
        __m256 wv[4];
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            wv[r] = _mm256_loadu_ps(w + (size_t)r * kcp + k);
        #pragma GCC unroll 8
        for (int i = 0; i < 4; i++) {
            const __m256 xv = _mm256_loadu_ps((const float *)x[i] + k);
            #pragma GCC unroll 8
            for (int r = 0; r < 4; r++)
                acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++) {
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[i][r]), _mm256_extractf128_ps(acc[i][r], 1));
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
            out[i][r] = _mm_cvtss_f32(h);
        }
}

static const bnb4_tile_ops tile_f32 = {8, 4, BNB4_F32, micro_f32_4x4};

static size_t tile_prep_bytes(const bnb4_gemm_args *a) { return bnb4_tile_prep_bytes(&tile_f32, a); }
static void tile_prep(bnb4_gemm_args *a) { bnb4_tile_prep(&tile_f32, a); }
static size_t tile_scratch(const bnb4_gemm_args *a) { return bnb4_tile_scratch_bytes(&tile_f32, a); }
static void tile_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *s) {
    bnb4_tile_run(&tile_f32, &bnb4_kernels_avx2, a, j0, j1, s);
}

static const bnb4_gemm_kernel gemv_direct = {"gemv_f32acc_4x64__avx2", DIRECT_COLS, direct_prep_bytes, direct_prep,
                                             direct_scratch_bytes, direct_run, 1};
static const bnb4_gemm_kernel gemm_direct = {"gemm_f32acc_4x1x64__avx2", DIRECT_COLS, direct_prep_bytes, direct_prep,
                                             direct_scratch_bytes, direct_run, 1};
static const bnb4_gemm_kernel gemm_kpanel = {"gemm_f32_4x16_panel__avx2", KPANEL_NR, kpanel_prep_bytes, kpanel_prep,
                                             kpanel_scratch_bytes, kpanel_run, 1};
static const bnb4_gemm_kernel gemm_tile = {"gemm_f32_4x4_tile__avx2", BNB4_TILE_COLS, tile_prep_bytes, tile_prep,
                                           tile_scratch, tile_run, 0};

static const bnb4_gemm_kernel *gemm_select_avx2(bnb4_dtype dt, size_t m, int k_block_aligned) {
    (void)dt;
    if (m <= DIRECT_MAX_M && k_block_aligned)
        return m == 1 ? &gemv_direct : &gemm_direct;
    if (k_block_aligned) /* K a multiple of 128 and of the blocksize (and < 2^26: 32-bit scale gathers) */
        return &gemm_kpanel;
    return &gemm_tile;
}

const bnb4_cpu_kernels bnb4_kernels_avx2 = {
    BNB4_ISA_AVX2,
    {"quantize_f32__avx2", "quantize_f16__avx2", "quantize_bf16__avx2"},
    {"dequantize_f32__avx2", "dequantize_f16__avx2", "dequantize_bf16__avx2"},
    quantize_blocks_avx2,
    dequantize_blocks_avx2,
    gemm_select_avx2,
    NULL,
    quantize_nested_blocks_avx2,
};
