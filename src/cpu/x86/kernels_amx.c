/*
 * kernels_amx.c - the AMX level: the AVX-512 table (kernels_avx512.c) plus an AMX-BF16 tile gemm for
 * bfloat16 activations from m = 7 (the AVX-512 level runs its vdpbf16ps direct kernels to m = 8 and 4 x 4
 * tiles past it).
 *
 * gemm_bf16dot_32x32_tile__amx: Y^T = W X^T in 16 x 16 float32 tiles (TDPBF16PS), the weights as the A
 * operand and the activations as B, so that the decoded weight rows need no reordering: a 16-row x 32-k A
 * tile is 16 rows of the decoded weights as dequantize writes them (bfloat16, scale applied, rounded to
 * nearest even), and B is the activations, prepared once per call in the pairs layout TDPBF16PS reads
 * ([16-row group][k pair][16 rows][2]). Per work unit of 32 weight rows and K chunk of 2048: the chunk's 32
 * weight rows are decoded once, then every pair of 16-row activation groups runs 2 x 2 tiles (4 tile
 * loads and 4 tile products per 32 k) on the float32 sums of the unit, kept in scratch between chunks;
 * where the activations outgrow L2, 4 units run chunk by chunk together (their chunk stays in L2), and the
 * next chunk's packed bytes are prefetched while the tiles run.
 * Sums per output are added in chunk order and 32-k step order: the same bits for any thread split.
 *
 * Needs AMX-TILE and AMX-BF16 with the OS's permission (cpu_features.c asks for it; the level exists only
 * where it was granted). Each call loads its tile configuration on the thread that runs it and releases
 * the tiles after.
 */
#include <immintrin.h>
#include <pthread.h>
#include <string.h>

#include "bnb4_format.h"
#include "bnb4_half.h"
#include "bnb4_ref.h"
#include "cpu_internal.h"

enum {
    AMX_COLS = 32,   /* weight rows (output columns) per work unit: two A tiles */
    AMX_KC = 2048,   /* k per chunk: a unit's decoded chunk is 128 KiB of bfloat16 */
    AMX_TK = 32,     /* k per tile product */
};

static size_t amx_groups(size_t m) { return (m + 15) / 16; }
/* 16-row groups of the activations, padded to an even count (the 2 x 2 tile step takes them in pairs) */
static size_t amx_groups_even(size_t m) { return bnb4_round_up(amx_groups(m), 2); }

/* The tile configuration: tiles 0-3 the sums (16 x 16 float32), 4-5 the weights (16 rows x 32 bfloat16),
 * 6-7 the activations (16 k pairs x 16 rows x 2 bfloat16); every tile 16 rows of 64 bytes. */
typedef struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

