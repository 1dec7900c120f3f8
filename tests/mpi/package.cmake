# The grpo::mpi component as a user consumes it.
#   cmake -DGRPO_SOURCE_DIR=<src> -DWORK_DIR=<scratch> -DMODE=<install|missing_mpi> -P package.cmake
# install: grpo installed with GRPO_WITH_MPI=ON, then package_consumer/ built against it and run as an MPI singleton.
# missing_mpi: the same installation found while find_package(MPI) finds nothing (CMAKE_DISABLE_FIND_PACKAGE_MPI)
# must fail and name the component and what it needs.
cmake_minimum_required(VERSION 3.25)
foreach(var GRPO_SOURCE_DIR WORK_DIR MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "package.cmake: ${var} is required")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

run(${CMAKE_COMMAND} -S ${GRPO_SOURCE_DIR} -B ${WORK_DIR}/grpo-build -DGRPO_BUILD_TESTS=OFF -DGRPO_BUILD_CLI=OFF
    -DGRPO_BUILD_EXAMPLES=OFF -DGRPO_WITH_HF=OFF -DGRPO_WITH_MPI=ON)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/grpo-build --prefix ${WORK_DIR}/prefix)
set(consumer_src ${GRPO_SOURCE_DIR}/tests/mpi/package_consumer)

if(MODE STREQUAL "install")
  run(${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/consumer-build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
  run(${WORK_DIR}/consumer-build/consumer)
elseif(MODE STREQUAL "missing_mpi")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/consumer-build
                          -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(grpo COMPONENTS mpi) succeeded without MPI")
  endif()
  foreach(expected "component 'mpi'" "MPI library" "libopenmpi-dev")
    string(FIND "${out}${err}" "${expected}" where)
    if(where EQUAL -1)
      message(FATAL_ERROR "the failure does not mention ${expected}:\n${out}\n${err}")
    endif()
  endforeach()
else()
  message(FATAL_ERROR "package.cmake: unknown MODE '${MODE}'")
endif()
