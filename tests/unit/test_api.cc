// test_api.cc - the public API's contract: version, status strings, contexts, size helpers, tables,
// and a bad-argument matrix over every entry point (each bad call returns the documented status,
// leaves a message in bnb4_last_error(), and writes nothing).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "bnb4.h"
#include "test_util.h"

using namespace bnb4test;

TEST(Api, Version) {
    const std::string expect = std::to_string(BNB4_VERSION_MAJOR) + "." + std::to_string(BNB4_VERSION_MINOR) + "." +
                               std::to_string(BNB4_VERSION_PATCH);
    EXPECT_EQ(expect, bnb4_version_string());
    EXPECT_EQ((unsigned)BNB4_VERSION_NUMBER, bnb4_version_number());
}

TEST(Api, StatusStringsNeverNull) {
    for (int s = -3; s < 20; s++) {
        const char *str = bnb4_status_string((bnb4_status)s);
        ASSERT_NE(str, nullptr);
        EXPECT_GT(std::strlen(str), 0u);
    }
    EXPECT_STREQ("success", bnb4_status_string(BNB4_OK));
}

TEST(Api, Contexts) {
    bnb4_ctx_params p;
    bnb4_ctx_params_default(&p);
    EXPECT_EQ(BNB4_DEVICE_CPU, p.device);
    EXPECT_EQ(0, p.num_threads);
    EXPECT_EQ(nullptr, p.stream);
    bnb4_ctx *ctx = nullptr;
    ASSERT_EQ(BNB4_OK, bnb4_ctx_create(&p, &ctx));
    ASSERT_NE(nullptr, ctx);
    bnb4_ctx_destroy(ctx);
    bnb4_ctx_destroy(nullptr);
    bnb4_ctx_params_default(nullptr);

    EXPECT_EQ(BNB4_ERR_INVALID_ARGUMENT, bnb4_ctx_create(nullptr, &ctx));
    EXPECT_EQ(BNB4_ERR_INVALID_ARGUMENT, bnb4_ctx_create(&p, nullptr));
    bnb4_ctx_params bad = p;
    bad.device = (bnb4_device)7;
    ctx = nullptr;
    EXPECT_EQ(BNB4_ERR_INVALID_ARGUMENT, bnb4_ctx_create(&bad, &ctx));
    EXPECT_EQ(nullptr, ctx);
    bad = p;
    bad.num_threads = -1;
    EXPECT_EQ(BNB4_ERR_INVALID_ARGUMENT, bnb4_ctx_create(&bad, &ctx));
    EXPECT_EQ(nullptr, ctx);

    // CUDA: unsupported when not built, a device error without a GPU, fine with one.
    bnb4_ctx_params cu = p;
    cu.device = BNB4_DEVICE_CUDA;
    const bnb4_status st = bnb4_ctx_create(&cu, &ctx);
    if (st == BNB4_OK) {
        EXPECT_GT(bnb4_cuda_device_count(), 0);
        bnb4_ctx_destroy(ctx);
    } else {
        EXPECT_TRUE(st == BNB4_ERR_UNSUPPORTED || st == BNB4_ERR_DEVICE) << bnb4_status_string(st);
        EXPECT_EQ(nullptr, ctx);
        EXPECT_GT(std::strlen(bnb4_last_error()), 0u);
        std::printf("[bnb4] CUDA context: %s (%s)\n", bnb4_status_string(st), bnb4_last_error());
    }
}

TEST(Api, SizeHelpers) {
    size_t out = 0;
    EXPECT_EQ(BNB4_OK, bnb4_packed_bytes(7, &out));
    EXPECT_EQ(4u, out);
    EXPECT_EQ(BNB4_OK, bnb4_packed_bytes(SIZE_MAX, &out));
    EXPECT_EQ(SIZE_MAX / 2 + 1, out);
    EXPECT_EQ(BNB4_OK, bnb4_absmax_count(65, 64, &out));
    EXPECT_EQ(2u, out);
    EXPECT_EQ(BNB4_OK, bnb4_absmax_count(SIZE_MAX, 32, &out));
    EXPECT_EQ(SIZE_MAX / 32 + 1, out);
    EXPECT_EQ(BNB4_ERR_INVALID_ARGUMENT, bnb4_absmax_count(5, 0, &out));
    EXPECT_EQ(BNB4_ERR_INVALID_ARGUMENT, bnb4_packed_bytes(5, nullptr));
    for (size_t bs = 1; bs <= 8192; bs++)
        EXPECT_EQ(bs >= 32 && bs <= 4096 && (bs & (bs - 1)) == 0, bnb4_blocksize_supported(bs) != 0) << bs;
    EXPECT_EQ(4u, bnb4_dtype_size(BNB4_F32));
    EXPECT_EQ(2u, bnb4_dtype_size(BNB4_BF16));
    EXPECT_EQ(0u, bnb4_dtype_size((bnb4_dtype)9));
}

