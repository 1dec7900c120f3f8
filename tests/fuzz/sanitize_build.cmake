# SPDX-License-Identifier: Apache-2.0
# tests/fuzz/sanitize_build.cmake: the sanitize_build test (cmake -P): configures and builds the Clang
# sub-build of the ci preset's sanitizer tests in BINARY_DIR: grpo_tests made of TEST_SOURCES ('|'-separated)
# and the libFuzzer targets, all with AddressSanitizer and UndefinedBehaviorSanitizer. The asan preset's cache
# settings of CMakePresets.json, but grpo_tests at -O0: Clang takes five times longer at -O1 on the test files
# (about 17 CPU-minutes against 5 for the whole sub-build on the 2-core VM, 2026-12-08), while the suite runs in
# about 56 s instead of 15. The fuzzers stay at -O1 (tests/fuzz/CMakeLists.txt), where speed is inputs tried.
# UBSan's object-size check needs optimization, so it checks the fuzzers only. Running it again rebuilds only what
# changed.
foreach(var SOURCE_DIR BINARY_DIR GENERATOR CXX_COMPILER WITH_HF JOBS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "sanitize_build.cmake: -D${var}=... is required")
  endif()
endforeach()
string(REPLACE "|" ";" test_sources "${TEST_SOURCES}")

execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR} -G ${GENERATOR}
          -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O0 -gline-tables-only"
          "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
          -DGRPO_WARNINGS_AS_ERRORS=ON -DGRPO_BUILD_TESTS=ON -DGRPO_BUILD_FUZZERS=ON -DGRPO_SANITIZER_TESTS=OFF
          -DGRPO_WITH_HF=${WITH_HF} -DGRPO_BUILD_CLI=OFF -DGRPO_BUILD_EXAMPLES=OFF -DGRPO_HEADER_CHECK=OFF
          -DGRPO_WITH_TORCH=OFF -DGRPO_WITH_CUDA=OFF -DGRPO_WITH_MPI=OFF -DGRPO_WITH_NCCL=OFF -DGRPO_BUILD_BENCH=OFF
          "-DGRPO_TEST_SOURCES=${test_sources}"
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "sanitize_build: configuring ${BINARY_DIR} with ${CXX_COMPILER} failed (${result})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} --parallel ${JOBS} RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "sanitize_build: building ${BINARY_DIR} failed (${result})")
endif()
