// test_safetensors_write.cc - the atomic safetensors writer: exact bytes for a case the Rust crate
// pins down, random round trips through the reader (pwrite in random order, late tensors, metadata),
// and no file left behind on abort or on an incomplete commit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

extern "C" {
#include "bnb4_safetensors.h"
}

namespace {

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/bnb4_stw_XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() {
        DIR *d = opendir(path.c_str());
        if (d) {
            while (dirent *e = readdir(d))
                if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
                    unlink((path + "/" + e->d_name).c_str());
            closedir(d);
        }
        rmdir(path.c_str());
    }
    size_t entries() const {
        size_t n = 0;
        DIR *d = opendir(path.c_str());
        while (dirent *e = readdir(d)) n += std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..");
        closedir(d);
        return n;
    }
};

std::vector<uint8_t> slurp(const std::string &p) {
    FILE *f = std::fopen(p.c_str(), "rb");
    std::vector<uint8_t> v;
    if (!f) return v;
    int c;
    while ((c = std::fgetc(f)) != EOF) v.push_back((uint8_t)c);
    std::fclose(f);
    return v;
}

// The safetensors crate's own test_serialization case: one F32 [1,2,3] tensor "attn.0".
TEST(SafetensorsWrite, MatchesRustCrateBytes) {
    TempDir dir;
    std::string path = dir.path + "/a.safetensors";
    bnb4_st_writer *w = nullptr;
    char err[256];
    ASSERT_EQ(bnb4_st_writer_create(path.c_str(), &w, err, sizeof err), 0) << err;
    uint64_t shape[3] = {1, 2, 3};
    size_t id;
    ASSERT_EQ(bnb4_st_writer_add(w, "attn.0", "F32", 3, shape, &id, err, sizeof err), 0) << err;
    ASSERT_EQ(bnb4_st_writer_layout(w, err, sizeof err), 0) << err;
    float data[6] = {0, 1, 2, 3, 4, 5};
    ASSERT_EQ(bnb4_st_writer_pwrite(w, id, 0, data, sizeof data, err, sizeof err), 0) << err;
    ASSERT_EQ(bnb4_st_writer_commit(w, err, sizeof err), 0) << err;
    const uint8_t want[] = {64,  0,   0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 46,  48,  34,  58,
                            123, 34,  100, 116, 121, 112, 101, 34,  58,  34,  70,  51,  50,  34,  44,  34,  115, 104,
                            97,  112, 101, 34,  58,  91,  49,  44,  50,  44,  51,  93,  44,  34,  100, 97,  116, 97,
                            95,  111, 102, 102, 115, 101, 116, 115, 34,  58,  91,  48,  44,  50,  52,  93,  125, 125,
                            0,   0,   0,   0,   0,   0,   128, 63,  0,   0,   0,   64,  0,   0,   64,  64,  0,   0,
                            128, 64,  0,   0,   160, 64};
    EXPECT_EQ(slurp(path), std::vector<uint8_t>(want, want + sizeof want));
    EXPECT_EQ(dir.entries(), 1u);  // no temporary file left
}

