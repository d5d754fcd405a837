// test_safetensors_read.cc - the safetensors reader: valid files round-trip their fields, and every
// class of malformed header is rejected with a message naming the file and the problem.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <stdlib.h>
#include <unistd.h>

extern "C" {
#include "bnb4_safetensors.h"
}

namespace {

// Builds a safetensors image from a header JSON string and a data section.
std::vector<uint8_t> make_file(const std::string &header, const std::vector<uint8_t> &data) {
    std::vector<uint8_t> buf(8);
    uint64_t n = header.size();
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    buf.insert(buf.end(), header.begin(), header.end());
    buf.insert(buf.end(), data.begin(), data.end());
    return buf;
}

// Expects parsing to fail with a message that contains `needle`.
void expect_reject(const std::vector<uint8_t> &buf, const char *needle) {
    bnb4_st_file *f = nullptr;
    char err[512] = {0};
    int rc = bnb4_st_parse_named(buf.data(), buf.size(), "case.safetensors", &f, err, sizeof err);
    EXPECT_NE(rc, 0) << "accepted; expected error containing: " << needle;
    EXPECT_EQ(f, nullptr);
    EXPECT_NE(std::strstr(err, "case.safetensors"), nullptr) << err;
    EXPECT_NE(std::strstr(err, needle), nullptr) << "message: " << err << "\nexpected: " << needle;
    bnb4_st_close(f);
}

TEST(SafetensorsRead, ParsesFieldsInOffsetOrder) {
    std::mt19937 rng(12345);
    std::printf("seed 12345\n");
    std::vector<uint8_t> data(4 * 6 + 2 * 3 + 8);
    for (auto &b : data) b = (uint8_t)rng();
    // Keys deliberately not in offset order; the reader must list them by offset.
    std::string h =
        R"({"b":{"dtype":"F16","shape":[3],"data_offsets":[24,30]},)"
        R"("__metadata__":{"format":"pt","x":"y"},)"
        R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
        R"("s":{"dtype":"I64","shape":[],"data_offsets":[30,38]},)"
        R"("e":{"dtype":"U8","shape":[0,4],"data_offsets":[38,38]}}   )";
    auto buf = make_file(h, data);
    bnb4_st_file *f = nullptr;
    char err[256];
    ASSERT_EQ(bnb4_st_parse(buf.data(), buf.size(), &f, err, sizeof err), 0) << err;
    ASSERT_EQ(bnb4_st_count(f), 4u);
    const char *order[] = {"a", "b", "s", "e"};
    for (size_t i = 0; i < 4; i++) EXPECT_STREQ(bnb4_st_at(f, i)->name, order[i]);
    EXPECT_EQ(bnb4_st_at(f, 4), nullptr);
    const bnb4_st_tensor *a = bnb4_st_find(f, "a");
    ASSERT_NE(a, nullptr);
    EXPECT_STREQ(a->dtype, "F32");
    EXPECT_EQ(a->elem_size, 4u);
    EXPECT_EQ(a->ndim, 2u);
    EXPECT_EQ(a->shape[0], 2u);
    EXPECT_EQ(a->shape[1], 3u);
    EXPECT_EQ(a->numel, 6u);
    EXPECT_EQ(a->nbytes, 24u);
    size_t data_start = 8 + h.size();
    EXPECT_EQ(a->data, buf.data() + data_start);
    const bnb4_st_tensor *s = bnb4_st_find(f, "s");
    EXPECT_EQ(s->ndim, 0u);
    EXPECT_EQ(s->numel, 1u);
    EXPECT_EQ(s->data, buf.data() + data_start + 30);
    EXPECT_EQ(bnb4_st_find(f, "e")->numel, 0u);
    EXPECT_EQ(bnb4_st_find(f, "zz"), nullptr);
    EXPECT_STREQ(bnb4_st_metadata(f, "format"), "pt");
    EXPECT_STREQ(bnb4_st_metadata(f, "x"), "y");
    EXPECT_EQ(bnb4_st_metadata(f, "nope"), nullptr);
    ASSERT_EQ(bnb4_st_metadata_count(f), 2u);
    EXPECT_STREQ(bnb4_st_metadata_key(f, 0), "format");
    EXPECT_STREQ(bnb4_st_metadata_value(f, 1), "y");
    bnb4_st_close(f);
    bnb4_st_close(nullptr);
}

TEST(SafetensorsRead, RejectsMalformedHeaders) {
    std::vector<uint8_t> d8(8, 0);
    expect_reject(std::vector<uint8_t>(5, 0), "too short");
    expect_reject(make_file("", {}), "header length is 0");
    {
        auto b = make_file("{}", {});
        b[0] = 200;  // header length past the end
        expect_reject(b, "past the end");
        std::vector<uint8_t> huge(16, 0);
        huge[4] = 0x10;  // 2^36 bytes: over the cap
        expect_reject(huge, "exceeds");
    }
    expect_reject(make_file("{\"a\":", {}), "bad JSON");
    expect_reject(make_file("[1,2]", {}), "not an object");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8),
                  "duplicate");
    expect_reject(make_file(R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", d8), "unsupported dtype");
    expect_reject(make_file(R"({"a":{"dtype":3,"shape":[1],"data_offsets":[0,4]}})", d8), "dtype");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", d8), "shape entry");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", d8), "shape entry");
    expect_reject(make_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", d8), "shape");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", d8),
                  "overflow");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,12]}})", d8), "outside");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", d8), "reversed");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", d8), "data_offsets");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", d8), "data_offsets");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", d8), "size mismatch");
    expect_reject(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})", d8),
                  "overlap");
    expect_reject(make_file(R"({"__metadata__":{"k":1}})", d8), "__metadata__");
    expect_reject(make_file(R"({"__metadata__":[]})", d8), "__metadata__");
    expect_reject(make_file(R"({"a":5})", d8), "not an object");
}

