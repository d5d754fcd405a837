# The Python package's tests (python/tests, pytest) as one CTest test, python_pytest, run against the
# libbnb4 of this build (BNB4_LIBRARY) and the package sources in python/ (PYTHONPATH).
# Skipped with a visible message (CTest "Not Run ... Skipped", exit 77) when numpy or pytest is not
# installed; torch, CUDA and bitsandbytes parts skip inside pytest with their own messages.
# In sanitizer builds the instrumented library is loaded into an uninstrumented python, so the
# sanitizer runtimes are preloaded (leak checking off: the interpreter keeps memory until exit).
find_program(BNB4_PYTHON NAMES python3 python DOC "Python interpreter for the bnb4 package tests")
if(NOT BNB4_PYTHON)
  add_test(NAME python_pytest COMMAND ${CMAKE_COMMAND} -E echo
           "SKIP: no python3 on PATH: the Python package tests did not run")
  set_tests_properties(python_pytest PROPERTIES SKIP_REGULAR_EXPRESSION "SKIP:")
  return()
endif()

execute_process(COMMAND ${BNB4_PYTHON} -c "import numpy, pytest"
                RESULT_VARIABLE _bnb4_py_missing OUTPUT_QUIET ERROR_QUIET)
if(_bnb4_py_missing)
  message(STATUS "bnb4: ${BNB4_PYTHON} lacks numpy or pytest: python_pytest will be skipped "
                 "(pip install numpy pytest)")
endif()

set(_bnb4_py_env
    "BNB4_LIBRARY=$<TARGET_FILE:bnb4>"
    "PYTHONPATH=${CMAKE_SOURCE_DIR}/python"
    "PYTHONDONTWRITEBYTECODE=1")
if(BNB4_SANITIZE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
                  OUTPUT_VARIABLE _bnb4_asan OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libubsan.so
                  OUTPUT_VARIABLE _bnb4_ubsan OUTPUT_STRIP_TRAILING_WHITESPACE)
  list(APPEND _bnb4_py_env "LD_PRELOAD=${_bnb4_asan} ${_bnb4_ubsan}"
       "ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1" "UBSAN_OPTIONS=print_stacktrace=1")
endif()

add_test(NAME python_pytest
         COMMAND ${BNB4_PYTHON} ${CMAKE_SOURCE_DIR}/python/tests/run_pytest.py -q -rs -p no:cacheprovider
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(python_pytest PROPERTIES ENVIRONMENT "${_bnb4_py_env}" SKIP_RETURN_CODE 77 TIMEOUT 1800)
