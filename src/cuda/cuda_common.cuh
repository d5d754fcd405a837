/*
 * cuda_common.cuh - what every CUDA kernel file of the backend shares: the exact-arithmetic PTX
 * helpers that make the GPU produce bitsandbytes' bytes, dtype traits, the 4-bit encoders, and the
 * per-context state.
 *
 * Exactness does not depend on compile flags: bitsandbytes builds with --use_fast_math, so its
 * `x * (1.0f / absmax)` is rcp.approx.ftz.f32 followed by mul.ftz.f32. We write those instructions as
 * inline PTX (the compiler can neither contract them into FMAs nor swap the reciprocal for a
 * correctly rounded one), and build without -ftz so every other operation stays IEEE.
 */
#ifndef BNB4_CUDA_COMMON_CUH
#define BNB4_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>

#include "bnb4_backend.h"
#include "bnb4_format.h"
#include "cuda_grid.h"

/* ---- per-context state (owned by cuda_backend.cu) ------------------------------------------------ */
struct bnb4_cuda_state {
    int device;
    cudaStream_t stream;
    int sm_count;
    int sm_threads;           /* maxThreadsPerMultiProcessor (torch's reduction sizes its grid by it: the nested offset) */
    int cc_major, cc_minor;
    int code_arch;            /* the PTX architecture the loaded kernels were compiled from (10 x major + minor):
                               * below 90 on a Hopper GPU when the build has no sm_90 code and the driver
                               * compiled its compute_80 PTX (bnb4_cuda_sm90_code) */
    size_t l2_bytes;
    size_t smem_optin;        /* the shared memory one CTA may take (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KB
                               * on Hopper, 163 KB on A100, 99 KB on sm_86 / 89 / 120); BNB4_CUDA_SMEM_OPTIN may lower
                               * it, so tests on a larger GPU take the paths a smaller one takes */
    cudaMemPool_t pool;       /* stream-ordered pool for temporaries, cached between calls */
    unsigned *counters;       /* zeroed split-K semaphores, each kernel leaves them zero again */
    size_t counters_bytes;
    float *partials;          /* split-K partial sums, grown on demand (no allocation per call) */
    size_t partials_bytes;
    void *scratch;            /* one kernel's operand prepared by another (bnb4_cuda_scratch), grown on demand */
    size_t scratch_bytes;
    void **retired;           /* the buffers above as they were before growing: graphs may still use them */
    size_t n_retired;
    cudaStream_t side;        /* non-blocking, created on first use: zeroes a grown buffer outside any capture */
    void *cublas;             /* cublasHandle_t, created on first use (cuBLAS is dlopen'ed) */
    void *cublaslt;           /* cuBLASLt handle and its plans (cuda_gemm.cu), created on first use */
    void *blas_workspace;     /* cuBLAS's and cuBLASLt's workspace, made with the cuBLAS handle (cuda_gemm.cu) */
};

/* Whether the kernels can take their sm_90 paths (TMA copies, mbarriers, programmatic launch): a device of
 * compute capability 9.0 or newer running code compiled for it. A build for sm_80 alone still runs on Hopper
 * (the driver compiles its compute_80 PTX), but there those paths are compiled out and their kernels trap. */
static inline bool bnb4_cuda_sm90_code(const bnb4_cuda_state *s) { return s->cc_major >= 9 && s->code_arch >= 90; }
/* Whether a kernel taking `dynamic_bytes` of dynamic shared memory fits one CTA on this device. Every kernel that
 * asks for more than the default 48 KB checks this before it is chosen (a larger request than the device gives
 * fails at its launch); 1 KB is kept for the kernels' static shared memory, as their shapes keep it. */
constexpr size_t kBnb4StaticSmemReserve = 1024;
static inline bool bnb4_cuda_smem_fits(const bnb4_cuda_state *s, size_t dynamic_bytes) {
    return dynamic_bytes + kBnb4StaticSmemReserve <= s->smem_optin;
}
/* CTAs of `dynamic_bytes` of dynamic shared memory an SM holds by its shared memory: an SM's is taken as what one CTA
 * may opt in to plus the 1 KB the driver reserves a CTA, and each CTA takes its bytes plus that 1 KB */
static inline size_t bnb4_cuda_ctas_by_smem(const bnb4_cuda_state *s, size_t dynamic_bytes) {
    return (s->smem_optin + kBnb4StaticSmemReserve) / (dynamic_bytes + kBnb4StaticSmemReserve);
}
/* Raises a kernel's dynamic shared memory limit on the context's device to `bytes` where its launch needs that (above
 * the default 48 KB; a launch asking for more than the limit fails) and the limit set before is lower. `limit` is the
 * kernel's record of the limit it has, per device: one array per kernel (a template's instantiation). */
