/*
 * bench_cuda.cu - the CUDA backend's benchmark, with its ceilings measured in the same run.
 *
 * Ceilings: device-to-device copy bandwidth (bytes read + written, cudaMemcpyAsync of 1 GiB) and dense
 * cuBLAS f16/bf16 GEMM (cublasGemmEx, f32 accumulation) at the same shapes and m. Ours: bnb4_linear on
 * NF4 bs64 weights, plain and nested absmax, for N x K in {4096x4096, 14336x4096, 4096x14336,
 * 28672x8192} and m in {1, 2, 4, 8, 16, 32, 64, 128, 512, 2048}; bnb4_dequantize and bnb4_quantize.
 * Weights (ours and cuBLAS's) rotate among enough copies that no launch finds them in L2. Each number is
 * the median over several timed batches; a batch is a CUDA graph of back-to-back calls (so host launch
 * cost stays out), timed with events. At each shape and m (all of m <= 16 at once) the rows of both dtypes -
 * cuBLAS and ours - are timed together, their batches taking turns (Timer::run_together), so each ratio's two
 * sides meet the same SM clock, which a power-capped GPU moves under sustained load.
 *
 * Usage: bench_cuda [--quick | --small-m | --m M1,M2,... | --conv] [--no-f32 | --f32-only] [--shape NxK[,NxK...] |
 * --models] [--csv FILE]. --small-m measures only m = 1, 2, 3, 4, 8, 16 on every shape (no conversion rows), for tuning
 * the small-m kernels; --m takes any list; --conv measures only the conversions (dequantize, quantize); --shape measures
 * the shapes given (one: for profilers), --models twelve layers of common models instead of the four shapes (the
 * summary's targets are the issue's, for its four). At m = 1 and 16 (f16, plain absmax) the same calls are also timed launched one by one, without a graph,
 * where the host's cost per call counts wherever it exceeds the kernel's (rows "direct launches": graph time / that),
 * and the host's time to issue a call is measured against the kernel's (rows "host time per call"; its floor, one
 * launch of an empty kernel, is a ceiling row), and the graph is also captured by a fresh context with no call before
 * it (rows "graph of a fresh context": warm time / that). At every m (f16, plain absmax) the calls are also timed with
 * a bias (rows "with a bias": that time / the time without; the benchmark's own rows pass none). At m >= 512 cuBLAS is
 * also timed on one dequantized NF4 weight (rows "on one dequantized NF4 weight": the dequantize + cuBLAS path's second
 * half, against the ceiling). Prints every row, then a summary table with the issue's targets as ratios. float32
 * activations (m <= 512, any m of a --m list; none with --no-f32, them alone with --f32-only) are measured against
 * dense cuBLAS SGEMM (CUBLAS_COMPUTE_32F, no TF32) on float32 weights: rows "bnb4 f32 ... vs-sgemm" (and, at m <= 16,
 * "f32-BW/copy"); the issue sets no target for them. bnb4_bench_cuda_main() is the entry point (the `bnb4 bench` CLI
 * can call it).
 */
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <dlfcn.h>
#include <cuda_runtime.h>

#include "bnb4.h"
#include "bench_cuda_common.cuh"

extern "C" int bnb4_bench_cuda_main(int argc, char **argv);

