/*
 * col_panel.h - the ISA-neutral parts of the x86 column-lane panel gemm, shared by kernels_avx2.c
 * (gemm_f32_4x16_panel__avx2) and kernels_avx512.c (gemm_f32_8x32_panel__avx512): X packed k-major in groups
 * of MR rows, the scratch layout (block scales of the unit's NR rows | the decoded panel Wt[KC][NR] | C of
 * MR-row groups x NR), and the unit's weight rows. Each level supplies its own decode and micro-kernel.
 * (plain C: each includes it, as direct_scales.h.)
 */
#ifndef BNB4_X86_COL_PANEL_H
#define BNB4_X86_COL_PANEL_H

#include <stddef.h>
#include <stdint.h>

#include "bnb4_ref.h"
#include "cpu_internal.h"

static inline size_t xpanel_groups(size_t m, size_t rows) { return (m + rows - 1) / rows; }

/* Bytes of X packed in groups of `rows` rows (the last group zero-padded); SIZE_MAX on overflow. */
static inline size_t xpanel_bytes(const bnb4_gemm_args *a, size_t rows) {
    const size_t K = a->w->cols, groups = xpanel_groups(a->m, rows);
    if (K > SIZE_MAX / 8 / rows / (groups + 1))
        return SIZE_MAX;
    return groups * K * rows * sizeof(float);
}

/* Xp[g][k][i] = x[rows g + i][k] as float32, rows past m zero (the prep runs on one thread: float32 inputs
 * skip the generic loader's dtype switch). */
static inline void xpanel_pack_kmajor(bnb4_gemm_args *a, size_t rows) {
    const size_t K = a->w->cols, m = a->m;
    float *xp = (float *)a->xp;
    for (size_t g = 0; g < xpanel_groups(m, rows); g++)
        for (size_t k = 0; k < K; k++)
            for (size_t i = 0; i < rows; i++) {
                const size_t row = g * rows + i, at = row * K + k;
                xp[(g * K + k) * rows + i] =
                    row >= m ? 0.0f : a->dt == BNB4_F32 ? ((const float *)a->x)[at] : bnb4_ref_load(a->x, a->dt, at);
            }
}

/* Floats of the block scales of nr rows, rounded up to whole vectors of `lanes` (so Wt after them stays
 * aligned). */
static inline size_t col_panel_scales_floats(const bnb4_qtensor *w, size_t nr, size_t lanes) {
    return (nr * (w->cols / w->blocksize) + lanes - 1) / lanes * lanes;
}

/* Scratch of a unit: scales | Wt[kc][nr] | C (MR-row groups x nr); SIZE_MAX on overflow. */
static inline size_t col_panel_scratch_bytes(const bnb4_gemm_args *a, size_t nr, size_t mr, size_t kc, size_t lanes) {
    const size_t groups = xpanel_groups(a->m, mr);
    if (groups > SIZE_MAX / 4096)
        return SIZE_MAX;
    return (col_panel_scales_floats(a->w, nr, lanes) + kc * nr + groups * mr * nr) * sizeof(float);
}

/* The unit's weight rows j0 .. j0 + nr - 1 (rows past them, up to unit_nr, repeat the last valid one: their
 * results are discarded) and each row's offset into its block scales. */
static inline void col_panel_unit_rows(const bnb4_qtensor *w, size_t j0, size_t nr, size_t unit_nr,
                                       const uint8_t **rows, int32_t *scale_offsets) {
    const size_t K = w->cols, bpr = K / w->blocksize;
    for (size_t r = 0; r < unit_nr; r++) {
        const size_t rr = r < nr ? r : nr - 1;
        rows[r] = w->packed + (j0 + rr) * K / 2, scale_offsets[r] = (int32_t)(rr * bpr);
    }
}

#endif
