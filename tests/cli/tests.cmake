# Tests of the bnb4 command and the safetensors library (included from tests/CMakeLists.txt).
if(TARGET bnb4_safetensors)
  add_executable(test_safetensors_read ${CMAKE_CURRENT_LIST_DIR}/test_safetensors_read.cc)
  target_link_libraries(test_safetensors_read PRIVATE bnb4_safetensors GTest::gtest GTest::gtest_main)
  target_compile_definitions(test_safetensors_read PRIVATE BNB4_CONFORMANCE_DIR="${BNB4_CONFORMANCE_DIR}")
  gtest_discover_tests(test_safetensors_read DISCOVERY_TIMEOUT 60)
endif()
