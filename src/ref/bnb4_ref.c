/*
 * bnb4_ref.c - the scalar reference: bitsandbytes' CUDA kernels restated one element at a time.
 *
 * Quantize follows kQuantizeBlockwise / kQuantizeBlockwiseSmall exactly:
 *  - absmax is a running fmaxf of |x| starting at -FLT_MAX, so NaN elements (signaling ones too:
 *    bnb4_fmax_gpu) are ignored and an all-NaN block stores -FLT_MAX; the kernels load a partial
 *    last block padded with zeros and reduce over the padding too, so a partial block starts at 0;
 *  - the block is normalised by multiplying with the GPU's approximate reciprocal of absmax
 *    (bnb4_rcp_approx_f32), not by dividing;
 *  - everything runs with flush-to-zero (bitsandbytes builds with --use_fast_math): subnormal
 *    inputs and products count as signed zeros;
 *  - the code is chosen by strict comparisons with the kernel's float32 thresholds (bnb4_format.h);
 *  - an odd n's final low nibble encodes the padding zero, 0 * rcp(absmax).
 */
#include "bnb4_ref.h"

#include <assert.h>
#include <float.h>
#include <math.h>

#include "bnb4_format.h"
#include "bnb4_half.h"
#include "bnb4_rcp.h"
#include "bnb4_torch_mean.h"

static const float nf4_codebook[16] = {BNB4_NF4_CODEBOOK_VALUES};
static const float fp4_codebook[16] = {BNB4_FP4_CODEBOOK_VALUES};
static const float nested_code[256] = {BNB4_NESTED_CODE_VALUES};

static const float *codebook_of(bnb4_quant_type qt) { return qt == BNB4_NF4 ? nf4_codebook : fp4_codebook; }

float bnb4_ref_load(const void *src, bnb4_dtype dt, size_t i) {
    switch (dt) {
    case BNB4_F16:
        return bnb4_f16_to_f32(((const uint16_t *)src)[i]);
    case BNB4_BF16:
        return bnb4_bf16_to_f32(((const uint16_t *)src)[i]);
    default:
        return ((const float *)src)[i];
    }
}

void bnb4_ref_store(void *dst, bnb4_dtype dt, size_t i, float v) {
    switch (dt) {
    case BNB4_F16:
        ((uint16_t *)dst)[i] = bnb4_f32_to_f16(v);
        break;
    case BNB4_BF16:
        ((uint16_t *)dst)[i] = bnb4_f32_to_bf16(v);
        break;
    default:
        ((float *)dst)[i] = v;
        break;
    }
}

static unsigned encode(bnb4_quant_type qt, float xn) {
    return qt == BNB4_NF4 ? bnb4_nf4_encode(xn) : bnb4_fp4_encode(xn);
}

void bnb4_ref_quantize_blocks(const void *src, bnb4_dtype dt, size_t n, size_t blocksize,
                              bnb4_quant_type qt, size_t block_begin, size_t block_end,
                              uint8_t *packed, float *absmax) {
    assert(blocksize % 2 == 0);
    for (size_t b = block_begin; b < block_end; b++) {
        const size_t begin = b * blocksize;
        const size_t end = n - begin < blocksize ? n : begin + blocksize;
        float amax = end - begin < blocksize ? 0.0f : -FLT_MAX;
        for (size_t i = begin; i < end; i++)
            amax = bnb4_fmax_gpu(amax, fabsf(bnb4_ftz(bnb4_ref_load(src, dt, i))));
        absmax[b] = amax;
        const float inv = bnb4_rcp_approx_f32(amax);
        const unsigned pad_code = encode(qt, bnb4_mul_ftz(0.0f, inv));
        for (size_t i = begin; i < end; i += 2) { /* blocks start at even elements */
            const unsigned hi = encode(qt, bnb4_mul_ftz(bnb4_ref_load(src, dt, i), inv));
            const unsigned lo =
                i + 1 < end ? encode(qt, bnb4_mul_ftz(bnb4_ref_load(src, dt, i + 1), inv)) : pad_code;
            packed[i / 2] = (uint8_t)((hi << 4) | lo);
        }
    }
}

