/*
 * kernels_neon.c - aarch64 Advanced SIMD kernels (Apple Silicon, Graviton, Ampere, ...).
 *
 * The codebook is looked up with tbl: for element output (dequantize) the 16 float32 values are
 * split into four byte planes and one vqtbl1q_u8 per plane fetches a byte of 16 values at once; for
 * the gemv lanes, a 64-byte table (four registers) is indexed with 4*code + {0,1,2,3} by vqtbl4q_u8.
 * Quantize counts threshold crossings with vcgtq_f32 (ties go to the lower code, NaN to 0) and uses
 * vmaxq_f32 only on NaN-free lanes, so absmax ignores NaN exactly as fmaxf does on the GPU.
 * Arithmetic is IEEE (FPCR.FZ is off on Linux/macOS), FTZ is done by compare-and-zero.
 * The direct gemv reads 16 bytes = 32 codes; lane l of nibble plane k is element 8l + (k^1).
 */
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "bnb4_format.h"
#include "bnb4_half.h"
#include "bnb4_rcp.h"
#include "bnb4_ref.h"
#include "cpu_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE float32x4_t load4_f32(const void *src, bnb4_dtype dt, size_t i) {
    if (dt == BNB4_F32)
        return vld1q_f32((const float *)src + i);
    const uint16x4_t h = vld1_u16((const uint16_t *)src + i);
    if (dt == BNB4_F16)
        return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

/* bnb4_f32_to_bf16 in 4 lanes. */
ALWAYS_INLINE uint16x4_t f32_to_bf16_rne(float32x4_t v) {
    const uint32x4_t x = vreinterpretq_u32_f32(v);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(1));
    const uint32x4_t r = vshrq_n_u32(vaddq_u32(vaddq_u32(x, vdupq_n_u32(0x7fff)), lsb), 16);
    const uint32x4_t q = vorrq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(0x40));
    const uint32x4_t is_num = vceqq_f32(v, v);
    return vmovn_u32(vbslq_u32(is_num, r, q));
}

ALWAYS_INLINE void store4(void *dst, bnb4_dtype dt, size_t i, float32x4_t v) {
    if (dt == BNB4_F32)
        vst1q_f32((float *)dst + i, v);
    else if (dt == BNB4_F16)
        vst1_u16((uint16_t *)dst + i, vreinterpret_u16_f16(vcvt_f16_f32(v)));
    else
        vst1_u16((uint16_t *)dst + i, f32_to_bf16_rne(v));
}

/* ---- quantize -------------------------------------------------------------------------------------- */

static const float nf4_t[15] = {BNB4_NF4_T0, BNB4_NF4_T1, BNB4_NF4_T2,  BNB4_NF4_T3,  BNB4_NF4_T4,
                                BNB4_NF4_T5, BNB4_NF4_T6, BNB4_NF4_T7,  BNB4_NF4_T8,  BNB4_NF4_T9,
                                BNB4_NF4_T10, BNB4_NF4_T11, BNB4_NF4_T12, BNB4_NF4_T13, BNB4_NF4_T14};
static const float fp4_u[7] = {BNB4_FP4_U0, BNB4_FP4_U1, BNB4_FP4_U2, BNB4_FP4_U3, BNB4_FP4_U4, BNB4_FP4_U5, BNB4_FP4_U6};
static const uint8_t fp4_rank_to_code[16] = {BNB4_FP4_RANK_TO_CODE, 0, 0, 0, 0, 0, 0, 0, 0};

ALWAYS_INLINE float32x4_t mul_ftz(float32x4_t x, float32x4_t inv) {
    const float32x4_t fmin = vdupq_n_f32(0x1p-126f);
    /* zero lanes with |v| < FLT_MIN (NaN compares false and is kept; a zero's sign never matters) */
    const float32x4_t xf = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(x), vcaltq_f32(x, fmin)));
    float32x4_t p = vmulq_f32(xf, inv);
    p = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(p), vcaltq_f32(p, fmin)));
    /* lanes at +-FLT_MIN through bnb4_cpu_ftz_edge_lanes (the GPU may flush them) */
    const uint32x4_t edge = vceqq_f32(vabsq_f32(p), fmin);
    if (__builtin_expect(vmaxvq_u32(edge) != 0, 0)) {
        float pv[4], xv[4], yv[4];
        uint32_t e[4];
        vst1q_f32(pv, p), vst1q_f32(xv, x), vst1q_f32(yv, inv);
        vst1q_u32(e, edge);
        bnb4_cpu_ftz_edge_lanes(pv, xv, yv, (e[0] & 1) | (e[1] & 2) | (e[2] & 4) | (e[3] & 8), 4);
        p = vld1q_f32(pv);
    }
    return p;
}

