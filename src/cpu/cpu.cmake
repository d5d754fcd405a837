# CPU backend sources. Per-ISA kernel files get only their own ISA flags (set_source_files_properties),
# so one library binary carries every level and picks at run time (cpu_features.c, cpu_dispatch.c).
list(APPEND BNB4_CPU_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/cpu_backend.c
  ${CMAKE_CURRENT_LIST_DIR}/cpu_dispatch.c
  ${CMAKE_CURRENT_LIST_DIR}/cpu_features.c
  ${CMAKE_CURRENT_LIST_DIR}/cpu_gemm_tile.c
  ${CMAKE_CURRENT_LIST_DIR}/cpu_threads.c)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(_bnb4_avx2 ${CMAKE_CURRENT_LIST_DIR}/x86/kernels_avx2.c)
  set(_bnb4_avx512 ${CMAKE_CURRENT_LIST_DIR}/x86/kernels_avx512.c)
  set(_bnb4_amx ${CMAKE_CURRENT_LIST_DIR}/x86/kernels_amx.c)
  list(APPEND BNB4_CPU_SOURCES ${_bnb4_avx2} ${_bnb4_avx512} ${_bnb4_amx})
  set_source_files_properties(${_bnb4_avx2} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  # AVX512-BF16 intrinsics are used only behind the run-time avx512bf16 check (gemm_select_avx512).
  set_source_files_properties(${_bnb4_avx512} PROPERTIES COMPILE_OPTIONS
    "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512bf16;-mavx2;-mfma;-mf16c")
  # AMX tile intrinsics: only behind the run-time AMX level (cpu_features.c: CPU bits, XCR0, the OS's permission).
  set_source_files_properties(${_bnb4_amx} PROPERTIES COMPILE_OPTIONS
    "-mamx-tile;-mamx-bf16;-mavx512f;-mavx512bw;-mavx512vl;-mavx512bf16;-mavx2;-mfma;-mf16c")
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  # Advanced SIMD is part of the aarch64 base ISA: no extra flags.
  list(APPEND BNB4_CPU_SOURCES ${CMAKE_CURRENT_LIST_DIR}/arm/kernels_neon.c)
endif()
