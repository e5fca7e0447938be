# SPDX-License-Identifier: MIT
# Fixture programs for the unwind/ and symbolize/ unit tests (fixtures/symfix.cpp):
#   symfix           -O2 -g, no frame pointer: CFI unwinding
#   symfix_fp        -O2 -g with frame pointers (leaf functions too)
#   symfix_nocfi     -O2 with frame pointers and no unwind tables or debug info at all:
#                    libdwfl's frame-pointer fallback
#   symfix_stripped  symfix after objcopy --strip-all: no symtab, no DWARF
if(TARGET unit_tests)
  set(_symfix_src ${CMAKE_CURRENT_LIST_DIR}/fixtures/symfix.cpp)

  add_executable(symfix ${_symfix_src})
  target_compile_options(symfix PRIVATE -O2 -g -fomit-frame-pointer)

  add_executable(symfix_fp ${_symfix_src})
  target_compile_options(symfix_fp PRIVATE -O2 -g -fno-omit-frame-pointer
                                           -mno-omit-leaf-frame-pointer)

  add_executable(symfix_nocfi ${_symfix_src})
  target_compile_options(symfix_nocfi PRIVATE -O2 -g0 -fno-omit-frame-pointer
                         -mno-omit-leaf-frame-pointer -fno-asynchronous-unwind-tables
                         -fno-unwind-tables -fno-exceptions)

  set(_symfix_stripped ${CMAKE_CURRENT_BINARY_DIR}/symfix_stripped)
  add_custom_command(TARGET symfix POST_BUILD
                     COMMAND ${CMAKE_OBJCOPY} --strip-all $<TARGET_FILE:symfix> ${_symfix_stripped}
                     BYPRODUCTS ${_symfix_stripped}
                     COMMENT "Stripping symfix")

  add_dependencies(unit_tests symfix symfix_fp symfix_nocfi)
  target_compile_definitions(unit_tests PRIVATE
      SYMFIX_PATH="$<TARGET_FILE:symfix>"
      SYMFIX_FP_PATH="$<TARGET_FILE:symfix_fp>"
      SYMFIX_NOCFI_PATH="$<TARGET_FILE:symfix_nocfi>"
      SYMFIX_STRIPPED_PATH="${_symfix_stripped}"
      SYMFIX_SOURCE="${_symfix_src}"
      PLT_TARGET_PATH="$<TARGET_FILE:plt_target>"
      PLT_TARGET_IBT_PATH="$<TARGET_FILE:plt_target_ibt>"
      OBJDUMP_PATH="${CMAKE_OBJDUMP}")
  add_dependencies(unit_tests plt_target plt_target_ibt)
endif()
