/*
 * cli_model.c - what the bnb4 command reads: one .safetensors file, or a Hugging Face model directory
 * (config.json plus one model.safetensors, or shards listed by model.safetensors.index.json), and the
 * bitsandbytes 4-bit weights inside (a packed weight with its companion tensors and quant_state).
 */
#define _DEFAULT_SOURCE
#include "bnb4_cli.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int str_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void cli_model_close(cli_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nshards; i++) {
        if (m->shards) bnb4_st_close(m->shards[i]);
        if (m->shard_names) free(m->shard_names[i]);
    }
    free(m->shards);
    free(m->shard_names);
    free(m->path);
    free(m->index_name);
    json_decref(m->config);
    json_decref(m->index);
    memset(m, 0, sizeof *m);
}

/* A shard name from an index must be a plain file name in the model directory. */
static int safe_file_name(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int add_shard_name(cli_model *m, const char *name, size_t *cap) {
    for (size_t i = 0; i < m->nshards; i++)
        if (strcmp(m->shard_names[i], name) == 0) return 0;
    if (m->nshards == *cap) {
        size_t nc = *cap ? 2 * *cap : 8;
        char **p = realloc(m->shard_names, nc * sizeof *p);
        if (!p) return -1;
        m->shard_names = p;
        *cap = nc;
    }
    m->shard_names[m->nshards] = cli_strdup(name);
    if (!m->shard_names[m->nshards]) return -1;
    m->nshards++;
    return 0;
}

int cli_model_open(const char *path, cli_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    struct stat st;
    if (stat(path, &st) != 0) {
        cli_errf(err, errlen, "%s: %s", path, strerror(errno));
        return CLI_EXIT_BAD_INPUT;
    }
    m->path = cli_strdup(path);
    if (!m->path) goto oom;
    size_t cap = 0;
    if (S_ISDIR(st.st_mode)) {
        m->is_dir = 1;
        char *cfg = cli_join(path, "config.json");
        if (!cfg) goto oom;
        if (cli_exists(cfg)) {
            m->config = cli_read_json(cfg, err, errlen);
            if (!m->config) {
                free(cfg);
                goto bad;
            }
            if (!json_is_object(m->config)) {
                cli_errf(err, errlen, "%s: not a JSON object", cfg);
                free(cfg);
                goto bad;
            }
        }
        free(cfg);
        /* An index names the shards; otherwise every *.safetensors file is one. */
        DIR *d = opendir(path);
        if (!d) {
            cli_errf(err, errlen, "%s: cannot list: %s", path, strerror(errno));
            goto bad;
        }
        struct dirent *e;
        char *index_name = NULL;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            if (str_ends_with(e->d_name, ".safetensors.index.json")) {
                if (index_name) {
                    cli_errf(err, errlen, "%s: more than one *.safetensors.index.json (%s, %s)", path, index_name,
                             e->d_name);
                    free(index_name);
                    closedir(d);
                    goto bad;
                }
                index_name = cli_strdup(e->d_name);
                if (!index_name) {
                    closedir(d);
                    goto oom;
                }
            }
        }
        if (index_name) {
            m->indexed = 1;
            m->index_name = index_name;
            char *ip = cli_join(path, index_name);
            if (!ip) {
                closedir(d);
                goto oom;
            }
            m->index = cli_read_json(ip, err, errlen);
            json_t *wm = m->index ? json_object_get(m->index, "weight_map") : NULL;
            if (m->index && !json_is_object(wm)) cli_errf(err, errlen, "%s: no \"weight_map\" object", ip);
            if (!m->index || !json_is_object(wm)) {
                free(ip);
                closedir(d);
                goto bad;
            }
            const char *k;
            json_t *v;
            json_object_foreach(wm, k, v) {
                if (!json_is_string(v) || !safe_file_name(json_string_value(v))) {
                    cli_errf(err, errlen, "%s: weight_map entry \"%s\" is not a file name in the directory", ip, k);
                    free(ip);
                    closedir(d);
                    goto bad;
                }
                if (add_shard_name(m, json_string_value(v), &cap) != 0) {
                    free(ip);
                    closedir(d);
                    goto oom;
                }
            }
            free(ip);
        } else {
            rewinddir(d);
            while ((e = readdir(d))) {
                if (e->d_name[0] == '.' || !str_ends_with(e->d_name, ".safetensors")) continue;
                if (add_shard_name(m, e->d_name, &cap) != 0) {
                    closedir(d);
                    goto oom;
                }
            }
        }
        closedir(d);
        if (m->nshards == 0) {
            cli_errf(err, errlen, "%s: no .safetensors files in the directory", path);
            goto bad;
        }
        qsort(m->shard_names, m->nshards, sizeof *m->shard_names, cmp_str);
    } else {
        const char *slash = strrchr(path, '/');
        if (add_shard_name(m, slash ? slash + 1 : path, &cap) != 0) goto oom;
    }

    m->shards = calloc(m->nshards, sizeof *m->shards);
    if (!m->shards) goto oom;
    for (size_t i = 0; i < m->nshards; i++) {
        char *p = m->is_dir ? cli_join(path, m->shard_names[i]) : cli_strdup(path);
        if (!p) goto oom;
        int rc = bnb4_st_open(p, &m->shards[i], err, errlen);
        free(p);
        if (rc != 0) goto bad;
        m->total_tensors += bnb4_st_count(m->shards[i]);
        for (size_t k = 0; k < bnb4_st_count(m->shards[i]); k++) m->total_bytes += bnb4_st_at(m->shards[i], k)->nbytes;
    }
    if (m->total_tensors == 0) {
        cli_errf(err, errlen, "%s: empty model (no tensors)", path);
        goto bad;
    }
    /* Names unique across shards, and (with an index) each where the index says. */
    for (size_t i = 0; i < m->nshards; i++)
        for (size_t k = 0; k < bnb4_st_count(m->shards[i]); k++) {
            const char *name = bnb4_st_at(m->shards[i], k)->name;
            for (size_t j = i + 1; j < m->nshards; j++)
                if (bnb4_st_find(m->shards[j], name)) {
                    cli_errf(err, errlen, "%s: tensor \"%s\" appears in both %s and %s", path, name,
                             m->shard_names[i], m->shard_names[j]);
                    goto bad;
                }
            if (m->indexed) {
                json_t *v = json_object_get(json_object_get(m->index, "weight_map"), name);
                if (!v || strcmp(json_string_value(v), m->shard_names[i]) != 0) {
                    cli_errf(err, errlen, "%s: tensor \"%s\" of %s is %s in %s", path, name, m->shard_names[i],
                             v ? "listed for another shard" : "not listed", m->index_name);
                    goto bad;
                }
            }
        }
    if (m->indexed) {
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(m->index, "weight_map"), k, v) {
            size_t s;
            if (!cli_model_find(m, k, &s)) {
                cli_errf(err, errlen, "%s: %s lists \"%s\" in %s, but it is not there", path, m->index_name, k,
                         json_string_value(v));
                goto bad;
            }
        }
    }
    return CLI_EXIT_OK;
