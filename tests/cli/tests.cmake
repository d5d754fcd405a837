# Tests of the bnb4 command and the safetensors library (included from tests/CMakeLists.txt).
if(TARGET bnb4_safetensors)
  add_executable(test_safetensors_read ${CMAKE_CURRENT_LIST_DIR}/test_safetensors_read.cc)
  target_link_libraries(test_safetensors_read PRIVATE bnb4_safetensors GTest::gtest GTest::gtest_main)
  target_compile_definitions(test_safetensors_read PRIVATE BNB4_CONFORMANCE_DIR="${BNB4_CONFORMANCE_DIR}")
  gtest_discover_tests(test_safetensors_read DISCOVERY_TIMEOUT 60)
endif()

if(TARGET bnb4_safetensors)
  add_executable(test_quant_state ${CMAKE_CURRENT_LIST_DIR}/test_quant_state.cc)
  target_link_libraries(test_quant_state PRIVATE bnb4_safetensors GTest::gtest GTest::gtest_main)
  target_compile_definitions(test_quant_state PRIVATE BNB4_CONFORMANCE_DIR="${BNB4_CONFORMANCE_DIR}"
                                                      BNB4_CLI_TEST_DATA="${CMAKE_CURRENT_LIST_DIR}/data")
  gtest_discover_tests(test_quant_state DISCOVERY_TIMEOUT 60)

  add_executable(py_repr_filter ${CMAKE_CURRENT_LIST_DIR}/py_repr_filter.c)
  target_link_libraries(py_repr_filter PRIVATE bnb4_safetensors)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    add_test(NAME cli_py_float_repr_live
             COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/check_py_float_repr.py $<TARGET_FILE:py_repr_filter> 100000)
  endif()
endif()

if(TARGET bnb4_safetensors)
  add_executable(test_safetensors_write ${CMAKE_CURRENT_LIST_DIR}/test_safetensors_write.cc)
  target_link_libraries(test_safetensors_write PRIVATE bnb4_safetensors GTest::gtest GTest::gtest_main)
  gtest_discover_tests(test_safetensors_write DISCOVERY_TIMEOUT 60)
endif()

# The bnb4 command end to end (runs the built binary).
if(TARGET bnb4_cli)
  add_executable(test_cli ${CMAKE_CURRENT_LIST_DIR}/test_cli.cc)
  target_link_libraries(test_cli PRIVATE bnb4_static bnb4_safetensors GTest::gtest GTest::gtest_main)
  target_compile_definitions(test_cli PRIVATE BNB4_CONFORMANCE_DIR="${BNB4_CONFORMANCE_DIR}"
                                              BNB4_CLI_EXE="$<TARGET_FILE:bnb4_cli>")
  add_dependencies(test_cli bnb4_cli)
  gtest_discover_tests(test_cli DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
endif()

# Fuzz smoke runs (libFuzzer + ASan/UBSan, built with clang by the script; skipped with a message when
# clang or libFuzzer is missing). Longer runs: docs/cli.md.
foreach(target safetensors quant_state)
  add_test(NAME fuzz_smoke_${target}
           COMMAND sh ${CMAKE_SOURCE_DIR}/tests/fuzz/run_fuzz.sh ${target} 10 ${CMAKE_CURRENT_BINARY_DIR}/fuzz-${target})
  set_tests_properties(fuzz_smoke_${target} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180 LABELS fuzz)
endforeach()
