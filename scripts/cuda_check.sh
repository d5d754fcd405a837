#!/usr/bin/env bash
# cuda_check.sh - build, test and benchmark the CUDA backend in one run on a GPU machine, then print a
# short table.
#
#   scripts/cuda_check.sh [--prebuilt DIR] [--quick | --small-m] [--no-tests] [--no-sanitizer] [--no-bench]
#                         [--only STEP,STEP,...]
#
# --only runs just the named steps (the summary's names: tests, tests_m1, ..., parity_bnb, memcheck, bench, ...) of
# those the other options leave on. A device call may run 10 minutes and all of it takes about 15 on the H200 (the
# tests alone, --no-sanitizer --no-bench, 10 minutes in v51): split it, e.g.
#   --no-sanitizer --no-bench --only tests,tests_m1,tests_cpasync,tests_wgmma,tests_permuted,tests_mma,tests_window,tests_smem99,tests_simt,wgmma_sass,loop_budget
#   --no-bench --only tests_sm80,tests_a100,parity_bnb,memcheck,memcheck_sm80,racecheck,racecheck_cpasync,racecheck_simt,racecheck_f32tile
#   --no-tests --no-sanitizer
# with OUT=$OUT, so each step's log comes back even from a call that runs out of time.
# --small-m benchmarks only m = 1, 2, 3, 4, 8, 16 on every shape (bench_cuda --small-m; seconds), for
# tuning the small-m kernels; BNB4_CUDA_GEMV_MAX_M / BNB4_CUDA_GEMV_KERNEL / BNB4_CUDA_GEMV_TABLE / BNB4_CUDA_GEMV_XS /
# BNB4_CUDA_GEMV_CTAS in the environment select the gemv kernels' settings (src/cuda/cuda_gemv.cu).
#
# Steps: (1) build build-cuda (sm_80, sm_90a, compute_90), and build-cuda-sm80 (the tests as compute_80 PTX alone),
# unless --prebuilt DIR holds bnb4_cuda_tests and bench_cuda (and sm80/bnb4_cuda_tests) built elsewhere with the
# same nvcc; (2) the CUDA tests, conformance included (BNB4_CONFORMANCE_DIR,
# default .device/shared/conformance, then ../shared/conformance), and the matmul tests again with m = 1
# on the pipe kernel, with its TMA variant off, and with its wgmma math at every m and the tile kernel at every
# m >= 65 on every weight size, with the wgmma math on permuted activations on every weight size, and the pipe
# tests with its mma.sync math up to m = 16, the matmul tests as on a device with 99 KB of shared memory a CTA
# (BNB4_CUDA_SMEM_OPTIN) and on the SIMT kernel (as under 66 KB), and the sm_80 build's tests: the driver compiles
# their compute_80 PTX for this GPU, so the
# kernels run as an A100 runs them (no TMA, wgmma or tile kernel), once more with an A100's 163 KB, and where torch and
# bitsandbytes import, bnb4 against bitsandbytes' CUDA kernels through the Python package; (3) the wgmma
# kernels' machine code checked for register hazards (scripts/check_wgmma_hazards.py) and the small-m and k-split
# kernels' main loops for their instruction budgets (scripts/check_loop_budget.py); (4) bench_cuda,
# which measures its own ceilings (copy bandwidth, cuBLAS) in the same run, and (not with --quick)
# bench_cuda_read, the read floor of the small-m kernels' access pattern at each shape, where DIR or the
# build has it; (5) the tests in quick mode under compute-sanitizer memcheck and racecheck (racecheck without
# the four largest sweeps, too slow under it), memcheck on the sm_80 build's tests too, and racecheck on the pipe
# kernel's cp.async variant, on the SIMT kernel and on the f32 tile kernel. --no-tests skips (2) and (3).
# Logs go to $OUT (default build-cuda/check): log, bench.csv, read.txt, wgmma_hazards.txt, loop_budget.txt.
#
# With the device tool (the GPU machine has nvcc 13.0 and CMake but no GoogleTest), build here and carry the binaries:
#   scripts/pack_device.sh v1 [--sm80 build-cuda-sm80] [--bnb bitsandbytes-*.whl]
# builds them, packs .device/v1.tar.xz (the tests, bench_cuda, bench_cuda_read, libbnb4.so; with --sm80 the tests as
# compute_80 PTX; with --bnb bitsandbytes' files for the parity step) and the conformance files in .device/shared,
# and prints what to carry and the command:
#   tar xJf .device/v1.tar.xz -C .device && OUT=$OUT/c scripts/cuda_check.sh --prebuilt .device/v1
#   (carry: [".device/v1.tar.xz", ".device/shared"])
set -u -o pipefail
cd "$(dirname "$0")/.."

