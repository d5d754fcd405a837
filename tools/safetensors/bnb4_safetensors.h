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
/* Rank of a dtype in the Rust crate's Dtype order (BOOL=0 ... U64), -1 when unknown. */
int bnb4_st_dtype_rank(const char *dtype);
/* Total size of the file / buffer in bytes. */
uint64_t bnb4_st_file_size(const bnb4_st_file *f);
/* Tells the kernel a tensor's pages are no longer needed (mmap'd files only; a no-op otherwise), so
 * streaming through a large model keeps the resident set near one tensor. The data stays readable
 * (it is paged in again on access). */
void bnb4_st_release(const bnb4_st_file *f, const bnb4_st_tensor *t);
/* The same for any byte range of the file's data (whole pages inside [p, p + n) only). */
void bnb4_st_release_range(const bnb4_st_file *f, const void *p, size_t n);

/* ---- writer ---------------------------------------------------------------------------------------
 * Writes a safetensors file atomically: the bytes go to a temporary file in the target's directory,
 * which commit flushes (fsync), renames over `path` and makes durable (fsync of the directory); abort,
 * or any error, removes it. Usage:
 *
 *   bnb4_st_writer_create(path) -> add_metadata / add / add_late ... -> layout
 *   -> pwrite (any order, any thread) and set_late -> commit   (or abort at any point)
 *
 * Layout: tensors declared with `add` are ordered as the Python/Rust safetensors writer orders them
 * (dtype rank descending, then name), so alignment is the same as in files it writes; `add_late`
 * tensors (small U8 blobs whose bytes are known only at the end, like quant_state) follow them, by
 * name. The header is reserved at layout time for the largest late sizes and padded with spaces. */
typedef struct bnb4_st_writer bnb4_st_writer;
int bnb4_st_writer_create(const char *path, bnb4_st_writer **out, char *err, size_t errlen);
const char *bnb4_st_writer_temp_path(const bnb4_st_writer *w);
int bnb4_st_writer_add_metadata(bnb4_st_writer *w, const char *key, const char *value, char *err, size_t errlen);
/* Declares a tensor; *id receives its handle for pwrite. */
int bnb4_st_writer_add(bnb4_st_writer *w, const char *name, const char *dtype, size_t ndim, const uint64_t *shape,
                       size_t *id, char *err, size_t errlen);
/* Declares a U8 tensor of at most max_nbytes bytes, given later with set_late (shape [n]). */
int bnb4_st_writer_add_late(bnb4_st_writer *w, const char *name, size_t max_nbytes, size_t *id, char *err,
                            size_t errlen);
int bnb4_st_writer_layout(bnb4_st_writer *w, char *err, size_t errlen);
/* Bytes of tensor id, and the total of the data section once laid out (late tensors at their maximum). */
uint64_t bnb4_st_writer_nbytes(const bnb4_st_writer *w, size_t id);
/* Writes n bytes at byte offset `off` of tensor id. Thread-safe after layout. */
int bnb4_st_writer_pwrite(bnb4_st_writer *w, size_t id, uint64_t off, const void *data, size_t n, char *err,
                          size_t errlen);
int bnb4_st_writer_set_late(bnb4_st_writer *w, size_t id, const void *data, size_t n, char *err, size_t errlen);
/* Finishes the file; checks that every byte of every tensor was written. Frees w in every case (on
 * failure the temporary file is removed). */
int bnb4_st_writer_commit(bnb4_st_writer *w, char *err, size_t errlen);
void bnb4_st_writer_abort(bnb4_st_writer *w); /* NULL ok */

#ifdef __cplusplus
}
#endif
#endif /* BNB4_SAFETENSORS_H */
