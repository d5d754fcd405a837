/*
 * cmd_dequantize.c - `bnb4 dequantize IN OUT`: a bitsandbytes 4-bit checkpoint back to a plain one.
 * Each quantized weight (packed codes + companions + quant_state) becomes one dense tensor with the
 * quant_state's shape, in the chosen dtype (default: the dtype the weight was quantized from); the
 * other tensors are copied unchanged and config.json loses its quantization_config.
 * Workers decode block-aligned chunks and write them straight into the output file, so memory stays
 * at the absmax vector plus one chunk per thread.
 */
#define _DEFAULT_SOURCE
#include "bnb4_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: bnb4 dequantize [options] IN OUT\n"
    "\n"
    "Convert a bitsandbytes 4-bit checkpoint (file or model directory) back to dense weights.\n"
    "\n"
    "options:\n"
    "  --dtype f16|bf16|f32     output dtype of the dequantized weights\n"
    "                           (default: each weight's original dtype from its quant_state)\n"
    "  -j, --threads N          worker threads (default: all cores; 0 = all)\n"
    "  -f, --force              replace OUT if it exists\n"
    "  -q, --quiet              no progress or summary\n"
    "  -h, --help               this help\n";

typedef struct dq_job {
    const cli_qweight *q;
    const float *absmax;     /* decoded scales */
    bnb4_dtype dtype;
    size_t esize, n, chunk;
    bnb4_ctx **ctxs;
    uint8_t **scratch;
    bnb4_st_writer *w;
    size_t id;
    char *err;
} dq_job;

static int dequantize_chunk(void *arg, size_t i, int worker) {
    dq_job *j = arg;
    size_t start = i * j->chunk, len = j->n - start < j->chunk ? j->n - start : j->chunk;
    size_t bs = (size_t)j->q->qs.blocksize;
    /* the chunk as a 1 x len tensor of its own: start is a multiple of the blocksize */
    bnb4_qtensor v = bnb4_qtensor_plain(1, len, bs, (bnb4_quant_type)j->q->qs.quant_type,
                                        j->q->packed->data + start / 2, j->absmax + start / bs);
    if (bnb4_dequantize(j->ctxs[worker], &v, j->dtype, j->scratch[worker]) != BNB4_OK) {
        snprintf(j->err, CLI_ERRLEN, "\"%s\": dequantize failed: %s", j->q->name, bnb4_last_error());
        return CLI_EXIT_FAILURE;
    }
    if (bnb4_st_writer_pwrite(j->w, j->id, (uint64_t)start * j->esize, j->scratch[worker], len * j->esize, j->err,
                              CLI_ERRLEN) != 0)
        return CLI_EXIT_FAILURE;
    return 0;
}


static int cmp_qweight(const void *a, const void *b) {
    return strcmp(((const cli_qweight *)a)->name, ((const cli_qweight *)b)->name);
}

