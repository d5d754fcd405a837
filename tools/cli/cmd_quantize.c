/*
 * cmd_quantize.c - `bnb4 quantize IN OUT`: a checkpoint (file or model directory) to bitsandbytes'
 * 4-bit serialization, byte-identical to what bitsandbytes writes for the same weights and settings.
 *
 * Per quantized weight P.weight [N, K] (n = N*K elements, nb = ceil(n/blocksize) blocks):
 *   P.weight                                   U8  [ceil(n/2), 1]   packed codes
 *   P.weight.absmax                            F32 [nb]  (U8 [nb] with double quantization)
 *   P.weight.quant_map                         F32 [16]
 *   P.weight.nested_absmax                     F32 [ceil(nb/256)]   (double quantization only)
 *   P.weight.nested_quant_map                  F32 [256]            (double quantization only)
 *   P.weight.quant_state.bitsandbytes__nf4|fp4 U8  [len]  json.dumps of the state, see bnb4_quant_state.h
 *
 * Streaming: shards are converted one at a time, tensor by tensor in file order, each tensor in
 * block-aligned chunks on all threads. A chunk's input pages are released once it is quantized and
 * its codes go straight to their final offset in the output file, so the resident set is about one
 * chunk per thread plus one tensor's absmax (1/16 of an f16 tensor), whatever the model size.
 */
#define _DEFAULT_SOURCE
#include "bnb4_cli.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Modules transformers leaves unquantized (embeddings, norms, the output head); matched on the full
 * tensor name. Only 2-D float ".weight" tensors are candidates at all, so biases never are. */
static const char *const k_default_excludes[] = {"*embed*", "*lm_head*", "*.wte.*", "wte.*",
                                                 "*.wpe.*", "wpe.*",     "*norm*"};

typedef struct q_opts {
    bnb4_quant_type qt;
    size_t blocksize;
    int double_quant;
    const char *compute_dtype; /* torch name, or NULL for automatic */
    const char **include, **exclude;
    size_t ninclude, nexclude;
    int default_excludes;
    int threads;
    int device; /* BNB4_DEVICE_CPU / _CUDA */
    int force, quiet;
    int custom_selection; /* any include/exclude flag given */
} q_opts;

static const char *usage_text =
    "usage: bnb4 quantize [options] IN OUT\n"
    "\n"
    "Convert a safetensors checkpoint to bitsandbytes' 4-bit format. IN is a .safetensors file or a\n"
    "Hugging Face model directory (config.json + model.safetensors or shards with an index); OUT is\n"
    "the same kind of thing. Linear weights (2-D float tensors named *.weight) are quantized except\n"
    "embeddings, norms and lm_head; every other tensor is copied unchanged.\n"
    "\n"
    "options:\n"
    "  --quant-type nf4|fp4     4-bit code (default nf4)\n"
    "  --blocksize N            32, 64, 128, ..., 4096 (default 64)\n"
    "  --double-quant           quantize absmax again, as bnb_4bit_use_double_quant (default)\n"
    "  --no-double-quant        keep absmax in float32\n"
    "  --compute-dtype T        bnb_4bit_compute_dtype for config.json: float16, bfloat16, float32\n"
    "                           (default: the weights' dtype when float16/bfloat16, else float32)\n"
    "  --include GLOB           only quantize weights whose name matches (repeatable)\n"
    "  --exclude GLOB           never quantize weights whose name matches (repeatable)\n"
    "  --no-default-excludes    drop the built-in excludes (*embed* *lm_head* *norm* wte wpe)\n"
    "  -j, --threads N          worker threads (default: all cores; 0 = all)\n"
    "  --device cpu|cuda        where the kernels run (default cpu)\n"
    "  -f, --force              replace OUT if it exists\n"
    "  -q, --quiet              no progress or summary\n"
    "  -h, --help               this help\n";