TEST(SafetensorsWrite, RandomRoundTrip) {
    unsigned seed = std::random_device{}();
    std::printf("seed %u\n", seed);
    std::mt19937_64 rng(seed);
    TempDir dir;
    std::string path = dir.path + "/m.safetensors";
    const char *dtypes[] = {"F32", "F16", "BF16", "U8", "I64", "F64", "BOOL", "I8"};
    for (int round = 0; round < 20; round++) {
        bnb4_st_writer *w = nullptr;
        char err[256];
        ASSERT_EQ(bnb4_st_writer_create(path.c_str(), &w, err, sizeof err), 0) << err;
        ASSERT_EQ(bnb4_st_writer_add_metadata(w, "format", "pt", err, sizeof err), 0);
        ASSERT_EQ(bnb4_st_writer_add_metadata(w, "note", "x\"y\\z", err, sizeof err), 0);
        struct T {
            std::string name, dtype;
            std::vector<uint64_t> shape;
            std::vector<uint8_t> bytes;
            bool late;
            size_t id;
        };
        std::vector<T> ts;
        int n = 1 + (int)(rng() % 12);
        for (int i = 0; i < n; i++) {
            T t;
            t.name = "layer." + std::to_string(rng() % 1000) + ".t" + std::to_string(i);
            t.late = rng() % 4 == 0;
            t.dtype = t.late ? "U8" : dtypes[rng() % 8];
            size_t nd = rng() % 4;
            uint64_t numel = 1;
            for (size_t d = 0; d < nd; d++) {
                t.shape.push_back(rng() % 7);
                numel *= t.shape.back();
            }
            if (t.late) t.shape = {numel};
            t.bytes.resize(numel * bnb4_st_dtype_size(t.dtype.c_str()));
            for (auto &b : t.bytes) b = (uint8_t)rng();
            if (t.late) {
                ASSERT_EQ(bnb4_st_writer_add_late(w, t.name.c_str(), t.bytes.size() + rng() % 50, &t.id, err, sizeof err), 0);
            } else {
                ASSERT_EQ(bnb4_st_writer_add(w, t.name.c_str(), t.dtype.c_str(), t.shape.size(), t.shape.data(), &t.id,
                                             err, sizeof err), 0) << err;
                EXPECT_EQ(bnb4_st_writer_nbytes(w, t.id), t.bytes.size());
            }
            ts.push_back(t);
        }
        ASSERT_EQ(bnb4_st_writer_layout(w, err, sizeof err), 0) << err;
        // write fixed tensors in random order, in random pieces
        std::vector<size_t> perm(ts.size());
        for (size_t i = 0; i < perm.size(); i++) perm[i] = i;
        std::shuffle(perm.begin(), perm.end(), rng);
        for (size_t i : perm) {
            T &t = ts[i];
            if (t.late) {
                ASSERT_EQ(bnb4_st_writer_set_late(w, t.id, t.bytes.data(), t.bytes.size(), err, sizeof err), 0) << err;
                continue;
            }
            size_t off = 0;
            while (off < t.bytes.size()) {
                size_t k = 1 + rng() % (t.bytes.size() - off);
                ASSERT_EQ(bnb4_st_writer_pwrite(w, t.id, off, t.bytes.data() + off, k, err, sizeof err), 0) << err;
                off += k;
            }
        }
        ASSERT_EQ(bnb4_st_writer_commit(w, err, sizeof err), 0) << err;
        EXPECT_EQ(dir.entries(), 1u);

        bnb4_st_file *f = nullptr;
        ASSERT_EQ(bnb4_st_open(path.c_str(), &f, err, sizeof err), 0) << err;
        ASSERT_EQ(bnb4_st_count(f), ts.size());
        EXPECT_STREQ(bnb4_st_metadata(f, "format"), "pt");
        EXPECT_STREQ(bnb4_st_metadata(f, "note"), "x\"y\\z");
        for (const T &t : ts) {
            const bnb4_st_tensor *r = bnb4_st_find(f, t.name.c_str());
            ASSERT_NE(r, nullptr) << t.name;
            EXPECT_EQ(std::string(r->dtype), t.dtype);
            ASSERT_EQ(r->ndim, t.shape.size());
            for (size_t d = 0; d < r->ndim; d++) EXPECT_EQ(r->shape[d], t.shape[d]);
            ASSERT_EQ(r->nbytes, t.bytes.size());
            EXPECT_TRUE(r->nbytes == 0 || std::memcmp(r->data, t.bytes.data(), r->nbytes) == 0) << t.name;
        }
        // What the Rust reader demands: contiguous tensors covering the data section exactly, and
        // every tensor aligned to its element size.
        uint64_t file_size = bnb4_st_file_size(f);
        const uint8_t *data0 = bnb4_st_at(f, 0)->data;
        const uint8_t *expect = data0;
        for (size_t i = 0; i < bnb4_st_count(f); i++) {
            const bnb4_st_tensor *r = bnb4_st_at(f, i);
            EXPECT_EQ(r->data, expect) << r->name;
            expect = r->data + r->nbytes;
        }
        std::vector<uint8_t> raw = slurp(path);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = hlen << 8 | raw[i];
        EXPECT_EQ(hlen % 8, 0u);
        EXPECT_EQ(8 + hlen + (uint64_t)(expect - data0), file_size);
        for (size_t i = 0; i < bnb4_st_count(f); i++) {
            const bnb4_st_tensor *r = bnb4_st_at(f, i);
            EXPECT_EQ((uint64_t)(r->data - data0) % r->elem_size, 0u) << "misaligned " << r->name;
        }
        bnb4_st_close(f);
    }
}

