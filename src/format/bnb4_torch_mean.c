/* bnb4_torch_mean.c -- torch's CUDA float32 mean, restated in its own order (see bnb4_torch_mean.h). */
#include "bnb4_torch_mean.h"

#include <stdint.h>

enum {
    MAX_THREADS = 512,         /* ReduceConfig's block size cap */
    VEC = 4,                   /* float32 loads of 16 bytes */
    VECTORIZE_FROM = 128,      /* inputs of this many values or more are read in 4-vectors */
    MIN_PER_THREAD = 16,
    MAX_PER_THREAD = 256
};

static size_t div_up(size_t a, size_t b) { return (a + b - 1) / b; }

static size_t last_pow2(size_t n) {
    size_t p = 1;
    while (p <= n / 2)
        p *= 2;
    return p;
}

/* One block's reduction of its threads' values v[0..w) (w a power of 2): torch's block_x_reduce, thread 0's
 * result - pairs at distance w/2, w/4, ..., 32 through shared memory, then the warp's shuffles down by 16, 8,
 * ..., 1: one halving tree. v is overwritten. */
static float block_reduce(float *v, size_t w) {
    for (size_t off = w / 2; off >= 1; off /= 2)
        for (size_t t = 0; t < off; t++)
            v[t] = v[t] + v[t + off];
    return v[0];
}

/* Thread t of block c: its accumulators over the 4-vectors t + cW + k*stride, and the tail. */
static float thread_vectorized(const float *x, size_t n, size_t t, size_t c, size_t w, size_t stride) {
    float a[VEC] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (size_t idx = t + c * w; idx * VEC + VEC - 1 < n; idx += stride)
        for (int i = 0; i < VEC; i++)
            a[i] = a[i] + x[idx * VEC + i];
    const size_t tail = n - n % VEC;
    if (c == 0 && tail + t < n) /* the tail goes to block 0 */
        a[0] = a[0] + x[tail + t];
    return ((a[0] + a[1]) + a[2]) + a[3];
}

/* n < 128: thread t sums x[t] and x[t + W] in the first two of its four accumulators. */
static float thread_scalar(const float *x, size_t n, size_t t, size_t w) {
    float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (size_t i = 0, idx = t; i < 4 && idx < n; i++, idx += w)
        a[i] = a[i] + x[idx];
    return ((a[0] + a[1]) + a[2]) + a[3];
}

float bnb4_torch_cuda_mean_f32(const float *x, size_t n) {
    return bnb4_torch_cuda_mean_f32_on(x, n, BNB4_TORCH_MEAN_SMS, BNB4_TORCH_MEAN_SM_THREADS);
}

float bnb4_torch_cuda_mean_f32_on(const float *x, size_t n, unsigned sms, unsigned threads_per_sm) {
    if (n > INT32_MAX) { /* not torch's order (documented): the correctly rounded mean */
        double sum = 0.0;
        for (size_t i = 0; i < n; i++)
            sum += x[i];
        return (float)(sum / (double)n);
    }
    const int vectorized = n >= VECTORIZE_FROM;
    const size_t dim0 = vectorized ? n / VEC : n;
    const size_t w = dim0 >= MAX_THREADS ? MAX_THREADS : last_pow2(dim0);
    const size_t per_thread = div_up(n, w); /* counted in values, as torch counts it */
    size_t ctas = 1;
    if (per_thread >= MAX_PER_THREAD) {
        /* torch: multiProcessorCount x (maxThreadsPerMultiProcessor / block size) */
        const size_t target = (size_t)sms * (threads_per_sm / w);
        const size_t by_min = div_up(per_thread, MIN_PER_THREAD), by_max = div_up(per_thread, MAX_PER_THREAD);
        ctas = by_min < target ? by_min : target;
        if (ctas < by_max)
            ctas = by_max;
    }
    const size_t stride = w * ctas;
    float v[MAX_THREADS], last[MAX_THREADS] = {0};
    for (size_t c = 0; c < ctas; c++) {
        for (size_t t = 0; t < w; t++)
            v[t] = vectorized ? thread_vectorized(x, n, t, c, w, stride) : thread_scalar(x, n, t, w);
        const float block = block_reduce(v, w);
        if (ctas == 1)
            return block * (1.0f / (float)n); /* MeanOps: float(1) / numel, then a multiply */
        /* the last block's thread t sums blocks t, t + W, ... in that order, from +0 */
        last[c % w] = last[c % w] + block;
    }
    const float total = block_reduce(last, w);
    return total * (1.0f / (float)n);
}
