// test_bnb_suite.cc - bitsandbytes' own 4-bit tests (tests/test_functional.py, test_ops.py), ported
// with their sizes and limits (../shared/spec/format.md section 9): statistical error bounds of the
// round trip per blocksize and quant type, compressed statistics, the 8-bit blockwise quantizer used
// for nesting, and odd shapes. These hold for any correct implementation; byte-exactness is checked
// by the conformance suite.
#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

using namespace bnb4test;

namespace {

size_t ceil_div(size_t a, size_t b) { return a / b + (a % b != 0); }

struct Errors {
    double err, relerr;
};

// Mean |A - A'| and mean |A - A'| / (|A| + eps) after a quantize/dequantize round trip.
Errors round_trip(const Array &a, size_t bs, bnb4_quant_type qt, bool nested, double eps) {
    const size_t n = a.size(), nb = ceil_div(n, bs);
    std::vector<uint8_t> packed(ceil_div(n, 2)), codes(nb);
    std::vector<float> absmax(nb), nested_absmax(ceil_div(nb, 256));
    EXPECT_EQ(BNB4_OK, bnb4_quantize(nullptr, a.data(), a.dtype, n, bs, qt, packed.data(), absmax.data()));
    bnb4_qtensor q = bnb4_qtensor_plain(1, n, bs, qt, packed.data(), absmax.data());
    float offset = 0;
    if (nested) {
        EXPECT_EQ(BNB4_OK, bnb4_nested_offset(nullptr, absmax.data(), nb, &offset));
        EXPECT_EQ(BNB4_OK, bnb4_quantize_nested(nullptr, absmax.data(), nb, offset, 256, codes.data(),
                                                nested_absmax.data()));
        q = bnb4_qtensor_nested(1, n, bs, qt, packed.data(), codes.data(), nested_absmax.data(), bnb4_nested_code(),
                                offset, 256);
    }
    Array out = make_array(a.dtype, n);  // output dtype = input dtype, as bitsandbytes requires
    EXPECT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &q, a.dtype, out.data()));
    double err = 0, rel = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = std::fabs((double)a.get(i) - (double)out.get(i));
        err += d;
        rel += d / (std::fabs((double)a.get(i)) + eps);
    }
    return {err / (double)n, rel / (double)n};
}

}  // namespace

// test_4bit_quant: randn(1024, 1024), every dtype, quant type and blocksize; the limits are
// bitsandbytes' mean + 7 sigma.
TEST(BitsandbytesSuite, FourBitQuantErrorBounds) {
    struct Limit { size_t bs; double nf4_err, nf4_rel, fp4_err, fp4_rel; };
    const Limit limits[] = {{32, .06823, .19185, .08956, .24475},   {64, .07332, .20572, .09732, .26278},
                            {128, .07747, .21797, .10391, .27885},  {256, .08105, .22889, .10996, .29331},
                            {512, .08455, .23989, .11575, .30696},  {1024, .08792, .24957, .12157, .32030},
                            {2048, .09135, .25939, .12774, .33329}, {4096, .09507, .26947, .13382, .34584}};
    auto g = rng(101);
    for (bnb4_dtype dt : {BNB4_F32, BNB4_F16, BNB4_BF16}) {
        const Array a = randn(dt, 1024 * 1024, g);
        for (const Limit &l : limits)
            for (bnb4_quant_type qt : {BNB4_NF4, BNB4_FP4}) {
                const Errors e = round_trip(a, l.bs, qt, false, 1e-8);
                EXPECT_LT(e.err, qt == BNB4_NF4 ? l.nf4_err : l.fp4_err) << dtype_name(dt) << " bs " << l.bs << " qt " << qt;
                EXPECT_LT(e.relerr, qt == BNB4_NF4 ? l.nf4_rel : l.fp4_rel) << dtype_name(dt) << " bs " << l.bs;
            }
    }
}

// test_4bit_compressed_stats: plain and nested absmax both keep err < 0.11 and relerr < 0.28.
TEST(BitsandbytesSuite, CompressedStats) {
    auto g = rng(102);
    for (int rep = 0; rep < 3; rep++)
        for (bnb4_dtype dt : {BNB4_F32, BNB4_F16}) {
            const Array a = randn(dt, 1024 * 1024, g);
            for (size_t bs : {32, 64, 128})
                for (bnb4_quant_type qt : {BNB4_NF4, BNB4_FP4})
                    for (bool nested : {false, true}) {
                        const Errors e = round_trip(a, bs, qt, nested, 1e-15);
                        EXPECT_LT(e.err, 0.11) << "bs " << bs << " nested " << nested;
                        EXPECT_LT(e.relerr, 0.28) << "bs " << bs << " nested " << nested;
                    }
        }
}

// The 8-bit blockwise quantizer behind nesting (test_dynamic_blockwise_quantization, signed map):
// randn: mean abs error < 0.011, relative < 0.018.
TEST(BitsandbytesSuite, EightBitBlockwise) {
    auto g = rng(103);
    std::normal_distribution<float> d;
    std::vector<float> a(1024 * 1024);
    for (auto &v : a)
        v = d(g);
    for (size_t bs : {64, 128, 256, 512, 1024, 2048, 4096}) {
        const size_t nb = ceil_div(a.size(), bs);
        std::vector<uint8_t> codes(a.size());
        std::vector<float> absmax(nb), out(a.size());
        ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(nullptr, a.data(), a.size(), 0.0f, bs, codes.data(), absmax.data()));
        // decode through the public nested path: one "4-bit block" per value
        std::vector<uint8_t> packed(a.size() / 2 * 32, 0xff);  // all code 15 = 1.0 (NF4)
        const bnb4_qtensor q = bnb4_qtensor_nested(a.size(), 32, 32, BNB4_NF4, packed.data(), codes.data(),
                                                   absmax.data(), bnb4_nested_code(), 0.0f, bs);
        ASSERT_EQ(BNB4_OK, bnb4_dequantize_nested(nullptr, &q, out.data()));
        double err = 0, rel = 0;
        for (size_t i = 0; i < a.size(); i++) {
            const double e = std::fabs((double)a[i] - out[i]);
            err += e;
            rel += e / (std::fabs((double)a[i]) + 1e-8);
        }
        EXPECT_LT(err / a.size(), 0.011) << bs;
        EXPECT_LT(rel / a.size(), 0.018) << bs;
    }
}

// test_ops.py: non-divisible n, shape (7, bs - 1): the round trip keeps the size and every value is
// finite.
TEST(BitsandbytesSuite, NonDivisibleShapes) {
    auto g = rng(104);
    for (size_t bs : {64, 128, 256})
        for (bnb4_dtype dt : {BNB4_F32, BNB4_F16, BNB4_BF16})
            for (bnb4_quant_type qt : {BNB4_NF4, BNB4_FP4}) {
                const size_t n = 7 * (bs - 1);
                const Array a = randn(dt, n, g);
                std::vector<uint8_t> packed(ceil_div(n, 2));
                std::vector<float> absmax(ceil_div(n, bs));
                ASSERT_EQ(BNB4_OK, bnb4_quantize(nullptr, a.data(), dt, n, bs, qt, packed.data(), absmax.data()));
                const bnb4_qtensor q = bnb4_qtensor_plain(7, bs - 1, bs, qt, packed.data(), absmax.data());
                Array out = make_array(dt, n);
                ASSERT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &q, dt, out.data()));
                for (size_t i = 0; i < n; i++)
                    ASSERT_TRUE(std::isfinite(out.get(i))) << i;
            }
}
