# Extracts the C example from README.md ("The API in five minutes"), compiles it against the built
# static library and runs it, so the README's example keeps compiling. Run by CTest.
file(READ ${BNB4_SOURCE_DIR}/README.md readme)
string(FIND "${readme}" "```c\n" start)
if(start EQUAL -1)
  message(FATAL_ERROR "README.md has no ```c example")
endif()
math(EXPR start "${start} + 5")
string(SUBSTRING "${readme}" ${start} -1 rest)
string(FIND "${rest}" "```" stop)
string(SUBSTRING "${rest}" 0 ${stop} example)
file(MAKE_DIRECTORY ${WORK_DIR})
file(WRITE ${WORK_DIR}/example.c "${example}")
execute_process(COMMAND ${C_COMPILER} -std=c11 -Wall -Wextra -Werror -I${BNB4_SOURCE_DIR}/include
                        ${WORK_DIR}/example.c ${BNB4_LIBRARY} ${EXTRA_LIBS} -lm -lpthread -o ${WORK_DIR}/example
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the README example does not compile")
endif()
execute_process(COMMAND ${WORK_DIR}/example RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "README example: ${out}")
if(rc)
  message(FATAL_ERROR "the README example failed")
endif()
