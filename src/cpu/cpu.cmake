# CPU backend sources. Per-ISA kernel files get only their own ISA flags (set_source_files_properties),
# so one library binary carries every level and picks at run time.
list(APPEND BNB4_CPU_SOURCES ${CMAKE_CURRENT_LIST_DIR}/cpu_backend.c)
