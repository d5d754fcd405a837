/*
 * cmd_inspect.c - `bnb4 inspect FILE|DIR [--json]`: one row per tensor of a checkpoint, a quantized
 * weight (packed codes + companions + quant_state) counted as one row with its original shape, plus
 * totals. Also validates every quant_state and its companion tensors on the way.
 */
#define _DEFAULT_SOURCE
#include "bnb4_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: bnb4 inspect [--json] FILE|DIR\n"
    "\n"
    "List the tensors of a safetensors file or model directory: name, dtype, shape, quantization\n"
    "(type, blocksize, nested), bytes on disk and bits per weight, then totals. Quantized weights are\n"
    "checked (quant_state, companion tensors) and shown as one row.\n"
    "\n"
    "options:\n"
    "  --json      machine-readable output\n"
    "  -h, --help  this help\n";

typedef struct row {
    const char *name;
    const char *dtype;
    size_t ndim;
    const uint64_t *shape;
    uint64_t numel, bytes;
    const cli_qweight *q;
    const char *shard;
} row;

static int cmp_row(const void *a, const void *b) {
    return cli_natural_cmp(((const row *)a)->name, ((const row *)b)->name);
}

/* The safetensors tag of a quant_state's torch dtype name (float32 for anything else). */
static const char *st_dtype_of_torch(const char *t) {
    bnb4_dtype d = BNB4_F32;
    cli_dtype_from_torch(t, &d);
    return cli_dtype_st(d);
}

