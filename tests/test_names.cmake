# SPDX-License-Identifier: Apache-2.0
# tests/test_names.cmake: fails when a Catch2 test case's name holds a ';'. catch_discover_tests turns each name
# into a CMake list element, so such a name is cut at the ';' and its ctest entry matches no test case: Catch2
# runs nothing and reports success, and the test never runs in CI.
#   cmake -DSOURCE_DIR=tests -P tests/test_names.cmake
file(GLOB_RECURSE sources "${SOURCE_DIR}/*.cpp" "${SOURCE_DIR}/*.hpp" "${SOURCE_DIR}/*.cu")
set(bad)
foreach(source IN LISTS sources)
  file(STRINGS "${source}" lines REGEX "TEST_CASE\\(")
  foreach(line IN LISTS lines)
    if(line MATCHES "TEST_CASE\\(\"[^\"]*;")
      list(APPEND bad "${source}: ${line}")
    endif()
  endforeach()
endforeach()
if(bad)
  list(JOIN bad "\n" text)
  message(FATAL_ERROR "test names with ';' (ctest would run nothing for them):\n${text}")
endif()
