/*
 * cuda_backend.cu - the CUDA backend's seam functions (bnb4_cuda_* of bnb4_backend.h): context
 * set-up, stream-ordered temporaries, error reporting, and routing each op to its kernels
 * (cuda_quantize.cu, cuda_dequantize.cu, cuda_gemm.cu).
 *
 * Every op is enqueued on the context's stream and returns without waiting, except
 * bnb4_nested_offset, whose result is a host float. Launch and runtime errors become
 * BNB4_ERR_DEVICE with the CUDA error string in bnb4_last_error().
 */
#include <stdlib.h>

#include "cuda_common.cuh"
#include "cuda_outputs.h"
#include "bnb4_torch_mean.h"

bnb4_status bnb4_cuda_check(cudaError_t err, const char *what) {
    if (err == cudaSuccess)
        return BNB4_OK;
    if (err == cudaErrorMemoryAllocation)
        return bnb4_fail(BNB4_ERR_OUT_OF_MEMORY, "%s: CUDA out of memory (%s)", what, cudaGetErrorString(err));
    return bnb4_fail(BNB4_ERR_DEVICE, "%s: CUDA error %d (%s)", what, (int)err, cudaGetErrorString(err));
}

int bnb4_cuda_devices(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free "no device" error */
        return 0;
    }
    return n;
}

/* Run the rest of an op on the context's device; restores nothing (the CUDA runtime's current device is
 * per thread, and callers that mix devices set it themselves, as with any CUDA library). */
static bnb4_status use_device(bnb4_cuda_state *s, const char *what) {
    return bnb4_cuda_check(cudaSetDevice(s->device), what);
}

/* an empty kernel: its attributes say which code the driver loaded for the device (bnb4_cuda_ctx_init) */
static __global__ void code_arch_probe() {}

bnb4_status bnb4_cuda_ctx_init(bnb4_ctx *ctx) {
    static const char fn[] = "bnb4_ctx_create";
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        cudaGetLastError();
        return bnb4_fail(BNB4_ERR_DEVICE, "%s: no usable CUDA device (%s)", fn,
                         err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount returned 0");
    }
    const int dev = ctx->params.device_index;
    if (dev >= count)
        return bnb4_fail(BNB4_ERR_DEVICE, "%s: device_index %d but only %d CUDA device(s)", fn, dev, count);
    bnb4_cuda_state *s = (bnb4_cuda_state *)calloc(1, sizeof *s);
    if (!s)
        return bnb4_fail(BNB4_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    s->device = dev;
    s->stream = (cudaStream_t)ctx->params.stream;
    bnb4_status st = use_device(s, fn);
    cudaDeviceProp prop;
    if (st == BNB4_OK)
        st = bnb4_cuda_check(cudaGetDeviceProperties(&prop, dev), fn);
    if (st == BNB4_OK) {
        s->sm_count = prop.multiProcessorCount;
        s->sm_threads = prop.maxThreadsPerMultiProcessor;
        s->cc_major = prop.major;
        s->cc_minor = prop.minor;
        s->l2_bytes = (size_t)prop.l2CacheSize;
        s->smem_optin = (size_t)prop.sharedMemPerBlockOptin;
        /* (tests: the kernel choices of a device with less shared memory, on this one) */
        const size_t smem_env = bnb4_env_size("BNB4_CUDA_SMEM_OPTIN", s->smem_optin);
        if (smem_env < s->smem_optin)
            s->smem_optin = smem_env;
        if (prop.major < 8)
            st = bnb4_fail(BNB4_ERR_UNSUPPORTED, "%s: %s is compute capability %d.%d; bnb4 needs 8.0 or newer", fn,
                           prop.name, prop.major, prop.minor);
    }
    if (st == BNB4_OK) {
        /* which of the build's images the driver loads for this device (all kernel files are built for the
         * same architectures): none fails here, with the reason, rather than at the first op */
        cudaFuncAttributes fa;
        const cudaError_t e = cudaFuncGetAttributes(&fa, code_arch_probe);
        if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidPtx || e == cudaErrorUnsupportedPtxVersion) {
            cudaGetLastError();
            st = bnb4_fail(BNB4_ERR_UNSUPPORTED,
                           "%s: this build of bnb4 has no code for %s (compute capability %d.%d: %s); rebuild with "
                           "its architecture in CMAKE_CUDA_ARCHITECTURES",
                           fn, prop.name, prop.major, prop.minor, cudaGetErrorString(e));
        } else if ((st = bnb4_cuda_check(e, fn)) == BNB4_OK) {
            /* ptxVersion: the virtual architecture the image came from (SASS built from compute_90a: 90; an
             * sm_80 build's PTX compiled by the driver for Hopper: 80) */
            s->code_arch = fa.ptxVersion > 0 ? fa.ptxVersion : fa.binaryVersion;
        }
    }
    if (st == BNB4_OK) {
        cudaMemPoolProps props = {};
        props.allocType = cudaMemAllocationTypePinned;
        props.handleTypes = cudaMemHandleTypeNone;
        props.location.type = cudaMemLocationTypeDevice;
        props.location.id = dev;
        st = bnb4_cuda_check(cudaMemPoolCreate(&s->pool, &props), fn);
        if (st == BNB4_OK) {
            uint64_t keep = UINT64_MAX; /* keep freed temporaries cached: the next call reuses them */
            st = bnb4_cuda_check(cudaMemPoolSetAttribute(s->pool, cudaMemPoolAttrReleaseThreshold, &keep), fn);
        }
    }
    if (st != BNB4_OK) {
        if (s->pool)
            cudaMemPoolDestroy(s->pool);
        free(s);
        return st;
    }
    ctx->cuda = s;
    return BNB4_OK;
}

