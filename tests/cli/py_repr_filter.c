/* py_repr_filter.c - reads IEEE-754 doubles as 16 hex digits, one per line, and prints
 * bnb4_py_float_repr of each: the C side of check_py_float_repr.py (a live comparison with Python). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnb4_quant_state.h"

int main(void) {
    char line[64], out[32];
    while (fgets(line, sizeof line, stdin)) {
        uint64_t bits = strtoull(line, NULL, 16);
        double d;
        memcpy(&d, &bits, sizeof d);
        bnb4_py_float_repr(d, out);
        puts(out);
    }
    return 0;
}
