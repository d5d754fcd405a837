/*
 * main.c - the `bnb4` command: dispatch to the subcommands and the top-level help.
 */
#include "bnb4_cli.h"

#include <stdio.h>
#include <string.h>

static const char *usage_text =
    "usage: bnb4 <command> [options] [args]\n"
    "\n"
    "Convert models to bitsandbytes 4-bit (NF4/FP4) checkpoints that transformers loads, byte-exact.\n"
    "\n"
    "commands:\n"
    "  quantize IN OUT      a .safetensors file or model directory -> bitsandbytes 4-bit\n"
    "  dequantize IN OUT    a bitsandbytes 4-bit checkpoint -> dense weights\n"
    "  inspect FILE|DIR     list tensors, quantization and bits per weight\n"
    "  info                 version, CPU features, kernels, CUDA devices\n"
    "  bench [cpu|cuda]     kernel benchmarks\n"
    "\n"
    "`bnb4 <command> --help` describes each command's options.\n"
    "\n"
    "exit status:\n"
    "  0    success\n"
    "  1    failure (I/O error, out of memory, kernel or device error)\n"
    "  2    usage error (bad command line)\n"
    "  3    bad input (missing, unreadable, malformed or unsupported file)\n"
    "  4    OUT already exists (use --force)\n"
    "  130  interrupted (no output is left behind)\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage_text, stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("bnb4 %s\n", bnb4_version_string());
        return CLI_EXIT_OK;
    }
    /* Little-endian hosts only: safetensors data is little-endian and is used in place. */
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        cli_error("this build runs on little-endian machines only");
        return CLI_EXIT_FAILURE;
    }
    cli_signals_install();
    if (!strcmp(cmd, "quantize")) return cli_cmd_quantize(argc - 1, argv + 1);
    if (!strcmp(cmd, "dequantize")) return cli_cmd_dequantize(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect")) return cli_cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cli_cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cli_cmd_bench(argc - 1, argv + 1);
    cli_error("unknown command \"%s\" (see bnb4 --help)", cmd);
    return CLI_EXIT_USAGE;
}
