/*
 * cpu_backend.c - the CPU backend: splits each op into independent units and runs the kernels of the
 * effective ISA level (cpu_dispatch.c) on the thread pool (cpu_threads.c).
 *
 * Units never share a reduction: quantize and dequantize split by whole blocks, gemm/gemv by output
 * columns, so the bits of every result are the same for any thread count. Partial last blocks and
 * the odd final nibble go to the reference, which defines them.
 */
#include <stdlib.h>
#include <string.h>

#include "bnb4_backend.h"
#include "bnb4_ref.h"
#include "cpu_internal.h"

/* Elements per work unit for the streaming ops: large enough to amortize a dispatch, small enough
 * to balance two cores on small tensors. */
enum { STREAM_UNIT_ELEMENTS = 1 << 16, MAX_SCALES_PER_UNIT = 2048 };

static int ctx_threads(const bnb4_ctx *ctx) { return bnb4_parallel_max_threads(ctx->params.num_threads); }

static const bnb4_cpu_kernels *kernels(void) { return bnb4_cpu_kernels_for(bnb4_cpu_info_get()->level); }

bnb4_status bnb4_cpu_ctx_init(bnb4_ctx *ctx) {
    (void)ctx; /* the thread pool and feature table are process-wide and start lazily */
    return BNB4_OK;
}

void bnb4_cpu_ctx_free(bnb4_ctx *ctx) { (void)ctx; }

const char *bnb4_cpu_feature_string(void) { return bnb4_cpu_info_get()->features; }

static size_t blocks_of(size_t n, size_t blocksize) { return n / blocksize + (n % blocksize != 0); }

void bnb4_cpu_store_rows_x4(const bnb4_gemm_args *a, size_t j, size_t m, int cols, const float (*out)[4]) {
    const size_t N = a->w->rows;
    for (size_t i = 0; i < m; i++)
        for (int r = 0; r < cols; r++) {
            float v = out[i][r];
            if (a->bias)
                v += bnb4_ref_load(a->bias, a->dt, j + (size_t)r);
            bnb4_ref_store(a->y, a->dt, i * N + j + (size_t)r, v);
        }
}

/* ---- quantize ---------------------------------------------------------------------------------------- */

typedef struct {
    const bnb4_cpu_kernels *k;
    const void *src;
    bnb4_dtype dt;
    size_t blocksize, full_blocks, blocks_per_unit;
    bnb4_quant_type qt;
    uint8_t *packed;
    float *absmax;
} quantize_job;

static void quantize_unit(void *arg, size_t unit, int thread_index) {
    const quantize_job *j = (const quantize_job *)arg;
    (void)thread_index;
    const size_t b0 = unit * j->blocks_per_unit;
    const size_t b1 = b0 + j->blocks_per_unit < j->full_blocks ? b0 + j->blocks_per_unit : j->full_blocks;
    j->k->quantize_blocks(j->src, j->dt, j->blocksize, j->qt, b0, b1, j->packed, j->absmax);
}

bnb4_status bnb4_cpu_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype dt, size_t n, size_t blocksize,
                              bnb4_quant_type qt, uint8_t *packed, float *absmax) {
    quantize_job j = {kernels(), src, dt, blocksize, n / blocksize, 0, qt, packed, absmax};
    j.blocks_per_unit = STREAM_UNIT_ELEMENTS / blocksize ? STREAM_UNIT_ELEMENTS / blocksize : 1;
    if (j.full_blocks)
        bnb4_parallel_for(ctx_threads(ctx), blocks_of(j.full_blocks, j.blocks_per_unit), quantize_unit, &j);
    if (n % blocksize) /* the partial last block starts its absmax at 0 (padding), as the reference does */
        bnb4_ref_quantize_blocks(src, dt, n, blocksize, qt, j.full_blocks, j.full_blocks + 1, packed, absmax);
    return BNB4_OK;
}

/* ---- nested absmax (O(n / blocksize): small, single-threaded reference) ------------------------------ */

bnb4_status bnb4_cpu_nested_offset(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float *offset) {
    (void)ctx;
    *offset = bnb4_ref_nested_offset(absmax, nblocks);
    return BNB4_OK;
}

typedef struct {
    const bnb4_cpu_kernels *k;
    const float *absmax;
    size_t nblocks, nested_blocksize, nested_blocks, per_unit;
    float offset;
    uint8_t *codes;
    float *nested_absmax;
} nested_job;

