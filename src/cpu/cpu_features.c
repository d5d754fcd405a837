/*
 * cpu_features.c - run-time CPU feature detection, done once per process.
 *
 * x86-64: cpuid for what the CPU implements, xgetbv (XCR0) for what the OS saves on context switch:
 * AVX needs XMM|YMM state, AVX-512 also opmask|ZMM_Hi256|Hi16_ZMM, AMX also XTILECFG|XTILEDATA plus
 * Linux's arch_prctl(ARCH_REQ_XCOMP_PERM) permission request. A feature the OS does not save is
 * reported absent. aarch64: Advanced SIMD is architectural.
 *
 * BNB4_ISA=scalar|avx2|avx512|amx|neon selects a lower level than the best one (for tests and
 * comparisons); a level above what the machine has is capped to the best, with a note.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#define BNB4_X86 1
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#endif

static bnb4_cpu_info info;
static pthread_once_t info_once = PTHREAD_ONCE_INIT;

const char *bnb4_isa_name(bnb4_isa isa) {
    switch (isa) {
    case BNB4_ISA_SCALAR:
        return "scalar";
    case BNB4_ISA_AVX2:
        return "avx2";
    case BNB4_ISA_AVX512:
        return "avx512";
    case BNB4_ISA_AMX:
        return "amx";
    case BNB4_ISA_NEON:
        return "neon";
    }
    return "?";
}

int bnb4_isa_parse(const char *s) {
    static const bnb4_isa all[] = {BNB4_ISA_SCALAR, BNB4_ISA_AVX2, BNB4_ISA_AVX512, BNB4_ISA_AMX, BNB4_ISA_NEON};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, bnb4_isa_name(all[i])) == 0)
            return (int)all[i];
    return -1;
}

static void add_feature(const char *name) {
    const size_t len = strlen(info.features);
    snprintf(info.features + len, sizeof info.features - len, "%s%s", len ? " " : "", name);
}

#if BNB4_X86
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* Linux keeps AMX tile data off until a process asks (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA). */
static int request_amx_permission(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}

static void detect_x86(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    const int os_avx = (xcr0 & 0x6) == 0x6;            /* XMM | YMM */
    const int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0; /* opmask | ZMM_Hi256 | Hi16_ZMM */
    const int os_amx = (xcr0 & 0x60000) == 0x60000;    /* XTILECFG | XTILEDATA */
    unsigned b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d7);
        __cpuid_count(7, 1, a71, b, c, d);
    }
    const int avx2 = os_avx && avx && fma && f16c && ((b7 >> 5) & 1);
    const int avx512 = avx2 && os_avx512 && ((b7 >> 16) & 1) /* F */ && ((b7 >> 30) & 1) /* BW */ &&
                       ((b7 >> 31) & 1) /* VL */;
    const int avx512bf16 = avx512 && ((a71 >> 5) & 1);
    const int avx512fp16 = avx512 && ((d7 >> 23) & 1);
    const int avx512vnni = avx512 && ((c7 >> 11) & 1);
    const int amx = avx512bf16 && os_amx && ((d7 >> 22) & 1) /* AMX-BF16 */ && ((d7 >> 24) & 1) /* AMX-TILE */ &&
                    request_amx_permission();
    if (os_avx && avx)
        add_feature("avx");
    if (avx2)
        add_feature("avx2 fma f16c");
    if (avx512)
        add_feature("avx512f avx512bw avx512vl");
    if (avx512bf16)
        add_feature("avx512bf16");
    if (avx512fp16)
        add_feature("avx512fp16");
    if (avx512vnni)
        add_feature("avx512vnni");
    if (amx)
        add_feature("amx-tile amx-bf16");
    info.has_avx512bf16 = avx512bf16;
    info.best = amx ? BNB4_ISA_AMX : avx512 ? BNB4_ISA_AVX512 : avx2 ? BNB4_ISA_AVX2 : BNB4_ISA_SCALAR;
}
#endif

/* Which levels exist on this architecture (a forced level must be one of them). */
static int level_exists_here(bnb4_isa isa) {
#if BNB4_X86
    return isa != BNB4_ISA_NEON;
#elif defined(__aarch64__)
    return isa == BNB4_ISA_SCALAR || isa == BNB4_ISA_NEON;
#else
    return isa == BNB4_ISA_SCALAR;
#endif
}

static void detect(void) {
    info.best = BNB4_ISA_SCALAR;
#if BNB4_X86
    detect_x86();
#elif defined(__aarch64__)
    add_feature("neon");
    info.best = BNB4_ISA_NEON;
#endif
    if (!info.features[0])
        add_feature("none");
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    info.num_cores = cores > 0 ? (int)(cores < 1024 ? cores : 1024) : 1;
    info.level = info.best;
    const char *env = getenv("BNB4_ISA");
    if (env && *env) {
        const int forced = bnb4_isa_parse(env);
        if (forced < 0 || !level_exists_here((bnb4_isa)forced))
            snprintf(info.isa_note, sizeof info.isa_note, "BNB4_ISA=%.32s is not a level of this architecture; using %s",
                     env, bnb4_isa_name(info.best));
        else if ((bnb4_isa)forced > info.best)
            snprintf(info.isa_note, sizeof info.isa_note, "BNB4_ISA=%s capped to %s (the best this CPU supports)", env,
                     bnb4_isa_name(info.best));
        else
            info.level = (bnb4_isa)forced;
    }
}

const bnb4_cpu_info *bnb4_cpu_info_get(void) {
    pthread_once(&info_once, detect);
    return &info;
}