void bnb4_cuda_ctx_free(bnb4_ctx *ctx) {
    bnb4_cuda_state *s = ctx->cuda;
    if (!s)
        return;
    cudaSetDevice(s->device);
    cudaStreamSynchronize(s->stream); /* temporaries of ops still in flight return to the pool first */
    bnb4_cuda_blas_destroy(s);
    if (s->counters)
        cudaFree(s->counters);
    if (s->partials)
        cudaFree(s->partials);
    if (s->scratch)
        cudaFree(s->scratch);
    if (s->side)
        cudaStreamDestroy(s->side);
    for (size_t i = 0; i < s->n_retired; i++)
        cudaFree(s->retired[i]);
    free(s->retired);
    cudaMemPoolDestroy(s->pool);
    free(s);
    ctx->cuda = NULL;
}

bnb4_status bnb4_cuda_alloc(bnb4_cuda_state *s, size_t bytes, void **out, const char *what) {
    *out = NULL;
    return bnb4_cuda_check(cudaMallocFromPoolAsync(out, bytes ? bytes : 1, s->pool, s->stream), what);
}

void bnb4_cuda_free(bnb4_cuda_state *s, void *p) {
    if (p)
        cudaFreeAsync(p, s->stream);
}

size_t bnb4_cuda_steps_per_cta(const bnb4_cuda_state *s, size_t tiles, size_t k_steps, size_t max_parts,
                                size_t sk_steps, const char *grid_env) {
    const size_t forced = bnb4_env_size(grid_env, 0);
    if (forced > 0 && forced <= 65535)
        return bnb4_div_up(tiles * k_steps, forced);
    return bnb4_grid_steps_per_cta(tiles, k_steps, s->sm_count > 0 ? (size_t)s->sm_count : 1, max_parts, sk_steps);
}

/* The id of the graph capture the context's stream is in, 0 if none; false if that is not known (the
 * query failed - its error cleared, it launched nothing - or the capture was invalidated). It fails no op:
 * the output log (cuda_outputs.h) takes "not known" as pending. tail (optional): the capture's one open node
 * on the stream - what the next captured kernel will follow - or null (none, several: another stream joined
 * in, or not capturing). */
static bool capture_id(bnb4_cuda_state *s, unsigned long long *id, const void **tail = nullptr) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    unsigned long long got = 0;
    const cudaGraphNode_t *deps = nullptr;
    size_t n = 0;
    if (tail)
        *tail = nullptr;
    if (cudaStreamGetCaptureInfo(s->stream, &status, &got, nullptr, tail ? &deps : nullptr, nullptr,
                                 tail ? &n : nullptr) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    *id = status == cudaStreamCaptureStatusActive ? got : 0;
    if (tail && *id && n == 1)
        *tail = deps[0];
    return status != cudaStreamCaptureStatusInvalidated;
}

/* A context-owned buffer being replaced stays allocated until the context goes: a CUDA graph captured
 * earlier holds its address and may still be replayed (growth at most doubles what the buffers take, as
 * each one grows by half again). */