static void quantize_nested_unit(void *arg, size_t unit, int thread_index) {
    const nested_job *j = (const nested_job *)arg;
    (void)thread_index;
    const size_t j0 = unit * j->per_unit;
    const size_t j1 = j0 + j->per_unit < j->nested_blocks ? j0 + j->per_unit : j->nested_blocks;
    void (*fn)(const float *, size_t, float, size_t, size_t, size_t, uint8_t *, float *) =
        j->k->quantize_nested_blocks ? j->k->quantize_nested_blocks : bnb4_ref_quantize_nested_blocks;
    fn(j->absmax, j->nblocks, j->offset, j->nested_blocksize, j0, j1, j->codes, j->nested_absmax);
}

bnb4_status bnb4_cpu_quantize_nested(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float offset,
                                     size_t nested_blocksize, uint8_t *codes, float *nested_absmax) {
    /* nested blocks are independent: split by them, about 16K absmax values per unit */
    nested_job j = {kernels(), absmax, nblocks, nested_blocksize, blocks_of(nblocks, nested_blocksize), 0,
                    offset, codes, nested_absmax};
    j.per_unit = nested_blocksize >= 16384 ? 1 : 16384 / nested_blocksize;
    bnb4_parallel_for(ctx_threads(ctx), blocks_of(j.nested_blocks, j.per_unit), quantize_nested_unit, &j);
    return BNB4_OK;
}

bnb4_status bnb4_cpu_dequantize_nested(bnb4_ctx *ctx, const bnb4_qtensor *q, float *absmax) {
    (void)ctx;
    bnb4_cpu_block_scales(q, 0, blocks_of(q->rows * q->cols, q->blocksize), absmax);
    return BNB4_OK;
}

/* ---- dequantize -------------------------------------------------------------------------------------- */

typedef struct {
    const bnb4_cpu_kernels *k;
    const bnb4_qtensor *q;
    bnb4_dtype dt;
    void *dst;
    size_t full_blocks, blocks_per_unit;
} dequantize_job;

static void dequantize_unit(void *arg, size_t unit, int thread_index) {
    const dequantize_job *j = (const dequantize_job *)arg;
    float scales[MAX_SCALES_PER_UNIT];
    (void)thread_index;
    const size_t bs = j->q->blocksize;
    const size_t b0 = unit * j->blocks_per_unit;
    const size_t b1 = b0 + j->blocks_per_unit < j->full_blocks ? b0 + j->blocks_per_unit : j->full_blocks;
    bnb4_cpu_block_scales(j->q, b0, b1, scales);
    j->k->dequantize_blocks(j->q->packed + b0 * bs / 2, scales, bnb4_codebook(j->q->quant_type), bs, b1 - b0, j->dt,
                            (char *)j->dst + b0 * bs * bnb4_dtype_size(j->dt));
}

bnb4_status bnb4_cpu_dequantize(bnb4_ctx *ctx, const bnb4_qtensor *q, bnb4_dtype dt, void *dst) {
    const size_t n = q->rows * q->cols;
    dequantize_job j = {kernels(), q, dt, dst, n / q->blocksize, 0};
    j.blocks_per_unit = STREAM_UNIT_ELEMENTS / q->blocksize ? STREAM_UNIT_ELEMENTS / q->blocksize : 1;
    if (j.full_blocks)
        bnb4_parallel_for(ctx_threads(ctx), blocks_of(j.full_blocks, j.blocks_per_unit), dequantize_unit, &j);
    if (n % q->blocksize)
        bnb4_ref_dequantize_range(q, dt, j.full_blocks * q->blocksize, n, dst);
    return BNB4_OK;
}

/* ---- gemm / gemv --------------------------------------------------------------------------------------- */

typedef struct {
    const bnb4_gemm_kernel *kern;
    const bnb4_gemm_args *args;
    char *scratch;
    size_t scratch_bytes, col_grain, units;
} gemm_job;

static void gemm_unit(void *arg, size_t unit, int thread_index) {
    const gemm_job *j = (const gemm_job *)arg;
    const size_t N = j->args->w->rows;
    const size_t j0 = unit * j->col_grain;
    const size_t j1 = j0 + j->col_grain < N ? j0 + j->col_grain : N;
    j->kern->run(j->args, j0, j1, j->scratch + (size_t)thread_index * j->scratch_bytes);
}

typedef struct {
    const bnb4_gemm_args *args;
    size_t col_grain;
} ref_gemm_job;

static void ref_gemm_unit(void *arg, size_t unit, int thread_index) {
    const ref_gemm_job *j = (const ref_gemm_job *)arg;
    const bnb4_gemm_args *a = j->args;
    (void)thread_index;
    const size_t j0 = unit * j->col_grain;
    const size_t j1 = j0 + j->col_grain < a->w->rows ? j0 + j->col_grain : a->w->rows;
    bnb4_ref_gemm_cols(a->w, a->dt, a->m, a->x, a->bias, a->y, j0, j1);
}