template <typename Kernel>
cudaError_t bnb4_cuda_smem_limit(const bnb4_cuda_state *s, Kernel kernel, size_t bytes, unsigned (&limit)[64]) {
    unsigned &have = limit[(unsigned)s->device & 63];
    if (bytes <= 48 * 1024 || have >= bytes)
        return cudaSuccess;
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e == cudaSuccess)
        have = (unsigned)bytes;
    return e;
}
/* Whether the wgmma kernels can run: a build with sm_90a code (BNB4_CUDA_SM90A), on compute capability 9.0 (the
 * one sm_90a code runs on), which the driver loaded it for */
static inline bool bnb4_cuda_wgmma_code(const bnb4_cuda_state *s) {
#if defined(BNB4_CUDA_SM90A)
    return s->cc_major == 9 && s->cc_minor == 0 && bnb4_cuda_sm90_code(s);
#else
    (void)s;
    return false;
#endif
}

/* ---- exact arithmetic ------------------------------------------------------------------------------ */
/* The GPU's approximate reciprocal, exactly what --use_fast_math makes of 1.0f / x. */
__device__ __forceinline__ float bnb4_dev_rcp_approx(float x) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}
/* a * b with subnormal inputs and result flushed to (signed) zero. */
__device__ __forceinline__ float bnb4_dev_mul_ftz(float a, float b) {
    float r;
    asm("mul.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
/* A nested tensor's block scale as bitsandbytes decodes it: the 8-bit code's value times the nested
 * block's absmax (rounded, subnormals flushed), plus the offset - the one formula every kernel uses. */
__device__ __forceinline__ float bnb4_dev_nested_scale(float code_value, float nested_absmax, float offset) {
    return __fadd_rn(bnb4_dev_mul_ftz(code_value, nested_absmax), offset);
}
/* |x| with a subnormal x flushed to +0 first. */
__device__ __forceinline__ float bnb4_dev_abs_ftz(float a) {
    float r;
    asm("abs.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
    return r;
}

/* Keep v in a register from here on: the compiler cannot recompute an asm result, so per-thread constants set up
 * before a main loop are not rematerialized inside it (which costs more instructions per step than the registers they
 * take: the SIMT rows kernel at 128 registers recomputed shared addresses from the CTA id, about 100 instructions a
 * chunk; the pipe and tile kernels) */
__device__ __forceinline__ uint32_t pin(uint32_t v) {
    asm volatile("" : "+r"(v));
    return v;
}
template <bool kPin> __device__ __forceinline__ uint32_t pin_if(uint32_t v) { return kPin ? pin(v) : v; }

/* The float in a 16-entry code table at shared address table_s (64-byte aligned) whose index x 4 is in bits 2..5 of
 * v (a nibble shifted left by 2): the address is one 3-input logic op, (v & 0x3c) | table_s, where a mask and an add
 * took 3 integer ops a value (the SIMT and f32 tile kernels) */
__device__ __forceinline__ float bnb4_dev_code_at(uint32_t table_s, uint32_t v) {
    float c;
    asm("ld.shared.f32 %0, [%1];" : "=f"(c) : "r"((v & 0x3cu) | table_s));
    return c;
}

/* A packed 32-bit word's 8 weights, code x scale in f32 as bnb4_dequantize rounds them (subnormals flushed), in k order:
 * byte b's high nibble is element 2 b, its low nibble 2 b + 1 (the SIMT rows and f32 tile kernels) */
__device__ __forceinline__ void bnb4_dev_decode_word(uint32_t table_s, uint32_t word, float scale, float out[8]) {
#pragma unroll
    for (int b = 0; b < 4; b++) {
        const uint32_t hi = word >> (8 * b + 2), lo = b ? word >> (8 * b - 2) : word << 2;
        out[2 * b] = bnb4_dev_mul_ftz(bnb4_dev_code_at(table_s, hi), scale);
        out[2 * b + 1] = bnb4_dev_mul_ftz(bnb4_dev_code_at(table_s, lo), scale);
    }
}

/* ---- dtypes ---------------------------------------------------------------------------------------- */
template <typename T> struct bnb4_dt;
template <> struct bnb4_dt<float> {
    static constexpr bnb4_dtype id = BNB4_F32;
    static __device__ __forceinline__ float to_f32(float v) { return v; }
    static __device__ __forceinline__ float from_f32(float v) { return v; }
};
template <> struct bnb4_dt<__half> {
    static constexpr bnb4_dtype id = BNB4_F16;
    static __device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
    static __device__ __forceinline__ __half from_f32(float v) { return __float2half_rn(v); }
    static __device__ __forceinline__ uint16_t bits(__half v) { return __half_as_ushort(v); }
    static __device__ __forceinline__ __half from_bits(uint16_t v) { return __ushort_as_half(v); }
};
template <> struct bnb4_dt<__nv_bfloat16> {
    static constexpr bnb4_dtype id = BNB4_BF16;
    static __device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
    static __device__ __forceinline__ __nv_bfloat16 from_f32(float v) { return __float2bfloat16_rn(v); }
    static __device__ __forceinline__ uint16_t bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
    static __device__ __forceinline__ __nv_bfloat16 from_bits(uint16_t v) { return __ushort_as_bfloat16(v); }
};

/* 8 activations (one packed weight word's worth) of one row, as float32 (the gemv and SIMT kernels): from 16-byte
 * aligned global memory (get, the read-only path) or from the kUnits 16-byte units that hold them, already loaded
 * (unpack: from shared memory, say). bnb4_x8_units<T> unpacks per dtype; get is the same for all. */
template <typename T> struct bnb4_x8_units;
template <> struct bnb4_x8_units<float> {
    static constexpr int kUnits = 2;
    static __device__ __forceinline__ void unpack(const uint4 (&u)[2], float v[8]) {
        v[0] = __uint_as_float(u[0].x), v[1] = __uint_as_float(u[0].y), v[2] = __uint_as_float(u[0].z),
        v[3] = __uint_as_float(u[0].w), v[4] = __uint_as_float(u[1].x), v[5] = __uint_as_float(u[1].y),
        v[6] = __uint_as_float(u[1].z), v[7] = __uint_as_float(u[1].w);
    }
};
template <> struct bnb4_x8_units<__half> {
    static constexpr int kUnits = 1;
    static __device__ __forceinline__ void unpack(const uint4 (&u)[1], float v[8]) {
        const uint32_t w[4] = {u[0].x, u[0].y, u[0].z, u[0].w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = __half22float2(*reinterpret_cast<const __half2 *>(&w[i]));
            v[2 * i] = f.x, v[2 * i + 1] = f.y;
        }
    }
};
template <> struct bnb4_x8_units<__nv_bfloat16> {
    static constexpr int kUnits = 1;
    static __device__ __forceinline__ void unpack(const uint4 (&u)[1], float v[8]) {
        const uint32_t w[4] = {u[0].x, u[0].y, u[0].z, u[0].w};
#pragma unroll
        for (int i = 0; i < 4; i++) { /* bf16 -> f32 is exact: the bits move up */
            v[2 * i] = __uint_as_float(w[i] << 16);
            v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
};
template <typename T> struct bnb4_x8 : bnb4_x8_units<T> {
    static __device__ __forceinline__ void get(const T *p, float v[8]) {
        const uint4 *q = reinterpret_cast<const uint4 *>(p); /* (aggregates: a loop filling the array scheduled the
                                                              * f32 table kernel's code differently) */
        if constexpr (bnb4_x8_units<T>::kUnits == 2) {
            const uint4 u[2] = {__ldg(q), __ldg(q + 1)};
            bnb4_x8_units<T>::unpack(u, v);
        } else {
            const uint4 u[1] = {__ldg(q)};
            bnb4_x8_units<T>::unpack(u, v);
        }
    }
};

/* ---- 4-bit encoders --------------------------------------------------------------------------------
 * Binary searches over bnb4_format.h's ascending thresholds: code = #{k : xn > t[k]}, the same count
 * bnb4_nf4_encode / bnb4_fp4_encode take (NaN fails every comparison and gets code 0), in 4 and 3
 * comparisons instead of 15 and 7. `t` points to the thresholds in shared memory. */
#define BNB4_NF4_THRESHOLDS                                                                                    \
    BNB4_NF4_T0, BNB4_NF4_T1, BNB4_NF4_T2, BNB4_NF4_T3, BNB4_NF4_T4, BNB4_NF4_T5, BNB4_NF4_T6, BNB4_NF4_T7,    \
        BNB4_NF4_T8, BNB4_NF4_T9, BNB4_NF4_T10, BNB4_NF4_T11, BNB4_NF4_T12, BNB4_NF4_T13, BNB4_NF4_T14
#define BNB4_FP4_THRESHOLDS BNB4_FP4_U0, BNB4_FP4_U1, BNB4_FP4_U2, BNB4_FP4_U3, BNB4_FP4_U4, BNB4_FP4_U5, BNB4_FP4_U6

__device__ __forceinline__ unsigned bnb4_dev_nf4_encode(float xn, const float *t) {
    unsigned c = xn > BNB4_NF4_T7 ? 8u : 0u;
    c += xn > (c ? BNB4_NF4_T11 : BNB4_NF4_T3) ? 4u : 0u;
    c += xn > t[c + 1] ? 2u : 0u;
    c += xn > t[c] ? 1u : 0u;
    return c;
}
__device__ __forceinline__ unsigned bnb4_dev_fp4_encode(float xn, const float *u) {
    const unsigned sign = xn < 0.0f ? 8u : 0u;
    const float a = xn < 0.0f ? -xn : xn;
    unsigned r = a > BNB4_FP4_U3 ? 4u : 0u;
    r += a > u[r + 1] ? 2u : 0u;
    r += a > u[r] ? 1u : 0u;
    const unsigned magnitude = r < 2u ? r : ((((9u - r) >> 1) << 1) | (r & 1u)); /* as bnb4_fp4_encode */
    return sign | magnitude;
}

/* Split-K hand-over: one thread of a CTA counts its arrival at a tile whose partial sums its CTA has
 * just written, after a barrier of the threads that wrote them. The atomic is a release (the barrier
 * orders the other threads' stores before it, and a release is cumulative) and an acquire (if this CTA
 * is the last, the others' partial sums are visible to it and, after the next barrier, to its threads):
 * the pattern CUTLASS's split-K semaphores use. It replaces a sequentially consistent fence
 * (__threadfence) in every thread, which ncu showed among the fix-up's largest stalls. */
__device__ __forceinline__ unsigned bnb4_dev_arrive_acq_rel(unsigned *counter) {
    unsigned old;
    asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], 1;" : "=r"(old) : "l"(counter) : "memory");
    return old;
}

/* The pipe kernel's hand-over flags (cuda_gemm_pipe.cuh): a contributor's thread publishes its CTA's partial sums
 * (stored by its threads before a barrier: a release is cumulative) with a release store; the tile's fixer
 * loads the flags until all are set, then fences (an acquire of each). */
__device__ __forceinline__ void bnb4_dev_publish(unsigned *flag) {
    asm volatile("st.release.gpu.global.u32 [%0], 1;" ::"l"(flag) : "memory");
}
__device__ __forceinline__ unsigned bnb4_dev_flag_load(const unsigned *flag) {
    unsigned v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
    return v;
}
/* after relaxed loads that saw every flag set: together an acquire of each */
__device__ __forceinline__ void bnb4_dev_fence_acquire() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }
/* Equal parts of a tile, where every contributor adds a share (cuda_gemm_pipe.cuh, PipeArgs::spread): the tile's
 * counter counts each contributor twice - once its partial sums are stored (a release, cumulative over its threads'
 * stores before a barrier, as bnb4_dev_publish), and once it has seen all of them counted (relaxed) - and wraps to 0
 * at the last count (inc: 0 past `wrap` = 2 parts - 1), ready for the next launch. No thread waits for either. */
__device__ __forceinline__ void bnb4_dev_count_release(unsigned *counter, unsigned wrap) {
    asm volatile("red.release.gpu.global.inc.u32 [%0], %1;" ::"l"(counter), "r"(wrap) : "memory");
}
__device__ __forceinline__ void bnb4_dev_count_relaxed(unsigned *counter, unsigned wrap) {
    asm volatile("red.relaxed.gpu.global.inc.u32 [%0], %1;" ::"l"(counter), "r"(wrap) : "memory");
}
/* Equal parts where only the last few to arrive add shares: the arrival's order (0 .. parts - 1), as
 * bnb4_dev_arrive_acq_rel; the last arrival (old = wrap = parts - 1) turns the counter back to 0, which is also how
 * the sharers before it see that all are in. */
__device__ __forceinline__ unsigned bnb4_dev_arrive_inc_acq_rel(unsigned *counter, unsigned wrap) {
    unsigned old;
    asm volatile("atom.inc.acq_rel.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(counter), "r"(wrap) : "memory");
    return old;
}

/* ---- what every matmul kernel reads of the weight ----------------------------------------------------
 * The kernels' argument structs derive from this: bnb4_qtensor's pointers and the shifts the kernels
 * index blocks with, filled by bnb4_cuda_set_weight, the one place that reads a bnb4_qtensor for them. */
struct bnb4_cuda_weight_args {
    const uint8_t *packed;
    const float *absmax;        /* plain, or NULL when nested */
    const uint8_t *codes;       /* nested */
    const float *nested_absmax;
    const float *nested_code;
    float offset;
    unsigned nested_blocksize;
    int nbs_log2;               /* log2(nested_blocksize) when a power of two (always in bitsandbytes), else -1 */
    int bs_log2;                /* log2(blocksize): blocksizes are powers of two */
    int quant_type;
};
static inline int bnb4_log2_ceil(size_t v) {
    int l = 0;
    while (((size_t)1 << l) < v)
        l++;
    return l;
}
/* Whether the kernels that index the nested absmax by a shift (nbs_log2) take w: plain absmax, or a power-of-two nested
 * blocksize (bitsandbytes' 256) */
static inline bool bnb4_cuda_scales_by_shift(const bnb4_qtensor *w) {
    return w->absmax || (w->nested.blocksize & (w->nested.blocksize - 1)) == 0;
}
static inline void bnb4_cuda_set_weight(bnb4_cuda_weight_args &a, const bnb4_qtensor *w) {
    a.packed = w->packed;
    a.absmax = w->absmax;
    a.codes = w->nested.codes;
    a.nested_absmax = w->nested.absmax;
    a.nested_code = w->nested.code;
    a.offset = w->nested.offset;
    a.nested_blocksize = (unsigned)w->nested.blocksize;
    const size_t nbs = w->nested.blocksize;
    a.nbs_log2 = nbs && (nbs & (nbs - 1)) == 0 ? bnb4_log2_ceil(nbs) : -1;
    a.bs_log2 = bnb4_log2_ceil(w->blocksize);
    a.quant_type = (int)w->quant_type;
}
/* The shared-memory tables of the kernels that decode with bnb4_dev_code_at (the SIMT rows and f32 tile kernels), at the
 * start of their dynamic shared memory (64-byte aligned): the weight's 16 codes, then the 256-entry nested code map
 * (filled for nested weights only). nf4 / fp4: the codebooks, __constant__ in the kernel's own file. */
constexpr size_t kBnb4CodeTablesBytes = (16 + 256) * sizeof(float);
template <bool NESTED>
__device__ __forceinline__ void bnb4_dev_fill_code_tables(float *tables, const bnb4_cuda_weight_args &a, const float *nf4,
                                                          const float *fp4) {
    if (threadIdx.x < 16)
        tables[threadIdx.x] = a.quant_type == BNB4_NF4 ? nf4[threadIdx.x] : fp4[threadIdx.x];
    if (NESTED)
        for (int v = threadIdx.x; v < 256; v += blockDim.x)
            tables[16 + v] = a.nested_code[v];
}

/* ---- cp.async (sm_80+) ---------------------------------------------------------------------------------
 * src_bytes < the copy size zero-fills the rest (0: a pure zero fill, nothing is read). */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, uint32_t src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* ---- small utilities ------------------------------------------------------------------------------- */
static inline size_t bnb4_div_up(size_t a, size_t b) { return a / b + (a % b != 0); }
static inline int bnb4_aligned(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }
/* A size setting from the environment (the BNB4_CUDA_* variables used for measuring and by the tests):
 * its decimal value, or dflt when it is unset, empty or not a plain number. */
static inline size_t bnb4_env_size(const char *name, size_t dflt) {
    const char *e = getenv(name);
    if (!e || !*e)
        return dflt;
    char *end = nullptr;
    const unsigned long long v = strtoull(e, &end, 10);
    return *end == '\0' && *e != '-' ? (size_t)v : dflt;
}

/* Check the launch just enqueued; report the CUDA error as BNB4_ERR_DEVICE. */
bnb4_status bnb4_cuda_check(cudaError_t err, const char *what);
#define BNB4_CUDA_LAUNCH_CHECK(what) bnb4_cuda_check(cudaGetLastError(), what)

/* Stream-ordered temporaries from the context's pool. */
bnb4_status bnb4_cuda_alloc(bnb4_cuda_state *s, size_t bytes, void **out, const char *what);
void bnb4_cuda_free(bnb4_cuda_state *s, void *p);
/* A temporary one op's kernels pass to each other (dequantize + cuBLAS: the dequantized weight): from the pool,
 * or while the context's stream is being captured, the context's scratch (bnb4_cuda_scratch), so the graph
 * holds the op's kernels and no allocation or free node. Give it back with bnb4_cuda_temp_done. */
bnb4_status bnb4_cuda_temp(bnb4_cuda_state *s, size_t bytes, void **out, const char *what);
void bnb4_cuda_temp_done(bnb4_cuda_state *s, void *p);
/* This thread's stream-capture mode set to relaxed while it lives, so an op may allocate what it keeps
 * (the context's buffers, the cuBLAS handle) while its stream is being captured into a CUDA graph:
 * cudaMalloc, and synchronizing a stream outside the capture, are "potentially unsafe" calls that the
 * global and thread-local modes refuse, invalidating the capture. Such an allocation is no node of the
 * graph (which holds the address: the context keeps it until it goes), so a captured call's kernels follow
 * each other directly, their programmatic launch edges intact; a stream-ordered temporary's allocation and
 * free nodes stood between them (4096x4096 m = 1: 9.6 us a call instead of 6.2, docs/performance.md v24). */
struct bnb4_cuda_relaxed_capture {
    cudaStreamCaptureMode prev = cudaStreamCaptureModeRelaxed;
    bnb4_cuda_relaxed_capture() { cudaThreadExchangeStreamCaptureMode(&prev); }
    ~bnb4_cuda_relaxed_capture() { cudaThreadExchangeStreamCaptureMode(&prev); }
    bnb4_cuda_relaxed_capture(const bnb4_cuda_relaxed_capture &) = delete;
    bnb4_cuda_relaxed_capture &operator=(const bnb4_cuda_relaxed_capture &) = delete;
};
/* At least `count` zeroed split-K counters and `bytes` of partial-sum space, owned by the context, so the
 * steady state of a model's layers allocates nothing. They grow on demand, also while the stream is being
 * captured into a CUDA graph (no node in the graph, no synchronization of the stream); the old ones stay
 * allocated until the context goes, as kernels still queued and graphs captured earlier may use them. */
bnb4_status bnb4_cuda_splitk(bnb4_cuda_state *s, size_t count, size_t bytes, unsigned **counters, float **partials);
/* At least `bytes` of device memory owned by the context, grown as the split-K space is: for an operand one
 * kernel prepares for the next (the wgmma pipe kernel's permuted activations, the tile kernel's block
 * scales, a captured dequantize + cuBLAS call's dequantized weight: bnb4_cuda_temp). Unlike a stream-ordered
 * temporary it puts no allocation node between one op's kernels and the next op's in a CUDA graph, where the
 * node would stand in the programmatic launch edge between them. Each op's first kernel writes it only after
 * griddepcontrol.wait (the dequantize kernel: launched without the early start), so the previous op's kernels
 * are done with it. */
bnb4_status bnb4_cuda_scratch(bnb4_cuda_state *s, size_t bytes, void **out);

/* Steps per CTA of the persistent matmul kernels: with `grid_env` set (tests, measuring) that many CTAs
 * and per = ceil(steps / CTAs) (stream-K); otherwise aligned runs or stream-K on one CTA per SM, at most
 * about `max_parts` CTAs per tile (0: no limit), aligned runs up to `sk_steps` steps longer than stream-K's
 * taken too (bnb4_grid_steps_per_cta, cuda_grid.h). */
size_t bnb4_cuda_steps_per_cta(const bnb4_cuda_state *s, size_t tiles, size_t k_steps, size_t max_parts,
                               size_t sk_steps, const char *grid_env);

/* Kernel launchers implemented in the kernel files (arguments already validated). */
bnb4_status bnb4_cuda_launch_quantize(bnb4_cuda_state *s, const void *src, bnb4_dtype dt, size_t n,
                                      size_t blocksize, bnb4_quant_type qt, uint8_t *packed, float *absmax);
bnb4_status bnb4_cuda_launch_quantize_nested(bnb4_cuda_state *s, const float *absmax, size_t nblocks, float offset,
                                             size_t nested_blocksize, uint8_t *codes, float *nested_absmax);
bnb4_status bnb4_cuda_launch_dequantize_nested(bnb4_cuda_state *s, const bnb4_qtensor *q, float *absmax);
bnb4_status bnb4_cuda_launch_dequantize(bnb4_cuda_state *s, const bnb4_qtensor *q, bnb4_dtype dt, void *dst);

/* The matmul kernels and where each takes over (by m): see bnb4_cuda_pick_gemm (cuda_gemm.cu). The SIMT kernel
 * takes m <= 16 where nothing faster fits: odd layouts, and f32 activations up to BNB4_CUDA_SIMT_F32_MAX_M (the
 * environment variable of that name overrides it), in launches of 16 rows; bnb4_cuda_simt_max_m says which. f32 to
 * m = 40: on the H200 its launches beat dequantize + SGEMM to m = 48 on the four benchmark shapes (v51), and the f32
 * tile kernel below from m = 41, where a third launch takes the 16-row kernel (1-7 % faster at m = 41..48; 5-10 %
 * slower at m = 37..40, docs/performance.md v52). */
#define BNB4_CUDA_SIMT_MAX_M 16
#define BNB4_CUDA_SIMT_F32_MAX_M 40
size_t bnb4_cuda_simt_max_m(bnb4_dtype dt);
/* float32 activations past the SIMT kernel's m, to BNB4_CUDA_F32_TILE_MAX_M (the environment variable of that name
 * overrides it, read per call), K % 32 == 0, the packed weights 16-byte aligned, where its 50 KB fit: the
 * register-blocked tile kernel (cuda_gemm_f32_tile.cu) instead of dequantize + SGEMM, which also needs a temporary of 4
 * bytes a weight. On the H200 (docs/performance.md v52, v53) it takes 0.75-0.92x dequantize + SGEMM's time at m = 49..64
 * on the four benchmark shapes (0.81-0.97x SGEMM's speed at m = 64); past 64 the two are about even (v53, plain: m =
 * 96..128 0.93-1.10x, 256 1.01-1.20x), so dequantize + SGEMM keeps those; a setting of 128 trades that for no
 * temporary. */
#define BNB4_CUDA_F32_TILE_MAX_M 64
size_t bnb4_cuda_f32_tile_max_m(void);
/* whether m takes the f32 tile kernel on this device where the layout fits (bnb4_cuda_f32_tile_fits) */
int bnb4_cuda_f32_tile_enabled(const bnb4_cuda_state *s, size_t m);
int bnb4_cuda_f32_tile_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x);
/* the splits of K the f32 tile kernel makes at this shape on this device (BNB4_CUDA_F32_TILE_SPLITS overrides it) */
size_t bnb4_cuda_f32_tile_splits(const bnb4_cuda_state *s, size_t N, size_t K, size_t m);
bnb4_status bnb4_cuda_gemm_f32_tile(bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m, const void *x, const void *bias,
                                    void *y);
/* Whether the SIMT kernel's launch of m <= 16 rows (K % 32 == 0, aligned) stages its activations in shared memory:
 * wherever its two stages a warp fit (every GPU the library runs on; not at BNB4_CUDA_SMEM_OPTIN=49152 with f32 at
 * m > 8, which takes 65 KB); BNB4_CUDA_SIMT_XS=0 turns it off */
int bnb4_cuda_simt_stages_x(const bnb4_cuda_state *s, bnb4_dtype dt, size_t m);
/* The weight-streaming CUDA-core kernel (cuda_gemv.cu) for m <= BNB4_CUDA_GEMV_MAX_M (the environment
 * variable of that name overrides it, 0..4), with its half2 code-pair table for f16/bf16 activations
 * (0 = float2 pairs, exact; 1 = half2 pairs). With the table kernel, f16/bf16 plain-absmax tensors of
 * more than BNB4_CUDA_GEMV_PLAIN_MAX_N rows stay on the tensor-core kernel. All three from one H200 run
 * (docs/performance.md): m = 2..4 on this kernel took 1.3-2.7x the tensor-core kernel's time, and
 * at m = 1 plain 14336x4096 and 28672x8192 it was 5-14 % slower, while it won on every nested shape
 * and on the plain 4096-row ones. */
#define BNB4_CUDA_GEMV_MAX_M 1
#define BNB4_CUDA_GEMV_TABLE_DEFAULT 1
#define BNB4_CUDA_GEMV_PLAIN_MAX_N 8192
/* m = 1 with f16/bf16 activations: 1 = the stream kernel (cuda_gemv.cu; every row count: on the H100 run
 * of docs/performance.md (v9) it beat the table kernel on every shape and the tensor-core kernel on the
 * plain ones over 8192 rows), 0 = the table kernel with the row limit above;
 * BNB4_CUDA_GEMV_KERNEL=stream|stream2|stream4|table overrides it. */
#define BNB4_CUDA_GEMV_STREAM_DEFAULT 1
/* m = 1..BNB4_CUDA_PIPE_MAX_M with f16/bf16 activations (after the gemv kernel's m): the pipelined
 * tensor-core kernel (cuda_gemm_pipe.cuh); BNB4_CUDA_PIPE_MAX_M in the environment overrides it
 * (0 turns it off, at most BNB4_CUDA_PIPE_LIMIT_M). */
#define BNB4_CUDA_PIPE_MAX_M 64
#define BNB4_CUDA_PIPE_LIMIT_M 64
/* m = 1 on sm_90 takes the pipe kernel's TMA variant instead of the gemv kernel from this many weights
 * (N x K) on: on the H200 run of docs/performance.md (v11) it streamed 28672x8192 at 0.70 of copy against
 * 0.59 and 4096x14336 at 0.51 against 0.45, tied on 14336x4096 and lost on 4096x4096 (9.1 against 7.5 us);
 * since v17 (aligned runs, in-flight window) it is the faster on 4096x4096 too (7.1 against 7.4 us plain,
 * 7.2 against 8.2 nested); with narrow tiles (v30) on 1024x4096, 2048x4096 and 4096x2048 as well (4.3 /
 * 4.8 / 3.9 us against 5.0-6.0 / 5.3-6.2 / 5.7-6.8). Smaller weights are not measured. */
#define BNB4_CUDA_PIPE_M1_MIN_WEIGHTS ((size_t)1 << 22)
/* m = BNB4_CUDA_TILE_MIN_M..BNB4_CUDA_TILE_MAX_M with f16/bf16 activations on compute capability 9.0 (sm_90a
 * build), on weights of BNB4_CUDA_TILE_MIN_WEIGHTS (N x K) or more, and on smaller ones where its whole
 * tiles fill the grid (bnb4_grid_small_tile_rows): the fused wgmma tile kernel (cuda_gemm_tile.cu) instead
 * of dequantize + cuBLAS. The environment variables of those names override
 * them (MIN_M once, the others per call: tests use them). H200 (docs/performance.md v13, v14): at m = 96 /
 * 128 it took 48-53 us on 14336x4096 and 4096x14336 and 148-188 us on 28672x8192 where the pipe kernel on
 * two 64-row chunks (the path before it) took 59-66 and 172-189 us; with 256-row tiles past m = 128 it
 * took 0.71-0.78 of cuBLAS at m = 512 and 0.76-0.93 at m = 2048, where dequantize + cuBLAS (the path
 * before it) took 0.65-0.76 and 0.76-0.90 in the same session; on 4096x4096 it lost at every m then, and
 * wins since v37 where its tiles fill the grid. */
#define BNB4_CUDA_TILE_MIN_M 65
#define BNB4_CUDA_TILE_MAX_M SIZE_MAX
#define BNB4_CUDA_TILE_MIN_WEIGHTS ((size_t)1 << 25)
typedef enum bnb4_cuda_gemm_path {
    BNB4_CUDA_GEMM_GEMV,        /* small m, K % blocksize == 0, aligned: CUDA-core weight streaming */
    BNB4_CUDA_GEMM_PIPE,        /* m <= 64, f16/bf16, K % 32 == 0, aligned: pipelined tensor-core kernel (to
                                   m = 128 in 64-row launches: bnb4_cuda_pipe_chunks) */
    BNB4_CUDA_GEMM_TILE,        /* m >= 65 on large weights, f16/bf16, K % 32 == 0, aligned, sm_90a:
                                   fused wgmma tiles */
    BNB4_CUDA_GEMM_SIMT,        /* fused CUDA-core kernel, any dtype and shape, small m */
    BNB4_CUDA_GEMM_F32_TILE,    /* f32 past the SIMT kernel's m, K % 32 == 0, aligned: CUDA-core tiles */
    BNB4_CUDA_GEMM_DEQUANT_BLAS /* dequantize into a temporary, then cuBLAS */
} bnb4_cuda_gemm_path;
size_t bnb4_cuda_gemv_max_m(void);
int bnb4_cuda_gemv_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x);
/* Whether the stream gemv kernel stages its activations in shared memory for K of dtype dt (cuda_gemv.cu) */
int bnb4_cuda_gemv_stages_x(const bnb4_cuda_state *s, bnb4_dtype dt, int nested, size_t K);
bnb4_status bnb4_cuda_gemv(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                           const void *bias, void *y);
size_t bnb4_cuda_pipe_max_m(void);
int bnb4_cuda_pipe_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x);
/* the activation rows one launch of the pipe kernel takes on this device (64 but where its shared memory is short:
 * 16 on A100 and sm_86 / 89 / 120, bnb4_cuda_gemm_pipe running more in chunks; 0 where it does not fit) */
size_t bnb4_cuda_pipe_rows(const bnb4_cuda_state *s);
/* whether m takes the pipe kernel on this device where the layout fits (bnb4_cuda_pipe_fits): m <= 64, in at most 3
 * chunks of bnb4_cuda_pipe_rows */
int bnb4_cuda_pipe_takes(const bnb4_cuda_state *s, size_t m);
/* whether the pipe kernel would run its TMA variant (sm_90, the common layouts) */
int bnb4_cuda_pipe_tma_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m);
/* whether m past the pipe kernel's own takes matmuls of that many rows on it (cuda_grid.h, bnb4_grid_pipe_chunks, where
 * its TMA variant fits at that many rows): 0 no (or BNB4_CUDA_PIPE_CHUNKS=0), 1 where the tile kernel does not take m,
 * 2 before the tile kernel (or BNB4_CUDA_PIPE_CHUNKS=1, wherever it fits at m = 65..128; read per call: tests,
 * measuring) */
