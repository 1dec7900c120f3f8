# Builds and runs tests/package/consumer against grpo in one of the ways a user would consume it.
#   cmake -DGRPO_SOURCE_DIR=<src> -DWORK_DIR=<scratch> -DMODE=<install|install_hf|relocated|add_subdirectory|fetchcontent|missing_component> -P run.cmake
cmake_minimum_required(VERSION 3.25)
foreach(var GRPO_SOURCE_DIR WORK_DIR MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: ${var} is required")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})
set(consumer_src ${GRPO_SOURCE_DIR}/tests/package/consumer)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

function(install_grpo prefix)
  run(${CMAKE_COMMAND} -S ${GRPO_SOURCE_DIR} -B ${WORK_DIR}/grpo-build -DGRPO_BUILD_TESTS=OFF -DGRPO_BUILD_CLI=OFF ${ARGN})
  run(${CMAKE_COMMAND} --install ${WORK_DIR}/grpo-build --prefix ${prefix})
endfunction()

function(build_consumer)
  run(${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/consumer-build ${ARGN})
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
  run(${WORK_DIR}/consumer-build/consumer)
endfunction()

if(MODE STREQUAL "install")
  install_grpo(${WORK_DIR}/prefix)
  build_consumer(-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
elseif(MODE STREQUAL "install_hf")
  # The grpo::hf component: find_package(grpo COMPONENTS hf) brings PCRE2 and utf8proc with it.
  install_grpo(${WORK_DIR}/prefix)
  set(tokenizer ${GRPO_SOURCE_DIR}/tests/data/hf/tokenizers/qwen2/tokenizer.json)
  build_consumer(-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DGRPO_CONSUMER_TOKENIZER=${tokenizer})
  run(${WORK_DIR}/consumer-build/consumer_hf ${tokenizer})
elseif(MODE STREQUAL "relocated")
  # Installed in one prefix, then moved: the package must not remember where it was installed.
  install_grpo(${WORK_DIR}/first)
  file(RENAME ${WORK_DIR}/first ${WORK_DIR}/moved)
  build_consumer(-DCMAKE_PREFIX_PATH=${WORK_DIR}/moved)
elseif(MODE STREQUAL "add_subdirectory" OR MODE STREQUAL "fetchcontent")
  build_consumer(-DGRPO_CONSUME_MODE=${MODE} -DGRPO_SOURCE_DIR=${GRPO_SOURCE_DIR})
elseif(MODE STREQUAL "missing_component")
  # Asking for a component this installation lacks must fail and name the component (the default
  # installation has grpo::hf; this one is built without it).
  install_grpo(${WORK_DIR}/prefix -DGRPO_WITH_HF=OFF)
  file(WRITE ${WORK_DIR}/probe/CMakeLists.txt
       "cmake_minimum_required(VERSION 3.25)\nproject(probe LANGUAGES CXX)\nfind_package(grpo 0.1 CONFIG REQUIRED COMPONENTS ${COMPONENT})\n")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK_DIR}/probe -B ${WORK_DIR}/probe-build
                          -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(grpo COMPONENTS ${COMPONENT}) succeeded on an installation without it")
  endif()
  string(FIND "${out}${err}" "component '${COMPONENT}'" where)
  if(where EQUAL -1)
    message(FATAL_ERROR "the failure does not name component '${COMPONENT}':\n${out}\n${err}")
  endif()
else()
  message(FATAL_ERROR "run.cmake: unknown MODE '${MODE}'")
endif()
