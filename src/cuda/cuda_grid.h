/*
 * cuda_grid.h - how the persistent matmul kernels (cuda_gemm_pipe.cuh, cuda_gemm_tile.cu) cut their work
 * over a grid. Host code without CUDA, so the CUDA tests check it on machines without a GPU too.
 *
 * The work is `tiles` tiles of `k_steps` steps each, one after another; every CTA takes a run of `per`
 * consecutive steps. Stream-K (per = ceil(steps / ctas)) keeps every SM busy, but a run that starts or
 * ends inside a tile shares it with the next CTA - partial sums out and back, a counter's round trip
 * that the whole CTA waits for, and the last contributor's fix-up, most of it on the kernel's critical
 * path. Aligned runs (whole tiles, or each tile in s equal parts, s dividing k_steps) share no tile in
 * mid-run, and whole ones none at all: taken where they are at most 17.5 % longer than stream-K's (H200,
 * docs/performance.md v17: 14336x4096 with 16 steps per CTA against 14 9-24 % faster at m = 1..512;
 * 28672x8192 m = 512 with 17.7 % longer runs 2-9 % slower), or, for the pipe kernel, at most
 * BNB4_GRID_PIPE_SK_STEPS steps longer (v54: its hand-over costs about that many steps whatever the run's length).
 */
#ifndef BNB4_CUDA_GRID_H
#define BNB4_CUDA_GRID_H

#include <stddef.h>

/* The steps a stream-K run of the pipe kernel costs beyond its length: a run that ends a tile in mid-run waits
 * for its partial sums' fence and the counter's round trip, and the last contributor adds the sums at the end
 * (H200, docs/performance.md v54: aligned runs 2..4 steps longer than stream-K's were 2-26 % faster at m <= 16 and
 * even to 13 % faster at m = 32 / 64 - 6144x4096 8 steps against 6, 4608x4096 8 against 5, 13824x5120 20 against 17,
 * 10240x8192 24 against 20, 9728x2560 10 against 6 - about even at 4..9 (17408x5120 25 against 21, 28672x8192 64
 * against 55), and 12 longer (18944x3584 28 against 16) lost 8-32 %). Measured again at m = 24..64 where stream-K's
 * tiles hand over by flags (v56): whole tiles 2-3 steps longer still 4-11 % faster (4 longer: 3 % slower to 5 %
 * faster), equal parts of a tile 3 steps longer up to 5 % slower, 2 longer 4 % slower to 13 % faster - no other bound
 * fits them all: the same at every m. */
#define BNB4_GRID_PIPE_SK_STEPS 4

/* Steps per CTA on at most `ctas` CTAs (tiles, k_steps, ctas >= 1), with at most about `max_parts` CTAs
 * sharing a tile (0: no limit): the last of a tile's CTAs adds the others' partial sums one after another,
 * which costs more per part than a step's work where tiles are few and the sums large (pipe kernel, H200,
 * docs/performance.md v26: 1024x4096 in 8 parts of two steps 11-24 % faster than in 16 of one at
 * m = 8..32 and 35 % at m = 48 / 64, in 4 parts 45 % faster there). Aligned runs are taken where they are at
 * most 17.5 % or `sk_steps` steps longer than stream-K's (BNB4_GRID_PIPE_SK_STEPS for the pipe kernel; the
 * tile kernel's 0 is the 17.5 % alone). */
static inline size_t bnb4_grid_steps_per_cta(size_t tiles, size_t k_steps, size_t ctas, size_t max_parts,
                                             size_t sk_steps) {
    const size_t steps = tiles * k_steps;
    const size_t min_per = max_parts ? k_steps / max_parts + (k_steps % max_parts != 0) : 1;
    size_t per_sk = steps / ctas + (steps % ctas != 0);
    if (per_sk < min_per)
        per_sk = min_per;
    size_t per = (tiles / ctas + (tiles % ctas != 0)) * k_steps; /* whole tiles */
    for (size_t parts = 2; tiles * parts <= ctas; parts++)
        if (k_steps % parts == 0 && k_steps / parts < per && k_steps / parts >= min_per)
            per = k_steps / parts;
    return per * 1000 <= per_sk * 1175 || per <= per_sk + sk_steps ? per : per_sk;
}

