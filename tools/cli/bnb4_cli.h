/*
 * bnb4_cli.h - shared declarations of the bnb4 command (tools/cli/ sources).
 *
 * The command is a thin layer over libbnb4 (the kernels) and bnb4_safetensors (reading/writing
 * checkpoints): model discovery (a file, or a Hugging Face directory with shards and an index),
 * atomic output (everything is built in a temporary file or directory next to OUT and renamed into
 * place), a work pool that runs the kernels on block-aligned chunks with all threads, progress
 * reporting and interrupt handling.
 */
#ifndef BNB4_CLI_H
#define BNB4_CLI_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "bnb4.h"
#include "bnb4_quant_state.h"
#include "bnb4_safetensors.h"

/* Exit codes (documented in `bnb4 --help` and docs/cli.md). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,     /* I/O error, out of memory, kernel or device error */
    CLI_EXIT_USAGE = 2,       /* bad command line */
    CLI_EXIT_BAD_INPUT = 3,   /* input missing, unreadable, malformed or unsupported */
    CLI_EXIT_EXISTS = 4,      /* OUT exists and --force was not given */
    CLI_EXIT_INTERRUPTED = 130
};

#define CLI_ERRLEN 1024

/* ---- messages ----------------------------------------------------------------------------------- */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- interrupts: SIGINT/SIGTERM/SIGHUP set a flag that long loops poll; a second one kills at once */
void cli_signals_install(void);
int cli_interrupted(void);

/* ---- small utilities ---------------------------------------------------------------------------- */
char *cli_strdup(const char *s);
char *cli_join(const char *dir, const char *name); /* dir + "/" + name, malloc'd */
int cli_natural_cmp(const char *a, const char *b); /* "layers.2" < "layers.10" */
/* The activation dtypes by their safetensors tag ("F32", "F16", "BF16") and torch name ("float32", ...,
 * which is bnb4_dtype_name()). The parsers return 0, or -1 for any other dtype. */
int cli_dtype_from_st(const char *tag, bnb4_dtype *d);
int cli_dtype_from_torch(const char *name, bnb4_dtype *d);
const char *cli_dtype_st(bnb4_dtype d);
void cli_human_bytes(double bytes, char buf[32]);
int cli_parse_threads(const char *s, int *out);
int cli_default_threads(void);
double cli_now(void);
uint64_t cli_peak_rss_bytes(void);

/* ---- files and directories ---------------------------------------------------------------------- */
int cli_is_dir(const char *path);
int cli_exists(const char *path);
int cli_same_file(const char *a, const char *b);
/* Temporary directory "<parent of out>/.<base of out>.tmp-XXXXXX". */
char *cli_make_temp_dir(const char *out, char *err, size_t errlen);
int cli_remove_tree(const char *path);
/* Copies a regular file (fsync'd). */
int cli_copy_file(const char *src, const char *dst, char *err, size_t errlen);
/* Writes a JSON document to path atomically (temp + fsync + rename), as Python's
 * json.dumps(indent=2, sort_keys=sort) + "\n" lays it out. */
int cli_write_json(const char *path, json_t *doc, int sort_keys, char *err, size_t errlen);
json_t *cli_read_json(const char *path, char *err, size_t errlen);
/* Moves the finished temporary directory onto out (replacing an existing one when force). */
int cli_commit_dir(const char *tmp, const char *out, int force, char *err, size_t errlen);
int cli_fsync_dir(const char *dir);