static const bnb4_gemm_kernel *select_gemm(const bnb4_cpu_kernels *k, const bnb4_qtensor *w, bnb4_dtype dt,
                                           size_t m) {
    /* aligned: K a multiple of 128 and of the blocksize, and below 2^26 (the panel gemm keeps 32 rows'
     * block scales in scratch and indexes them with 32-bit gathers) */
    const int aligned = w->cols % 128 == 0 && w->cols % w->blocksize == 0 && w->cols < ((size_t)1 << 26);
    return k->gemm_select ? k->gemm_select(dt, m, aligned) : NULL;
}

/* Round a byte count up to a cache line; 0 on overflow. */
static size_t cache_round(size_t bytes) { return bytes > SIZE_MAX - 63 ? 0 : (bytes + 63) & ~(size_t)63; }

bnb4_status bnb4_cpu_gemm(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                          const void *bias, void *y) {
    const bnb4_cpu_kernels *k = kernels();
    const bnb4_gemm_kernel *kern = select_gemm(k, w, dt, m);
    bnb4_gemm_args args = {w, dt, m, x, bias, y, bnb4_codebook(w->quant_type), NULL};
    const int threads = ctx_threads(ctx);
    if (!kern) {
        ref_gemm_job j = {&args, 16};
        bnb4_parallel_for(threads, blocks_of(w->rows, j.col_grain), ref_gemm_unit, &j);
        return BNB4_OK;
    }
    /* sizes are SIZE_MAX when they overflow */
    const size_t prep = kern->prep_bytes ? kern->prep_bytes(&args) : 0;
    const size_t raw_scratch = kern->scratch_bytes ? kern->scratch_bytes(&args) : 0;
    const size_t per_thread = cache_round(raw_scratch);
    const int max_threads = bnb4_parallel_max_threads(threads);
    if (prep == SIZE_MAX || (prep && cache_round(prep) == 0) || (raw_scratch && per_thread == 0) ||
        per_thread > SIZE_MAX / (size_t)max_threads)
        return bnb4_fail(BNB4_ERR_OVERFLOW, "bnb4_gemm: scratch size for m = %zu, K = %zu overflows size_t", m, w->cols);
    void *xp = prep ? aligned_alloc(64, cache_round(prep)) : NULL;
    char *scratch = per_thread ? (char *)aligned_alloc(64, per_thread * (size_t)max_threads) : NULL;
    if ((prep && !xp) || (per_thread && !scratch)) {
        free(xp);
        free(scratch);
        return bnb4_fail(BNB4_ERR_OUT_OF_MEMORY, "bnb4_gemm: cannot allocate %zu + %zu bytes of scratch for %s", prep,
                         per_thread * (size_t)max_threads, kern->name);
    }
    args.xp = xp;
    if (kern->prep)
        kern->prep(&args);
    size_t grain = kern->col_grain;
    if (kern->any_range) { /* about 4 ranges per thread: balance without breaking the weight streams */
        const size_t want = blocks_of(w->rows, (size_t)max_threads * 4);
        grain = blocks_of(want, kern->col_grain) * kern->col_grain;
    }
    gemm_job j = {kern, &args, scratch, per_thread, grain, blocks_of(w->rows, grain)};
    bnb4_parallel_for(threads, j.units, gemm_unit, &j);
    free(xp);
    free(scratch);
    return BNB4_OK;
}

const char *bnb4_cpu_kernel_name(bnb4_ctx *ctx, bnb4_op op, bnb4_dtype dt, size_t m) {
    (void)ctx;
    const bnb4_cpu_kernels *k = kernels();
    switch (op) {
    case BNB4_OP_QUANTIZE:
        return k->quantize_name[dt];
    case BNB4_OP_QUANTIZE_NESTED:
        return k->quantize_nested_blocks == bnb4_ref_quantize_nested_blocks || !k->quantize_nested_blocks
                   ? "ref"
                   : k->isa == BNB4_ISA_AVX512 ? "quantize_nested_8bit__avx512"
                   : k->isa == BNB4_ISA_AVX2   ? "quantize_nested_8bit__avx2"
                                               : "quantize_nested_8bit";
    case BNB4_OP_DEQUANTIZE:
        return k->dequantize_name[dt];
    case BNB4_OP_GEMV:
        m = 1;
        /* fall through */
    case BNB4_OP_GEMM: {
        /* the kernel for shapes with K a multiple of 128 and of the blocksize (every real model) */
        const bnb4_gemm_kernel *kern = k->gemm_select ? k->gemm_select(dt, m ? m : 1, 1) : NULL;
        return kern ? kern->name : "ref";
    }
    }
    return "invalid";
}
