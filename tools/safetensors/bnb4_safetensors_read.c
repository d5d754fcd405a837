/*
 * bnb4_safetensors_read.c - parsing and validation of safetensors files (see bnb4_safetensors.h).
 *
 * The JSON header is parsed by jansson (duplicate keys rejected, UTF-8 checked, no NUL in strings);
 * this file only checks the structure against the safetensors rules and builds an index: tensors in
 * offset order (the order they are laid out, which is the streaming order for conversion) plus a
 * name-sorted index for lookups. Files are memory-mapped read-only; nothing is copied.
 */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "bnb4_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct bnb4_st_file {
    char *label;               /* path or "<buffer>" */
    const uint8_t *base;       /* whole file / buffer */
    uint64_t size;
    void *map;                 /* mmap'd region to unmap, or NULL when borrowed */
    size_t map_size;
    size_t count;
    bnb4_st_tensor *tensors;   /* offset order */
    size_t *by_name;           /* indices into tensors, sorted by name */
    uint64_t *shapes;          /* pool for every tensor's shape */
    size_t meta_count;
    char **meta_keys;
    char **meta_values;
};

/* Known dtypes, in the order of the Rust crate's Dtype enum (increasing alignment): the writer sorts
 * tensors by descending rank, as safetensors' serialize does. */
static const struct {
    const char *tag;
    size_t size;
} st_dtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
    {"F32", 4},  {"C64", 8}, {"F64", 8}, {"I64", 8},     {"U64", 8},
};

int bnb4_st_dtype_rank(const char *dtype) {
    if (!dtype) return -1;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(dtype, st_dtypes[i].tag) == 0) return (int)i;
    return -1;
}

size_t bnb4_st_dtype_size(const char *dtype) {
    if (!dtype) return 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(dtype, st_dtypes[i].tag) == 0) return st_dtypes[i].size;
    return 0;
}

/* The canonical (static) spelling of a known dtype tag, so tensors need not own a copy. */
static const char *st_dtype_canonical(const char *dtype) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(dtype, st_dtypes[i].tag) == 0) return st_dtypes[i].tag;
    return NULL;
}