PREBUILT="" QUICK=0 SMALL_M=0 TESTS_ON=1 SANITIZE=1 BENCH=1 ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) PREBUILT="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --small-m) SMALL_M=1; shift ;;
    --no-tests) TESTS_ON=0; shift ;;
    --no-sanitizer) SANITIZE=0; shift ;;
    --no-bench) BENCH=0; shift ;;
    --only) ONLY=",$2,"; shift 2 ;;
    *) echo "usage: $0 [--prebuilt DIR] [--quick | --small-m] [--no-tests] [--no-sanitizer] [--no-bench] [--only STEP,...]" >&2; exit 2 ;;
  esac
done

# Per-step time limits in seconds (a device lease is short; a step that runs out counts as FAILED). racecheck's quick
# sweep took 171 s on the H200 (docs/performance.md v60).
T_TESTS="${T_TESTS:-300}" T_SANITIZER="${T_SANITIZER:-240}" T_BENCH="${T_BENCH:-300}"
OUT="${OUT:-build-cuda/check}"
mkdir -p "$OUT"
LOG="$OUT/log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

declare -A RESULT
step() { echo; echo "==== $* ($(date -u +%H:%M:%S))"; }
# want STEP: whether --only (if given) names STEP
want() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }
# test_pass KEY TITLE BIN FILTER [VAR=VALUE ...]: BIN's tests matching FILTER with those variables set, as step TITLE
test_pass() {
  local key=$1 title=$2 bin=$3 filter=$4
  shift 4
  want "$key" || return 0
  step "$title"
  if env "$@" timeout "$T_TESTS" "$bin" --gtest_color=no --gtest_brief=1 --gtest_filter="$filter"; then
    RESULT[$key]="ok"
  else
    RESULT[$key]="FAILED"
  fi
}

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi not available"
command -v nvcc >/dev/null && nvcc --version | tail -2

# cuBLAS / cudart for prebuilt binaries: the toolkit's, or the pip wheels' next to PyTorch.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null) \
         $(python3 -c 'import nvidia.cuda_runtime, os; print(os.path.dirname(nvidia.cuda_runtime.__file__) + "/lib")' 2>/dev/null); do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

if [ -n "$PREBUILT" ]; then
  TESTS="$PREBUILT/bnb4_cuda_tests" BENCHBIN="$PREBUILT/bench_cuda" READBIN="$PREBUILT/bench_cuda_read"
  TESTS_SM80="$PREBUILT/sm80/bnb4_cuda_tests" LIBBNB4="$PREBUILT/libbnb4.so"
  step "using prebuilt binaries from $PREBUILT"
  RESULT[build]="prebuilt"
