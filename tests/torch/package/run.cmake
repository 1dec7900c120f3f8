# Installs grpo with the torch component and consumes it as a user would.
#   cmake -DGRPO_SOURCE_DIR=<src> -DWORK_DIR=<scratch> -DMODE=<install|missing_torch> [-DTorch_DIR=<dir>] -P run.cmake
# install: find_package(grpo COMPONENTS torch) from the installed prefix, build and run a consumer of grpo::torch.
# missing_torch: the same find_package with LibTorch hidden must fail and say that component 'torch' needs LibTorch.
cmake_minimum_required(VERSION 3.25)
foreach(var GRPO_SOURCE_DIR WORK_DIR MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: ${var} is required")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})
set(torch_hint)
if(Torch_DIR)
  set(torch_hint -DTorch_DIR=${Torch_DIR})
endif()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

run(${CMAKE_COMMAND} -S ${GRPO_SOURCE_DIR} -B ${WORK_DIR}/grpo-build -DGRPO_BUILD_TESTS=OFF -DGRPO_BUILD_CLI=OFF
    -DGRPO_WITH_TORCH=ON ${torch_hint})
run(${CMAKE_COMMAND} --install ${WORK_DIR}/grpo-build --prefix ${WORK_DIR}/prefix)

if(MODE STREQUAL "install")
  run(${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/consumer -B ${WORK_DIR}/consumer-build
      -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release ${torch_hint})
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
  run(${WORK_DIR}/consumer-build/consumer)
elseif(MODE STREQUAL "missing_torch")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/consumer -B ${WORK_DIR}/probe-build
                          -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(grpo COMPONENTS torch) succeeded with LibTorch hidden")
  endif()
  string(FIND "${out}${err}" "component 'torch' needs LibTorch" where)
  if(where EQUAL -1)
    message(FATAL_ERROR "the failure does not say that component 'torch' needs LibTorch:\n${out}\n${err}")
  endif()
else()
  message(FATAL_ERROR "run.cmake: unknown MODE '${MODE}'")
endif()