/* ---- models: a .safetensors file, or a directory of shards -------------------------------------- */
typedef struct cli_model {
    char *path;
    int is_dir;
    int indexed;              /* the directory had model.safetensors.index.json */
    char *index_name;         /* its file name */
    size_t nshards;
    char **shard_names;       /* file names (basename for a single file) */
    bnb4_st_file **shards;
    json_t *config;           /* config.json, or NULL */
    json_t *index;            /* the parsed index, or NULL */
    uint64_t total_tensors, total_bytes;
} cli_model;
/* Opens and validates every shard. Returns a CLI_EXIT_* code with a message in err. */
int cli_model_open(const char *path, cli_model *m, char *err, size_t errlen);
void cli_model_close(cli_model *m);
/* Finds a tensor in any shard; *shard receives its shard index. */
const bnb4_st_tensor *cli_model_find(const cli_model *m, const char *name, size_t *shard);
/* Extra files of a model directory to copy unchanged (not shards, not the index, not config.json). */
int cli_model_list_extra_files(const cli_model *m, char ***names, size_t *count, char *err, size_t errlen);
/* Copies those extra files (tokenizer, generation config, ...) unchanged into dir. 0 on success. */
int cli_model_copy_extra_files(const cli_model *m, const char *dir, char *err, size_t errlen);
/* Writes the output's model.safetensors.index.json into dir: the shards (named as m's, already written
 * in dir) and weight_map (tensor -> shard file), with metadata.total_size = the bytes of all tensors,
 * as transformers' save_pretrained counts it. 0 on success, else a message in err. */
int cli_write_shard_index(const char *dir, const cli_model *m, json_t *weight_map, char *err, size_t errlen);

/* ---- bitsandbytes 4-bit weights in a checkpoint -------------------------------------------------- */
typedef struct cli_qweight {
    char *name;                   /* "P.weight" */
    bnb4_quant_state qs;
    const bnb4_st_tensor *packed, *absmax, *quant_map, *nested_absmax, *nested_quant_map, *state;
    size_t shard;                 /* shard holding the packed weight */
    uint64_t storage_bytes;       /* all companion tensors together */
} cli_qweight;
/* Recognises "P.weight.quant_state.bitsandbytes__nf4|fp4" and validates P.weight and its companions
 * (sizes, dtypes, standard code maps). 0, or CLI_EXIT_BAD_INPUT with a message. */
int cli_qweight_load(const cli_model *m, const bnb4_st_tensor *state, cli_qweight *q, char *err, size_t errlen);
/* 1 if name is one of a quantized weight's companions (".absmax", ".quant_map", ...). */
int cli_is_companion_suffix(const char *name, const char *weight_name);
/* The library view of q (absmax decoding for nested states happens in the caller). */

/* ---- progress ------------------------------------------------------------------------------------ */
typedef struct cli_progress {
    int mode;                    /* 0 quiet, 1 summary line, 2 bar on a terminal */
    const char *verb;
    uint64_t total_tensors, done_tensors;
    uint64_t total_bytes, done_bytes;
    double start, last_draw;
} cli_progress;
void cli_progress_init(cli_progress *p, int quiet, const char *verb, uint64_t tensors, uint64_t bytes);
void cli_progress_add(cli_progress *p, uint64_t tensors, uint64_t bytes);
void cli_progress_finish(cli_progress *p, const char *summary_fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- parallel work on chunks ------------------------------------------------------------------- */
/* Runs fn(arg, i, worker) for i in [0, n) on `threads` workers (worker < threads). Stops handing out
 * new items after a non-zero return or an interrupt; returns the first non-zero result (or 0). */
typedef int (*cli_task_fn)(void *arg, size_t i, int worker);
int cli_parallel(int threads, size_t n, cli_task_fn fn, void *arg);

/* ---- commands ---------------------------------------------------------------------------------- */
int cli_cmd_quantize(int argc, char **argv);
int cli_cmd_dequantize(int argc, char **argv);
int cli_cmd_inspect(int argc, char **argv);
int cli_cmd_info(int argc, char **argv);
int cli_cmd_bench(int argc, char **argv);

#ifdef BNB4_WITH_CUDA
/* Quantizes one tensor on the GPU (host buffers in and out); see cli_cuda.c. */
int cli_cuda_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype dtype, size_t n, size_t blocksize,
                      bnb4_quant_type qt, int nested, uint8_t *packed, float *absmax, uint8_t *absmax_codes,
                      float *nested_absmax, float *offset, char *err, size_t errlen);
#endif

#endif /* BNB4_CLI_H */