ALWAYS_INLINE uint32x4_t codes4(float32x4_t xn, int nf4, uint8x16_t rank_to_code) {
    uint32x4_t c = vdupq_n_u32(0);
    if (nf4) {
        for (int k = 0; k < 15; k++) /* a true compare is all ones = -1 */
            c = vsubq_u32(c, vcgtq_f32(xn, vdupq_n_f32(nf4_t[k])));
        return c;
    }
    const float32x4_t a = vabsq_f32(xn);
    for (int k = 0; k < 7; k++)
        c = vsubq_u32(c, vcgtq_f32(a, vdupq_n_f32(fp4_u[k])));
    /* rank (0..7) in the low byte of each lane; the other bytes index entry 0, which is 0 */
    const uint32x4_t code = vreinterpretq_u32_u8(vqtbl1q_u8(rank_to_code, vreinterpretq_u8_u32(c)));
    const uint32x4_t neg = vcltq_f32(xn, vdupq_n_f32(0.0f));
    return vorrq_u32(code, vandq_u32(neg, vdupq_n_u32(8)));
}

static void quantize_blocks_neon(const void *src, bnb4_dtype dt, size_t bs, bnb4_quant_type qt, size_t b0, size_t b1,
                                 uint8_t *packed, float *absmax) {
    const int nf4 = qt == BNB4_NF4;
    const uint8x16_t rank_to_code = vld1q_u8(fp4_rank_to_code);
    const float32x4_t lowest = vdupq_n_f32(-0x1.fffffep+127f);
    enum { GROUP = 8 }; /* absmax and reciprocals of 8 blocks first: the scalar rcp emulations overlap */
    float invs[GROUP];
    for (size_t b = b0; b < b1; b++) {
        const size_t e0 = b * bs;
        if ((b - b0) % GROUP == 0) {
            const size_t g1 = b1 - b < GROUP ? b1 : b + GROUP;
            for (size_t g = b; g < g1; g++) {
                float32x4_t m = lowest;
                for (size_t i = 0; i < bs; i += 4) {
                    const float32x4_t a = vabsq_f32(load4_f32(src, dt, g * bs + i));
                    m = vmaxq_f32(m, vbslq_f32(vceqq_f32(a, a), a, lowest)); /* NaN lanes count as -FLT_MAX */
                }
                absmax[g] = bnb4_ftz(vmaxvq_f32(m));
            }
            for (size_t g = b; g < g1; g++)
                invs[g - b] = bnb4_ftz(bnb4_rcp_approx_f32(absmax[g]));
        }
        const float32x4_t inv = vdupq_n_f32(invs[(b - b0) % GROUP]);
        uint8_t *out = packed + e0 / 2;
        for (size_t i = 0; i < bs; i += 16) {
            uint32x4_t c[4];
            for (int v = 0; v < 4; v++)
                c[v] = codes4(mul_ftz(load4_f32(src, dt, e0 + i + 4 * (size_t)v), inv), nf4, rank_to_code);
            const uint8x8_t lo8 = vmovn_u16(vcombine_u16(vmovn_u32(c[0]), vmovn_u32(c[1])));
            const uint8x8_t hi8 = vmovn_u16(vcombine_u16(vmovn_u32(c[2]), vmovn_u32(c[3])));
            const uint8x16_t e = vcombine_u8(lo8, hi8); /* 16 codes in element order */
            const uint8x16_t even = vuzp1q_u8(e, e), odd = vuzp2q_u8(e, e);
            vst1_u8(out + i / 2, vget_low_u8(vorrq_u8(vshlq_n_u8(even, 4), odd)));
        }
    }
}