namespace {

using namespace bnb4_bench;

#define BK(expr)                                                                                              \
    do {                                                                                                      \
        bnb4_status s_ = (expr);                                                                              \
        if (s_ != BNB4_OK) {                                                                                  \
            std::fprintf(stderr, "bench_cuda: %s failed: %s\n", #expr, bnb4_last_error());                  \
            std::exit(2);                                                                                     \
        }                                                                                                     \
    } while (0)

__global__ void fill_randn_f16(__half *p, size_t n, uint64_t seed, float scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
        h ^= h >> 31, h *= 0xBF58476D1CE4E5B9ull, h ^= h >> 29, h *= 0x94D049BB133111EBull, h ^= h >> 32;
        const float u1 = ((h & 0xffffffu) + 1) * (1.0f / 16777217.0f), u2 = ((h >> 24) & 0xffffffu) * (1.0f / 16777216.0f);
        p[i] = __float2half(scale * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
    }
}
__global__ void empty_kernel() {}

__global__ void f16_to_bf16(const __half *a, __nv_bfloat16 *b, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        b[i] = __float2bfloat16(__half2float(a[i]));
}

__global__ void f16_to_f32(const __half *a, float *b, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        b[i] = __half2float(a[i]);
}

/* cuBLAS through dlopen, as the library does: linking it would add ~200 MB of resident memory to every
 * program that links this benchmark (the bnb4 command does). */
struct Blas {
    decltype(&cublasCreate_v2) create = nullptr;
    decltype(&cublasDestroy_v2) destroy = nullptr;
    decltype(&cublasSetStream_v2) set_stream = nullptr;
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                              const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
    bool load() {
        void *lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
        if (!lib)
            lib = dlopen("libcublas.so", RTLD_NOW | RTLD_LOCAL);
        if (!lib)
            return false;
        create = (decltype(create))dlsym(lib, "cublasCreate_v2");
        destroy = (decltype(destroy))dlsym(lib, "cublasDestroy_v2");
        set_stream = (decltype(set_stream))dlsym(lib, "cublasSetStream_v2");
        gemm_ex = (decltype(gemm_ex))dlsym(lib, "cublasGemmEx");
        return create && destroy && set_stream && gemm_ex;
    }
};

struct Shape {
    size_t N, K;
};

struct Row {
    std::string what;
    double ms, value, ceiling, ratio;
};
std::vector<Row> g_rows;
FILE *g_csv = nullptr;

void report(const std::string &what, double ms, double value, const char *unit, double ceiling) {
    const double ratio = ceiling > 0 ? value / ceiling : 0;
    std::printf("%-58s %10.2f us %10.1f %-7s ratio %.3f\n", what.c_str(), ms * 1e3, value, unit, ratio);
    if (g_csv)
        std::fprintf(g_csv, "%s,%.6f,%.3f,%s,%.3f,%.4f\n", what.c_str(), ms * 1e3, value, unit, ceiling, ratio);
    g_rows.push_back({what, ms, value, ceiling, ratio});
}

} // namespace

extern "C" int bnb4_bench_cuda_main(int argc, char **argv) {
    bool quick = false, small_m = false, conv_only = false, f32_rows = true, f16_rows = true, models = false;
    const char *csv = nullptr, *m_list = nullptr, *shape_arg = nullptr;
    for (int i = 1; i < argc; i++) {
        if (!std::strcmp(argv[i], "--quick"))
            quick = true;
        else if (!std::strcmp(argv[i], "--small-m"))
            small_m = true;
        else if (!std::strcmp(argv[i], "--conv"))
            conv_only = true;
        else if (!std::strcmp(argv[i], "--no-f32"))
            f32_rows = false;
        else if (!std::strcmp(argv[i], "--f32-only"))
            f16_rows = false;
        else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc)
            csv = argv[++i];
        else if (!std::strcmp(argv[i], "--m") && i + 1 < argc)
            m_list = argv[++i];
        else if (!std::strcmp(argv[i], "--shape") && i + 1 < argc)
            shape_arg = argv[++i];
        else if (!std::strcmp(argv[i], "--models"))
            models = true;
        else {
            std::fprintf(stderr, "usage: %s [--quick | --small-m | --m M1,M2,... | --conv] [--no-f32 | --f32-only] [--shape NxK[,NxK...] | --models] [--csv FILE]\n",
                         argv[0]);
            return 2;
        }
    }
    if (bnb4_cuda_device_count() == 0) {
        std::printf("bench_cuda: no CUDA device, nothing to measure\n");
        return 0;
    }
    if (csv && !(g_csv = std::fopen(csv, "w"))) {
        std::fprintf(stderr, "bench_cuda: cannot write %s\n", csv);
        return 2;
    }
    if (g_csv)
        std::fprintf(g_csv, "what,us,value,unit,ceiling,ratio\n");
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    char date[64];
    const time_t now = time(nullptr);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    std::printf("bench_cuda: %s, %d SMs, %.0f MB L2, bnb4 %s, %s\n", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize / 1e6, bnb4_version_string(), date);

