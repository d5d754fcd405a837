# Cross-compiles libbnb4 (CPU backend with the NEON kernels, CUDA stub), GoogleTest from Debian's
# sources (/usr/src/googletest) and the kernel + unit tests for aarch64 with Debian's cross gcc, then
# runs them under qemu-aarch64 at the default (neon) level and with BNB4_ISA=scalar.
# Run as: cmake -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch> -P neon_qemu.cmake
# Prints "NEON-SKIP: <reason>" (CTest marks the test skipped) when a tool is missing; the packages are
# gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user (scripts/install-deps.sh).
find_program(CROSS_CC aarch64-linux-gnu-gcc)
find_program(CROSS_CXX aarch64-linux-gnu-g++)
find_program(QEMU qemu-aarch64)
set(GTEST_SRC /usr/src/googletest/googletest)
foreach(tool CROSS_CC CROSS_CXX QEMU)
  if(NOT ${tool})
    message("NEON-SKIP: ${tool} not found (install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user)")
    return()
  endif()
endforeach()
if(NOT EXISTS ${GTEST_SRC}/src/gtest-all.cc)
  message("NEON-SKIP: GoogleTest sources not found in ${GTEST_SRC} (Debian's libgtest-dev ships them)")
  return()
endif()
if(NOT EXISTS /usr/aarch64-linux-gnu/lib)
  message("NEON-SKIP: no aarch64 sysroot in /usr/aarch64-linux-gnu (install libc6-dev-arm64-cross)")
  return()
endif()

file(MAKE_DIRECTORY ${WORK_DIR})
file(GLOB lib_sources ${SOURCE_DIR}/src/format/*.c ${SOURCE_DIR}/src/ref/*.c ${SOURCE_DIR}/src/core/*.c
     ${SOURCE_DIR}/src/cpu/*.c ${SOURCE_DIR}/src/cpu/arm/*.c)
list(APPEND lib_sources ${SOURCE_DIR}/src/cuda/cuda_stub.c)
set(includes -I${SOURCE_DIR}/include -I${SOURCE_DIR}/src/format -I${SOURCE_DIR}/src/ref -I${SOURCE_DIR}/src/core
             -I${SOURCE_DIR}/src/cpu -I${SOURCE_DIR}/src/cuda -I${SOURCE_DIR}/tests/unit)
# The same semantics flags as the native build: IEEE float32, no contraction into FMA.
set(common -O2 -Wall -ffp-contract=off -fno-fast-math -pthread)

# Compile each translation unit separately so a rerun only rebuilds what changed.
set(objects)
function(compile src lang out)
  get_filename_component(name ${src} NAME)
  string(MAKE_C_IDENTIFIER ${src} id)
  set(obj ${WORK_DIR}/${id}.o)
  if(EXISTS ${obj} AND ${obj} IS_NEWER_THAN ${src} AND NOT src MATCHES "\\.h$")
    # headers may have changed: recompile when any header in the tree is newer
    file(GLOB_RECURSE headers ${SOURCE_DIR}/src/*.h ${SOURCE_DIR}/include/*.h ${SOURCE_DIR}/tests/unit/*.h)
    set(stale FALSE)
    foreach(h ${headers})
      if(${h} IS_NEWER_THAN ${obj})
        set(stale TRUE)
      endif()
    endforeach()
    if(NOT stale)
      set(${out} ${obj} PARENT_SCOPE)
      return()
    endif()
  endif()
  if(lang STREQUAL "C")
    set(cmd ${CROSS_CC} -std=c11 ${common} ${includes} -c ${src} -o ${obj})
  else()
    set(cmd ${CROSS_CXX} -std=c++17 ${common} ${includes} -I${GTEST_SRC} -I${GTEST_SRC}/include -c ${src} -o ${obj})
  endif()
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "cross compile of ${name} failed:\n${o}\n${e}")
  endif()
  set(${out} ${obj} PARENT_SCOPE)
endfunction()

foreach(src ${lib_sources})
  compile(${src} C obj)
  list(APPEND objects ${obj})
endforeach()
set(test_sources ${SOURCE_DIR}/tests/kernels/test_kernels.cc ${SOURCE_DIR}/tests/unit/test_util.cc
    ${SOURCE_DIR}/tests/unit/test_api.cc ${SOURCE_DIR}/tests/unit/test_ref.cc
    ${GTEST_SRC}/src/gtest-all.cc ${GTEST_SRC}/src/gtest_main.cc)
foreach(src ${test_sources})
  if(EXISTS ${src})
    compile(${src} CXX obj)
    list(APPEND objects ${obj})
  endif()
endforeach()
set(exe ${WORK_DIR}/bnb4_tests_aarch64)
execute_process(COMMAND ${CROSS_CXX} -pthread ${objects} -lm -o ${exe} RESULT_VARIABLE rc ERROR_VARIABLE e)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cross link failed:\n${e}")
endif()

foreach(level neon scalar)
  message("== aarch64 under qemu, BNB4_ISA=${level}")
  execute_process(COMMAND ${CMAKE_COMMAND} -E env BNB4_ISA=${level} BNB4_TEST_UNDER_QEMU=1
                          ${QEMU} -L /usr/aarch64-linux-gnu ${exe}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REPLACE ";" "," out "${out}")
  string(REGEX MATCHALL "\\[bnb4\\][^\n]*|\\[  (PASSED|FAILED|SKIPPED) [^\n]*|[^\n]*Failure[^\n]*" summary "${out}")
  string(REPLACE ";" "\n" summary "${summary}")
  message("${summary}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "aarch64 tests failed at BNB4_ISA=${level}:\n${out}\n${err}")
  endif()
endforeach()