else
  step "build"
  TESTS=build-cuda/tests/bnb4_cuda_tests BENCHBIN=build-cuda/bench/bench_cuda READBIN=build-cuda/bench/bench_cuda_read
  TESTS_SM80=build-cuda-sm80/tests/bnb4_cuda_tests LIBBNB4=build-cuda/libbnb4.so
  if cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DBNB4_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="80-real;90a-real;90-virtual" >/dev/null &&
     cmake --build build-cuda -j"$(nproc)" --target bnb4_cuda_tests bench_cuda bench_cuda_read bnb4 &&
     cmake -S . -B build-cuda-sm80 -DCMAKE_BUILD_TYPE=Release -DBNB4_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80-virtual >/dev/null &&
     cmake --build build-cuda-sm80 -j"$(nproc)" --target bnb4_cuda_tests; then
    RESULT[build]="ok"
  else
    RESULT[build]="FAILED"
  fi
fi
ldd "$TESTS" 2>/dev/null | grep -E "cublas|cudart|not found" || true

if [ -z "${BNB4_CONFORMANCE_DIR:-}" ]; then
  for d in .device/shared/conformance ../shared/conformance; do
    [ -f "$d/quantize.safetensors" ] && export BNB4_CONFORMANCE_DIR="$d" && break
  done
fi
echo "conformance files: ${BNB4_CONFORMANCE_DIR:-none (conformance tests will skip)}"

if [ "$TESTS_ON" = 0 ]; then
  :
