/*
 * bnb4_quant_state.c - bitsandbytes' quant_state JSON blob: exact writer and validating parser.
 *
 * jansson builds and prints the object (it keeps insertion order, and with flags 0 prints exactly
 * json.dumps' default separators ", " and ": "). The one float, nested_offset, is appended as Python's
 * repr() because no JSON library prints floats the way Python does (jansson uses %.17g and strips the
 * exponent's leading zeros).
 */
#include "bnb4_quant_state.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* bnb4_quant_type numbering (bitsandbytes'), repeated here so the tools library does not depend on
 * the core header. */
enum { QS_FP4 = 1, QS_NF4 = 2 };

static void qs_err(char *err, size_t errlen, const char *label, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    int n = snprintf(err, errlen, "%s: ", label ? label : "quant_state");
    if (n < 0 || (size_t)n >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* ---- Python float repr --------------------------------------------------------------------------- */

/* Does mantissa * 10^exp10 read back as x? */
static int repr_roundtrips(uint64_t mant, int exp10, double x) {
    char buf[48];
    snprintf(buf, sizeof buf, "%" PRIu64 "e%d", mant, exp10);
    return strtod(buf, NULL) == x;
}

int bnb4_py_float_repr(double x, char buf[32]) {
    if (isnan(x)) return snprintf(buf, 32, "NaN");
    if (isinf(x)) return snprintf(buf, 32, x > 0 ? "Infinity" : "-Infinity");
    int neg = signbit(x) != 0;
    double ax = fabs(x);
    if (ax == 0.0) return snprintf(buf, 32, neg ? "-0.0" : "0.0");

    /* Shortest digits: for p = 1..17 take the correctly rounded p-digit decimal (glibc's %e is exact);
     * if it does not round-trip, its neighbours may (the rounding interval of x is asymmetric at
     * powers of two), which is what Python's dtoa (mode 0) would find. */
    uint64_t mant = 0;
    int exp10 = 0; /* ax == mant * 10^exp10 after the search */
    int found = 0;
    for (int p = 1; p <= 17 && !found; p++) {
        char tmp[48];
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, ax);
        /* tmp = d.ddd...e+XX */
        uint64_t m = 0;
        const char *s = tmp;
        for (; *s && *s != 'e'; s++)
            if (*s >= '0' && *s <= '9') m = m * 10 + (uint64_t)(*s - '0');
        int e = atoi(s + 1) - (p - 1);
        if (repr_roundtrips(m, e, ax)) {
            mant = m, exp10 = e, found = 1;
        } else if (m > 1 && repr_roundtrips(m - 1, e, ax)) {
            mant = m - 1, exp10 = e, found = 1;
        } else if (repr_roundtrips(m + 1, e, ax)) {
            mant = m + 1, exp10 = e, found = 1;
        }
    }
    if (!found) { /* unreachable for IEEE doubles (17 digits always round-trip) */
        return snprintf(buf, 32, "%.17g", x);
    }
    while (mant % 10 == 0) mant /= 10, exp10++;
    char digits[24];
    int nd = snprintf(digits, sizeof digits, "%" PRIu64, mant);
    int decpt = nd + exp10; /* value = 0.digits * 10^decpt */

    char *o = buf;
    if (neg) *o++ = '-';
    if (decpt <= -4 || decpt > 16) {
        int e = decpt - 1;
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        o += sprintf(o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    } else if (decpt <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -decpt; i++) *o++ = '0';
        memcpy(o, digits, (size_t)nd);
        o += nd;
    } else if (decpt >= nd) {
        memcpy(o, digits, (size_t)nd);
        o += nd;
        for (int i = nd; i < decpt; i++) *o++ = '0';
        *o++ = '.';
        *o++ = '0';
    } else {
        memcpy(o, digits, (size_t)decpt);
        o += decpt;
        *o++ = '.';
        memcpy(o, digits + decpt, (size_t)(nd - decpt));
        o += nd - decpt;
    }
    *o = '\0';
    return (int)(o - buf);
}

/* ---- writer ------------------------------------------------------------------------------------- */

static const char *qs_type_name(int qt) { return qt == QS_NF4 ? "nf4" : qt == QS_FP4 ? "fp4" : NULL; }

int bnb4_qs_format(const bnb4_quant_state *qs, char **out, size_t *outlen, char *err, size_t errlen) {
    if (!qs || !out || !outlen) {
        qs_err(err, errlen, NULL, "invalid argument (NULL pointer)");
        return 1;
    }
    *out = NULL;
    *outlen = 0;
    const char *qt = qs_type_name(qs->quant_type);
    if (!qt || qs->ndim == 0 || qs->ndim > BNB4_QS_MAX_NDIM) {
        qs_err(err, errlen, NULL, "invalid quant_state to format (quant type %d, %zu dims)", qs->quant_type, qs->ndim);
        return 1;
    }
    json_t *o = json_object();
    json_t *shape = json_array();
    int bad = !o || !shape;
    bad |= json_object_set_new(o, "quant_type", json_string(qt));
    bad |= json_object_set_new(o, "blocksize", json_integer((json_int_t)qs->blocksize));
    bad |= json_object_set_new(o, "dtype", json_string(qs->dtype));
    for (size_t i = 0; i < qs->ndim && !bad; i++)
        bad |= json_array_append_new(shape, json_integer((json_int_t)qs->shape[i]));
    bad |= json_object_set_new(o, "shape", shape);
    shape = NULL;
    if (qs->nested) {
        bad |= json_object_set_new(o, "nested_blocksize", json_integer((json_int_t)qs->nested_blocksize));
        bad |= json_object_set_new(o, "nested_dtype", json_string(qs->nested_dtype));
    }
    char *text = bad ? NULL : json_dumps(o, 0); /* flags 0: ", " and ": " like json.dumps */
    json_decref(o);
    if (!text) {
        qs_err(err, errlen, NULL, "out of memory formatting quant_state");
        return 1;
    }
    size_t n = strlen(text);
    char num[32];
    int numlen = qs->nested ? bnb4_py_float_repr(qs->nested_offset, num) : 0;
    static const char key[] = ", \"nested_offset\": ";
    size_t cap = n + sizeof key + (size_t)numlen + 2;
    char *res = malloc(cap);
    if (!res) {
        free(text);
        qs_err(err, errlen, NULL, "out of memory formatting quant_state");
        return 1;
    }
    memcpy(res, text, n);
    free(text);
    if (qs->nested) { /* replace the closing brace: ..."nested_dtype": "float32", "nested_offset": X} */
        n--;
        memcpy(res + n, key, sizeof key - 1);
        n += sizeof key - 1;
        memcpy(res + n, num, (size_t)numlen);
        n += (size_t)numlen;
        res[n++] = '}';
    }
    res[n] = '\0';
    *out = res;
    *outlen = n;
    return 0;
}

/* ---- parser ------------------------------------------------------------------------------------- */

static int qs_blocksize_ok(uint64_t bs) {
    for (uint64_t b = 32; b <= 4096; b *= 2)
        if (bs == b) return 1;
    return 0;
}

int bnb4_qs_parse(const void *buf, size_t len, const char *label, bnb4_quant_state *qs, char *err,
                  size_t errlen) {
    if (!label) label = "quant_state";
    if (!qs || (!buf && len)) {
        qs_err(err, errlen, label, "invalid argument (NULL pointer)");
        return 1;
    }
    memset(qs, 0, sizeof *qs);
    json_error_t jerr;
    json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        qs_err(err, errlen, label, "malformed quant_state: bad JSON at byte %d: %s", jerr.position, jerr.text);
        return 1;
    }
    int rc = 1;
    if (!json_is_object(o)) {
        qs_err(err, errlen, label, "malformed quant_state: not a JSON object");
        goto done;
    }
    const char *key;
    json_t *v;
    int have_nested = 0;
    json_object_foreach(o, key, v) {
        if (strcmp(key, "quant_type") == 0 || strcmp(key, "blocksize") == 0 || strcmp(key, "dtype") == 0 ||
            strcmp(key, "shape") == 0)
            continue;
        if (strcmp(key, "nested_blocksize") == 0 || strcmp(key, "nested_dtype") == 0 ||
            strcmp(key, "nested_offset") == 0) {
            have_nested++;
            continue;
        }
        qs_err(err, errlen, label, "malformed quant_state: unknown key \"%s\"", key);
        goto done;
    }
    json_t *jqt = json_object_get(o, "quant_type");
    const char *qt = json_is_string(jqt) ? json_string_value(jqt) : NULL;
    if (!qt || (strcmp(qt, "nf4") != 0 && strcmp(qt, "fp4") != 0)) {
        qs_err(err, errlen, label, "malformed quant_state: quant_type must be \"nf4\" or \"fp4\"");
        goto done;
    }
    qs->quant_type = strcmp(qt, "nf4") == 0 ? QS_NF4 : QS_FP4;
    json_t *jbs = json_object_get(o, "blocksize");
    if (!json_is_integer(jbs) || json_integer_value(jbs) <= 0 ||
        !qs_blocksize_ok((uint64_t)json_integer_value(jbs))) {
        qs_err(err, errlen, label, "malformed quant_state: blocksize must be one of 32, 64, ..., 4096");
        goto done;
    }
    qs->blocksize = (uint64_t)json_integer_value(jbs);
    json_t *jdt = json_object_get(o, "dtype");
    const char *dt = json_is_string(jdt) ? json_string_value(jdt) : NULL;
    if (!dt || (strcmp(dt, "float16") != 0 && strcmp(dt, "bfloat16") != 0 && strcmp(dt, "float32") != 0)) {
        qs_err(err, errlen, label, "malformed quant_state: dtype must be float16, bfloat16 or float32");
        goto done;
    }
    snprintf(qs->dtype, sizeof qs->dtype, "%s", dt);
    json_t *js = json_object_get(o, "shape");
    if (!json_is_array(js) || json_array_size(js) == 0 || json_array_size(js) > BNB4_QS_MAX_NDIM) {
        qs_err(err, errlen, label, "malformed quant_state: shape must be a list of 1 to %d integers", BNB4_QS_MAX_NDIM);
        goto done;
    }
    qs->ndim = json_array_size(js);
    qs->numel = 1;
    for (size_t i = 0; i < qs->ndim; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) <= 0) {
            qs_err(err, errlen, label, "malformed quant_state: shape entry %zu is not a positive integer", i);
            goto done;
        }
        uint64_t dim = (uint64_t)json_integer_value(d);
        if (qs->numel > UINT64_MAX / dim) {
            qs_err(err, errlen, label, "malformed quant_state: shape overflows 64 bits");
            goto done;
        }
        qs->shape[i] = dim;
        qs->numel *= dim;
    }
    if (have_nested != 0 && have_nested != 3) {
        qs_err(err, errlen, label,
               "malformed quant_state: nested_blocksize, nested_dtype and nested_offset must appear together");
        goto done;
    }
    if (have_nested) {
        qs->nested = 1;
        json_t *nb = json_object_get(o, "nested_blocksize");
        if (!json_is_integer(nb) || json_integer_value(nb) <= 0) {
            qs_err(err, errlen, label, "malformed quant_state: nested_blocksize must be a positive integer");
            goto done;
        }
        qs->nested_blocksize = (uint64_t)json_integer_value(nb);
        json_t *nd = json_object_get(o, "nested_dtype");
        if (!json_is_string(nd) || strcmp(json_string_value(nd), "float32") != 0) {
            qs_err(err, errlen, label, "malformed quant_state: nested_dtype must be \"float32\"");
            goto done;
        }
        snprintf(qs->nested_dtype, sizeof qs->nested_dtype, "float32");
        json_t *no = json_object_get(o, "nested_offset");
        if (!json_is_number(no)) {
            qs_err(err, errlen, label, "malformed quant_state: nested_offset must be a number");
            goto done;
        }
        qs->nested_offset = json_number_value(no);
    }
    rc = 0;
done:
    json_decref(o);
    return rc;
}