int cli_cmd_inspect(int argc, char **argv) {
    int as_json = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            cli_error("inspect: unknown option \"%s\" (see bnb4 inspect --help)", argv[i]);
            return CLI_EXIT_USAGE;
        } else if (path) {
            cli_error("inspect: expected one FILE or DIR");
            return CLI_EXIT_USAGE;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        cli_error("inspect: expected a FILE or DIR (see bnb4 inspect --help)");
        return CLI_EXIT_USAGE;
    }
    char err[CLI_ERRLEN];
    cli_model m;
    int rc = cli_model_open(path, &m, err, sizeof err);
    if (rc != 0) {
        cli_error("%s", err);
        return rc;
    }
    cli_qweight *qw = calloc(m.total_tensors, sizeof *qw);
    row *rows = calloc(m.total_tensors, sizeof *rows);
    size_t nq = 0, nrows = 0;
    if (!qw || !rows) {
        cli_error("out of memory");
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    for (size_t s = 0; s < m.nshards; s++)
        for (size_t i = 0; i < bnb4_st_count(m.shards[s]); i++) {
            const bnb4_st_tensor *t = bnb4_st_at(m.shards[s], i);
            if (!strstr(t->name, ".quant_state.bitsandbytes__")) continue;
            rc = cli_qweight_load(&m, t, &qw[nq], err, sizeof err);
            if (rc != 0) {
                cli_error("%s", err);
                goto done;
            }
            nq++;
        }
    /* rows: quantized weights, then every tensor that is not one of their parts */
    for (size_t k = 0; k < nq; k++) {
        row *r = &rows[nrows++];
        r->name = qw[k].name;
        r->dtype = st_dtype_of_torch(qw[k].qs.dtype);
        r->ndim = qw[k].qs.ndim;
        r->shape = qw[k].qs.shape;
        r->numel = qw[k].qs.numel;
        r->bytes = qw[k].storage_bytes;
        r->q = &qw[k];
        r->shard = m.shard_names[qw[k].shard];
    }
    for (size_t s = 0; s < m.nshards; s++)
        for (size_t i = 0; i < bnb4_st_count(m.shards[s]); i++) {
            const bnb4_st_tensor *t = bnb4_st_at(m.shards[s], i);
            int part = 0;
            for (size_t k = 0; k < nq && !part; k++)
                part = !strcmp(t->name, qw[k].name) || cli_is_companion_suffix(t->name, qw[k].name);
            if (part) continue;
            row *r = &rows[nrows++];
            r->name = t->name;
            r->dtype = t->dtype;
            r->ndim = t->ndim;
            r->shape = t->shape;
            r->numel = t->numel;
            r->bytes = t->nbytes;
            r->shard = m.shard_names[s];
        }
    qsort(rows, nrows, sizeof *rows, cmp_row);
    uint64_t tot_numel = 0, tot_bytes = 0, q_numel = 0, q_bytes = 0;
    for (size_t i = 0; i < nrows; i++) {
        tot_numel += rows[i].numel;
        tot_bytes += rows[i].bytes;
        if (rows[i].q) q_numel += rows[i].numel, q_bytes += rows[i].bytes;
    }

    if (as_json) {
        json_t *doc = json_object(), *arr = json_array(), *tot = json_object();
        int bad = !doc || !arr || !tot;
        for (size_t i = 0; i < nrows && !bad; i++) {
            const row *r = &rows[i];
            json_t *o = json_object(), *shape = json_array();
            bad |= !o || !shape;
            for (size_t d = 0; d < r->ndim && !bad; d++) bad |= json_array_append_new(shape, json_integer((json_int_t)r->shape[d]));
            bad |= json_object_set_new(o, "name", json_string(r->name));
            bad |= json_object_set_new(o, "dtype", json_string(r->dtype));
            bad |= json_object_set_new(o, "shape", shape);
            bad |= json_object_set_new(o, "quant_type", r->q ? json_string(r->q->qs.quant_type == BNB4_NF4 ? "nf4" : "fp4") : json_null());
            bad |= json_object_set_new(o, "blocksize", r->q ? json_integer((json_int_t)r->q->qs.blocksize) : json_null());
            bad |= json_object_set_new(o, "nested", r->q ? json_boolean(r->q->qs.nested) : json_null());
            bad |= json_object_set_new(o, "bytes", json_integer((json_int_t)r->bytes));
            bad |= json_object_set_new(o, "bits_per_weight", json_real(r->numel ? 8.0 * (double)r->bytes / (double)r->numel : 0.0));
            bad |= json_object_set_new(o, "file", json_string(r->shard));
            bad |= json_array_append_new(arr, o);
        }
        bad |= json_object_set_new(tot, "tensors", json_integer((json_int_t)nrows));
        bad |= json_object_set_new(tot, "quantized", json_integer((json_int_t)nq));
        bad |= json_object_set_new(tot, "params", json_integer((json_int_t)tot_numel));
        bad |= json_object_set_new(tot, "bytes", json_integer((json_int_t)tot_bytes));
        bad |= json_object_set_new(tot, "bits_per_weight", json_real(tot_numel ? 8.0 * (double)tot_bytes / (double)tot_numel : 0.0));
        bad |= json_object_set_new(tot, "quantized_bits_per_weight", json_real(q_numel ? 8.0 * (double)q_bytes / (double)q_numel : 0.0));
        bad |= json_object_set_new(doc, "path", json_string(path));
        bad |= json_object_set_new(doc, "files", json_integer((json_int_t)m.nshards));
        bad |= json_object_set_new(doc, "tensors", arr);
        bad |= json_object_set_new(doc, "totals", tot);
        if (bad || json_dumpf(doc, stdout, JSON_INDENT(2)) != 0) {
            cli_error("out of memory formatting JSON");
            rc = CLI_EXIT_FAILURE;
        }
        fputc('\n', stdout);
        json_decref(doc);
        goto done;
    }

    size_t wname = 4;
    for (size_t i = 0; i < nrows; i++)
        if (strlen(rows[i].name) > wname) wname = strlen(rows[i].name);
    if (wname > 60) wname = 60;
    printf("%-*s  %-5s  %-16s  %-5s  %5s  %-6s  %12s  %6s\n", (int)wname, "name", "dtype", "shape", "quant", "bs",
           "nested", "bytes", "bits/w");
    for (size_t i = 0; i < nrows; i++) {
        const row *r = &rows[i];
        char shape[64] = "[", *p = shape + 1;
        for (size_t d = 0; d < r->ndim && p < shape + sizeof shape - 24; d++)
            p += snprintf(p, (size_t)(shape + sizeof shape - p), "%s%llu", d ? ", " : "", (unsigned long long)r->shape[d]);
        snprintf(p, (size_t)(shape + sizeof shape - p), "]");
        char bs[16] = "-";
        if (r->q) snprintf(bs, sizeof bs, "%llu", (unsigned long long)r->q->qs.blocksize);
        printf("%-*s  %-5s  %-16s  %-5s  %5s  %-6s  %12llu  %6.2f\n", (int)wname, r->name, r->dtype, shape,
               r->q ? (r->q->qs.quant_type == BNB4_NF4 ? "nf4" : "fp4") : "-", bs,
               r->q ? (r->q->qs.nested ? "yes" : "no") : "-", (unsigned long long)r->bytes,
               r->numel ? 8.0 * (double)r->bytes / (double)r->numel : 0.0);
    }
    char hb[32];
    cli_human_bytes((double)tot_bytes, hb);
    printf("\n%zu tensors in %zu file%s, %zu quantized; %llu parameters, %s (%llu bytes), %.2f bits per weight",
           nrows, m.nshards, m.nshards == 1 ? "" : "s", nq, (unsigned long long)tot_numel, hb,
           (unsigned long long)tot_bytes, tot_numel ? 8.0 * (double)tot_bytes / (double)tot_numel : 0.0);
    if (nq) printf(" (quantized weights: %.3f)", 8.0 * (double)q_bytes / (double)q_numel);
    printf("\n");
    rc = CLI_EXIT_OK;
done:
    for (size_t k = 0; k < nq; k++) free(qw[k].name);
    free(qw);
    free(rows);
    cli_model_close(&m);
    return rc;
}
