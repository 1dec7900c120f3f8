# A rank that stops answering must not hang the job: runs grpo_mpi_fault under the launcher and checks that the whole
# job ends within a limit far below rank 1's 60 s sleep, with a failure status, and (MODE hang) that rank 0 printed
# the timeout's backend_error naming the operation, the rank and the timeout.
#   cmake -DLAUNCHER=<mpiexec;-n;2;...> -DPROGRAM=<grpo_mpi_fault> -DMODE=<hang|rank_dies> -P fault.cmake
cmake_minimum_required(VERSION 3.25)
foreach(var LAUNCHER PROGRAM MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "fault.cmake: ${var} is required")
  endif()
endforeach()
string(TIMESTAMP start "%s")
execute_process(COMMAND ${LAUNCHER} ${PROGRAM} ${MODE} TIMEOUT 40 RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
string(TIMESTAMP stop "%s")
math(EXPR elapsed "${stop} - ${start}")
message(STATUS "exit: ${rc}, ${elapsed} s\n${out}\n${err}")
if(rc MATCHES "timeout" OR elapsed GREATER 30)
  message(FATAL_ERROR "the job took ${elapsed} s (${rc}): a rank that stopped answering hung it")
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "the job succeeded although rank 1 never joined the second collective")
endif()
if(NOT out MATCHES "rank 0: first collective done" OR NOT out MATCHES "rank 1: first collective done")
  message(FATAL_ERROR "the first collective did not complete on both ranks")
endif()
if(MODE STREQUAL "hang")
  string(CONCAT expected "rank 0: backend_error after [0-9.]+ s: grpo::mpi: all_reduce_sum \\(float, 1000 values\\) "
         "on rank 0 of 2 timed out after 1 s \\(GRPO_MPI_TIMEOUT\\)")
  if(NOT out MATCHES "${expected}")
    message(FATAL_ERROR "rank 0 did not report the timeout as expected (${expected})")
  endif()
endif()
