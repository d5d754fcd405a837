/*
 * cmd_info.c - `bnb4 info` (version, CPU features, the kernel each op uses, CUDA devices) and
 * `bnb4 bench` (the CPU and CUDA benchmarks, when they were built into this binary).
 */
#include "bnb4_cli.h"

#include <stdio.h>
#include <string.h>

int cli_cmd_info(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs("usage: bnb4 info\n\nPrint the library version, detected CPU features, the kernel each operation\n"
                  "uses for each dtype, and the CUDA devices.\n", stdout);
            return CLI_EXIT_OK;
        }
        cli_error("info: unexpected argument \"%s\"", argv[i]);
        return CLI_EXIT_USAGE;
    }
    printf("bnb4 %s (format version %d)\n", bnb4_version_string(), BNB4_FORMAT_VERSION);
    printf("cpu features: %s\n", bnb4_cpu_features());
    printf("threads: %d\n", cli_default_threads());
    static const struct {
        bnb4_op op;
        const char *name;
        size_t m;
    } ops[] = {{BNB4_OP_QUANTIZE, "quantize", 0}, {BNB4_OP_QUANTIZE_NESTED, "quantize_nested", 0},
               {BNB4_OP_DEQUANTIZE, "dequantize", 0}, {BNB4_OP_GEMV, "gemv", 1}, {BNB4_OP_GEMM, "gemm (m=16)", 16}};
    static const bnb4_dtype dts[] = {BNB4_F32, BNB4_F16, BNB4_BF16};
    printf("cpu kernels:\n");
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        printf("  %-16s", ops[i].name);
        for (size_t d = 0; d < 3; d++)
            printf(" %s=%s", bnb4_dtype_name(dts[d]), bnb4_kernel_name(NULL, ops[i].op, dts[d], ops[i].m));
        printf("\n");
    }
    int ndev = bnb4_cuda_device_count();
    printf("cuda devices: %d\n", ndev);
    for (int dev = 0; dev < ndev; dev++) {
        bnb4_ctx_params p;
        bnb4_ctx_params_default(&p);
        p.device = BNB4_DEVICE_CUDA;
        p.device_index = dev;
        bnb4_ctx *ctx = NULL;
        if (bnb4_ctx_create(&p, &ctx) != BNB4_OK) {
            printf("  device %d: cannot create a context: %s\n", dev, bnb4_last_error());
            continue;
        }
        printf("  device %d kernels:\n", dev);
        for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
            printf("    %-16s", ops[i].name);
            for (size_t d = 0; d < 3; d++)
                printf(" %s=%s", bnb4_dtype_name(dts[d]), bnb4_kernel_name(ctx, ops[i].op, dts[d], ops[i].m));
            printf("\n");
        }
        bnb4_ctx_destroy(ctx);
    }
    return CLI_EXIT_OK;
}

/* The benchmark entry points live in bench/ (bench_cpu.c, bench_cuda.cu); tools/CMakeLists.txt links
 * them in and defines these macros when those targets exist. Each takes the arguments after its name. */
#ifdef BNB4_HAVE_BENCH_CPU
int bnb4_bench_cpu_main(int argc, char **argv);
#endif
#ifdef BNB4_HAVE_BENCH_CUDA
int bnb4_bench_cuda_main(int argc, char **argv);
#endif

int cli_cmd_bench(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "cpu";
    if (!strcmp(which, "-h") || !strcmp(which, "--help")) {
        fputs("usage: bnb4 bench [cpu|cuda] [benchmark options]\n\nRun the CPU (default) or CUDA kernel benchmark; "
              "`bnb4 bench cpu --help` lists its options.\n", stdout);
        return CLI_EXIT_OK;
    }
    int sub_argc = argc > 1 ? argc - 1 : 1;
    char **sub_argv = argc > 1 ? argv + 1 : argv;
    if (!strcmp(which, "cpu")) {
#ifdef BNB4_HAVE_BENCH_CPU
        return bnb4_bench_cpu_main(sub_argc, sub_argv);
#else
        (void)sub_argc, (void)sub_argv;
        cli_error("bench: the CPU benchmark is not built into this bnb4 (configure with -DBNB4_BUILD_BENCH=ON)");
        return CLI_EXIT_FAILURE;
#endif
    }
    if (!strcmp(which, "cuda")) {
#ifdef BNB4_HAVE_BENCH_CUDA
        return bnb4_bench_cuda_main(sub_argc, sub_argv);
#else
        cli_error("bench: the CUDA benchmark is not built into this bnb4 (needs BNB4_CUDA=ON and BNB4_BUILD_BENCH=ON)");
        return CLI_EXIT_FAILURE;
#endif
    }
    cli_error("bench: unknown benchmark \"%s\" (cpu or cuda)", which);
    return CLI_EXIT_USAGE;
}