elif [ -x "$TESTS" ]; then
  if [ "$QUICK" = 1 ]; then export BNB4_CUDA_TEST_QUICK=1; fi
  if want tests; then
    step "CUDA tests (vs CPU reference and conformance)"
    if timeout "$T_TESTS" "$TESTS" --gtest_color=no; then RESULT[tests]="ok"; else RESULT[tests]="FAILED"; fi
  fi
  # m = 1 is the gemv kernel's by default: once more with it off, so the pipelined tensor-core kernel
  # (cuda_gemm_pipe.cuh) is checked at m = 1 too
  test_pass tests_m1 "CUDA matmul tests with m = 1 on the tensor-core kernels (BNB4_CUDA_GEMV_MAX_M=0)" "$TESTS" '*Matmul*:*Pipe*' BNB4_CUDA_GEMV_MAX_M=0
  # sm_90 runs the pipe kernel's TMA variant where it fits: once more with it off, so the cp.async variant
  # (what sm_80 runs, and the odd layouts everywhere) is checked on every shape too
  test_pass tests_cpasync "CUDA matmul tests with the pipe kernel's TMA variant off (BNB4_CUDA_PIPE_TMA=0)" "$TESTS" '*Matmul*:*Pipe*' BNB4_CUDA_PIPE_TMA=0
  # on compute capability 9.0 the TMA variant's math is wgmma from m = 17 on: once more with it from m = 1,
  # and with the tile kernel at m = 65.. on every weight size (by default m = 65..128 on large ones)
  test_pass tests_wgmma "CUDA matmul tests with the pipe kernel's wgmma math at every m (BNB4_CUDA_PIPE_WGMMA_MIN_M=1) and the tile kernel from m = 65" "$TESTS" '*Matmul*:*Pipe*' BNB4_CUDA_PIPE_WGMMA_MIN_M=1 BNB4_CUDA_TILE_MAX_M=1000000 BNB4_CUDA_TILE_MIN_WEIGHTS=0
  # the wgmma math reads the activations as they are on weights of up to 5 x 2^24 elements (all the tests'), and
  # permuted by a kernel first on larger ones: once more with the permutation on every weight size
  test_pass tests_permuted "CUDA matmul tests with the wgmma math on permuted activations (BNB4_CUDA_PIPE_NATURAL_MAX=0)" "$TESTS" '*Matmul*:*Pipe*' BNB4_CUDA_PIPE_NATURAL_MAX=0
  # plain absmax at m = 9..16 takes wgmma, or the post-scaled mma.sync on narrow tiles, by the weight's shape:
  # once more (quick) with mma.sync to m = 16 whatever the shape
  test_pass tests_mma "CUDA pipe tests with the mma.sync math up to m = 16 (BNB4_CUDA_PIPE_WGMMA_MIN_M=17, quick)" "$TESTS" '*Pipe*:*MatmulAgrees*' BNB4_CUDA_PIPE_WGMMA_MIN_M=17 BNB4_CUDA_TEST_QUICK=1
  # the producer's in-flight window beyond the pipe's stage count (no limit: it hung before v32)
  test_pass tests_window "CUDA pipe tests with an in-flight window beyond the stage count (BNB4_CUDA_PIPE_INFLIGHT=64, quick)" "$TESTS" '*Pipe*:*MatmulAgrees*' BNB4_CUDA_PIPE_INFLIGHT=64 BNB4_CUDA_TEST_QUICK=1
  # devices that give a CTA less shared memory than Hopper's 227 KB (BNB4_CUDA_SMEM_OPTIN lowers what the library
  # reads): 99 KB (sm_86 / 89 / 120: the pipe kernel's cp.async variant with an 8 KB code-pair table) on this build;
  # 163 KB (A100: the same with the 64 KB table) below, on the sm_80 build; both in 3 stages, m > 16 in chunks
  test_pass tests_smem99 "CUDA matmul tests as on a 99 KB device (BNB4_CUDA_SMEM_OPTIN=101376, quick)" "$TESTS" '*Matmul*:*Pipe*:*KernelNames*:*SharedMemory*' BNB4_CUDA_SMEM_OPTIN=101376 BNB4_CUDA_TEST_QUICK=1
  # under the gemv kernel's 66 KB nothing but the SIMT kernel fits at m <= 16, for every dtype; float32 on it to m = 130
  # (launches of 16 rows) instead of dequantize + SGEMM
  test_pass tests_simt "CUDA matmul tests on the SIMT kernel (BNB4_CUDA_SMEM_OPTIN=49152 BNB4_CUDA_SIMT_F32_MAX_M=130, quick)" "$TESTS" '*MatmulAgrees*' BNB4_CUDA_SMEM_OPTIN=49152 BNB4_CUDA_SIMT_F32_MAX_M=130 BNB4_CUDA_TEST_QUICK=1
  unset BNB4_CUDA_TEST_QUICK
  # sm_80 code: the kernels an A100 runs (cp.async pipe, mma.sync, gemv, dequantize + cuBLAS at large m), built
  # as compute_80 PTX, which the driver compiles for this GPU; the library must see that its sm_90 paths are
  # compiled out there (bnb4_cuda_sm90_code) - they would trap
  if [ -x "$TESTS_SM80" ]; then
    if want tests_sm80; then
      step "CUDA tests on sm_80 code (compute_80 PTX compiled by the driver for this GPU)"
      if timeout "$T_TESTS" "$TESTS_SM80" --gtest_color=no; then RESULT[tests_sm80]="ok"; else RESULT[tests_sm80]="FAILED"; fi
    fi
    test_pass tests_a100 "CUDA matmul tests on sm_80 code with an A100's shared memory (BNB4_CUDA_SMEM_OPTIN=166912, quick)" "$TESTS_SM80" '*Matmul*:*Pipe*:*KernelNames*:*SharedMemory*' BNB4_CUDA_SMEM_OPTIN=166912 BNB4_CUDA_TEST_QUICK=1
  fi
else
  RESULT[tests]="not built"
fi

# bnb4 (CPU and CUDA) against bitsandbytes' own CUDA kernels through the Python package, where torch and
# bitsandbytes can be imported (bitsandbytes' files may sit in BNB_SITE, default the prebuilt folder's bnb/ where
# scripts/pack_device.sh --bnb put them, else .device/bnb): every float16 /
# bfloat16 bit pattern, thresholds, FLT_MIN products, double quantization, model-sized linear layers
# (python/tests/test_bitsandbytes_edges.py), the parity suite and torch's mean as the nested offset
if [ -z "${BNB_SITE:-}" ]; then
  BNB_SITE=.device/bnb
  [ -n "$PREBUILT" ] && [ -d "$PREBUILT/bnb" ] && BNB_SITE="$PREBUILT/bnb"
