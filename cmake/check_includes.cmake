# SPDX-License-Identifier: MIT
# The dependency rule of DESIGN ("no library reaches another's headers without linking it"),
# checked on every build: run with -DMANIFEST=<file> -P (see cmake/include_rule.cmake, which
# writes the manifest at configure time and runs this before any library is compiled).
#
# Every quoted include "DIR/..." whose DIR is one of the checked source directories names a
# header, and every header has one owning target: the target that lists DIR/NAME.cpp (or .c,
# or the header itself) among its sources, else the home target of DIR (profctl_<DIR>;
# profctl for cli/). A source or header of target T may include a header owned by T or by a
# target T links, directly or through its dependencies; anything else fails the build.
cmake_minimum_required(VERSION 3.22)
if(NOT MANIFEST)
  message(FATAL_ERROR "check_includes.cmake: -DMANIFEST=<file> is required")
endif()
include(${MANIFEST})  # ROOT, CHECKED_TARGETS, HOME_<dir>, SOURCES_<t>, CLOSURE_<t>, STAMP

# Owner of every header of the checked directories.
foreach(t IN LISTS CHECKED_TARGETS)
  foreach(src IN LISTS SOURCES_${t})
    set(OWNER_${src} ${t})
    string(REGEX REPLACE "\\.(cpp|cc|c|S)$" ".h" header "${src}")
    if(NOT DEFINED OWNER_${header})
      set(OWNER_${header} ${t})
    endif()
  endforeach()
endforeach()
foreach(dir IN LISTS CHECKED_DIRS)
  file(GLOB_RECURSE headers RELATIVE ${ROOT} ${ROOT}/${dir}/*.h)
  foreach(header IN LISTS headers)
    if(NOT DEFINED OWNER_${header})
      set(OWNER_${header} ${HOME_${dir}})
    endif()
    list(APPEND FILES_${OWNER_${header}} ${header})
  endforeach()
endforeach()

set(errors "")
foreach(t IN LISTS CHECKED_TARGETS)
  set(files ${SOURCES_${t}} ${FILES_${t}})
  list(REMOVE_DUPLICATES files)
  foreach(file IN LISTS files)
    if(NOT EXISTS ${ROOT}/${file})
      continue()
    endif()
    file(STRINGS ${ROOT}/${file} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"[^\"]+\"")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*$" "\\1" inc "${line}")
      if(NOT inc MATCHES "^([^/]+)/")
        continue()  # "name.h": beside the including file
      endif()
      set(dir ${CMAKE_MATCH_1})
      if(NOT DEFINED HOME_${dir})
        continue()  # not one of ours (a system or generated directory)
      endif()
      if(DEFINED OWNER_${inc})
        set(owner ${OWNER_${inc}})
      else()
        set(owner ${HOME_${dir}})  # generated (report/profile.pb.h) or missing: the home's
      endif()
      if(NOT owner IN_LIST CLOSURE_${t})
        string(APPEND errors "  ${file} (${t}) includes \"${inc}\", a header of ${owner}, "
                             "but ${t} does not link ${owner}\n")
      endif()
    endforeach()
  endforeach()
endforeach()

if(errors)
  message(FATAL_ERROR "Dependency rule broken (DESIGN: no library reaches another's headers "
                      "without linking it):\n${errors}"
                      "Link the library in CMake (target_link_libraries) or drop the include.")
endif()
if(STAMP)
  file(TOUCH ${STAMP})
endif()
