/*
 * cpu_internal.h - what the CPU backend's parts share: ISA levels, feature detection, the thread pool
 * and the per-ISA kernel tables.
 *
 * Dispatch follows libjpeg-turbo / XNNPACK: features are detected once (cpu_features.c), each ISA
 * level contributes one table of kernels compiled with only its own flags (x86/, arm/), and
 * cpu_dispatch.c picks the table for the effective level (BNB4_ISA may lower it). cpu_backend.c
 * splits every op into independent units (blocks or output columns) and runs them on the pool
 * (cpu_threads.c); a unit's result never depends on which thread or how many threads ran it.
 */
#ifndef BNB4_CPU_INTERNAL_H
#define BNB4_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bnb4.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- ISA levels, in increasing order on each architecture ----------------------------------------- */
typedef enum bnb4_isa {
    BNB4_ISA_SCALAR = 0, /* the reference kernels of src/ref */
    BNB4_ISA_AVX2,       /* AVX2 + FMA + F16C */
    BNB4_ISA_AVX512,     /* AVX-512 F/BW/VL (+ BF16 dot products when the CPU has AVX512-BF16) */
    BNB4_ISA_AMX,        /* AVX512 kernels plus AMX-BF16 tiles (OS permission granted) */
    BNB4_ISA_NEON        /* aarch64 Advanced SIMD */
} bnb4_isa;

const char *bnb4_isa_name(bnb4_isa isa);

typedef struct bnb4_cpu_info {
    bnb4_isa best;          /* highest level the CPU and OS support */
    bnb4_isa level;         /* level in use: best, or BNB4_ISA when set (capped at best) */
    int has_avx512bf16;     /* vdpbf16ps usable */
    int num_cores;          /* online logical CPUs (>= 1) */
    char features[256];     /* "avx2 fma f16c avx512f ..." */
    char isa_note[160];     /* why BNB4_ISA was capped or ignored, "" otherwise */
} bnb4_cpu_info;

/* Detected once (pthread_once) and immutable afterwards. */
const bnb4_cpu_info *bnb4_cpu_info_get(void);
/* Parse a BNB4_ISA value ("scalar", "avx2", ...); -1 when unknown. */
int bnb4_isa_parse(const char *s);

/* ---- thread pool ------------------------------------------------------------------------------------
 * One process-wide pool of (cores - 1) workers started on first use; the calling thread is always one
 * of the participants. fn(arg, unit) is called once for each unit in [0, units) by up to `threads`
 * threads. When another op is using the pool, the call runs on the calling thread alone (results are
 * identical by construction, and the machine is never oversubscribed). Returns when all units are
 * done. */
typedef void (*bnb4_task_fn)(void *arg, size_t unit, int thread_index);
void bnb4_parallel_for(int threads, size_t units, bnb4_task_fn fn, void *arg);
/* Largest thread_index + 1 a bnb4_parallel_for(threads, ...) call can pass to fn. */
int bnb4_parallel_max_threads(int threads);

/* ---- kernels ---------------------------------------------------------------------------------------- */

/* Quantize full blocks [b0, b1) of src (all elements of these blocks exist), byte-exact with
 * bnb4_ref_quantize_blocks. packed and absmax point at the tensor's start. */
typedef void (*bnb4_quantize_blocks_fn)(const void *src, bnb4_dtype dt, size_t blocksize, bnb4_quant_type qt,
                                        size_t b0, size_t b1, uint8_t *packed, float *absmax);

/* Dequantize `nblocks` full blocks starting at packed (byte-aligned), block i scaled by scales[i], to
 * dst (already offset to the first element), bit-exact with the reference: f32 ftz(code * scale),
 * rounded to dt with round-to-nearest-even. */
typedef void (*bnb4_dequantize_blocks_fn)(const uint8_t *packed, const float *scales, const float *codebook,
                                          size_t blocksize, size_t nblocks, bnb4_dtype dt, void *dst);

/* A matrix product Y[m, N] = X[m, K] W^T + bias, prepared once and then run over column ranges. */
typedef struct bnb4_gemm_args {
    const bnb4_qtensor *w;
    bnb4_dtype dt;
    size_t m;
    const void *x, *bias;
    void *y;
    const float *codebook;
    void *xp; /* activations prepared by the kernel's prep (layout is the kernel's business) */
} bnb4_gemm_args;

/* The direct kernels' epilogue: rows [0, m) x columns [j, j + cols) of Y from float32 sums laid out
 * out[row][col] (4 columns a row), the bias added in float32, then one rounding to the dtype. */
void bnb4_cpu_store_rows_x4(const bnb4_gemm_args *a, size_t j, size_t m, int cols, const float (*out)[4]);

typedef struct bnb4_gemm_kernel {
    const char *name;
    size_t col_grain;                                   /* output columns per work unit */
    size_t (*prep_bytes)(const bnb4_gemm_args *a);      /* bytes for xp; 0 = none */
    void (*prep)(bnb4_gemm_args *a);                    /* fills a->xp (single-threaded, O(m*K)) */
    size_t (*scratch_bytes)(const bnb4_gemm_args *a);   /* per-thread scratch; 0 = none */
    void (*run)(const bnb4_gemm_args *a, size_t j0, size_t j1, void *scratch);
    /* 1: run accepts any column range (multiples of col_grain), so the backend may hand out larger
     * contiguous ranges: long sequential weight streams prefetch better than interleaved short ones */
    int any_range;
} bnb4_gemm_kernel;