fi
PARITY_PATH="$PWD/python${BNB_SITE:+:$BNB_SITE}${PYTHONPATH:+:$PYTHONPATH}"
if ! want parity_bnb; then
  :
elif [ "$TESTS_ON" = 1 ] && [ -f "$LIBBNB4" ] && PYTHONPATH="$PARITY_PATH" python3 -c "import torch, bitsandbytes, numpy, pytest" 2>/dev/null; then
  step "bitsandbytes parity, edge cases and nested offset (pytest, libbnb4 from $LIBBNB4)"
  if BNB4_LIBRARY="$LIBBNB4" PYTHONPATH="$PARITY_PATH" timeout "$T_TESTS" python3 -m pytest -q -p no:cacheprovider \
       python/tests/test_bitsandbytes_edges.py python/tests/test_bitsandbytes.py python/tests/test_quantized.py; then
    RESULT[parity_bnb]="ok"
  else
    RESULT[parity_bnb]="FAILED"
  fi
elif [ "$TESTS_ON" = 0 ]; then
  RESULT[parity_bnb]="skipped (--no-tests)"
else
  RESULT[parity_bnb]="skipped (no libbnb4.so, torch or bitsandbytes)"
fi

# the wgmma kernels' machine code: no register an in-flight wgmma uses is overwritten on any path
if [ "$TESTS_ON" = 1 ] && [ -x "$TESTS" ] && want wgmma_sass; then
  step "wgmma register hazards in the SASS (scripts/check_wgmma_hazards.py)"
  python3 scripts/check_wgmma_hazards.py "$TESTS" > "$OUT/wgmma_hazards.txt" 2>&1
  rc=$?
  tail -1 "$OUT/wgmma_hazards.txt"
  case $rc in 0) RESULT[wgmma_sass]="ok" ;; 77) RESULT[wgmma_sass]="skipped (no cuobjdump)" ;; *) RESULT[wgmma_sass]="FAILED"; cat "$OUT/wgmma_hazards.txt" ;; esac
fi
if [ "$TESTS_ON" = 1 ] && [ -x "$TESTS" ] && want loop_budget; then
  # the small-m and k-split kernels' main loops: added instructions cost them time (v18), so held to their measured lengths
  step "matmul loop instruction budgets in the SASS (scripts/check_loop_budget.py)"
  python3 scripts/check_loop_budget.py "$TESTS" > "$OUT/loop_budget.txt" 2>&1
  rc=$?
  cat "$OUT/loop_budget.txt"
  case $rc in 0) RESULT[loop_budget]="ok" ;; 77) RESULT[loop_budget]="skipped (no cuobjdump)" ;; *) RESULT[loop_budget]="FAILED" ;; esac
fi

if [ "$BENCH" = 1 ] && [ -x "$BENCHBIN" ] && want bench; then
  step "benchmark"
  BARGS=(--csv "$OUT/bench.csv")
  [ "$QUICK" = 1 ] && BARGS+=(--quick)
  [ "$SMALL_M" = 1 ] && BARGS+=(--small-m)
  if timeout "$T_BENCH" "$BENCHBIN" "${BARGS[@]}" > "$OUT/bench.txt"; then RESULT[bench]="ok"; else RESULT[bench]="FAILED"; fi
  sed '/^==== bnb4 CUDA summary/,$d' "$OUT/bench.txt"
  if [ -x "$READBIN" ] && [ "$QUICK" = 0 ] && want read_floor; then
    step "read floor of the small-m kernels' access pattern (bench_cuda_read)"
    if timeout "$T_BENCH" "$READBIN" > "$OUT/read.txt"; then RESULT[read_floor]="ok"; else RESULT[read_floor]="FAILED"; fi
    cat "$OUT/read.txt"
  fi
fi

