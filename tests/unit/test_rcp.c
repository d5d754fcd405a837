/* Exhaustive proof of the rcp.approx.ftz.f32 emulation (src/format/bnb4_rcp.c) against the table
 * measured on an H100: (a) bnb4_rcp_approx_diff equals the table for all 2^23 mantissas; (b)
 * bnb4_rcp_approx_f32 equals the IEEE quotient 1.0f/x nudged by the table, scaled and flushed, for
 * every mantissa at exponents from 2^-126 to 2^127, both signs, plus zeros, subnormals, infinities
 * and NaNs; (c) prints the size of the compiled-in data. Exit status 0 only if all checks pass.
 *
 * Build and run (from the repository root; the table path is argv[1]):
 *   gcc -std=c11 -O2 -Isrc/format tests/unit/test_rcp.c src/format/bnb4_rcp*.c -lz -lm -o test_rcp
 *   ./test_rcp tests/data/rcp_approx_diff.i8.gz
 */
#include "bnb4_rcp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define NUM_MANTISSAS (1u << 23)

static uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static float bits_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

static long failures;

static void check_bits(const char *what, float x, float got, uint32_t want)
{
    if (float_bits(got) == want) return;
    if (failures < 20)
        fprintf(stderr, "FAIL %s: x=%a (0x%08x) got 0x%08x want 0x%08x\n", what, (double)x,
                (unsigned)float_bits(x), (unsigned)float_bits(got), (unsigned)want);
    failures++;
}

static int load_table(const char *path, signed char *table)
{
    gzFile gz = gzopen(path, "rb");
    if (!gz) { fprintf(stderr, "cannot open %s\n", path); return -1; }
    int n = gzread(gz, table, NUM_MANTISSAS);
    char extra;
    int more = gzread(gz, &extra, 1);
    gzclose(gz);
    if (n != (int)NUM_MANTISSAS || more != 0) {
        fprintf(stderr, "%s: expected exactly %u bytes\n", path, NUM_MANTISSAS);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "tests/data/rcp_approx_diff.i8.gz";
    signed char *table = malloc(NUM_MANTISSAS);
    if (!table || load_table(path, table) != 0) return 2;

    /* (a) the encoding equals the measured table */
    long diff_mismatch = 0;
    for (uint32_t m = 0; m < NUM_MANTISSAS; m++)
        if (bnb4_rcp_approx_diff(m) != table[m]) {
            if (diff_mismatch < 10) fprintf(stderr, "FAIL diff m=0x%06x got %d want %d\n",
                                            (unsigned)m, bnb4_rcp_approx_diff(m), table[m]);
            diff_mismatch++;
        }
    failures += diff_mismatch;

    /* (b) the float function, every mantissa at several exponents. The reference is the IEEE
     * quotient 1.0f/x (round to nearest) nudged by the table, scaled with ldexpf, flushed. */
    static const int exponents[] = {127, 1, 2, 100, 126, 128, 200, 252, 253, 254};
    long float_checks = 0;
    for (uint32_t m = 0; m < NUM_MANTISSAS; m++) {
        float one_m = bits_float(0x3f800000u | m);
        float t = bits_float((uint32_t)((int32_t)float_bits(1.0f / one_m) + table[m]));
        for (size_t k = 0; k < sizeof exponents / sizeof exponents[0]; k++) {
            int e = exponents[k];
            float x = bits_float(((uint32_t)e << 23) | m);
            float want = ldexpf(t, -(e - 127));
            if (fabsf(want) < 0x1p-126f) want = 0.0f; /* flush to zero */
            check_bits("rcp", x, bnb4_rcp_approx_f32(x), float_bits(want));
            check_bits("rcp(-x)", -x, bnb4_rcp_approx_f32(-x), float_bits(want) | 0x80000000u);
            float_checks += 2;
        }
    }

    /* special inputs */
    static const uint32_t flushed_inputs[] = {0x00000000u, 0x00000001u, 0x00400000u, 0x007fffffu};
    for (size_t k = 0; k < 4; k++) {
        float x = bits_float(flushed_inputs[k]);
        check_bits("rcp(+0/subnormal)", x, bnb4_rcp_approx_f32(x), 0x7f800000u);
        check_bits("rcp(-0/subnormal)", -x, bnb4_rcp_approx_f32(-x), 0xff800000u);
    }
    check_bits("rcp(+inf)", INFINITY, bnb4_rcp_approx_f32(INFINITY), 0x00000000u);
    check_bits("rcp(-inf)", -INFINITY, bnb4_rcp_approx_f32(-INFINITY), 0x80000000u);
    check_bits("rcp(1)", 1.0f, bnb4_rcp_approx_f32(1.0f), 0x3f800000u);
    check_bits("rcp(2^-126)", 0x1p-126f, bnb4_rcp_approx_f32(0x1p-126f), float_bits(0x1p126f));
    check_bits("rcp(2^126)", 0x1p126f, bnb4_rcp_approx_f32(0x1p126f), float_bits(0x1p-126f));
    check_bits("rcp(1.5*2^126)", 0x1.8p126f, bnb4_rcp_approx_f32(0x1.8p126f), 0u);
    check_bits("rcp(FLT_MAX)", 0x1.fffffep127f, bnb4_rcp_approx_f32(0x1.fffffep127f), 0u);
    check_bits("rcp(-FLT_MAX)", -0x1.fffffep127f, bnb4_rcp_approx_f32(-0x1.fffffep127f), 0x80000000u);
    static const uint32_t nan_inputs[] = {0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7fffffffu};
    for (size_t k = 0; k < 4; k++) {
        float r = bnb4_rcp_approx_f32(bits_float(nan_inputs[k]));
        if (!isnan(r)) { fprintf(stderr, "FAIL rcp(NaN 0x%08x) not NaN\n", (unsigned)nan_inputs[k]); failures++; }
    }

    printf("rcp: %u mantissas, %ld diff mismatches, %ld float checks; encoding size %zu bytes\n",
           NUM_MANTISSAS, diff_mismatch, float_checks, bnb4_rcp_encoding_size_bytes());
    printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
    free(table);
    return failures ? 1 : 0;
}