    cudaStream_t stream;
    CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    bnb4_ctx_params p;
    bnb4_ctx_params_default(&p);
    p.device = BNB4_DEVICE_CUDA;
    p.stream = stream;
    bnb4_ctx *ctx = nullptr;
    BK(bnb4_ctx_create(&p, &ctx));
    Blas cb_api;
    cublasHandle_t blas;
    if (!cb_api.load() || cb_api.create(&blas) != CUBLAS_STATUS_SUCCESS) {
        std::fprintf(stderr, "bench_cuda: cuBLAS (libcublas.so.13) could not be loaded: no ceiling to compare with\n");
        return 2;
    }
    cb_api.set_stream(blas, stream);
    Timer timer{stream, quick ? 3 : 7};
    Timer direct = timer; /* the same calls launched one by one: what a caller without graphs sees */
    direct.graphs = false;
    const size_t rotate_bytes = 3 * (size_t)prop.l2CacheSize; /* copies span 3x L2: none is resident */

    /* ---- copy bandwidth -------------------------------------------------------------------------- */
    const CopyCeiling copy = measure_copy(timer, prop.multiProcessorCount);
    report("ceiling: cudaMemcpyAsync D2D 1 GiB (read+write)", copy.memcpy_ms, copy.memcpy_gbs, "GB/s", 0);
    report("ceiling: copy kernel 16 B/thread 1 GiB (read+write)", copy.kernel_ms, copy.kernel_gbs, "GB/s", 0);
    const double copy_bw = copy.best_gbs(); /* the stricter ceiling */
    { /* the host's floor per call: one launch of an empty kernel with programmatic dependent launch, as
       * the small-m kernels are launched (the "host time per call" rows below count in these) */
        cudaLaunchAttribute attr;
        attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr.val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3((unsigned)prop.multiProcessorCount);
        cfg.blockDim = dim3(544);
        cfg.stream = stream;
        cfg.attrs = &attr;
        cfg.numAttrs = 1;
        const double launch_ms = direct.host(50, [&](int) { CK(cudaLaunchKernelEx(&cfg, empty_kernel)); });
        report("ceiling: host time per launch (empty kernel, PDL)", launch_ms, 1.0 / (launch_ms * 1e3), "M/s", 0);
    }