TEST(Api, CodebooksMatchSpec) {
    // ../shared/spec/format.md, section 1: float32 bit patterns.
    const uint32_t nf4[16] = {0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f,
                              0xbdba7871, 0x00000000, 0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a,
                              0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000};
    const uint32_t fp4[8] = {0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000,
                             0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000};
    for (int i = 0; i < 16; i++) {
        EXPECT_EQ(nf4[i], f32_bits(bnb4_codebook(BNB4_NF4)[i])) << i;
        EXPECT_EQ(nf4[i], f32_bits(bnb4_quant_map(BNB4_NF4)[i])) << i;
        const uint32_t f = fp4[i & 7] | (i >= 8 ? 0x80000000u : 0u);
        EXPECT_EQ(f, f32_bits(bnb4_codebook(BNB4_FP4)[i])) << i;  // code 8 decodes to -0.0 (CUDA)
        EXPECT_EQ(i == 8 ? 0u : f, f32_bits(bnb4_quant_map(BNB4_FP4)[i])) << i;  // stored map: +0.0
    }
    EXPECT_EQ(nullptr, bnb4_codebook((bnb4_quant_type)0));
}

TEST(Api, NestedCodeMatchesSpec) {
    const float *c = bnb4_nested_code();
    EXPECT_EQ(0xbf7e3333u, f32_bits(c[0]));   // -0.99296874: there is no -1.0
    EXPECT_EQ(0xbdc9eb85u, f32_bits(c[64]));
    EXPECT_EQ(0x00000000u, f32_bits(c[127]));
    EXPECT_EQ(0x3513a3b7u, f32_bits(c[128]));
    EXPECT_EQ(0x3f800000u, f32_bits(c[255]));
    for (int i = 1; i < 256; i++)
        EXPECT_LT(c[i - 1], c[i]) << i;
    for (int i = 128; i < 255; i++)
        EXPECT_EQ(f32_bits(c[i]), f32_bits(-c[254 - i])) << i;
}

TEST(Api, KernelNamesAndFeatures) {
    for (int op = BNB4_OP_QUANTIZE; op <= BNB4_OP_GEMM; op++)
        for (int dt = 0; dt < 3; dt++) {
            const char *name = bnb4_kernel_name(nullptr, (bnb4_op)op, (bnb4_dtype)dt, 1);
            ASSERT_NE(nullptr, name);
            EXPECT_GT(std::strlen(name), 0u);
        }
    EXPECT_STREQ("invalid", bnb4_kernel_name(nullptr, (bnb4_op)99, BNB4_F32, 1));
    EXPECT_NE(nullptr, bnb4_cpu_features());
}

// ---- the bad-argument matrix ----------------------------------------------------------------------

namespace {

struct Fixture {
    static constexpr size_t N = 8, K = 64, n = N * K, bs = 64, nb = n / bs;
    std::vector<float> src = std::vector<float>(n, 0.5f);
    std::vector<uint8_t> packed = std::vector<uint8_t>(n / 2, 0x77);
    std::vector<float> absmax = std::vector<float>(nb, 1.0f);
    std::vector<uint8_t> codes = std::vector<uint8_t>(nb, 200);
    std::vector<float> nested_absmax = std::vector<float>(1, 1.0f);
    std::vector<float> x = std::vector<float>(4 * K, 1.0f);
    bnb4_qtensor plain() const { return bnb4_qtensor_plain(N, K, bs, BNB4_NF4, packed.data(), absmax.data()); }
    bnb4_qtensor nested() const {
        return bnb4_qtensor_nested(N, K, bs, BNB4_NF4, packed.data(), codes.data(), nested_absmax.data(),
                                   bnb4_nested_code(), 0.25f, 256);
    }
};

// Calls op with poisoned outputs; expects `want` and that no output byte changed.
void expect_rejects(const char *what, bnb4_status want, const std::function<bnb4_status(uint8_t *, uint8_t *)> &op) {
    Guarded a(4096), b(4096);
    const bnb4_status got = op(a.data(), b.data());
    EXPECT_EQ(want, got) << what << ": got " << bnb4_status_string(got) << " (" << bnb4_last_error() << ")";
    EXPECT_TRUE(a.untouched() && b.untouched()) << what << ": an output was written";
    EXPECT_GT(std::strlen(bnb4_last_error()), 0u) << what;
}

}  // namespace