/* ---- dequantize -------------------------------------------------------------------------------------- */

typedef struct {
    uint8x16_t plane[4]; /* plane[j][i] = byte j of codebook value i */
} byte_planes;

static byte_planes make_planes(const float *codebook) {
    uint8_t bytes[4][16];
    for (int i = 0; i < 16; i++) {
        uint32_t u;
        memcpy(&u, &codebook[i], 4);
        for (int j = 0; j < 4; j++)
            bytes[j][i] = (uint8_t)(u >> (8 * j));
    }
    byte_planes p;
    for (int j = 0; j < 4; j++)
        p.plane[j] = vld1q_u8(bytes[j]);
    return p;
}

/* 16 codes -> 16 float32 values (4 vectors). */
ALWAYS_INLINE void lookup16(const byte_planes *t, uint8x16_t codes, float32x4_t out[4]) {
    const uint8x16_t b0 = vqtbl1q_u8(t->plane[0], codes), b1 = vqtbl1q_u8(t->plane[1], codes);
    const uint8x16_t b2 = vqtbl1q_u8(t->plane[2], codes), b3 = vqtbl1q_u8(t->plane[3], codes);
    const uint16x8_t l0 = vreinterpretq_u16_u8(vzip1q_u8(b0, b1)), l1 = vreinterpretq_u16_u8(vzip2q_u8(b0, b1));
    const uint16x8_t h0 = vreinterpretq_u16_u8(vzip1q_u8(b2, b3)), h1 = vreinterpretq_u16_u8(vzip2q_u8(b2, b3));
    out[0] = vreinterpretq_f32_u16(vzip1q_u16(l0, h0));
    out[1] = vreinterpretq_f32_u16(vzip2q_u16(l0, h0));
    out[2] = vreinterpretq_f32_u16(vzip1q_u16(l1, h1));
    out[3] = vreinterpretq_f32_u16(vzip2q_u16(l1, h1));
}

static void dequantize_blocks_neon(const uint8_t *packed, const float *scales, const float *codebook, size_t bs,
                                   size_t nblocks, bnb4_dtype dt, void *dst) {
    const byte_planes t = make_planes(codebook);
    for (size_t b = 0; b < nblocks; b++) {
        const float s = scales[b];
        const uint8_t *p = packed + b * bs / 2;
        const size_t e0 = b * bs;
        if (!(fabsf(s) >= 0x1p-118f)) { /* products may be subnormal (or s is NaN): exact scalar path */
            for (size_t i = 0; i < bs; i++)
                bnb4_ref_store(dst, dt, e0 + i, bnb4_mul_ftz(codebook[bnb4_nibble_at(p, i)], s));
            continue;
        }
        const float32x4_t vs = vdupq_n_f32(s);
        for (size_t i = 0; i < bs; i += 32) {
            const uint8x16_t by = vld1q_u8(p + i / 2);
            const uint8x16_t hi = vshrq_n_u8(by, 4), lo = vandq_u8(by, vdupq_n_u8(15));
            const uint8x16_t c[2] = {vzip1q_u8(hi, lo), vzip2q_u8(hi, lo)}; /* element order */
            for (int h = 0; h < 2; h++) {
                float32x4_t w[4];
                lookup16(&t, c[h], w);
                for (int v = 0; v < 4; v++)
                    store4(dst, dt, e0 + i + 16 * (size_t)h + 4 * (size_t)v, vmulq_f32(w[v], vs));
            }
        }
    }
}

/* ---- gemm: direct kernel (m <= 4) --------------------------------------------------------------------- */

enum { DIRECT_MAX_M = 4, DIRECT_COLS = 16 };

/* X[i][c*32 + 4k + l] = x[i][c*32 + 8l + (k^1)], float32. */
static size_t direct_prep_bytes(const bnb4_gemm_args *a) { return a->m * a->w->cols * sizeof(float); }

