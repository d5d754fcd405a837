/*
 * cpu_dispatch.c - maps the effective ISA level to its kernel table, and the shared helpers every
 * table uses (block scales, exact decode of arbitrary element ranges).
 *
 * The scalar level is the reference (src/ref) run on the thread pool. The AMX level is the AVX-512 table
 * with an AMX-BF16 tile gemm for bfloat16 activations (x86/kernels_amx.c): its other kernels are the
 * AVX-512 ones, and their names say so.
 */
#include <string.h>

#include "bnb4_format.h"
#include "bnb4_half.h"
#include "bnb4_ref.h"
#include "cpu_internal.h"

static void quantize_blocks_ref(const void *src, bnb4_dtype dt, size_t blocksize, bnb4_quant_type qt, size_t b0,
                                size_t b1, uint8_t *packed, float *absmax) {
    /* every block in [b0, b1) is full, so n = b1 * blocksize is exact for the reference's bounds */
    bnb4_ref_quantize_blocks(src, dt, b1 * blocksize, blocksize, qt, b0, b1, packed, absmax);
}

static void store_f32_as(void *dst, bnb4_dtype dt, size_t i, float v) { bnb4_ref_store(dst, dt, i, v); }

static void dequantize_blocks_ref(const uint8_t *packed, const float *scales, const float *codebook, size_t blocksize,
                                  size_t nblocks, bnb4_dtype dt, void *dst) {
    for (size_t b = 0; b < nblocks; b++)
        for (size_t i = 0; i < blocksize; i++) {
            const size_t e = b * blocksize + i;
            store_f32_as(dst, dt, e, bnb4_mul_ftz(codebook[bnb4_nibble_at(packed, e)], scales[b]));
        }
}

static const bnb4_cpu_kernels kernels_scalar = {
    BNB4_ISA_SCALAR,
    {"quantize_f32__scalar", "quantize_f16__scalar", "quantize_bf16__scalar"},
    {"dequantize_f32__scalar", "dequantize_f16__scalar", "dequantize_bf16__scalar"},
    quantize_blocks_ref,
    dequantize_blocks_ref,
    NULL,
    NULL,
    bnb4_ref_quantize_nested_blocks,
};

const bnb4_cpu_kernels *bnb4_cpu_kernels_for(bnb4_isa isa) {
    switch (isa) {
#if defined(__x86_64__)
    case BNB4_ISA_AMX:
        return bnb4_kernels_amx();
    case BNB4_ISA_AVX512:
        return &bnb4_kernels_avx512;
    case BNB4_ISA_AVX2:
        return &bnb4_kernels_avx2;
#endif
#if defined(__aarch64__)
    case BNB4_ISA_NEON:
        return &bnb4_kernels_neon;
#endif
    default:
        return &kernels_scalar;
    }
}

/* Nested scales without a division per block (nested blocks are walked with a counter). */
static void nested_scales_generic(const bnb4_qtensor *q, size_t b0, size_t b1, float *out) {
    const uint8_t *codes = q->nested.codes;
    const float *code = q->nested.code, *nabs = q->nested.absmax, offset = q->nested.offset;
    const size_t nbs = q->nested.blocksize;
    size_t j = b0 / nbs, left = nbs - b0 % nbs; /* blocks left in nested block j */
    float s = nabs[j];
    for (size_t b = b0; b < b1; b++) { /* bnb4_ref_block_scale, inlined */
        out[b - b0] = bnb4_mul_ftz(code[codes[b]], s) + offset;
        if (--left == 0) {
            left = nbs;
            if (b + 1 < b1)
                s = nabs[++j];
        }
    }
}

void bnb4_cpu_block_scales(const bnb4_qtensor *q, size_t b0, size_t b1, float *out) {
    if (q->absmax) {
        memcpy(out, q->absmax + b0, (b1 - b0) * sizeof(float));
        return;
    }
    const bnb4_cpu_kernels *k = bnb4_cpu_kernels_for(bnb4_cpu_info_get()->level);
    (k->nested_scales ? k->nested_scales : nested_scales_generic)(q, b0, b1, out);
}

void bnb4_cpu_decode(const bnb4_cpu_kernels *k, const bnb4_qtensor *q, size_t begin, size_t end, bnb4_dtype dt,
                     void *out) {
    enum { CHUNK_BLOCKS = 64 };
    float scales[CHUNK_BLOCKS];
    const float *cb = bnb4_codebook(q->quant_type);
    const size_t bs = q->blocksize, esize = bnb4_dtype_size(dt);
    size_t i = begin;
    /* head: up to the first block boundary, one element at a time */
    const size_t head_end = begin % bs ? (begin / bs + 1) * bs : begin;
    for (; i < end && i < head_end; i++)
        bnb4_ref_store(out, dt, i - begin,
                       bnb4_mul_ftz(cb[bnb4_nibble_at(q->packed, i)], bnb4_ref_block_scale(q, i / bs)));
    /* whole blocks with the fast kernel */
    while (end - i >= bs) {
        size_t nb = (end - i) / bs;
        if (nb > CHUNK_BLOCKS)
            nb = CHUNK_BLOCKS;
        bnb4_cpu_block_scales(q, i / bs, i / bs + nb, scales);
        k->dequantize_blocks(q->packed + i / 2, scales, cb, bs, nb, dt, (char *)out + (i - begin) * esize);
        i += nb * bs;
    }
    /* tail */
    if (i < end) {
        const float s = bnb4_ref_block_scale(q, i / bs);
        for (; i < end; i++)
            bnb4_ref_store(out, dt, i - begin, bnb4_mul_ftz(cb[bnb4_nibble_at(q->packed, i)], s));
    }
}

void bnb4_cpu_ftz_edge_lanes(float *p, const float *x, const float *y, unsigned edge, int lanes) {
    for (int l = 0; l < lanes; l++)
        if (edge >> l & 1)
            p[l] = bnb4_mul_ftz(x[l], y[l]);
}