/* Whether the pipe kernel's post-scaled math (m <= 16) takes narrow tiles (32 rows x 1024-k steps) rather
 * than 128-row ones, given each tiling's tiles, steps a tile and steps per CTA (bnb4_grid_steps_per_cta):
 * where 128-row tiles would be shared by CTAs (their partial sums handed over through L2) and narrow ones
 * run whole, or in equal parts of a tile on more CTAs (H200, docs/performance.md v30: 4096-row weights
 * whole, 1024-row ones on 128 CTAs instead of 64, 6-27 % faster; on as many CTAs (2048 rows) plain m = 1
 * 2-4 % slower; where 128-row tiles run whole, up to 35 % slower); and where both run whole, narrow ones
 * in at most 80 % of the steps (a narrow step reads what a wide one does: v54, 11008x4096 m <= 16 12 steps
 * against 16 5-9 % faster; 128256x4096 124 against 128 0-14 % slower), or 7/8 of them at plain absmax and
 * m <= 8 (`plain_small`; v61: 28672x4096, 28672x8192 and 57344x8192, narrow ones on 128 CTAs against 112,
 * plain m = 1..8 up to 3.7 % faster, m = 9..16 0-11 % slower, nested m = 1 1-3 % slower). */
static inline int bnb4_grid_prefer_narrow(size_t wide_tiles, size_t wide_steps, size_t wide_per, size_t tiles,
                                          size_t steps, size_t per, int plain_small) {
    if (wide_per % wide_steps == 0) /* 128-row tiles run whole */
        return per % steps == 0 && (plain_small ? per * 8 <= wide_per * 7 : per * 5 <= wide_per * 4);
    if (per % steps == 0)
        return 1;
    return steps % per == 0 && (tiles * steps + per - 1) / per > (wide_tiles * wide_steps + wide_per - 1) / wide_per;
}

/* Activation rows per tile (256 or 128) at which the tile kernel takes a weight under its size threshold
 * (BNB4_CUDA_TILE_MIN_WEIGHTS), or 0 where dequantize + cuBLAS should: `row_tiles` 128-row weight tiles, K,
 * m, `ctas` SMs. There the tile kernel wins only where its whole tiles fill the grid's waves with rows m
 * (at least 90 % of the waves' tiles x activation rows) - 256 activation rows at any number of waves, 128
 * (the k split) in one wave with K >= 4096 - and loses where tiles are few or shared (H200,
 * docs/performance.md v37, against dequantize + cuBLAS: 4096x4096 m = 512 at 128 rows, 128 tiles, 8 %
 * faster; m = 1024 / 2048 at 256, 128 / 256 tiles, 10 / 3-11 %; 8192x2048 m = 512 / 1024 / 2048 20 / 9 /
 * 1-5 %; 4096x2048 at 128 rows 3 % slower, at 256 rows 0-4 % faster; 96 tiles (4096x4096 m = 384, 768)
 * 15-35 % slower; at 128 rows past one wave (4096x4096 m = 2048) 13 %). Padding rows cost the tile kernel
 * what real ones do and dequantize + cuBLAS nothing: its 8-10 % margins are gone at about 10 % padding. */
static inline size_t bnb4_grid_small_tile_rows(size_t row_tiles, size_t K, size_t m, size_t ctas) {
    for (size_t bx = 256; bx >= 128; bx /= 2) {
        const size_t tiles = row_tiles * ((m + bx - 1) / bx), waves = (tiles + ctas - 1) / ctas;
        if (bx == 128 && (waves > 1 || K < 4096))
            continue;
        if (row_tiles * m * 10 >= waves * ctas * bx * 9)
            return bx;
    }
    return 0;
}

