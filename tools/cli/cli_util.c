/*
 * cli_util.c - the bnb4 command's plumbing: messages, interrupt flag, file-system helpers (temporary
 * directories, atomic JSON files, committing a directory), progress reporting and the thread pool.
 */
#define _DEFAULT_SOURCE
#define _GNU_SOURCE /* copy_file_range, renameat2 are optional; strndup */
#include "bnb4_cli.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- messages ----------------------------------------------------------------------------------- */

void cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bnb4: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void cli_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bnb4: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void cli_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- interrupts --------------------------------------------------------------------------------- */

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
    if (g_interrupted) { /* second signal: give up on cleanup, die the default way */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_interrupted = sig;
}

void cli_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int cli_interrupted(void) { return g_interrupted != 0; }

/* ---- small utilities ---------------------------------------------------------------------------- */

char *cli_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

char *cli_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int cli_natural_cmp(const char *a, const char *b) {
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0') a++;
            while (*b == '0') b++;
            size_t la = 0, lb = 0;
            while (isdigit((unsigned char)a[la])) la++;
            while (isdigit((unsigned char)b[lb])) lb++;
            if (la != lb) return la < lb ? -1 : 1;
            int c = strncmp(a, b, la);
            if (c) return c;
            a += la;
            b += lb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++, b++;
        }
    }
    return (unsigned char)*a - (unsigned char)*b;
}

void cli_human_bytes(double bytes, char buf[32]) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) bytes /= 1024.0, u++;
    if (u == 0)
        snprintf(buf, 32, "%.0f B", bytes);
    else
        snprintf(buf, 32, "%.*f %s", bytes < 10 ? 2 : 1, bytes, units[u]);
}

static const bnb4_dtype k_dtypes[] = {BNB4_F32, BNB4_F16, BNB4_BF16};
static const char *const k_st_tags[] = {"F32", "F16", "BF16"};

int cli_dtype_from_st(const char *tag, bnb4_dtype *d) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (!strcmp(tag, k_st_tags[i])) {
            *d = k_dtypes[i];
            return 0;
        }
    return -1;
}

int cli_dtype_from_torch(const char *name, bnb4_dtype *d) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (!strcmp(name, bnb4_dtype_name(k_dtypes[i]))) {
            *d = k_dtypes[i];
            return 0;
        }
    return -1;
}

const char *cli_dtype_st(bnb4_dtype d) { return d == BNB4_F32 ? "F32" : d == BNB4_F16 ? "F16" : "BF16"; }

int cli_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > 1024 ? 1024 : n) : 1;
}

int cli_parse_threads(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > 1024) return -1;
    *out = v == 0 ? cli_default_threads() : (int)v;
    return 0;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t cli_peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (uint64_t)ru.ru_maxrss * 1024u; /* KiB on Linux */
}

/* ---- files and directories ---------------------------------------------------------------------- */

int cli_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cli_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

int cli_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void split_path(const char *path, char **dir, const char **base) {
    /* strip trailing slashes for the base name */
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *end = path + n;
    const char *slash = NULL;
    for (const char *p = path; p < end; p++)
        if (*p == '/') slash = p;
    if (slash) {
        *dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
        *base = slash + 1;
    } else {
        *dir = cli_strdup(".");
        *base = path;
    }
}

char *cli_make_temp_dir(const char *out, char *err, size_t errlen) {
    char *dir;
    const char *base;
    split_path(out, &dir, &base);
    if (!dir) {
        cli_errf(err, errlen, "%s: out of memory", out);
        return NULL;
    }
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/') blen--;
    size_t cap = strlen(dir) + blen + 32;
    char *tmpl = malloc(cap);
    if (!tmpl) {
        free(dir);
        cli_errf(err, errlen, "%s: out of memory", out);
        return NULL;
    }
    snprintf(tmpl, cap, "%s/.%.*s.tmp-XXXXXX", dir, (int)blen, base);
    free(dir);
    if (!mkdtemp(tmpl)) {
        cli_errf(err, errlen, "%s: cannot create a temporary directory next to it: %s", out, strerror(errno));
        free(tmpl);
        return NULL;
    }
    /* mkdtemp makes 0700; the finished directory should get what mkdir would give (umask applies) */
    mode_t mask = umask(0);
    umask(mask);
    chmod(tmpl, 0777 & ~mask);
    return tmpl;
}

int cli_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = cli_join(path, e->d_name);
        if (!p || cli_remove_tree(p) != 0) rc = -1;
        free(p);
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
}