float bnb4_ref_nested_offset(const float *absmax, size_t nblocks) {
    return bnb4_torch_cuda_mean_f32(absmax, nblocks); /* bitsandbytes' absmax.mean() on CUDA */
}

static float add_ftz(float a, float b) { return bnb4_ftz(bnb4_ftz(a) + bnb4_ftz(b)); }

/* dQuantize<0> of bitsandbytes' kernels.cu: a 7-step binary search over the sorted 256-entry map
 * that remembers the last entries seen below and above x, then a midpoint test between the final
 * pivot and the bracketing entry on x's side. Restated step by step, because it, not "the nearest
 * entry", defines the bytes (the two differ when the midpoint rounds, and at the map's ends). */
static uint8_t quantize_8bit(const float *code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int step = 64; step > 0; step >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += step;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= step;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255)
        upper = code[upper_pivot];
    if (lower_pivot == 0)
        lower = code[lower_pivot];
    if (x > val)
        return (uint8_t)(x > bnb4_mul_ftz(add_ftz(upper, val), 0.5f) ? upper_pivot : pivot);
    return (uint8_t)(x < bnb4_mul_ftz(add_ftz(lower, val), 0.5f) ? lower_pivot : pivot);
}

void bnb4_ref_quantize_nested_blocks(const float *absmax, size_t nblocks, float offset,
                                     size_t nested_blocksize, size_t nb_begin, size_t nb_end,
                                     uint8_t *codes, float *nested_absmax) {
    const float *code = nested_code;
    for (size_t j = nb_begin; j < nb_end; j++) {
        const size_t begin = j * nested_blocksize;
        const size_t end = nblocks - begin < nested_blocksize ? nblocks : begin + nested_blocksize;
        /* torch computes absmax - offset in IEEE float32, then the kernel loads it with FTZ */
        float amax = end - begin < nested_blocksize ? 0.0f : -FLT_MAX;
        for (size_t i = begin; i < end; i++)
            amax = bnb4_fmax_gpu(amax, fabsf(bnb4_ftz(absmax[i] - offset)));
        nested_absmax[j] = amax;
        const float inv = bnb4_rcp_approx_f32(amax);
        for (size_t i = begin; i < end; i++)
            codes[i] = quantize_8bit(code, bnb4_mul_ftz(absmax[i] - offset, inv));
    }
}

float bnb4_ref_block_scale(const bnb4_qtensor *q, size_t b) {
    if (q->absmax)
        return q->absmax[b];
    const float dq = bnb4_mul_ftz(q->nested.code[q->nested.codes[b]], q->nested.absmax[b / q->nested.blocksize]);
    return dq + q->nested.offset;
}

void bnb4_ref_dequantize_range(const bnb4_qtensor *q, bnb4_dtype dt, size_t begin, size_t end, void *dst) {
    const float *cb = codebook_of(q->quant_type);
    size_t block = (size_t)-1;
    float scale = 0.0f;
    for (size_t i = begin; i < end; i++) {
        if (i / q->blocksize != block) {
            block = i / q->blocksize;
            scale = bnb4_ref_block_scale(q, block);
        }
        bnb4_ref_store(dst, dt, i, bnb4_mul_ftz(cb[bnb4_nibble_at(q->packed, i)], scale));
    }
}

void bnb4_ref_gemm_cols(const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x, const void *bias,
                        void *y, size_t n_begin, size_t n_end) {
    const float *cb = codebook_of(w->quant_type);
    const size_t N = w->rows, K = w->cols;
    for (size_t j = n_begin; j < n_end; j++) {
        for (size_t r = 0; r < m; r++) {
            double acc = 0.0;
            size_t block = (size_t)-1;
            float scale = 0.0f;
            for (size_t k = 0; k < K; k++) {
                const size_t flat = j * K + k;
                if (flat / w->blocksize != block) {
                    block = flat / w->blocksize;
                    scale = bnb4_ref_block_scale(w, block);
                }
                const float wv = bnb4_mul_ftz(cb[bnb4_nibble_at(w->packed, flat)], scale);
                acc += (double)bnb4_ref_load(x, dt, r * K + k) * (double)wv;
            }
            if (bias)
                acc += (double)bnb4_ref_load(bias, dt, j);
            bnb4_ref_store(y, dt, r * N + j, (float)acc);
        }
    }
}
