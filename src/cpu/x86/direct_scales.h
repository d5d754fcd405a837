/*
 * direct_scales.h - the block scales of the x86 direct gemv/gemm kernels, shared by kernels_avx2.c and
 * kernels_avx512.c (plain C: each includes it and supplies its own vector table builder).
 *
 * Per weight row of a row group. Plain tensors: the float32 absmax rows. Nested tensors with nested
 * blocks of >= 128 blocks (bitsandbytes uses 256): decoded inside the dot loop, where the scalar lookups
 * overlap the vector work instead of taking a pass of their own: a work unit builds one table of the 256
 * possible scales per nested block it touches, f32(ftz(code[c] * nested_absmax) + offset) exactly as
 * bnb4_ref_block_scale, and per block a table index (its table's offset + its 8-bit code), so a chunk's
 * scales are a few scalar loads. Other nested blocksizes: all scales of the unit decoded into a float32
 * scratch first.
 */
#ifndef BNB4_X86_DIRECT_SCALES_H
#define BNB4_X86_DIRECT_SCALES_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_internal.h"

typedef struct {
    const float *s[4];     /* float32 scales of row r (plain absmax, or the decoded scratch) */
    const uint32_t *ix[4]; /* table indices of row r's blocks (table path) */
    const float *tab;      /* the tables (table path) */
} scale_rows;

/* The tables + indices path (else: plain absmax, or the decoded float32 scratch). */
static inline int nested_tabs_used(const bnb4_qtensor *w) { return !w->absmax && w->nested.blocksize >= 128; }

/* Tables a unit of unit_rows rows can touch: its blocks span at most this many nested blocks. */
static inline size_t nested_tab_count(const bnb4_qtensor *w, size_t unit_rows) {
    return unit_rows * (w->cols / w->blocksize) / w->nested.blocksize + 2;
}

/* Scratch a unit of unit_rows rows needs for its scales. */
static inline size_t direct_scales_bytes(const bnb4_qtensor *w, size_t unit_rows) {
    const size_t blocks = unit_rows * (w->cols / w->blocksize);
    if (w->absmax)
        return 0;
    if (nested_tabs_used(w))
        return nested_tab_count(w, unit_rows) * 256 * sizeof(float) + blocks * sizeof(uint32_t);
    return blocks * sizeof(float);
}

/* The level's builder of the tables of the nested blocks that blocks [b0, b1) lie in (the first one at
 * tab), and of each block's index. */
typedef void (*nested_tabs_build_fn)(const bnb4_qtensor *q, size_t b0, size_t b1, float *tab, uint32_t *ix);

/* The unit's (rows [j0, j1), at most unit_rows) scales: tables + indices (tabs), the decoded float32
 * scales (other nested), or none (plain). */
static inline void direct_unit_scales(const bnb4_qtensor *w, size_t unit_rows, size_t j0, size_t j1, void *scratch,
                                      const int tabs, nested_tabs_build_fn build, scale_rows *sr,
                                      const float **scales, const uint32_t **ix) {
    const size_t bpr = w->cols / w->blocksize;
    *scales = (const float *)scratch, *ix = NULL;
    sr->tab = (const float *)scratch;
    if (tabs) {
        uint32_t *idx = (uint32_t *)((float *)scratch + nested_tab_count(w, unit_rows) * 256);
        build(w, j0 * bpr, j1 * bpr, (float *)scratch, idx);
        *ix = idx;
    } else if (!w->absmax) {
        bnb4_cpu_block_scales(w, j0 * bpr, j1 * bpr, (float *)scratch);
    }
}

/* Rows of the group at j (rb of them valid; rows past them repeat the last valid one: results
 * discarded): their packed codes and scales. */
static inline __attribute__((always_inline)) void direct_group_rows(const bnb4_qtensor *w, size_t j, int rb,
                                                                    size_t j0, const float *scales,
                                                                    const uint32_t *ix, const uint8_t *wrow[4],
                                                                    scale_rows *sr) {
    const size_t K = w->cols, bpr = K / w->blocksize;
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        const size_t jr = j + (size_t)(r < rb ? r : rb - 1);
        wrow[r] = w->packed + jr * K / 2;
        sr->s[r] = w->absmax ? w->absmax + jr * bpr : scales + (jr - j0) * bpr;
        sr->ix[r] = ix ? ix + (jr - j0) * bpr : NULL;
    }
}

#endif /* BNB4_X86_DIRECT_SCALES_H */