static void st_err(char *err, size_t errlen, const char *label, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    int n = snprintf(err, errlen, "%s: ", label ? label : "<buffer>");
    if (n < 0 || (size_t)n >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

void bnb4_st_close(bnb4_st_file *f) {
    if (!f) return;
    if (f->tensors)
        for (size_t i = 0; i < f->count; i++) free((char *)f->tensors[i].name);
    for (size_t i = 0; i < f->meta_count; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->tensors);
    free(f->by_name);
    free(f->shapes);
    free(f->label);
    if (f->map) munmap(f->map, f->map_size);
    free(f);
}

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* Sort helpers: qsort has no context argument, so the comparators see the tensor array via a
 * pointer stored next to each index. */
typedef struct st_sort_item {
    uint64_t begin, end;
    size_t index;
    const char *name;
} st_sort_item;

static int st_cmp_offset(const void *a, const void *b) {
    const st_sort_item *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

static int st_cmp_name(const void *a, const void *b) {
    const st_sort_item *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Reads a JSON integer >= 0 into *out; 0 on success. */
static int st_get_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0) return -1;
    *out = (uint64_t)i;
    return 0;
}

static int st_build(const uint8_t *buf, uint64_t size, const char *label, bnb4_st_file **out, char *err,
                    size_t errlen, bnb4_st_file *f) {
    if (size < 8) {
        st_err(err, errlen, label, "not a safetensors file: %llu bytes, too short for the 8-byte header length",
               (unsigned long long)size);
        return 1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen == 0) {
        st_err(err, errlen, label, "not a safetensors file: header length is 0");
        return 1;
    }
    if (hlen > BNB4_ST_MAX_HEADER) {
        st_err(err, errlen, label, "not a safetensors file: header length %llu exceeds the %llu-byte limit",
               (unsigned long long)hlen, (unsigned long long)BNB4_ST_MAX_HEADER);
        return 1;
    }
    if (hlen > size - 8) {
        st_err(err, errlen, label,
               "not a safetensors file: header length %llu runs past the end of the file (%llu bytes)",
               (unsigned long long)hlen, (unsigned long long)size);
        return 1;
    }
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st_err(err, errlen, label, "bad JSON header at byte %d: %s", jerr.position, jerr.text);
        return 1;
    }
    int rc = 1;
    st_sort_item *items = NULL;
    if (!json_is_object(root)) {
        st_err(err, errlen, label, "bad header: the JSON header is not an object");
        goto done;
    }

    /* First pass: count tensors and shape entries, check metadata. */
    size_t ntensors = 0, nshape = 0, mcount = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                st_err(err, errlen, label, "bad header: __metadata__ is not an object");
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    st_err(err, errlen, label, "bad header: __metadata__ value for \"%s\" is not a string", mk);
                    goto done;
                }
                mcount++;
            }
            continue;
        }
        if (!json_is_object(val)) {
            st_err(err, errlen, label, "bad header: entry \"%s\" is not an object", key);
            goto done;
        }
        json_t *shape = json_object_get(val, "shape");
        if (!json_is_array(shape)) {
            st_err(err, errlen, label, "tensor \"%s\": \"shape\" is missing or not an array", key);
            goto done;
        }
        ntensors++;
        nshape += json_array_size(shape);
    }

    f->count = ntensors;
    f->tensors = calloc(ntensors ? ntensors : 1, sizeof *f->tensors);
    f->by_name = calloc(ntensors ? ntensors : 1, sizeof *f->by_name);
    f->shapes = calloc(nshape ? nshape : 1, sizeof *f->shapes);
    items = calloc(ntensors ? ntensors : 1, sizeof *items);
    f->meta_keys = calloc(mcount ? mcount : 1, sizeof *f->meta_keys);
    f->meta_values = calloc(mcount ? mcount : 1, sizeof *f->meta_values);
    if (!f->tensors || !f->by_name || !f->shapes || !items || !f->meta_keys || !f->meta_values) {
        f->count = 0;
        st_err(err, errlen, label, "out of memory indexing %zu tensors", ntensors);
        goto done;
    }
    /* f->meta_count counts what is owned, so close() frees only filled slots */
    size_t ti = 0, si = 0;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (f->meta_count >= mcount) break;
                char *k = st_strdup(mk), *v = st_strdup(json_string_value(mv));
                if (!k || !v) {
                    free(k);
                    free(v);
                    st_err(err, errlen, label, "out of memory reading __metadata__");
                    goto done;
                }
                f->meta_keys[f->meta_count] = k;
                f->meta_values[f->meta_count] = v;
                f->meta_count++;
            }
            continue;
        }
        json_t *jd = json_object_get(val, "dtype");
        json_t *js = json_object_get(val, "shape");
        json_t *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd)) {
            st_err(err, errlen, label, "tensor \"%s\": \"dtype\" is missing or not a string", key);
            goto done;
        }
        const char *dtype = st_dtype_canonical(json_string_value(jd));
        if (!dtype) {
            st_err(err, errlen, label, "tensor \"%s\": unsupported dtype \"%s\"", key, json_string_value(jd));
            goto done;
        }
        size_t esize = bnb4_st_dtype_size(dtype);
        uint64_t numel = 1;
        size_t nd = json_array_size(js);
        for (size_t d = 0; d < nd; d++) {
            uint64_t dim;
            if (st_get_u64(json_array_get(js, d), &dim) != 0) {
                st_err(err, errlen, label, "tensor \"%s\": shape entry %zu is not a non-negative integer", key, d);
                goto done;
            }
            f->shapes[si + d] = dim;
            if (dim != 0 && numel > UINT64_MAX / dim) {
                /* rejected even if a later dimension is 0, as the Rust reader does (checked_mul) */
                st_err(err, errlen, label, "tensor \"%s\": shape overflows 64 bits", key);
                goto done;
            }
            numel *= dim;
        }
        if (numel > UINT64_MAX / esize || numel * esize > (uint64_t)SIZE_MAX) {
            st_err(err, errlen, label, "tensor \"%s\": byte size overflows", key);
            goto done;
        }
        uint64_t nbytes = numel * esize;
        if (!json_is_array(jo) || json_array_size(jo) != 2) {
            st_err(err, errlen, label, "tensor \"%s\": \"data_offsets\" is missing or not [begin, end]", key);
            goto done;
        }
        uint64_t begin, end;
        if (st_get_u64(json_array_get(jo, 0), &begin) != 0 || st_get_u64(json_array_get(jo, 1), &end) != 0) {
            st_err(err, errlen, label, "tensor \"%s\": data_offsets are not non-negative integers", key);
            goto done;
        }
        if (begin > end) {
            st_err(err, errlen, label, "tensor \"%s\": data_offsets [%llu, %llu] are reversed", key,
                   (unsigned long long)begin, (unsigned long long)end);
            goto done;
        }
        if (end > data_size) {
            st_err(err, errlen, label,
                   "tensor \"%s\": data_offsets [%llu, %llu] lie outside the data section (%llu bytes)", key,
                   (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
            goto done;
        }
        if (end - begin != nbytes) {
            st_err(err, errlen, label,
                   "tensor \"%s\": size mismatch: %s shape holds %llu bytes but data_offsets span %llu", key, dtype,
                   (unsigned long long)nbytes, (unsigned long long)(end - begin));
            goto done;
        }
        char *name = st_strdup(key);
        if (!name) {
            st_err(err, errlen, label, "out of memory");
            goto done;
        }
        bnb4_st_tensor *t = &f->tensors[ti];
        t->name = name;
        t->dtype = dtype;
        t->elem_size = esize;
        t->ndim = nd;
        t->shape = &f->shapes[si];
        t->numel = numel;
        t->data = data + begin;
        t->nbytes = (size_t)nbytes;
        items[ti].begin = begin;
        items[ti].end = end;
        items[ti].index = ti;
        items[ti].name = name;
        ti++;
        si += nd;
    }

    /* Offset order, and no byte shared by two tensors (empty tensors share none). */
    qsort(items, ntensors, sizeof *items, st_cmp_offset);
    uint64_t max_end = 0;
    const char *max_name = NULL;
    for (size_t i = 0; i < ntensors; i++) {
        if (items[i].end > items[i].begin) {
            if (max_name && items[i].begin < max_end) {
                st_err(err, errlen, label, "tensors \"%s\" and \"%s\" overlap in the data section", max_name,
                       items[i].name);
                goto done;
            }
            max_end = items[i].end;
            max_name = items[i].name;
        }
    }
    bnb4_st_tensor *sorted = malloc((ntensors ? ntensors : 1) * sizeof *sorted);
    if (!sorted) {
        st_err(err, errlen, label, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ntensors; i++) sorted[i] = f->tensors[items[i].index];
    free(f->tensors);
    f->tensors = sorted;
    for (size_t i = 0; i < ntensors; i++) {
        items[i].index = i;
        items[i].name = sorted[i].name;
    }
    qsort(items, ntensors, sizeof *items, st_cmp_name);
    for (size_t i = 0; i < ntensors; i++) f->by_name[i] = items[i].index;

    f->base = buf;
    f->size = size;
    *out = f;
    rc = 0;
done:
    free(items);
    json_decref(root);
    return rc;
}

static bnb4_st_file *st_alloc(const char *label) {
    bnb4_st_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->label = st_strdup(label);
    if (!f->label) {
        free(f);
        return NULL;
    }
    return f;
}

int bnb4_st_parse_named(const void *buf, size_t size, const char *label, bnb4_st_file **out, char *err,
                        size_t errlen) {
    if (!label) label = "<buffer>";
    if (!out || (!buf && size)) {
        st_err(err, errlen, label, "invalid argument (NULL pointer)");
        return 1;
    }
    *out = NULL;
    bnb4_st_file *f = st_alloc(label);
    if (!f) {
        st_err(err, errlen, label, "out of memory");
        return 1;
    }
    if (st_build(buf, size, label, out, err, errlen, f) != 0) {
        bnb4_st_close(f);
        return 1;
    }
    return 0;
}

int bnb4_st_parse(const void *buf, size_t size, bnb4_st_file **out, char *err, size_t errlen) {
    return bnb4_st_parse_named(buf, size, "<buffer>", out, err, errlen);
}

int bnb4_st_open(const char *path, bnb4_st_file **out, char *err, size_t errlen) {
    if (!path || !out) {
        st_err(err, errlen, path, "invalid argument (NULL pointer)");
        return 1;
    }
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st_err(err, errlen, path, "cannot open: %s", strerror(errno));
        return 1;
    }
    struct stat stbuf;
    if (fstat(fd, &stbuf) != 0) {
        st_err(err, errlen, path, "cannot stat: %s", strerror(errno));
        close(fd);
        return 1;
    }
    if (!S_ISREG(stbuf.st_mode)) {
        st_err(err, errlen, path, "not a regular file");
        close(fd);
        return 1;
    }
    uint64_t size = (uint64_t)stbuf.st_size;
    if (size < 8) {
        st_err(err, errlen, path, "not a safetensors file: %llu bytes, too short for the 8-byte header length",
               (unsigned long long)size);
        close(fd);
        return 1;
    }
    if (size > (uint64_t)SIZE_MAX) {
        st_err(err, errlen, path, "file too large to map");
        close(fd);
        return 1;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        st_err(err, errlen, path, "cannot mmap: %s", strerror(map_errno));
        return 1;
    }
    bnb4_st_file *f = st_alloc(path);
    if (!f) {
        munmap(map, (size_t)size);
        st_err(err, errlen, path, "out of memory");
        return 1;
    }
    f->map = map;
    f->map_size = (size_t)size;
    if (st_build(map, size, path, out, err, errlen, f) != 0) {
        bnb4_st_close(f);
        return 1;
    }
    return 0;
}

