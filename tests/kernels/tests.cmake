# CPU kernel tests (included from tests/CMakeLists.txt): every kernel vs the reference at the default
# (best) ISA level, then the unit, conformance and kernel suites re-run with BNB4_ISA forced to each
# level of this architecture (a level above the CPU's best runs capped and says so), and the NEON
# kernels cross-compiled for aarch64 and run under qemu (skipped with a message when absent).
add_executable(bnb4_kernel_tests ${CMAKE_CURRENT_LIST_DIR}/test_kernels.cc ${CMAKE_CURRENT_LIST_DIR}/../unit/test_util.cc)
target_include_directories(bnb4_kernel_tests PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../unit)
target_link_libraries(bnb4_kernel_tests PRIVATE bnb4_internal GTest::gtest GTest::gtest_main)
add_test(NAME kernels COMMAND bnb4_kernel_tests)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(_bnb4_isa_levels scalar avx2 avx512 amx)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
  set(_bnb4_isa_levels scalar neon)
else()
  set(_bnb4_isa_levels scalar)
endif()
foreach(level ${_bnb4_isa_levels})
  set(_suites bnb4_kernel_tests bnb4_unit_tests)
  if(TARGET bnb4_conformance_tests)
    list(APPEND _suites bnb4_conformance_tests)
  endif()
  foreach(suite ${_suites})
    add_test(NAME isa_${level}_${suite} COMMAND ${suite})
    set_tests_properties(isa_${level}_${suite} PROPERTIES ENVIRONMENT "BNB4_ISA=${level}" SKIP_RETURN_CODE 77)
  endforeach()
endforeach()

# NEON: cross-compile the library and the kernel tests for aarch64 and run them under qemu-aarch64.
# (Once per `make test`: the sanitizer build skips it, the cross build does not use its flags.)
if(NOT BNB4_SANITIZE)
  add_test(NAME kernels_neon_qemu
    COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${CMAKE_SOURCE_DIR} -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/neon_qemu
            -P ${CMAKE_CURRENT_LIST_DIR}/neon_qemu.cmake)
  set_tests_properties(kernels_neon_qemu PROPERTIES SKIP_REGULAR_EXPRESSION "NEON-SKIP:" TIMEOUT 1200)
endif()