/* One ISA level's kernels. NULL entries fall back to the reference. */
typedef struct bnb4_cpu_kernels {
    bnb4_isa isa;
    const char *quantize_name[3], *dequantize_name[3]; /* per dtype */
    bnb4_quantize_blocks_fn quantize_blocks;
    bnb4_dequantize_blocks_fn dequantize_blocks;
    /* The gemm kernel for (dtype, m, k_block_aligned: K % 128 == 0, K % blocksize == 0 and K < 2^26);
     * NULL = reference. */
    const bnb4_gemm_kernel *(*gemm_select)(bnb4_dtype dt, size_t m, int k_block_aligned);
    /* Decoded scales of nested blocks [b0, b1) (bnb4_ref_block_scale, bit-exact); NULL = generic. */
    void (*nested_scales)(const bnb4_qtensor *q, size_t b0, size_t b1, float *out);
    /* 8-bit quantization of nested blocks [j0, j1), byte-exact with bnb4_ref_quantize_nested_blocks
     * (same arguments); NULL = reference. */
    void (*quantize_nested_blocks)(const float *absmax, size_t nblocks, float offset, size_t nested_blocksize,
                                   size_t j0, size_t j1, uint8_t *codes, float *nested_absmax);
} bnb4_cpu_kernels;

const bnb4_cpu_kernels *bnb4_cpu_kernels_for(bnb4_isa isa);

/* Per-ISA tables, defined in x86/ and arm/ when built for that architecture. */
extern const bnb4_cpu_kernels bnb4_kernels_avx2;
extern const bnb4_cpu_kernels bnb4_kernels_avx512;
extern const bnb4_cpu_kernels bnb4_kernels_neon;
/* The AMX level's table: the AVX-512 one with AMX-BF16 tiles for its bfloat16 gemm (built on first use) */
const bnb4_cpu_kernels *bnb4_kernels_amx(void);

/* bnb4_rcp_approx_f32 of x[0..n) into out, 16 lanes at a time (x86 builds; the CPU must have AVX-512):
 * the quantize kernel's vector reciprocal, exposed for its exactness test. */
void bnb4_avx512_rcp_approx(const float *x, size_t n, float *out);
/* The same in 8 lanes (the AVX2 quantize kernel's; the CPU must have AVX2). */
void bnb4_avx2_rcp_approx(const float *x, size_t n, float *out);

/* ---- helpers shared by kernels -------------------------------------------------------------------- */

/* v rounded up to a multiple of a (a > 0) */
static inline size_t bnb4_round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* mul.ftz's flush at FLT_MIN itself, for the SIMD kernels: a product p = x * y that IEEE rounds to +-FLT_MIN
 * may be one the GPU flushes (it rounds to 24 bits first: bnb4_mul_ftz). Lanes set in edge - rare - are
 * redone by the scalar emulation. */
void bnb4_cpu_ftz_edge_lanes(float *p, const float *x, const float *y, unsigned edge, int lanes);

/* Scales of blocks [b0, b1) of q into out (plain: copies absmax; nested: decodes as the reference). */
void bnb4_cpu_block_scales(const bnb4_qtensor *q, size_t b0, size_t b1, float *out);

/* Decode flat elements [begin, end) of q to dt (exactly as bnb4_dequantize) into out[0 .. end-begin),
 * using the fast block kernel of `k` where blocks are whole, the reference elsewhere. */
void bnb4_cpu_decode(const bnb4_cpu_kernels *k, const bnb4_qtensor *q, size_t begin, size_t end, bnb4_dtype dt,
                     void *out);

/* ---- the tiled gemm driver (cpu_gemm_tile.c), shared by every ISA --------------------------------------
 * Y = X W^T in K chunks of BNB4_TILE_KC_BYTES per row: each group of BNB4_TILE_NR weight rows (output columns) is
 * decoded exactly once (scale applied, rounded to the kernel's element type as dequantize does) and
 * reused by every row of X; partial sums per chunk are added in chunk order, so each output's
 * arithmetic depends only on K, never on the thread split. Works for every shape. */
enum { BNB4_TILE_MR = 4, BNB4_TILE_NR = 4, BNB4_TILE_KC_BYTES = 4096, BNB4_TILE_COLS = 16 };

typedef struct bnb4_tile_ops {
    size_t kalign;     /* the micro-kernel's k step; rows are zero-padded to a multiple of it */
    size_t elem_bytes;     /* 4 (float32) or 2 (bfloat16) for both X and the weight tile */
    bnb4_dtype elem_dtype; /* BNB4_F32 or BNB4_BF16: weights are decoded straight to it, exactly as
                            * bnb4_dequantize writes them */
    /* out[i][r] = dot(x[i][0..kcp), w[r][0..kcp)) for i, r < 4 (w rows are kcp apart) */
    void (*micro)(const void *const x[BNB4_TILE_MR], const void *w, size_t kcp, float out[BNB4_TILE_MR][BNB4_TILE_NR]);
} bnb4_tile_ops;

size_t bnb4_tile_prep_bytes(const bnb4_tile_ops *t, const bnb4_gemm_args *a);
void bnb4_tile_prep(const bnb4_tile_ops *t, bnb4_gemm_args *a);
size_t bnb4_tile_scratch_bytes(const bnb4_tile_ops *t, const bnb4_gemm_args *a);
void bnb4_tile_run(const bnb4_tile_ops *t, const bnb4_cpu_kernels *k, const bnb4_gemm_args *a, size_t j0, size_t j1,
                   void *scratch);

#ifdef __cplusplus
}
#endif
#endif /* BNB4_CPU_INTERNAL_H */
