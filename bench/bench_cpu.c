/*
 * bench_cpu.c - the CPU benchmark: measures this machine's ceilings and bnb4's kernels in one run and
 * reports each kernel as a ratio to the ceiling that bounds it.
 *
 * Ceilings (same run, same thread counts as the kernels):
 *   read     DRAM read bandwidth: a vector sum (with software prefetch) over a buffer far beyond the
 *            last-level cache
 *   copy     DRAM copy bandwidth (bytes read + written), memcpy per thread
 *   fma      float32 FMA peak: independent FMA chains in registers (AVX-512 / AVX2 / NEON)
 *   sgemm    OpenBLAS sgemm on the dense float32 weight (the dense reference), when linked
 * Kernels: gemv (m = 1) in weight bytes per second vs read; gemm (m = 8, 32, 128) in GFLOP/s vs fma and
 * sgemm; dequantize and quantize in bytes read + written per second vs copy. The packed weights rotate
 * over copies totalling >= --rotate-mib (default 1024 MiB), so every call reads them from DRAM.
 * Every number is the median of --runs timed calls (more, up to 31, for calls under ~10 ms) after one
 * warm-up call, each call paired with a fresh measurement of its ceiling just before it.
 *
 * Callable as bnb4_bench_cpu_main() (the `bnb4 bench` command) or through bench_cpu_main.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bnb4.h"

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#if BNB4_BENCH_HAVE_OPENBLAS
/* cblas prototypes (OpenBLAS), declared here to avoid depending on where the distribution puts cblas.h */
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
void openblas_set_num_threads(int num_threads);
enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };
#endif

int bnb4_bench_cpu_main(int argc, char **argv);

/* ---- options ----------------------------------------------------------------------------------------- */

typedef struct {
    size_t n, k;
} shape;

typedef struct {
    shape shapes[16];
    int nshapes;
    size_t ms[8];
    int nms;
    int runs;
    size_t rotate_mib;
    int threads; /* "all threads" count */
    int json;
    size_t blocksize;
} options;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *xalloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0 || !p) {
        fprintf(stderr, "bench_cpu: out of memory allocating %zu bytes\n", bytes);
        exit(2);
    }
    memset(p, 0, bytes); /* fault the pages in before timing */
    return p;
}

/* ---- a tiny thread team for the ceilings (independent of the library's pool) -------------------------- */

typedef void (*team_fn)(void *arg, int index, int count);
typedef struct {
    team_fn fn;
    void *arg;
    int index, count;
} team_member;

static void *team_main(void *p) {
    team_member *m = (team_member *)p;
    m->fn(m->arg, m->index, m->count);
    return NULL;
}

/* Runs fn on `count` threads (the caller is thread 0) and returns the wall time of the slowest. */
static double team_run(int count, team_fn fn, void *arg) {
    pthread_t tid[256];
    team_member mem[256];
    if (count > 256)
        count = 256;
    const double t0 = now_s();
    for (int i = 1; i < count; i++) {
        mem[i] = (team_member){fn, arg, i, count};
        pthread_create(&tid[i], NULL, team_main, &mem[i]);
    }
    fn(arg, 0, count);
    for (int i = 1; i < count; i++)
        pthread_join(tid[i], NULL);
    return now_s() - t0;
}

/* ---- ceilings --------------------------------------------------------------------------------------------- */

typedef struct {
    const float *buf;
    float *dst;
    size_t n; /* floats */
    volatile float sink[256];
} stream_arg;

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        /* software prefetch 4 KiB ahead: without it one core reads ~30% below what DRAM gives it */
        for (int l = 0; l < 4; l++)
            _mm_prefetch((const char *)(p + i) + 4096 + 64 * l, _MM_HINT_T1);
        s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}
__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        _mm_prefetch((const char *)(p + i) + 4096, _MM_HINT_T1);
        _mm_prefetch((const char *)(p + i) + 4096 + 64, _MM_HINT_T1);
        s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#endif

