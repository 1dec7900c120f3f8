# Runs `conan create` on conan/ offline, with a Conan home inside the build tree so the user's own
# Conan configuration is never touched; then `conan test` builds and runs a copy of the recipe's test_package.
#   cmake -DGRPO_SOURCE_DIR=<src> -DWORK_DIR=<scratch> -DCONAN=<conan executable> [-DOPTIONS=with_torch=True,...]
#         -P conan.cmake
# OPTIONS, comma-separated, are the recipe's options (with_torch, with_cuda); the test package then also builds and runs a consumer of
# each component.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${WORK_DIR})
set(option_args)
string(REPLACE "," ";" OPTIONS "${OPTIONS}")
foreach(option IN LISTS OPTIONS)
  list(APPEND option_args -o "grpo/*:${option}")
endforeach()
set(ENV{CONAN_HOME} ${WORK_DIR}/conan-home)
# The test package is built from a copy, so the source tree stays untouched by its build folders.
file(COPY ${GRPO_SOURCE_DIR}/conan/test_package DESTINATION ${WORK_DIR})
foreach(step "profile;detect;--force"
             "create;${GRPO_SOURCE_DIR}/conan;--no-remote;--build=missing;-s;compiler.cppstd=20;--test-folder=;${option_args}"
             "test;${WORK_DIR}/test_package;grpo/0.1.0;--no-remote;-s;compiler.cppstd=20;${option_args}")
  execute_process(COMMAND ${CONAN} ${step} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "conan ${step} failed (${rc}):\n${out}\n${err}")
  endif()
endforeach()