static bnb4_status retire(bnb4_cuda_state *s, void *buf, const char *what) {
    if (!buf)
        return BNB4_OK;
    void **list = (void **)realloc(s->retired, (s->n_retired + 1) * sizeof *list);
    if (!list)
        return bnb4_fail(BNB4_ERR_OUT_OF_MEMORY, "%s: out of host memory", what);
    s->retired = list;
    s->retired[s->n_retired++] = buf;
    return BNB4_OK;
}

/* Zero fresh device memory before returning, on the context's side stream (non-blocking, so the context's
 * stream, captured or not, neither waits for it nor records it). */
static bnb4_status zero_now(bnb4_cuda_state *s, void *p, size_t bytes, const char *what) {
    bnb4_status st = BNB4_OK;
    if (!s->side)
        st = bnb4_cuda_check(cudaStreamCreateWithFlags(&s->side, cudaStreamNonBlocking), what);
    if (st == BNB4_OK)
        st = bnb4_cuda_check(cudaMemsetAsync(p, 0, bytes, s->side), what);
    return st != BNB4_OK ? st : bnb4_cuda_check(cudaStreamSynchronize(s->side), what);
}

/* Grow a context-owned device buffer to at least `bytes` (with half again as headroom against regrowth),
 * zeroed if `zero`. Kernels still queued, and graphs captured earlier, may use the old buffer: it is
 * retired, not freed, so nothing waits for them. */
static bnb4_status grow_buffer(bnb4_cuda_state *s, void **buf, size_t *have, size_t bytes, bool zero,
                               const char *what) {
    if (bytes <= *have)
        return BNB4_OK;
    const bnb4_cuda_relaxed_capture relaxed; /* the stream may be being captured */
    const size_t want = bytes + bytes / 2 < bytes ? bytes : bytes + bytes / 2;
    void *fresh = NULL;
    bnb4_status st = bnb4_cuda_check(cudaMalloc(&fresh, want), what);
    if (st == BNB4_OK && zero)
        st = zero_now(s, fresh, want, what);
    if (st == BNB4_OK)
        st = retire(s, *buf, what);
    if (st != BNB4_OK) {
        if (fresh)
            cudaFree(fresh);
        return st;
    }
    *buf = fresh;
    *have = want;
    return BNB4_OK;
}

bnb4_status bnb4_cuda_splitk(bnb4_cuda_state *s, size_t count, size_t bytes, unsigned **counters, float **partials) {
    static const char what[] = "split-K workspace";
    *counters = NULL;
    *partials = NULL;
    /* (at least 4096 counters: small shapes never regrow) */
    bnb4_status st = grow_buffer(s, (void **)&s->counters, &s->counters_bytes,
                                 (count > 4096 ? count : 4096) * sizeof(unsigned), true, what);
    if (st == BNB4_OK)
        st = grow_buffer(s, (void **)&s->partials, &s->partials_bytes, bytes, false, what);
    if (st != BNB4_OK)
        return st;
    *counters = s->counters;
    *partials = s->partials;
    return BNB4_OK;
}

bnb4_status bnb4_cuda_scratch(bnb4_cuda_state *s, size_t bytes, void **out) {
    *out = NULL;
    const bnb4_status st = grow_buffer(s, &s->scratch, &s->scratch_bytes, bytes ? bytes : 1, false, "kernel scratch");
    if (st == BNB4_OK)
        *out = s->scratch;
    return st;
}

bnb4_status bnb4_cuda_temp(bnb4_cuda_state *s, size_t bytes, void **out, const char *what) {
    unsigned long long capture = 0;
    const bool capturing = !capture_id(s, &capture) || capture != 0; /* (not known: the scratch is right either way) */
    return capturing ? bnb4_cuda_scratch(s, bytes, out) : bnb4_cuda_alloc(s, bytes, out, what);
}

void bnb4_cuda_temp_done(bnb4_cuda_state *s, void *p) {
    if (p != s->scratch)
        bnb4_cuda_free(s, p);
}

/* ---- ops ------------------------------------------------------------------------------------------- */

bnb4_status bnb4_cuda_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype dt, size_t n, size_t blocksize,
                               bnb4_quant_type qt, uint8_t *packed, float *absmax) {
    bnb4_status st = use_device(ctx->cuda, "bnb4_quantize");
    return st != BNB4_OK ? st : bnb4_cuda_launch_quantize(ctx->cuda, src, dt, n, blocksize, qt, packed, absmax);
}

