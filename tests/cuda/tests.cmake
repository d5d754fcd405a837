# CUDA backend tests (tests/cuda): the backend against the CPU reference and bitsandbytes' recorded
# outputs. Without a GPU they skip with a message; built without CUDA they check that CUDA contexts are
# refused. On the GPU machine, scripts/cuda_check.sh also runs them under compute-sanitizer.
add_executable(bnb4_cuda_tests ${CMAKE_CURRENT_LIST_DIR}/test_cuda.cc ${CMAKE_CURRENT_LIST_DIR}/../unit/test_util.cc)
target_include_directories(bnb4_cuda_tests PRIVATE ${CMAKE_CURRENT_LIST_DIR} ${CMAKE_CURRENT_LIST_DIR}/../unit)
target_link_libraries(bnb4_cuda_tests PRIVATE bnb4_internal GTest::gtest GTest::gtest_main Threads::Threads)
target_compile_definitions(bnb4_cuda_tests PRIVATE BNB4_CONFORMANCE_DIR="${BNB4_CONFORMANCE_DIR}")
if(BNB4_CUDA)
  target_compile_definitions(bnb4_cuda_tests PRIVATE BNB4_WITH_CUDA=1)
  target_link_libraries(bnb4_cuda_tests PRIVATE CUDA::cudart)
  # (a kernel standing for a caller's own; the matmul choice on a described device)
  target_sources(bnb4_cuda_tests PRIVATE ${CMAKE_CURRENT_LIST_DIR}/caller_kernels.cu
                                         ${CMAKE_CURRENT_LIST_DIR}/kernel_choice.cu)
endif()
gtest_discover_tests(bnb4_cuda_tests DISCOVERY_TIMEOUT 60 PROPERTIES LABELS cuda)

# The wgmma kernels' machine code: no register an in-flight wgmma uses is overwritten on any path
# (scripts/check_wgmma_hazards.py; needs cuobjdump - the CUDA toolkit's or PyPI's nvidia-cuda-cuobjdump -
# and skips without it). Built with sm_90a only: the other targets have no wgmma. The checker's own test
# (listings with and without a hazard) runs everywhere.
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  add_test(NAME wgmma_hazard_checker_self_test
           COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/scripts/check_wgmma_hazards.py --self-test)
  add_test(NAME loop_budget_checker_self_test
           COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/scripts/check_loop_budget.py --self-test)
  # the benchmark A/B runner (scripts/bench_ab.py) against a stand-in benchmark: its order, warm-up and medians
  add_test(NAME bench_ab_self_test COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/scripts/bench_ab.py --self-test)
  if(BNB4_CUDA AND "${CMAKE_CUDA_ARCHITECTURES}" MATCHES "90a")
    add_test(NAME cuda_wgmma_register_hazards
             COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/scripts/check_wgmma_hazards.py $<TARGET_FILE:bnb4_static>)
    set_tests_properties(cuda_wgmma_register_hazards PROPERTIES LABELS cuda SKIP_RETURN_CODE 77)
    # The matmul kernels' main loops within their measured instruction counts (instructions added to them
    # cost time) and free of spills: scripts/check_loop_budget.py, same tool and skip
    add_test(NAME cuda_loop_budget
             COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/scripts/check_loop_budget.py $<TARGET_FILE:bnb4_static>)
    set_tests_properties(cuda_loop_budget PROPERTIES LABELS cuda SKIP_RETURN_CODE 77)
  endif()
endif()