static void direct_prep(bnb4_gemm_args *a) {
    const size_t K = a->w->cols;
    float *xp = (float *)a->xp;
    for (size_t i = 0; i < a->m; i++)
        for (size_t c = 0; c < K; c += 32)
            for (size_t k = 0; k < 8; k++)
                for (size_t l = 0; l < 4; l++)
                    xp[i * K + c + 4 * k + l] = bnb4_ref_load(a->x, a->dt, i * K + c + 8 * l + (k ^ 1));
}

static size_t direct_scratch_bytes(const bnb4_gemm_args *a) {
    return a->w->absmax ? 0 : DIRECT_COLS * (a->w->cols / a->w->blocksize) * sizeof(float);
}

/* codebook value of the low 4 bits of each 32-bit lane, via a 64-byte table */
ALWAYS_INLINE float32x4_t lookup_lanes(uint8x16x4_t table, uint32x4_t idx) {
    const uint32x4_t code = vandq_u32(idx, vdupq_n_u32(15));
    const uint32x4_t bytes = vaddq_u32(vmulq_n_u32(code, 0x04040404u), vdupq_n_u32(0x03020100u));
    return vreinterpretq_f32_u8(vqtbl4q_u8(table, vreinterpretq_u8_u32(bytes)));
}

ALWAYS_INLINE uint32x4_t nibble_plane(uint32x4_t d, int k) {
    switch (k) {
    case 0: return d;
    case 1: return vshrq_n_u32(d, 4);
    case 2: return vshrq_n_u32(d, 8);
    case 3: return vshrq_n_u32(d, 12);
    case 4: return vshrq_n_u32(d, 16);
    case 5: return vshrq_n_u32(d, 20);
    case 6: return vshrq_n_u32(d, 24);
    default: return vshrq_n_u32(d, 28);
    }
}

ALWAYS_INLINE void direct_dot(const float *xp, size_t K, size_t bs, const int MR, const int RB,
                              const uint8_t *const *wrow, const float *const *srow, uint8x16x4_t table,
                              float (*out)[4]) {
    float32x4_t acc[DIRECT_MAX_M][4];
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++)
            acc[i][r] = vdupq_n_f32(0.0f);
    for (size_t c = 0; c < K; c += 32) {
        uint32x4_t d[4];
        float32x4_t p[DIRECT_MAX_M][4];
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++)
            d[r] = vreinterpretq_u32_u8(vld1q_u8(wrow[r] + c / 2));
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            float32x4_t w[4];
            #pragma GCC unroll 8
            for (int r = 0; r < RB; r++)
                w[r] = lookup_lanes(table, nibble_plane(d[r], k));
            #pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                const float32x4_t xv = vld1q_f32(xp + (size_t)i * K + c + 4 * (size_t)k);
                #pragma GCC unroll 8
                for (int r = 0; r < RB; r++)
                    p[i][r] = k == 0 ? vmulq_f32(xv, w[r]) : vfmaq_f32(p[i][r], xv, w[r]);
            }
        }
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++) { /* a 32-code chunk never straddles a block (bs >= 32) */
            const float32x4_t sv = vdupq_n_f32(srow[r][c / bs]);
            #pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                acc[i][r] = vfmaq_f32(acc[i][r], p[i][r], sv);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < RB; r++)
            out[i][r] = vaddvq_f32(acc[i][r]);
}

static void direct_run_block(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    const bnb4_qtensor *w = a->w;
    const size_t K = w->cols, bs = w->blocksize, bpr = K / bs, m = a->m;
    const uint8x16x4_t table = vld1q_u8_x4((const uint8_t *)a->codebook);
    const float *xp = (const float *)a->xp;
    float *scales = (float *)scratch;
    if (!w->absmax)
        bnb4_cpu_block_scales(w, j0 * bpr, j1 * bpr, scales);
    const int MR = (int)m, RB = m == 1 ? 4 : m == 2 ? 2 : 1;
    for (size_t j = j0; j < j1; j += (size_t)RB) {
        const int rb = j1 - j < (size_t)RB ? (int)(j1 - j) : RB;
        const uint8_t *wrow[4];
        const float *srow[4];
        float out[DIRECT_MAX_M][4];
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++) {
            const size_t jr = j + (size_t)(r < rb ? r : rb - 1);
            wrow[r] = w->packed + jr * K / 2;
            srow[r] = w->absmax ? w->absmax + jr * bpr : scales + (jr - j0) * bpr;
        }
        switch (MR) {
        case 1: direct_dot(xp, K, bs, 1, 4, wrow, srow, table, out); break;
        case 2: direct_dot(xp, K, bs, 2, 2, wrow, srow, table, out); break;
        case 3: direct_dot(xp, K, bs, 3, 1, wrow, srow, table, out); break;
        default: direct_dot(xp, K, bs, 4, 1, wrow, srow, table, out); break;
        }
        bnb4_cpu_store_rows_x4(a, j, (size_t)MR, rb, (const float (*)[4])out);
    }
}