static void amx_load_config(void) {
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

/* X (bfloat16: the only dtype gemm_select_amx sends here) as [group][k pair][16 rows][2] (rows past m and k past
 * K zero), groups padded to even. */
static size_t amx_prep_bytes(const bnb4_gemm_args *a) {
    const size_t K = a->w->cols;
    if (K > SIZE_MAX / 4 - AMX_TK)
        return SIZE_MAX;
    const size_t kp = bnb4_round_up(K, AMX_TK), groups = amx_groups_even(a->m);
    if (groups > SIZE_MAX / 32 / kp)
        return SIZE_MAX;
    return groups * 16 * kp * sizeof(uint16_t);
}

static void amx_prep(bnb4_gemm_args *a) {
    const size_t K = a->w->cols, kp = bnb4_round_up(K, AMX_TK), groups = amx_groups_even(a->m);
    uint16_t *xp = (uint16_t *)a->xp;
    memset(xp, 0, groups * 16 * kp * sizeof(uint16_t));
    for (size_t i = 0; i < a->m; i++) {
        uint16_t *g = xp + (i / 16) * 16 * kp; /* the group's [k pair][16][2] */
        const size_t r = i % 16;
        const uint16_t *src = (const uint16_t *)a->x + i * K; /* (bfloat16: gemm_select_amx) */
        for (size_t p = 0; p < K / 2; p++) { /* a pair is one 32-bit word of the row: copied whole */
            uint32_t v;
            memcpy(&v, src + 2 * p, sizeof v);
            memcpy(g + p * 32 + r * 2, &v, sizeof v);
        }
        if (K & 1)
            g[(K / 2) * 32 + r * 2] = src[K - 1];
    }
}

/* Units a thread runs together, chunk by chunk, where the activations (m x K bfloat16) outgrow L2 (1 MiB
 * of them and more), so that a K chunk of them (m x 2048: 512 KiB at m = 128) is read from L2 by each unit
 * rather than again from L3 per unit; their sums must fit the scratch too (2 KiB a unit per 16 activation
 * rows). Measured (docs/performance.md CPU v5): m = 128 on K = 8192 / 14336 18-23 % faster, but where
 * the activations fit L2 (m = 32, or K = 4096) 4-28 % slower - more weight rows streamed at once. */
static size_t amx_block_units(size_t m, size_t K) {
    return amx_groups_even(m) <= 16 && m * K * 2 > ((size_t)1 << 20) ? 4 : 1;
}

/* Scratch: a block's units' sums, each [2 row halves][groups][16 weight rows][16 activation rows] float32,
 * then the decoded chunk [32 weight rows][AMX_KC] bfloat16 (64-byte aligned rows). */
static size_t amx_scratch_bytes(const bnb4_gemm_args *a) {
    const size_t groups = amx_groups_even(a->m);
    if (groups > SIZE_MAX / 8192 / 4)
        return SIZE_MAX;
    const size_t sums = amx_block_units(a->m, a->w->cols) * 2 * groups * 256 * sizeof(float);
    return sums + AMX_COLS * AMX_KC * sizeof(uint16_t) + 64;
}

/* Flat elements [begin, end) of w to bfloat16 at out, bit for bit as dequantize (bfloat16(RNE(ftz(code x
 * scale)))): a block's 16 possible products are rounded once (one multiply and one conversion a block, the
 * same operations on the same inputs as per element) and each 32 codes are one vpermw lookup of them,
 * instead of two vpermps, two multiplies and a conversion per 32. Blocks whose products may be subnormal
 * (or whose scale is NaN) and partial blocks take bnb4_cpu_decode. */
static void amx_decode(const bnb4_qtensor *w, size_t begin, size_t end, uint16_t *out) {
    enum { SCALES = 64 };
    const size_t bs = w->blocksize;
    size_t i = begin;
    const size_t head_end = begin % bs ? (begin / bs + 1) * bs : begin;
    if (head_end > begin) {
        const size_t e = head_end < end ? head_end : end;
        bnb4_cpu_decode(&bnb4_kernels_avx512, w, begin, e, BNB4_BF16, out);
        i = e;
    }
    const __m512 cb = _mm512_loadu_ps(bnb4_codebook(w->quant_type));
    float scales[SCALES];
    while (end - i >= bs) {
        size_t nb = (end - i) / bs;
        if (nb > SCALES)
            nb = SCALES;
        bnb4_cpu_block_scales(w, i / bs, i / bs + nb, scales);
        for (size_t b = 0; b < nb; b++, i += bs) {
            uint16_t *dst = out + (i - begin);
            const float sc = scales[b];
            if (!(sc >= 0x1p-118f || sc <= -0x1p-118f)) { /* subnormal products possible, or NaN */
                bnb4_cpu_decode(&bnb4_kernels_avx512, w, i, i + bs, BNB4_BF16, dst);
                continue;
            }
            const __m256bh products = _mm512_cvtneps_pbh(_mm512_mul_ps(cb, _mm512_set1_ps(sc)));
            const __m512i table = _mm512_castsi256_si512((__m256i)products); /* (indices < 16: the low half) */
            const uint8_t *p = w->packed + i / 2;
            for (size_t k = 0; k < bs; k += 32) { /* 16 bytes: byte j's high nibble is element 2 j */
                const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + k / 2)));
                const __m512i low = _mm512_and_si512(bytes, _mm512_set1_epi32(15));
                const __m512i idx = _mm512_or_si512(_mm512_srli_epi32(bytes, 4), _mm512_slli_epi32(low, 16));
                _mm512_storeu_si512(dst + k, _mm512_permutexvar_epi16(idx, table));
            }
        }
    }
    if (i < end)
        bnb4_cpu_decode(&bnb4_kernels_avx512, w, i, end, BNB4_BF16, out + (i - begin));
}

