/*
 * bnb4_safetensors.h - a validating reader (and, further down, writer) for the safetensors format.
 *
 * The bnb4 command reads Hugging Face checkpoints through this library and nothing else. Layout of a
 * file: an 8-byte little-endian header length H, H bytes of UTF-8 JSON (an object mapping tensor names
 * to {"dtype", "shape", "data_offsets": [begin, end]} plus an optional "__metadata__" object of
 * strings), then the data section that the offsets index into.
 *
 * Everything is validated before a handle is returned: header length within the file and under a cap,
 * a JSON object (duplicate keys rejected, parsed by jansson), known dtypes, non-negative integer shapes,
 * offsets inside the data section, byte size == numel * element size (overflow-checked), no two tensors
 * overlapping, metadata values all strings. On failure the functions return non-zero and write a
 * message naming the file and the problem into err (never a crash, never a partial handle).
 *
 * A handle is immutable after opening: several threads may read it at once.
 */
#ifndef BNB4_SAFETENSORS_H
#define BNB4_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bnb4_st_tensor {
    const char *name;       /* tensor key */
    const char *dtype;      /* safetensors dtype tag as in the file: "F32", "F16", "BF16", "F64", "U8", "I64", ... */
    size_t elem_size;       /* bytes per element (1 for U8/BOOL/I8 ...) */
    size_t ndim;
    const uint64_t *shape;  /* ndim entries */
    uint64_t numel;         /* product of shape (1 for ndim 0) */
    const uint8_t *data;    /* numel * elem_size bytes inside the file (possibly unaligned: memcpy before use) */
    size_t nbytes;
} bnb4_st_tensor;

typedef struct bnb4_st_file bnb4_st_file;

/* 0 on success; on failure non-zero and a message naming the file and the problem in err. */
int bnb4_st_open(const char *path, bnb4_st_file **out, char *err, size_t errlen);             /* mmap */
int bnb4_st_parse(const void *buf, size_t size, bnb4_st_file **out, char *err, size_t errlen); /* borrows buf */
size_t bnb4_st_count(const bnb4_st_file *f);
const bnb4_st_tensor *bnb4_st_at(const bnb4_st_file *f, size_t i);   /* in file (offset) order */
const bnb4_st_tensor *bnb4_st_find(const bnb4_st_file *f, const char *name);  /* NULL if absent */
const char *bnb4_st_metadata(const bnb4_st_file *f, const char *key); /* __metadata__ string or NULL */
void bnb4_st_close(bnb4_st_file *f);  /* NULL ok */

/* ---- additions ---------------------------------------------------------------------------------- */

/* Largest header accepted (the Rust safetensors crate uses the same 100 MB limit). */
#define BNB4_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

/* Like bnb4_st_parse, but error messages name `label` (e.g. a path) instead of "<buffer>". */
int bnb4_st_parse_named(const void *buf, size_t size, const char *label, bnb4_st_file **out, char *err,
                        size_t errlen);
/* The path or label the handle was opened with. */
const char *bnb4_st_path(const bnb4_st_file *f);
/* Number of __metadata__ entries and the i-th key/value, in the file's order (for copying them). */
size_t bnb4_st_metadata_count(const bnb4_st_file *f);
const char *bnb4_st_metadata_key(const bnb4_st_file *f, size_t i);
const char *bnb4_st_metadata_value(const bnb4_st_file *f, size_t i);
/* Element size in bytes of a safetensors dtype tag, 0 when unknown (or sub-byte, unsupported). */
size_t bnb4_st_dtype_size(const char *dtype);
/* Total size of the file / buffer in bytes. */
uint64_t bnb4_st_file_size(const bnb4_st_file *f);

#ifdef __cplusplus
}
#endif
#endif /* BNB4_SAFETENSORS_H */
