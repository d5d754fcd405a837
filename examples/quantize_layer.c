/*
 * quantize_layer.c - the five-minute tour of libbnb4 on a realistic layer.
 *
 * Quantizes a 4096 x 4096 float16 weight (a Llama-7B attention projection, random normal with
 * std 0.02) to NF4 with blocksize 64 and double-quantized absmax, exactly as bitsandbytes stores it,
 * then reports the error against float64, the bytes saved, and runs gemv (batch 1) and gemm
 * (batch 8) on it. Usage: bnb4_example [rows cols]
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bnb4.h"

#define CHECK(call)                                                                              \
    do {                                                                                          \
        bnb4_status st_ = (call);                                                                 \
        if (st_ != BNB4_OK) {                                                                     \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, bnb4_status_string(st_), bnb4_last_error()); \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void) { /* xorshift64*, good enough for test data */
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) * 0x1p-53;
}
static double normal(void) { return sqrt(-2.0 * log(1.0 - uniform())) * cos(6.283185307179586 * uniform()); }

/* float16 <-> float32 for the example's data (bnb4 takes float16 as raw uint16_t bits). Round to
 * nearest even; float16 subnormals handled by scaling (lrintf rounds to even). */
static uint16_t to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax < 0x38800000u) /* below 2^-14: a multiple of 2^-24 */
        return (uint16_t)(sign | (uint32_t)lrintf(fabsf(f) * 0x1p24f));
    const uint32_t r = ax - 0x38000000u; /* the example's values never overflow float16 */
    return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
}
static float from_f16(uint16_t h) {
    const uint32_t e = (h >> 10) & 31u, m = h & 1023u;
    const float mag = e ? ldexpf((float)(m | 1024u), (int)e - 25) : ldexpf((float)m, -24);
    return (h & 0x8000u) ? -mag : mag;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const size_t N = argc > 2 ? strtoul(argv[1], NULL, 10) : 4096, K = argc > 2 ? strtoul(argv[2], NULL, 10) : 4096;
    const size_t n = N * K, bs = 64, nbs = 256, M = 8;
    size_t packed_bytes, nblocks, nnested;
    CHECK(bnb4_packed_bytes(n, &packed_bytes));
    CHECK(bnb4_absmax_count(n, bs, &nblocks));
    CHECK(bnb4_absmax_count(nblocks, nbs, &nnested));
    printf("bnb4 %s: %zu x %zu float16 weight -> NF4, blocksize %zu, double-quantized absmax\n",
           bnb4_version_string(), N, K, bs);

    uint16_t *w = malloc(n * 2);
    uint8_t *packed = malloc(packed_bytes), *codes = malloc(nblocks);
    float *absmax = malloc(nblocks * 4), *nested_absmax = malloc(nnested * 4), *wdq = malloc(n * 4);
    uint16_t *x = malloc(M * K * 2), *y = malloc(M * N * 2);
    if (!w || !packed || !codes || !absmax || !nested_absmax || !wdq || !x || !y)
        return fprintf(stderr, "out of memory\n"), 1;
    for (size_t i = 0; i < n; i++)
        w[i] = to_f16((float)(0.02 * normal()));
    for (size_t i = 0; i < M * K; i++)
        x[i] = to_f16((float)normal());

    double t = now();
    CHECK(bnb4_quantize(NULL, w, BNB4_F16, n, bs, BNB4_NF4, packed, absmax));
    float offset;
    CHECK(bnb4_nested_offset(NULL, absmax, nblocks, &offset));
    CHECK(bnb4_quantize_nested(NULL, absmax, nblocks, offset, nbs, codes, nested_absmax));
    const double t_quant = now() - t;
    const bnb4_qtensor q = bnb4_qtensor_nested(N, K, bs, BNB4_NF4, packed, codes, nested_absmax,
                                               bnb4_nested_code(), offset, nbs);
    t = now();
    CHECK(bnb4_dequantize(NULL, &q, BNB4_F32, wdq));
    const double t_dequant = now() - t;

    double err2 = 0, ref2 = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)wdq[i] - (double)from_f16(w[i]);
        err2 += d * d, ref2 += (double)from_f16(w[i]) * from_f16(w[i]);
    }
    const size_t q_bytes = packed_bytes + nblocks + nnested * 4 + 4;
    printf("quantize   %8.1f ms   dequantize %8.1f ms\n", 1e3 * t_quant, 1e3 * t_dequant);
    printf("weight error (relative Frobenius, vs float64): %.4f\n", sqrt(err2 / ref2));
    printf("size: %zu bytes float16 -> %zu bytes (%.3f bits per weight, %.1fx smaller)\n", n * 2, q_bytes,
           8.0 * (double)q_bytes / (double)n, (double)(n * 2) / (double)q_bytes);

    for (size_t m = 1; m <= M; m += M - 1) {
        t = now();
        CHECK(bnb4_linear(NULL, &q, BNB4_F16, m, x, NULL, y));
        const double dt = now() - t;
        double e2 = 0, r2 = 0; /* check row 0 against float64 on the dequantized weight */
        for (size_t j = 0; j < N; j++) {
            double acc = 0;
            for (size_t k = 0; k < K; k++)
                acc += (double)from_f16(x[k]) * wdq[j * K + k];
            e2 += (from_f16(y[j]) - acc) * (from_f16(y[j]) - acc), r2 += acc * acc;
        }
        printf("linear m=%zu %8.1f ms   kernel %-28s relative error vs float64 %.2e\n", m, 1e3 * dt,
               bnb4_kernel_name(NULL, m == 1 ? BNB4_OP_GEMV : BNB4_OP_GEMM, BNB4_F16, m), sqrt(e2 / r2));
    }
    free(w), free(packed), free(codes), free(absmax), free(nested_absmax), free(wdq), free(x), free(y);
    return 0;
}
