/*
 * bnb4_safetensors_write.c - atomic, streaming safetensors writer (see bnb4_safetensors.h).
 *
 * The layout is fixed before any data is written, so tensors can be written at their final offsets
 * in any order (pwrite), from several threads, without holding the file in memory. Small "late"
 * tensors (bitsandbytes' quant_state JSON, whose length depends on a number computed during
 * quantization) go after all others and are kept in memory until commit; the header is written last
 * into a region reserved for the largest late sizes and padded with spaces (JSON whitespace, as the
 * safetensors writer itself pads to 8 bytes).
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include "bnb4_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct wr_tensor {
    char *name;
    const char *dtype;       /* canonical static tag */
    size_t ndim;
    uint64_t *shape;
    uint64_t nbytes;         /* late: the maximum until set_late */
    uint64_t offset;         /* within the data section, after layout */
    int late;
    int late_set;
    uint8_t *late_data;
    uint64_t late_len;
    atomic_uint_fast64_t written;
} wr_tensor;

struct bnb4_st_writer {
    char *path;
    char *temp;
    int fd;
    int laid_out;
    size_t count, cap;
    wr_tensor *t;
    size_t *order;           /* layout order: indices into t */
    size_t meta_count, meta_cap;
    char **meta_keys, **meta_values;
    uint64_t header_reserved; /* bytes between the 8-byte length and the data section */
    uint64_t data_bytes;      /* fixed part of the data section */
};

static void wr_err(char *err, size_t errlen, const char *label, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    int n = snprintf(err, errlen, "%s: ", label ? label : "<output>");
    if (n < 0 || (size_t)n >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static char *wr_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static void wr_free(bnb4_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->count; i++) {
        free(w->t[i].name);
        free(w->t[i].shape);
        free(w->t[i].late_data);
    }
    free(w->t);
    free(w->order);
    for (size_t i = 0; i < w->meta_count; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    free(w->path);
    free(w->temp);
    free(w);
}

void bnb4_st_writer_abort(bnb4_st_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->temp) unlink(w->temp);
    wr_free(w);
}

int bnb4_st_writer_create(const char *path, bnb4_st_writer **out, char *err, size_t errlen) {
    if (!path || !out || !*path) {
        wr_err(err, errlen, path, "invalid argument (empty path)");
        return 1;
    }
    *out = NULL;
    bnb4_st_writer *w = calloc(1, sizeof *w);
    if (!w) {
        wr_err(err, errlen, path, "out of memory");
        return 1;
    }
    w->fd = -1;
    w->path = wr_strdup(path);
    size_t plen = strlen(path);
    w->temp = malloc(plen + 64);
    if (!w->path || !w->temp) {
        wr_free(w);
        wr_err(err, errlen, path, "out of memory");
        return 1;
    }
    /* "<dir>/.<base>.tmp-<pid>-<n>" in the target's directory: same file system, so rename is atomic;
     * a leading dot keeps it out of globs like *.safetensors. */
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = path + dirlen;
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL) ^ (unsigned)(uintptr_t)w;
    for (int attempt = 0; attempt < 100; attempt++) {
        seed = seed * 1103515245u + 12345u;
        snprintf(w->temp, plen + 64, "%.*s.%s.tmp-%ld-%08x", (int)dirlen, path, base, (long)getpid(), seed);
        w->fd = open(w->temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (w->fd >= 0 || errno != EEXIST) break;
    }
    if (w->fd < 0) {
        wr_err(err, errlen, path, "cannot create a temporary file in the target directory: %s", strerror(errno));
        free(w->temp);
        w->temp = NULL;
        wr_free(w);
        return 1;
    }
    *out = w;
    return 0;
}

const char *bnb4_st_writer_temp_path(const bnb4_st_writer *w) { return w ? w->temp : NULL; }

int bnb4_st_writer_add_metadata(bnb4_st_writer *w, const char *key, const char *value, char *err, size_t errlen) {
    if (!w || !key || !value || w->laid_out) {
        wr_err(err, errlen, w ? w->path : NULL, "add_metadata: invalid argument or called after layout");
        return 1;
    }
    for (size_t i = 0; i < w->meta_count; i++)
        if (strcmp(w->meta_keys[i], key) == 0) {
            char *v = wr_strdup(value);
            if (!v) goto oom;
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return 0;
        }
    if (w->meta_count == w->meta_cap) {
        size_t nc = w->meta_cap ? 2 * w->meta_cap : 8;
        char **k = realloc(w->meta_keys, nc * sizeof *k);
        if (!k) goto oom;
        w->meta_keys = k;
        char **v = realloc(w->meta_values, nc * sizeof *v);
        if (!v) goto oom;
        w->meta_values = v;
        w->meta_cap = nc;
    }
    char *k = wr_strdup(key), *v = wr_strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        goto oom;
    }
    w->meta_keys[w->meta_count] = k;
    w->meta_values[w->meta_count] = v;
    w->meta_count++;
    return 0;
oom:
    wr_err(err, errlen, w->path, "out of memory");
    return 1;
}

