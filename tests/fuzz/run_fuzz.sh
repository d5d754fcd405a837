#!/bin/sh
# Builds one libFuzzer target with clang (ASan + UBSan) and runs it on the seed corpus.
#   tests/fuzz/run_fuzz.sh TARGET SECONDS [WORKDIR]     TARGET: safetensors | quant_state
# A short run is registered in CTest (fuzz_smoke_*); longer runs: docs/cli.md. Exits 77 (CTest: skipped)
# with a message when clang or libFuzzer is not available. New inputs found are kept in WORKDIR/corpus,
# crashes in WORKDIR (crash-*); the seed corpus in the repo is only read.
set -eu
target=$1
secs=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${3:-${TMPDIR:-/tmp}/bnb4-fuzz-$target}
cc=""
for c in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
  if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
done
if [ -z "$cc" ]; then
  echo "fuzz: SKIPPED: no clang found (Debian: apt-get install clang libclang-rt-dev)"; exit 77
fi
mkdir -p "$work/corpus"
probe="$work/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' > "$probe"
if ! "$cc" -fsanitize=fuzzer "$probe" -o "$work/probe" >/dev/null 2>&1; then
  echo "fuzz: SKIPPED: $cc cannot link -fsanitize=fuzzer (Debian: apt-get install libclang-rt-$($cc -dumpversion | cut -d. -f1)-dev)"; exit 77
fi
jflags=$(pkg-config --cflags --libs jansson 2>/dev/null || echo -ljansson)
case $target in
  safetensors) srcs="$root/tools/safetensors/bnb4_safetensors_read.c" ;;
  quant_state) srcs="$root/tools/safetensors/bnb4_quant_state.c" ;;
  *) echo "fuzz: unknown target $target (safetensors | quant_state)"; exit 2 ;;
esac
exe="$work/fuzz_$target"
"$cc" -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$root/tools/safetensors" "$here/fuzz_$target.c" $srcs $jflags -lm -o "$exe"
echo "fuzz: $exe for ${secs}s, seeds from $here/corpus/$target"
cd "$work"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -max_len=65536 corpus "$here/corpus/$target"