/* Any column range: DIRECT_COLS columns at a time (the nested scales scratch holds that many rows). */
static void direct_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    for (size_t j = j0; j < j1; j += DIRECT_COLS)
        direct_run_block(a, j, j1 - j < DIRECT_COLS ? j1 : j + DIRECT_COLS, scratch);
}

/* ---- gemm: tile micro-kernel ---------------------------------------------------------------------------- */

static void micro_f32_4x4(const void *const x[4], const void *wt, size_t kcp, float out[4][4]) {
    const float *w = (const float *)wt;
    float32x4_t acc[4][4];
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            acc[i][r] = vdupq_n_f32(0.0f);
    for (size_t k = 0; k < kcp; k += 4) {
        float32x4_t wv[4];
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            wv[r] = vld1q_f32(w + (size_t)r * kcp + k);
        #pragma GCC unroll 8
        for (int i = 0; i < 4; i++) {
            const float32x4_t xv = vld1q_f32((const float *)x[i] + k);
            #pragma GCC unroll 8
            for (int r = 0; r < 4; r++)
                acc[i][r] = vfmaq_f32(acc[i][r], xv, wv[r]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 8
        for (int r = 0; r < 4; r++)
            out[i][r] = vaddvq_f32(acc[i][r]);
}

static const bnb4_tile_ops tile_f32 = {4, 4, BNB4_F32, micro_f32_4x4};

static size_t tile_prep_bytes(const bnb4_gemm_args *a) { return bnb4_tile_prep_bytes(&tile_f32, a); }
static void tile_prep(bnb4_gemm_args *a) { bnb4_tile_prep(&tile_f32, a); }
static size_t tile_scratch(const bnb4_gemm_args *a) { return bnb4_tile_scratch_bytes(&tile_f32, a); }
static void tile_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *s) {
    bnb4_tile_run(&tile_f32, &bnb4_kernels_neon, a, j0, j1, s);
}

static const bnb4_gemm_kernel gemv_direct = {"gemv_f32acc_4x32__neon", DIRECT_COLS, direct_prep_bytes, direct_prep,
                                             direct_scratch_bytes, direct_run, 1};
static const bnb4_gemm_kernel gemm_direct = {"gemm_f32acc_4x1x32__neon", DIRECT_COLS, direct_prep_bytes, direct_prep,
                                             direct_scratch_bytes, direct_run, 1};
static const bnb4_gemm_kernel gemm_tile = {"gemm_f32_4x4_tile__neon", BNB4_TILE_COLS, tile_prep_bytes, tile_prep,
                                           tile_scratch, tile_run, 0};

static const bnb4_gemm_kernel *gemm_select_neon(bnb4_dtype dt, size_t m, int k_block_aligned) {
    (void)dt;
    if (m <= DIRECT_MAX_M && k_block_aligned)
        return m == 1 ? &gemv_direct : &gemm_direct;
    return &gemm_tile;
}

const bnb4_cpu_kernels bnb4_kernels_neon = {
    BNB4_ISA_NEON,
    {"quantize_f32__neon", "quantize_f16__neon", "quantize_bf16__neon"},
    {"dequantize_f32__neon", "dequantize_f16__neon", "dequantize_bf16__neon"},
    quantize_blocks_neon,
    dequantize_blocks_neon,
    gemm_select_neon,
    NULL,
    NULL,
};