TEST(BadArguments, Quantize) {
    Fixture f;
    const void *s = f.src.data();
    auto q = [&](const void *src, int dt, size_t n, size_t bs, int qt, bool null_packed, bool null_absmax) {
        return [=](uint8_t *p, uint8_t *a) {
            return bnb4_quantize(nullptr, src, (bnb4_dtype)dt, n, bs, (bnb4_quant_type)qt, null_packed ? nullptr : p,
                                 null_absmax ? nullptr : (float *)a);
        };
    };
    expect_rejects("src NULL", BNB4_ERR_INVALID_ARGUMENT, q(nullptr, BNB4_F32, 64, 64, BNB4_NF4, false, false));
    expect_rejects("packed NULL", BNB4_ERR_INVALID_ARGUMENT, q(s, BNB4_F32, 64, 64, BNB4_NF4, true, false));
    expect_rejects("absmax NULL", BNB4_ERR_INVALID_ARGUMENT, q(s, BNB4_F32, 64, 64, BNB4_NF4, false, true));
    expect_rejects("n = 0", BNB4_ERR_INVALID_ARGUMENT, q(s, BNB4_F32, 0, 64, BNB4_NF4, false, false));
    expect_rejects("blocksize 0", BNB4_ERR_INVALID_ARGUMENT, q(s, BNB4_F32, 64, 0, BNB4_NF4, false, false));
    for (size_t bs : {1, 16, 48, 63, 96, 8192, 1 << 20})
        expect_rejects("blocksize unsupported", BNB4_ERR_UNSUPPORTED, q(s, BNB4_F32, 64, bs, BNB4_NF4, false, false));
    for (int dt : {-1, 3, 100})
        expect_rejects("unknown dtype", BNB4_ERR_INVALID_ARGUMENT, q(s, dt, 64, 64, BNB4_NF4, false, false));
    for (int qt : {0, 3, -2})
        expect_rejects("unknown quant type", BNB4_ERR_INVALID_ARGUMENT, q(s, BNB4_F32, 64, 64, qt, false, false));
    expect_rejects("n * 4 overflows", BNB4_ERR_OVERFLOW, q(s, BNB4_F32, SIZE_MAX / 2, 64, BNB4_NF4, false, false));
    expect_rejects("n * 2 overflows", BNB4_ERR_OVERFLOW, q(s, BNB4_F16, SIZE_MAX, 64, BNB4_NF4, false, false));
}