static const cli_qweight *find_qweight(const cli_qweight *qs, size_t n, const char *name) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, qs[mid].name);
        if (!c) return &qs[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

/* The weight a companion tensor belongs to, or NULL. */
static const cli_qweight *owner_of(const cli_qweight *qs, size_t n, const char *name) {
    static const char *const suffixes[] = {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                                           ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"};
    size_t l = strlen(name);
    for (size_t k = 0; k < sizeof suffixes / sizeof *suffixes; k++) {
        size_t sl = strlen(suffixes[k]);
        if (l > sl && !strcmp(name + l - sl, suffixes[k])) {
            char *p = strndup(name, l - sl);
            const cli_qweight *q = p ? find_qweight(qs, n, p) : NULL;
            free(p);
            if (q) return q;
        }
    }
    return NULL;
}

int cli_cmd_dequantize(int argc, char **argv) {
    int threads = cli_default_threads(), force = 0, quiet = 0, have_dtype = 0;
    bnb4_dtype out_dtype = BNB4_F16;
    const char *pos[2];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (!strncmp(a, "--dtype=", 8)) val = a + 8, a = "--dtype";
        else if (!strncmp(a, "--threads=", 10)) val = a + 10, a = "--threads";
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        } else if (!strcmp(a, "--dtype") || !strcmp(a, "-j") || !strcmp(a, "--threads")) {
            if (!val && i + 1 >= argc) {
                cli_error("dequantize: %s needs a value", a);
                return CLI_EXIT_USAGE;
            }
            if (!val) val = argv[++i];
            if (!strcmp(a, "--dtype")) {
                if (!strcmp(val, "f16") || !strcmp(val, "float16")) out_dtype = BNB4_F16;
                else if (!strcmp(val, "bf16") || !strcmp(val, "bfloat16")) out_dtype = BNB4_BF16;
                else if (!strcmp(val, "f32") || !strcmp(val, "float32")) out_dtype = BNB4_F32;
                else {
                    cli_error("dequantize: --dtype must be f16, bf16 or f32, not \"%s\"", val);
                    return CLI_EXIT_USAGE;
                }
                have_dtype = 1;
            } else if (cli_parse_threads(val, &threads) != 0) {
                cli_error("dequantize: --threads must be an integer from 0 to 1024, not \"%s\"", val);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            cli_error("dequantize: unknown option \"%s\" (see bnb4 dequantize --help)", a);
            return CLI_EXIT_USAGE;
        } else if (npos == 2) {
            cli_error("dequantize: too many arguments (\"%s\"); expected IN OUT", a);
            return CLI_EXIT_USAGE;
        } else {
            pos[npos++] = a;
        }
    }
    if (npos != 2) {
        cli_error("dequantize: expected IN and OUT (see bnb4 dequantize --help)");
        return CLI_EXIT_USAGE;
    }
    const char *in = pos[0], *out = pos[1];
    char err[CLI_ERRLEN] = "";
    cli_model m;
    int rc = cli_model_open(in, &m, err, sizeof err);
    if (rc != 0) {
        cli_error("%s", err);
        return rc;
    }
    cli_qweight *qw = NULL;
    size_t nq = 0, capq = 0;
    char *tmpdir = NULL;
    bnb4_ctx **ctxs = NULL;
    uint8_t **scratch = NULL;
    json_t *weight_map = NULL;
    float *absmax = NULL;
    bnb4_st_writer *w = NULL;
    const size_t chunk = (size_t)1 << 18;

    if (cli_exists(out)) {
        if (cli_same_file(in, out)) {
            snprintf(err, sizeof err, "%s: OUT is the input itself; choose another path", out);
            rc = CLI_EXIT_USAGE;
            goto fail;
        }
        if (!force) {
            snprintf(err, sizeof err, "%s already exists (use --force to replace it)", out);
            rc = CLI_EXIT_EXISTS;
            goto fail;
        }
        if (m.is_dir != cli_is_dir(out)) {
            snprintf(err, sizeof err, "%s exists and is not a %s", out, m.is_dir ? "directory" : "file");
            rc = CLI_EXIT_USAGE;
            goto fail;
        }
    }
    for (size_t s = 0; s < m.nshards; s++)
        for (size_t i = 0; i < bnb4_st_count(m.shards[s]); i++) {
            const bnb4_st_tensor *t = bnb4_st_at(m.shards[s], i);
            if (!strstr(t->name, ".quant_state.bitsandbytes__")) continue;
            if (nq == capq) {
                size_t nc = capq ? 2 * capq : 64;
                cli_qweight *p = realloc(qw, nc * sizeof *p);
                if (!p) goto oom;
                qw = p;
                capq = nc;
            }
            rc = cli_qweight_load(&m, t, &qw[nq], err, sizeof err);
            if (rc != 0) goto fail;
            nq++;
        }
    if (nq == 0) cli_warn("%s: no bitsandbytes 4-bit weights found; copying everything", in);
    qsort(qw, nq, sizeof *qw, cmp_qweight);

    ctxs = calloc((size_t)threads, sizeof *ctxs);
    scratch = calloc((size_t)threads, sizeof *scratch);
    if (!ctxs || !scratch) goto oom;
    for (int t = 0; t < threads; t++) {
        bnb4_ctx_params p;
        bnb4_ctx_params_default(&p);
        p.num_threads = 1;
        if (bnb4_ctx_create(&p, &ctxs[t]) != BNB4_OK) {
            snprintf(err, sizeof err, "cannot create a CPU context: %s", bnb4_last_error());
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        if (!(scratch[t] = malloc(chunk * 4))) goto oom;
    }
    weight_map = json_object();
    if (!weight_map) goto oom;
    if (m.is_dir && !(tmpdir = cli_make_temp_dir(out, err, sizeof err))) {
        rc = CLI_EXIT_FAILURE;
        goto fail;
    }
    cli_progress prog;
    cli_progress_init(&prog, quiet, "dequantize", m.total_tensors, m.total_bytes);
    uint64_t ndq = 0, ncopied = 0;
    for (size_t s = 0; s < m.nshards; s++) {
        const bnb4_st_file *f = m.shards[s];
        char *path = m.is_dir ? cli_join(tmpdir, m.shard_names[s]) : cli_strdup(out);
        if (!path) goto oom;
        int crc = bnb4_st_writer_create(path, &w, err, sizeof err);
        free(path);
        if (crc != 0) {
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        for (size_t i = 0; i < bnb4_st_metadata_count(f); i++)
            if (bnb4_st_writer_add_metadata(w, bnb4_st_metadata_key(f, i), bnb4_st_metadata_value(f, i), err, sizeof err)) {
                rc = CLI_EXIT_FAILURE;
                goto fail;
            }
        size_t count = bnb4_st_count(f);
        size_t *ids = calloc(count ? count : 1, sizeof *ids);
        if (!ids) goto oom;
        for (size_t i = 0; i < count && rc == 0; i++) {
            const bnb4_st_tensor *t = bnb4_st_at(f, i);
            const cli_qweight *q = find_qweight(qw, nq, t->name);
            if (!q && owner_of(qw, nq, t->name)) continue; /* a companion: folded into its weight */
            if (q) {
                bnb4_dtype d = out_dtype;
                if (!have_dtype) cli_dtype_from_torch(q->qs.dtype, &d);
                rc = bnb4_st_writer_add(w, t->name, cli_dtype_st(d), q->qs.ndim, q->qs.shape, &ids[i], err, sizeof err);
            } else {
                rc = bnb4_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, &ids[i], err, sizeof err);
            }
            if (!rc && json_object_set_new(weight_map, t->name, json_string(m.shard_names[s]))) rc = -1;
        }
        if (rc == 0) rc = bnb4_st_writer_layout(w, err, sizeof err);
        for (size_t i = 0; i < count && rc == 0; i++) {
            if (cli_interrupted()) {
                rc = CLI_EXIT_INTERRUPTED;
                break;
            }
            const bnb4_st_tensor *t = bnb4_st_at(f, i);
            const cli_qweight *q = find_qweight(qw, nq, t->name);
            if (!q && owner_of(qw, nq, t->name)) {
                cli_progress_add(&prog, 1, t->nbytes);
                continue;
            }
            if (!q) {
                if (bnb4_st_writer_pwrite(w, ids[i], 0, t->data, t->nbytes, err, sizeof err)) rc = CLI_EXIT_FAILURE;
                bnb4_st_release(f, t);
                ncopied++;
                cli_progress_add(&prog, 1, t->nbytes);
                continue;
            }
            size_t n = (size_t)q->qs.numel, bs = (size_t)q->qs.blocksize, nb = (n + bs - 1) / bs;
            absmax = malloc(nb * sizeof(float));
            if (!absmax) goto oom_ids;
            if (q->qs.nested) {
                bnb4_qtensor v = bnb4_qtensor_nested(1, n, bs, (bnb4_quant_type)q->qs.quant_type, q->packed->data,
                                                     q->absmax->data, (const float *)q->nested_absmax->data,
                                                     bnb4_nested_code(), (float)q->qs.nested_offset,
                                                     (size_t)q->qs.nested_blocksize);
                /* the nested absmax tensors may be unaligned in the file: take aligned copies */
                float *na = malloc(q->nested_absmax->nbytes);
                if (!na) goto oom_ids;
                memcpy(na, q->nested_absmax->data, q->nested_absmax->nbytes);
                v.nested.absmax = na;
                bnb4_status st = bnb4_dequantize_nested(ctxs[0], &v, absmax);
                free(na);
                if (st != BNB4_OK) {
                    snprintf(err, sizeof err, "\"%s\": decoding absmax failed: %s", q->name, bnb4_last_error());
                    rc = CLI_EXIT_FAILURE;
                }
            } else {
                memcpy(absmax, q->absmax->data, nb * sizeof(float));
            }
            if (rc == 0) {
                bnb4_dtype d = out_dtype;
                if (!have_dtype) cli_dtype_from_torch(q->qs.dtype, &d);
                dq_job j = {q, absmax, d, bnb4_dtype_size(d), n, chunk, ctxs, scratch, w, ids[i], err};
                rc = cli_parallel(threads, (n + chunk - 1) / chunk, dequantize_chunk, &j);
            }
            free(absmax);
            absmax = NULL;
            bnb4_st_release(f, q->packed);
            ndq++;
            cli_progress_add(&prog, 1, t->nbytes);
        }
        free(ids);
        if (rc != 0) goto fail;
        if (bnb4_st_writer_commit(w, err, sizeof err) != 0) {
            w = NULL;
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        w = NULL;
        continue;
    oom_ids:
        free(ids);
        goto oom;
    }
    if (m.is_dir) {
        if (cli_model_copy_extra_files(&m, tmpdir, err, sizeof err) != 0) {
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        if (m.config) {
            json_t *cfg = json_deep_copy(m.config);
            char *p = cli_join(tmpdir, "config.json");
            if (cfg) json_object_del(cfg, "quantization_config");
            if (!cfg || !p || cli_write_json(p, cfg, 1, err, sizeof err) != 0) {
                free(p);
                json_decref(cfg);
                rc = CLI_EXIT_FAILURE;
                goto fail;
            }
            free(p);
            json_decref(cfg);
        }
        if (m.indexed && cli_write_shard_index(tmpdir, &m, weight_map, err, sizeof err) != 0) {
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        if (cli_interrupted()) {
            rc = CLI_EXIT_INTERRUPTED;
            goto fail;
        }
        if (cli_commit_dir(tmpdir, out, force, err, sizeof err) != 0) {
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        free(tmpdir);
        tmpdir = NULL;
    }
    {
        double el = cli_now() - prog.start;
        char rss[32];
        cli_human_bytes((double)cli_peak_rss_bytes(), rss);
        cli_progress_finish(&prog, "dequantized %llu weights, copied %llu tensors in %.2f s (peak RSS %s) -> %s",
                            (unsigned long long)ndq, (unsigned long long)ncopied, el, rss, out);
    }
    rc = CLI_EXIT_OK;
    goto cleanup;
oom:
    snprintf(err, sizeof err, "out of memory");
    rc = CLI_EXIT_FAILURE;
fail:
    if (rc == CLI_EXIT_INTERRUPTED)
        cli_error("interrupted; no output was written");
    else
        cli_error("%s", err[0] ? err : "failed");
    if (rc == -1 || rc == 1) rc = CLI_EXIT_FAILURE;
cleanup:
    bnb4_st_writer_abort(w);
    free(absmax);
    if (tmpdir) {
        cli_remove_tree(tmpdir);
        free(tmpdir);
    }
    for (size_t i = 0; i < nq; i++) free(qw[i].name);
    free(qw);
    json_decref(weight_map);
    if (ctxs)
        for (int t = 0; t < threads; t++) bnb4_ctx_destroy(ctxs[t]);
    if (scratch)
        for (int t = 0; t < threads; t++) free(scratch[t]);
    free(ctxs);
    free(scratch);
    cli_model_close(&m);
    return rc;
}