/* bitsandbytes' offset is torch's CUDA mean, whose summation order bnb4_torch_cuda_mean_f32_on restates on
 * the host for this GPU (past 4.3 M blocks on the H100, 3.5 M on an A100, the order depends on the GPU's SMs:
 * bitsandbytes on the same GPU gets the same offset); the absmax comes over for it (4 bytes a block: a 32nd of a
 * float16 weight's bytes, and this op returns a host value, so it waits for the stream anyway). */
bnb4_status bnb4_cuda_nested_offset(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float *offset) {
    static const char fn[] = "bnb4_nested_offset";
    bnb4_cuda_state *s = ctx->cuda;
    bnb4_status st = use_device(s, fn);
    if (st != BNB4_OK)
        return st;
    if (nblocks > SIZE_MAX / sizeof(float))
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: nblocks = %zu is too large", fn, nblocks);
    float *host = (float *)malloc(nblocks * sizeof(float));
    if (!host)
        return bnb4_fail(BNB4_ERR_OUT_OF_MEMORY, "%s: out of host memory (%zu bytes)", fn, nblocks * sizeof(float));
    st = bnb4_cuda_check(cudaMemcpyAsync(host, absmax, nblocks * sizeof(float), cudaMemcpyDeviceToHost, s->stream), fn);
    if (st == BNB4_OK)
        st = bnb4_cuda_check(cudaStreamSynchronize(s->stream), fn);
    if (st == BNB4_OK)
        *offset = bnb4_torch_cuda_mean_f32_on(host, nblocks, (unsigned)s->sm_count, (unsigned)s->sm_threads);
    free(host);
    return st;
}

bnb4_status bnb4_cuda_quantize_nested(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float offset,
                                      size_t nested_blocksize, uint8_t *codes, float *nested_absmax) {
    bnb4_status st = use_device(ctx->cuda, "bnb4_quantize_nested");
    return st != BNB4_OK ? st
                         : bnb4_cuda_launch_quantize_nested(ctx->cuda, absmax, nblocks, offset, nested_blocksize,
                                                            codes, nested_absmax);
}

bnb4_status bnb4_cuda_dequantize_nested(bnb4_ctx *ctx, const bnb4_qtensor *q, float *absmax) {
    bnb4_status st = use_device(ctx->cuda, "bnb4_dequantize_nested");
    return st != BNB4_OK ? st : bnb4_cuda_launch_dequantize_nested(ctx->cuda, q, absmax);
}

bnb4_status bnb4_cuda_dequantize(bnb4_ctx *ctx, const bnb4_qtensor *q, bnb4_dtype dt, void *dst) {
    bnb4_status st = use_device(ctx->cuda, "bnb4_dequantize");
    return st != BNB4_OK ? st : bnb4_cuda_launch_dequantize(ctx->cuda, q, dt, dst);
}

/* The outputs of the matmuls enqueued last, by every context of the process (cuda_outputs.h). */
static bnb4_output_log g_outputs;

/* The matmul on the path the router picks. Past the pipe kernel's m (bnb4_cuda_pipe_chunks) it runs as matmuls of
 * bnb4_cuda_pipe_max_m() rows at a time, each on the path its own m takes (a last slice of one row: the m = 1 one). */
static bnb4_status launch_gemm(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                               const void *bias, void *y) {
    bnb4_status st = BNB4_OK;
    switch (bnb4_cuda_pick_gemm(s, w, dt, m, x)) {
    case BNB4_CUDA_GEMM_GEMV:
        st = bnb4_cuda_gemv(s, w, dt, m, x, bias, y);
        break;
    case BNB4_CUDA_GEMM_PIPE:
        if (m <= bnb4_cuda_pipe_max_m()) {
            st = bnb4_cuda_gemm_pipe(s, w, dt, m, x, bias, y);
            break;
        }
        for (size_t r0 = 0, rows = bnb4_cuda_pipe_max_m(), es = bnb4_dtype_size(dt); r0 < m && st == BNB4_OK;
             r0 += rows)
            st = launch_gemm(s, w, dt, m - r0 < rows ? m - r0 : rows, static_cast<const char *>(x) + r0 * w->cols * es,
                             bias, static_cast<char *>(y) + r0 * w->rows * es);
        break;
    case BNB4_CUDA_GEMM_TILE:
        st = bnb4_cuda_gemm_tile(s, w, dt, m, x, bias, y);
        break;
    case BNB4_CUDA_GEMM_SIMT:
        st = bnb4_cuda_gemm_simt(s, w, dt, m, x, bias, y);
        break;
    case BNB4_CUDA_GEMM_F32_TILE:
        st = bnb4_cuda_gemm_f32_tile(s, w, m, x, bias, y);
        break;
    default:
        st = bnb4_cuda_gemm_dequant_blas(s, w, dt, m, x, bias, y);
        break;
    }
    return st;
}

