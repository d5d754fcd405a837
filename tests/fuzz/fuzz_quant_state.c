/*
 * fuzz_quant_state.c - libFuzzer target for bitsandbytes' quant_state blob parser and the writer.
 *
 * Properties: parsing never crashes and explains failures; whatever parses is re-formatted exactly
 * as bitsandbytes would write it and that text parses back to the same state; bnb4_py_float_repr of
 * the input's first 8 bytes (as a double) reads back to the same double.
 * Build and run: tests/fuzz/run_fuzz.sh quant_state SECONDS (see docs/cli.md).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bnb4_quant_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 8) {
        double d;
        memcpy(&d, data, 8);
        char buf[32];
        int n = bnb4_py_float_repr(d, buf);
        if (n <= 0 || n >= 32 || (size_t)n != strlen(buf)) abort();
        if (isfinite(d) && strtod(buf, NULL) != d) abort();
    }
    bnb4_quant_state qs, again;
    char err[256];
    if (bnb4_qs_parse(data, size, "fuzz", &qs, err, sizeof err) != 0) {
        if (err[0] == '\0') abort();
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    if (!isfinite(qs.nested_offset) && qs.nested) return 0; /* NaN/Infinity are not JSON for jansson */
    if (bnb4_qs_format(&qs, &text, &len, err, sizeof err) != 0) abort();
    if (bnb4_qs_parse(text, len, "fuzz", &again, err, sizeof err) != 0) abort();
    if (again.quant_type != qs.quant_type || again.blocksize != qs.blocksize || again.ndim != qs.ndim ||
        again.numel != qs.numel || again.nested != qs.nested || strcmp(again.dtype, qs.dtype) != 0 ||
        memcmp(again.shape, qs.shape, sizeof qs.shape) != 0)
        abort();
    if (qs.nested && (again.nested_blocksize != qs.nested_blocksize || again.nested_offset != qs.nested_offset))
        abort();
    free(text);
    return 0;
}