static float sum_floats(const float *p, size_t n) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f"))
        return sum_avx512(p, n);
    if (__builtin_cpu_supports("avx2"))
        return sum_avx2(p, n);
#endif
    float s[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += p[i + (size_t)j];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static void read_member(void *a, int index, int count) {
    stream_arg *s = (stream_arg *)a;
    const size_t part = s->n / (size_t)count / 64 * 64;
    s->sink[index] = sum_floats(s->buf + (size_t)index * part, part);
}

static void copy_member(void *a, int index, int count) {
    stream_arg *s = (stream_arg *)a;
    const size_t part = s->n / (size_t)count / 64 * 64;
    memcpy(s->dst + (size_t)index * part, s->buf + (size_t)index * part, part * sizeof(float));
}

/* bytes per second reading (or copying, counting read + write) n floats with `threads` threads */
static double stream_bw(int threads, int copy, float *buf, float *dst, size_t n, int runs) {
    stream_arg s = {buf, dst, n, {0}};
    double t[64];
    if (runs > 1) /* warm-up */
        team_run(threads, copy ? copy_member : read_member, &s);
    for (int r = 0; r < runs; r++)
        t[r] = team_run(threads, copy ? copy_member : read_member, &s);
    const size_t part = n / (size_t)threads / 64 * 64;
    return (double)(part * (size_t)threads * sizeof(float)) * (copy ? 2.0 : 1.0) / median(t, runs);
}

/* FMA peak: 12 independent chains of register FMAs, flops = 2 * lanes * chains * iterations. */
enum { FMA_ITERS = 4000000 };
typedef struct {
    volatile float sink[256];
    double flops_per_thread;
} fma_arg;

#if defined(__x86_64__)
#define FMA_BODY(V, SET1, FMA, ADD, LANES)                                                                         \
    V a0 = SET1(0.1f), a1 = SET1(0.2f), a2 = SET1(0.3f), a3 = SET1(0.4f), a4 = SET1(0.5f), a5 = SET1(0.6f);       \
    V a6 = SET1(0.7f), a7 = SET1(0.8f), a8 = SET1(0.9f), a9 = SET1(1.0f), a10 = SET1(1.1f), a11 = SET1(1.2f);      \
    const V b = SET1(0.999999f), c = SET1(1e-7f);                                                                 \
    for (long i = 0; i < FMA_ITERS; i++) {                                                                        \
        a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);                          \
        a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);                          \
        a8 = FMA(a8, b, c); a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);                      \
    }                                                                                                             \
    V s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));                                      \
    s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));                                                                  \
    float out[16];                                                                                                \
    memcpy(out, &s, sizeof(float) * LANES);                                                                       \
    return out[0];

__attribute__((target("avx512f"))) static float fma_avx512(void) {
    FMA_BODY(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, 16)
}
__attribute__((target("avx2,fma"))) static float fma_avx2(void) {
    FMA_BODY(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, 8)
}
#endif

static void fma_member(void *a, int index, int count) {
    fma_arg *f = (fma_arg *)a;
    (void)count;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
        f->sink[index] = fma_avx512();
        f->flops_per_thread = 2.0 * 16 * 12 * FMA_ITERS;
        return;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        f->sink[index] = fma_avx2();
        f->flops_per_thread = 2.0 * 8 * 12 * FMA_ITERS;
        return;
    }
#elif defined(__aarch64__)
    float32x4_t acc[12];
    for (int j = 0; j < 12; j++)
        acc[j] = vdupq_n_f32(0.1f * (float)j);
    const float32x4_t b = vdupq_n_f32(0.999999f), c = vdupq_n_f32(1e-7f);
    for (long i = 0; i < FMA_ITERS; i++)
        for (int j = 0; j < 12; j++)
            acc[j] = vfmaq_f32(c, acc[j], b);
    float s = 0;
    for (int j = 0; j < 12; j++)
        s += vaddvq_f32(acc[j]);
    f->sink[index] = s;
    f->flops_per_thread = 2.0 * 4 * 12 * FMA_ITERS;
    return;