TEST(SafetensorsRead, OpenReportsMissingAndBadFiles) {
    bnb4_st_file *f = nullptr;
    char err[512];
    EXPECT_NE(bnb4_st_open("/nonexistent/dir/x.safetensors", &f, err, sizeof err), 0);
    EXPECT_NE(std::strstr(err, "/nonexistent/dir/x.safetensors"), nullptr) << err;
    EXPECT_NE(std::strstr(err, "cannot open"), nullptr) << err;
    EXPECT_NE(bnb4_st_open("/", &f, err, sizeof err), 0);
    EXPECT_NE(std::strstr(err, "not a regular file"), nullptr) << err;
    char path[] = "/tmp/bnb4_st_testXXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    auto img = make_file(R"({"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}})", std::vector<uint8_t>(8, 7));
    ASSERT_EQ(write(fd, img.data(), img.size()), (ssize_t)img.size());
    close(fd);
    ASSERT_EQ(bnb4_st_open(path, &f, err, sizeof err), 0) << err;
    EXPECT_STREQ(bnb4_st_path(f), path);
    EXPECT_EQ(bnb4_st_find(f, "w")->data[7], 7);
    bnb4_st_close(f);
    // Truncated copy: the data section is now too short.
    FILE *fp = std::fopen(path, "wb");
    std::fwrite(img.data(), 1, img.size() - 1, fp);
    std::fclose(fp);
    EXPECT_NE(bnb4_st_open(path, &f, err, sizeof err), 0);
    EXPECT_NE(std::strstr(err, "outside"), nullptr) << err;
    unlink(path);
}

#ifdef BNB4_CONFORMANCE_DIR
TEST(SafetensorsRead, ReadsConformanceFiles) {
    std::string dir = BNB4_CONFORMANCE_DIR;
    std::string path = dir + "/checkpoint.safetensors";
    FILE *probe = std::fopen(path.c_str(), "rb");
    if (!probe) GTEST_SKIP() << "conformance data not found at " << dir << " (set BNB4_CONFORMANCE_DIR)";
    std::fclose(probe);
    for (const char *name : {"checkpoint.safetensors", "checkpoint_source.safetensors", "quantize.safetensors",
                             "double_quant.safetensors", "gemv.safetensors", "checkpoint_expected.safetensors"}) {
        bnb4_st_file *f = nullptr;
        char err[512];
        ASSERT_EQ(bnb4_st_open((dir + "/" + name).c_str(), &f, err, sizeof err), 0) << err;
        EXPECT_GT(bnb4_st_count(f), 0u);
        bnb4_st_close(f);
    }
    bnb4_st_file *f = nullptr;
    char err[512];
    ASSERT_EQ(bnb4_st_open(path.c_str(), &f, err, sizeof err), 0) << err;
    const bnb4_st_tensor *w = bnb4_st_find(f, "0.weight");
    ASSERT_NE(w, nullptr);
    EXPECT_STREQ(w->dtype, "U8");
    ASSERT_EQ(w->ndim, 2u);
    EXPECT_EQ(w->shape[0], 256u * 512 / 2);
    EXPECT_EQ(w->shape[1], 1u);
    EXPECT_STREQ(bnb4_st_metadata(f, "format"), "pt");
    bnb4_st_close(f);
}
#endif

}  // namespace