bnb4_status bnb4_cuda_gemm(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                           const void *bias, void *y) {
    bnb4_cuda_state *s = ctx->cuda;
    bnb4_status st = use_device(s, "bnb4_gemm");
    if (st != BNB4_OK)
        return st;
    st = launch_gemm(s, w, dt, m, x, bias, y);
    /* (a failed call may have launched part of its work: the next call takes all memory as pending) */
    const uintptr_t y0 = (uintptr_t)y, bytes = m * w->rows * bnb4_dtype_size(dt); /* (validated) */
    const bnb4_range out = st == BNB4_OK ? bnb4_range{y0, y0 + bytes} : bnb4_range{0, UINTPTR_MAX};
    unsigned long long capture = 0;
    const void *tail = nullptr; /* (captured: the node the matmul's last kernel became) */
    if (capture_id(s, &capture, &tail))
        g_outputs.record(s->stream, capture, out, tail);
    else /* (not known whether the call was captured: as if it was, and the stream's direct record is void) */
        g_outputs.record(s->stream, 0, bnb4_range{0, UINTPTR_MAX});
    return st;
}

/* Whether w's packed weights, block scales, nested absmax or nested map may overlap the output of a matmul still
 * running when the next kernel starts (cuda_outputs.h: why only a matmul's y matters; a caller's kernel
 * that lets ours start early must not write them, README, CUDA). */
int bnb4_cuda_weights_may_be_pending(bnb4_cuda_state *s, const bnb4_qtensor *w) {
    unsigned long long capture = 0;
    if (!capture_id(s, &capture))
        return 1;
    const size_t n = w->rows * w->cols, nblocks = bnb4_div_up(n, w->blocksize);
    const uintptr_t packed = (uintptr_t)w->packed, scales = w->absmax ? (uintptr_t)w->absmax : (uintptr_t)w->nested.codes;
    const uintptr_t map = w->absmax ? 0 : (uintptr_t)w->nested.code;
    const uintptr_t nabs = w->absmax ? 0 : (uintptr_t)w->nested.absmax;
    const size_t n_nabs = w->absmax ? 0 : bnb4_div_up(nblocks, w->nested.blocksize);
    const bnb4_range parts[4] = {{packed, packed + bnb4_div_up(n, 2)},
                                 {scales, scales + (w->absmax ? nblocks * sizeof(float) : nblocks)},
                                 {map, map ? map + 256 * sizeof(float) : 0},
                                 {nabs, nabs + n_nabs * sizeof(float)}};
    return g_outputs.may_overlap(s->stream, capture, parts, 4);
}

/* Whether a matmul's activations (bytes at x) may still be being written when its kernel starts, for kernels that
 * would read them before their griddepcontrol.wait: unless the call is captured right after a matmul of ours
 * (the capture's one open node is the one that matmul left) whose output is no part of x - the caller's kernels
 * write activations, and one of theirs may let ours start before its writes are visible (cuda_outputs.h). */
int bnb4_cuda_activations_may_be_pending(bnb4_cuda_state *s, const void *x, size_t bytes) {
    unsigned long long capture = 0;
    const void *tail = nullptr;
    if (!capture_id(s, &capture, &tail) || !tail || !g_outputs.our_node(capture, tail))
        return 1;
    const bnb4_range part{(uintptr_t)x, (uintptr_t)x + bytes};
    return g_outputs.may_overlap(s->stream, capture, &part, 1);
}

