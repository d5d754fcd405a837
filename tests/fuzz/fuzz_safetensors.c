/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors reader (bnb4_st_parse).
 *
 * Any input must either be rejected with a message or yield a handle whose every tensor lies inside
 * the buffer, with nbytes == numel * elem_size, findable by name; ASan/UBSan catch the rest.
 * Build and run: tests/fuzz/run_fuzz.sh safetensors SECONDS (see docs/cli.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bnb4_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bnb4_st_file *f = NULL;
    char err[256];
    if (bnb4_st_parse(data, size, &f, err, sizeof err) != 0) {
        if (f != NULL || err[0] == '\0') abort(); /* failures must explain themselves */
        return 0;
    }
    volatile uint8_t sink = 0;
    const uint8_t *prev_end = NULL;
    for (size_t i = 0; i < bnb4_st_count(f); i++) {
        const bnb4_st_tensor *t = bnb4_st_at(f, i);
        if (!t || t->data < data || t->nbytes > size || t->data + t->nbytes > data + size) abort();
        if (t->numel * t->elem_size != t->nbytes) abort();
        if (bnb4_st_find(f, t->name) != t) abort();
        if (t->nbytes && prev_end && t->data < prev_end) abort(); /* offset order, no overlap */
        if (t->nbytes) prev_end = t->data + t->nbytes;
        for (size_t k = 0; k < t->nbytes; k++) sink ^= t->data[k];
        for (size_t d = 0; d < t->ndim; d++) sink ^= (uint8_t)t->shape[d];
    }
    for (size_t i = 0; i < bnb4_st_metadata_count(f); i++)
        if (bnb4_st_metadata(f, bnb4_st_metadata_key(f, i)) == NULL) abort();
    (void)sink;
    bnb4_st_close(f);
    return 0;
}