/* m past the pipe kernel's rows a launch (`launch_rows`, 64) to BNB4_CUDA_PIPE_CHUNKS_MAX_M as matmuls of that many
 * rows each on it (cuda_backend.cu, launch_gemm: the last slice on the path its own m takes), for an N x K weight:
 * 0 not, 1 where the tile kernel does not take m, 2 before the tile kernel. Each slice reads the weights again - from
 * L2, where they fit - and at these m the pipe kernel is bound by its math, not by its reads. On the H200
 * (docs/performance.md v57) against dequantize + cuBLAS, which the tile kernel leaves weights under 2^25 elements
 * whose tiles do not fill the grid: 4096x4096, 6144x4096, 5120x5120, 3072x8192, 8192x2048, 2560x9728, 9728x2560,
 * 8192x3072, 4096x6144, 16384x1024, 2048x8192 and 4608x4096 at m = 65..128 took 0.5-1.08x its time (above 1:
 * nested 8192x2048 at m = 112 / 128, 1.02; 4608x4096 at m = 128, 1.02 / 1.08); 1024x16384 1.09-1.57x (8 tiles: the
 * pipe kernel cuts them in at most 4 parts at m > 32, 32 CTAs), hence BNB4_CUDA_PIPE_CHUNKS_MIN_ROWS; on smaller
 * weights and at m = 192 the slices' times measured at m <= 64 add up to 0.95-1.7x it. And where the last slice has
 * at most BNB4_CUDA_PIPE_CHUNKS_TAIL_M rows, on the m <= 8 kernels, before the tile kernel too, which works on 128
 * activation rows whatever m is: m = 65..72 on 14336x4096, 4096x14336, 4096x11008 and 28672x8192 2-31 % faster than
 * it, m = 76 / 80 -2..+4 %. */
#define BNB4_CUDA_PIPE_CHUNKS_MAX_M 128
#define BNB4_CUDA_PIPE_CHUNKS_MIN_WEIGHTS ((size_t)1 << 24)
#define BNB4_CUDA_PIPE_CHUNKS_MIN_ROWS 2048
#define BNB4_CUDA_PIPE_CHUNKS_TAIL_M 8
static inline int bnb4_grid_pipe_chunks(size_t N, size_t K, size_t m, size_t launch_rows) {
    if (launch_rows == 0 || m <= launch_rows || m > BNB4_CUDA_PIPE_CHUNKS_MAX_M ||
        N * K < BNB4_CUDA_PIPE_CHUNKS_MIN_WEIGHTS || N < BNB4_CUDA_PIPE_CHUNKS_MIN_ROWS)
        return 0;
    return m - launch_rows <= BNB4_CUDA_PIPE_CHUNKS_TAIL_M ? 2 : 1;
}

/* How many of the pipe kernel's contributors to a tile cut in `parts` equal parts of `per` steps each (per < the
 * tile's steps) add a share of the tile's rows m each - the last to arrive; 0: the last alone adds all of them, on the
 * counter (at m = 33..64 only: pipe_spread_built, cuda_gemm_pipe.cuh). The shares cut what one SM pulls from L2 - the
 * last arrival's 4 slots of 32 KB at m = 64 bound its fix-up (docs/performance.md v56) - but every sharer waits for
 * the last, where with the counter all but the last leave at once, and the longer the runs, the further apart they
 * end. On the H200, against the counter (f16 / bf16 alike; v59, v60):
 * - all shares: 4 parts of 4, 6 and 8 steps (4096x4096, 4096x6144, 3072x8192, 2048x8192) at m = 56 / 64 and the
 *   64-row slices of m = 65..128 1.3-6.7 % faster; at m = 33..48 up to 7 % slower; halves (5120x5120, 6144x4096,
 *   4608x4096) at m = 40..64 up to 5 % slower;
 * - the last 3 of 4 parts (the first to arrive leaves), plain: of 4-8 steps at m = 33..48 0.4-5.2 % faster (at m =
 *   56 / 64 0.3-3 % behind all shares), of 14 steps (4096x14336) at m = 33..64 0.7-3.5 %; nested -2..+2.5 % at m =
 *   33..48 (2048x8192, 4 parts of 8 steps, 1.4-2.5 % slower in two runs) and on 4096x14336 -1.4..+2.9 %. */
static inline size_t bnb4_grid_pipe_spread(size_t parts, size_t per, size_t m, int nested) {
    if (parts >= 4 && per <= 8 && m > 48)
        return parts;
    if (parts == 4 && !nested)
        return 3;
    return 0;
}

#endif
