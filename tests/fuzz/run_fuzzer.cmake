# SPDX-License-Identifier: Apache-2.0
# tests/fuzz/run_fuzzer.cmake: one fuzz_<name> test (cmake -P): runs FUZZER for SECONDS from the committed seeds
# in SEEDS, new inputs going to WORK (both made here, so a cleaned build tree still runs), a failing input to
# ARTIFACTS/<NAME>-crash-<sha1> (or -leak-, -timeout-, -oom-). Fails on any failure libFuzzer reports and says
# how to replay the input.
foreach(var NAME FUZZER SECONDS SEEDS WORK ARTIFACTS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}=... is required")
  endif()
endforeach()
file(MAKE_DIRECTORY ${WORK} ${ARTIFACTS})
file(GLOB before ${ARTIFACTS}/${NAME}-*)
# UBSan stops at the first report (-fno-sanitize-recover) and prints where it came from.
set(ENV{UBSAN_OPTIONS} "print_stacktrace=1:halt_on_error=1")
execute_process(COMMAND ${FUZZER} -max_total_time=${SECONDS} -rss_limit_mb=2048 -timeout=10 -detect_leaks=1
                        -artifact_prefix=${ARTIFACTS}/${NAME}- ${WORK} ${SEEDS}
                RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  file(GLOB after ${ARTIFACTS}/${NAME}-*)
  list(REMOVE_ITEM after ${before})
  message(FATAL_ERROR "fuzz_${NAME}: the fuzzer failed (${result}); replay the input with: ${FUZZER} ${after}")
endif()