int bnb4_cuda_pipe_chunks(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x);
/* whether the pipe kernel's TMA variant does its math with wgmma at this m for plain absmax on large weights
 * (compute capability 9.0, sm_90a build; nested absmax and weights of up to 5 x 2^24 elements from m = 17) */
int bnb4_cuda_pipe_wgmma(const bnb4_cuda_state *s, size_t m);
bnb4_status bnb4_cuda_gemm_pipe(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                                const void *bias, void *y);
/* whether w's packed weights or block scales may overlap the y of a matmul still running when the next
 * kernel on the context's stream starts (cuda_backend.cu, cuda_outputs.h): then no kernel may read them
 * before its griddepcontrol.wait */
int bnb4_cuda_weights_may_be_pending(bnb4_cuda_state *s, const bnb4_qtensor *w);
/* the same for a matmul's activations (bytes at x) */
int bnb4_cuda_activations_may_be_pending(bnb4_cuda_state *s, const void *x, size_t bytes);
/* whether m takes the tile kernel on this device (where the layout fits: bnb4_cuda_tile_fits) */
int bnb4_cuda_tile_enabled(const bnb4_cuda_state *s, size_t m);
int bnb4_cuda_tile_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x);
bnb4_status bnb4_cuda_gemm_tile(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                                const void *bias, void *y);
bnb4_cuda_gemm_path bnb4_cuda_pick_gemm(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m,
                                        const void *x);
bnb4_status bnb4_cuda_gemm_simt(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                                const void *bias, void *y);
/* Destroy the cuBLAS and cuBLASLt handles the dequantize + cuBLAS path created (loaded at run time). */
void bnb4_cuda_blas_destroy(bnb4_cuda_state *s);
bnb4_status bnb4_cuda_gemm_dequant_blas(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m,
                                        const void *x, const void *bias, void *y);

#endif /* BNB4_CUDA_COMMON_CUH */