static int wr_push(bnb4_st_writer *w, const char *name, const char *dtype, size_t ndim, const uint64_t *shape,
                   uint64_t nbytes, int late, size_t *id, char *err, size_t errlen) {
    if (strcmp(name, "__metadata__") == 0 || !*name) {
        wr_err(err, errlen, w->path, "invalid tensor name \"%s\"", name);
        return 1;
    }
    if (w->count == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 64;
        wr_tensor *t = realloc(w->t, nc * sizeof *t);
        if (!t) {
            wr_err(err, errlen, w->path, "out of memory");
            return 1;
        }
        w->t = t;
        w->cap = nc;
    }
    wr_tensor *t = &w->t[w->count];
    memset(t, 0, sizeof *t);
    t->name = wr_strdup(name);
    t->shape = malloc((ndim ? ndim : 1) * sizeof *t->shape);
    if (!t->name || !t->shape) {
        free(t->name);
        free(t->shape);
        wr_err(err, errlen, w->path, "out of memory");
        return 1;
    }
    if (ndim) memcpy(t->shape, shape, ndim * sizeof *shape);
    t->dtype = dtype;
    t->ndim = ndim;
    t->nbytes = nbytes;
    t->late = late;
    atomic_init(&t->written, 0);
    *id = w->count++;
    return 0;
}

int bnb4_st_writer_add(bnb4_st_writer *w, const char *name, const char *dtype, size_t ndim, const uint64_t *shape,
                       size_t *id, char *err, size_t errlen) {
    if (!w || !name || !dtype || !id || (ndim && !shape) || w->laid_out) {
        wr_err(err, errlen, w ? w->path : NULL, "add: invalid argument or called after layout");
        return 1;
    }
    int rank = bnb4_st_dtype_rank(dtype);
    size_t esize = bnb4_st_dtype_size(dtype);
    if (rank < 0 || esize == 0) {
        wr_err(err, errlen, w->path, "tensor \"%s\": unsupported dtype \"%s\"", name, dtype);
        return 1;
    }
    uint64_t numel = 1;
    for (size_t d = 0; d < ndim; d++) {
        if (shape[d] != 0 && numel > UINT64_MAX / shape[d]) {
            wr_err(err, errlen, w->path, "tensor \"%s\": shape overflows 64 bits", name);
            return 1;
        }
        numel *= shape[d];
    }
    if (numel > UINT64_MAX / esize) {
        wr_err(err, errlen, w->path, "tensor \"%s\": byte size overflows", name);
        return 1;
    }
    /* canonical spelling without a table of our own: the reader's table is the source of truth */
    static const char *const tags[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0",
                                       "I16",  "U16", "F16", "BF16",    "I32",     "U32",
                                       "F32",  "C64", "F64", "I64",     "U64"};
    if ((size_t)rank >= sizeof tags / sizeof tags[0] || strcmp(tags[rank], dtype) != 0) {
        wr_err(err, errlen, w->path, "tensor \"%s\": dtype table mismatch for \"%s\"", name, dtype);
        return 1;
    }
    return wr_push(w, name, tags[rank], ndim, shape, numel * esize, 0, id, err, errlen);
}

int bnb4_st_writer_add_late(bnb4_st_writer *w, const char *name, size_t max_nbytes, size_t *id, char *err,
                            size_t errlen) {
    if (!w || !name || !id || w->laid_out) {
        wr_err(err, errlen, w ? w->path : NULL, "add_late: invalid argument or called after layout");
        return 1;
    }
    uint64_t shape = max_nbytes;
    return wr_push(w, name, "U8", 1, &shape, max_nbytes, 1, id, err, errlen);
}

/* Layout order: fixed tensors by dtype rank descending then name (safetensors' own order), then late
 * tensors by name. qsort has no context pointer, hence the file-scope pointer (layout is not reentrant
 * across threads, which the API does not promise). */
static const wr_tensor *wr_sort_base;
static int wr_cmp(const void *a, const void *b) {
    const wr_tensor *x = &wr_sort_base[*(const size_t *)a], *y = &wr_sort_base[*(const size_t *)b];
    if (x->late != y->late) return x->late - y->late;
    if (!x->late) {
        int rx = bnb4_st_dtype_rank(x->dtype), ry = bnb4_st_dtype_rank(y->dtype);
        if (rx != ry) return ry - rx;
    }
    return strcmp(x->name, y->name);
}