int cli_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all_fd(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int cli_copy_file(const char *src, const char *dst, char *err, size_t errlen) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        cli_errf(err, errlen, "%s: cannot open: %s", src, strerror(errno));
        return -1;
    }
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (out < 0) {
        cli_errf(err, errlen, "%s: cannot create: %s", dst, strerror(errno));
        close(in);
        return -1;
    }
    char *buf = malloc(1 << 20);
    int rc = buf ? 0 : -1;
    while (rc == 0) {
        ssize_t r = read(in, buf, 1 << 20);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            cli_errf(err, errlen, "%s: read failed: %s", src, strerror(errno));
            rc = -1;
            break;
        }
        if (r == 0) break;
        if (write_all_fd(out, buf, (size_t)r) != 0) {
            cli_errf(err, errlen, "%s: write failed: %s", dst, strerror(errno));
            rc = -1;
        }
    }
    if (!buf) cli_errf(err, errlen, "out of memory");
    free(buf);
    if (rc == 0 && fsync(out) != 0) {
        cli_errf(err, errlen, "%s: fsync failed: %s", dst, strerror(errno));
        rc = -1;
    }
    close(in);
    if (close(out) != 0 && rc == 0) {
        cli_errf(err, errlen, "%s: close failed: %s", dst, strerror(errno));
        rc = -1;
    }
    if (rc != 0) unlink(dst);
    return rc;
}

json_t *cli_read_json(const char *path, char *err, size_t errlen) {
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) cli_errf(err, errlen, "%s: bad JSON (line %d, column %d): %s", path, je.line, je.column, je.text);
    return doc;
}

/* Does every real in the document read back exactly when printed with %.{p}g? */
static int reals_roundtrip(const json_t *v, int p) {
    if (json_is_real(v)) {
        char buf[40];
        snprintf(buf, sizeof buf, "%.*g", p, json_real_value(v));
        return strtod(buf, NULL) == json_real_value(v);
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) if (!reals_roundtrip(x, p)) return 0;
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) if (!reals_roundtrip(x, p)) return 0;
    }
    return 1;
}