static int parse_quantize_args(int argc, char **argv, q_opts *o, const char **in, const char **out) {
    memset(o, 0, sizeof *o);
    o->qt = BNB4_NF4;
    o->blocksize = 64;
    o->double_quant = 1;
    o->default_excludes = 1;
    o->threads = cli_default_threads();
    o->device = BNB4_DEVICE_CPU;
    o->include = calloc((size_t)argc + 1, sizeof *o->include);
    o->exclude = calloc((size_t)argc + 1, sizeof *o->exclude);
    if (!o->include || !o->exclude) {
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }
    const char *pos[2];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        const char *val = NULL;
        char name[64];
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *eq = strchr(a, '=');
            size_t l = eq ? (size_t)(eq - a) : strlen(a);
            if (l >= sizeof name) l = sizeof name - 1;
            memcpy(name, a, l);
            name[l] = 0;
            if (eq) val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
#define NEED_VALUE()                                                    \
    do {                                                                \
        if (!val) {                                                     \
            if (i + 1 >= argc) {                                        \
                cli_error("quantize: %s needs a value", name);          \
                return CLI_EXIT_USAGE;                                  \
            }                                                           \
            val = argv[++i];                                            \
        }                                                               \
    } while (0)
        if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
            fputs(usage_text, stdout);
            return -1;
        } else if (!strcmp(name, "--quant-type")) {
            NEED_VALUE();
            if (!strcmp(val, "nf4")) o->qt = BNB4_NF4;
            else if (!strcmp(val, "fp4")) o->qt = BNB4_FP4;
            else {
                cli_error("quantize: --quant-type must be nf4 or fp4, not \"%s\"", val);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(name, "--blocksize")) {
            NEED_VALUE();
            char *end;
            unsigned long v = strtoul(val, &end, 10);
            if (*end || !bnb4_blocksize_supported(v)) {
                cli_error("quantize: --blocksize must be one of 32, 64, 128, 256, 512, 1024, 2048, 4096, not \"%s\"", val);
                return CLI_EXIT_USAGE;
            }
            o->blocksize = v;
        } else if (!strcmp(name, "--double-quant")) {
            o->double_quant = 1;
        } else if (!strcmp(name, "--no-double-quant")) {
            o->double_quant = 0;
        } else if (!strcmp(name, "--compute-dtype")) {
            NEED_VALUE();
            if (!strcmp(val, "float16") || !strcmp(val, "f16") || !strcmp(val, "fp16")) o->compute_dtype = "float16";
            else if (!strcmp(val, "bfloat16") || !strcmp(val, "bf16")) o->compute_dtype = "bfloat16";
            else if (!strcmp(val, "float32") || !strcmp(val, "f32") || !strcmp(val, "fp32")) o->compute_dtype = "float32";
            else {
                cli_error("quantize: --compute-dtype must be float16, bfloat16 or float32, not \"%s\"", val);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(name, "--include")) {
            NEED_VALUE();
            o->include[o->ninclude++] = val;
            o->custom_selection = 1;
        } else if (!strcmp(name, "--exclude")) {
            NEED_VALUE();
            o->exclude[o->nexclude++] = val;
            o->custom_selection = 1;
        } else if (!strcmp(name, "--no-default-excludes")) {
            o->default_excludes = 0;
            o->custom_selection = 1;
        } else if (!strcmp(name, "-j") || !strcmp(name, "--threads")) {
            NEED_VALUE();
            if (cli_parse_threads(val, &o->threads) != 0) {
                cli_error("quantize: --threads must be an integer from 0 to 1024, not \"%s\"", val);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(name, "--device")) {
            NEED_VALUE();
            if (!strcmp(val, "cpu")) o->device = BNB4_DEVICE_CPU;
            else if (!strcmp(val, "cuda")) o->device = BNB4_DEVICE_CUDA;
            else {
                cli_error("quantize: --device must be cpu or cuda, not \"%s\"", val);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(name, "-f") || !strcmp(name, "--force")) {
            o->force = 1;
        } else if (!strcmp(name, "-q") || !strcmp(name, "--quiet")) {
            o->quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            cli_error("quantize: unknown option \"%s\" (see bnb4 quantize --help)", a);
            return CLI_EXIT_USAGE;
        } else {
            if (npos == 2) {
                cli_error("quantize: too many arguments (\"%s\"); expected IN OUT", a);
                return CLI_EXIT_USAGE;
            }
            pos[npos++] = a;
        }
#undef NEED_VALUE
    }
    if (npos != 2) {
        cli_error("quantize: expected IN and OUT (see bnb4 quantize --help)");
        return CLI_EXIT_USAGE;
    }
    *in = pos[0];
    *out = pos[1];
    return 0;
}

static int name_matches(const char *const *globs, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (fnmatch(globs[i], name, 0) == 0) return 1;
    return 0;
}

/* A candidate: what transformers turns into a Linear4bit (2-D float weights of Linear modules). */
static int is_candidate(const bnb4_st_tensor *t) {
    bnb4_dtype d;
    size_t l = strlen(t->name);
    return l > 7 && !strcmp(t->name + l - 7, ".weight") && t->ndim == 2 && t->numel > 0 && cli_dtype_from_st(t->dtype, &d) == 0;
}

static int selected(const q_opts *o, const bnb4_st_tensor *t) {
    if (!is_candidate(t)) return 0;
    if (o->ninclude && !name_matches(o->include, o->ninclude, t->name)) return 0;
    if (o->default_excludes &&
        name_matches(k_default_excludes, sizeof k_default_excludes / sizeof *k_default_excludes, t->name))
        return 0;
    if (name_matches(o->exclude, o->nexclude, t->name)) return 0;
    return 1;
}

/* ---- one tensor ----------------------------------------------------------------------------------- */

typedef struct q_job {
    const q_opts *o;
    bnb4_ctx **ctxs;
    uint8_t **scratch;      /* per worker: an aligned copy of an unaligned source chunk */
    uint8_t **packed_buf;   /* per worker: the chunk's packed codes */
    const bnb4_st_file *file;
    const uint8_t *src;
    bnb4_dtype dtype;
    size_t esize, n, chunk;
    float *absmax;          /* the whole tensor's scales (kept for double quantization) */
    uint8_t *codes;         /* double quantization: 8-bit absmax codes */
    float *nested_absmax;
    float offset;
    bnb4_st_writer *w;
    size_t id_packed, id_absmax;
    int write_absmax;       /* plain absmax goes to the file chunk by chunk */
    char *err;
} q_job;

/* One chunk of a tensor: quantize it and write its codes (and plain scales) at their final offsets,
 * so the page-cache copies run on all workers too and no tensor-sized output buffer is needed. */
static int quantize_chunk(void *arg, size_t i, int worker) {
    q_job *j = arg;
    size_t start = i * j->chunk;
    size_t len = j->n - start < j->chunk ? j->n - start : j->chunk;
    size_t bs = j->o->blocksize;
    const void *src = j->src + start * j->esize;
    if (((uintptr_t)src) % j->esize) { /* safetensors does not promise alignment */
        memcpy(j->scratch[worker], src, len * j->esize);
        src = j->scratch[worker];
    }
    /* start is a multiple of blocksize (even): the chunk's codes and scales land at fixed places */
    float *absmax = j->absmax + start / bs;
    bnb4_status st = bnb4_quantize(j->ctxs[worker], src, j->dtype, len, bs, j->o->qt, j->packed_buf[worker], absmax);
    if (st != BNB4_OK) {
        snprintf(j->err, CLI_ERRLEN, "quantize failed: %s", bnb4_last_error());
        return CLI_EXIT_FAILURE;
    }
    bnb4_st_release_range(j->file, j->src + start * j->esize, len * j->esize);
    if (bnb4_st_writer_pwrite(j->w, j->id_packed, start / 2, j->packed_buf[worker], len / 2 + (len & 1), j->err,
                              CLI_ERRLEN) != 0)
        return CLI_EXIT_FAILURE;
    size_t nb = (len + bs - 1) / bs;
    if (j->write_absmax &&
        bnb4_st_writer_pwrite(j->w, j->id_absmax, (start / bs) * sizeof(float), absmax, nb * sizeof(float), j->err,
                              CLI_ERRLEN) != 0)
        return CLI_EXIT_FAILURE;
    return 0;
}

/* Double quantization of absmax in groups of whole 256-scale blocks (independent given the offset). */
#define NESTED_GROUP ((size_t)256 * 256)
static int quantize_nested_chunk(void *arg, size_t i, int worker) {
    q_job *j = arg;
    size_t nb = (j->n + j->o->blocksize - 1) / j->o->blocksize;
    size_t g0 = i * NESTED_GROUP, cnt = nb - g0 < NESTED_GROUP ? nb - g0 : NESTED_GROUP;
    if (bnb4_quantize_nested(j->ctxs[worker], j->absmax + g0, cnt, j->offset, 256, j->codes + g0,
                             j->nested_absmax + g0 / 256) != BNB4_OK) {
        snprintf(j->err, CLI_ERRLEN, "nested quantization failed: %s", bnb4_last_error());
        return CLI_EXIT_FAILURE;
    }
    return 0;
}

typedef struct q_entry {
    const bnb4_st_tensor *t;
    int quantize;
    size_t id, id_absmax, id_qmap, id_nabs, id_nqmap, id_state;
} q_entry;

typedef struct q_run {
    const q_opts *o;
    bnb4_ctx **ctxs;
    bnb4_ctx *cuda;
    uint8_t **scratch;
    uint8_t **packed_buf;
    size_t chunk;
    cli_progress *prog;
    uint64_t quantized, copied, out_bytes;
} q_run;

static int write_tensor(bnb4_st_writer *w, size_t id, const void *p, size_t n, char *err) {
    return bnb4_st_writer_pwrite(w, id, 0, p, n, err, CLI_ERRLEN) == 0 ? 0 : CLI_EXIT_FAILURE;
}

static int copy_tensor(q_run *r, bnb4_st_writer *w, const bnb4_st_file *f, const q_entry *e, char *err) {
    const bnb4_st_tensor *t = e->t;
    const size_t step = (size_t)64 << 20;
    for (size_t off = 0; off < t->nbytes; off += step) {
        if (cli_interrupted()) return CLI_EXIT_INTERRUPTED;
        size_t k = t->nbytes - off < step ? t->nbytes - off : step;
        if (bnb4_st_writer_pwrite(w, e->id, off, t->data + off, k, err, CLI_ERRLEN) != 0) return CLI_EXIT_FAILURE;
        cli_progress_add(r->prog, 0, k);
    }
    bnb4_st_release(f, t);
    cli_progress_add(r->prog, 1, 0);
    r->copied++;
    r->out_bytes += t->nbytes;
    return 0;
}

static int quantize_tensor(q_run *r, bnb4_st_writer *w, const bnb4_st_file *f, const q_entry *e, char *err) {
    const q_opts *o = r->o;
    const bnb4_st_tensor *t = e->t;
    bnb4_dtype dt = BNB4_F32;
    cli_dtype_from_st(t->dtype, &dt);
    size_t n = (size_t)t->numel, packed_n, nb;
    if (bnb4_packed_bytes(n, &packed_n) != BNB4_OK || bnb4_absmax_count(n, o->blocksize, &nb) != BNB4_OK) {
        snprintf(err, CLI_ERRLEN, "tensor \"%s\": too large", t->name);
        return CLI_EXIT_BAD_INPUT;
    }
    size_t nnb = (nb + 255) / 256;
    float *absmax = malloc(nb * sizeof(float));
    uint8_t *codes = o->double_quant ? malloc(nb) : NULL;
    float *nabs = o->double_quant ? malloc(nnb * sizeof(float)) : NULL;
    uint8_t *packed = NULL; /* whole-tensor codes: the CUDA path only */
    int rc = 0;
    float offset = 0.0f;
    if (!absmax || (o->double_quant && (!codes || !nabs))) {
        snprintf(err, CLI_ERRLEN, "tensor \"%s\": out of memory for its %zu scales", t->name, nb);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    if (r->cuda) {
#ifdef BNB4_WITH_CUDA
        packed = malloc(packed_n);
        if (!packed) {
            snprintf(err, CLI_ERRLEN, "tensor \"%s\": out of memory for its %zu-byte output", t->name, packed_n);
            rc = CLI_EXIT_FAILURE;
            goto done;
        }
        if (cli_cuda_quantize(r->cuda, t->data, dt, n, o->blocksize, o->qt, o->double_quant, packed, absmax, codes,
                              nabs, &offset, err, CLI_ERRLEN) != 0) {
            rc = CLI_EXIT_FAILURE;
            goto done;
        }
        rc = write_tensor(w, e->id, packed, packed_n, err);
        if (!rc && !o->double_quant) rc = write_tensor(w, e->id_absmax, absmax, nb * sizeof(float), err);
        if (rc) goto done;
#endif
    } else {
        q_job j;
        memset(&j, 0, sizeof j);
        j.o = o;
        j.ctxs = r->ctxs;
        j.scratch = r->scratch;
        j.packed_buf = r->packed_buf;
        j.file = f;
        j.src = t->data;
        j.dtype = dt;
        j.esize = t->elem_size;
        j.n = n;
        j.chunk = r->chunk;
        j.absmax = absmax;
        j.codes = codes;
        j.nested_absmax = nabs;
        j.w = w;
        j.id_packed = e->id;
        j.id_absmax = e->id_absmax;
        j.write_absmax = !o->double_quant;
        j.err = err;
        rc = cli_parallel(o->threads, (n + r->chunk - 1) / r->chunk, quantize_chunk, &j);
        if (rc != 0) goto done;
        if (o->double_quant) {
            if (bnb4_nested_offset(r->ctxs[0], absmax, nb, &offset) != BNB4_OK) {
                snprintf(err, CLI_ERRLEN, "tensor \"%s\": nested offset failed: %s", t->name, bnb4_last_error());
                rc = CLI_EXIT_FAILURE;
                goto done;
            }
            j.offset = offset;
            rc = cli_parallel(o->threads, (nb + NESTED_GROUP - 1) / NESTED_GROUP, quantize_nested_chunk, &j);
            if (rc != 0) goto done;
        }
    }
    bnb4_st_release(f, t);
    if (cli_interrupted()) {
        rc = CLI_EXIT_INTERRUPTED;
        goto done;
    }
    if (o->double_quant) {
        rc = write_tensor(w, e->id_absmax, codes, nb, err);
        if (!rc) rc = write_tensor(w, e->id_nabs, nabs, nnb * sizeof(float), err);
        if (!rc) rc = write_tensor(w, e->id_nqmap, bnb4_nested_code(), 256 * sizeof(float), err);
    }
    if (!rc) rc = write_tensor(w, e->id_qmap, bnb4_quant_map(o->qt), 16 * sizeof(float), err);
    if (!rc) {
        bnb4_quant_state qs;
        memset(&qs, 0, sizeof qs);
        qs.quant_type = o->qt;
        qs.blocksize = o->blocksize;
        snprintf(qs.dtype, sizeof qs.dtype, "%s", bnb4_dtype_name(dt));
        qs.ndim = t->ndim;
        for (size_t d = 0; d < t->ndim; d++) qs.shape[d] = t->shape[d];
        qs.nested = o->double_quant;
        qs.nested_blocksize = 256;
        snprintf(qs.nested_dtype, sizeof qs.nested_dtype, "float32");
        qs.nested_offset = (double)offset; /* torch's .item() widens the float32 offset */
        char *blob = NULL;
        size_t blen = 0;
        if (bnb4_qs_format(&qs, &blob, &blen, err, CLI_ERRLEN) != 0 ||
            bnb4_st_writer_set_late(w, e->id_state, blob, blen, err, CLI_ERRLEN) != 0)
            rc = CLI_EXIT_FAILURE;
        free(blob);
        r->out_bytes += blen;
    }
    if (!rc) {
        r->quantized++;
        r->out_bytes += packed_n + 16 * sizeof(float) +
                        (o->double_quant ? nb + nnb * sizeof(float) + 256 * sizeof(float) : nb * sizeof(float));
        cli_progress_add(r->prog, 1, t->nbytes);
    }
done:
    free(packed);
    free(absmax);
    free(codes);
    free(nabs);
    return rc;
}

/* ---- one shard ---------------------------------------------------------------------------------- */

static char *suffixed(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", a, b);
    return p;
}

static int convert_shard(q_run *r, const bnb4_st_file *f, const char *out_path, json_t *weight_map,
                         const char *shard_name, char *err) {
    const q_opts *o = r->o;
    size_t count = bnb4_st_count(f);
    q_entry *plan = calloc(count ? count : 1, sizeof *plan);
    bnb4_st_writer *w = NULL;
    int rc = CLI_EXIT_FAILURE;
    if (!plan) {
        snprintf(err, CLI_ERRLEN, "out of memory");
        goto done;
    }
    if (bnb4_st_writer_create(out_path, &w, err, CLI_ERRLEN) != 0) goto done;
    int have_format = 0;
    for (size_t i = 0; i < bnb4_st_metadata_count(f); i++) {
        have_format |= !strcmp(bnb4_st_metadata_key(f, i), "format");
        if (bnb4_st_writer_add_metadata(w, bnb4_st_metadata_key(f, i), bnb4_st_metadata_value(f, i), err, CLI_ERRLEN))
            goto done;
    }
    /* transformers refuses safetensors files without format "pt" (or tf/flax/mlx) */
    if (!have_format && bnb4_st_writer_add_metadata(w, "format", "pt", err, CLI_ERRLEN)) goto done;

    /* the largest quant_state blob: the JSON with the longest possible float repr (24 characters) */
    for (size_t i = 0; i < count; i++) {
        const bnb4_st_tensor *t = bnb4_st_at(f, i);
        q_entry *e = &plan[i];
        e->t = t;
        e->quantize = selected(o, t);
        char *names[6] = {0};
        int ok = 1;
        if (!e->quantize) {
            ok = bnb4_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, &e->id, err, CLI_ERRLEN) == 0;
            names[0] = cli_strdup(t->name);
        } else {
            size_t n = (size_t)t->numel, nb = (n + o->blocksize - 1) / o->blocksize;
            uint64_t s_packed[2] = {n / 2 + (n & 1), 1}, s_nb[1] = {nb}, s16[1] = {16}, s256[1] = {256},
                     s_nnb[1] = {(nb + 255) / 256};
            names[0] = cli_strdup(t->name);
            names[1] = suffixed(t->name, ".absmax");
            names[2] = suffixed(t->name, ".quant_map");
            names[3] = suffixed(t->name, ".nested_absmax");
            names[4] = suffixed(t->name, ".nested_quant_map");
            names[5] = suffixed(t->name, o->qt == BNB4_NF4 ? ".quant_state.bitsandbytes__nf4"
                                                           : ".quant_state.bitsandbytes__fp4");
            for (int k = 0; k < 6; k++) ok &= names[k] != NULL;
            bnb4_quant_state qs;
            memset(&qs, 0, sizeof qs);
            qs.quant_type = o->qt;
            qs.blocksize = o->blocksize;
            snprintf(qs.dtype, sizeof qs.dtype, "bfloat16"); /* the longest dtype name */
            qs.ndim = t->ndim;
            for (size_t d = 0; d < t->ndim; d++) qs.shape[d] = t->shape[d];
            qs.nested = o->double_quant;
            qs.nested_blocksize = 256;
            snprintf(qs.nested_dtype, sizeof qs.nested_dtype, "float32");
            qs.nested_offset = -1.2345678901234567e-300; /* 24 characters, the longest repr */
            char *blob = NULL;
            size_t blen = 0;
            ok = ok && bnb4_qs_format(&qs, &blob, &blen, err, CLI_ERRLEN) == 0;
            free(blob);
            ok = ok && !bnb4_st_writer_add(w, names[0], "U8", 2, s_packed, &e->id, err, CLI_ERRLEN) &&
                 !bnb4_st_writer_add(w, names[1], o->double_quant ? "U8" : "F32", 1, s_nb, &e->id_absmax, err, CLI_ERRLEN) &&
                 !bnb4_st_writer_add(w, names[2], "F32", 1, s16, &e->id_qmap, err, CLI_ERRLEN) &&
                 !bnb4_st_writer_add_late(w, names[5], blen, &e->id_state, err, CLI_ERRLEN);
            if (ok && o->double_quant)
                ok = !bnb4_st_writer_add(w, names[3], "F32", 1, s_nnb, &e->id_nabs, err, CLI_ERRLEN) &&
                     !bnb4_st_writer_add(w, names[4], "F32", 1, s256, &e->id_nqmap, err, CLI_ERRLEN);
        }
        if (ok)
            for (int k = 0; k < 6; k++)
                if (names[k] && (k == 0 || e->quantize) && (o->double_quant || (k != 3 && k != 4)))
                    ok &= json_object_set_new(weight_map, names[k], json_string(shard_name)) == 0;
        for (int k = 0; k < 6; k++) free(names[k]);
        if (!ok) {
            if (!err[0]) snprintf(err, CLI_ERRLEN, "out of memory");
            goto done;
        }
    }
    if (bnb4_st_writer_layout(w, err, CLI_ERRLEN) != 0) goto done;
    for (size_t i = 0; i < count; i++) {
        if (cli_interrupted()) {
            rc = CLI_EXIT_INTERRUPTED;
            goto done;
        }
        int trc = plan[i].quantize ? quantize_tensor(r, w, f, &plan[i], err) : copy_tensor(r, w, f, &plan[i], err);
        if (trc != 0) {
            rc = trc;
            goto done;
        }
    }
    if (bnb4_st_writer_commit(w, err, CLI_ERRLEN) != 0) {
        w = NULL;
        goto done;
    }
    w = NULL;
    rc = 0;
done:
    bnb4_st_writer_abort(w);
    free(plan);
    return rc;
}

/* ---- config.json -------------------------------------------------------------------------------- */

/* The quantization_config transformers writes for BitsAndBytesConfig(load_in_4bit=True, ...). */
static json_t *quantization_config(const q_opts *o, const char *compute_dtype, json_t *skip_modules) {
    json_t *q = json_object();
    if (!q) return NULL;
    int bad = 0;
    bad |= json_object_set_new(q, "_load_in_4bit", json_true());
    bad |= json_object_set_new(q, "_load_in_8bit", json_false());
    bad |= json_object_set_new(q, "bnb_4bit_compute_dtype", json_string(compute_dtype));
    bad |= json_object_set_new(q, "bnb_4bit_quant_storage", json_string("uint8"));
    bad |= json_object_set_new(q, "bnb_4bit_quant_type", json_string(o->qt == BNB4_NF4 ? "nf4" : "fp4"));
    bad |= json_object_set_new(q, "bnb_4bit_use_double_quant", json_boolean(o->double_quant));
    bad |= json_object_set_new(q, "llm_int8_enable_fp32_cpu_offload", json_false());
    bad |= json_object_set_new(q, "llm_int8_has_fp16_weight", json_false());
    bad |= json_object_set_new(q, "llm_int8_skip_modules", skip_modules ? skip_modules : json_null());
    bad |= json_object_set_new(q, "llm_int8_threshold", json_real(6.0));
    bad |= json_object_set_new(q, "load_in_4bit", json_true());
    bad |= json_object_set_new(q, "load_in_8bit", json_false());
    bad |= json_object_set_new(q, "quant_method", json_string("bitsandbytes"));
    if (bad) {
        json_decref(q);
        return NULL;
    }
    return q;
}

/* ---- the command -------------------------------------------------------------------------------- */

int cli_cmd_quantize(int argc, char **argv) {
    q_opts o;
    const char *in, *out;
    int rc = parse_quantize_args(argc, argv, &o, &in, &out);
    if (rc != 0) {
        free(o.include);
        free(o.exclude);
        return rc < 0 ? CLI_EXIT_OK : rc;
    }
    char err[CLI_ERRLEN] = "";
    cli_model m;
    char *tmpdir = NULL;
    bnb4_ctx **ctxs = NULL;
    uint8_t **scratch = NULL, **packed_buf = NULL;
    bnb4_ctx *cuda = NULL;
    json_t *weight_map = NULL, *skip = NULL;
    int model_open = 0;
    size_t chunk = (size_t)1 << 18; /* elements per task: a multiple of every blocksize */

    rc = cli_model_open(in, &m, err, sizeof err);
    if (rc != 0) goto fail;
    model_open = 1;
    if (cli_exists(out)) {
        if (cli_same_file(in, out)) {
            snprintf(err, sizeof err, "%s: OUT is the input itself; choose another path", out);
            rc = CLI_EXIT_USAGE;
            goto fail;
        }
        if (!o.force) {
            snprintf(err, sizeof err, "%s already exists (use --force to replace it)", out);
            rc = CLI_EXIT_EXISTS;
            goto fail;
        }
        if (m.is_dir != cli_is_dir(out)) {
            snprintf(err, sizeof err, "%s exists and is a %s; the output is a %s", out,
                     cli_is_dir(out) ? "directory" : "file", m.is_dir ? "directory" : "file");
            rc = CLI_EXIT_USAGE;
            goto fail;
        }
    }
    /* Refuse inputs that are already quantized (their companions would clash). */
    for (size_t s = 0; s < m.nshards; s++)
        for (size_t i = 0; i < bnb4_st_count(m.shards[s]); i++)
            if (strstr(bnb4_st_at(m.shards[s], i)->name, ".quant_state.bitsandbytes__")) {
                snprintf(err, sizeof err, "%s: already quantized (\"%s\"); use bnb4 dequantize first", m.shard_names[s],
                         bnb4_st_at(m.shards[s], i)->name);
                rc = CLI_EXIT_BAD_INPUT;
                goto fail;
            }
    if (m.config && json_object_get(m.config, "quantization_config")) {
        snprintf(err, sizeof err, "%s/config.json: already has a quantization_config", in);
        rc = CLI_EXIT_BAD_INPUT;
        goto fail;
    }

    /* What gets quantized, the compute dtype, and the modules transformers must leave alone. */
    uint64_t nsel = 0;
    int seen_dtype = -1, mixed = 0;
    skip = json_array();
    if (!skip) goto oom;
    for (size_t s = 0; s < m.nshards; s++)
        for (size_t i = 0; i < bnb4_st_count(m.shards[s]); i++) {
            const bnb4_st_tensor *t = bnb4_st_at(m.shards[s], i);
            if (selected(&o, t)) {
                /* the names this weight's companions will take must be free */
                static const char *const sfx[] = {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"};
                for (size_t k = 0; k < sizeof sfx / sizeof *sfx; k++) {
                    char *c = suffixed(t->name, sfx[k]);
                    if (!c) goto oom;
                    int clash = cli_model_find(&m, c, NULL) != NULL;
                    if (clash) snprintf(err, sizeof err, "%s: has a tensor \"%s\", the name bitsandbytes gives a part of "
                                        "the quantized \"%s\"", in, c, t->name);
                    free(c);
                    if (clash) {
                        rc = CLI_EXIT_BAD_INPUT;
                        goto fail;
                    }
                }
                bnb4_dtype d = BNB4_F32;
                cli_dtype_from_st(t->dtype, &d);
                if (seen_dtype >= 0 && seen_dtype != (int)d) mixed = 1;
                seen_dtype = (int)d;
                nsel++;
            } else if (is_candidate(t)) {
                char *mod = strndup(t->name, strlen(t->name) - 7);
                if (!mod || json_array_append_new(skip, json_string(mod)) != 0) {
                    free(mod);
                    goto oom;
                }
                free(mod);
            }
        }
    if (nsel == 0) cli_warn("%s: no tensor selected for quantization; copying everything", in);
    const char *compute = o.compute_dtype;
    if (!compute) compute = (!mixed && (seen_dtype == BNB4_F16 || seen_dtype == BNB4_BF16))
                                ? bnb4_dtype_name((bnb4_dtype)seen_dtype) : "float32";
    if (o.custom_selection) {
        /* transformers needs the list only when it differs from its own choice; lm_head always */
        int has_head = 0;
        size_t k;
        json_t *v;
        json_array_foreach(skip, k, v) has_head |= strcmp(json_string_value(v), "lm_head") == 0;
        if (!has_head && json_array_append_new(skip, json_string("lm_head")) != 0) goto oom;
    } else {
        json_decref(skip);
        skip = NULL;
    }

    /* Workers: one single-threaded context each (the chunks are the parallelism). */
    ctxs = calloc((size_t)o.threads, sizeof *ctxs);
    scratch = calloc((size_t)o.threads, sizeof *scratch);
    packed_buf = calloc((size_t)o.threads, sizeof *packed_buf);
    if (!ctxs || !scratch || !packed_buf) goto oom;
    for (int t = 0; t < o.threads; t++) {
        bnb4_ctx_params p;
        bnb4_ctx_params_default(&p);
        p.device = BNB4_DEVICE_CPU;
        p.num_threads = 1;
        if (bnb4_ctx_create(&p, &ctxs[t]) != BNB4_OK) {
            snprintf(err, sizeof err, "cannot create a CPU context: %s", bnb4_last_error());
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        scratch[t] = malloc(chunk * 4);
        packed_buf[t] = malloc(chunk / 2);
        if (!scratch[t] || !packed_buf[t]) goto oom;
    }
    if (o.device == BNB4_DEVICE_CUDA) {
#ifdef BNB4_WITH_CUDA
        bnb4_ctx_params p;
        bnb4_ctx_params_default(&p);
        p.device = BNB4_DEVICE_CUDA;
        if (bnb4_cuda_device_count() < 1 || bnb4_ctx_create(&p, &cuda) != BNB4_OK) {
            snprintf(err, sizeof err, "--device cuda: no usable CUDA device (%s)",
                     bnb4_cuda_device_count() < 1 ? "none found" : bnb4_last_error());
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
#else
        snprintf(err, sizeof err, "--device cuda: this bnb4 was built without CUDA");
        rc = CLI_EXIT_USAGE;
        goto fail;
#endif
    }

    weight_map = json_object();
    if (!weight_map) goto oom;
    cli_progress prog;
    cli_progress_init(&prog, o.quiet, "quantize", m.total_tensors, m.total_bytes);
    q_run run = {&o, ctxs, cuda, scratch, packed_buf, chunk, &prog, 0, 0, 0};
    if (m.is_dir) {
        tmpdir = cli_make_temp_dir(out, err, sizeof err);
        if (!tmpdir) {
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
    }
    for (size_t s = 0; s < m.nshards; s++) {
        char *path = m.is_dir ? cli_join(tmpdir, m.shard_names[s]) : cli_strdup(out);
        if (!path) goto oom;
        rc = convert_shard(&run, m.shards[s], path, weight_map, m.shard_names[s], err);
        free(path);
        if (rc != 0) goto fail;
    }
    if (m.is_dir) {
        if (cli_model_copy_extra_files(&m, tmpdir, err, sizeof err) != 0) {
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        if (m.config) {
            json_t *cfg = json_deep_copy(m.config);
            json_t *qc = quantization_config(&o, compute, skip);
            skip = NULL; /* owned by qc now */
            char *p = cli_join(tmpdir, "config.json");
            int bad = !cfg || !qc || !p || json_object_set_new(cfg, "quantization_config", qc) != 0;
            if (bad || cli_write_json(p, cfg, 1, err, sizeof err) != 0) {
                if (bad) snprintf(err, sizeof err, "out of memory writing config.json");
                free(p);
                json_decref(cfg);
                rc = CLI_EXIT_FAILURE;
                goto fail;
            }
            free(p);
            json_decref(cfg);
        } else {
            cli_warn("%s has no config.json: transformers will not know the model is quantized", in);
        }
        if (m.indexed && cli_write_shard_index(tmpdir, &m, weight_map, err, sizeof err) != 0) {
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        if (cli_interrupted()) {
            rc = CLI_EXIT_INTERRUPTED;
            goto fail;
        }
        if (cli_commit_dir(tmpdir, out, o.force, err, sizeof err) != 0) {
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        free(tmpdir);
        tmpdir = NULL;
    }
    double el = cli_now() - prog.start;
    char in_h[32], out_h[32], rss[32], rate[32];
    cli_human_bytes((double)m.total_bytes, in_h);
    cli_human_bytes((double)run.out_bytes, out_h);
    cli_human_bytes((double)cli_peak_rss_bytes(), rss);
    cli_human_bytes(el > 0 ? (double)m.total_bytes / el : 0, rate);
    cli_progress_finish(&prog, "quantized %llu of %llu tensors to %s (bs %zu%s): %s -> %s in %.2f s (%s/s, peak RSS %s) -> %s",
                        (unsigned long long)run.quantized, (unsigned long long)m.total_tensors,
                        o.qt == BNB4_NF4 ? "nf4" : "fp4", o.blocksize, o.double_quant ? ", double quant" : "", in_h,
                        out_h, el, rate, rss, out);
    rc = CLI_EXIT_OK;
    goto cleanup;
oom:
    snprintf(err, sizeof err, "out of memory");
    rc = CLI_EXIT_FAILURE;
fail:
    if (rc == CLI_EXIT_INTERRUPTED)
        cli_error("interrupted; no output was written");
    else
        cli_error("%s", err);
cleanup:
    if (tmpdir) {
        cli_remove_tree(tmpdir);
        free(tmpdir);
    }
    json_decref(weight_map);
    json_decref(skip);
    if (ctxs)
        for (int t = 0; t < o.threads; t++) bnb4_ctx_destroy(ctxs[t]);
    if (scratch)
        for (int t = 0; t < o.threads; t++) free(scratch[t]);
    if (packed_buf)
        for (int t = 0; t < o.threads; t++) free(packed_buf[t]);
    free(ctxs);
    free(scratch);
    free(packed_buf);
    bnb4_ctx_destroy(cuda);
    if (model_open) cli_model_close(&m);
    free(o.include);
    free(o.exclude);
    return rc;
}