/* Software prefetch of the packed weights of the next chunk (rows jn.., k kn0 .. kn0 + kc), share `it` of
 * `iters`: issued while the tiles compute, so that chunk's decode finds its bytes in cache instead of waiting
 * on DRAM (a unit's 32 rows x 2048 k are 32 KiB, too far ahead for the hardware's own prefetch). */
static void amx_prefetch_share(const bnb4_qtensor *w, size_t jn, size_t kn0, size_t kc, size_t it, size_t iters) {
    const size_t K = w->cols, line_count = (kc / 2 + 63) / 64, total = AMX_COLS * line_count;
    const size_t per = (total + iters - 1) / iters;
    for (size_t q = it * per; q < total && q < (it + 1) * per; q++) {
        const size_t r = q / line_count;
        if (jn + r < w->rows)
            _mm_prefetch((const char *)w->packed + ((jn + r) * K + kn0) / 2 + (q % line_count) * 64, _MM_HINT_T0);
    }
}

/* One unit's chunk: decode its 32 rows x kc (rows past N zero), then every pair of 16-row activation groups
 * adds 2 x 2 tiles to the unit's sums (from zero at the first chunk); meanwhile the chunk that runs next (pf_j,
 * pf_k0; none when pf_j is past the range) is prefetched. */
static void amx_unit_chunk(const bnb4_gemm_args *a, size_t j0, size_t kc0, float *sums, uint16_t *wd, size_t pf_j,
                           size_t pf_k0, size_t j_end) {
    const bnb4_qtensor *w = a->w;
    const size_t K = w->cols, N = w->rows, kp = bnb4_round_up(K, AMX_TK), groups = amx_groups_even(a->m);
    const size_t rows = N - j0 < AMX_COLS ? N - j0 : AMX_COLS;
    const size_t kc = K - kc0 < AMX_KC ? K - kc0 : AMX_KC, kcp = bnb4_round_up(kc, AMX_TK);
    const uint16_t *xp = (const uint16_t *)a->xp;
    for (size_t r = 0; r < AMX_COLS; r++) { /* decode the chunk's rows exactly as dequantize does */
        uint16_t *dst = wd + r * AMX_KC;
        if (r < rows) {
            const size_t flat = (j0 + r) * K + kc0;
            amx_decode(w, flat, flat + kc, dst);
            memset(dst + kc, 0, (kcp - kc) * sizeof(uint16_t));
        } else {
            memset(dst, 0, kcp * sizeof(uint16_t));
        }
    }
    const int prefetch = pf_j < j_end;
    const size_t pf_kc = K - pf_k0 < AMX_KC ? K - pf_k0 : AMX_KC;
    for (size_t g = 0; g < groups; g += 2) {
        float *c00 = sums + (0 * groups + g) * 256, *c01 = c00 + 256;
        float *c10 = sums + (1 * groups + g) * 256, *c11 = c10 + 256;
        if (kc0 == 0) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
        } else {
            _tile_loadd(0, c00, 64);
            _tile_loadd(1, c01, 64);
            _tile_loadd(2, c10, 64);
            _tile_loadd(3, c11, 64);
        }
        const uint16_t *x0 = xp + g * 16 * kp + kc0 * 16, *x1 = x0 + 16 * kp;
        for (size_t k = 0; k < kcp; k += AMX_TK) {
            if (prefetch && g == 0)
                amx_prefetch_share(w, pf_j, pf_k0, pf_kc, k / AMX_TK, kcp / AMX_TK);
            _tile_loadd(4, wd + k, AMX_KC * sizeof(uint16_t));               /* weight rows 0..15 */
            _tile_loadd(5, wd + 16 * AMX_KC + k, AMX_KC * sizeof(uint16_t)); /* 16..31 */
            _tile_loadd(6, x0 + k * 16, 64);                                 /* activation rows 16 g .. */
            _tile_loadd(7, x1 + k * 16, 64);                                 /* 16 (g + 1) .. */
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c00, 64);
        _tile_stored(1, c01, 64);
        _tile_stored(2, c10, 64);
        _tile_stored(3, c11, 64);
    }
}