int cli_write_json(const char *path, json_t *doc, int sort_keys, char *err, size_t errlen) {
    /* JSON_INDENT(2) gives json.dumps(indent=2)'s layout. jansson prints every real with one precision;
     * the smallest that round-trips all of them keeps 1e-05 from becoming 1.0000000000000001e-5. */
    int prec = 1;
    while (prec < 17 && !reals_roundtrip(doc, prec)) prec++;
    char *text = json_dumps(doc, JSON_INDENT(2) | (sort_keys ? JSON_SORT_KEYS : 0) | JSON_REAL_PRECISION(prec));
    if (!text) {
        cli_errf(err, errlen, "%s: out of memory formatting JSON", path);
        return -1;
    }
    size_t cap = strlen(path) + 32;
    char *tmp = malloc(cap);
    if (!tmp) {
        free(text);
        cli_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    snprintf(tmp, cap, "%s.tmp-%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    int rc = -1;
    if (fd < 0) {
        cli_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    } else if (write_all_fd(fd, text, strlen(text)) != 0 || write_all_fd(fd, "\n", 1) != 0 || fsync(fd) != 0) {
        cli_errf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
    } else if (close(fd) != 0 || rename(tmp, path) != 0) {
        cli_errf(err, errlen, "%s: cannot finish writing: %s", path, strerror(errno));
        unlink(tmp);
    } else {
        rc = 0;
    }
    free(tmp);
    free(text);
    return rc;
}

int cli_commit_dir(const char *tmp, const char *out, int force, char *err, size_t errlen) {
    char *parent;
    const char *base;
    split_path(out, &parent, &base);
    if (!parent) {
        cli_errf(err, errlen, "out of memory");
        return -1;
    }
    cli_fsync_dir(tmp);
    char *old = NULL;
    if (cli_exists(out)) {
        if (!force) {
            cli_errf(err, errlen, "%s already exists (use --force to replace it)", out);
            free(parent);
            return -1;
        }
        /* move the old one aside first, so OUT is never half old, half new */
        old = cli_make_temp_dir(out, err, errlen);
        if (!old || rmdir(old) != 0 || rename(out, old) != 0) {
            cli_errf(err, errlen, "%s: cannot move the existing output aside: %s", out, strerror(errno));
            free(old);
            free(parent);
            return -1;
        }
    }
    if (rename(tmp, out) != 0) {
        int e = errno;
        if (old) rename(old, out); /* put the old one back */
        cli_errf(err, errlen, "%s: cannot rename the finished output into place: %s", out, strerror(e));
        free(old);
        free(parent);
        return -1;
    }
    cli_fsync_dir(parent);
    if (old) {
        if (cli_remove_tree(old) != 0) cli_warn("could not remove the replaced output %s", old);
        free(old);
    }
    free(parent);
    return 0;
}

/* ---- progress ------------------------------------------------------------------------------------ */

void cli_progress_init(cli_progress *p, int quiet, const char *verb, uint64_t tensors, uint64_t bytes) {
    memset(p, 0, sizeof *p);
    p->mode = quiet ? 0 : (isatty(STDERR_FILENO) ? 2 : 1);
    p->verb = verb;
    p->total_tensors = tensors;
    p->total_bytes = bytes;
    p->start = cli_now();
}

static void progress_draw(cli_progress *p, int final) {
    double now = cli_now();
    if (!final && now - p->last_draw < 0.1) return;
    p->last_draw = now;
    double frac = p->total_bytes ? (double)p->done_bytes / (double)p->total_bytes : 1.0;
    if (frac > 1) frac = 1;
    double el = now - p->start;
    double rate = el > 0 ? (double)p->done_bytes / el : 0;
    char done[32], total[32], r[32];
    cli_human_bytes((double)p->done_bytes, done);
    cli_human_bytes((double)p->total_bytes, total);
    cli_human_bytes(rate, r);
    char eta[32] = "--";
    if (rate > 0 && !final) snprintf(eta, sizeof eta, "%.0fs", (double)(p->total_bytes - p->done_bytes) / rate);
    if (final) snprintf(eta, sizeof eta, "%.1fs", el);
    const int width = 24;
    char bar[32];
    int fill = (int)(frac * width + 0.5);
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%s [%s] %3.0f%% %llu/%llu tensors %s/%s %s/s %s %s\033[K", p->verb, bar, frac * 100,
            (unsigned long long)p->done_tensors, (unsigned long long)p->total_tensors, done, total, r,
            final ? "in" : "ETA", eta);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

void cli_progress_add(cli_progress *p, uint64_t tensors, uint64_t bytes) {
    p->done_tensors += tensors;
    p->done_bytes += bytes;
    if (p->mode == 2) progress_draw(p, 0);
}

void cli_progress_finish(cli_progress *p, const char *fmt, ...) {
    if (p->mode == 0) return;
    if (p->mode == 2) progress_draw(p, 1);
    va_list ap;
    va_start(ap, fmt);
    fputs("bnb4: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- parallel work ------------------------------------------------------------------------------- */

typedef struct par_state {
    cli_task_fn fn;
    void *arg;
    size_t n;
    atomic_size_t next;
    atomic_int result;
} par_state;

typedef struct par_worker {
    par_state *s;
    int id;
} par_worker;

static void *par_run(void *p) {
    par_worker *w = p;
    par_state *s = w->s;
    for (;;) {
        if (atomic_load(&s->result) != 0) break;
        if (cli_interrupted()) {
            int zero = 0;
            atomic_compare_exchange_strong(&s->result, &zero, CLI_EXIT_INTERRUPTED);
            break;
        }
        size_t i = atomic_fetch_add(&s->next, 1);
        if (i >= s->n) break;
        int rc = s->fn(s->arg, i, w->id);
        if (rc != 0) {
            int zero = 0;
            atomic_compare_exchange_strong(&s->result, &zero, rc);
            break;
        }
    }
    return NULL;
}

int cli_parallel(int threads, size_t n, cli_task_fn fn, void *arg) {
    if (n == 0) return 0;
    if (threads < 1) threads = 1;
    if ((size_t)threads > n) threads = (int)n;
    par_state s;
    s.fn = fn;
    s.arg = arg;
    s.n = n;
    atomic_init(&s.next, 0);
    atomic_init(&s.result, 0);
    par_worker ws[1024];
    pthread_t tid[1024];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        ws[t].s = &s;
        ws[t].id = t;
        if (pthread_create(&tid[t], NULL, par_run, &ws[t]) != 0) break;
        started = t;
    }
    ws[0].s = &s;
    ws[0].id = 0;
    par_run(&ws[0]); /* the calling thread works too */
    for (int t = 1; t <= started; t++) pthread_join(tid[t], NULL);
    return atomic_load(&s.result);
}
