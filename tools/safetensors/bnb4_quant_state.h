/*
 * bnb4_quant_state.h - bitsandbytes' serialized 4-bit quant_state: the JSON blob stored as the U8
 * tensor `<P>.weight.quant_state.bitsandbytes__<nf4|fp4>` next to a quantized weight.
 *
 * bitsandbytes writes it with Python's json.dumps(QuantState.as_dict(packed=True) non-tensor items):
 *   {"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [512, 256],
 *    "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.06151936948299408}
 * (the nested_* keys only with double quantization). bnb4_qs_format reproduces those bytes exactly:
 * the key order, json.dumps' default ", " / ": " separators, and nested_offset as Python's repr() of the
 * float32 offset widened to double (shortest round-trip digits; see bnb4_py_float_repr).
 * bnb4_qs_parse validates such a blob (any JSON formatting) for dequantize and inspect.
 */
#ifndef BNB4_QUANT_STATE_H
#define BNB4_QUANT_STATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BNB4_QS_MAX_NDIM 8

typedef struct bnb4_quant_state {
    int quant_type;            /* bnb4_quant_type: 1 = fp4, 2 = nf4 */
    uint64_t blocksize;
    char dtype[16];            /* torch dtype name without "torch.": "float16", "bfloat16", "float32" */
    size_t ndim;
    uint64_t shape[BNB4_QS_MAX_NDIM];
    uint64_t numel;            /* product of shape */
    int nested;                /* 1 when the nested_* fields are present */
    uint64_t nested_blocksize;
    char nested_dtype[16];
    double nested_offset;      /* as written (a float32 value widened to double by bitsandbytes) */
} bnb4_quant_state;

/* Python's repr() of a double, as json.dumps writes a float: the shortest decimal that round-trips,
 * fixed notation for 1e-4 <= |x| < 1e16 (with ".0" when integral), otherwise d.ddde[+-]XX; non-finite
 * values as json.dumps writes them: NaN, Infinity, -Infinity. Returns the length written (< 32);
 * buf needs 32 bytes. */
int bnb4_py_float_repr(double x, char buf[32]);

/* Writes the blob as bitsandbytes does into a malloc'd buffer (*out, *outlen; not NUL-terminated in
 * the tensor, but *out is NUL-terminated for convenience). 0 on success; non-zero with a message. */
int bnb4_qs_format(const bnb4_quant_state *qs, char **out, size_t *outlen, char *err, size_t errlen);

/* Parses and validates a blob: a JSON object with quant_type nf4|fp4, a supported blocksize, a dtype
 * of float16/bfloat16/float32, a shape of 1..8 positive integers, and either all or none of
 * nested_blocksize (> 0), nested_dtype (float32) and nested_offset (a number). Unknown keys are
 * rejected. 0 on success; non-zero with a message (prefixed by `label`) in err. */
int bnb4_qs_parse(const void *buf, size_t len, const char *label, bnb4_quant_state *qs, char *err,
                  size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* BNB4_QUANT_STATE_H */
