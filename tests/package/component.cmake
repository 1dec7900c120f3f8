# A backend component as a user consumes it (grpo::cuda, grpo::mpi, grpo::nccl):
#   cmake -DGRPO_SOURCE_DIR=<src> -DWORK_DIR=<scratch> -DCOMPONENT=<name> -DMODE=<install|missing>
#         -DCONSUMER=<consumer project> "-DBUILD_ARGS=<grpo's cmake flags>" "-DCONSUMER_ARGS=<consumer flags>"
#         "-DMISSING_ARGS=<consumer flags hiding the dependency>" "-DEXPECTED=<text the failure must contain>"
#         [-DRUN_CONSUMER=OFF] -P component.cmake
# (lists separated by '|'). install: grpo installed with the component, then the consumer built against it and run
# (unless RUN_CONSUMER is OFF: a consumer that needs a GPU). missing: the same installation found with the component's
# dependency hidden must fail and name the component and each EXPECTED text.
cmake_minimum_required(VERSION 3.25)
foreach(var GRPO_SOURCE_DIR WORK_DIR COMPONENT MODE CONSUMER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "component.cmake: ${var} is required")
  endif()
endforeach()
foreach(var BUILD_ARGS CONSUMER_ARGS MISSING_ARGS EXPECTED)
  string(REPLACE "|" ";" ${var} "${${var}}")
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

run(${CMAKE_COMMAND} -S ${GRPO_SOURCE_DIR} -B ${WORK_DIR}/grpo-build -DGRPO_BUILD_TESTS=OFF -DGRPO_BUILD_CLI=OFF
    -DGRPO_BUILD_EXAMPLES=OFF -DGRPO_WITH_HF=OFF ${BUILD_ARGS})
run(${CMAKE_COMMAND} --install ${WORK_DIR}/grpo-build --prefix ${WORK_DIR}/prefix)

if(MODE STREQUAL "install")
  run(${CMAKE_COMMAND} -S ${CONSUMER} -B ${WORK_DIR}/consumer-build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
      ${CONSUMER_ARGS})
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
  if(NOT DEFINED RUN_CONSUMER OR RUN_CONSUMER)
    run(${WORK_DIR}/consumer-build/consumer)
  endif()
elseif(MODE STREQUAL "missing")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${CONSUMER} -B ${WORK_DIR}/consumer-build
                          -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix ${MISSING_ARGS}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(grpo COMPONENTS ${COMPONENT}) succeeded without its dependency")
  endif()
  foreach(expected "component '${COMPONENT}'" ${EXPECTED})
    string(FIND "${out}${err}" "${expected}" where)
    if(where EQUAL -1)
      message(FATAL_ERROR "the failure does not mention ${expected}:\n${out}\n${err}")
    endif()
  endforeach()
else()
  message(FATAL_ERROR "component.cmake: unknown MODE '${MODE}'")
endif()