TEST(BadArguments, Nested) {
    Fixture f;
    const float *am = f.absmax.data();
    expect_rejects("offset: absmax NULL", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *, uint8_t *b) { return bnb4_nested_offset(nullptr, nullptr, 8, (float *)b); });
    expect_rejects("offset: out NULL", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *, uint8_t *) { return bnb4_nested_offset(nullptr, am, 8, nullptr); });
    expect_rejects("offset: nblocks 0", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *, uint8_t *b) { return bnb4_nested_offset(nullptr, am, 0, (float *)b); });
    expect_rejects("offset: overflow", BNB4_ERR_OVERFLOW,
                   [&](uint8_t *, uint8_t *b) { return bnb4_nested_offset(nullptr, am, SIZE_MAX / 2, (float *)b); });
    auto qn = [&](const float *a, size_t nb, size_t nbs, bool null_codes, bool null_nested) {
        return [=](uint8_t *c, uint8_t *n) {
            return bnb4_quantize_nested(nullptr, a, nb, 0.5f, nbs, null_codes ? nullptr : c,
                                        null_nested ? nullptr : (float *)n);
        };
    };
    expect_rejects("quantize_nested: absmax NULL", BNB4_ERR_INVALID_ARGUMENT, qn(nullptr, 8, 256, false, false));
    expect_rejects("quantize_nested: codes NULL", BNB4_ERR_INVALID_ARGUMENT, qn(am, 8, 256, true, false));
    expect_rejects("quantize_nested: nested NULL", BNB4_ERR_INVALID_ARGUMENT, qn(am, 8, 256, false, true));
    expect_rejects("quantize_nested: nblocks 0", BNB4_ERR_INVALID_ARGUMENT, qn(am, 0, 256, false, false));
    expect_rejects("quantize_nested: nested bs 0", BNB4_ERR_INVALID_ARGUMENT, qn(am, 8, 0, false, false));
    expect_rejects("quantize_nested: overflow", BNB4_ERR_OVERFLOW, qn(am, SIZE_MAX / 2, 256, false, false));
    const bnb4_qtensor plain = f.plain();
    expect_rejects("dequantize_nested: plain tensor", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *a, uint8_t *) { return bnb4_dequantize_nested(nullptr, &plain, (float *)a); });
    const bnb4_qtensor nested = f.nested();
    expect_rejects("dequantize_nested: out NULL", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *, uint8_t *) { return bnb4_dequantize_nested(nullptr, &nested, nullptr); });
}

