/*
 * bnb4_ref.h - scalar reference kernels: obviously right, bit-exact with bitsandbytes' CUDA kernels
 * where bytes are defined, and the CPU fallback on any machine.
 *
 * Every faster path (SIMD, threads, CUDA) is tested against these. They work on ranges (of blocks,
 * elements or output columns) so the CPU backend can split work across threads and hand tails to
 * them. Arguments are assumed validated by src/core (no checks here beyond asserts).
 */
#ifndef BNB4_REF_H
#define BNB4_REF_H

#include "bnb4.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element i of src (dtype dt) converted exactly to float32. */
float bnb4_ref_load(const void *src, bnb4_dtype dt, size_t i);
/* Store v (float32) as element i of dst, rounded to dt (round to nearest even). */
void bnb4_ref_store(void *dst, bnb4_dtype dt, size_t i, float v);

/* Quantize blocks [block_begin, block_end) of the n-element src (bnb4_quantize's contract). */
void bnb4_ref_quantize_blocks(const void *src, bnb4_dtype dt, size_t n, size_t blocksize,
                              bnb4_quant_type qt, size_t block_begin, size_t block_end,
                              uint8_t *packed, float *absmax);

/* The offset bitsandbytes subtracts: absmax.mean() as torch computes it on CUDA, bit for bit
 * (bnb4_torch_mean.h). */
float bnb4_ref_nested_offset(const float *absmax, size_t nblocks);

/* 8-bit blockwise quantization of absmax[i] - offset, nested blocks [nb_begin, nb_end). */
void bnb4_ref_quantize_nested_blocks(const float *absmax, size_t nblocks, float offset,
                                     size_t nested_blocksize, size_t nb_begin, size_t nb_end,
                                     uint8_t *codes, float *nested_absmax);

/* The float32 scale of 4-bit block b of q: absmax[b], or the nested value decoded as
 * bitsandbytes' dequantize_4bit does: f32(f32(code[c] * nested_absmax) + offset). */
float bnb4_ref_block_scale(const bnb4_qtensor *q, size_t b);

/* Dequantize elements [begin, end) of q to dst (indexed from element 0 of the tensor). */
void bnb4_ref_dequantize_range(const bnb4_qtensor *q, bnb4_dtype dt, size_t begin, size_t end, void *dst);

/* Y[m, N] = X[m, K] W^T + bias for output columns [n_begin, n_end) of every row: weights
 * f32(code * scale), products and sums in float64, bias added before the single final rounding. */
void bnb4_ref_gemm_cols(const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x, const void *bias,
                        void *y, size_t n_begin, size_t n_end);

#ifdef __cplusplus
}
#endif
#endif /* BNB4_REF_H */