static int wr_cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Builds the header JSON (compact, as serde_json writes it) with the current sizes and offsets. */
static char *wr_header_json(const bnb4_st_writer *w) {
    json_t *root = json_object();
    if (!root) return NULL;
    int bad = 0;
    if (w->meta_count) {
        json_t *m = json_object();
        bad |= !m;
        for (size_t i = 0; i < w->meta_count && !bad; i++)
            bad |= json_object_set_new(m, w->meta_keys[i], json_string(w->meta_values[i]));
        bad |= json_object_set_new(root, "__metadata__", m);
    }
    for (size_t k = 0; k < w->count && !bad; k++) {
        const wr_tensor *t = &w->t[w->order[k]];
        json_t *o = json_object(), *shape = json_array(), *offs = json_array();
        bad |= !o || !shape || !offs;
        for (size_t d = 0; d < t->ndim && !bad; d++) bad |= json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        bad |= json_array_append_new(offs, json_integer((json_int_t)t->offset));
        bad |= json_array_append_new(offs, json_integer((json_int_t)(t->offset + t->nbytes)));
        bad |= json_object_set_new(o, "dtype", json_string(t->dtype));
        bad |= json_object_set_new(o, "shape", shape);
        bad |= json_object_set_new(o, "data_offsets", offs);
        bad |= json_object_set_new(root, t->name, o);
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static void wr_assign_offsets(bnb4_st_writer *w, uint64_t *fixed_end) {
    uint64_t off = 0;
    for (size_t k = 0; k < w->count; k++) {
        wr_tensor *t = &w->t[w->order[k]];
        if (!t->late && fixed_end) *fixed_end = off + t->nbytes;
        t->offset = off;
        off += t->nbytes;
    }
}

int bnb4_st_writer_layout(bnb4_st_writer *w, char *err, size_t errlen) {
    if (!w || w->laid_out) {
        wr_err(err, errlen, w ? w->path : NULL, "layout: invalid argument or called twice");
        return 1;
    }
    w->order = malloc((w->count ? w->count : 1) * sizeof *w->order);
    if (!w->order) {
        wr_err(err, errlen, w->path, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < w->count; i++) w->order[i] = i;
    wr_sort_base = w->t;
    qsort(w->order, w->count, sizeof *w->order, wr_cmp);
    /* duplicate names (across fixed and late tensors): sort the names alone */
    const char **names = malloc((w->count ? w->count : 1) * sizeof *names);
    if (!names) {
        wr_err(err, errlen, w->path, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < w->count; i++) names[i] = w->t[i].name;
    qsort(names, w->count, sizeof *names, wr_cmp_name);
    for (size_t k = 1; k < w->count; k++)
        if (strcmp(names[k - 1], names[k]) == 0) {
            wr_err(err, errlen, w->path, "duplicate tensor name \"%s\"", names[k]);
            free(names);
            return 1;
        }
    free(names);

    uint64_t fixed_end = 0;
    wr_assign_offsets(w, &fixed_end);
    char *hdr = wr_header_json(w); /* with late tensors at their maximum: the largest the header gets */
    if (!hdr) {
        wr_err(err, errlen, w->path, "out of memory building the header");
        return 1;
    }
    uint64_t hlen = strlen(hdr);
    free(hdr);
    w->header_reserved = (hlen + 7) / 8 * 8;
    w->data_bytes = fixed_end;
    w->laid_out = 1;
    return 0;
}

uint64_t bnb4_st_writer_nbytes(const bnb4_st_writer *w, size_t id) {
    return (w && id < w->count) ? w->t[id].nbytes : 0;
}

static int wr_pwrite_all(int fd, const void *data, size_t n, uint64_t off) {
    const uint8_t *p = data;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t r = pwrite(fd, p, chunk, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) {
            errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int bnb4_st_writer_pwrite(bnb4_st_writer *w, size_t id, uint64_t off, const void *data, size_t n, char *err,
                          size_t errlen) {
    if (!w || !w->laid_out || id >= w->count || w->t[id].late || (!data && n)) {
        wr_err(err, errlen, w ? w->path : NULL, "pwrite: invalid argument");
        return 1;
    }
    wr_tensor *t = &w->t[id];
    if (off > t->nbytes || n > t->nbytes - off) {
        wr_err(err, errlen, w->path, "tensor \"%s\": write of %zu bytes at %llu exceeds its %llu bytes", t->name, n,
               (unsigned long long)off, (unsigned long long)t->nbytes);
        return 1;
    }
    if (wr_pwrite_all(w->fd, data, n, 8 + w->header_reserved + t->offset + off) != 0) {
        wr_err(err, errlen, w->path, "write failed: %s", strerror(errno));
        return 1;
    }
    atomic_fetch_add(&t->written, n);
    return 0;
}

int bnb4_st_writer_set_late(bnb4_st_writer *w, size_t id, const void *data, size_t n, char *err, size_t errlen) {
    if (!w || !w->laid_out || id >= w->count || !w->t[id].late || (!data && n)) {
        wr_err(err, errlen, w ? w->path : NULL, "set_late: invalid argument");
        return 1;
    }
    wr_tensor *t = &w->t[id];
    if (n > t->shape[0] || t->late_set) {
        wr_err(err, errlen, w->path, "tensor \"%s\": late data of %zu bytes exceeds the %llu reserved (or set twice)",
               t->name, n, (unsigned long long)t->shape[0]);
        return 1;
    }
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) {
        wr_err(err, errlen, w->path, "out of memory");
        return 1;
    }
    if (n) memcpy(copy, data, n);
    t->late_data = copy;
    t->late_len = n;
    t->late_set = 1;
    return 0;
}

int bnb4_st_writer_commit(bnb4_st_writer *w, char *err, size_t errlen) {
    if (!w) {
        wr_err(err, errlen, NULL, "commit: invalid argument");
        return 1;
    }
    const char *label = w->path;
    if (!w->laid_out) {
        wr_err(err, errlen, label, "commit before layout");
        goto fail;
    }
    for (size_t i = 0; i < w->count; i++) {
        wr_tensor *t = &w->t[i];
        if (t->late) {
            if (!t->late_set) {
                wr_err(err, errlen, label, "tensor \"%s\": data never given", t->name);
                goto fail;
            }
        } else if (atomic_load(&t->written) != t->nbytes) {
            wr_err(err, errlen, label, "tensor \"%s\": %llu of %llu bytes written", t->name,
                   (unsigned long long)atomic_load(&t->written), (unsigned long long)t->nbytes);
            goto fail;
        }
    }
    /* Late tensors get their real sizes; they come last, so no fixed offset moves. */
    uint64_t off = w->data_bytes;
    for (size_t k = 0; k < w->count; k++) {
        wr_tensor *t = &w->t[w->order[k]];
        if (!t->late) continue;
        t->offset = off;
        t->nbytes = t->late_len;
        t->shape[0] = t->late_len;
        off += t->late_len;
    }
    char *hdr = wr_header_json(w);
    if (!hdr) {
        wr_err(err, errlen, label, "out of memory building the header");
        goto fail;
    }
    size_t hlen = strlen(hdr);
    if (hlen > w->header_reserved) { /* cannot happen: every number only shrank */
        free(hdr);
        wr_err(err, errlen, label, "internal error: header grew past its reservation");
        goto fail;
    }
    uint8_t *head = malloc(8 + w->header_reserved);
    if (!head) {
        free(hdr);
        wr_err(err, errlen, label, "out of memory");
        goto fail;
    }
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)(w->header_reserved >> (8 * i));
    memcpy(head + 8, hdr, hlen);
    memset(head + 8 + hlen, ' ', w->header_reserved - hlen);
    free(hdr);
    int wrc = wr_pwrite_all(w->fd, head, 8 + w->header_reserved, 0);
    free(head);
    if (wrc != 0) {
        wr_err(err, errlen, label, "write failed: %s", strerror(errno));
        goto fail;
    }
    for (size_t k = 0; k < w->count; k++) {
        wr_tensor *t = &w->t[w->order[k]];
        if (t->late && t->late_len &&
            wr_pwrite_all(w->fd, t->late_data, t->late_len, 8 + w->header_reserved + t->offset) != 0) {
            wr_err(err, errlen, label, "write failed: %s", strerror(errno));
            goto fail;
        }
    }
    uint64_t total = 8 + w->header_reserved + off;
    if (ftruncate(w->fd, (off_t)total) != 0) {
        wr_err(err, errlen, label, "cannot set the file size: %s", strerror(errno));
        goto fail;
    }
    if (fsync(w->fd) != 0) {
        wr_err(err, errlen, label, "fsync failed: %s", strerror(errno));
        goto fail;
    }
    if (close(w->fd) != 0) {
        w->fd = -1;
        wr_err(err, errlen, label, "close failed: %s", strerror(errno));
        goto fail;
    }
    w->fd = -1;
    if (rename(w->temp, w->path) != 0) {
        wr_err(err, errlen, label, "cannot rename %s into place: %s", w->temp, strerror(errno));
        goto fail;
    }
    /* make the rename durable */
    {
        const char *slash = strrchr(w->path, '/');
        char *dir = slash ? strndup(w->path, (size_t)(slash - w->path) + 1) : wr_strdup(".");
        if (dir) {
            int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
            free(dir);
        }
    }
    free(w->temp);
    w->temp = NULL;
    wr_free(w);
    return 0;
fail:
    bnb4_st_writer_abort(w);
    return 1;
}