#endif
    float s[12] = {0};
    for (long i = 0; i < FMA_ITERS / 4; i++)
        for (int j = 0; j < 12; j++)
            s[j] = s[j] * 0.999999f + 1e-7f;
    f->sink[index] = s[0];
    f->flops_per_thread = 2.0 * 12 * (FMA_ITERS / 4);
}

static double fma_peak(int threads, int runs) {
    fma_arg f;
    memset(&f, 0, sizeof f);
    double t[64];
    if (runs > 1)
        team_run(threads, fma_member, &f);
    for (int r = 0; r < runs; r++)
        t[r] = team_run(threads, fma_member, &f);
    return f.flops_per_thread * threads / median(t, runs);
}

/* One ceiling measurement of `kind` on `threads` threads, short enough to pair with every timed call:
 * 256 MiB read, 2 x 128 MiB copy (both far beyond the last-level cache), 4M FMA iterations. */
typedef enum { CEIL_READ, CEIL_COPY, CEIL_FMA } ceil_kind;
static const char *ceil_name(ceil_kind k) { return k == CEIL_READ ? "read" : k == CEIL_COPY ? "copy" : "fma"; }

static float *ceil_buf; /* 1 GiB, allocated by the main function */
static size_t ceil_floats;
static size_t ceil_rotation;

static double ceiling_once(ceil_kind kind, int threads) {
    if (kind == CEIL_FMA)
        return fma_peak(threads, 1);
    /* walk through the big buffer so consecutive measurements never find their data in cache */
    const size_t slice = (size_t)64 << 20; /* floats: 256 MiB */
    float *base = ceil_buf + (ceil_rotation++ % 2) * slice * 2;
    if (kind == CEIL_READ)
        return stream_bw(threads, 0, base, NULL, slice, 1);
    return stream_bw(threads, 1, base, base + slice, slice / 2, 1);
}

/* ---- measuring library calls ------------------------------------------------------------------------------- */

typedef int (*bench_call)(void *arg, int copy);

typedef struct {
    double seconds; /* median time of one call */
    double ratio;   /* (work / median time) / median ceiling, the ceiling measured just before each call */
    double ceiling; /* median ceiling over the runs */
} timing;

/* `runs` timed calls after one warm-up, the copy index advancing every call (weights rotate through
 * DRAM), each preceded by a fresh measurement of the ceiling, so a machine whose load changes during the
 * run still gives meaningful ratios. work = bytes or flops per call, matching the ceiling's unit. */
static timing time_paired(bench_call fn, void *arg, int copies, int runs, double work, ceil_kind kind, int threads) {
    double t[64], c[64];
    timing out = {NAN, NAN, NAN};
    const double w0 = now_s();
    if (fn(arg, 0) != 0)
        return out;
    /* short calls are noisier: give them more runs (up to 31, about 0.25 s of calls) */
    const double first = now_s() - w0;
    while (runs < 31 && first * (runs + 2) < 0.25)
        runs += 2;
    for (int i = 0; i < runs; i++) {
        c[i] = ceiling_once(kind, threads);
        const double t0 = now_s();
        if (fn(arg, (i + 1) % copies) != 0)
            return out;
        t[i] = now_s() - t0;
    }
    out.seconds = median(t, runs);
    out.ceiling = median(c, runs);
    /* the ratio of the medians (both sampled alternately over the same period); per-run ratios vary
     * more, as one short ceiling sample is noisy */
    out.ratio = work / out.seconds / out.ceiling;
    return out;
}

typedef struct {
    bnb4_ctx *ctx;
    size_t n, k, m;
    bnb4_dtype dt;
    uint8_t **packed; /* copies */
    float **absmax;   /* copies (plain) */
    uint8_t **codes;  /* copies (nested) */
    float *nested_absmax;
    float offset;
    int nested;
    size_t bs;
    void *x, *y;
    const float *src; /* quantize source */
    float *dense;     /* dense weights for sgemm */
} op_arg;