// Every way a quantized-tensor view can be wrong, with the status each must give.
static std::vector<std::pair<std::string, std::pair<bnb4_status, bnb4_qtensor>>> bad_views(const Fixture &f) {
    std::vector<std::pair<std::string, std::pair<bnb4_status, bnb4_qtensor>>> v;
    auto add = [&](const char *name, bnb4_status st, bnb4_qtensor q) { v.push_back({name, {st, q}}); };
    bnb4_qtensor q = f.plain();
    q.rows = 0;
    add("rows 0", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.plain(), q.cols = 0;
    add("cols 0", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.plain(), q.rows = SIZE_MAX / 2, q.cols = 3;
    add("rows*cols overflows", BNB4_ERR_OVERFLOW, q);
    q = f.plain(), q.rows = (size_t)1 << 40, q.cols = (size_t)1 << 30;
    add("rows*cols*4 overflows", BNB4_ERR_OVERFLOW, q);
    q = f.plain(), q.blocksize = 0;
    add("blocksize 0", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.plain(), q.blocksize = 100;
    add("blocksize 100", BNB4_ERR_UNSUPPORTED, q);
    q = f.plain(), q.blocksize = 16;
    add("blocksize 16", BNB4_ERR_UNSUPPORTED, q);
    q = f.plain(), q.quant_type = (bnb4_quant_type)0;
    add("quant type 0", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.plain(), q.packed = nullptr;
    add("packed NULL", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.plain(), q.absmax = nullptr;
    add("neither absmax nor nested", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.nested(), q.absmax = f.absmax.data();
    add("both absmax and nested", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.plain(), q.nested.blocksize = 256;
    add("plain with a nested field", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.nested(), q.nested.absmax = nullptr;
    add("nested absmax NULL", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.nested(), q.nested.code = nullptr;
    add("nested code NULL", BNB4_ERR_INVALID_ARGUMENT, q);
    q = f.nested(), q.nested.blocksize = 0;
    add("nested blocksize 0", BNB4_ERR_INVALID_ARGUMENT, q);
    return v;
}

TEST(BadArguments, QuantizedTensorViews) {
    Fixture f;
    const bnb4_qtensor plain = f.plain(), nested = f.nested();
    EXPECT_EQ(BNB4_OK, bnb4_qtensor_validate(&plain));
    EXPECT_EQ(BNB4_OK, bnb4_qtensor_validate(&nested));
    EXPECT_EQ(BNB4_ERR_INVALID_ARGUMENT, bnb4_qtensor_validate(nullptr));
    for (const auto &[name, sq] : bad_views(f)) {
        const bnb4_status want = sq.first;
        const bnb4_qtensor q = sq.second;
        EXPECT_EQ(want, bnb4_qtensor_validate(&q)) << name;
        const std::string n = name;
        expect_rejects(("dequantize: " + n).c_str(), want,
                       [&](uint8_t *a, uint8_t *) { return bnb4_dequantize(nullptr, &q, BNB4_F32, a); });
        expect_rejects(("gemv: " + n).c_str(), want,
                       [&](uint8_t *a, uint8_t *) { return bnb4_gemv(nullptr, &q, BNB4_F32, f.x.data(), nullptr, a); });
        expect_rejects(("gemm: " + n).c_str(), want, [&](uint8_t *a, uint8_t *) {
            return bnb4_gemm(nullptr, &q, BNB4_F32, 2, f.x.data(), nullptr, a);
        });
        expect_rejects(("linear: " + n).c_str(), want, [&](uint8_t *a, uint8_t *) {
            return bnb4_linear(nullptr, &q, BNB4_F32, 2, f.x.data(), nullptr, a);
        });
        if (q.absmax == nullptr && want != BNB4_ERR_INVALID_ARGUMENT)
            expect_rejects(("dequantize_nested: " + n).c_str(), want,
                           [&](uint8_t *a, uint8_t *) { return bnb4_dequantize_nested(nullptr, &q, (float *)a); });
    }
}

TEST(BadArguments, Matmul) {
    Fixture f;
    const bnb4_qtensor q = f.plain();
    const void *x = f.x.data();
    using Op = bnb4_status (*)(bnb4_ctx *, const bnb4_qtensor *, bnb4_dtype, size_t, const void *, const void *, void *);
    const std::pair<const char *, Op> ops[] = {{"gemm", bnb4_gemm}, {"linear", bnb4_linear}};
    for (const auto &[name, op] : ops) {
        const std::string n = name;
        expect_rejects((n + ": x NULL").c_str(), BNB4_ERR_INVALID_ARGUMENT,
                       [&](uint8_t *, uint8_t *) { return op(nullptr, &q, BNB4_F32, 2, nullptr, nullptr, nullptr); });
        expect_rejects((n + ": y NULL").c_str(), BNB4_ERR_INVALID_ARGUMENT,
                       [&](uint8_t *, uint8_t *) { return op(nullptr, &q, BNB4_F32, 2, x, nullptr, nullptr); });
        expect_rejects((n + ": m 0").c_str(), BNB4_ERR_INVALID_ARGUMENT,
                       [&](uint8_t *a, uint8_t *) { return op(nullptr, &q, BNB4_F32, 0, x, nullptr, a); });
        expect_rejects((n + ": m*K overflows").c_str(), BNB4_ERR_OVERFLOW,
                       [&](uint8_t *a, uint8_t *) { return op(nullptr, &q, BNB4_F32, SIZE_MAX / 16, x, nullptr, a); });
        expect_rejects((n + ": unknown dtype").c_str(), BNB4_ERR_INVALID_ARGUMENT,
                       [&](uint8_t *a, uint8_t *) { return op(nullptr, &q, (bnb4_dtype)5, 2, x, nullptr, a); });
        expect_rejects((n + ": w NULL").c_str(), BNB4_ERR_INVALID_ARGUMENT,
                       [&](uint8_t *a, uint8_t *) { return op(nullptr, nullptr, BNB4_F32, 2, x, nullptr, a); });
    }
    expect_rejects("gemv: x NULL", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *a, uint8_t *) { return bnb4_gemv(nullptr, &q, BNB4_F32, nullptr, nullptr, a); });
    expect_rejects("gemv: y NULL", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *, uint8_t *) { return bnb4_gemv(nullptr, &q, BNB4_F32, x, nullptr, nullptr); });
    expect_rejects("gemv: unknown dtype", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *a, uint8_t *) { return bnb4_gemv(nullptr, &q, (bnb4_dtype)3, x, nullptr, a); });
    expect_rejects("dequantize: dst NULL", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *, uint8_t *) { return bnb4_dequantize(nullptr, &q, BNB4_F32, nullptr); });
    expect_rejects("dequantize: unknown dtype", BNB4_ERR_INVALID_ARGUMENT,
                   [&](uint8_t *a, uint8_t *) { return bnb4_dequantize(nullptr, &q, (bnb4_dtype)3, a); });
}