const char *bnb4_cuda_kernel_name(bnb4_ctx *ctx, bnb4_op op, bnb4_dtype dt, size_t m) {
    switch (op) {
    case BNB4_OP_QUANTIZE:
        return dt == BNB4_F32 ? "quantize_4bit_f32__cuda" : dt == BNB4_F16 ? "quantize_4bit_f16__cuda"
                                                                          : "quantize_4bit_bf16__cuda";
    case BNB4_OP_QUANTIZE_NESTED:
        return "quantize_nested_8bit__cuda";
    case BNB4_OP_DEQUANTIZE:
        return dt == BNB4_F32 ? "dequantize_4bit_f32__cuda" : dt == BNB4_F16 ? "dequantize_4bit_f16__cuda"
                                                                            : "dequantize_4bit_bf16__cuda";
    case BNB4_OP_GEMV:
        m = 1;
        /* fall through */
    case BNB4_OP_GEMM:
        break;
    }
    /* The names of the fast paths, for an aligned tensor with K % blocksize == 0 (odd shapes take the
     * tensor-core or SIMT kernel, or dequantize + cuBLAS; with BNB4_CUDA_GEMV_KERNEL=table, f16/bf16
     * plain-absmax tensors of more than BNB4_CUDA_GEMV_PLAIN_MAX_N rows take the tensor-core kernel at
     * m = 1 too; on sm_90 weights of BNB4_CUDA_PIPE_M1_MIN_WEIGHTS or more take the pipe kernel at m = 1;
     * layouts outside its TMA variant's, nested absmax at m = 9..16 but at blocksize 64 (pipe_use_natural), and
     * plain absmax at m = 9..16 where
     * narrow tiles apply (pipe_use_narrow) or on weights past 5 x 2^24 elements whose tiles the grid shares in
     * short runs (pipe_prefer_postscale) take the mma.sync math where the name says wgmma; on compute
     * capability 9.0
     * from an sm_90a build, m = BNB4_CUDA_TILE_MIN_M..BNB4_CUDA_TILE_MAX_M takes the tile kernel on
     * weights of BNB4_CUDA_TILE_MIN_WEIGHTS or more and on smaller ones whose tiles fill the grid, else
     * dequantize + cuBLAS; but to m = BNB4_CUDA_PIPE_CHUNKS_MAX_M on weights of BNB4_CUDA_PIPE_CHUNKS_MIN_WEIGHTS
     * and BNB4_CUDA_PIPE_CHUNKS_MIN_ROWS or more the pipe kernel's matmuls of 64 rows where the tile kernel does
     * not take m, and at m = 65..72 before it: bnb4_cuda_pipe_chunks).
     * gemv_4bit_<dt>__cuda names both CUDA-core kernels of cuda_gemv.cu. */
    if (m <= bnb4_cuda_gemv_max_m()) /* (its 66 KB of shared memory: every device of compute capability 8.0 on) */
        return dt == BNB4_F32 ? "gemv_4bit_f32__cuda" : dt == BNB4_F16 ? "gemv_4bit_f16__cuda" : "gemv_4bit_bf16__cuda";
    if (dt == BNB4_F32)
        return m <= bnb4_cuda_simt_max_m(dt)                           ? "gemm_4bit_f32__simt"
               : ctx->cuda && bnb4_cuda_f32_tile_enabled(ctx->cuda, m) ? "gemm_4bit_f32__simt_tile"
                                                                       : "dequantize_4bit_f32+cublas_sgemm";
    if (ctx->cuda && bnb4_cuda_tile_enabled(ctx->cuda, m))
        return dt == BNB4_F16 ? "gemm_4bit_f16__tile_wgmma_m64nNk16" : "gemm_4bit_bf16__tile_wgmma_m64nNk16";
    if (m <= bnb4_cuda_pipe_max_m() && ctx->cuda && bnb4_cuda_pipe_wgmma(ctx->cuda, m))
        return dt == BNB4_F16 ? "gemm_4bit_f16__pipe_wgmma_m64nNk16" : "gemm_4bit_bf16__pipe_wgmma_m64nNk16";
    if (ctx->cuda ? bnb4_cuda_pipe_takes(ctx->cuda, m) : m <= bnb4_cuda_pipe_max_m())
        return dt == BNB4_F16 ? "gemm_4bit_f16__pipe_mma_m16n8k16" : "gemm_4bit_bf16__pipe_mma_m16n8k16";
    if (m <= BNB4_CUDA_SIMT_MAX_M)
        return dt == BNB4_F16 ? "gemm_4bit_f16__simt" : "gemm_4bit_bf16__simt";
    return dt == BNB4_F16 ? "dequantize_4bit_f16+cublas_gemm" : "dequantize_4bit_bf16+cublas_gemm";
}
