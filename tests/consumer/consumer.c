/* consumer.c - quantizes and multiplies a tiny layer through the installed bnb4. */
#include <bnb4.h>
#include <math.h>
#include <stdio.h>

int main(void) {
    float w[4 * 64], x[64], y[4];
    for (int i = 0; i < 4 * 64; i++)
        w[i] = (float)((i * 37) % 17) / 8.0f - 1.0f;
    for (int i = 0; i < 64; i++)
        x[i] = 1.0f / 64.0f;
    unsigned char packed[4 * 64 / 2];
    float absmax[4];
    if (bnb4_quantize(NULL, w, BNB4_F32, 4 * 64, 64, BNB4_NF4, packed, absmax) != BNB4_OK)
        return 1;
    bnb4_qtensor q = bnb4_qtensor_plain(4, 64, 64, BNB4_NF4, packed, absmax);
    if (bnb4_gemv(NULL, &q, BNB4_F32, x, NULL, y) != BNB4_OK)
        return 2;
    printf("bnb4 %s: y = %.4f %.4f %.4f %.4f", bnb4_version_string(), y[0], y[1], y[2], y[3]);
    return isfinite(y[0]) ? 0 : 3;
}