static bnb4_qtensor view_of(const op_arg *a, int copy) {
    if (!a->nested)
        return bnb4_qtensor_plain(a->n, a->k, a->bs, BNB4_NF4, a->packed[copy], a->absmax[copy]);
    return bnb4_qtensor_nested(a->n, a->k, a->bs, BNB4_NF4, a->packed[copy], a->codes[copy], a->nested_absmax,
                               bnb4_nested_code(), a->offset, 256);
}

static int call_gemm(void *p, int copy) {
    op_arg *a = (op_arg *)p;
    const bnb4_qtensor w = view_of(a, copy);
    return a->m == 1 ? bnb4_gemv(a->ctx, &w, a->dt, a->x, NULL, a->y)
                     : bnb4_gemm(a->ctx, &w, a->dt, a->m, a->x, NULL, a->y);
}

static int call_dequantize(void *p, int copy) {
    op_arg *a = (op_arg *)p;
    const bnb4_qtensor w = view_of(a, copy);
    return bnb4_dequantize(a->ctx, &w, a->dt, a->y);
}

static int call_quantize(void *p, int copy) {
    op_arg *a = (op_arg *)p;
    return bnb4_quantize(a->ctx, a->src, BNB4_F32, a->n * a->k, a->bs, BNB4_NF4, a->packed[copy], a->absmax[copy]);
}

#if BNB4_BENCH_HAVE_OPENBLAS
static int call_sgemm(void *p, int copy) {
    op_arg *a = (op_arg *)p;
    (void)copy; /* the dense weight is 8x the packed one: already far beyond the caches */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->m, (int)a->n, (int)a->k, 1.0f, (const float *)a->x,
                (int)a->k, a->dense, (int)a->k, 0.0f, (float *)a->y, (int)a->n);
    return 0;
}
#endif

/* ---- output ---------------------------------------------------------------------------------------------- */

typedef struct {
    char op[16], dtype[12], absmax[8], kernel[48];
    size_t n, k, m;
    int threads;
    double seconds, gbps, gflops, ratio, ratio_sgemm, ceiling_value;
    const char *ceiling;
} result;

static result results[1024];
static int nresults;

static FILE *table_out;

static void add_result(const char *op, const char *kernel, bnb4_dtype dt, int nested, size_t n, size_t k, size_t m,
                       int threads, timing tm, double bytes, double flops, ceil_kind kind, double sgemm_flops) {
    if (nresults >= (int)(sizeof results / sizeof results[0]))
        return;
    result *r = &results[nresults++];
    memset(r, 0, sizeof *r);
    snprintf(r->op, sizeof r->op, "%s", op);
    snprintf(r->dtype, sizeof r->dtype, "%s", bnb4_dtype_name(dt));
    snprintf(r->absmax, sizeof r->absmax, "%s", nested ? "nested" : "plain");
    snprintf(r->kernel, sizeof r->kernel, "%s", kernel);
    r->n = n, r->k = k, r->m = m, r->threads = threads, r->seconds = tm.seconds;
    r->gbps = bytes > 0 ? bytes / tm.seconds / 1e9 : 0;
    r->gflops = flops > 0 ? flops / tm.seconds / 1e9 : 0;
    r->ceiling = ceil_name(kind);
    r->ceiling_value = tm.ceiling;
    r->ratio = tm.ratio;
    r->ratio_sgemm = sgemm_flops > 0 ? (flops / tm.seconds) / sgemm_flops : 0;
    fprintf(table_out, "%-8s %-8s %-6s %5zux%-5zu %4zu %2d %9.3f %8.2f %8.1f %6.3f x %-4s (%7.2f)", r->op, r->dtype,
            r->absmax, n, k, m, threads, tm.seconds * 1e3, r->gbps, r->gflops, r->ratio, r->ceiling,
            kind == CEIL_FMA ? tm.ceiling / 1e9 : tm.ceiling / 1e9);
    if (r->ratio_sgemm > 0)
        fprintf(table_out, " %6.3f", r->ratio_sgemm);
    else
        fprintf(table_out, " %6s", "");
    fprintf(table_out, "  %s\n", kernel);
    fflush(table_out);
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_cpu [--json] [--quick] [--threads N] [--runs R] [--rotate-mib MIB] [--shapes NxK,...]\n"
            "                 [--m LIST] [--blocksize BS]\n"
            "  Measures DRAM read/copy bandwidth, the float32 FMA peak and OpenBLAS sgemm, then bnb4's gemv, gemm,\n"
            "  dequantize and quantize (NF4, float32 and bfloat16 activations, plain and nested absmax) on 1 thread\n"
            "  and N threads (default: all cores), as ratios to those ceilings. --json prints JSON on stdout and\n"
            "  the table on stderr. Defaults: shapes 4096x4096,14336x4096,4096x14336,28672x8192; m 1,8,32,128;\n"
            "  blocksize 64; 5 runs; weights rotated over 1024 MiB. --quick: 4096x4096 only, 3 runs.\n");
}