TEST(SafetensorsWrite, NothingLeftOnAbortOrIncompleteCommit) {
    TempDir dir;
    std::string path = dir.path + "/x.safetensors";
    char err[256];
    uint64_t shape[1] = {10};
    size_t id;
    bnb4_st_writer *w = nullptr;
    ASSERT_EQ(bnb4_st_writer_create(path.c_str(), &w, err, sizeof err), 0);
    EXPECT_EQ(dir.entries(), 1u);  // the temporary file
    EXPECT_NE(std::strstr(bnb4_st_writer_temp_path(w), dir.path.c_str()), nullptr);
    bnb4_st_writer_abort(w);
    EXPECT_EQ(dir.entries(), 0u);

    ASSERT_EQ(bnb4_st_writer_create(path.c_str(), &w, err, sizeof err), 0);
    ASSERT_EQ(bnb4_st_writer_add(w, "a", "F32", 1, shape, &id, err, sizeof err), 0);
    ASSERT_EQ(bnb4_st_writer_layout(w, err, sizeof err), 0);
    float v[10] = {0};
    ASSERT_EQ(bnb4_st_writer_pwrite(w, id, 0, v, 36, err, sizeof err), 0);
    EXPECT_NE(bnb4_st_writer_pwrite(w, id, 36, v, 8, err, sizeof err), 0);  // past the end
    EXPECT_NE(std::strstr(err, "exceeds"), nullptr) << err;
    EXPECT_NE(bnb4_st_writer_commit(w, err, sizeof err), 0);
    EXPECT_NE(std::strstr(err, "36 of 40 bytes"), nullptr) << err;
    EXPECT_EQ(dir.entries(), 0u);

    ASSERT_EQ(bnb4_st_writer_create(path.c_str(), &w, err, sizeof err), 0);
    ASSERT_EQ(bnb4_st_writer_add(w, "a", "F32", 1, shape, &id, err, sizeof err), 0);
    ASSERT_EQ(bnb4_st_writer_add_late(w, "a", 4, &id, err, sizeof err), 0);
    EXPECT_NE(bnb4_st_writer_layout(w, err, sizeof err), 0);
    EXPECT_NE(std::strstr(err, "duplicate tensor name \"a\""), nullptr) << err;
    bnb4_st_writer_abort(w);
    ASSERT_EQ(bnb4_st_writer_create(path.c_str(), &w, err, sizeof err), 0);
    EXPECT_NE(bnb4_st_writer_add(w, "a", "Q4", 1, shape, &id, err, sizeof err), 0);
    EXPECT_NE(bnb4_st_writer_add(w, "__metadata__", "F32", 1, shape, &id, err, sizeof err), 0);
    bnb4_st_writer_abort(w);
    EXPECT_EQ(dir.entries(), 0u);

    EXPECT_NE(bnb4_st_writer_create("/nonexistent-dir/x.safetensors", &w, err, sizeof err), 0);
    EXPECT_NE(std::strstr(err, "temporary file"), nullptr) << err;
}

}  // namespace
