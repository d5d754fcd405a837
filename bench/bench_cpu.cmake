# The CPU benchmark (issue 3): ceilings + kernels in one run. bnb4_bench_cpu is a static library with
# bnb4_bench_cpu_main() so the `bnb4 bench` command can link it; bench_cpu is the standalone program.
# OpenBLAS (Debian's libopenblas-dev) provides the dense sgemm reference; without it that column is absent.
find_library(BNB4_OPENBLAS_LIBRARY NAMES openblas)
add_library(bnb4_bench_cpu STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_cpu.c)
target_link_libraries(bnb4_bench_cpu PUBLIC bnb4 Threads::Threads m)
if(BNB4_OPENBLAS_LIBRARY)
  target_compile_definitions(bnb4_bench_cpu PRIVATE BNB4_BENCH_HAVE_OPENBLAS=1)
  target_link_libraries(bnb4_bench_cpu PUBLIC ${BNB4_OPENBLAS_LIBRARY})
else()
  message(STATUS "bnb4: OpenBLAS not found; bench_cpu runs without the sgemm reference")
endif()
add_executable(bench_cpu ${CMAKE_CURRENT_LIST_DIR}/bench_cpu_main.c)
target_link_libraries(bench_cpu PRIVATE bnb4_bench_cpu)