static int parse(int argc, char **argv, options *o) {
    const shape defaults[] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {28672, 8192}};
    memset(o, 0, sizeof *o);
    memcpy(o->shapes, defaults, sizeof defaults);
    o->nshapes = 4;
    const size_t ms[] = {1, 8, 32, 128};
    memcpy(o->ms, ms, sizeof ms);
    o->nms = 4;
    o->runs = 5;
    o->rotate_mib = 1024;
    o->blocksize = 64;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = cores > 0 ? (int)cores : 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--quick")) {
            o->nshapes = 1;
            o->runs = 3;
        } else if (!strcmp(a, "--threads") && v) {
            o->threads = atoi(v), i++;
        } else if (!strcmp(a, "--runs") && v) {
            o->runs = atoi(v), i++;
        } else if (!strcmp(a, "--rotate-mib") && v) {
            o->rotate_mib = (size_t)atol(v), i++;
        } else if (!strcmp(a, "--blocksize") && v) {
            o->blocksize = (size_t)atol(v), i++;
        } else if (!strcmp(a, "--shapes") && v) {
            o->nshapes = 0;
            for (const char *p = v; *p && o->nshapes < 16;) {
                unsigned long n = 0, k = 0;
                int used = 0;
                if (sscanf(p, "%lux%lu%n", &n, &k, &used) != 2 || n == 0 || k == 0) {
                    fprintf(stderr, "bench_cpu: bad shape list '%s' (want NxK,NxK)\n", v);
                    return -1;
                }
                o->shapes[o->nshapes++] = (shape){n, k};
                p += used;
                if (*p == ',')
                    p++;
            }
            i++;
        } else if (!strcmp(a, "--m") && v) {
            o->nms = 0;
            for (char *p = (char *)v; *p && o->nms < 8;) {
                char *end;
                const unsigned long m = strtoul(p, &end, 10);
                if (end == p || m == 0) {
                    fprintf(stderr, "bench_cpu: bad m list '%s'\n", v);
                    return -1;
                }
                o->ms[o->nms++] = m;
                p = *end == ',' ? end + 1 : end;
            }
            i++;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 1;
        } else {
            fprintf(stderr, "bench_cpu: unknown or incomplete option '%s'\n", a);
            usage();
            return -1;
        }
    }
    if (o->runs < 1 || o->runs > 64 || o->threads < 1 || o->threads > 256 || !bnb4_blocksize_supported(o->blocksize)) {
        fprintf(stderr, "bench_cpu: runs must be 1..64, threads 1..256, blocksize a bitsandbytes blocksize\n");
        return -1;
    }
    return 0;
}

static void fill_random(float *p, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) { /* sum of uniforms: roughly normal, cheap */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const float u1 = (float)(s >> 40) / 16777216.0f;
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const float u2 = (float)(s >> 40) / 16777216.0f;
        p[i] = (u1 + u2 - 1.0f) * 0.05f;
    }
}