size_t bnb4_st_count(const bnb4_st_file *f) { return f ? f->count : 0; }

const bnb4_st_tensor *bnb4_st_at(const bnb4_st_file *f, size_t i) {
    return (f && i < f->count) ? &f->tensors[i] : NULL;
}

const bnb4_st_tensor *bnb4_st_find(const bnb4_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const bnb4_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *bnb4_st_metadata(const bnb4_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

const char *bnb4_st_path(const bnb4_st_file *f) { return f ? f->label : NULL; }
size_t bnb4_st_metadata_count(const bnb4_st_file *f) { return f ? f->meta_count : 0; }
const char *bnb4_st_metadata_key(const bnb4_st_file *f, size_t i) {
    return (f && i < f->meta_count) ? f->meta_keys[i] : NULL;
}
const char *bnb4_st_metadata_value(const bnb4_st_file *f, size_t i) {
    return (f && i < f->meta_count) ? f->meta_values[i] : NULL;
}
uint64_t bnb4_st_file_size(const bnb4_st_file *f) { return f ? f->size : 0; }

void bnb4_st_release_range(const bnb4_st_file *f, const void *p, size_t n) {
    if (!f || !f->map || !p || n == 0) return;
    const uint8_t *lo_b = p, *base = f->map;
    if (lo_b < base || n > f->map_size || (size_t)(lo_b - base) > f->map_size - n) return; /* not ours */
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return;
    /* only whole pages inside the range: neighbours may still be in use */
    uintptr_t lo = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~((uintptr_t)page - 1);
    /* madvise, not posix_madvise: glibc makes POSIX_MADV_DONTNEED a no-op. Dropping pages of a
     * read-only private file mapping is harmless: they are read from the file again if touched. */
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void bnb4_st_release(const bnb4_st_file *f, const bnb4_st_tensor *t) {
    if (t) bnb4_st_release_range(f, t->data, t->nbytes);
}