    std::vector<Shape> shapes = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {28672, 8192}};
    std::vector<size_t> ms = {1, 2, 4, 8, 16, 32, 64, 128, 512, 2048};
    if (quick) {
        shapes = {{4096, 4096}, {14336, 4096}};
        ms = {1, 8, 64, 512};
    } else if (small_m) {
        ms = {1, 2, 3, 4, 8, 16};
    }
    if (models) /* layers of common models beyond the four (Llama 2 7B / 13B, Llama 3 8B / 70B, Qwen2 7B, Qwen2.5 1.5B,
                   a fused q/k/v), where the grid and the nested codes' copies take other paths (docs/performance.md v54) */
        shape_arg = "11008x4096,4096x11008,13824x5120,5120x13824,1024x4096,6144x4096,8192x28672,128256x4096,"
                    "18944x3584,3584x18944,8960x1536,1536x8960";
    if (shape_arg) { /* these shapes only (one: for profilers) */
        shapes.clear();
        for (const char *p = shape_arg; *p;) {
            unsigned long sn = 0, sk = 0;
            int used = 0;
            if (std::sscanf(p, "%lux%lu%n", &sn, &sk, &used) != 2 || sn == 0 || sk == 0 || sk % 256 != 0 ||
                (p[used] != ',' && p[used] != '\0')) {
                std::fprintf(stderr, "bench_cuda: bad --shape '%s' (NxK[,NxK...], K a multiple of 256)\n", shape_arg);
                return 2;
            }
            shapes.push_back({(size_t)sn, (size_t)sk});
            p += used + (p[used] == ',');
        }
    }
    if (m_list) { /* only these m, no conversion rows */
        ms.clear();
        for (const char *p = m_list; *p;) {
            char *end;
            const unsigned long v = std::strtoul(p, &end, 10);
            if (end == p || v == 0 || v > 65536) {
                std::fprintf(stderr, "bench_cuda: bad --m list '%s'\n", m_list);
                return 2;
            }
            ms.push_back(v);
            p = *end == ',' ? end + 1 : end;
        }
        small_m = true;
    }
    if (conv_only) { /* no GEMMs (the activations below are still sized for m = 1) */
        ms.clear();
        small_m = false;
    }
    const size_t bs = 64;
    const size_t max_m = ms.empty() ? 1 : *std::max_element(ms.begin(), ms.end());

    for (const Shape &sh : shapes) {
        const size_t N = sh.N, K = sh.K, n = N * K, nb = n / bs;
        const size_t dense_bytes = n * 2, q_bytes = n / 2 + nb * 4, qn_bytes = n / 2 + nb + (nb / 256 + 1) * 4;
        const int copies_dense = (int)std::max<size_t>(2, (rotate_bytes + dense_bytes - 1) / dense_bytes);
        const int copies_q = (int)std::max<size_t>(2, (rotate_bytes + q_bytes - 1) / q_bytes);
        /* float32 rows up to here: m <= 512 in the full run (SGEMM at m = 2048 on 28672x8192 takes 20 ms a call, and
         * timed together with the f16 / bf16 rows it moved their m = 2048 ratios by up to 10 %), any m of a --m list */
        const size_t f32_max_m = m_list ? SIZE_MAX : 512;
        const bool any_f32 = f32_rows && !ms.empty() && *std::min_element(ms.begin(), ms.end()) <= f32_max_m;
        const int copies_dense32 = any_f32 ? (int)std::max<size_t>(2, (rotate_bytes + 2 * dense_bytes - 1) / (2 * dense_bytes)) : 0;
        std::vector<void *> w16(copies_dense), wbf(copies_dense), w32(copies_dense32);
        std::vector<uint8_t *> packed(copies_q), codes(copies_q);
        std::vector<float *> absmax(copies_q), nabs(copies_q);
        std::vector<float> offset(copies_q);
        float *dcode;
        CK(cudaMalloc(&dcode, 1024));
        CK(cudaMemcpy(dcode, bnb4_nested_code(), 1024, cudaMemcpyHostToDevice));
        for (int c = 0; c < copies_dense; c++) {
            CK(cudaMalloc(&w16[c], dense_bytes));
            CK(cudaMalloc(&wbf[c], dense_bytes));
            fill_randn_f16<<<1024, 256, 0, stream>>>((__half *)w16[c], n, 1234 + c, 0.05f);
            f16_to_bf16<<<1024, 256, 0, stream>>>((const __half *)w16[c], (__nv_bfloat16 *)wbf[c], n);
            CK(cudaGetLastError());
        }
        for (int c = 0; c < copies_dense32; c++) {
            CK(cudaMalloc(&w32[c], 2 * dense_bytes));
            f16_to_f32<<<1024, 256, 0, stream>>>((const __half *)w16[c % copies_dense], (float *)w32[c], n);
            CK(cudaGetLastError());
        }
        for (int c = 0; c < copies_q; c++) {
            CK(cudaMalloc(&packed[c], n / 2));
            CK(cudaMalloc(&absmax[c], nb * 4));
            CK(cudaMalloc(&codes[c], nb));
            CK(cudaMalloc(&nabs[c], (nb / 256 + 1) * 4));
            BK(bnb4_quantize(ctx, w16[c % copies_dense], BNB4_F16, n, bs, BNB4_NF4, packed[c], absmax[c]));
            BK(bnb4_nested_offset(ctx, absmax[c], nb, &offset[c]));
            BK(bnb4_quantize_nested(ctx, absmax[c], nb, offset[c], 256, codes[c], nabs[c]));
        }
        /* x / xb / xf: the activations in f16 / bf16 / f32 (the same values); wdq: a dequantized weight in f16 /
         * bf16 (m >= 512 rows) */
        void *x, *xb, *xf, *y, *bias, *wdq[2] = {nullptr, nullptr};
        CK(cudaMalloc(&x, max_m * K * 2));
        CK(cudaMalloc(&xb, max_m * K * 2));
        CK(cudaMalloc(&xf, max_m * K * 4));
        CK(cudaMalloc(&y, max_m * N * 4));
        CK(cudaMalloc(&bias, N * 2));
        fill_randn_f16<<<1024, 256, 0, stream>>>((__half *)x, max_m * K, 99, 1.0f);
        f16_to_bf16<<<1024, 256, 0, stream>>>((const __half *)x, (__nv_bfloat16 *)xb, max_m * K); /* same values */
        f16_to_f32<<<1024, 256, 0, stream>>>((const __half *)x, (float *)xf, max_m * K);
        fill_randn_f16<<<64, 256, 0, stream>>>((__half *)bias, N, 98, 1.0f);
        CK(cudaStreamSynchronize(stream));
        char name[160];

        /* Timed together (Timer::run_together), so cuBLAS and ours meet the same clock: every row of both dtypes
         * at each m, and all of m <= 16 in one set (the m = 2..16 rows' ratio is to m = 1's time). In order of
         * m: measuring m = 1 right after the large-m GEMMs finds the GPU hot and its SM clock lowered (the
         * small-m kernels are issue-bound: up to 20 % slower on an H100), so the bandwidth rows run first. */
        std::vector<size_t> sorted_ms = ms;
        std::sort(sorted_ms.begin(), sorted_ms.end());
        std::vector<std::vector<size_t>> groups;
        for (size_t m : sorted_ms)
            if (m <= 16 && !groups.empty() && groups.back().back() <= 16)
                groups.back().push_back(m);
            else
                groups.push_back({m});
        const bnb4_dtype dts[3] = {BNB4_F16, BNB4_BF16, BNB4_F32};
        const void *xs[3] = {x, xb, xf};
        const auto iters_of = [](size_t m) { return m >= 512 ? 10 : 50; }; /* calls a batch */
        double m1_ms[2][2] = {{0, 0}, {0, 0}}; /* [dtype][nested] */
        for (const std::vector<size_t> &group : groups) {
            /* one linear at m rows on the i-th copy of the weights */
            const auto linear = [&, N, K](size_t m, bnb4_ctx *c, int d, bool nested, const void *b) {
                return [&, m, c, d, nested, b, N, K](int i) {
                    const int ci = i % copies_q;
                    const bnb4_qtensor q = nested ? bnb4_qtensor_nested(N, K, bs, BNB4_NF4, packed[ci], codes[ci],
                                                                        nabs[ci], dcode, offset[ci], 256)
                                                  : bnb4_qtensor_plain(N, K, bs, BNB4_NF4, packed[ci], absmax[ci]);
                    bnb4_linear(c, &q, dts[d], m, xs[d], b, y);
                };
            };
            /* dense cuBLAS on the i-th copy of the dense weights, or (dq) on one dequantized NF4 weight: the
             * dequantize + cuBLAS path's second half, whose workspace it writes just before each call (so in L2
             * as far as it fits) - whatever the values or L2 change in cuBLAS's time (a power-limited clock),
             * not ours */
            const auto blas_call = [&, N, K](size_t m, int d, bool dq) {
                const cudaDataType_t t = d == 0 ? CUDA_R_16F : d == 1 ? CUDA_R_16BF : CUDA_R_32F;
                std::vector<void *> *wd = d == 0 ? &w16 : d == 1 ? &wbf : &w32;
                void *w_dq = wdq[d];
                return [&, m, t, d, wd, w_dq, dq, N, K](int i) {
                    const float alpha = 1.0f, beta = 0.0f;
                    cb_api.gemm_ex(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)m, (int)K, &alpha,
                                   dq ? w_dq : (*wd)[i % wd->size()], t, (int)K, xs[d], t, (int)K, &beta,
                                   y, t, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                };
            };
            /* the jobs, per m and dtype: cuBLAS, (m >= 512) cuBLAS on a dequantized weight, plain, nested, (f16)
             * plain with a bias (its epilogue's loads and adds) */
            enum { kBlas, kBlasDq, kPlain, kNested, kBias, kKinds };
            std::vector<Timer::Job> jobs;
            std::vector<std::array<std::array<int, kKinds>, 3>> job(group.size()); /* [m][dtype][kind], -1: none */
            for (size_t gi = 0; gi < group.size(); gi++) {
                const size_t m = group[gi];
                const int iters = iters_of(m);
                for (int d = 0; d < 3; d++) {
                    job[gi][d].fill(-1);
                    if (d == 2 ? !(f32_rows && m <= f32_max_m) : !f16_rows)
                        continue;
                    const auto add = [&](int kind, std::function<void(int)> f) {
                        job[gi][d][kind] = (int)jobs.size();
                        jobs.push_back({iters, std::move(f)});
                    };
                    add(kBlas, blas_call(m, d, false));
                    if (m >= 512 && d < 2) {
                        if (!wdq[d]) {
                            const bnb4_qtensor q0 = bnb4_qtensor_plain(N, K, bs, BNB4_NF4, packed[0], absmax[0]);
                            CK(cudaMalloc(&wdq[d], dense_bytes));
                            BK(bnb4_dequantize(ctx, &q0, dts[d], wdq[d]));
                        }
                        add(kBlasDq, blas_call(m, d, true));
                    }
                    add(kPlain, linear(m, ctx, d, false, nullptr));
                    add(kNested, linear(m, ctx, d, true, nullptr));
                    if (d == 0)
                        add(kBias, linear(m, ctx, d, false, bias));
                }
            }
            const std::vector<double> t = timer.run_together(jobs);
            for (size_t gi = 0; gi < group.size(); gi++) {
                const size_t m = group[gi];
                const double flops = 2.0 * m * N * K;
                const int iters = iters_of(m);
                for (int d = 0; d < 2; d++) {
                    const char *dn = d == 0 ? "f16" : "bf16";
                    const std::array<int, kKinds> &jd = job[gi][d];
                    if (jd[kBlas] < 0) /* (--f32-only) */
                        continue;
                    if (sh.N == shapes[0].N && sh.K == shapes[0].K)
                        std::printf("kernel for %s m=%zu: %s\n", dn, m, bnb4_kernel_name(ctx, BNB4_OP_GEMM, dts[d], m));
                    const double blas_ms = t[jd[kBlas]], blas_tf = flops / (blas_ms * 1e-3) / 1e12;
                    std::snprintf(name, sizeof name, "cublas %s %zux%zu m=%zu", dn, N, K, m);
                    report(name, blas_ms, blas_tf, "TFLOP/s", 0);
                    if (jd[kBlasDq] >= 0) {
                        const double dq_ms = t[jd[kBlasDq]];
                        std::snprintf(name, sizeof name, "cublas %s %zux%zu m=%zu on one dequantized NF4 weight", dn, N,
                                      K, m);
                        report(name, dq_ms, flops / (dq_ms * 1e-3) / 1e12, "TFLOP/s", blas_tf);
                    }
                    for (int nested = 0; nested < 2; nested++) {
                        const double ours_ms = t[jd[nested ? kNested : kPlain]];
                        const char *nn = nested ? "nested" : "plain";
                        if (m == 1)
                            m1_ms[d][nested] = ours_ms;
                        const double wbytes = nested ? qn_bytes : q_bytes;
                        if (m <= 16) {
                            std::snprintf(name, sizeof name, "bnb4 %s %s %zux%zu m=%zu weight-BW/copy", dn, nn, N, K, m);
                            report(name, ours_ms, wbytes / (ours_ms * 1e-3) / 1e9, "GB/s", copy_bw);
                        }
                        if (m >= 2 && m <= 16) {
                            std::snprintf(name, sizeof name, "bnb4 %s %s %zux%zu m=%zu time/m1time", dn, nn, N, K, m);
                            report(name, ours_ms, m1_ms[d][nested] > 0 ? ours_ms / m1_ms[d][nested] : NAN, "x", 1.0);
                        }
                        std::snprintf(name, sizeof name, "bnb4 %s %s %zux%zu m=%zu vs-cublas", dn, nn, N, K, m);
                        report(name, ours_ms, flops / (ours_ms * 1e-3) / 1e12, "TFLOP/s", blas_tf);
                        if (jd[kBias] < 0 || nested)
                            continue;
                        std::snprintf(name, sizeof name, "bnb4 %s %s %zux%zu m=%zu with a bias, this/without", dn, nn, N,
                                      K, m);
                        report(name, t[jd[kBias]], t[jd[kBias]] / ours_ms, "x", 1.0);
                        if (m != 1 && m != 16)
                            continue;
                        /* the same graph captured by a context that has made no call before (its split-K space and
                         * scratch grow during the capture); ratio: the warm context's graph time over this (1:
                         * nothing in the cold graph costs time) */
                        bnb4_ctx *fresh = nullptr;
                        BK(bnb4_ctx_create(&p, &fresh));
                        Timer cold_timer = timer;
                        cold_timer.warm_up = false;
                        const double cold_ms = cold_timer.run(iters, linear(m, fresh, d, false, nullptr));
                        bnb4_ctx_destroy(fresh);
                        std::snprintf(name, sizeof name, "bnb4 %s %s %zux%zu m=%zu graph of a fresh context, warm/this",
                                      dn, nn, N, K, m);
                        report(name, cold_ms, ours_ms / cold_ms, "x", 1.0);
                        /* the same calls without a graph: the host's work per call (argument checks, path choice,
                         * tensor maps, launch) is then on the critical path wherever it exceeds the kernel's time;
                         * ratio: graph time over this (1: the GPU sets the pace) */
                        const double direct_ms = direct.run(iters, linear(m, ctx, d, false, nullptr));
                        std::snprintf(name, sizeof name, "bnb4 %s %s %zux%zu m=%zu direct launches, graph/this", dn, nn,
                                      N, K, m);
                        report(name, direct_ms, ours_ms / direct_ms, "x", 1.0);
                        /* and the host's own time per call, against the kernel's (graph) time */
                        const double host_ms = direct.host(iters, linear(m, ctx, d, false, nullptr));
                        std::snprintf(name, sizeof name, "bnb4 %s %s %zux%zu m=%zu host time per call/kernel", dn, nn,
                                      N, K, m);
                        report(name, host_ms, host_ms / ours_ms, "x", 1.0);
                    }
                }
                /* float32 activations against dense SGEMM (names kept apart from the f16 / bf16 rows the summary's
                 * targets read: "vs-sgemm", "f32-BW/copy") */
                const std::array<int, kKinds> &jf = job[gi][2];
                if (jf[kBlas] < 0)
                    continue;
                if (sh.N == shapes[0].N && sh.K == shapes[0].K)
                    std::printf("kernel for f32 m=%zu: %s\n", m, bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F32, m));
                const double sgemm_ms = t[jf[kBlas]], sgemm_tf = flops / (sgemm_ms * 1e-3) / 1e12;
                std::snprintf(name, sizeof name, "cublas sgemm f32 %zux%zu m=%zu", N, K, m);
                report(name, sgemm_ms, sgemm_tf, "TFLOP/s", 0);
                for (int nested = 0; nested < 2; nested++) {
                    const double ours_ms = t[jf[nested ? kNested : kPlain]];
                    const char *nn = nested ? "nested" : "plain";
                    if (m <= 16) {
                        std::snprintf(name, sizeof name, "bnb4 f32 %s %zux%zu m=%zu f32-BW/copy", nn, N, K, m);
                        report(name, ours_ms, (nested ? qn_bytes : q_bytes) / (ours_ms * 1e-3) / 1e9, "GB/s", copy_bw);
                    }
                    std::snprintf(name, sizeof name, "bnb4 f32 %s %zux%zu m=%zu vs-sgemm", nn, N, K, m);
                    report(name, ours_ms, flops / (ours_ms * 1e-3) / 1e12, "TFLOP/s", sgemm_tf);
                }
            }
        }

        /* dequantize (f16 out) and quantize (f16 in): bytes read + written over copy bandwidth */
        void *dq;
        CK(cudaMalloc(&dq, dense_bytes));
        if (!small_m) {
            const double t_dq = timer.run(20, [&](int i) {
                const int c = i % copies_q;
                const bnb4_qtensor q = bnb4_qtensor_plain(N, K, bs, BNB4_NF4, packed[c], absmax[c]);
                bnb4_dequantize(ctx, &q, BNB4_F16, dq);
            });
            std::snprintf(name, sizeof name, "bnb4 dequantize f16 %zux%zu", N, K);
            report(name, t_dq, (q_bytes + dense_bytes) / (t_dq * 1e-3) / 1e9, "GB/s", copy_bw);
            const double t_dqn = timer.run(20, [&](int i) {
                const int c = i % copies_q;
                const bnb4_qtensor q =
                    bnb4_qtensor_nested(N, K, bs, BNB4_NF4, packed[c], codes[c], nabs[c], dcode, offset[c], 256);
                bnb4_dequantize(ctx, &q, BNB4_F16, dq);
            });
            std::snprintf(name, sizeof name, "bnb4 dequantize nested f16 %zux%zu", N, K);
            report(name, t_dqn, (qn_bytes + dense_bytes) / (t_dqn * 1e-3) / 1e9, "GB/s", copy_bw);
            const double t_q = timer.run(20, [&](int i) {
                const int c = i % copies_q;
                bnb4_quantize(ctx, w16[i % copies_dense], BNB4_F16, n, bs, BNB4_NF4, packed[c], absmax[c]);
            });
            std::snprintf(name, sizeof name, "bnb4 quantize f16 %zux%zu", N, K);
            report(name, t_q, (q_bytes + dense_bytes) / (t_q * 1e-3) / 1e9, "GB/s", copy_bw);
        }
        CK(cudaFree(dq));
        for (void *pp : w16)
            CK(cudaFree(pp));
        for (void *pp : wbf)
            CK(cudaFree(pp));
        for (int c = 0; c < copies_q; c++) {
            CK(cudaFree(packed[c]));
            CK(cudaFree(absmax[c]));
            CK(cudaFree(codes[c]));
            CK(cudaFree(nabs[c]));
        }
        CK(cudaFree(dcode));
        CK(cudaFree(x));
        CK(cudaFree(xb));
        CK(cudaFree(xf));
        for (void *pp : w32)
            CK(cudaFree(pp));
        CK(cudaFree(bias));
        CK(cudaFree(y));
        for (void *pp : wdq)
            if (pp)
                CK(cudaFree(pp));
    }

    /* ---- summary: the issue's targets as ratios ---------------------------------------------------- */
    auto worst = [&](const std::string &needle1, const std::string &needle2, bool lowest) {
        double v = lowest ? 1e30 : -1e30;
        int found = 0;
        for (const Row &r : g_rows)
            if (r.what.find(needle1) != std::string::npos && r.what.find(needle2) != std::string::npos) {
                v = lowest ? std::min(v, r.ratio) : std::max(v, r.ratio);
                found++;
            }
        return found ? v : NAN;
    };
    std::printf("\n==== bnb4 CUDA summary: %s, %s, copy %.0f GB/s ====\n", prop.name, date, copy_bw);
    std::printf("%-44s %-14s %s\n", "target (worst over f16/bf16, plain/nested)", "measured", "goal");
    auto line = [&](const std::string &what, double v, const char *goal, bool ok) {
        std::printf("%-44s %-14.3f %s %s\n", what.c_str(), v, goal, std::isnan(v) ? "(n/a)" : ok ? "MET" : "MISSED");
    };
    for (const Shape &sh : shapes) {
        char s[64];
        std::snprintf(s, sizeof s, " %zux%zu ", sh.N, sh.K);
        const bool small = sh.N == 4096 && sh.K == 4096;
        const double gemv = worst(std::string(s) + "m=1 ", "weight-BW", true);
        line(std::string("gemv m=1 BW/copy") + s, gemv, small ? ">= 0.70" : ">= 0.85", gemv >= (small ? 0.7 : 0.85));
        const double m16 = worst(s, "time/m1time", false);
        line(std::string("m=2..16 time/m1") + s, m16, "<= 1.20", m16 <= 1.2);
        for (const char *mm : {"m=32 ", "m=64 "}) {
            const double r = worst(std::string(s) + mm, "vs-cublas", true);
            line(std::string("speedup vs cuBLAS ") + mm + s, r, small ? "(none)" : ">= 2.0", small || r >= 2.0);
        }
        const double r512 = worst(std::string(s) + "m=512 ", "vs-cublas", true);
        line(std::string("TFLOP/s vs cuBLAS m=512") + s, r512, ">= 0.80", r512 >= 0.8);
        const double r2048 = worst(std::string(s) + "m=2048 ", "vs-cublas", true);
        line(std::string("TFLOP/s vs cuBLAS m=2048") + s, r2048, ">= 0.90", r2048 >= 0.9);
        const std::string s_end = std::string(s).substr(0, std::strlen(s) - 1); /* row names end with the shape */
        const double dq = worst("bnb4 dequantize", s_end, true); /* (not "cublas ... dequantized NF4 weight") */
        line(std::string("dequantize BW/copy") + s, dq, ">= 0.85", dq >= 0.85);
        const double qq = worst("bnb4 quantize f16", s_end, true);
        line(std::string("quantize BW/copy") + s, qq, ">= 0.70", qq >= 0.7);
        const double dl = worst(std::string(s) + "m=1 ", "direct launches", true);
        line(std::string("m=1 without graphs: graph/direct") + s, dl, "(none)", true);
        for (const char *mm : {"m=1 ", "m=16 ", "m=64 ", "m=512 "}) {
            const double f = worst(std::string(s) + mm, "vs-sgemm", true);
            line(std::string("f32 speedup vs SGEMM ") + mm + s, f, "(none)", true);
        }
    }
    if (g_csv)
        std::fclose(g_csv);
    cb_api.destroy(blas);
    bnb4_ctx_destroy(ctx);
    cudaStreamDestroy(stream);
    return 0;
}