static void fill_activation(void *x, bnb4_dtype dt, size_t n) {
    float *tmp = (float *)xalloc(n * sizeof(float));
    fill_random(tmp, n, 7);
    for (size_t i = 0; i < n; i++) {
        if (dt == BNB4_F32) {
            ((float *)x)[i] = tmp[i] * 20.0f;
        } else {
            uint32_t u;
            const float f = tmp[i] * 20.0f;
            memcpy(&u, &f, 4);
            ((uint16_t *)x)[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        }
    }
    free(tmp);
}

int bnb4_bench_cpu_main(int argc, char **argv) {
    options o;
    const int pr = parse(argc, argv, &o);
    if (pr != 0)
        return pr > 0 ? 0 : 2;
    table_out = o.json ? stderr : stdout;
    nresults = 0;
    int thread_counts[2] = {1, o.threads};
    const int nthread_counts = o.threads > 1 ? 2 : 1;

    /* ceilings: once here for the record, then again before every timed call (time_paired) */
    const size_t stream_floats = (size_t)256 << 20; /* 1 GiB read buffer; copy uses 2 x 512 MiB */
    float *big = (float *)xalloc(stream_floats * sizeof(float));
    for (size_t i = 0; i < stream_floats; i += 1024)
        big[i] = 1.0f;
    ceil_buf = big, ceil_floats = stream_floats;
    double load[3] = {0, 0, 0};
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = load[1] = load[2] = 0;
        fclose(lf);
    }
    fprintf(table_out, "load average at start: %.2f %.2f %.2f (other processes skew every number; ratios are paired)\n",
            load[0], load[1], load[2]);
    double read_bw[2], copy_bw[2], fma[2], sgemm_cache[2][8];
    memset(sgemm_cache, 0, sizeof sgemm_cache);
    for (int t = 0; t < nthread_counts; t++) {
        read_bw[t] = stream_bw(thread_counts[t], 0, big, NULL, stream_floats, o.runs);
        copy_bw[t] = stream_bw(thread_counts[t], 1, big, big + stream_floats / 2, stream_floats / 2, o.runs);
        fma[t] = fma_peak(thread_counts[t], o.runs);
        fprintf(table_out, "ceiling t=%d: DRAM read %.2f GB/s, DRAM copy (r+w) %.2f GB/s, f32 FMA peak %.1f GFLOP/s\n",
                thread_counts[t], read_bw[t] / 1e9, copy_bw[t] / 1e9, fma[t] / 1e9);
    }
    fprintf(table_out, "cpu features: %s; kernels: gemv %s, gemm %s / %s (bf16)\n", bnb4_cpu_features(),
            bnb4_kernel_name(NULL, BNB4_OP_GEMV, BNB4_F32, 1), bnb4_kernel_name(NULL, BNB4_OP_GEMM, BNB4_F32, 32),
            bnb4_kernel_name(NULL, BNB4_OP_GEMM, BNB4_BF16, 32));
    fprintf(table_out, "%-8s %-8s %-6s %11s %4s %2s %9s %8s %8s %14s %9s %6s  %s\n", "op", "dtype", "absmax", "NxK",
            "m", "t", "ms", "GB/s", "GFLOP/s", "ratio", "(ceiling)", "/sgemm", "kernel");

    /* shape sweep */
    for (int si = 0; si < o.nshapes; si++) {
        const size_t N = o.shapes[si].n, K = o.shapes[si].k, n = N * K, bs = o.blocksize;
        const size_t nb = (n + bs - 1) / bs, pbytes = (n + 1) / 2;
        const double wbytes_plain = (double)pbytes + 4.0 * (double)nb;
        const double wbytes_nested = (double)pbytes + (double)nb + 4.0 * (double)((nb + 255) / 256);
        size_t copies = ((o.rotate_mib << 20) + pbytes - 1) / pbytes;
        if (copies < 2)
            copies = 2;
        if (copies > 4096)
            copies = 4096;
        float *src = (float *)xalloc(n * sizeof(float));
        fill_random(src, n, 1 + (uint64_t)si);
        op_arg a;
        memset(&a, 0, sizeof a);
        a.n = N, a.k = K, a.bs = bs, a.src = src;
        a.packed = (uint8_t **)calloc(copies, sizeof(uint8_t *));
        a.absmax = (float **)calloc(copies, sizeof(float *));
        a.codes = (uint8_t **)calloc(copies, sizeof(uint8_t *));
        if (!a.packed || !a.absmax || !a.codes) {
            fprintf(stderr, "bench_cpu: out of memory\n");
            return 2;
        }
        a.packed[0] = (uint8_t *)xalloc(pbytes);
        a.absmax[0] = (float *)xalloc(nb * sizeof(float));
        a.codes[0] = (uint8_t *)xalloc(nb);
        a.nested_absmax = (float *)xalloc(((nb + 255) / 256) * sizeof(float));
        if (bnb4_quantize(NULL, src, BNB4_F32, n, bs, BNB4_NF4, a.packed[0], a.absmax[0]) != BNB4_OK ||
            bnb4_nested_offset(NULL, a.absmax[0], nb, &a.offset) != BNB4_OK ||
            bnb4_quantize_nested(NULL, a.absmax[0], nb, a.offset, 256, a.codes[0], a.nested_absmax) != BNB4_OK) {
            fprintf(stderr, "bench_cpu: quantize failed: %s\n", bnb4_last_error());
            return 2;
        }
        for (size_t c = 1; c < copies; c++) {
            a.packed[c] = (uint8_t *)xalloc(pbytes);
            memcpy(a.packed[c], a.packed[0], pbytes);
            a.absmax[c] = (float *)xalloc(nb * sizeof(float));
            memcpy(a.absmax[c], a.absmax[0], nb * sizeof(float));
            a.codes[c] = (uint8_t *)xalloc(nb);
            memcpy(a.codes[c], a.codes[0], nb);
        }
        size_t max_m = 1;
        for (int mi = 0; mi < o.nms; mi++)
            max_m = o.ms[mi] > max_m ? o.ms[mi] : max_m;
        a.x = xalloc(max_m * K * sizeof(float));
        a.y = xalloc((n > max_m * N ? n : max_m * N) * sizeof(float)); /* also the dequantize output */
#if BNB4_BENCH_HAVE_OPENBLAS
        a.dense = (float *)xalloc(n * sizeof(float));
        bnb4_qtensor q0 = bnb4_qtensor_plain(N, K, bs, BNB4_NF4, a.packed[0], a.absmax[0]);
        bnb4_dequantize(NULL, &q0, BNB4_F32, a.dense);
#endif
        for (int t = 0; t < nthread_counts; t++) {
            bnb4_ctx_params p;
            bnb4_ctx_params_default(&p);
            p.num_threads = thread_counts[t];
            if (bnb4_ctx_create(&p, &a.ctx) != BNB4_OK)
                return 2;
            const int T = thread_counts[t];
            /* OpenBLAS sgemm reference for each m, float32 */
#if BNB4_BENCH_HAVE_OPENBLAS
            openblas_set_num_threads(T);
            for (int mi = 0; mi < o.nms; mi++) {
                a.m = o.ms[mi], a.dt = BNB4_F32;
                fill_activation(a.x, BNB4_F32, a.m * K);
                const double flops = 2.0 * (double)a.m * (double)N * (double)K;
                const timing tm = time_paired(call_sgemm, &a, (int)copies, o.runs, flops, CEIL_FMA, T);
                sgemm_cache[t][mi] = flops / tm.seconds;
                add_result("sgemm", "openblas", BNB4_F32, 0, N, K, a.m, T, tm, 4.0 * (double)n, flops, CEIL_FMA, 0);
            }
#endif
            for (int dti = 0; dti < 2; dti++) {
                a.dt = dti ? BNB4_BF16 : BNB4_F32;
                for (int mi = 0; mi < o.nms; mi++) {
                    a.m = o.ms[mi];
                    fill_activation(a.x, a.dt, a.m * K);
                    const char *kname = bnb4_kernel_name(a.ctx, a.m == 1 ? BNB4_OP_GEMV : BNB4_OP_GEMM, a.dt, a.m);
                    for (int nested = 0; nested < (a.m == 1 ? 2 : 1); nested++) {
                        a.nested = nested;
                        const double flops = 2.0 * (double)a.m * (double)N * (double)K;
                        const double wb = nested ? wbytes_nested : wbytes_plain;
                        const ceil_kind kind = a.m == 1 ? CEIL_READ : CEIL_FMA;
                        const timing tm =
                            time_paired(call_gemm, &a, (int)copies, o.runs, a.m == 1 ? wb : flops, kind, T);
                        add_result(a.m == 1 ? "gemv" : "gemm", kname, a.dt, nested, N, K, a.m, T, tm, wb, flops, kind,
                                   a.dt == BNB4_F32 && a.m > 1 ? sgemm_cache[t][mi] : 0);
                    }
                }
                /* dequantize: packed + absmax read, n elements written */
                a.nested = 0;
                const double db = wbytes_plain + (double)n * (double)bnb4_dtype_size(a.dt);
                const timing tm = time_paired(call_dequantize, &a, (int)copies, o.runs, db, CEIL_COPY, T);
                add_result("dequant", bnb4_kernel_name(a.ctx, BNB4_OP_DEQUANTIZE, a.dt, 1), a.dt, 0, N, K, 0, T, tm,
                           db, 0, CEIL_COPY, 0);
            }
            /* quantize: float32 source read, packed + absmax written */
            const double qb = wbytes_plain + 4.0 * (double)n;
            const timing tm = time_paired(call_quantize, &a, (int)copies, o.runs, qb, CEIL_COPY, T);
            add_result("quantize", bnb4_kernel_name(a.ctx, BNB4_OP_QUANTIZE, BNB4_F32, 1), BNB4_F32, 0, N, K, 0, T, tm,
                       qb, 0, CEIL_COPY, 0);
            bnb4_ctx_destroy(a.ctx);
            a.ctx = NULL;
        }
        for (size_t c = 0; c < copies; c++) {
            free(a.packed[c]);
            free(a.absmax[c]);
            free(a.codes[c]);
        }
        free(a.packed), free(a.absmax), free(a.codes), free(a.nested_absmax);
        free(a.x), free(a.y), free(a.dense), free(src);
    }

    free(big);
    ceil_buf = NULL;
    if (o.json) {
        printf("{\n  \"machine\": {\"cpu_features\": \"%s\", \"threads\": %d, \"loadavg_start\": %.2f},\n",
               bnb4_cpu_features(), o.threads, load[0]);
        printf("  \"ceilings\": [");
        for (int t = 0; t < nthread_counts; t++)
            printf("%s\n    {\"threads\": %d, \"read_gbps\": %.3f, \"copy_gbps\": %.3f, \"fma_gflops\": %.2f}",
                   t ? "," : "", thread_counts[t], read_bw[t] / 1e9, copy_bw[t] / 1e9, fma[t] / 1e9);
        printf("\n  ],\n  \"results\": [");
        for (int i = 0; i < nresults; i++) {
            const result *r = &results[i];
            printf("%s\n    {\"op\": \"%s\", \"kernel\": \"%s\", \"dtype\": \"%s\", \"absmax\": \"%s\", \"n\": %zu, "
                   "\"k\": %zu, \"m\": %zu, \"threads\": %d, \"median_ms\": %.4f, \"gbps\": %.3f, \"gflops\": %.2f, "
                   "\"ratio\": %.4f, \"ceiling\": \"%s\", \"ceiling_value\": %.4g, \"ratio_sgemm\": %.4f}",
                   i ? "," : "", r->op, r->kernel, r->dtype, r->absmax, r->n, r->k, r->m, r->threads,
                   r->seconds * 1e3, r->gbps, r->gflops, r->ratio, r->ceiling, r->ceiling_value, r->ratio_sgemm);
        }
        printf("\n  ]\n}\n");
    }
    return 0;
}
