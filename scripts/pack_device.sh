#!/usr/bin/env bash
# pack_device.sh - build the CUDA backend here and pack it for a GPU machine that has no compiler set-up of ours
# (the device tool's: nvcc and CMake but no GoogleTest, no internet), for scripts/cuda_check.sh --prebuilt.
#
#   scripts/pack_device.sh NAME [--build DIR] [--sm80 DIR] [--bnb WHEEL] [--jobs N]
#
# Builds bnb4_cuda_tests, bench_cuda, bench_cuda_read and libbnb4.so in DIR (default build-cuda; configured for the
# project's architectures where DIR has no CMake cache) and, with --sm80, the tests as compute_80 PTX alone in that
# folder (cuda_check.sh's A100 passes); with --bnb, bitsandbytes' wheel (e.g. `pip download --no-deps bitsandbytes`)
# is unpacked beside them - its Python files and its CPU and CUDA 13 libraries, not the other builds' (120 MB) - for
# cuda_check.sh's parity step. Everything goes to .device/NAME/ and .device/NAME.tar.xz (.device/ is ignored by git),
# the conformance files to .device/shared/conformance (from BNB4_CONFORMANCE_DIR, default ../shared/conformance).
# Prints what to carry and the command to run there. The device tool carries at most 64 MiB: the script says when
# the pack is larger.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 NAME [--build DIR] [--sm80 DIR] [--bnb WHEEL] [--jobs N]" >&2; exit 2; }
[ $# -ge 1 ] || usage
NAME="$1"; shift
case "$NAME" in ''|-*|*/*|.*) usage ;; esac
BUILD=build-cuda SM80="" WHEEL="" JOBS="$(nproc)"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) [ $# -ge 2 ] || usage; BUILD="$2"; shift 2 ;;
    --sm80) [ $# -ge 2 ] || usage; SM80="$2"; shift 2 ;;
    --bnb) [ $# -ge 2 ] || usage; WHEEL="$2"; shift 2 ;;
    --jobs) [ $# -ge 2 ] || usage; JOBS="$2"; shift 2 ;;
    *) usage ;;
  esac
done
[ -z "$WHEEL" ] || [ -f "$WHEEL" ] || { echo "pack_device.sh: no wheel at $WHEEL" >&2; exit 1; }

# configure DIR [CMAKE_ARGS...]: where DIR has no cache yet (an existing build keeps its own settings); the main build
# takes the project's architectures (src/cuda/cuda.cmake: sm_80, sm_90a, compute_90)
configure() {
  local dir="$1"; shift
  [ -f "$dir/CMakeCache.txt" ] || cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DBNB4_CUDA=ON "$@" >/dev/null
}
configure "$BUILD"
cmake --build "$BUILD" -j"$JOBS" --target bnb4_cuda_tests bench_cuda bench_cuda_read bnb4
if [ -n "$SM80" ]; then
  configure "$SM80" -DCMAKE_CUDA_ARCHITECTURES=80-virtual
  cmake --build "$SM80" -j"$JOBS" --target bnb4_cuda_tests
fi

# staged in a temporary folder and moved into place at the end: an interrupted run leaves no half pack
mkdir -p .device
STAGE="$(mktemp -d .device/.stage.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/$NAME"
cp "$BUILD/tests/bnb4_cuda_tests" "$BUILD/bench/bench_cuda" "$BUILD/bench/bench_cuda_read" "$STAGE/$NAME/"
cp -L "$BUILD/libbnb4.so" "$STAGE/$NAME/libbnb4.so"
if [ -n "$SM80" ]; then
  mkdir -p "$STAGE/$NAME/sm80"
  cp "$SM80/tests/bnb4_cuda_tests" "$STAGE/$NAME/sm80/"
fi
if [ -n "$WHEEL" ]; then
  mkdir -p "$STAGE/wheel" "$STAGE/$NAME/bnb"
  python3 -m zipfile -e "$WHEEL" "$STAGE/wheel"
  [ -d "$STAGE/wheel/bitsandbytes" ] || { echo "pack_device.sh: $WHEEL holds no bitsandbytes package" >&2; exit 1; }
  (cd "$STAGE/wheel" && tar cf - --exclude='*.so' bitsandbytes ./*.dist-info) | tar xf - -C "$STAGE/$NAME/bnb"
  found=0
  for so in "$STAGE"/wheel/bitsandbytes/libbitsandbytes_cpu.so "$STAGE"/wheel/bitsandbytes/libbitsandbytes_cuda13*.so; do
    [ -f "$so" ] && cp "$so" "$STAGE/$NAME/bnb/bitsandbytes/" && found=$((found + 1))
  done
  [ "$found" -ge 2 ] || { echo "pack_device.sh: $WHEEL has no CPU or CUDA 13 library" >&2; exit 1; }
  rm -rf "$STAGE/wheel"
fi
tar cJf "$STAGE/$NAME.tar.xz" -C "$STAGE" "$NAME"

rm -rf ".device/$NAME"
mv "$STAGE/$NAME" "$STAGE/$NAME.tar.xz" .device/
CONF="${BNB4_CONFORMANCE_DIR:-../shared/conformance}"
if [ ! -d .device/shared/conformance ] && [ -d "$CONF" ]; then
  mkdir -p .device/shared
  cp -r "$CONF" .device/shared/conformance
fi

carry="\".device/$NAME.tar.xz\""
[ -d .device/shared/conformance ] && carry="$carry, \".device/shared\""
bytes=$(du -cb ".device/$NAME.tar.xz" $([ -d .device/shared/conformance ] && echo .device/shared) | tail -1 | cut -f1)
echo
echo "packed .device/$NAME.tar.xz: $(du -h ".device/$NAME.tar.xz" | cut -f1); with the conformance files $((bytes / 1048576)) MiB to carry"
[ "$bytes" -le $((64 * 1048576)) ] || echo "pack_device.sh: more than the device tool's 64 MiB: leave out --bnb or --sm80" >&2
echo "carry: [$carry]"
echo "run:   tar xJf .device/$NAME.tar.xz -C .device && OUT=\$OUT/c scripts/cuda_check.sh --prebuilt .device/$NAME"