oom:
    cli_errf(err, errlen, "%s: out of memory", path);
    cli_model_close(m);
    return CLI_EXIT_FAILURE;
bad:
    cli_model_close(m);
    return CLI_EXIT_BAD_INPUT;
}

const bnb4_st_tensor *cli_model_find(const cli_model *m, const char *name, size_t *shard) {
    for (size_t i = 0; i < m->nshards; i++) {
        const bnb4_st_tensor *t = bnb4_st_find(m->shards[i], name);
        if (t) {
            if (shard) *shard = i;
            return t;
        }
    }
    return NULL;
}

int cli_model_list_extra_files(const cli_model *m, char ***names, size_t *count, char *err, size_t errlen) {
    *names = NULL;
    *count = 0;
    if (!m->is_dir) return 0;
    DIR *d = opendir(m->path);
    if (!d) {
        cli_errf(err, errlen, "%s: cannot list: %s", m->path, strerror(errno));
        return -1;
    }
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "config.json") == 0) continue;
        if (m->index_name && strcmp(e->d_name, m->index_name) == 0) continue;
        int shard = 0;
        for (size_t i = 0; i < m->nshards; i++) shard |= strcmp(e->d_name, m->shard_names[i]) == 0;
        if (shard || str_ends_with(e->d_name, ".safetensors")) continue;
        char *p = cli_join(m->path, e->d_name);
        struct stat st;
        int regular = p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
        free(p);
        if (!regular) continue; /* sub-directories and special files are not part of a checkpoint */
        if (*count == cap) {
            size_t nc = cap ? 2 * cap : 16;
            char **q = realloc(*names, nc * sizeof *q);
            if (!q) goto oom;
            *names = q;
            cap = nc;
        }
        (*names)[*count] = cli_strdup(e->d_name);
        if (!(*names)[*count]) goto oom;
        (*count)++;
    }
    closedir(d);
    if (*count) qsort(*names, *count, sizeof **names, cmp_str);
    return 0;
