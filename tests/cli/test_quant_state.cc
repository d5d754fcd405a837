// test_quant_state.cc - bitsandbytes' quant_state blob: Python float repr against a recorded oracle,
// exact re-formatting of the blobs bitsandbytes wrote into the conformance checkpoint, and rejection
// of malformed blobs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

extern "C" {
#include "bnb4_quant_state.h"
#include "bnb4_safetensors.h"
}

namespace {

std::string repr(double x) {
    char b[32];
    int n = bnb4_py_float_repr(x, b);
    EXPECT_EQ((size_t)n, std::strlen(b));
    return b;
}

TEST(PyFloatRepr, MatchesRecordedPythonOutput) {
    std::ifstream in(BNB4_CLI_TEST_DATA "/py_float_repr.txt");
    ASSERT_TRUE(in) << "missing " BNB4_CLI_TEST_DATA "/py_float_repr.txt";
    std::string line;
    size_t n = 0, bad = 0;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string hex, want;
        ls >> hex >> want;
        uint64_t bits = std::stoull(hex, nullptr, 16);
        double d;
        std::memcpy(&d, &bits, 8);
        std::string got = repr(d);
        if (got != want && bad++ < 10) ADD_FAILURE() << hex << ": got " << got << ", Python wrote " << want;
        n++;
    }
    EXPECT_EQ(n, 3000u);
    EXPECT_EQ(bad, 0u);
}

TEST(PyFloatRepr, NotationBoundariesAndNonFinite) {
    EXPECT_EQ(repr(0.0001), "0.0001");
    EXPECT_EQ(repr(0.00001), "1e-05");
    EXPECT_EQ(repr(1e15), "1000000000000000.0");
    EXPECT_EQ(repr(1e16), "1e+16");
    EXPECT_EQ(repr(-2.5e-300), "-2.5e-300");
    EXPECT_EQ(repr(-0.0), "-0.0");
    EXPECT_EQ(repr(NAN), "NaN");
    EXPECT_EQ(repr(INFINITY), "Infinity");
    EXPECT_EQ(repr(-INFINITY), "-Infinity");
    EXPECT_EQ(repr((double)0.06151937f), "0.06151936948299408");
}

TEST(QuantState, FormatsAsBitsandbytesWritesIt) {
    bnb4_quant_state qs{};
    qs.quant_type = 2;
    qs.blocksize = 64;
    std::snprintf(qs.dtype, sizeof qs.dtype, "float16");
    qs.ndim = 2;
    qs.shape[0] = 512;
    qs.shape[1] = 256;
    qs.nested = 1;
    qs.nested_blocksize = 256;
    std::snprintf(qs.nested_dtype, sizeof qs.nested_dtype, "float32");
    qs.nested_offset = 0.06151936948299408;
    char *out = nullptr;
    size_t len = 0;
    char err[256];
    ASSERT_EQ(bnb4_qs_format(&qs, &out, &len, err, sizeof err), 0) << err;
    EXPECT_EQ(std::string(out, len),
              "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [512, 256], "
              "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.06151936948299408}");
    std::free(out);
    qs.nested = 0;
    qs.quant_type = 1;
    ASSERT_EQ(bnb4_qs_format(&qs, &out, &len, err, sizeof err), 0) << err;
    EXPECT_EQ(std::string(out, len),
              "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [512, 256]}");
    std::free(out);
}

// Every quant_state blob in bitsandbytes' checkpoint parses, and formatting it again gives the same bytes.
TEST(QuantState, RoundTripsConformanceCheckpointBlobs) {
    std::string path = std::string(BNB4_CONFORMANCE_DIR) + "/checkpoint.safetensors";
    bnb4_st_file *f = nullptr;
    char err[512];
    if (bnb4_st_open(path.c_str(), &f, err, sizeof err) != 0)
        GTEST_SKIP() << "conformance data not available (" << err << "); set BNB4_CONFORMANCE_DIR";
    size_t blobs = 0;
    for (size_t i = 0; i < bnb4_st_count(f); i++) {
        const bnb4_st_tensor *t = bnb4_st_at(f, i);
        if (!std::strstr(t->name, ".quant_state.bitsandbytes__")) continue;
        blobs++;
        bnb4_quant_state qs;
        ASSERT_EQ(bnb4_qs_parse(t->data, t->nbytes, t->name, &qs, err, sizeof err), 0) << err;
        char *out = nullptr;
        size_t len = 0;
        ASSERT_EQ(bnb4_qs_format(&qs, &out, &len, err, sizeof err), 0) << err;
        EXPECT_EQ(std::string(out, len), std::string((const char *)t->data, t->nbytes)) << t->name;
        std::free(out);
    }
    EXPECT_EQ(blobs, 3u);
    bnb4_st_close(f);
}

void expect_bad(const char *json, const char *needle) {
    bnb4_quant_state qs;
    char err[512] = {0};
    EXPECT_NE(bnb4_qs_parse(json, std::strlen(json), "x.weight.quant_state", &qs, err, sizeof err), 0) << json;
    EXPECT_NE(std::strstr(err, "x.weight.quant_state"), nullptr) << err;
    EXPECT_NE(std::strstr(err, needle), nullptr) << "message: " << err << "\nexpected: " << needle;
}

TEST(QuantState, RejectsMalformedBlobs) {
    const char *good = R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [3, 5]})";
    bnb4_quant_state qs;
    char err[256];
    ASSERT_EQ(bnb4_qs_parse(good, std::strlen(good), "q", &qs, err, sizeof err), 0) << err;
    EXPECT_EQ(qs.numel, 15u);
    EXPECT_EQ(qs.nested, 0);
    expect_bad("{\"quant_type\": ", "bad JSON");
    expect_bad("[]", "not a JSON object");
    expect_bad(R"({"quant_type": "int8", "blocksize": 64, "dtype": "float16", "shape": [1]})", "quant_type");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 48, "dtype": "float16", "shape": [1]})", "blocksize");
    expect_bad(R"({"quant_type": "nf4", "blocksize": "64", "dtype": "float16", "shape": [1]})", "blocksize");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [1]})", "dtype");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": []})", "shape");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [0, 4]})", "shape entry");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4294967296, 4294967296, 4294967296]})",
               "overflow");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4], "nested_blocksize": 256})",
               "together");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4], "nested_blocksize": 256, "nested_dtype": "float16", "nested_offset": 0.5})",
               "nested_dtype");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": "x"})",
               "nested_offset");
    expect_bad(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4], "extra": 1})", "unknown key");
    expect_bad(R"({"quant_type": "nf4", "quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4]})",
               "duplicate");
}

}  // namespace
