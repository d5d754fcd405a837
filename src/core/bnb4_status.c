/*
 * bnb4_status.c - status names and the per-thread detailed error message.
 */
#include <stdarg.h>
#include <stdio.h>

#include "bnb4_backend.h"

const char *bnb4_status_string(bnb4_status status) {
    switch (status) {
    case BNB4_OK:
        return "success";
    case BNB4_ERR_INVALID_ARGUMENT:
        return "invalid argument";
    case BNB4_ERR_UNSUPPORTED:
        return "unsupported configuration";
    case BNB4_ERR_OVERFLOW:
        return "size arithmetic overflows size_t";
    case BNB4_ERR_OUT_OF_MEMORY:
        return "out of memory";
    case BNB4_ERR_DEVICE:
        return "CUDA device error";
    }
    return "unknown status";
}

static _Thread_local char last_error[512];

const char *bnb4_last_error(void) { return last_error; }

bnb4_status bnb4_fail(bnb4_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}