oom:
    closedir(d);
    cli_errf(err, errlen, "out of memory");
    return -1;
}

/* ---- bitsandbytes 4-bit weights ----------------------------------------------------------------- */

static const char *const k_companions[] = {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                                           ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"};

int cli_is_companion_suffix(const char *name, const char *weight_name) {
    size_t wl = strlen(weight_name);
    if (strncmp(name, weight_name, wl) != 0) return 0;
    for (size_t i = 0; i < sizeof k_companions / sizeof k_companions[0]; i++)
        if (strcmp(name + wl, k_companions[i]) == 0) return 1;
    return 0;
}

static const bnb4_st_tensor *companion(const cli_model *m, const char *weight, const char *suffix) {
    size_t n = strlen(weight) + strlen(suffix) + 1;
    char *name = malloc(n);
    if (!name) return NULL;
    snprintf(name, n, "%s%s", weight, suffix);
    const bnb4_st_tensor *t = cli_model_find(m, name, NULL);
    free(name);
    return t;
}

static int check_f32_vec(const bnb4_st_tensor *t, uint64_t want, const char *what, const char *weight, char *err,
                         size_t errlen) {
    if (!t) {
        cli_errf(err, errlen, "quantized weight \"%s\": missing %s tensor", weight, what);
        return -1;
    }
    if (strcmp(t->dtype, "F32") != 0 || t->numel != want) {
        cli_errf(err, errlen, "quantized weight \"%s\": %s is %s with %llu elements, expected F32 with %llu", weight,
                 what, t->dtype, (unsigned long long)t->numel, (unsigned long long)want);
        return -1;
    }
    return 0;
}

int cli_qweight_load(const cli_model *m, const bnb4_st_tensor *state, cli_qweight *q, char *err, size_t errlen) {
    memset(q, 0, sizeof *q);
    const char *mark = strstr(state->name, ".quant_state.bitsandbytes__");
    if (!mark) {
        cli_errf(err, errlen, "\"%s\" is not a quant_state tensor", state->name);
        return CLI_EXIT_BAD_INPUT;
    }
    q->name = strndup(state->name, (size_t)(mark - state->name));
    if (!q->name) {
        cli_errf(err, errlen, "out of memory");
        return CLI_EXIT_FAILURE;
    }
    const char *suffix_type = mark + strlen(".quant_state.bitsandbytes__");
    q->state = state;
    if (strcmp(state->dtype, "U8") != 0) {
        cli_errf(err, errlen, "%s: malformed quant_state: dtype %s, expected U8", state->name, state->dtype);
        goto bad;
    }
    if (bnb4_qs_parse(state->data, state->nbytes, state->name, &q->qs, err, errlen) != 0) goto bad;
    const char *qt = q->qs.quant_type == BNB4_NF4 ? "nf4" : "fp4";
    if (strcmp(suffix_type, qt) != 0) {
        cli_errf(err, errlen, "%s: malformed quant_state: the key says %s but the blob says %s", state->name,
                 suffix_type, qt);
        goto bad;
    }
    uint64_t n = q->qs.numel, bs = q->qs.blocksize;
    uint64_t nb = n / bs + (n % bs != 0);
    q->packed = cli_model_find(m, q->name, &q->shard);
    if (!q->packed) {
        cli_errf(err, errlen, "quantized weight \"%s\": the packed weight tensor is missing", q->name);
        goto bad;
    }
    if (strcmp(q->packed->dtype, "U8") != 0 || q->packed->numel != n / 2 + (n & 1)) {
        cli_errf(err, errlen, "quantized weight \"%s\": packed data is %s with %llu elements, expected U8 with %llu",
                 q->name, q->packed->dtype, (unsigned long long)q->packed->numel,
                 (unsigned long long)(n / 2 + (n & 1)));
        goto bad;
    }
    q->absmax = companion(m, q->name, ".absmax");
    q->quant_map = companion(m, q->name, ".quant_map");
    if (!q->absmax) {
        cli_errf(err, errlen, "quantized weight \"%s\": missing absmax tensor", q->name);
        goto bad;
    }
    if (q->qs.nested) {
        if (strcmp(q->absmax->dtype, "U8") != 0 || q->absmax->numel != nb) {
            cli_errf(err, errlen, "quantized weight \"%s\": absmax is %s with %llu elements, expected U8 with %llu",
                     q->name, q->absmax->dtype, (unsigned long long)q->absmax->numel, (unsigned long long)nb);
            goto bad;
        }
        uint64_t nbs = q->qs.nested_blocksize;
        q->nested_absmax = companion(m, q->name, ".nested_absmax");
        q->nested_quant_map = companion(m, q->name, ".nested_quant_map");
        if (check_f32_vec(q->nested_absmax, nb / nbs + (nb % nbs != 0), "nested_absmax", q->name, err, errlen) ||
            check_f32_vec(q->nested_quant_map, 256, "nested_quant_map", q->name, err, errlen))
            goto bad;
        if (memcmp(q->nested_quant_map->data, bnb4_nested_code(), 256 * sizeof(float)) != 0) {
            cli_errf(err, errlen, "quantized weight \"%s\": nested_quant_map is not bitsandbytes' dynamic map",
                     q->name);
            goto bad;
        }
    } else if (check_f32_vec(q->absmax, nb, "absmax", q->name, err, errlen)) {
        goto bad;
    }
    if (check_f32_vec(q->quant_map, 16, "quant_map", q->name, err, errlen)) goto bad;
    if (memcmp(q->quant_map->data, bnb4_quant_map((bnb4_quant_type)q->qs.quant_type), 16 * sizeof(float)) != 0) {
        cli_errf(err, errlen, "quantized weight \"%s\": quant_map is not the standard %s code", q->name, qt);
        goto bad;
    }
    q->storage_bytes = q->packed->nbytes + q->absmax->nbytes + q->quant_map->nbytes + state->nbytes +
                       (q->nested_absmax ? q->nested_absmax->nbytes + q->nested_quant_map->nbytes : 0);
    return CLI_EXIT_OK;
bad:
    free(q->name);
    q->name = NULL;
    return CLI_EXIT_BAD_INPUT;
}

int cli_write_shard_index(const char *dir, const cli_model *m, json_t *weight_map, char *err, size_t errlen) {
    uint64_t total = 0;
    for (size_t s = 0; s < m->nshards; s++) {
        char *p = cli_join(dir, m->shard_names[s]);
        bnb4_st_file *f = NULL;
        const int bad = !p || bnb4_st_open(p, &f, err, errlen) != 0;
        free(p);
        if (bad)
            return -1;
        for (size_t i = 0; i < bnb4_st_count(f); i++)
            total += bnb4_st_at(f, i)->nbytes;
        bnb4_st_close(f);
    }
    json_t *idx = json_object(), *meta = json_object();
    char *p = cli_join(dir, m->index_name);
    const int bad = !idx || !meta || !p || json_object_set_new(meta, "total_size", json_integer((json_int_t)total)) ||
                    json_object_set_new(idx, "metadata", meta) || json_object_set(idx, "weight_map", weight_map);
    if (bad) {
        snprintf(err, errlen, "out of memory writing the index");
        if (!idx)
            json_decref(meta);
    }
    const int rc = bad ? -1 : cli_write_json(p, idx, 1, err, errlen);
    free(p);
    json_decref(idx);
    return rc;
}

int cli_model_copy_extra_files(const cli_model *m, const char *dir, char *err, size_t errlen) {
    char **extra = NULL;
    size_t nextra = 0;
    if (cli_model_list_extra_files(m, &extra, &nextra, err, errlen) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < nextra && rc == 0; i++) {
        char *src = cli_join(m->path, extra[i]), *dst = cli_join(dir, extra[i]);
        if (!src || !dst) {
            snprintf(err, errlen, "out of memory copying %s", extra[i]);
            rc = -1;
        } else if (cli_copy_file(src, dst, err, errlen) != 0) {
            rc = -1;
        }
        free(src);
        free(dst);
    }
    for (size_t i = 0; i < nextra; i++)
        free(extra[i]);
    free(extra);
    return rc;
}
