/*
 * cpu_gemm_tile.c - the ISA-neutral driver of the tiled gemm (see bnb4_tile_ops in cpu_internal.h).
 *
 * Per work unit (BNB4_TILE_COLS output columns) and per K chunk: decode BNB4_TILE_NR weight rows with
 * the level's exact dequantize kernel straight to the tile's element type, then run the 4 x 4
 * micro-kernel over every group of 4 rows of X. The X panel of one chunk (m x KC) stays in L2, the
 * packed weight tile in L1. Rows of X past m are served by repeating a valid row and discarded.
 */
#include <string.h>

#include "bnb4_half.h"
#include "bnb4_ref.h"
#include "cpu_internal.h"

/* K chunk: 4 KiB of each X row, so the X panel of m = 128 rows (512 KiB) stays in a 1 MiB L2 next to
 * the weight tile. The chunking depends only on K and the element type: never on the thread split. */
static size_t tile_kc(const bnb4_tile_ops *t) { return BNB4_TILE_KC_BYTES / t->elem_bytes; }

size_t bnb4_tile_prep_bytes(const bnb4_tile_ops *t, const bnb4_gemm_args *a) {
    const size_t K = a->w->cols;
    if (K > SIZE_MAX / 2 - t->kalign)
        return SIZE_MAX;
    const size_t kp = bnb4_round_up(K, t->kalign);
    if (a->m > SIZE_MAX / kp / t->elem_bytes)
        return SIZE_MAX;
    return a->m * kp * t->elem_bytes;
}

void bnb4_tile_prep(const bnb4_tile_ops *t, bnb4_gemm_args *a) {
    const size_t K = a->w->cols, kp = bnb4_round_up(K, t->kalign);
    for (size_t i = 0; i < a->m; i++) {
        if (t->elem_bytes == 4) {
            float *row = (float *)a->xp + i * kp;
            for (size_t k = 0; k < K; k++)
                row[k] = bnb4_ref_load(a->x, a->dt, i * K + k);
            memset(row + K, 0, (kp - K) * sizeof(float));
        } else {
            uint16_t *row = (uint16_t *)a->xp + i * kp;
            if (a->dt == BNB4_BF16)
                memcpy(row, (const uint16_t *)a->x + i * K, K * sizeof(uint16_t));
            else
                for (size_t k = 0; k < K; k++)
                    row[k] = bnb4_f32_to_bf16(bnb4_ref_load(a->x, a->dt, i * K + k));
            memset(row + K, 0, (kp - K) * sizeof(uint16_t));
        }
    }
}

/* Scratch layout: C partials (m x TILE_COLS f32) | weight tile (NR x KC elements). */
size_t bnb4_tile_scratch_bytes(const bnb4_tile_ops *t, const bnb4_gemm_args *a) {
    (void)t; /* the tile is NR rows of BNB4_TILE_KC_BYTES whatever the element type */
    if (a->m > SIZE_MAX / 8 / BNB4_TILE_COLS)
        return SIZE_MAX;
    return a->m * BNB4_TILE_COLS * sizeof(float) + BNB4_TILE_NR * BNB4_TILE_KC_BYTES + 64;
}

void bnb4_tile_run(const bnb4_tile_ops *t, const bnb4_cpu_kernels *k, const bnb4_gemm_args *a, size_t j0, size_t j1,
                   void *scratch) {
    const size_t K = a->w->cols, N = a->w->rows, m = a->m, kp = bnb4_round_up(K, t->kalign);
    const size_t ncols = j1 - j0;
    float *c = (float *)scratch;
    char *tile = (char *)(c + m * BNB4_TILE_COLS);
    memset(c, 0, m * ncols * sizeof(float));
    const size_t KC = tile_kc(t);
    for (size_t kc0 = 0; kc0 < K; kc0 += KC) {
        const size_t kc = K - kc0 < KC ? K - kc0 : KC;
        const size_t kcp = bnb4_round_up(kc, t->kalign);
        for (size_t jg = j0; jg < j1; jg += BNB4_TILE_NR) {
            const size_t nr = j1 - jg < BNB4_TILE_NR ? j1 - jg : BNB4_TILE_NR;
            for (size_t r = 0; r < BNB4_TILE_NR; r++) {
                void *dst = tile + r * kcp * t->elem_bytes;
                if (r < nr) {
                    const size_t flat = (jg + r) * K + kc0;
                    bnb4_cpu_decode(k, a->w, flat, flat + kc, t->elem_dtype, dst);
                    memset((char *)dst + kc * t->elem_bytes, 0, (kcp - kc) * t->elem_bytes);
                } else {
                    memset(dst, 0, kcp * t->elem_bytes);
                }
            }
            for (size_t i0 = 0; i0 < m; i0 += BNB4_TILE_MR) {
                const void *xr[BNB4_TILE_MR];
                float out[BNB4_TILE_MR][BNB4_TILE_NR];
                for (size_t i = 0; i < BNB4_TILE_MR; i++) {
                    const size_t row = i0 + i < m ? i0 + i : i0;
                    xr[i] = (const char *)a->xp + (row * kp + kc0) * t->elem_bytes;
                }
                t->micro(xr, tile, kcp, out);
                for (size_t i = 0; i < BNB4_TILE_MR && i0 + i < m; i++)
                    for (size_t r = 0; r < nr; r++)
                        c[(i0 + i) * ncols + (jg - j0) + r] += out[i][r];
            }
        }
    }
    for (size_t i = 0; i < m; i++)
        for (size_t jj = 0; jj < ncols; jj++) {
            float v = c[i * ncols + jj];
            if (a->bias)
                v += bnb4_ref_load(a->bias, a->dt, j0 + jj);
            bnb4_ref_store(a->y, a->dt, i * N + j0 + jj, v);
        }
}