if [ -x "$TESTS" ]; then
  if [ "$SANITIZE" = 1 ]; then
    # racecheck follows every shared-memory access: under it each of the sweeps named here ran past 40 s even
    # quick (H200, docs/performance.md v46, v52) and the whole quick suite past this step's limit, so it leaves them
    # out; the other tests run the same kernels (pipe, tile, gemv, quantize) on smaller sets of shapes, and the f32
    # tile kernel's test has a pass of its own
    RACE_SKIP='-*MatmulAgreesWithFloat64OnEveryPath*:*SplitsTilesOverAnyGrid*:*F32TileKernelSplitsKOverAnyGrid*'
    # memcheck then on the sm_80 build's tests (other code: the cp.async pipe variant, mma.sync where sm_90 takes
    # wgmma); racecheck on the cp.async pipe variant (BNB4_CUDA_PIPE_TMA=0: the same synchronization as sm_80
    # code's) rather than on that build, whose large m runs cuBLAS's kernels, in which racecheck reports hazards;
    # racecheck on the SIMT kernel (as under the gemv kernel's 66 KB, float32 on it to m = 130: its shared sums), and
    # on the f32 tile kernel's test alone (its stages; about 40 s quick on the H200)
    for pass in memcheck memcheck_sm80 racecheck racecheck_cpasync racecheck_simt racecheck_f32tile; do
      want "$pass" || continue
      tool=${pass%%_*} bin=$TESTS filter='*' what="quick sweep" envs=()
      [ "$tool" = racecheck ] && filter="$RACE_SKIP" what="quick sweep without $RACE_SKIP"
      case $pass in
        memcheck_sm80) bin=$TESTS_SM80; [ -x "$bin" ] || continue; what="$what, sm_80 build" ;;
        # (not the 64-row slices' test either: with the TMA variant off, m = 65..128 run dequantize + cuBLAS, in whose
        # kernels racecheck reports hazards - and excluding those kernels by name made it fail on a hardware exception)
        racecheck_cpasync) envs=(BNB4_CUDA_PIPE_TMA=0); filter="*Pipe*:*Matmul*$RACE_SKIP:*InLaunchesOf64Rows*"; what="the matmul and pipe tests with BNB4_CUDA_PIPE_TMA=0, without the sweeps and the 64-row slices" ;;
        racecheck_simt) envs=(BNB4_CUDA_SMEM_OPTIN=49152 BNB4_CUDA_SIMT_F32_MAX_M=130); filter='*MatmulAgrees*'; what="the matmul sweep on the SIMT kernel" ;;
        racecheck_f32tile) filter='*F32TileKernelSplitsKOverAnyGrid*'; what="the f32 tile kernel's test" ;;
      esac
      step "compute-sanitizer $tool ($what)"
      if env BNB4_CUDA_TEST_QUICK=1 "${envs[@]}" timeout "$T_SANITIZER" compute-sanitizer --tool "$tool" --error-exitcode 99 \
           "$bin" --gtest_color=no --gtest_brief=1 --gtest_filter="$filter"; then
        RESULT[$pass]="ok"
      else
        RESULT[$pass]="FAILED"
      fi
    done
  fi
fi

step "summary"
STEPS=(build tests tests_m1 tests_cpasync tests_wgmma tests_permuted tests_mma tests_window tests_smem99 tests_simt tests_sm80 tests_a100 parity_bnb wgmma_sass loop_budget memcheck memcheck_sm80 racecheck racecheck_cpasync racecheck_simt racecheck_f32tile bench read_floor)
for k in "${STEPS[@]}"; do
  printf '%-10s %s\n' "$k" "${RESULT[$k]:-skipped}"
done
[ -f "$OUT/bench.txt" ] && sed -n '/^==== bnb4 CUDA summary/,$p' "$OUT/bench.txt"
for k in "${STEPS[@]}"; do
  case "${RESULT[$k]:-skipped}" in FAILED|"not built") exit 1 ;; esac
done
exit 0