/* A unit's sums[h][g][weight row][activation row] -> y[activation row][column], the bias in float32, one
 * rounding (to bfloat16 inline: the generic store's call per element was 5-8 % of a call at m = 32) */
static void amx_unit_store(const bnb4_gemm_args *a, size_t j0, const float *sums) {
    const size_t N = a->w->rows, m = a->m, groups = amx_groups_even(m);
    const size_t rows = N - j0 < AMX_COLS ? N - j0 : AMX_COLS;
    float bias[AMX_COLS];
    for (size_t r = 0; r < rows; r++)
        bias[r] = a->bias ? bnb4_ref_load(a->bias, a->dt, j0 + r) : 0.0f;
    for (size_t i = 0; i < m; i++) {
        const float *si = sums + (i / 16) * 256 + i % 16;
        uint16_t *yi = (uint16_t *)a->y + i * N + j0;
        for (size_t r = 0; r < rows; r++)
            yi[r] = bnb4_f32_to_bf16(si[(r / 16) * groups * 256 + (r % 16) * 16] + bias[r]);
    }
}

/* Blocks of amx_block_units units, chunk-major inside a block (each output's sums still go chunk by chunk
 * and 32 k by 32 k: the same bits as one unit at a time, for any split) */
static void amx_run(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch) {
    const size_t K = a->w->cols, unit_sums = 2 * amx_groups_even(a->m) * 256, block = amx_block_units(a->m, K);
    float *sums = (float *)scratch;
    uint16_t *wd = (uint16_t *)(((uintptr_t)(sums + block * unit_sums) + 63) & ~(uintptr_t)63);
    amx_load_config();
    for (size_t jb = j0; jb < j1; jb += block * AMX_COLS) {
        const size_t left = (j1 - jb + AMX_COLS - 1) / AMX_COLS, units = left < block ? left : block;
        for (size_t kc0 = 0; kc0 < K; kc0 += AMX_KC)
            for (size_t u = 0; u < units; u++) {
                /* what runs next: the block's next unit, else its first unit's next chunk, else the next block */
                size_t pf_j = jb + (u + 1) * AMX_COLS, pf_k0 = kc0;
                if (u + 1 == units) {
                    pf_j = kc0 + AMX_KC < K ? jb : jb + units * AMX_COLS;
                    pf_k0 = kc0 + AMX_KC < K ? kc0 + AMX_KC : 0;
                }
                amx_unit_chunk(a, jb + u * AMX_COLS, kc0, sums + u * unit_sums, wd, pf_j, pf_k0, j1);
            }
        for (size_t u = 0; u < units; u++)
            amx_unit_store(a, jb + u * AMX_COLS, sums + u * unit_sums);
    }
    _tile_release();
}

static const bnb4_gemm_kernel gemm_amx_bf16 = {"gemm_bf16dot_32x32_tile__amx", AMX_COLS, amx_prep_bytes, amx_prep,
                                               amx_scratch_bytes, amx_run, 1};

/* bfloat16 activations from m = 7: AMX tiles; everything else as the AVX-512 level. Crossover measured against
 * the AVX-512 direct kernels (docs/performance.md CPU v5, one thread, 4096x4096 / 14336x4096): m = 6 on par
 * (2.97 / 9.71 against 2.68 / 9.56 ms), m = 7 3-12 % faster, m = 8 23-28 %; m <= 5 slower (the tiles do 16
 * rows of work for m of them). */
static const bnb4_gemm_kernel *gemm_select_amx(bnb4_dtype dt, size_t m, int k_block_aligned) {
    if (dt == BNB4_BF16 && m > 6)
        return &gemm_amx_bf16;
    return bnb4_kernels_avx512.gemm_select(dt, m, k_block_aligned);
}

static bnb4_cpu_kernels g_amx;
static pthread_once_t g_amx_once = PTHREAD_ONCE_INIT;
static void amx_table_init(void) {
    g_amx = bnb4_kernels_avx512;
    g_amx.isa = BNB4_ISA_AMX;
    g_amx.gemm_select = gemm_select_amx;
}

const bnb4_cpu_kernels *bnb4_kernels_amx(void) {
    pthread_once(&g_amx_once, amx_table_init);
    return &g_amx;
}
