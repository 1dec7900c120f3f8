# The grpo::nccl component as a user consumes it.
#   cmake -DGRPO_SOURCE_DIR=<src> -DWORK_DIR=<scratch> -DMODE=<install|missing_nccl> -P package.cmake
# install: grpo installed with GRPO_WITH_NCCL=ON, then package_consumer/ built against it (and not run: a GPU).
# missing_nccl: the same installation found with NCCL's header pointed at nowhere must fail and say what is missing.
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
    -DGRPO_BUILD_EXAMPLES=OFF -DGRPO_WITH_HF=OFF -DGRPO_WITH_NCCL=ON)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/grpo-build --prefix ${WORK_DIR}/prefix)
set(consumer_src ${GRPO_SOURCE_DIR}/tests/nccl/package_consumer)

if(MODE STREQUAL "install")
  run(${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/consumer-build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
elseif(MODE STREQUAL "missing_nccl")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/consumer-build
                          -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DGRPO_NCCL_INCLUDE_DIR=${WORK_DIR}/no-such-dir
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(grpo COMPONENTS nccl) succeeded without nccl.h")
  endif()
  foreach(expected "component 'nccl'" "NCCL")
    string(FIND "${out}${err}" "${expected}" where)
    if(where EQUAL -1)
      message(FATAL_ERROR "the failure does not mention ${expected}:\n${out}\n${err}")
    endif()
  endforeach()
else()
  message(FATAL_ERROR "package.cmake: unknown MODE '${MODE}'")
endif()
